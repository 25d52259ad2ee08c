"""Helpers of the ops tests: the rules, the dashboard, the metric contract, tools."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules.yml"
RULES_TEST = REPO / "prometheus" / "rules.test.yml"
DASHBOARD = REPO / "grafana" / "dashboards" / "binance-futures.json"

# The metric contract of the exporter, exactly as agreed (see README).
_ACCOUNT_FIELDS = (
    "total_initial_margin", "total_maint_margin", "total_wallet_balance",
    "total_unrealized_profit", "total_margin_balance", "total_position_initial_margin",
    "total_open_order_initial_margin", "total_cross_wallet_balance", "total_cross_un_pnl",
    "available_balance", "max_withdraw_amount",
)
_ASSET_FIELDS = (
    "wallet_balance", "unrealized_profit", "margin_balance", "maint_margin", "initial_margin",
    "position_initial_margin", "open_order_initial_margin", "cross_wallet_balance",
    "cross_un_pnl", "available_balance", "max_withdraw_amount", "margin_available",
    "update_timestamp_seconds",
)
_POSITION_FIELDS = (
    "position_amt", "unrealized_profit", "isolated_margin", "notional", "isolated_wallet",
    "initial_margin", "maint_margin", "update_timestamp_seconds",
    # from v2/account.position (issue 11); liquidation_price is absent when
    # Binance has none; info carries the margin_asset label and is always 1
    "entry_price", "break_even_price", "mark_price", "liquidation_price",
    "position_initial_margin", "open_order_initial_margin", "bid_notional", "ask_notional",
    "adl_quantile", "info",
)
CONTRACT_METRICS: frozenset[str] = frozenset(
    [f"binance_futures_account_{name}" for name in _ACCOUNT_FIELDS]
    + [f"binance_futures_asset_{name}" for name in _ASSET_FIELDS]
    + [f"binance_futures_position_{name}" for name in _POSITION_FIELDS]
    + [
        "binance_futures_rate_limit_used",
        "binance_futures_rate_limit_max",
        "binance_futures_up",
        "binance_futures_last_success_timestamp_seconds",
        "binance_futures_request_duration_seconds_bucket",
        "binance_futures_request_duration_seconds_sum",
        "binance_futures_request_duration_seconds_count",
        "binance_futures_request_errors_total",
        "binance_futures_connections_total",
        "binance_futures_backoff_until_timestamp_seconds",
        "binance_futures_clock_offset_seconds",
        "binance_futures_account_multi_assets_mode",
        "binance_futures_exporter_build_info",
        # rows of an answer skipped by the tolerant reader (issue 10)
        "binance_futures_answer_rows_skipped_total",
        # the user data stream (issue 12)
        "binance_futures_user_stream_up",
        "binance_futures_user_stream_events_total",
        "binance_futures_user_stream_last_event_timestamp_seconds",
        "binance_futures_forced_orders_total",
        "binance_futures_margin_call_maint_margin",
    ]
)

# Series Prometheus makes itself.
PROMETHEUS_BUILTINS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

# Optional series users create (documented in rules.yml): one recording rule
# per account that overrides the available-balance threshold.
USER_DEFINED_RULES = frozenset({"binance_futures:available_balance_threshold:override"})


# ---------------------------------------------------------------------------
# External tools


def run(args: list[str], *, cwd: Path = REPO, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# ---------------------------------------------------------------------------
# Rules and dashboard


@cache
def rules_document() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rules_document()["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rule_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves excluded."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*$", re.S)


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else str(query)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and label_values() selector."""
    exprs: list[tuple[str, str]] = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} {target.get('refId')}", target["expr"]))
    for annotation in dashboard().get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            exprs.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable_query(variable))
            if match:
                exprs.append((f"variable {variable['name']!r}", match.group("selector")))
    return exprs


# ---------------------------------------------------------------------------
# PromQL helpers

_GRAFANA_DURATIONS = {"__rate_interval", "__interval", "__range"}
_TEMPLATE_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)")


def template_variables(expr: str) -> set[str]:
    return {a or b for a, b in _TEMPLATE_VARIABLE.findall(expr)}


def substitute_template_variables(expr: str) -> str:
    """Replace Grafana variables with values that keep the PromQL valid."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return "5m" if name in _GRAFANA_DURATIONS else "x"

    return _TEMPLATE_VARIABLE.sub(value, expr)


_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
})


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)                      # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                     # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  text)                                         # label lists
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":                   # 1e3, 0.5e-2
            continue
        token = match.group(0)
        if text[match.end():].lstrip().startswith("(") or token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Sample names an exposition can produce, also for families without samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def referenced_metrics() -> dict[str, set[str]]:
    """metric name -> where it is used, over every rule and dashboard expression."""
    used: dict[str, set[str]] = {}
    for rule in all_rules():
        where = f"rule {rule.get('alert') or rule.get('record')}"
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, set()).add(where)
    for where, expr in dashboard_exprs():
        for name in promql_metric_names(substitute_template_variables(expr)):
            used.setdefault(name, set()).add(where)
    return used


# ---------------------------------------------------------------------------
# Tests


