"""Every metric name the Prometheus rules and the Grafana dashboard use really exists."""

from __future__ import annotations

import sys

import pytest

from tests.support.ops import (
    CONTRACT_METRICS,
    PROMETHEUS_BUILTINS,
    USER_DEFINED_RULES,
    exposed_names,
    output_of,
    promql_metric_names,
    recording_rule_names,
    referenced_metrics,
    run,
)


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (account, le) (rate(a_bucket{x=~"y|z"}[5m])))'
        ' / on (account) group_left () b offset 5m'
        ' or sum without (symbol) (abs(c)) > 1e3 and ignoring (reason) d:rec:sum'
        ' unless vector(1) + time() * bool_metric'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b", "c", "d:rec:sum", "bool_metric"}
    assert promql_metric_names('up{job="binance-futures"} == 0') == {"up"}


def test_rules_and_dashboard_reference_something() -> None:
    used = referenced_metrics()
    assert "binance_futures:margin_ratio" in used
    assert "binance_futures_account_total_maint_margin" in used
    assert len(used) > 20


def test_referenced_metrics_are_in_the_contract_or_recorded() -> None:
    known = CONTRACT_METRICS | recording_rule_names() | PROMETHEUS_BUILTINS | USER_DEFINED_RULES
    unknown = {name: sorted(where) for name, where in referenced_metrics().items()
               if name not in known}
    assert not unknown, f"metric names used but neither in the contract nor recorded: {unknown}"


@pytest.fixture(scope="module")
def demo_exposition() -> str:
    result = run([sys.executable, "-m", "exporter", "--demo", "--once"], timeout=60)
    assert result.returncode == 0, output_of(result)
    return result.stdout


def test_referenced_metrics_exist_in_real_output(demo_exposition: str) -> None:
    known = (exposed_names(demo_exposition) | recording_rule_names() | PROMETHEUS_BUILTINS
             | USER_DEFINED_RULES)
    missing = {name: sorted(where) for name, where in referenced_metrics().items()
               if name not in known}
    assert not missing, f"metric names used but absent from `--demo --once` output: {missing}"

