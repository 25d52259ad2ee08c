"""The user data stream end to end: the exporter against the simulator on real loopback
WebSockets, on a clock the test steps (shared with the simulator), /metrics over HTTP.

A test that says "the clock does not move" never steps it: whatever happened was driven
by the stream's events, not by the poll grid.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from exporter import userstream
from exporter.app import RunningExporter, run_exporter
from exporter.simulator import MSG_BANNED, ErrorAnswer, SimAccount, Simulator
from exporter.streamevents import StreamEvent
from exporter.userstream import UserStream
from tests.support import (
    HMAC_KEY,
    HMAC_SECRET,
    Samples,
    SteppedClock,
    fetch,
    scrape,
    sim_config,
    wait_for,
)

ONEWAY = {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}
ACCOUNT = frozenset({("account", "oneway")})
STATUS = "v2/account.status"


@pytest.fixture
async def sim(clock: SteppedClock) -> AsyncIterator[Simulator]:
    async with Simulator(seed=5, lively=False, wall=clock.time) as simulator:
        simulator.add_account("oneway", api_key=HMAC_KEY, api_secret=HMAC_SECRET, positions=2)
        yield simulator


@contextlib.asynccontextmanager
async def exporting(sim: Simulator, clock: SteppedClock,
                    **settings: Any) -> AsyncIterator[RunningExporter]:
    """The exporter with the user data stream on; its first poll done and its stream up."""
    settings.setdefault("poll_interval", "30s")
    settings.setdefault("request_timeout", "2s")
    settings.setdefault("reconnect_backoff_min", "10ms")
    settings.setdefault("reconnect_backoff_max", "20ms")
    settings.setdefault("user_stream_endpoint", sim.stream_url)
    config = sim_config(sim, accounts=[ONEWAY], **settings)
    async with run_exporter(config, clock=clock) as running:
        poller = running.pollers[0]
        if running.streams:
            await wait_for(lambda: poller.state.up and stream_of(running).state.up)
        yield running


def stream_of(running: RunningExporter) -> UserStream:
    return running.streams[0]


def statuses(sim: Simulator) -> int:
    return sum(1 for record in sim.requests if record.method == STATUS)


def methods(sim: Simulator, since: int = 0) -> Counter[str | None]:
    return Counter(record.method for record in sim.requests[since:])


def wallet(account: SimAccount) -> float:
    return next(float(asset["walletBalance"]) for asset in account.result()["assets"]
                if asset["asset"] == "USDT")


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({("account", "oneway"), *labels.items()})


async def metrics_show(running: RunningExporter, name: str, value: float,
                       **labels: str) -> Samples:
    """The first scrape on which ``name{labels}`` has ``value``."""
    async def shown() -> Samples | None:
        samples = await scrape(running.server.url)
        return samples if samples.get(series(name, **labels)) == value else None

    result: Samples = await wait_for(shown)
    return result


WALLET = "binance_futures_asset_wallet_balance"


# ---------------------------------------------------------------- freshness and bursts


async def test_a_pushed_balance_change_reaches_metrics_while_the_clock_stands_still(
        sim: Simulator, clock: SteppedClock) -> None:
    account = sim.accounts["oneway"]
    async with exporting(sim, clock, poll_interval="30s") as running:
        standing, polls = clock.monotonic(), statuses(sim)
        account.set_asset_field("USDT", "walletBalance", "4321.5")
        samples = await metrics_show(running, WALLET, 4321.5, asset="USDT")
        assert clock.monotonic() == standing  # no tick of the 30 s grid: the event polled
        assert statuses(sim) == polls + 1
        assert samples[series("binance_futures_user_stream_events_total",
                              event="ACCOUNT_UPDATE")] == 1
        assert samples[series("binance_futures_user_stream_last_event_timestamp_seconds")] == (
            sim.user_streams.pushed[-1][1]["E"] / 1000)


async def test_a_burst_of_events_costs_at_most_two_polls_and_shows_its_last_change(
        sim: Simulator, clock: SteppedClock) -> None:
    account = sim.accounts["oneway"]
    async with exporting(sim, clock, event_poll_min_gap="1s") as running:
        polls = statuses(sim)
        sim.user_streams.burst("oneway", 20)
        await wait_for(lambda: stream_of(running).state.events["ACCOUNT_UPDATE"] == 20)
        await wait_for(lambda: statuses(sim) > polls)
        await clock.advance(1)  # the gap ends: one more poll if events came during the first
        await metrics_show(running, WALLET, wallet(account), asset="USDT")
        await clock.advance(5)
        assert 1 <= statuses(sim) - polls <= 2


async def test_polls_for_events_wait_out_a_ban(sim: Simulator, clock: SteppedClock) -> None:
    account = sim.accounts["oneway"]
    async with exporting(sim, clock, poll_interval="10s") as running:
        until = sim.server_time_ms() + 25_000
        sim.inject(ErrorAnswer(418, -1003, MSG_BANNED.format(until=until)))
        await clock.advance(10)  # the next tick is banned
        await wait_for(lambda: running.pollers[0].state.errors["banned"] == 1)
        polls = statuses(sim)
        account.set_asset_field("USDT", "walletBalance", "777.25")
        await wait_for(lambda: stream_of(running).state.events["ACCOUNT_UPDATE"] == 1)
        await clock.advance(14)  # 24 s: still banned, no tick either
        assert statuses(sim) == polls
        await clock.advance(1.5)  # the ban is over: the event's poll goes out
        await metrics_show(running, WALLET, 777.25, asset="USDT")
        assert min(r.wall_ms for r in sim.requests if r.method == STATUS) <= until
        assert all(r.wall_ms >= until for r in sim.requests[-2:])


async def test_above_the_warn_share_event_polls_are_skipped_and_said_once(
        clock: SteppedClock, caplog: pytest.LogCaptureFixture) -> None:
    async with Simulator(seed=5, lively=False, wall=clock.time, weight_limit=60) as sim:
        account = sim.add_account("oneway", api_key=HMAC_KEY, api_secret=HMAC_SECRET)
        clock.step_wall(1.5 - clock.time() % 60)  # early in a minute: weight counts from 0
        with caplog.at_level(logging.DEBUG, logger="exporter.poller"):
            async with exporting(sim, clock, poll_interval="5m") as running:
                # connect 5, clock 2, margin mode 10, key 1, status and details 10: 28 of 60
                polls = statuses(sim)
                account.funding_fee("BTCUSDT", "1")  # a poll: 38 of 60, 63 %
                await wait_for(lambda: statuses(sim) == polls + 1)
                await wait_for(lambda: running.pollers[0].state.rate_limits[0].used == 38)
                for event in range(2, 5):
                    await clock.advance(2)
                    account.funding_fee("BTCUSDT", "1")
                    await wait_for(lambda event=event: stream_of(
                        running).state.events["ACCOUNT_UPDATE"] == event)
                await clock.advance(2)
                assert statuses(sim) == polls + 1
                skips = [r for r in caplog.records if "are skipped" in r.getMessage()]
                assert len(skips) == 3 and [r.levelno for r in skips] == [
                    logging.WARNING, logging.DEBUG, logging.DEBUG]
                await clock.advance(300)  # a scheduled poll in a new minute: 10 of 60
                await wait_for(lambda: statuses(sim) == polls + 2)
                account.funding_fee("BTCUSDT", "1")
                await wait_for(lambda: statuses(sim) == polls + 3)


# ---------------------------------------------------------------- forced closes, margin calls


async def test_forced_closes_and_margin_calls_are_counted_once_each(
        sim: Simulator, clock: SteppedClock) -> None:
    account = sim.accounts["oneway"]
    for symbol in ("ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"):
        with contextlib.suppress(KeyError):
            account.close_position(symbol, "BOTH")
    account.open_position("ETHUSDT", "BOTH", "2", "3000")
    account.open_position("SOLUSDT", "BOTH", "-10", "150")
    account.open_position("XRPUSDT", "BOTH", "1000", "0.5")
    account.open_position("BNBUSDT", "BOTH", "1", "580", isolated=True, leverage=10)
    # stale_after is no multiple of poll_interval: nothing but the margin call's own expiry
    # changes the page at 100 s.
    async with exporting(sim, clock, poll_interval="30s", stale_after="100s") as running:
        account.liquidate("ETHUSDT", "BOTH")  # PARTIALLY_FILLED, then FILLED
        account.auto_deleverage("SOLUSDT", "BOTH")
        account.settle("XRPUSDT", "BOTH")
        sim.user_streams.replay("oneway", "ORDER_TRADE_UPDATE")  # the settlement's fill again
        liquidation = account.liquidation_price("BNBUSDT", "BOTH")
        account.set_mark("BNBUSDT", str(liquidation * Decimal("1.02")))
        call = sim.user_streams.pushed[-1][1]
        assert call["e"] == "MARGIN_CALL"
        maint_margin = float(call["p"][0]["mm"])
        forced = "binance_futures_forced_orders_total"
        samples = await metrics_show(running, "binance_futures_margin_call_maint_margin",
                                     maint_margin, symbol="BNBUSDT", position_side="BOTH")
        samples = await metrics_show(running, forced, 1, symbol="XRPUSDT", kind="settlement")
        assert {dict(labels)["symbol"]: (dict(labels)["kind"], value)
                for (name, labels), value in samples.items() if name == forced} == {
            "ETHUSDT": ("liquidation", 1), "SOLUSDT": ("adl", 1), "XRPUSDT": ("settlement", 1)}
        assert samples[series("binance_futures_user_stream_events_total",
                              event="MARGIN_CALL")] == 1
        assert samples[series("binance_futures_user_stream_events_total",
                              event="ORDER_TRADE_UPDATE")] == 5  # 2 + 1 + 1, 1 replayed
        await clock.advance(99)
        assert (await scrape(running.server.url)).get(series(
            "binance_futures_margin_call_maint_margin", symbol="BNBUSDT",
            position_side="BOTH")) == maint_margin

        async def margin_call_dropped() -> bool:
            return not any(name == "binance_futures_margin_call_maint_margin"
                           for name, _ in await scrape(running.server.url))

        await clock.advance(1)  # stale_after since the call: dropped like other data
        await wait_for(margin_call_dropped)
        assert (await scrape(running.server.url))[series(forced, symbol="ETHUSDT",
                                                         kind="liquidation")] == 1


# ---------------------------------------------------------------- keys and connections


async def test_a_quiet_account_spends_only_keepalive_weight(sim: Simulator,
                                                            clock: SteppedClock) -> None:
    async with exporting(sim, clock, poll_interval="5m", user_stream_keepalive="10m",
                         clock_sync_interval="1h") as running:
        since = len(sim.requests)
        for step in range(1, 13):  # one hour
            await clock.advance(300)
            await wait_for(lambda step=step: methods(sim, since)[STATUS] == step)
        await wait_for(lambda: methods(sim, since)["userDataStream.ping"] == 6)
        assert stream_of(running).state.up
    assert methods(sim, since) == Counter({
        STATUS: 12, "v2/account.position": 12,  # the scheduled polls, nothing more
        "session.status": 1, "account.status": 1,  # clock_sync_interval: clock, margin mode
        "userDataStream.ping": 6,  # the keepalives: every 10 minutes
        "userDataStream.stop": 1,  # at shutdown
    })
    pings = [r.wall_ms for r in sim.requests if r.method == "userDataStream.ping"]
    gaps = {later - earlier for earlier, later in itertools.pairwise(pings)}
    assert gaps == {600_000}
    assert sim.user_streams.connections_opened == 1


async def test_listen_key_expired_brings_a_new_key_and_stream_and_later_events(
        sim: Simulator, clock: SteppedClock, caplog: pytest.LogCaptureFixture) -> None:
    account = sim.accounts["oneway"]
    with caplog.at_level(logging.DEBUG):
        async with exporting(sim, clock) as running:
            stream = stream_of(running)
            first = sim.user_streams.key_of("oneway")
            sim.user_streams.expire("oneway")
            await wait_for(lambda: stream.state.errors["expired"] == 1)
            assert not stream.state.up
            polls = statuses(sim)
            await clock.advance(1)  # the backoff
            await wait_for(lambda: stream.state.up and stream.state.connections == 2)
            second = sim.user_streams.key_of("oneway")
            assert second is not None and second != first
            await wait_for(lambda: statuses(sim) == polls + 1)  # one poll to catch up
            account.set_asset_field("USDT", "walletBalance", "2468.5")
            await clock.advance(1)  # the catch-up poll was less than event_poll_min_gap ago
            samples = await metrics_show(running, WALLET, 2468.5, asset="USDT")
            _, _, page = await asyncio.to_thread(fetch, running.server.url + "/metrics")
    assert samples[series("binance_futures_user_stream_errors_total", reason="expired")] == 1
    assert samples[series("binance_futures_user_stream_connections_total")] == 2
    assert samples[series("binance_futures_user_stream_up")] == 1
    exporter_log = "\n".join(record.getMessage() for record in caplog.records
                             if record.name.startswith("exporter"))
    for key in (first, second):
        assert key is not None and key not in exporter_log and key.encode() not in page


async def test_a_failed_keepalive_brings_a_new_key_and_stream(sim: Simulator,
                                                              clock: SteppedClock) -> None:
    async with exporting(sim, clock, user_stream_keepalive="5m") as running:
        stream = stream_of(running)
        sim.user_streams.silence("oneway")  # the key is gone without a word
        await clock.advance(300)
        await wait_for(lambda: stream.state.errors["keepalive"] == 1)
        assert running.pollers[0].state.errors["api_error"] == 1  # the -1125
        await clock.advance(1)
        await wait_for(lambda: stream.state.up and stream.state.connections == 2)
        assert sim.user_streams.key_of("oneway") is not None


async def test_a_dropped_stream_reconnects_and_polls_once_to_catch_up(
        sim: Simulator, clock: SteppedClock) -> None:
    async with exporting(sim, clock) as running:
        stream = stream_of(running)
        polls = statuses(sim)
        sim.user_streams.drop("oneway", abrupt=True)
        await wait_for(lambda: stream.state.errors["connection"] == 1)
        await clock.advance(1)
        await wait_for(lambda: stream.state.connections == 2 and stream.state.up)
        await wait_for(lambda: statuses(sim) == polls + 1)
        await clock.advance(1)
        assert statuses(sim) == polls + 1


async def test_the_stream_is_renewed_before_its_lifetime_and_after_a_server_close(
        clock: SteppedClock) -> None:
    async with Simulator(seed=5, lively=False, wall=clock.time, stream_lifetime=900) as sim:
        sim.add_account("oneway", api_key=HMAC_KEY, api_secret=HMAC_SECRET)
        async with exporting(sim, clock, connection_lifetime="10m",
                             user_stream_keepalive="4m") as running:
            stream = stream_of(running)
            await clock.advance(600)  # the planned renewal, not an error
            await wait_for(lambda: stream.state.connections == 2)
            assert stream.state.up and set(stream.state.errors.values()) == {0}
            starts = methods(sim)["userDataStream.start"]
            assert starts == 2
            async with exporting(sim, clock, connection_lifetime="23h",
                                 user_stream_keepalive="4m") as second:
                other = stream_of(second)
                await clock.advance(900)  # the server's lifetime: it closes
                await wait_for(lambda: other.state.errors["closed"] == 1)
                await clock.advance(1)
                await wait_for(lambda: other.state.up and other.state.connections == 2)


async def test_shutdown_stops_the_stream(sim: Simulator, clock: SteppedClock) -> None:
    async with exporting(sim, clock):
        assert sim.user_streams.key_of("oneway") is not None
        assert sim.user_streams.open_connections == 1
    assert sim.requests[-1].method == "userDataStream.stop"
    assert sim.user_streams.key_of("oneway") is None
    await wait_for(lambda: sim.user_streams.open_connections == 0)


async def test_unreadable_frames_count_as_other_logged_once_and_the_reader_goes_on(
        sim: Simulator, clock: SteppedClock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="exporter.userstream"):
        async with exporting(sim, clock) as running:
            frames = ("not json {", "not json either", b"\x00\x01", '{"e": "NEW_THING", "E": 1}')
            for frame in frames:
                sim.user_streams.raw("oneway", frame)
            await wait_for(lambda: stream_of(running).state.events["other"] == 4)
            sim.accounts["oneway"].set_asset_field("USDT", "walletBalance", "1357.5")
            await metrics_show(running, WALLET, 1357.5, asset="USDT")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per kind: not JSON, binary; a new type is no problem
    assert all("could not read" in text for text in warnings)


async def test_the_query_form_names_the_events_it_needs(sim: Simulator,
                                                        clock: SteppedClock) -> None:
    async with exporting(sim, clock, user_stream_endpoint=f"{sim.stream_url}?events=TRADE_LITE"
                         ) as running:
        assert sim.user_streams.key_of("oneway") is not None  # not expired for lack of events
        sim.accounts["oneway"].set_asset_field("USDT", "walletBalance", "1111.5")
        await metrics_show(running, WALLET, 1111.5, asset="USDT")


async def test_stream_off_by_config_sends_nothing_and_shows_no_stream_series(
        sim: Simulator, clock: SteppedClock) -> None:
    async with exporting(sim, clock, user_stream=False) as running:
        assert running.streams == []
        await wait_for(lambda: running.pollers[0].state.up)
        samples = await scrape(running.server.url)
    assert not any(name.startswith("binance_futures_user_stream") for name, _ in samples)
    assert not any(str(record.method).startswith("userDataStream") for record in sim.requests)
    assert sim.user_streams.connections_opened == 0


async def test_a_frame_that_breaks_the_reader_is_dropped_and_reading_goes_on(
        sim: Simulator, clock: SteppedClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    parse = userstream.parse_event

    def breaking(message: str | bytes) -> StreamEvent:
        if message == "boom":
            raise RuntimeError("a bug")
        return parse(message)

    monkeypatch.setattr(userstream, "parse_event", breaking)
    async with exporting(sim, clock) as running:
        sim.user_streams.raw("oneway", "boom")
        await wait_for(lambda: "broke the reader" in caplog.text)
        sim.accounts["oneway"].set_asset_field("USDT", "walletBalance", "1212.5")
        await metrics_show(running, WALLET, 1212.5, asset="USDT")
        assert stream_of(running).state.connections == 1
