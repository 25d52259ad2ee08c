"""The simulator's user data stream, through real WebSocket clients: listen keys, the
/private/ws connections, the events an account's changes push, and the stream's faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from exporter.simulator import (
    CYCLE_DANGER_S,
    CYCLE_FALL_S,
    CYCLE_FORCED_SYMBOL,
    CYCLE_RISE_S,
    CYCLE_SYMBOL,
    MSG_NO_LISTEN_KEY,
    SimAccount,
    Simulator,
)
from tests.support import HMAC_KEY, HMAC_SECRET, SteppedClock, wait_for

# The fields of each event, as the models of Binance's SDK list them
# (binance_sdk_derivatives_trading_usds_futures/websocket_streams/models).
SDK_FIELDS = {
    "ACCOUNT_UPDATE": {"e", "E", "T", "a"},
    "ACCOUNT_UPDATE.a": {"m", "B", "P", "S"},
    "ACCOUNT_UPDATE.a.B": {"a", "wb", "cw", "bc"},
    "ACCOUNT_UPDATE.a.P": {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"},
    "ORDER_TRADE_UPDATE": {"e", "E", "T", "o"},
    "ORDER_TRADE_UPDATE.o": {
        "s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "M", "l", "z", "L", "N",
        "n", "T", "t", "b", "a", "m", "R", "wt", "ot", "ps", "cp", "AP", "cr", "pP", "si", "ss",
        "rp", "V", "pm", "gtd", "er"},
    "MARGIN_CALL": {"e", "E", "cw", "p"},
    "MARGIN_CALL.p": {"s", "ps", "pa", "mt", "iw", "mp", "up", "mm"},
    "listenKeyExpired": {"e", "E", "listenKey"},
}


@pytest.fixture
async def sim(clock: SteppedClock) -> AsyncIterator[Simulator]:
    async with Simulator(seed=3, lively=False, wall=clock.time) as simulator:
        simulator.add_account("main", api_key=HMAC_KEY, api_secret=HMAC_SECRET, positions=2)
        yield simulator


@contextlib.asynccontextmanager
async def api(sim: Simulator) -> AsyncIterator[ClientConnection]:
    async with connect(sim.url) as ws:
        yield ws


async def call(ws: ClientConnection, method: str, **params: Any) -> dict[str, Any]:
    params.setdefault("apiKey", HMAC_KEY)
    await ws.send(json.dumps({"id": 1, "method": method, "params": params}))
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return answer


async def start_key(sim: Simulator, api_key: str = HMAC_KEY) -> str:
    async with api(sim) as ws:
        answer = await call(ws, "userDataStream.start", apiKey=api_key)
    assert answer["status"] == 200, answer
    key: str = answer["result"]["listenKey"]
    return key


async def event(ws: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return event


async def silent(ws: ClientConnection) -> bool:
    """Whether nothing was sent to ``ws`` before the pong to a ping sent now."""
    await asyncio.wait_for(await ws.ping(), 5)
    try:
        await asyncio.wait_for(ws.recv(), 0.05)
    except TimeoutError:
        return True
    return False


def position(account: SimAccount) -> tuple[str, str]:
    row = next(row for row in account.result()["positions"] if float(row["positionAmt"]))
    return row["symbol"], row["positionSide"]


def check_fields(event: dict[str, Any]) -> None:
    kind = event["e"]
    assert set(event) <= SDK_FIELDS[kind], event
    if kind == "ACCOUNT_UPDATE":
        assert set(event["a"]) <= SDK_FIELDS["ACCOUNT_UPDATE.a"]
        for balance in event["a"]["B"]:
            assert set(balance) == SDK_FIELDS["ACCOUNT_UPDATE.a.B"]
        for row in event["a"]["P"]:
            assert set(row) == SDK_FIELDS["ACCOUNT_UPDATE.a.P"]
    elif kind == "ORDER_TRADE_UPDATE":
        assert set(event["o"]) <= SDK_FIELDS["ORDER_TRADE_UPDATE.o"]
    elif kind == "MARGIN_CALL":
        for row in event["p"]:
            assert set(row) == SDK_FIELDS["MARGIN_CALL.p"]


# ---------------------------------------------------------------- listen keys


async def test_start_returns_the_active_key_and_extends_it(sim: Simulator,
                                                           clock: SteppedClock) -> None:
    first = await start_key(sim)
    clock.step_wall(50 * 60)
    assert await start_key(sim) == first  # extended to 60 minutes from now
    clock.step_wall(50 * 60)
    sim.user_streams.check()
    assert sim.user_streams.key_of("main") == first
    clock.step_wall(11 * 60)
    sim.user_streams.check()
    assert sim.user_streams.key_of("main") is None
    assert await start_key(sim) != first


async def test_ping_extends_and_answers_1125_without_an_active_key(sim: Simulator,
                                                                   clock: SteppedClock) -> None:
    async with api(sim) as ws:
        answer = await call(ws, "userDataStream.ping")
        assert answer["status"] == 400 and answer["error"] == {"code": -1125,
                                                               "msg": MSG_NO_LISTEN_KEY}
        key = (await call(ws, "userDataStream.start"))["result"]["listenKey"]
        clock.step_wall(59 * 60)
        assert (await call(ws, "userDataStream.ping"))["result"] == {"listenKey": key}
        clock.step_wall(59 * 60)
        assert (await call(ws, "userDataStream.ping"))["status"] == 200
        wrong = await call(ws, "userDataStream.ping", listenKey="x" * 64)
        assert wrong["error"]["code"] == -1125
        clock.step_wall(60 * 60)
        assert (await call(ws, "userDataStream.ping"))["error"]["code"] == -1125
        weights = [frame["rateLimits"][0]["count"] for frame in [
            await call(ws, "userDataStream.start"), await call(ws, "userDataStream.stop")]]
    assert weights[1] - weights[0] == 1  # weight 1 each


async def test_user_stream_methods_need_a_known_key_but_no_signature(sim: Simulator) -> None:
    async with api(sim) as ws:
        unknown = await call(ws, "userDataStream.start", apiKey="u" * 64)
        assert unknown["status"] == 401 and unknown["error"]["code"] == -2015
        sim.accounts["main"].revoke()
        assert (await call(ws, "userDataStream.start"))["error"]["code"] == -2015


async def test_stop_forgets_the_key_and_closes_its_connections(sim: Simulator) -> None:
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        async with api(sim) as ws:
            assert (await call(ws, "userDataStream.stop"))["result"] == {}
        await asyncio.wait_for(stream.wait_closed(), 5)
        assert stream.close_code == 1000
    assert sim.user_streams.key_of("main") is None


# ---------------------------------------------------------------- connections and events


async def test_path_form_gets_every_change_as_events(sim: Simulator) -> None:
    account = sim.accounts["main"]
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: sim.user_streams.listening(account))
        before = next(Decimal(asset["walletBalance"]) for asset in account.result()["assets"]
                      if asset["asset"] == "USDT")
        account.set_asset_field("USDT", "walletBalance", str(before + 100))
        update = await event(stream)
        assert update["e"] == "ACCOUNT_UPDATE" and update["a"]["m"] == "DEPOSIT"
        assert update["a"]["B"] == [{"a": "USDT", "wb": f"{before + 100:.8f}",
                                     "cw": update["a"]["B"][0]["cw"], "bc": "100.00000000"}]
        assert update["E"] == sim.server_time_ms()
        account.open_position("SOLUSDT", "BOTH", "3", "150")
        fill, position_update = await event(stream), await event(stream)
        assert fill["e"] == "ORDER_TRADE_UPDATE" and fill["o"]["X"] == "FILLED"
        assert fill["o"]["x"] == "TRADE" and fill["o"]["S"] == "BUY"
        assert position_update["a"]["m"] == "ORDER"
        assert position_update["a"]["P"][0]["s"] == "SOLUSDT"
        account.funding_fee("SOLUSDT", "-0.25")
        funding = await event(stream)
        assert funding["a"]["m"] == "FUNDING_FEE" and funding["a"]["S"] == "SOLUSDT"
        for each in (update, fill, position_update, funding):
            check_fields(each)


async def test_forced_closes_carry_binance_client_order_ids(sim: Simulator) -> None:
    account = sim.accounts["main"]
    for symbol in ("ETHUSDT", "XRPUSDT", "DOGEUSDT"):
        with contextlib.suppress(KeyError):
            account.close_position(symbol, "BOTH")
    account.open_position("ETHUSDT", "BOTH", "2", "3000")
    account.open_position("XRPUSDT", "BOTH", "-100", "0.5")
    account.open_position("DOGEUSDT", "BOTH", "1000", "0.15")
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: sim.user_streams.listening(account))
        account.liquidate("ETHUSDT", "BOTH")
        partly, filled, update = await event(stream), await event(stream), await event(stream)
        assert partly["o"]["c"].startswith("autoclose-") and partly["o"]["c"] == filled["o"]["c"]
        assert partly["o"]["i"] == filled["o"]["i"]
        assert (partly["o"]["X"], filled["o"]["X"]) == ("PARTIALLY_FILLED", "FILLED")
        assert filled["o"]["x"] == "CALCULATED" and filled["o"]["z"] == filled["o"]["q"]
        assert update["e"] == "ACCOUNT_UPDATE" and update["a"]["P"][0]["pa"] == "0"
        account.auto_deleverage("XRPUSDT", "BOTH")
        adl = await event(stream)
        assert adl["o"]["c"] == "adl_autoclose" and adl["o"]["X"] == "FILLED"
        assert adl["o"]["S"] == "BUY"  # closing a short
        await event(stream)
        account.settle("DOGEUSDT", "BOTH")
        settlement = await event(stream)
        assert settlement["o"]["c"].startswith("settlement_autoclose-")
        for each in (partly, filled, update, adl, settlement):
            check_fields(each)
    with pytest.raises(KeyError):
        account.liquidate("ETHUSDT", "BOTH")


async def test_a_margin_call_goes_out_once_near_the_liquidation_price(sim: Simulator) -> None:
    account = sim.accounts["main"]
    with contextlib.suppress(KeyError):
        account.close_position("ETHUSDT", "BOTH")
    account.open_position("ETHUSDT", "BOTH", "1", "3000", isolated=True, leverage=10)
    liquidation = account.liquidation_price("ETHUSDT", "BOTH")
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: sim.user_streams.listening(account))
        account.set_mark("ETHUSDT", str(liquidation * Decimal("1.03")))
        call = await event(stream)
        assert call["e"] == "MARGIN_CALL" and "cw" not in call  # isolated: no cross wallet
        assert call["p"][0]["s"] == "ETHUSDT" and call["p"][0]["mt"] == "ISOLATED"
        assert Decimal(call["p"][0]["mm"]) > 0
        check_fields(call)
        account.set_mark("ETHUSDT", str(liquidation * Decimal("1.02")))  # still near: no repeat
        account.set_mark("ETHUSDT", "3000")  # away, then near again: a new call
        account.set_mark("ETHUSDT", str(liquidation * Decimal("1.01")))
        assert (await event(stream))["e"] == "MARGIN_CALL"
        assert [e["e"] for _, e in sim.user_streams.pushed].count("MARGIN_CALL") == 2


async def test_the_demo_cycle_sends_a_margin_call_and_a_forced_close(
        clock: SteppedClock) -> None:
    async with Simulator(seed=3, wall=clock.time) as sim:  # lively, as --demo runs it
        demo = next(a for a in Simulator.demo_accounts() if a.liquidation_cycle)
        account = demo.add_to(sim)
        assert account.holds(CYCLE_FORCED_SYMBOL, "BOTH")
        key = await start_key(sim, demo.api_key)
        async with connect(f"{sim.stream_url}/{key}") as stream:
            await wait_for(lambda: sim.user_streams.listening(account))
            clock.step_wall(CYCLE_FALL_S + CYCLE_DANGER_S / 2)
            account.step()
            pushed = [e for _, e in sim.user_streams.pushed]
            called = {row["s"] for e in pushed if e["e"] == "MARGIN_CALL" for row in e["p"]}
            assert CYCLE_SYMBOL in called
            liquidation = [e["o"] for e in pushed if e["e"] == "ORDER_TRADE_UPDATE"
                           and e["o"]["s"] == CYCLE_FORCED_SYMBOL]
            assert liquidation[-1]["c"].startswith("autoclose-")
            assert liquidation[-1]["X"] == "FILLED"
            assert not account.holds(CYCLE_FORCED_SYMBOL, "BOTH")
            assert account.holds(CYCLE_SYMBOL, "BOTH")  # the cycle's own position is kept
            clock.step_wall(CYCLE_DANGER_S / 2 + CYCLE_RISE_S)  # safe again
            account.step()
            assert account.holds(CYCLE_FORCED_SYMBOL, "BOTH")
            deposits = [e for _, e in sim.user_streams.pushed
                        if e["e"] == "ACCOUNT_UPDATE" and e["a"]["m"] == "DEPOSIT"]
            assert len(deposits) == 1
            received = [await event(stream) for _ in pushed]  # the connection got them all
            assert received == pushed[-len(received):]


async def test_unknown_keys_get_a_silent_socket(sim: Simulator) -> None:
    account = sim.accounts["main"]
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{'u' * 64}") as unknown, \
            connect(f"{sim.stream_url}/{key}") as known:
        await wait_for(lambda: sim.user_streams.listening(account))
        account.funding_fee("BTCUSDT", "1")
        assert (await event(known))["e"] == "ACCOUNT_UPDATE"
        assert await silent(unknown)


async def test_query_form_delivers_the_named_events_and_expires_without_them(
        sim: Simulator) -> None:
    account = sim.accounts["main"]
    key = await start_key(sim)
    url = f"{sim.stream_url}?listenKey={key}&events=ORDER_TRADE_UPDATE/listenKeyExpired"
    async with connect(url) as stream:
        await wait_for(lambda: sim.user_streams.listening(account))
        account.funding_fee("BTCUSDT", "1")  # an ACCOUNT_UPDATE: not asked for
        account.open_position("SOLUSDT", "BOTH", "1", "150")
        assert (await event(stream))["e"] == "ORDER_TRADE_UPDATE"
    async with connect(f"{sim.stream_url}?listenKey={key}") as stream:
        expired = await event(stream)
        assert expired == {"e": "listenKeyExpired", "E": sim.server_time_ms(), "listenKey": key}
    assert sim.user_streams.key_of("main") is None


async def test_keys_expire_on_the_wall_clock_with_an_event(sim: Simulator,
                                                           clock: SteppedClock) -> None:
    account = sim.accounts["main"]
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: sim.user_streams.listening(account))
        clock.step_wall(60 * 60)
        expired = await event(stream)  # the simulator's watcher sees the stepped clock
        assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
        check_fields(expired)
        account.funding_fee("BTCUSDT", "1")
        assert await silent(stream)


async def test_connections_close_at_their_lifetime(clock: SteppedClock) -> None:
    async with Simulator(seed=3, lively=False, wall=clock.time, stream_lifetime=30) as sim:
        sim.add_account("main", api_key=HMAC_KEY, api_secret=HMAC_SECRET)
        key = await start_key(sim)
        async with connect(f"{sim.stream_url}/{key}") as stream:
            await wait_for(lambda: sim.user_streams.open_connections == 1)
            clock.step_wall(29)
            sim.user_streams.check()
            assert sim.user_streams.open_connections == 1
            clock.step_wall(1)
            await asyncio.wait_for(stream.wait_closed(), 5)
            assert stream.close_code == 1001


# ---------------------------------------------------------------- faults


async def test_faults_drop_silence_expire_replay_burst(sim: Simulator) -> None:
    account, streams = sim.accounts["main"], sim.user_streams
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: streams.listening(account))
        streams.burst("main", 20)
        burst = [await event(stream) for _ in range(20)]
        assert [e["a"]["m"] for e in burst] == ["FUNDING_FEE"] * 20
        streams.replay("main")
        assert await event(stream) == burst[-1]
        streams.expire("main")
        assert (await event(stream))["e"] == "listenKeyExpired"
    key = await start_key(sim)
    async with connect(f"{sim.stream_url}/{key}") as stream:
        await wait_for(lambda: streams.listening(account))
        streams.silence("main")
        account.funding_fee("BTCUSDT", "1")
        assert await silent(stream)
        async with api(sim) as ws:
            assert (await call(ws, "userDataStream.ping"))["error"]["code"] == -1125
    for abrupt in (False, True):
        key = await start_key(sim)
        async with connect(f"{sim.stream_url}/{key}") as stream:
            await wait_for(lambda: streams.listening(account))
            streams.drop("main", abrupt=abrupt)
            with pytest.raises(ConnectionClosed):
                await event(stream)
            assert stream.close_code == (1006 if abrupt else 1011)
    assert streams.connections_opened == 4
