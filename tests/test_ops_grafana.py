"""The Grafana dashboard and its provisioning: importable, conventions kept,
every query valid PromQL (checked by promtool)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import require_tool
from tests.support.ops import (
    DASHBOARD,
    REPO,
    alert_rules,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    output_of,
    run,
    substitute_template_variables,
    template_variables,
    variable_query,
)

DATASOURCE_REF = "${datasource}"
PROVISIONING = REPO / "grafana" / "provisioning"
GRAFANA_BUILTIN_VARIABLES = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__all", "__name", "__dashboard", "__from", "__to",
}


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def test_dashboard_metadata() -> None:
    board = dashboard()
    assert board["uid"] == "binance-futures"
    assert board["title"] == "Binance USDⓈ-M Futures"
    assert board["schemaVersion"] >= 39
    assert board["tags"] and all(isinstance(tag, str) for tag in board["tags"])
    assert board["description"].strip()
    assert board.get("id") is None, "a fixed numeric id breaks import into another Grafana"


def test_datasource_is_a_template_variable() -> None:
    board = dashboard()
    datasource = variables().get("datasource")
    assert datasource is not None, "no template variable named datasource"
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    # File provisioning does not resolve ${DS_...} import placeholders: if an
    # __inputs block exists, each input needs a template variable of its name.
    for item in board.get("__inputs", []):
        assert item["name"] in variables(), f"__inputs {item['name']} has no template variable"
    assert "${DS_" not in DASHBOARD.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["account", "asset", "symbol"])
def test_filter_variables(name: str) -> None:
    variable = variables().get(name)
    assert variable is not None, f"no {name} variable"
    assert variable["type"] == "query"
    assert variable["includeAll"] is True and variable["multi"] is True
    assert variable["datasource"]["uid"] == DATASOURCE_REF
    assert re.fullmatch(rf"label_values\(.+,\s*{name}\)", variable_query(variable))


def test_every_query_variable_uses_the_datasource_variable() -> None:
    queries = [v for v in variables().values() if v["type"] == "query"]
    assert queries
    for variable in queries:
        assert variable["datasource"] == {"type": "prometheus", "uid": DATASOURCE_REF}, (
            variable["name"])


def test_every_panel_has_a_unit_and_uses_the_datasource_variable() -> None:
    panels = dashboard_panels()
    assert len(panels) >= 10
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"]["uid"] == DATASOURCE_REF, title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel.get("targets"), f"{title}: no queries"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_REF, f"{title} {target['refId']}"
            assert target["expr"].strip(), f"{title} {target['refId']}: empty query"


def test_panel_ids_unique_and_layout_fits() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard()["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_rows() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == ["Account overview", "Assets", "Positions", "User data stream", "Rate limits",
                    "Exporter health"]


def _panel(title: str) -> dict[str, Any]:
    matches = [panel for panel in dashboard_panels() if panel["title"] == title]
    assert len(matches) == 1, f"expected one panel titled {title!r}"
    return matches[0]


def _alert_thresholds(metric: str, operator: str = ">") -> list[float]:
    found = []
    for rule in alert_rules():
        match = re.fullmatch(rf"{re.escape(metric)}\s*{operator}\s*([0-9.]+)",
                             rule["expr"].strip())
        if match:
            found.append(float(match.group(1)))
    return sorted(found)


def _threshold_steps(thresholds: dict[str, Any]) -> list[float]:
    """The step values after the base step (whose value is null)."""
    steps = thresholds["steps"]
    assert steps[0]["value"] is None
    return [step["value"] for step in steps[1:]]


def test_margin_ratio_gauge_matches_the_alerts() -> None:
    gauge = _panel("Margin ratio")
    defaults = gauge["fieldConfig"]["defaults"]
    assert gauge["type"] == "gauge"
    assert defaults["unit"] == "percentunit"
    assert (defaults["min"], defaults["max"]) == (0, 1)
    steps = [step["value"] for step in defaults["thresholds"]["steps"]][1:]
    assert steps == _alert_thresholds("binance_futures:margin_ratio") == [0.5, 0.8]
    assert "binance_futures:margin_ratio" in gauge["targets"][0]["expr"]


def test_liquidation_distance_panels_match_the_alerts() -> None:
    thresholds = _alert_thresholds("binance_futures:position_liquidation_distance_ratio", "<")
    assert thresholds == [0.05, 0.15]
    over_time = _panel("Liquidation distance over time")
    defaults = over_time["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    assert _threshold_steps(defaults["thresholds"]) == thresholds
    assert "binance_futures:position_liquidation_distance_ratio{" in (
        over_time["targets"][0]["expr"])
    table = _panel("Positions by liquidation distance")
    (distance,) = [o for o in table["fieldConfig"]["overrides"]
                   if o["matcher"]["options"] == "Liquidation distance"]
    properties = {p["id"]: p["value"] for p in distance["properties"]}
    assert properties["unit"] == "percentunit"
    assert _threshold_steps(properties["thresholds"]) == thresholds


def test_positions_by_liquidation_distance_table() -> None:
    """Sorted closest-first; shows symbol, side, amount, entry, mark, liquidation price,
    distance, margin asset and ADL."""
    table = _panel("Positions by liquidation distance")
    assert table["type"] == "table"
    assert table["options"]["sortBy"] == [{"displayName": "Liquidation distance", "desc": False}]
    queries = {t["refId"]: t["expr"].split("{")[0] for t in table["targets"]}
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    (organize,) = [t["options"] for t in table["transformations"] if t["id"] == "organize"]
    columns = {queries.get(key.removeprefix("Value #"), key): name
               for key, name in organize["renameByName"].items()}
    assert columns == {
        "account": "Account", "symbol": "Symbol", "position_side": "Side",
        "binance_futures_position_position_amt": "Amount",
        "binance_futures_position_entry_price": "Entry price",
        "binance_futures_position_mark_price": "Mark price",
        "binance_futures_position_liquidation_price": "Liquidation price",
        "binance_futures:position_liquidation_distance_ratio": "Liquidation distance",
        "margin_asset": "Margin asset",
        "binance_futures_position_adl_quantile": "ADL",
    }
    # margin_asset comes from the info series, whose value (always 1) is hidden
    info = [ref for ref, metric in queries.items() if metric == "binance_futures_position_info"]
    assert info and all(organize["excludeByName"][f"Value #{ref}"] for ref in info)


def test_per_asset_panels_match_the_alerts() -> None:
    ratio = _panel("Margin ratio per margin asset")
    defaults = ratio["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    assert _threshold_steps(defaults["thresholds"]) == _alert_thresholds(
        "binance_futures:margin_ratio") == [0.5, 0.8]
    expr = ratio["targets"][0]["expr"]
    assert "binance_futures:asset_margin_ratio{" in expr
    assert "binance_futures:account_single_asset_mode" in expr
    leverage = _panel("Effective leverage per margin asset")
    assert "binance_futures:asset_effective_leverage{" in leverage["targets"][0]["expr"]
    mode = _panel("Margin mode")
    assert "binance_futures:account_single_asset_mode{" in mode["targets"][0]["expr"]


def test_user_stream_panels_query_what_they_show() -> None:
    shown = {
        "User data stream": "binance_futures_user_stream_up{",
        "Last user-stream event age": "binance_futures_user_stream_last_event_timestamp_seconds{",
        "User-stream events": "rate(binance_futures_user_stream_events_total{",
        "Forced orders": "binance_futures_forced_orders_total{",
        "Margin calls": "binance_futures_margin_call_maint_margin{",
        "Answer rows skipped": "binance_futures_answer_rows_skipped_total{",
    }
    for title, query in shown.items():
        assert query in _panel(title)["targets"][0]["expr"], title
    assert _panel("Last user-stream event age")["fieldConfig"]["defaults"]["unit"] == "s"


def test_tables_and_health_panels_query_what_they_show() -> None:
    positions = " ".join(t["expr"] for t in _panel("Positions")["targets"])
    for field in ("position_amt", "notional", "unrealized_profit", "maint_margin"):
        assert f"binance_futures_position_{field}" in positions
    assert "binance_futures_asset_wallet_balance" in _panel("Assets")["targets"][0]["expr"]
    errors = _panel("Request errors by reason")["targets"][0]["expr"]
    assert "rate(binance_futures_request_errors_total" in errors and "reason" in errors
    latency = " ".join(t["expr"] for t in _panel("Request latency")["targets"])
    assert "histogram_quantile(" in latency
    assert "binance_futures_request_duration_seconds_bucket" in latency
    age = _panel("Last successful poll age")
    assert age["fieldConfig"]["defaults"]["unit"] == "s"
    assert "binance_futures_last_success_timestamp_seconds" in age["targets"][0]["expr"]


def test_template_variables_used_are_defined() -> None:
    defined = set(variables()) | GRAFANA_BUILTIN_VARIABLES
    for where, expr in dashboard_exprs():
        unknown = template_variables(expr) - defined
        assert not unknown, f"{where}: undefined template variables {unknown}"


def test_substitution_leaves_no_template_variables() -> None:
    expr = 'rate(x{a=~"$account", b=~"${symbol:regex}"}[$__rate_interval])'
    assert substitute_template_variables(expr) == 'rate(x{a=~"x", b=~"x"}[5m])'


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": substitute_template_variables(expr)}
        for index, (_, expr) in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    result = run([promtool, "check", "rules", str(path)])
    where = "\n".join(f"dashboard:query_{i} = {w}" for i, (w, _) in enumerate(exprs))
    assert result.returncode == 0, f"{output_of(result)}\n{where}"


def test_promql_check_catches_a_bad_query(tmp_path: Path) -> None:
    """The parse check above relies on promtool rejecting broken PromQL."""
    promtool = require_tool("promtool")
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "bad:query", "expr": "sum by (account (rate(x[5m]))"}]}]}), encoding="utf-8")
    assert run([promtool, "check", "rules", str(path)]).returncode != 0


# ---------------------------------------------------------------------------
# Provisioning


def _compose_mounts(service: str) -> dict[str, str]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts: dict[str, str] = {}
    for volume in compose["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def test_datasource_provisioning() -> None:
    files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    assert files == [PROVISIONING / "datasources" / "prometheus.yml"]
    document = yaml.safe_load(files[0].read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_dashboard_provisioning_points_at_the_mounted_folder() -> None:
    document = yaml.safe_load(
        (PROVISIONING / "dashboards" / "binance-futures.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    mounts = _compose_mounts("grafana")
    assert path in mounts, f"{path} is not mounted into the grafana service: {mounts}"
    host = REPO / mounts[path]
    assert (host / "binance-futures.json").is_file()
    assert mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning"
