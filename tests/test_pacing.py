"""When the exporter sends requests: the poll grid, waits Binance asks for, clock steps.

Every test here runs the exporter on a :class:`SteppedClock` shared with the
simulator, so minutes pass in milliseconds and no test depends on how fast
this machine is. Network I/O (the requests themselves) still happens for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from exporter.app import run_exporter
from exporter.poller import AccountPoller
from exporter.simulator import (
    MSG_BANNED,
    MSG_TOO_MANY_REQUESTS,
    Delay,
    Drop,
    ErrorAnswer,
    Mute,
    Simulator,
    Stall,
)
from tests.support import (
    HEDGE_KEY,
    HEDGE_SECRET,
    HMAC_KEY,
    HMAC_SECRET,
    SteppedClock,
    scrape,
    sim_config,
    wait_for,
)

ONEWAY = {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}
HEDGE = {"name": "hedge", "api_key": HEDGE_KEY, "api_secret": HEDGE_SECRET}
STATUS = "v2/account.status"


def make_poller(sim: Simulator, clock: SteppedClock, **settings: Any) -> AccountPoller:
    settings.setdefault("poll_interval", "10s")
    settings.setdefault("request_timeout", "1s")
    settings.setdefault("reconnect_backoff_min", "10ms")
    settings.setdefault("reconnect_backoff_max", "20ms")
    config = sim_config(sim, accounts=[ONEWAY], **settings)
    return AccountPoller(config.accounts[0], config, lambda state: None, clock=clock)


@contextlib.asynccontextmanager
async def polling(poller: AccountPoller, clock: SteppedClock) -> AsyncIterator[None]:
    """Run the poller; its first poll (at start) is done when the block begins."""
    task = asyncio.create_task(poller.run())
    await wait_for(lambda: clock.sleeps_started >= 1 or task.done())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await poller.close()


def statuses(sim: Simulator, api_key: str = HMAC_KEY) -> list[Any]:
    return [r for r in sim.requests if r.method == STATUS and r.api_key == api_key]


async def test_429_stops_every_request_until_retry_after(stepped_simulator: Simulator,
                                                         clock: SteppedClock) -> None:
    sim = stepped_simulator
    retry_after = sim.server_time_ms() + 35_500
    sim.inject(ErrorAnswer(429, -1003, MSG_TOO_MANY_REQUESTS, {"retryAfter": retry_after}))
    poller = make_poller(sim, clock)
    async with polling(poller, clock):
        assert poller.state.errors["rate_limited"] == 1 and not poller.state.up
        assert poller.state.backoff_until == pytest.approx(retry_after / 1000, abs=0.01)
        for _ in range(3):  # 10, 20, 30 s: still before retryAfter
            await clock.advance_until_asleep(10)
        assert len(statuses(sim)) == 1
        await clock.advance_until_asleep(10)  # 40 s
    later = statuses(sim)[1:]
    assert len(later) == 1 and later[0].wall_ms >= retry_after
    assert poller.state.up and poller.state.backoff_until == 0


async def test_429_without_retry_after_waits_for_the_next_minute(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    clock.step_wall(30.25 - clock.time() % 60)  # half past the minute
    next_minute = math.ceil(clock.time() / 60) * 60
    stepped_simulator.inject(ErrorAnswer(429, -1003, MSG_TOO_MANY_REQUESTS))
    poller = make_poller(stepped_simulator, clock)
    async with polling(poller, clock):
        assert poller.state.backoff_until == pytest.approx(next_minute, abs=0.01)
        for _ in range(2):
            await clock.advance_until_asleep(10)
        assert len(statuses(stepped_simulator)) == 1
        await clock.advance_until_asleep(10)
    assert len(statuses(stepped_simulator)) == 2


async def test_418_ban_stops_until_the_time_in_the_message(stepped_simulator: Simulator,
                                                           clock: SteppedClock) -> None:
    until = stepped_simulator.server_time_ms() + 25_000
    stepped_simulator.inject(ErrorAnswer(418, -1003, MSG_BANNED.format(until=until)))
    poller = make_poller(stepped_simulator, clock)
    async with polling(poller, clock):
        assert poller.state.backoff_until == pytest.approx(until / 1000, abs=0.01)
        await clock.advance_until_asleep(10)
        await clock.advance_until_asleep(10)
        assert len(statuses(stepped_simulator)) == 1
        await clock.advance_until_asleep(10)
    later = statuses(stepped_simulator)[1:]
    assert later and min(r.wall_ms for r in later) >= until
    assert poller.state.errors["banned"] == 1


async def test_a_ban_costs_both_requests_of_a_poll_and_stops_both(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    poller = make_poller(stepped_simulator, clock)
    assert await poller.poll_once()
    stepped_simulator.ban(stepped_simulator.server_time_ms() + 60_000)
    assert not await poller.poll_once()
    await poller.close()
    assert poller.state.backoff_until == pytest.approx(clock.time() + 60, abs=0.01)
    assert {k: v for k, v in poller.state.errors.items() if v} == {"banned": 2}


async def test_auth_error_retries_slowly_and_logs_the_account_not_the_key(
        stepped_simulator: Simulator, clock: SteppedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    stepped_simulator.inject(ErrorAnswer(401, -2015, "Invalid API-key, IP, or permissions "
                                                     "for action."))
    poller = make_poller(stepped_simulator, clock, auth_retry_interval="45s")
    with caplog.at_level(logging.INFO):
        async with polling(poller, clock):
            for _ in range(4):
                await clock.advance_until_asleep(10)
            assert len(statuses(stepped_simulator)) == 1
            await clock.advance_until_asleep(10)
    assert len(statuses(stepped_simulator)) == 2
    assert poller.state.errors["auth"] == 1 and poller.state.up
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "account oneway" in lines[0] and "auth" in lines[0]
    assert "Portfolio Margin" in lines[0]
    assert HMAC_KEY not in caplog.text and HMAC_SECRET not in caplog.text


@pytest.mark.parametrize(("status", "code"), [(500, -1001), (503, -1007), (502, -1000)])
async def test_server_errors_retry_on_the_next_tick(stepped_simulator: Simulator,
                                                    clock: SteppedClock, status: int,
                                                    code: int) -> None:
    stepped_simulator.inject(ErrorAnswer(status, code, "Internal error."))
    poller = make_poller(stepped_simulator, clock)
    async with polling(poller, clock):
        assert not poller.state.up
        await clock.advance_until_asleep(10)
    assert len(statuses(stepped_simulator)) == 2
    assert poller.state.errors["api_error"] == 1 and poller.state.up


async def test_every_account_polls_at_start_then_staggered(stepped_simulator: Simulator,
                                                           clock: SteppedClock) -> None:
    config = sim_config(stepped_simulator, poll_interval="10s")
    async with run_exporter(config, clock=clock):
        await wait_for(lambda: len(statuses(stepped_simulator, HEDGE_KEY)) == 1
                       and len(statuses(stepped_simulator)) == 1)
        await clock.advance(10)  # oneway's second tick; hedge's is 5 s later
        await wait_for(lambda: len(statuses(stepped_simulator)) == 2)
        assert len(statuses(stepped_simulator, HEDGE_KEY)) == 1
        await clock.advance(5)
        await wait_for(lambda: len(statuses(stepped_simulator, HEDGE_KEY)) == 2)
        assert len(statuses(stepped_simulator)) == 2


async def test_one_slow_account_never_delays_the_others(stepped_simulator: Simulator,
                                                        clock: SteppedClock) -> None:
    stepped_simulator.inject(Delay(30, api_key=HEDGE_KEY, count=1000))
    config = sim_config(stepped_simulator, poll_interval="10s", request_timeout="300ms")
    async with run_exporter(config, clock=clock) as running:
        oneway, hedge = running.pollers
        await wait_for(lambda: len(statuses(stepped_simulator)) == 1 and clock.sleepers >= 2)
        for tick in range(2, 6):
            await clock.advance(10)
            await wait_for(lambda tick=tick: len(statuses(stepped_simulator)) == tick)
        await wait_for(lambda: hedge.state.errors.get("timeout", 0) >= 1)
    assert oneway.state.errors.get("timeout", 0) == 0 and oneway.state.up
    assert not hedge.state.up


async def test_periodic_clock_checks_keep_drifting_skew_from_failing_polls(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    poller = make_poller(stepped_simulator, clock, clock_sync_interval="30s")
    async with polling(poller, clock):
        for step in range(1, 16):  # Binance drifts to 3 s behind, 200 ms per poll
            stepped_simulator.clock_offset_ms = -200 * step
            await clock.advance_until_asleep(10)
    assert poller.state.errors.get("clock", 0) == 0
    assert poller.state.clock_offset == pytest.approx(-3.0, abs=0.7)
    methods = [r.method for r in stepped_simulator.requests]
    assert methods.count("session.status") == 1 + 150 // 30  # at connect, then every 30 s


async def test_one_clock_measurement_per_connection_at_start(stepped_simulator: Simulator,
                                                             clock: SteppedClock) -> None:
    poller = make_poller(stepped_simulator, clock)
    async with polling(poller, clock):
        for _ in range(3):
            await clock.advance_until_asleep(10)
    methods = [r.method for r in stepped_simulator.requests]
    assert methods.count("session.status") == 1
    assert methods.count(STATUS) == 4


async def test_connection_is_renewed_before_its_lifetime_without_losing_a_poll(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    poller = make_poller(stepped_simulator, clock, connection_lifetime="25s")
    async with polling(poller, clock):
        for _ in range(6):
            await clock.advance_until_asleep(10)
            assert poller.state.up
    assert {k: v for k, v in poller.state.errors.items() if v} == {}
    assert poller.state.connections == 3  # at 0, at 30 s and at 60 s


# --------------------------------------------------------------------------- clock steps


async def test_a_backward_clock_step_never_keeps_stale_data(stepped_simulator: Simulator,
                                                            clock: SteppedClock) -> None:
    config = sim_config(stepped_simulator, accounts=[ONEWAY], poll_interval="10s",
                        stale_after="30s", request_timeout="1s")
    async with run_exporter(config, clock=clock) as running:
        url = running.server.url
        await wait_for(lambda: running.pollers[0].state.up)
        stepped_simulator.refuse_connections = True
        stepped_simulator.inject(Drop(abrupt=True, method=None, count=100))
        clock.step_wall(-3600)  # NTP, a VM resume or an operator moves the clock back
        await clock.advance(25)
        samples = await wait_for(lambda: _down(url))
        assert ("binance_futures_account_total_wallet_balance",
                frozenset({("account", "oneway")})) in samples  # still within stale_after
        await clock.advance(10)

        async def gone() -> bool:
            samples = await scrape(url)
            return not any(name.startswith("binance_futures_account_total_")
                           for name, _ in samples)

        await wait_for(gone)


async def _down(url: str) -> dict[Any, float] | None:
    samples = await scrape(url)
    return samples if samples[("binance_futures_up",
                               frozenset({("account", "oneway")}))] == 0 else None


async def test_a_backward_clock_step_never_stretches_a_backoff(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    stepped_simulator.inject(ErrorAnswer(401, -2015, "Invalid API-key, IP, or permissions "
                                                     "for action."))
    poller = make_poller(stepped_simulator, clock, auth_retry_interval="10s")
    async with polling(poller, clock):
        clock.step_wall(-3600)
        await clock.advance_until_asleep(10)
    assert len(statuses(stepped_simulator)) == 2 and poller.state.up


async def test_a_forward_clock_step_never_ends_a_ban_early(stepped_simulator: Simulator,
                                                           clock: SteppedClock) -> None:
    until = stepped_simulator.server_time_ms() + 120_000
    stepped_simulator.inject(ErrorAnswer(418, -1003, MSG_BANNED.format(until=until)))
    poller = make_poller(stepped_simulator, clock)
    async with polling(poller, clock):
        clock.step_wall(3600)
        for _ in range(11):
            await clock.advance_until_asleep(10)
        assert len(statuses(stepped_simulator)) == 1  # 110 s: still banned
        await clock.advance_until_asleep(10)
    assert len(statuses(stepped_simulator)) == 2


# --------------------------------------------------------------------------- connections


async def test_a_connection_that_stops_answering_is_replaced(stepped_simulator: Simulator,
                                                             clock: SteppedClock) -> None:
    stepped_simulator.inject(Mute())
    poller = make_poller(stepped_simulator, clock, request_timeout="300ms")
    async with polling(poller, clock):
        assert not poller.state.up and poller.state.errors["timeout"] >= 1
        await clock.advance_until_asleep(10)
        assert poller.state.up
    assert stepped_simulator.connections_opened == 2


async def test_a_slow_answer_keeps_a_healthy_connection(stepped_simulator: Simulator,
                                                        clock: SteppedClock) -> None:
    stepped_simulator.inject(Stall(0.3))  # the server reads nothing for a while
    poller = make_poller(stepped_simulator, clock, request_timeout="2s")
    async with polling(poller, clock):
        assert poller.state.up
        await clock.advance_until_asleep(10)
    assert stepped_simulator.connections_opened == 1
    assert {k: v for k, v in poller.state.errors.items() if v} == {}


async def test_a_revoked_session_logs_on_again_once_the_key_works(clock: SteppedClock) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    async with Simulator(lively=False, wall=clock.time) as sim:
        account = sim.add_account("ed", api_key="e" * 64, ed25519_public_key=public_pem)
        config = sim_config(sim, poll_interval="10s", auth_retry_interval="60s", accounts=[
            {"name": "ed", "api_key": "e" * 64, "private_key": private_pem,
             "session_logon": True}])
        poller = AccountPoller(config.accounts[0], config, lambda state: None, clock=clock)
        async with polling(poller, clock):
            assert poller.state.up
            account.revoke()
            await wait_for(lambda: sim.open_connections == 0)  # the exporter let it go
            await clock.advance_until_asleep(10)
            assert not poller.state.up and poller.state.errors["auth"] >= 1
            account.restore()
            for _ in range(6):
                await clock.advance_until_asleep(10)
            assert poller.state.up
        methods = [r.method for r in sim.requests]
    assert methods.count("session.logon") >= 2
    assert sim.connections_opened >= 2
