"""Benchmarks that print figures; run each with ``python -m benchmarks.<name>`` (see README.md).

They are not tests: nothing here asserts a time. Every network connection stays on
127.0.0.1.
"""
