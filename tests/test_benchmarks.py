"""The benchmarks still import and run: they follow the exporter's modules, so they must not rot.

Every module under benchmarks/ is imported, and the cheapest one runs end to
end with tiny parameters. The figures themselves are not checked: benchmarks
print measurements, tests never assert a time.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import benchmarks
from benchmarks import poll_cost


def test_every_benchmark_module_imports() -> None:
    names = [module.name for module in pkgutil.iter_modules(benchmarks.__path__)]
    assert {"poll_cpu", "poll_cost", "scale", "scrape_latency", "footprint"} <= set(names)
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


def test_poll_cost_runs_with_tiny_parameters(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["poll_cost", "--iterations", "2", "--renders", "1",
                                      "--symbols", "2"])
    poll_cost.main()
    out = capsys.readouterr().out
    assert "whole poll:" in out
    assert out.count("one account polled, then a scrape") == 3  # one table per page
