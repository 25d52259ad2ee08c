"""Prometheus exporter for Binance USDⓈ-M Futures accounts.

Data flows one way: ``config`` -> ``signing`` + ``client`` -> ``poller`` ->
``snapshot`` -> ``render`` -> ``http``; ``cli`` wires them together and
``simulator`` is a stand-in for Binance used by ``--demo`` and the tests.
"""

__version__ = "0.1.0"
