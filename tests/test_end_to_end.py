"""The whole exporter against the simulator: every value on /metrics is what Binance served."""

from __future__ import annotations

import asyncio

from exporter import __version__
from exporter.app import run_exporter
from exporter.fields import ASSET_FIELDS, POSITION_FIELDS, TOTAL_FIELDS
from exporter.simulator import ErrorAnswer, Simulator
from tests.support import Samples, SteppedClock, scrape, scrape_when_up, sim_config, up, wait_for

DETAIL_METRICS = {  # v2/account.position field -> metric, written out as the contract says
    "entryPrice": "binance_futures_position_entry_price",
    "breakEvenPrice": "binance_futures_position_break_even_price",
    "markPrice": "binance_futures_position_mark_price",
    "liquidationPrice": "binance_futures_position_liquidation_price",
    "positionInitialMargin": "binance_futures_position_position_initial_margin",
    "openOrderInitialMargin": "binance_futures_position_open_order_initial_margin",
    "bidNotional": "binance_futures_position_bid_notional",
    "askNotional": "binance_futures_position_ask_notional",
}


def expected_samples(account: str, result: dict, details: list[dict] | None = None) -> Samples:
    """The data samples /metrics must show for one served ``result`` (and ``details``)."""
    expected: Samples = {}

    def put(name: str, labels: dict[str, str], value: float) -> None:
        expected[(name, frozenset({"account": account, **labels}.items()))] = value

    for field in TOTAL_FIELDS:
        put(f"binance_futures_account_{field.metric_suffix}", {}, float(result[field.key]))
    for asset in result["assets"]:
        labels = {"asset": asset["asset"]}
        for field in ASSET_FIELDS:
            put(f"binance_futures_asset_{field.metric_suffix}", labels, float(asset[field.key]))
        if "marginAvailable" in asset:
            put("binance_futures_asset_margin_available", labels,
                1.0 if asset["marginAvailable"] else 0.0)
        if asset["updateTime"]:
            put("binance_futures_asset_update_timestamp_seconds", labels,
                asset["updateTime"] / 1000)
    for position in result["positions"]:
        labels = {"symbol": position["symbol"], "position_side": position["positionSide"]}
        for field in POSITION_FIELDS:
            put(f"binance_futures_position_{field.metric_suffix}", labels,
                float(position[field.key]))
        if position["updateTime"]:
            put("binance_futures_position_update_timestamp_seconds", labels,
                position["updateTime"] / 1000)
    listed = {(p["symbol"], p["positionSide"]) for p in result["positions"]}
    for row in details or ():
        labels = {"symbol": row["symbol"], "position_side": row["positionSide"]}
        for field, metric in DETAIL_METRICS.items():
            if field != "liquidationPrice" or float(row[field]) != 0:  # 0: no price, no series
                put(metric, labels, float(row[field]))
        put("binance_futures_position_adl_quantile", labels, row["adl"])
        put("binance_futures_position_info", {**labels, "margin_asset": row["marginAsset"]}, 1.0)
        if (row["symbol"], row["positionSide"]) not in listed:
            put("binance_futures_position_position_amt", labels, float(row["positionAmt"]))
    return expected


def data_samples(samples: Samples, account: str) -> Samples:
    """The samples of an account's answers (the margin mode is a setting, kept when stale)."""
    prefixes = ("binance_futures_account_", "binance_futures_asset_", "binance_futures_position_")
    return {key: value for key, value in samples.items()
            if key[0].startswith(prefixes) and ("account", account) in key[1]
            and key[0] != "binance_futures_account_multi_assets_mode"}


async def test_every_served_value_reaches_metrics(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        samples = await scrape_when_up(running.server.url)
    for name in ("oneway", "hedge"):
        served = simulator.accounts[name].last_result
        details = simulator.accounts[name].last_positions
        assert served is not None and details is not None
        assert data_samples(samples, name) == expected_samples(name, served, details)
        mode = 1.0 if simulator.accounts[name].multi_assets else 0.0  # from v1 account.status
        assert samples[("binance_futures_account_multi_assets_mode",
                        frozenset({("account", name)}))] == mode
    hedge_sides = {dict(labels)["position_side"] for (metric, labels) in samples
                   if metric == "binance_futures_position_position_amt"
                   and ("account", "hedge") in labels}
    assert hedge_sides == {"LONG", "SHORT"}
    # margin_available only exists in multi-assets mode
    assert not any(metric == "binance_futures_asset_margin_available"
                   and ("account", "oneway") in labels for metric, labels in samples)


async def test_rate_limits_and_health_series(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        samples = await scrape_when_up(running.server.url)
    labels = frozenset({"account": "oneway", "rate_limit_type": "REQUEST_WEIGHT",
                        "interval": "MINUTE", "interval_num": "1"}.items())
    assert samples[("binance_futures_rate_limit_max", labels)] == 2400
    assert 0 < samples[("binance_futures_rate_limit_used", labels)] <= 2400
    account = frozenset({("account", "oneway")})
    assert samples[("binance_futures_connections_total", account)] == 1
    assert samples[("binance_futures_request_duration_seconds_count", account)] >= 1
    assert samples[("binance_futures_last_success_timestamp_seconds", account)] > 1.7e9
    reasons = {dict(labels)["reason"] for (metric, labels) in samples
               if metric == "binance_futures_request_errors_total"
               and ("account", "oneway") in labels}
    assert reasons == {"timeout", "connection", "auth", "clock", "rate_limited", "banned",
                       "bad_response", "api_error"}
    assert samples[("binance_futures_exporter_build_info",
                    frozenset({("version", __version__)}))] == 1


async def test_closed_position_disappears_on_next_poll(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url

        async def symbols() -> set[str]:
            samples = await scrape(url)
            return {dict(labels)["symbol"] for (metric, labels) in samples
                    if metric == "binance_futures_position_notional"
                    and ("account", "oneway") in labels}

        before = await wait_for(symbols)
        closing = sorted(before)[0]
        simulator.accounts["oneway"].close_position(closing, "BOTH")

        async def closed() -> bool:
            remaining = await symbols()
            return closing not in remaining and remaining == before - {closing}

        await wait_for(closed)


async def test_failing_account_turns_down_at_once_and_data_goes_stale(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    config = sim_config(stepped_simulator, poll_interval="10s", stale_after="30s")
    async with run_exporter(config, clock=clock) as running:
        url = running.server.url
        await scrape_when_up(url)
        stepped_simulator.inject(ErrorAnswer(503, -1001, "Internal error; unable to process "
                                             "your request. Please try again.", count=1000))

        async def down() -> Samples | None:
            samples = await scrape(url)
            return samples if up(samples, "oneway") == 0 else None

        await clock.advance(10)
        samples = await wait_for(down)
        assert data_samples(samples, "oneway")  # within stale_after: the last good data stays
        await clock.advance(19)
        assert data_samples(await scrape(url), "oneway")
        await clock.advance(2)  # 31 s after the last success
        samples = await scrape(url)
    assert not data_samples(samples, "oneway")
    account = frozenset({("account", "oneway")})
    assert samples[("binance_futures_up", account)] == 0
    assert ("binance_futures_last_success_timestamp_seconds", account) in samples
    assert samples[("binance_futures_account_multi_assets_mode", account)] == 0  # a setting
    assert samples[("binance_futures_request_errors_total",
                    frozenset({("account", "oneway"), ("reason", "api_error")}))] >= 1


async def test_scrapes_never_cause_requests(simulator: Simulator) -> None:
    config = sim_config(simulator, poll_interval="5s")
    async with run_exporter(config) as running:
        await scrape_when_up(running.server.url)
        before = len(simulator.requests)
        await asyncio.gather(*(scrape(running.server.url) for _ in range(30)))
        assert len(simulator.requests) == before
