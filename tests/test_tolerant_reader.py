"""The tolerant reader: what in an answer is fatal, what skips a row, what omits a field."""

from __future__ import annotations

import copy
import logging
import math
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.app import run_exporter
from exporter.simulator import Mutate, Simulator
from exporter.snapshot import (
    MAX_LABEL_LENGTH,
    AccountSnapshot,
    MalformedAnswer,
    Problem,
    parse_account_status,
    parse_position_details,
    parse_rate_limits,
)
from tests.support import (
    HMAC_KEY,
    HMAC_SECRET,
    json_values,
    scalars,
    scrape,
    scrape_when_up,
    sim_config,
    wait_for,
)

TOTALS = ("totalInitialMargin", "totalMaintMargin", "totalWalletBalance",
          "totalUnrealizedProfit", "totalMarginBalance", "totalPositionInitialMargin",
          "totalOpenOrderInitialMargin", "totalCrossWalletBalance", "totalCrossUnPnl",
          "availableBalance", "maxWithdrawAmount")
ASSET_AMOUNTS = ("walletBalance", "unrealizedProfit", "marginBalance", "maintMargin",
                 "initialMargin", "positionInitialMargin", "openOrderInitialMargin",
                 "crossWalletBalance", "crossUnPnl", "availableBalance", "maxWithdrawAmount")
POSITION_AMOUNTS = ("positionAmt", "unrealizedProfit", "isolatedMargin", "notional",
                    "isolatedWallet", "initialMargin", "maintMargin")


def asset_row(asset: str, amount: str = "1.5") -> dict[str, Any]:
    return {"asset": asset, **dict.fromkeys(ASSET_AMOUNTS, amount), "marginAvailable": True,
            "updateTime": 1625474304765}


def position_row(symbol: str, side: str = "BOTH", amount: str = "2") -> dict[str, Any]:
    return {"symbol": symbol, "positionSide": side, **dict.fromkeys(POSITION_AMOUNTS, amount),
            "updateTime": 1625474304000}


VALID: dict[str, Any] = {
    **{name: f"{index}.25" for index, name in enumerate(TOTALS)},
    "assets": [asset_row("USDT"), asset_row("USDC", "3"), asset_row("BNFCR", "0E-8")],
    "positions": [position_row("BTCUSDT"), position_row("币安人生USDT", "LONG", "1e-3"),
                  position_row("币安人生USDT", "SHORT", "-4"),
                  position_row("ETHUSDC", "BOTH", "0")],
}


def parse(result: object) -> tuple[AccountSnapshot, tuple[Problem, ...]]:
    return parse_account_status(result, received_at=1.0)


def with_change(path: tuple[Any, ...], value: Any = None, *, delete: bool = False
                ) -> dict[str, Any]:
    result = copy.deepcopy(VALID)
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


def kinds(problems: tuple[Problem, ...]) -> list[tuple[str, str, str | None]]:
    return [(p.kind, p.reason, p.field) for p in problems]


def test_a_clean_answer_has_no_problems_and_unicode_labels() -> None:
    snapshot, problems = parse(VALID)
    assert problems == ()
    assert snapshot.totals == tuple(float(VALID[name]) for name in TOTALS)
    assert [a.asset for a in snapshot.assets] == ["USDT", "USDC", "BNFCR"]
    assert [(p.symbol, p.side) for p in snapshot.positions] == [
        ("BTCUSDT", "BOTH"), ("币安人生USDT", "LONG"), ("币安人生USDT", "SHORT"),
        ("ETHUSDC", "BOTH")]
    assert snapshot.positions[1].amounts[0] == 0.001
    assert snapshot.assets[2].amounts[0] == 0.0


@pytest.mark.parametrize("name", ["result", "total missing", "total not a number"])
def test_fatal_only_when_margin_cannot_be_computed(name: str) -> None:
    result: object = {
        "result": [VALID],
        "total missing": with_change(("totalMaintMargin",), delete=True),
        "total not a number": with_change(("totalMarginBalance",), "NaN"),
    }[name]
    with pytest.raises(MalformedAnswer) as raised:
        parse(result)
    assert "\n" not in str(raised.value)
    if name != "result":
        assert ("totalMaintMargin" if name == "total missing" else "totalMarginBalance") \
            in str(raised.value)


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("positions", 0, "symbol"), "BTC\nUSDT", ("position", "bad_identity", None)),
    (("positions", 0, "symbol"), "", ("position", "bad_identity", None)),
    (("positions", 0, "symbol"), 12, ("position", "bad_identity", None)),
    (("positions", 0, "symbol"), "X" * (MAX_LABEL_LENGTH + 1), ("position", "bad_identity", None)),
    (("positions", 0, "positionSide"), None, ("position", "bad_identity", None)),
    (("positions", 0), "not a row", ("position", "malformed", None)),
    (("assets", 1, "asset"), "US\x00DC", ("asset", "bad_identity", None)),
    (("assets", 1, "asset"), "\ud800", ("asset", "bad_identity", None)),
    (("assets", 1), [], ("asset", "malformed", None)),
    (("positions", 3, "symbol"), "BTCUSDT", ("position", "duplicate", None)),
    (("assets", 2, "asset"), "USDT", ("asset", "duplicate", None)),
])
def test_an_unusable_row_is_skipped_and_the_rest_kept(path: tuple[Any, ...], value: Any,
                                                      expected: tuple[str, str, None]) -> None:
    snapshot, problems = parse(with_change(path, value))
    assert kinds(problems) == [expected]
    assert snapshot.totals == parse(VALID)[0].totals
    kind = "positions" if path[0] == "positions" else "assets"
    assert len(getattr(snapshot, kind)) == len(VALID[kind]) - 1
    assert "\n" not in problems[0].detail


def test_the_first_of_two_duplicates_wins() -> None:
    result = with_change(("positions", 3), position_row("BTCUSDT", "BOTH", "7"))
    snapshot, _ = parse(result)
    assert [p.amounts[0] for p in snapshot.positions if p.symbol == "BTCUSDT"] == [2.0]


@pytest.mark.parametrize("name", ["assets", "positions"])
@pytest.mark.parametrize("value", [None, "x", {"a": 1}], ids=["missing", "text", "object"])
def test_a_list_that_is_not_a_list_yields_no_rows_but_keeps_the_answer(name: str,
                                                                         value: Any) -> None:
    result = with_change((name,), value) if value is not None else with_change((name,),
                                                                              delete=True)
    snapshot, problems = parse(result)
    assert getattr(snapshot, name) == ()
    assert kinds(problems) == [(name[:-1], "malformed", None)]
    assert snapshot.totals == parse(VALID)[0].totals


@pytest.mark.parametrize(("path", "value", "field"), [
    (("assets", 0, "updateTime"), "1625474304765", "updateTime"),
    (("assets", 0, "updateTime"), -1, "updateTime"),
    (("assets", 0, "marginAvailable"), "true", "marginAvailable"),
    (("assets", 0, "walletBalance"), "abc", "walletBalance"),
    (("positions", 1, "notional"), "", "notional"),
    (("positions", 1, "notional"), "1e400", "notional"),
    (("positions", 1, "updateTime"), 1.5, "updateTime"),
])
def test_an_unreadable_field_is_omitted_and_its_row_kept(path: tuple[Any, ...], value: Any,
                                                         field: str) -> None:
    snapshot, problems = parse(with_change(path, value))
    kind = "asset" if path[0] == "assets" else "position"
    assert kinds(problems) == [(kind, "bad_field", field)]
    row = (snapshot.assets if kind == "asset" else snapshot.positions)[path[1]]
    if field == "updateTime":
        assert row.update_time is None
    elif field == "marginAvailable":
        assert row.margin_available is None  # type: ignore[union-attr]
    else:
        names = ASSET_AMOUNTS if kind == "asset" else POSITION_AMOUNTS
        index = names.index(field)
        assert row.amounts[index] is None
        assert all(v is not None for i, v in enumerate(row.amounts) if i != index)


def test_update_time_zero_means_never_and_is_no_problem() -> None:
    result = with_change(("assets", 0, "updateTime"), 0)
    result["positions"][0]["updateTime"] = 0
    snapshot, problems = parse(result)
    assert problems == ()
    assert snapshot.assets[0].update_time is None and snapshot.positions[0].update_time is None


def test_unknown_position_sides_and_fields_pass_through() -> None:
    result = with_change(("positions", 0, "positionSide"), "HEDGE")
    result["positions"][0]["someNewField"] = {"nested": True}
    result["brandNewTotal"] = "1"
    snapshot, problems = parse(result)
    assert problems == ()
    assert snapshot.positions[0].side == "HEDGE"


@pytest.mark.parametrize(("text", "number"), [
    ("1e-8", 1e-8), ("0E-8", 0.0), ("-1.5E+3", -1500.0), ("1.", 1.0), (".5", 0.5),
    ("-0", 0.0), ("00012.50", 12.5), (12, 12.0), (1.5, 1.5), (-3, -3.0),
])
def test_any_finite_decimal_binance_could_mean_is_a_number(text: Any, number: float) -> None:
    snapshot, problems = parse(with_change(("totalWalletBalance",), text))
    assert problems == ()
    assert snapshot.totals[TOTALS.index("totalWalletBalance")] == number


@pytest.mark.parametrize("text", [
    "NaN", "nan", "inf", "-Infinity", "1e400", "", " ", " 1", "1 ", "\u0661", "0x10", "1_0",
    "1,5", "+-1", True, None, 10**400, float("nan"), float("inf"), [1], {"v": 1},
])
def test_what_is_never_a_number(text: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse(with_change(("totalWalletBalance",), text))


def test_rate_limits_skip_malformed_entries_and_merge_duplicates() -> None:
    entry = {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 2400, "count": 20}
    limits, problems = parse_rate_limits([
        {k: v for k, v in entry.items() if k != "intervalNum"},
        entry, {**entry, "count": 35}, {**entry, "count": 30},
        {**entry, "interval": "SECOND", "intervalNum": 10, "limit": 300, "count": 2},
        "junk"])
    assert [(limit.interval, limit.used) for limit in limits] == [("MINUTE", 35), ("SECOND", 2)]
    assert kinds(problems) == [("rate_limit", "malformed", None)] * 2
    assert parse_rate_limits("nope")[0] == ()
    assert parse_rate_limits(None) == ((), ())


def detail_row(symbol: str, side: str = "BOTH", **changes: Any) -> dict[str, Any]:
    row = {"symbol": symbol, "positionSide": side, "positionAmt": "1", "entryPrice": "100",
           "breakEvenPrice": "100.1", "markPrice": "101", "unRealizedProfit": "1",
           "liquidationPrice": "80", "isolatedMargin": "0", "notional": "101",
           "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "10",
           "maintMargin": "1", "positionInitialMargin": "10", "openOrderInitialMargin": "0",
           "adl": 2, "bidNotional": "0", "askNotional": "0", "updateTime": 1}
    row.update(changes)
    return row


def test_position_details_rules() -> None:
    details, problems = parse_position_details([
        detail_row("BTCUSDT"),
        detail_row("ETHUSDT", liquidationPrice="0.00000000"),  # Binance: no liquidation price
        detail_row("龙虾USDT", "LONG", adl=7, marginAsset=""),
        detail_row("BTCUSDT"),
        {"symbol": "\x00"},
    ], received_at=1.0)
    assert [(d.symbol, d.side) for d in details.positions] == [
        ("BTCUSDT", "BOTH"), ("ETHUSDT", "BOTH"), ("龙虾USDT", "LONG")]
    first, no_price, odd = details.positions
    assert first.amounts == (100.0, 100.1, 101.0, 80.0, 10.0, 0.0, 0.0, 0.0)
    assert first.adl_quantile == 2 and first.margin_asset == "USDT" and first.position_amt == 1
    assert no_price.amounts[3] is None
    assert odd.adl_quantile is None and odd.margin_asset is None
    assert kinds(problems) == [("position", "bad_field", "adl"),
                               ("position", "bad_field", "marginAsset"),
                               ("position", "duplicate", None),
                               ("position", "bad_identity", None)]
    for result in ({"rows": []}, None, "[]"):
        with pytest.raises(MalformedAnswer):
            parse_position_details(result, received_at=1.0)


# --------------------------------------------------------------------------- properties


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


ROW_PATHS = [path for path in _paths(VALID) if path and path[0] in ("assets", "positions")]
TOTAL_PATHS = [(name,) for name in TOTALS]


def _is_label(text: str) -> bool:
    """The documented rule: non-empty text without control characters or line breaks, up to
    100 characters, encodable as UTF-8 (unassigned code points, new emoji say, are text)."""
    return (0 < len(text) <= MAX_LABEL_LENGTH and text.encode("utf-8", "strict") is not None
            and not any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in text))


def _check_exportable(snapshot: AccountSnapshot) -> None:
    for asset in snapshot.assets:
        assert _is_label(asset.asset)
        assert all(v is None or math.isfinite(v) for v in asset.amounts)
    for position in snapshot.positions:
        for label in (position.symbol, position.side):
            assert _is_label(label)
        assert all(v is None or math.isfinite(v) for v in position.amounts)
    keys = [(p.symbol, p.side) for p in snapshot.positions]
    assert len(keys) == len(set(keys))
    assert len({a.asset for a in snapshot.assets}) == len(snapshot.assets)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ROW_PATHS), json_values, st.booleans())
def test_row_level_corruption_never_loses_the_totals(path: tuple[Any, ...], value: Any,
                                                     delete: bool) -> None:
    snapshot, problems = parse(with_change(path, value, delete=delete))
    assert snapshot.totals == parse(VALID)[0].totals
    _check_exportable(snapshot)
    assert all("\n" not in problem.detail for problem in problems)
    # Rows other than the corrupted one survive, unless it now repeats one of them.
    if len(path) >= 2:
        name, index = path[0], path[1]
        valid_rows = getattr(parse(VALID)[0], name)
        rows = getattr(snapshot, name)
        collided = any(p.reason == "duplicate" for p in problems)
        for other, row in enumerate(valid_rows):
            if other != index and not collided:
                assert row in rows


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TOTAL_PATHS), scalars, st.booleans())
def test_a_corrupted_total_is_a_number_or_fatal(path: tuple[Any, ...], value: Any,
                                                delete: bool) -> None:
    try:
        snapshot, _ = parse(with_change(path, value, delete=delete))
    except MalformedAnswer as exc:
        assert "\n" not in str(exc)
        return
    assert all(math.isfinite(total) for total in snapshot.totals)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_as_result_or_rate_limits(value: Any) -> None:
    try:
        snapshot, _ = parse(value)
    except MalformedAnswer:
        pass
    else:
        _check_exportable(snapshot)
    parse_rate_limits(value)


# --------------------------------------------------------------------------- end to end


async def test_a_strange_row_never_darkens_the_account(simulator: Simulator,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def break_one_row(result: dict[str, Any]) -> None:
        result["positions"].append({"symbol": None, "positionSide": "BOTH"})
        result["assets"].append(copy.deepcopy(result["assets"][0]))  # a duplicate
        result["positions"][0]["updateTime"] = "soon"

    simulator.inject(Mutate(break_one_row, count=3))
    caplog.set_level(logging.DEBUG, logger="exporter")
    config = sim_config(simulator, poll_interval="200ms", accounts=[
        {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}])
    async with run_exporter(config) as running:
        await scrape_when_up(running.server.url, ("oneway",))

        def skipped(samples: dict[Any, float], kind: str, reason: str) -> float | None:
            return samples.get(("binance_futures_answer_rows_skipped_total", frozenset(
                {"account": "oneway", "kind": kind, "reason": reason}.items())))

        async def three_polls() -> dict[Any, float] | None:
            samples = await scrape(running.server.url)
            return samples if skipped(samples, "position", "bad_identity") == 3 else None

        samples = await wait_for(three_polls)
    assert skipped(samples, "asset", "duplicate") == 3
    assert skipped(samples, "asset", "malformed") == 0
    assert samples[("binance_futures_answer_fields_skipped_total", frozenset(
        {"account": "oneway", "kind": "position", "field": "updateTime"}.items()))] == 3
    assert samples[("binance_futures_up", frozenset({("account", "oneway")}))] == 1
    served = simulator.accounts["oneway"].last_result
    assert served is not None
    assert samples[("binance_futures_account_total_margin_balance", frozenset(
        {("account", "oneway")}))] == float(served["totalMarginBalance"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "of Binance's answer" in r.getMessage()]
    assert len(warnings) == 3  # once per kind and reason, not once per poll
