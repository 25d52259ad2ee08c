"""Prometheus rules, rule unit tests, scrape config and Alertmanager routing,
checked with the real promtool and amtool and against the conventions."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import require_tool
from tests.support.ops import (
    REPO,
    RULES,
    RULES_TEST,
    alert_rules,
    output_of,
    recording_rule_names,
    run,
)

PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
RUNBOOK_BASE = (
    "https://github.com/binance-futures-exporter/binance-futures-exporter/blob/main/docs/runbook.md#"
)

REQUIRED_ALERTS = {
    "BinanceFuturesMarginRatioHigh",
    "BinanceFuturesMarginRatioCritical",
    "BinanceFuturesIsolatedPositionMarginRatioHigh",
    "BinanceFuturesAvailableBalanceLow",
    "BinanceFuturesUnrealizedLossHigh",
    "BinanceFuturesExporterDown",
    "BinanceFuturesAccountDown",
    "BinanceFuturesDataStale",
    "BinanceFuturesRateLimitHigh",
    "BinanceFuturesAuthErrors",
    "BinanceFuturesIPBanned",
    "BinanceFuturesAnswerRowsSkipped",
    "BinanceFuturesAssetMarginRatioHigh",
    "BinanceFuturesAssetMarginRatioCritical",
    "BinanceFuturesLiquidationDistanceLow",
    "BinanceFuturesLiquidationDistanceCritical",
    "BinanceFuturesADLQuantileHigh",
    "BinanceFuturesMarginCall",
    "BinanceFuturesForcedClose",
    "BinanceFuturesForcedCloseADL",
    "BinanceFuturesUserStreamDown",
}
REQUIRED_RECORDING_RULES = {
    "binance_futures:margin_ratio",
    "binance_futures:isolated_position_margin_ratio",
    "binance_futures:position_notional_abs:sum",
    "binance_futures:effective_leverage",
    "binance_futures:rate_limit_usage_ratio",
    "binance_futures:available_balance_threshold",
    "binance_futures:asset_margin_ratio",
    "binance_futures:account_single_asset_mode",
    "binance_futures:asset_position_notional_abs:sum",
    "binance_futures:asset_effective_leverage",
    "binance_futures:position_liquidation_distance_ratio",
}
# Connectivity and staleness: at least 5m so one missed poll never pages.
SLOW_ALERTS = {
    "BinanceFuturesExporterDown",
    "BinanceFuturesAccountDown",
    "BinanceFuturesDataStale",
    "BinanceFuturesIPBanned",
    "BinanceFuturesUserStreamDown",
}
# Margin moves fast: 1-2 minutes.
MARGIN_ALERTS = {
    "BinanceFuturesMarginRatioHigh",
    "BinanceFuturesMarginRatioCritical",
    "BinanceFuturesIsolatedPositionMarginRatioHigh",
    "BinanceFuturesUnrealizedLossHigh",
    "BinanceFuturesAssetMarginRatioHigh",
    "BinanceFuturesAssetMarginRatioCritical",
    "BinanceFuturesLiquidationDistanceLow",
}
# No wait at all: a position within 5 % of its liquidation price, and events
# Binance pushed (a margin call, a forced close) that have already happened.
IMMEDIATE_ALERTS = {
    "BinanceFuturesLiquidationDistanceCritical",
    "BinanceFuturesMarginCall",
    "BinanceFuturesForcedClose",
    "BinanceFuturesForcedCloseADL",
}
# Alerts about a scrape target rather than an account.
TARGET_ALERTS = {"BinanceFuturesExporterDown"}
# Alerts on `... == 0`: their value is always 0, nothing to humanize.
VALUELESS_ALERTS = {"BinanceFuturesExporterDown", "BinanceFuturesAccountDown",
                    "BinanceFuturesUserStreamDown"}


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``1m30s``, ``45s``, ``2h``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def alerts_by_name() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in alert_rules()}


# ---------------------------------------------------------------------------
# The real tools


def test_promtool_check_rules() -> None:
    result = run([require_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, output_of(result)
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = run([require_tool("promtool"), "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, output_of(result)
    assert "SUCCESS" in result.stdout


def test_promtool_check_config() -> None:
    result = run([require_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, output_of(result)
    # The relative rule file was found and checked too.
    assert "rules.yml" in result.stdout and "SUCCESS" in result.stdout


def test_amtool_check_config() -> None:
    result = run([require_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, output_of(result)
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    (["severity=critical", "alertname=BinanceFuturesMarginRatioCritical", "account=a"],
     "pager,chat"),
    (["severity=warning", "alertname=BinanceFuturesMarginRatioHigh", "account=a"], "chat"),
    (["severity=info", "alertname=Other"], "chat"),
])
def test_alertmanager_routes(labels: list[str], receivers: str) -> None:
    result = run([require_tool("amtool"), "config", "routes", "test",
                  f"--config.file={ALERTMANAGER_CONFIG}", *labels])
    assert result.returncode == 0, output_of(result)
    assert result.stdout.strip() == receivers, output_of(result)


def test_alertmanager_config_has_no_inline_secrets() -> None:
    document = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    inline_secret_keys = {"routing_key", "service_key", "api_url", "api_key", "bot_token",
                          "auth_password", "password", "url"}
    found: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in inline_secret_keys:
                    found.append(f"{path}.{key}")
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    walk(document, "")
    assert not found, f"use the *_file variants instead of inline secrets: {found}"


# ---------------------------------------------------------------------------
# Conventions of the rules


def test_required_alerts_and_recording_rules_exist() -> None:
    assert set(alerts_by_name()) >= REQUIRED_ALERTS
    assert recording_rule_names() >= REQUIRED_RECORDING_RULES
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_labels_and_annotations(name: str) -> None:
    rule = alerts_by_name()[name]
    assert re.fullmatch(r"BinanceFutures(?:[A-Z][a-z0-9]*|IP)+", name)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    summary = annotations["summary"]
    assert "\n" not in summary.strip(), "summary must be one line"
    who = "$labels.instance" if name in TARGET_ALERTS else "$labels.account"
    assert who in summary, f"summary must name {who}"
    if name in VALUELESS_ALERTS:
        assert "$value" not in annotations["description"]
    else:
        assert re.search(r"\$value\s*\|\s*humanize", annotations["description"]), (
            "description must show the value through humanize/humanizePercentage/..."
        )
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_for_durations(name: str) -> None:
    waited = duration_seconds(alerts_by_name()[name].get("for", "0s"))
    if name in SLOW_ALERTS:
        assert waited >= 300, f"{name}: connectivity/staleness alerts wait at least 5m"
    elif name in MARGIN_ALERTS:
        assert 60 <= waited <= 120, f"{name}: margin alerts wait 1-2m"
    elif name in IMMEDIATE_ALERTS:
        assert waited == 0, f"{name}: fires at once"
    else:
        assert waited > 0, f"{name}: give it a for: so one odd sample does not notify"


def test_margin_ratio_thresholds_and_severities() -> None:
    alerts = alerts_by_name()
    warning, critical = (alerts["BinanceFuturesMarginRatioHigh"],
                         alerts["BinanceFuturesMarginRatioCritical"])
    assert re.fullmatch(r"binance_futures:margin_ratio\s*>\s*0\.5", warning["expr"].strip())
    assert re.fullmatch(r"binance_futures:margin_ratio\s*>\s*0\.8", critical["expr"].strip())
    assert (warning["labels"]["severity"], critical["labels"]["severity"]) == (
        "warning", "critical")
    assert (warning["for"], critical["for"]) == ("2m", "1m")


def test_asset_margin_ratio_alerts_match_the_account_thresholds() -> None:
    """Per-asset pools are judged like the account: same thresholds, severities, for:."""
    alerts = alerts_by_name()
    for level in ("High", "Critical"):
        account = alerts[f"BinanceFuturesMarginRatio{level}"]
        asset = alerts[f"BinanceFuturesAssetMarginRatio{level}"]
        account_match = re.fullmatch(r"binance_futures:margin_ratio\s*>\s*([0-9.]+)",
                                     account["expr"].strip())
        asset_match = re.fullmatch(
            r'binance_futures:asset_margin_ratio\{asset!="USDT"\}\s*>\s*([0-9.]+)\s+'
            r"and ignoring \(asset\) binance_futures:account_single_asset_mode == 1",
            asset["expr"].strip())
        assert account_match and asset_match, (account["expr"], asset["expr"])
        assert float(asset_match.group(1)) == float(account_match.group(1))
        assert asset["labels"]["severity"] == account["labels"]["severity"]
        assert asset["for"] == account["for"]


def test_liquidation_distance_thresholds_and_severities() -> None:
    alerts = alerts_by_name()
    low, critical = (alerts["BinanceFuturesLiquidationDistanceLow"],
                     alerts["BinanceFuturesLiquidationDistanceCritical"])
    metric = r"binance_futures:position_liquidation_distance_ratio"
    assert re.fullmatch(rf"{metric}\s*<\s*0\.15", low["expr"].strip())
    assert re.fullmatch(rf"{metric}\s*<\s*0\.05", critical["expr"].strip())
    assert (low["labels"]["severity"], critical["labels"]["severity"]) == (
        "warning", "critical")
    assert low["for"] == "1m" and "for" not in critical


def test_forced_close_severity_per_kind() -> None:
    """Liquidations page, ADL warns; each alert selects exactly its own kind."""
    alerts = alerts_by_name()
    for name, kind, severity in (("BinanceFuturesForcedClose", "liquidation", "critical"),
                                 ("BinanceFuturesForcedCloseADL", "adl", "warning")):
        rule = alerts[name]
        assert rule["labels"]["severity"] == severity
        kinds = set(re.findall(r'binance_futures_forced_orders_total\{kind="(\w+)"\}',
                               rule["expr"]))
        assert kinds == {kind}, f"{name} selects kinds {kinds}"
        assert "binance_futures_forced_orders_total[" not in rule["expr"].replace(" ", "")


def test_exporter_down_watches_the_scrape_job() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "binance-futures" in jobs
    targets = [t for sc in jobs["binance-futures"]["static_configs"] for t in sc["targets"]]
    assert targets == ["exporter:10317"]
    assert config["rule_files"] == ["rules.yml"]
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for sc in m["static_configs"] for t in sc["targets"]] == [
        "alertmanager:9093"]
    expr = alerts_by_name()["BinanceFuturesExporterDown"]["expr"].strip()
    assert expr == 'up{job="binance-futures"} == 0'


# ---------------------------------------------------------------------------
# Coverage of rules.test.yml: every alert fires, stays silent and has a
# tested `for:` boundary.


def _alert_cases() -> dict[str, list[tuple[int, float, bool]]]:
    """alertname -> [(test group index, eval time in seconds, fires?)]."""
    document = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert [Path(f).name for f in document["rule_files"]] == ["rules.yml"]
    cases: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    for index, group in enumerate(document["tests"]):
        for case in group.get("alert_rule_test", []):
            cases[case["alertname"]].append(
                (index, duration_seconds(case["eval_time"]), bool(case.get("exp_alerts"))))
    return cases


def _evaluation_interval() -> float:
    document = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    return duration_seconds(document.get("evaluation_interval", "1m"))


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_has_firing_silent_and_boundary_cases(name: str) -> None:
    cases = _alert_cases()[name]
    assert any(fires for _, _, fires in cases), f"{name}: no case where it fires"
    assert any(not fires for _, _, fires in cases), f"{name}: no case where it stays silent"
    # Boundary: in one test group, silent one evaluation before a firing case.
    step = _evaluation_interval()
    silent = {(group, at) for group, at, fires in cases if not fires}
    boundary = [at for group, at, fires in cases if fires and (group, at - step) in silent]
    assert boundary, (
        f"{name}: no silent case exactly one evaluation interval ({step:g}s) before a "
        f"firing case"
    )


def test_every_recording_rule_value_is_tested() -> None:
    document = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    tested = {case["expr"].strip() for group in document["tests"]
              for case in group.get("promql_expr_test", [])}
    untested = {name for name in recording_rule_names() if name not in tested}
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_zero_margin_balance_guard_is_tested() -> None:
    """The margin-ratio test feeds a zero margin balance and expects no sample for it."""
    document = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    for group in document["tests"]:
        zero_accounts = {
            re.search(r'account="([^"]+)"', series["series"]).group(1)  # type: ignore[union-attr]
            for series in group.get("input_series", [])
            if series["series"].startswith("binance_futures_account_total_margin_balance{")
            and re.fullmatch(r"0x\d+", series["values"])
        }
        for case in group.get("promql_expr_test", []):
            if case["expr"].strip() == "binance_futures:margin_ratio" and zero_accounts:
                listed = " ".join(sample["labels"] for sample in case["exp_samples"])
                assert case["exp_samples"], "the guard test must still expect other samples"
                assert not any(f'account="{a}"' in listed for a in zero_accounts)
                return
    pytest.fail("no promql_expr_test of binance_futures:margin_ratio with a zero margin balance")
