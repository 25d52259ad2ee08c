"""v2/account.position in the simulator: shape, consistency with v2/account.status, liquidation.

Through real WebSocket clients on loopback, like tests/test_simulator.py, whose
signing helpers are repeated here in a few lines (test modules import no other).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from websockets.asyncio.client import ClientConnection, connect

from exporter.simulator import (
    CYCLE_PERIOD_S,
    CYCLE_SYMBOL,
    MAINT_MARGIN_RATE,
    POSITION_METHOD,
    Mutate,
    SimAccount,
    Simulator,
    demo_accounts,
    liquidation_cycle_distance,
    liquidation_cycle_mark,
)

STATUS = "v2/account.status"
KEY = "K" * 64
SECRET = "position tests secret"

# Position Information V2, field for field in the order of Binance's Python SDK model
# (binance_sdk_derivatives_trading_usds_futures, PositionInformationV2ResponseResultInner):
# every field a string, except adl and updateTime (integers).
SDK_FIELDS = (
    "symbol",
    "positionSide",
    "positionAmt",
    "entryPrice",
    "breakEvenPrice",
    "markPrice",
    "unRealizedProfit",
    "liquidationPrice",
    "isolatedMargin",
    "notional",
    "marginAsset",
    "isolatedWallet",
    "initialMargin",
    "maintMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "adl",
    "bidNotional",
    "askNotional",
    "updateTime",
)
INTEGER_FIELDS = {"adl", "updateTime"}
TEXT_FIELDS = {"symbol", "positionSide", "marginAsset"}
# Fields both methods carry, status name -> position name.
SHARED = {
    "symbol": "symbol",
    "positionSide": "positionSide",
    "positionAmt": "positionAmt",
    "unrealizedProfit": "unRealizedProfit",
    "isolatedMargin": "isolatedMargin",
    "notional": "notional",
    "isolatedWallet": "isolatedWallet",
    "initialMargin": "initialMargin",
    "maintMargin": "maintMargin",
    "updateTime": "updateTime",
}


def signed(sim: Simulator, key: str = KEY, secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    params = {"apiKey": key, "timestamp": sim.server_time_ms(), **extra}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "signature": hmac.new(secret.encode(), payload.encode(),
                                            hashlib.sha256).hexdigest()}


async def call(ws: ClientConnection, method: str, params: dict[str, Any],
               request_id: int = 1) -> dict[str, Any]:
    await ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 2))
    assert answer["id"] == request_id
    return answer


async def positions(sim: Simulator, key: str = KEY, secret: str = SECRET,
                    **extra: Any) -> list[dict[str, Any]]:
    async with connect(sim.url) as ws:
        answer = await call(ws, POSITION_METHOD, signed(sim, key, secret, **extra))
    assert answer["status"] == 200, answer
    return answer["result"]


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["symbol"], row["positionSide"]): row for row in rows}


def dec(row: dict[str, Any], name: str) -> Decimal:
    return Decimal(row[name])


@pytest.fixture
async def sim():
    async with Simulator(seed=5, lively=False) as simulator:
        yield simulator


def bare(sim: Simulator, *, hedge_mode: bool = False, wallet: str = "10000",
         multi_assets: bool = False) -> SimAccount:
    account = sim.add_account("bare", api_key=KEY, api_secret=SECRET, positions=0,
                              hedge_mode=hedge_mode, multi_assets=multi_assets)
    if multi_assets:  # only USDT margin unless a test adds more
        for asset in ("USDC", "BTC", "BNB"):
            account.set_asset_field(asset, "walletBalance", "0")
    account.set_asset_field("USDT", "walletBalance", wallet)
    return account


# ---------------------------------------------------------------- shape


async def test_rows_carry_exactly_the_sdk_fields_with_their_json_types() -> None:
    async with Simulator(seed=9, lively=False) as sim:
        account = sim.add_account("hedge", api_key=KEY, api_secret=SECRET, hedge_mode=True,
                                  multi_assets=True, positions=6)
        account.place_open_order("XRPUSDT", "SHORT", "3.5")
        rows = await positions(sim)
    assert len(rows) >= 6
    for row in rows:
        assert tuple(row) == SDK_FIELDS, row
        for name, value in row.items():
            if name in INTEGER_FIELDS:
                assert type(value) is int, (name, value)
            else:
                assert type(value) is str, (name, value)
                if name not in TEXT_FIELDS:
                    assert Decimal(value).is_finite(), (name, value)
        assert 0 <= row["adl"] <= 4
        assert row["updateTime"] > 0
        assert row["marginAsset"] == row["symbol"][-4:]  # the quote asset
        assert row["positionSide"] in ("LONG", "SHORT")


async def test_one_row_per_status_row_with_the_same_figures_at_the_same_marks() -> None:
    async with Simulator(seed=3) as sim:  # lively: marks move on every status request
        account = sim.add_account("main", api_key=KEY, api_secret=SECRET, positions=4)
        account.place_open_order("DOGEUSDT", "BOTH", "9")
        async with connect(sim.url) as ws:
            for poll in range(3):
                status = (await call(ws, STATUS, signed(sim), 2 * poll))["result"]
                details = (await call(ws, POSITION_METHOD, signed(sim), 2 * poll + 1))["result"]
                assert len(details) == len(status["positions"]) >= 5
                for left, right in zip(status["positions"], details, strict=True):
                    assert [left[k] for k in SHARED] == [right[k] for k in SHARED.values()]
                assert account.last_result == status and account.last_positions == details
            # A second details request in a poll reads the same marks; the next status moves them.
            again = (await call(ws, POSITION_METHOD, signed(sim), 10))["result"]
            assert [r["markPrice"] for r in again] == [r["markPrice"] for r in details]
            await call(ws, STATUS, signed(sim), 11)
            moved = (await call(ws, POSITION_METHOD, signed(sim), 12))["result"]
            assert [r["markPrice"] for r in moved] != [r["markPrice"] for r in details]


async def test_weight_symbol_filter_and_errors(sim: Simulator) -> None:
    account = bare(sim)
    account.open_position("BTCUSDT", "BOTH", "0.01", "60000")
    account.open_position("ETHUSDT", "BOTH", "-1", "3000")
    async with connect(sim.url) as ws:
        answer = await call(ws, POSITION_METHOD, signed(sim))
        assert answer["rateLimits"][0]["count"] == 10  # 5 for the connection, 5 for the method
        eth = (await call(ws, POSITION_METHOD, signed(sim, symbol="ETHUSDT"), 2))["result"]
        assert [r["symbol"] for r in eth] == ["ETHUSDT"]
        none = await call(ws, POSITION_METHOD, signed(sim, symbol="SOLUSDT"), 3)
        assert none["result"] == []  # a listed symbol without a position
        unknown = await call(ws, POSITION_METHOD, signed(sim, symbol="NOPEUSDT"), 4)
        assert unknown["status"] == 400
        assert unknown["error"] == {"code": -1121, "msg": "Invalid symbol."}
        for junk in (5, ""):
            bad = await call(ws, POSITION_METHOD, signed(sim, symbol=junk), 5)
            assert (bad["status"], bad["error"]["code"]) == (400, -1102)
        unsigned = await call(ws, POSITION_METHOD, {"timestamp": sim.server_time_ms()}, 6)
        assert (unsigned["status"], unsigned["error"]["code"]) == (400, -1102)


async def test_unicode_symbol_param_is_signed_raw(sim: Simulator) -> None:
    account = bare(sim)
    account.open_position("币安人生USDT", "BOTH", "1000", "0.13")
    async with connect(sim.url) as ws:
        answer = await call(ws, POSITION_METHOD, signed(sim, symbol="币安人生USDT"))
        assert answer["status"] == 200
        assert [r["symbol"] for r in answer["result"]] == ["币安人生USDT"]
        # Signed over the percent-encoded text, as some connectors do: -1022.
        params = {"apiKey": KEY, "symbol": "币安人生USDT", "timestamp": sim.server_time_ms()}
        encoded = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in sorted(params.items()))
        digest = hmac.new(SECRET.encode(), encoded.encode(), hashlib.sha256).hexdigest()
        wrong = await call(ws, POSITION_METHOD, {**params, "signature": digest}, 2)
        assert (wrong["status"], wrong["error"]["code"]) == (400, -1022)
        # Symbols travel as raw UTF-8 in the answer frame, not as \\u escapes.
        await ws.send(json.dumps({"id": 3, "method": POSITION_METHOD, "params": signed(sim)}))
        assert "币安人生USDT" in await asyncio.wait_for(ws.recv(), 2)


async def test_session_logon_serves_positions_too(sim: Simulator) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    account = sim.add_account("ed", api_key="E" * 64, ed25519_public_key=public, positions=2)
    params = {"apiKey": "E" * 64, "timestamp": sim.server_time_ms()}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items())).encode()
    params["signature"] = base64.b64encode(private.sign(payload)).decode()
    async with connect(sim.url) as ws:
        assert (await call(ws, "session.logon", params))["status"] == 200
        answer = await call(ws, POSITION_METHOD, {"timestamp": sim.server_time_ms()}, 2)
    assert answer["status"] == 200
    assert answer["result"] == account.last_positions and len(answer["result"]) == 2


async def test_portfolio_margin_revocation_and_mutate(sim: Simulator) -> None:
    sim.add_account("pm", api_key="P" * 64, api_secret="p", portfolio_margin=True)
    account = bare(sim)
    account.open_position("BTCUSDT", "BOTH", "0.01", "60000")

    def break_rows(result: list[dict[str, Any]]) -> None:
        result[0]["liquidationPrice"] = "NaN"

    sim.inject(Mutate(break_rows, method=POSITION_METHOD, api_key=KEY))
    async with connect(sim.url) as ws:
        pm = await call(ws, POSITION_METHOD, signed(sim, "P" * 64, "p"))
        assert (pm["status"], pm["error"]["code"]) == (401, -2015)
        mutated = await call(ws, POSITION_METHOD, signed(sim), 2)
        assert mutated["result"][0]["liquidationPrice"] == "NaN"
        assert account.last_positions == mutated["result"]
        account.revoke()
        assert json.loads(await asyncio.wait_for(ws.recv(), 2))["id"] is None
        revoked = await call(ws, POSITION_METHOD, signed(sim), 3)
        assert (revoked["status"], revoked["error"]["code"]) == (401, -2015)


# ---------------------------------------------------------------- liquidation prices


async def test_isolated_long_is_liquidated_below_entry_and_short_above(sim: Simulator) -> None:
    account = bare(sim)
    account.open_position("BTCUSDT", "BOTH", "0.5", "60000", isolated=True, leverage=10)
    account.open_position("ETHUSDT", "BOTH", "-2", "3000", isolated=True, leverage=5)
    rows = by_key(await positions(sim))
    btc, eth = rows[("BTCUSDT", "BOTH")], rows[("ETHUSDT", "BOTH")]
    # wallet 3000 = 0.5 * 60000 / 10; (30000 - 3000) / (0.5 * (1 - 0.004))
    assert btc["liquidationPrice"] == "54216.86746988"
    assert btc["isolatedWallet"] == "3000.00000000"
    # wallet 1200 = 2 * 3000 / 5; (6000 + 1200) / (2 * (1 + 0.004))
    assert eth["liquidationPrice"] == "3585.65737052"
    assert dec(btc, "liquidationPrice") < dec(btc, "entryPrice")
    assert dec(eth, "liquidationPrice") > dec(eth, "entryPrice")
    # At the liquidation price the isolated margin just meets the maintenance margin.
    for symbol, row in (("BTCUSDT", btc), ("ETHUSDT", eth)):
        account.set_mark(symbol, row["liquidationPrice"])
    at_liquidation = by_key(await positions(sim))
    for key in (("BTCUSDT", "BOTH"), ("ETHUSDT", "BOTH")):
        row = at_liquidation[key]
        assert abs(dec(row, "isolatedMargin") - dec(row, "maintMargin")) <= Decimal("1e-7")
        assert row["liquidationPrice"] == rows[key]["liquidationPrice"]  # fixed while isolated


def cross_pool(status: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """Margin of the cross pool and the maintenance margin of the cross positions (USDT)."""
    balance = Decimal(status["totalCrossWalletBalance"]) + Decimal(status["totalCrossUnPnl"])
    maintenance = sum(Decimal(p["maintMargin"]) for p in status["positions"]
                      if Decimal(p["isolatedWallet"]) == 0)
    return balance, maintenance


async def test_cross_positions_are_liquidated_where_the_pool_meets_maintenance(
    sim: Simulator,
) -> None:
    account = bare(sim, wallet="5000")
    account.open_position("BTCUSDT", "BOTH", "0.8", "62000", leverage=20)
    account.open_position("ETHUSDT", "BOTH", "-3", "3100", leverage=20)
    account.open_position("SOLUSDT", "BOTH", "40", "150", isolated=True, leverage=10)
    rows = by_key(await positions(sim))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        liquidation = rows[(symbol, "BOTH")]["liquidationPrice"]
        assert Decimal(liquidation) > 0
        before = account.result()
        account.set_mark(symbol, liquidation)
        async with connect(sim.url) as ws:
            status = (await call(ws, STATUS, signed(sim)))["result"]
        balance, maintenance = cross_pool(status)
        assert abs(balance - maintenance) <= Decimal("1e-6"), (symbol, balance, maintenance)
        assert balance != cross_pool(before)[0]
        account.set_mark(symbol, rows[(symbol, "BOTH")]["markPrice"])
    long_price = dec(rows[("BTCUSDT", "BOTH")], "liquidationPrice")
    assert long_price < dec(rows[("BTCUSDT", "BOTH")], "markPrice")
    short_price = dec(rows[("ETHUSDT", "BOTH")], "liquidationPrice")
    assert short_price > dec(rows[("ETHUSDT", "BOTH")], "markPrice")


async def test_a_small_cross_long_against_a_big_balance_has_no_liquidation_price(
    sim: Simulator,
) -> None:
    account = bare(sim, wallet="50000")
    account.open_position("BTCUSDT", "BOTH", "0.01", "64000")
    account.open_position("SOLUSDT", "BOTH", "-0.5", "150")
    rows = by_key(await positions(sim))
    assert rows[("BTCUSDT", "BOTH")]["liquidationPrice"] == "0"  # exactly Binance's "0"
    # A short always has one: its loss is unbounded. Here at about 50000 / 0.5.
    assert dec(rows[("SOLUSDT", "BOTH")], "liquidationPrice") > Decimal(90_000)


async def test_hedge_pair_shares_one_liquidation_price(sim: Simulator) -> None:
    account = bare(sim, hedge_mode=True, wallet="3000")
    account.open_position("ETHUSDT", "LONG", "5", "3000", leverage=20)
    account.open_position("ETHUSDT", "SHORT", "2", "3200", leverage=20)
    account.open_position("BTCUSDT", "SHORT", "0.05", "63000", leverage=20)
    rows = by_key(await positions(sim))
    long, short = rows[("ETHUSDT", "LONG")], rows[("ETHUSDT", "SHORT")]
    assert long["positionAmt"] == "5.000" and short["positionAmt"] == "-2.000"
    assert long["liquidationPrice"] == short["liquidationPrice"] != "0"
    assert dec(long, "liquidationPrice") < dec(long, "markPrice")  # net long: below the mark
    account.set_mark("ETHUSDT", long["liquidationPrice"])
    async with connect(sim.url) as ws:
        status = (await call(ws, STATUS, signed(sim)))["result"]
    balance, maintenance = cross_pool(status)
    assert abs(balance - maintenance) <= Decimal("1e-6")


async def test_multi_assets_mode_counts_every_asset_in_the_cross_pool(sim: Simulator) -> None:
    account = bare(sim, multi_assets=True, wallet="3000")
    account.open_position("BTCUSDT", "BOTH", "0.5", "64000", leverage=20)
    alone = dec(by_key(await positions(sim))[("BTCUSDT", "BOTH")], "liquidationPrice")
    account.set_asset_field("USDC", "walletBalance", "2000")  # USDC margins a USDT position
    backed = dec(by_key(await positions(sim))[("BTCUSDT", "BOTH")], "liquidationPrice")
    assert 0 < backed < alone
    # 2000 more margin moves the price by 2000 / (0.5 * (1 - rate)).
    assert abs(alone - backed - Decimal(2000) / (Decimal("0.5") * (1 - MAINT_MARGIN_RATE))) < 1


async def test_break_even_margin_asset_and_adl(sim: Simulator) -> None:
    account = sim.add_account("multi", api_key=KEY, api_secret=SECRET, positions=0,
                              multi_assets=True)
    account.set_asset_field("USDC", "walletBalance", "9000")
    account.open_position("BTCUSDC", "BOTH", "0.1", "50000")  # far in profit at 64248.30
    account.open_position("ETHUSDT", "BOTH", "-1", "3000")  # losing
    rows = by_key(await positions(sim))
    btc, eth = rows[("BTCUSDC", "BOTH")], rows[("ETHUSDT", "BOTH")]
    assert (btc["marginAsset"], eth["marginAsset"]) == ("USDC", "USDT")
    # Taker fee 0.05 % to open and to close.
    assert btc["breakEvenPrice"] == "50050.02501251"
    assert eth["breakEvenPrice"] == "2997.00149925"
    assert btc["adl"] == 4 and eth["adl"] == 0  # return on margin 285 %, and a loss
    assert btc["entryPrice"] == "50000"


# ---------------------------------------------------------------- open orders, liquidation


async def test_open_order_rows_at_zero(sim: Simulator) -> None:
    account = bare(sim, hedge_mode=True)
    account.place_open_order("ETHUSDT", "LONG", "12.5")
    account.place_open_order("ETHUSDT", "SHORT", "4")
    rows = by_key(await positions(sim))
    long = rows[("ETHUSDT", "LONG")]
    assert long == {
        "symbol": "ETHUSDT",
        "positionSide": "LONG",
        "positionAmt": "0",
        "entryPrice": "0.00000",  # zero spelled as in Binance's documented example
        "breakEvenPrice": "0.0",
        "markPrice": "3120.45000000",
        "unRealizedProfit": "0.00000000",
        "liquidationPrice": "0",
        "isolatedMargin": "0.00000000",
        "notional": "0",
        "marginAsset": "USDT",
        "isolatedWallet": "0",
        "initialMargin": "12.50000000",
        "maintMargin": "0",
        "positionInitialMargin": "0",
        "openOrderInitialMargin": "12.50000000",
        "adl": 0,
        "bidNotional": "125.00000000",  # margin at the leverage of 10
        "askNotional": "0",
        "updateTime": long["updateTime"],
    }
    short = rows[("ETHUSDT", "SHORT")]
    assert (short["bidNotional"], short["askNotional"]) == ("0", "40.00000000")


async def test_lively_market_liquidates_a_breached_isolated_position() -> None:
    async with Simulator(seed=2) as sim:
        account = bare(sim, wallet="1000")
        account.open_position("BTCUSDT", "BOTH", "0.1", "60000", isolated=True, leverage=20)
        account.open_position("ETHUSDT", "BOTH", "1", "3000", isolated=True, leverage=20,
                              kept=True)
        isolated_wallet = Decimal("300")  # 0.1 * 60000 / 20
        account.set_mark("BTCUSDT", "50000")  # far below its liquidation price (57228.9)
        account.set_mark("ETHUSDT", "2000")  # also breached, but kept
        wallet_before = Decimal(account.result()["totalWalletBalance"])
        async with connect(sim.url) as ws:
            status = (await call(ws, STATUS, signed(sim)))["result"]  # the market steps
        assert "BTCUSDT" not in {p["symbol"] for p in status["positions"]}
        assert "ETHUSDT" in {p["symbol"] for p in status["positions"]}
        assert Decimal(status["totalWalletBalance"]) == wallet_before - isolated_wallet


async def test_lively_market_liquidates_a_cross_pool_that_no_longer_covers_maintenance() -> None:
    async with Simulator(seed=4) as sim:
        account = bare(sim, wallet="1000")
        account.open_position("BTCUSDT", "BOTH", "0.2", "60000", leverage=20)
        account.open_position("ETHUSDT", "BOTH", "0.5", "3000", leverage=20)
        liquidation = by_key(await positions(sim))[("BTCUSDT", "BOTH")]["liquidationPrice"]
        account.set_mark("BTCUSDT", str(Decimal(liquidation) * Decimal("0.9")))
        async with connect(sim.url) as ws:
            status = (await call(ws, STATUS, signed(sim)))["result"]  # the market steps
        # Both cross positions went with the pool; their losses were realised.
        assert not {"BTCUSDT", "ETHUSDT"} & {p["symbol"] for p in status["positions"]}
        assert Decimal(status["totalWalletBalance"]) < Decimal(1000)


# ---------------------------------------------------------------- the demo's liquidation cycle

WARNING, CRITICAL = Decimal("0.15"), Decimal("0.05")  # the shipped alerts' thresholds


def test_cycle_crosses_the_alert_thresholds_within_minutes() -> None:
    step_ms = 100
    samples = [liquidation_cycle_distance(t) for t in range(0, CYCLE_PERIOD_S * 1000, step_ms)]
    assert 300 <= CYCLE_PERIOD_S <= 420  # a few minutes
    assert samples[0] == max(samples) > WARNING
    assert min(samples) < CRITICAL
    below_critical_s = sum(d < CRITICAL for d in samples) * step_ms / 1000
    assert 50 <= below_critical_s <= 90  # about a minute
    above_warning = sum(d > WARNING for d in samples) / len(samples)
    assert 0.4 <= above_warning <= 0.65  # about half the cycle
    # The first stretch below the warning threshold starts early and lasts well over
    # the rule's 1m: the warning fires, and it resolves within a few minutes.
    seconds = [i * step_ms / 1000 for i in range(len(samples))]
    start = next(t for t, d in zip(seconds, samples, strict=True) if d < WARNING)
    end = next(t for t, d in zip(seconds, samples, strict=True) if t > start and d >= WARNING)
    assert start <= 30
    assert end - start >= 60 + 30  # the rule's for: 1m, then time to be seen firing
    assert end <= 200
    # It repeats.
    for t in (0, 12_345, 95_000, 250_000):
        assert liquidation_cycle_distance(t + CYCLE_PERIOD_S * 1000) == (
            liquidation_cycle_distance(t)
        )


@pytest.mark.parametrize("liquidation", ["2506.41566265", "0.10637851", "51000"])
def test_cycle_mark_is_at_the_cycle_distance(liquidation: str) -> None:
    price = Decimal(liquidation)
    for t in range(0, CYCLE_PERIOD_S * 1000, 7_000):
        mark = liquidation_cycle_mark(price, t)
        assert abs((mark - price) / mark - liquidation_cycle_distance(t)) < Decimal("1e-7")


def cycle_range(low_ms: int, high_ms: int) -> tuple[Decimal, Decimal]:
    """Least and greatest cycle distance between two times (the profile is piecewise
    linear, so its extremes are at the ends or at a corner in between)."""
    corners = [0, 60_000, 120_000, 180_000, CYCLE_PERIOD_S * 1000]
    period = CYCLE_PERIOD_S * 1000
    times = [low_ms, high_ms] + [
        base + corner
        for base in range(low_ms // period * period, high_ms + 1, period)
        for corner in corners
        if low_ms <= base + corner <= high_ms
    ]
    values = [liquidation_cycle_distance(t) for t in times]
    return min(values), max(values)


async def test_demo_accounts_hold_the_cycle_and_open_orders() -> None:
    async with Simulator() as sim:  # lively, as --demo runs it
        before = sim.server_time_ms()
        accounts = {demo.name: (demo, demo.add_to(sim)) for demo in demo_accounts()}
        after = sim.server_time_ms()
        demo, _ = accounts["demo-oneway"]
        assert demo.api_secret is not None
        seen = []
        async with connect(sim.url) as ws:
            for number, offset_s in enumerate((0, 40, 90, 150, 200, 300, 420)):
                sim.clock_offset_ms = offset_s * 1000
                sent = sim.server_time_ms()
                await call(ws, STATUS, signed(sim, demo.api_key, demo.api_secret), 2 * number)
                rows = (await call(ws, POSITION_METHOD,
                                   signed(sim, demo.api_key, demo.api_secret),
                                   2 * number + 1))["result"]
                received = sim.server_time_ms()
                row = by_key(rows)[(CYCLE_SYMBOL, "BOTH")]
                mark, liquidation = dec(row, "markPrice"), dec(row, "liquidationPrice")
                assert 0 < liquidation < dec(row, "entryPrice")  # an isolated long
                distance = (mark - liquidation) / mark
                low, high = cycle_range(sent - after, received - before)
                assert low - Decimal("1e-6") <= distance <= high + Decimal("1e-6")
                seen.append(distance)
        assert seen[0] > WARNING and seen[2] < CRITICAL and CRITICAL < seen[3] < WARNING
        assert seen[5] > WARNING
        _, account = accounts["demo-hedge"]
        orders = by_key(account.position_result())[("牛来USDT", "SHORT")]
        assert (orders["positionAmt"], orders["openOrderInitialMargin"]) == ("0", "25.50000000")
        listed = {(p["symbol"], p["positionSide"], p["positionAmt"])
                  for p in account.result()["positions"]}
        assert ("牛来USDT", "SHORT", "0") in listed
        for _, account in accounts.values():
            for rows in (account.result()["positions"], account.position_result()):
                assert any(not row["symbol"].isascii() and row["positionAmt"] != "0"
                           for row in rows), account.name


def test_random_positions_pick_unicode_symbols_too() -> None:
    sim = Simulator(seed=8)
    symbols = set()
    for number in range(20):
        account = sim.add_account(f"a{number}", api_key=f"{number:064d}", api_secret="s",
                                  positions=5)
        symbols |= {row["symbol"] for row in account.result()["positions"]}
    assert {"币安人生USDT", "我踏马来了USDT", "龙虾USDT", "牛来USDT"} <= symbols
