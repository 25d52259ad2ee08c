"""Which margin mode an account is in, read from v1 account.status: what its totals mean."""

from __future__ import annotations

import asyncio

import pytest

from exporter.poller import MODE_METHOD, AccountPoller
from exporter.simulator import ErrorAnswer, Mutate, Simulator
from exporter.snapshot import MalformedAnswer, parse_margin_mode
from tests.support import (
    HEDGE_KEY,
    HEDGE_SECRET,
    HMAC_KEY,
    HMAC_SECRET,
    SteppedClock,
    sim_config,
    wait_for,
)

ONEWAY = {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}
HEDGE = {"name": "hedge", "api_key": HEDGE_KEY, "api_secret": HEDGE_SECRET}


def make_poller(sim: Simulator, clock: SteppedClock, account: dict[str, str]) -> AccountPoller:
    config = sim_config(sim, accounts=[account], poll_interval="1m", clock_sync_interval="10m")
    return AccountPoller(config.accounts[0], config, lambda state: None, clock=clock)


def mode_reads(sim: Simulator) -> int:
    return sum(r.method == MODE_METHOD for r in sim.requests)


@pytest.mark.parametrize(("account", "multi_assets"), [(ONEWAY, False), (HEDGE, True)])
async def test_the_mode_is_read_at_start_and_with_every_clock_check(
        stepped_simulator: Simulator, clock: SteppedClock, account: dict[str, str],
        multi_assets: bool) -> None:
    poller = make_poller(stepped_simulator, clock, account)
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(lambda: poller.state.up)
        assert poller.state.multi_assets is multi_assets and mode_reads(stepped_simulator) == 1
        for minute in range(1, 11):
            await clock.advance_until_asleep(60)
            assert mode_reads(stepped_simulator) == (1 if minute < 10 else 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await poller.close()


async def test_a_failed_read_keeps_the_last_known_mode_and_the_poll_goes_on(
        stepped_simulator: Simulator, clock: SteppedClock) -> None:
    poller = make_poller(stepped_simulator, clock, HEDGE)
    stepped_simulator.inject(ErrorAnswer(500, -1001, "Internal error.", method=MODE_METHOD))
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(lambda: poller.state.up)
        assert poller.state.multi_assets is None and poller.state.errors["api_error"] == 1
        stepped_simulator.inject(Mutate(lambda result: result.pop("multiAssetsMargin"),
                                        method=MODE_METHOD))
        await clock.advance_until_asleep(600)
        assert poller.state.multi_assets is None and poller.state.errors["bad_response"] == 1
        await clock.advance_until_asleep(600)
        assert poller.state.multi_assets is True and poller.state.up
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await poller.close()


def test_only_a_boolean_is_a_mode() -> None:
    assert parse_margin_mode({"multiAssetsMargin": False}) is False
    for result in ({"multiAssetsMargin": "true"}, {"multiAssetsMargin": 1}, {}, [], None):
        with pytest.raises(MalformedAnswer):
            parse_margin_mode(result)
