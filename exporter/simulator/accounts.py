"""Simulated futures accounts: balances, positions, mark prices, and the answers they give.

A :class:`SimAccount` holds state (per asset a wallet balance and open-order
margin; per position amount, entry price, leverage and margin type; one mark
price per symbol) and derives every figure of a ``v2/account.status`` answer
from it on demand, the way Binance does: margin balance = wallet + unrealized
profit, totals in USDT only (single-asset mode) or in USD over all assets
(multi-assets mode). Figures are decimal strings with Binance's precision.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .signing import Verifier

__all__ = ["ASSET_FIELDS", "BASE_PRICES", "MAINT_MARGIN_RATE", "TOTAL_FIELDS", "SimAccount"]

MAINT_MARGIN_RATE = Decimal("0.004")

_EIGHT_PLACES = Decimal("1e-8")
_THREE_PLACES = Decimal("1e-3")
_MARK_TICK = Decimal("1e-4")
#: Bound on amounts a test may set, so that figures stay within Decimal's 28 digits.
_LARGEST = Decimal("1e12")

#: Starting mark prices; symbols quoted in USDT or USDC margin in that asset.
BASE_PRICES = {
    "BTCUSDT": Decimal("64250.10"),
    "ETHUSDT": Decimal("3120.45"),
    "SOLUSDT": Decimal("148.320"),
    "BNBUSDT": Decimal("585.60"),
    "XRPUSDT": Decimal("0.5234"),
    "DOGEUSDT": Decimal("0.15321"),
    "BTCUSDC": Decimal("64248.30"),
    "ETHUSDC": Decimal("3119.90"),
}
_LEVERAGES = (5, 10, 20)

#: Per-asset decimal fields in the order Binance sends them.
ASSET_FIELDS = (
    "walletBalance",
    "unrealizedProfit",
    "marginBalance",
    "maintMargin",
    "initialMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "crossWalletBalance",
    "crossUnPnl",
    "availableBalance",
    "maxWithdrawAmount",
)
#: The 11 account totals and the per-asset field each one adds up.
TOTAL_FIELDS = {
    "totalInitialMargin": "initialMargin",
    "totalMaintMargin": "maintMargin",
    "totalWalletBalance": "walletBalance",
    "totalUnrealizedProfit": "unrealizedProfit",
    "totalMarginBalance": "marginBalance",
    "totalPositionInitialMargin": "positionInitialMargin",
    "totalOpenOrderInitialMargin": "openOrderInitialMargin",
    "totalCrossWalletBalance": "crossWalletBalance",
    "totalCrossUnPnl": "crossUnPnl",
    "availableBalance": "availableBalance",
    "maxWithdrawAmount": "maxWithdrawAmount",
}


def _decimal(value: str | Decimal) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not number.is_finite() or abs(number) >= _LARGEST:
        raise ValueError(f"not a finite number below {_LARGEST}: {value!r}")
    return number


def _fmt(number: Decimal, places: Decimal = _EIGHT_PLACES) -> str:
    text = f"{number.quantize(places):f}"
    return text.removeprefix("-") if Decimal(text) == 0 else text


def _margin_asset(symbol: str) -> str:
    for asset in ("USDT", "USDC"):
        if symbol.endswith(asset) and len(symbol) > len(asset):
            return asset
    raise ValueError(f"symbol {symbol!r} is not quoted in USDT or USDC")


@dataclass
class _Position:
    symbol: str
    side: str
    amount: Decimal  # signed: shorts are negative, as Binance reports them
    entry_price: Decimal
    leverage: int
    isolated: bool
    update_time: int

    def figures(self, mark: Decimal) -> dict[str, Decimal]:
        notional = self.amount * mark
        pnl = self.amount * (mark - self.entry_price)
        isolated_wallet = (
            abs(self.amount * self.entry_price) / self.leverage if self.isolated else Decimal(0)
        )
        return {
            "unrealizedProfit": pnl,
            "isolatedMargin": isolated_wallet + pnl if self.isolated else Decimal(0),
            "notional": notional,
            "isolatedWallet": isolated_wallet,
            "initialMargin": abs(notional) / self.leverage,
            "maintMargin": abs(notional) * MAINT_MARGIN_RATE,
        }


@dataclass
class _Asset:
    wallet: Decimal
    update_time: int
    open_order_margin: Decimal = Decimal(0)
    #: Fields a test pinned with set_asset_field; they win over computed values.
    overrides: dict[str, Decimal] = field(default_factory=dict)


class SimAccount:
    """One simulated futures account with its balances and positions.

    Figures are derived from state on every answer: per asset the wallet
    balance and open-order margin, per position amount, entry price, leverage
    and margin type, and one mark price per symbol. Fields pinned with
    :meth:`set_asset_field` replace the computed value, and everything derived
    from that field (and the totals) follows it.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        verifier: Verifier,
        multi_assets: bool,
        hedge_mode: bool,
        lively: bool,
        rng: random.Random,
        clock: Callable[[], int],
        portfolio_margin: bool = False,
        on_revoke: Callable[[SimAccount], None] | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.verifier = verifier
        self.multi_assets = multi_assets
        self.hedge_mode = hedge_mode
        self.lively = lively
        #: A Portfolio Margin account: its key works, but not for these methods.
        self.portfolio_margin = portfolio_margin
        #: True between revoke() and restore(): every request with this key fails.
        self.revoked = False
        self.last_result: dict[str, Any] | None = None
        self._rng = rng
        self._clock = clock
        self._on_revoke = on_revoke
        self._marks = dict(BASE_PRICES)
        self._assets: dict[str, _Asset] = {}
        self._positions: dict[tuple[str, str], _Position] = {}

    # ---- the API key

    def revoke(self) -> None:
        """Revoke the API key, as deleting it or dropping this IP from its whitelist does.

        Connections logged on with the key, or whose last signed request used
        it, get an id-less 401/-2015 frame; every later request with the key
        is answered 401/-2015 until :meth:`restore`.
        """
        self.revoked = True
        if self._on_revoke is not None:
            self._on_revoke(self)

    def restore(self) -> None:
        """Make the key work again (sessions logged on before :meth:`revoke` stay dead)."""
        self.revoked = False

    # ---- changes a test (or the market) makes

    def set_asset_field(self, asset: str, field: str, value: str) -> None:
        """Set one per-asset figure, e.g. ``("USDT", "walletBalance", "123.45")``.

        ``walletBalance`` and ``openOrderInitialMargin`` are state; any other
        field of :data:`ASSET_FIELDS` is pinned to ``value``. A new asset is added.
        """
        if field not in ASSET_FIELDS:
            raise KeyError(f"unknown asset field {field!r}")
        number = _decimal(value)
        now = self._clock()
        state = self._assets.setdefault(asset, _Asset(wallet=Decimal(0), update_time=now))
        if field == "walletBalance":
            state.wallet = number
        elif field == "openOrderInitialMargin":
            state.open_order_margin = number
        else:
            state.overrides[field] = number
        state.update_time = now

    def open_position(
        self,
        symbol: str,
        side: str,
        amount: str,
        entry_price: str,
        *,
        isolated: bool = False,
        leverage: int = 10,
    ) -> None:
        """Open (or replace) a position; the mark price starts at ``entry_price`` if new.

        ``side`` is BOTH in one-way mode (sign of ``amount`` = direction) and
        LONG or SHORT in hedge mode (the sign of ``amount`` is then ignored).
        """
        expected = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        if side not in expected:
            raise ValueError(f"side must be one of {expected} for account {self.name!r}")
        quantity, entry = _decimal(amount), _decimal(entry_price)
        if side == "LONG":
            quantity = abs(quantity)
        elif side == "SHORT":
            quantity = -abs(quantity)
        self._assets.setdefault(
            _margin_asset(symbol), _Asset(wallet=Decimal(0), update_time=self._clock())
        )
        self._marks.setdefault(symbol, entry)
        self._positions[(symbol, side)] = _Position(
            symbol, side, quantity, entry, leverage, isolated, self._clock()
        )

    def close_position(self, symbol: str, side: str) -> None:
        """Remove a position without touching the wallet (KeyError if there is none)."""
        del self._positions[(symbol, side)]

    def step(self) -> None:
        """Advance the market once: mark prices drift; when lively, maybe open or close."""
        for symbol, mark in self._marks.items():
            drift = Decimal(repr(self._rng.gauss(0, 0.002)))
            self._marks[symbol] = max(_MARK_TICK, (mark * (1 + drift)).quantize(_MARK_TICK))
        if not self.lively or self._rng.random() >= 0.08:
            return
        if self._positions and (len(self._positions) >= 5 or self._rng.random() < 0.5):
            self._realise(self._rng.choice(sorted(self._positions)))
        else:
            self._open_random()

    def populate(self, positions: int) -> None:
        """Give the account random but plausible balances and ``positions`` positions."""
        now = self._clock()
        rng = self._rng
        balances = {"USDT": rng.uniform(2_000, 50_000), "USDC": rng.uniform(0, 800), "BTC": 0.0}
        if self.multi_assets:
            balances |= {"BTC": rng.uniform(0.01, 0.5), "BNB": rng.uniform(1, 20)}
        for asset, amount in balances.items():
            self._assets[asset] = _Asset(wallet=Decimal(f"{amount:.8f}"), update_time=now)
        for _ in range(positions):
            self._open_random()

    def _open_random(self) -> None:
        rng = self._rng
        symbols = [s for s in BASE_PRICES if self.multi_assets or s.endswith("USDT")]
        sides = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        free = [(s, side) for s in symbols for side in sides if (s, side) not in self._positions]
        if not free:
            return
        symbol, side = rng.choice(free)
        mark = self._marks[symbol]
        wallet = self._assets[_margin_asset(symbol)].wallet
        notional = wallet * Decimal(f"{rng.uniform(0.2, 1.0):.4f}")
        quantity = max(_THREE_PLACES, (notional / mark).quantize(_THREE_PLACES))
        if side == "SHORT" or (side == "BOTH" and rng.random() < 0.4):
            quantity = -quantity
        entry = (mark * Decimal(f"{1 + rng.gauss(0, 0.01):.6f}")).quantize(_MARK_TICK)
        self.open_position(
            symbol,
            side,
            str(quantity),
            str(entry),
            isolated=rng.random() < 0.25,
            leverage=rng.choice(_LEVERAGES),
        )

    def _realise(self, key: tuple[str, str]) -> None:
        """Close a position as the market would: its PnL moves into the wallet."""
        position = self._positions.pop(key)
        asset = self._assets[_margin_asset(position.symbol)]
        asset.wallet += position.figures(self._marks[position.symbol])["unrealizedProfit"]
        asset.update_time = self._clock()

    # ---- the answer

    def _usd(self, amount: Decimal, asset: str) -> Decimal:
        return amount * self._marks.get(f"{asset}USDT", Decimal(1))

    def _asset_figures(self, asset: str, state: _Asset) -> dict[str, Decimal]:
        mine = [p for p in self._positions.values() if _margin_asset(p.symbol) == asset]
        figures = [(p, p.figures(self._marks[p.symbol])) for p in mine]
        cross = [f for p, f in figures if not p.isolated]
        values: dict[str, Decimal] = {}

        def pick(name: str, computed: Decimal) -> Decimal:
            values[name] = state.overrides.get(name, computed)
            return values[name]

        def total(name: str, of: list[dict[str, Decimal]]) -> Decimal:
            return sum((f[name] for f in of), Decimal(0))

        wallet = pick("walletBalance", state.wallet)
        pnl = pick("unrealizedProfit", total("unrealizedProfit", [f for _, f in figures]))
        pick("marginBalance", wallet + pnl)
        pick("maintMargin", total("maintMargin", [f for _, f in figures]))
        position_margin = pick(
            "positionInitialMargin", total("initialMargin", [f for _, f in figures])
        )
        order_margin = pick("openOrderInitialMargin", state.open_order_margin)
        pick("initialMargin", position_margin + order_margin)
        cross_wallet = pick(
            "crossWalletBalance", wallet - total("isolatedWallet", [f for _, f in figures])
        )
        cross_pnl = pick("crossUnPnl", total("unrealizedProfit", cross))
        available = pick(
            "availableBalance",
            cross_wallet + cross_pnl - total("initialMargin", cross) - order_margin,
        )
        pick("maxWithdrawAmount", max(Decimal(0), min(cross_wallet, available)))
        return values

    def result(self) -> dict[str, Any]:
        """The ``result`` object of a v2/account.status answer for the current state."""
        per_asset = {name: self._asset_figures(name, s) for name, s in self._assets.items()}
        if self.multi_assets:
            totals = {
                total: sum((self._usd(v[part], a) for a, v in per_asset.items()), Decimal(0))
                for total, part in TOTAL_FIELDS.items()
            }
        else:
            usdt = per_asset.get("USDT", {})
            totals = {total: usdt.get(part, Decimal(0)) for total, part in TOTAL_FIELDS.items()}
        result: dict[str, Any] = {name: _fmt(value) for name, value in totals.items()}
        result["assets"] = [
            self._asset_entry(name, values, self._assets[name].update_time)
            for name, values in per_asset.items()
        ]
        result["positions"] = [self._position_entry(p) for p in self._positions.values()]
        return result

    def _asset_entry(self, name: str, values: dict[str, Decimal], updated: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"asset": name}
        entry |= {f: _fmt(values[f]) for f in ASSET_FIELDS}
        if self.multi_assets:
            entry["marginAvailable"] = True
        entry["updateTime"] = updated
        return entry

    def _position_entry(self, position: _Position) -> dict[str, Any]:
        figures = position.figures(self._marks[position.symbol])
        return {
            "symbol": position.symbol,
            "positionSide": position.side,
            "positionAmt": _fmt(position.amount, _THREE_PLACES),
            **{name: _fmt(value) for name, value in figures.items()},
            "updateTime": position.update_time,
        }
