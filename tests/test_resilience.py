"""Every failure mode Binance can throw, against the simulator, at the poller level."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.app import run_exporter
from exporter.poller import AccountPoller
from exporter.simulator import (
    CloseConnection,
    Delay,
    Drop,
    ErrorAnswer,
    Mutate,
    Simulator,
)
from exporter.state import AccountState
from tests.support import (
    HEDGE_KEY,
    HEDGE_SECRET,
    HMAC_KEY,
    HMAC_SECRET,
    scrape_when_up,
    sim_config,
    wait_for,
)

ONEWAY = {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}
HEDGE = {"name": "hedge", "api_key": HEDGE_KEY, "api_secret": HEDGE_SECRET}


def make_poller(sim: Simulator, **settings: Any) -> AccountPoller:
    settings.setdefault("poll_interval", "5s")
    settings.setdefault("reconnect_backoff_min", "50ms")
    settings.setdefault("reconnect_backoff_max", "200ms")
    config = sim_config(sim, accounts=[ONEWAY], **settings)
    published: list[AccountState] = []
    return AccountPoller(config.accounts[0], config, published.append)


def status_requests(sim: Simulator, api_key: str = HMAC_KEY) -> list[Any]:
    return [r for r in sim.requests if r.method == "v2/account.status" and r.api_key == api_key]


def errors(poller: AccountPoller) -> dict[str, int]:
    return {reason: count for reason, count in poller.state.errors.items() if count}


async def test_drop_mid_request_is_counted_and_retried_on_a_new_connection(
        simulator: Simulator) -> None:
    poller = make_poller(simulator)
    simulator.inject(Drop())
    try:
        assert await poller.poll_once()
    finally:
        await poller.close()
    assert errors(poller) == {"connection": 1}
    assert poller.state.up and poller.state.connections == 2


async def test_connection_outage_turns_down_then_recovers_without_restart(
        simulator: Simulator) -> None:
    poller = make_poller(simulator)
    assert await poller.poll_once()
    simulator.refuse_connections = True
    simulator.inject(Drop(abrupt=True))
    assert not await poller.poll_once()
    assert not poller.state.up and poller.state.errors["connection"] >= 2
    simulator.refuse_connections = False
    await asyncio.sleep(poller.client.reconnect_delay())
    assert await poller.poll_once()
    await poller.close()
    assert poller.state.up


async def test_slow_answer_is_a_timeout(simulator: Simulator) -> None:
    poller = make_poller(simulator, poll_interval="1s", request_timeout="300ms")
    simulator.inject(Delay(0.6))
    assert not await poller.poll_once()
    assert errors(poller) == {"timeout": 1} and not poller.state.up
    await asyncio.sleep(0.4)  # the late answer arrives and is dropped
    assert await poller.poll_once()
    await poller.close()


async def test_connection_is_renewed_before_its_lifetime_without_losing_a_poll(
        simulator: Simulator) -> None:
    poller = make_poller(simulator, connection_lifetime="400ms")
    for _ in range(6):
        assert await poller.poll_once()
        await asyncio.sleep(0.2)
    await poller.close()
    assert errors(poller) == {}
    assert poller.state.connections >= 3


async def test_server_side_close_between_polls_loses_nothing(simulator: Simulator) -> None:
    poller = make_poller(simulator)
    simulator.inject(CloseConnection(1001))
    assert await poller.poll_once()
    await asyncio.sleep(0.1)
    assert await poller.poll_once()
    await poller.close()
    assert errors(poller) == {} and poller.state.connections == 2


def _drop_total(result: dict[str, Any]) -> None:
    del result["totalMaintMargin"]


def _set(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(result: dict[str, Any]) -> None:
        result[field] = value
    return mutate


def _asset_without_name(result: dict[str, Any]) -> None:
    del result["assets"][0]["asset"]


def _asset_update_time(value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(result: dict[str, Any]) -> None:
        result["assets"][0]["updateTime"] = value
    return mutate


def _duplicate_symbol(result: dict[str, Any]) -> None:
    result["positions"].append(dict(result["positions"][0]))


def _position_amount(value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(result: dict[str, Any]) -> None:
        result["positions"][-1]["positionAmt"] = value
    return mutate


@pytest.mark.parametrize("mutate", [
    _drop_total,
    _set("availableBalance", ""),
    _set("availableBalance", "abc"),
    _set("totalWalletBalance", "NaN"),
    _set("totalWalletBalance", "1e400"),
    _set("totalWalletBalance", "inf"),
    _set("totalWalletBalance", True),
    _set("totalMaintMargin", 10**400),
    _set("totalMaintMargin", "\u0661"),  # ARABIC-INDIC DIGIT ONE: float() takes it
], ids=["missing-total", "empty", "abc", "NaN", "1e400", "inf", "bool", "huge-json-integer",
        "unicode-digit"])
async def test_malformed_answer_is_rejected_whole_and_last_good_kept(
        simulator: Simulator, mutate: Callable[[dict[str, Any]], None]) -> None:
    poller = make_poller(simulator)
    assert await poller.poll_once()
    good = poller.state.snapshot
    simulator.inject(Mutate(mutate))
    assert not await poller.poll_once()
    await poller.close()
    assert errors(poller) == {"bad_response": 1}
    assert not poller.state.up
    assert poller.state.snapshot is good
    assert poller.state.live_snapshot(time.time()) is good  # still served until stale_after


@pytest.mark.parametrize(("mutate", "problem"), [
    (_set("assets", None), ("asset", "malformed")),
    (_set("positions", {"BTCUSDT": 1}), ("position", "malformed")),
    (_asset_without_name, ("asset", "bad_identity")),
    (_duplicate_symbol, ("position", "duplicate")),
    (_position_amount("1" * 400), ("position", "positionAmt")),
    (_position_amount("1\x002"), ("position", "positionAmt")),
    (_position_amount(" 1"), ("position", "positionAmt")),
    (_position_amount("1_000"), ("position", "positionAmt")),
    (_position_amount(10**400), ("position", "positionAmt")),
    (_asset_update_time(10**400), ("asset", "updateTime")),
    (_position_amount("\u0661"), ("position", "positionAmt")),
], ids=["no-assets", "positions-object", "asset-without-name", "duplicate-symbol", "overflow",
        "nul-inside", "space", "underscore", "huge-json-integer", "huge-update-time",
        "unicode-digit"])
async def test_a_bad_row_or_field_is_left_out_and_the_account_stays_up(
        simulator: Simulator, mutate: Callable[[dict[str, Any]], None],
        problem: tuple[str, str]) -> None:
    poller = make_poller(simulator)
    simulator.inject(Mutate(mutate))
    assert await poller.poll_once()
    await poller.close()
    assert errors(poller) == {}
    state = poller.state
    counted = {**{k: v for k, v in state.rows_skipped.items() if v}, **state.fields_skipped}
    assert counted == {problem: 1}
    assert state.up and state.snapshot is not None


async def test_unknown_fields_are_ignored(simulator: Simulator) -> None:
    def add_fields(result: dict[str, Any]) -> None:
        result["newTotal"] = "1.0"
        result["assets"][0]["shiny"] = {"nested": [1]}
        result["positions"][0]["leverage"] = "20"

    poller = make_poller(simulator)
    simulator.inject(Mutate(add_fields))
    assert await poller.poll_once()
    await poller.close()


async def test_clock_skew_is_measured_on_connect_and_corrected_on_1021(
        simulator: Simulator) -> None:
    simulator.clock_offset_ms = 3000
    poller = make_poller(simulator)
    assert await poller.poll_once()
    assert errors(poller) == {}
    assert poller.state.clock_offset == pytest.approx(3.0, abs=0.3)
    simulator.clock_offset_ms = -3000  # now our timestamps run 6 s ahead of Binance
    assert await poller.poll_once()
    await poller.close()
    assert errors(poller) == {"clock": 1}
    assert poller.state.clock_offset == pytest.approx(-3.0, abs=0.3)
    methods = [r.method for r in simulator.requests]
    assert methods[-3:] == ["v2/account.status", "session.status", "v2/account.status"]


async def test_periodic_clock_checks_keep_drifting_skew_from_failing_polls(
        simulator: Simulator) -> None:
    config = sim_config(simulator, accounts=[ONEWAY], poll_interval="200ms",
                        clock_sync_interval="400ms")
    async with run_exporter(config) as running:
        await scrape_when_up(running.server.url, ("oneway",))
        for step in range(1, 16):  # drift to 3 s behind in 200 ms steps
            simulator.clock_offset_ms = -200 * step
            await asyncio.sleep(0.2)
        poller = running.pollers[0]
        await wait_for(lambda: abs(poller.state.clock_offset + 3.0) < 0.3, timeout=3)
    assert poller.state.errors.get("clock", 0) == 0


async def run_until(running_poller: AccountPoller, seconds: float) -> None:
    task = asyncio.create_task(running_poller.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_429_stops_every_request_until_retry_after(simulator: Simulator) -> None:
    poller = make_poller(simulator, poll_interval="100ms")
    retry_after = simulator.server_time_ms() + 1200
    simulator.inject(ErrorAnswer(429, -1003, "Too many requests; current limit is 2400 request "
                                 "weight per 1 MINUTE.", {"retryAfter": retry_after}))
    await run_until(poller, 2.0)
    await poller.close()
    limited = next(r for r in simulator.requests if r.method == "v2/account.status")
    after = [r for r in simulator.requests if r.wall_ms > limited.wall_ms]
    assert after, "polling never resumed"
    assert min(r.wall_ms for r in after) >= retry_after
    assert poller.state.errors["rate_limited"] == 1 and poller.state.up


async def test_429_without_retry_after_waits_for_the_next_minute(simulator: Simulator) -> None:
    poller = make_poller(simulator, poll_interval="100ms")
    simulator.inject(ErrorAnswer(429, -1003, "Too many requests."))
    before = (time.time() // 60 + 1) * 60
    await run_until(poller, 0.5)
    after = (time.time() // 60 + 1) * 60  # differs only if a minute began during the run
    await poller.close()
    assert any(poller.state.backoff_until == pytest.approx(minute, abs=0.5)
               for minute in (before, after)), poller.state.backoff_until
    # polling resumes at the minute: within this run only if a minute began during it
    assert len(status_requests(simulator)) in ({1} if before == after else {1, 2})


async def test_418_ban_stops_until_the_time_in_the_message(simulator: Simulator) -> None:
    poller = make_poller(simulator, poll_interval="100ms")
    until = simulator.server_time_ms() + 1000
    simulator.inject(ErrorAnswer(418, -1003, f"Way too much request weight used; IP banned "
                                 f"until {until}. Please use WebSocket Streams."))
    await run_until(poller, 0.3)
    assert poller.state.backoff_until == pytest.approx(until / 1000, abs=0.01)
    await run_until(poller, 1.2)
    await poller.close()
    banned = status_requests(simulator)[0]
    later = [r for r in simulator.requests if r.wall_ms > banned.wall_ms]
    assert later and min(r.wall_ms for r in later) >= until
    assert poller.state.errors["banned"] == 1


async def test_simulator_ban_with_retry_after_data(simulator: Simulator) -> None:
    poller = make_poller(simulator)
    assert await poller.poll_once()
    simulator.ban(simulator.server_time_ms() + 60_000)
    assert not await poller.poll_once()
    await poller.close()
    assert poller.state.backoff_until == pytest.approx(time.time() + 60, abs=1.0)
    assert errors(poller) == {"banned": 1}


async def test_auth_error_retries_slowly_and_logs_the_account_not_the_key(
        simulator: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    poller = make_poller(simulator, poll_interval="100ms", auth_retry_interval="1s")
    simulator.inject(ErrorAnswer(401, -2015, "Invalid API-key, IP, or permissions for action."))
    with caplog.at_level(logging.INFO):
        await run_until(poller, 0.6)
        assert len(status_requests(simulator)) == 1
        await run_until(poller, 0.8)
    await poller.close()
    assert len(status_requests(simulator)) >= 2  # retried after auth_retry_interval
    assert poller.state.errors["auth"] == 1 and poller.state.up
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "account oneway" in lines[0] and "auth" in lines[0]
    assert HMAC_KEY not in caplog.text and HMAC_SECRET not in caplog.text


@pytest.mark.parametrize(("status", "code"), [(500, -1001), (503, -1007), (502, -1000)])
async def test_server_errors_retry_on_the_next_tick(simulator: Simulator, status: int,
                                                    code: int) -> None:
    poller = make_poller(simulator, poll_interval="200ms")
    simulator.inject(ErrorAnswer(status, code, "Internal error."))
    await run_until(poller, 0.5)
    await poller.close()
    requests = status_requests(simulator)
    assert len(requests) >= 2
    assert requests[1].wall_ms - requests[0].wall_ms < 400
    assert poller.state.errors["api_error"] == 1 and poller.state.up


async def test_one_failing_account_never_delays_the_others(simulator: Simulator) -> None:
    simulator.inject(Delay(30, api_key=HEDGE_KEY, count=1000))
    config = sim_config(simulator, poll_interval="300ms")
    async with run_exporter(config) as running:
        await asyncio.sleep(2.0)
        oneway, hedge = running.pollers
    times = [r.monotonic for r in status_requests(simulator)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) >= 5 and max(gaps) < 0.55, gaps
    assert oneway.state.errors.get("timeout", 0) == 0
    assert hedge.state.errors["timeout"] >= 1 and not hedge.state.up


async def test_accounts_are_staggered_across_the_interval(simulator: Simulator) -> None:
    config = sim_config(simulator, poll_interval="1s")
    async with run_exporter(config):
        await asyncio.sleep(0.8)
    first = {key: min(r.monotonic for r in status_requests(simulator, key))
             for key in (HMAC_KEY, HEDGE_KEY)}
    assert abs(first[HMAC_KEY] - first[HEDGE_KEY]) >= 0.35  # half an interval apart


async def test_session_logon_once_per_connection_and_again_after_reconnect(
        tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    async with Simulator(lively=False) as sim:
        sim.add_account("ed", api_key="edKey", ed25519_public_key=public_pem)
        config = sim_config(sim, accounts=[{"name": "ed", "api_key": "edKey",
                                            "private_key": private_pem,
                                            "session_logon": True}])
        poller = AccountPoller(config.accounts[0], config, lambda state: None)
        assert await poller.poll_once()
        assert await poller.poll_once()
        sim.inject(CloseConnection())
        assert await poller.poll_once()
        await asyncio.sleep(0.1)
        assert await poller.poll_once()
        await poller.close()
        methods = [r.method for r in sim.requests]
    assert methods.count("session.logon") == 2
    assert methods.count("v2/account.status") == 4
    assert errors(poller) == {}


async def test_one_clock_measurement_per_connection_at_start(simulator: Simulator) -> None:
    config = sim_config(simulator, accounts=[ONEWAY], poll_interval="200ms")
    async with run_exporter(config) as running:
        await scrape_when_up(running.server.url, ("oneway",))
        await asyncio.sleep(0.5)
    methods = [r.method for r in simulator.requests]
    assert methods.count("session.status") == 1  # at connect; the next is clock_sync_interval away
    assert methods.count("v2/account.status") >= 3
