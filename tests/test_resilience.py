"""Every failure mode Binance can throw, against the simulator, at the poller level."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.poller import AccountPoller
from exporter.simulator import (
    POSITION_METHOD,
    CloseConnection,
    Delay,
    Drop,
    Mutate,
    Simulator,
)
from exporter.state import AccountState
from tests.support import (
    HEDGE_KEY,
    HEDGE_SECRET,
    HMAC_KEY,
    HMAC_SECRET,
    sim_config,
    wait_for,
)

STATUS = "v2/account.status"
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
    assert errors(poller) == {"connection": 2}  # both requests of the poll were lost
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
    assert await poller.poll_once()  # on a new connection: the late answer is never read
    await poller.close()


async def test_server_side_close_between_polls_loses_nothing(simulator: Simulator) -> None:
    poller = make_poller(simulator)
    simulator.inject(CloseConnection(1001, method=POSITION_METHOD))  # the poll's last answer
    assert await poller.poll_once()
    await wait_for(lambda: simulator.open_connections == 0)
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
    assert poller.state.live_snapshot(time.monotonic()) is good  # still served until stale_after


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
    assert errors(poller) == {"clock": 2}  # both requests of the poll got -1021...
    assert poller.state.clock_offset == pytest.approx(-3.0, abs=0.3)
    methods = [r.method for r in simulator.requests]
    assert methods.count("session.status") == 2  # ...and shared one measurement
    # connect, poll, poll: both get -1021, one measurement, both retried
    assert methods[0] == methods[5] == "session.status" and len(methods) == 8
    assert sorted(methods[6:]) == sorted([STATUS, POSITION_METHOD])


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
        sim.inject(CloseConnection(method=POSITION_METHOD))
        assert await poller.poll_once()
        await wait_for(lambda: sim.open_connections == 0)
        assert await poller.poll_once()
        await poller.close()
        methods = [r.method for r in sim.requests]
    assert methods.count("session.logon") == 2
    assert methods.count("v2/account.status") == 4
    assert errors(poller) == {}
