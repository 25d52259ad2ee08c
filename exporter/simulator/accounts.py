"""Simulated futures accounts: balances, position rows, mark prices, and the answers they give.

A :class:`SimAccount` holds state (per asset a wallet balance; per symbol and
side a position and/or the margin of its open orders; one mark price per
symbol) and derives every figure of a ``v2/account.status`` or
``v2/account.position`` answer from it on demand, the way Binance does: margin
balance = wallet + unrealized profit, totals in USDT only (single-asset mode)
or in USD over all assets (multi-assets mode), liquidation prices from the
margin behind each position. Figures are decimal strings with Binance's
precision. Both answers read the same marks: only :meth:`SimAccount.step`
(the server calls it once per ``v2/account.status``) moves the market.

Every change to balances, positions and open orders goes through one method,
:meth:`SimAccount._commit`, which also emits the change as user data stream
events (``ACCOUNT_UPDATE``, ``ORDER_TRADE_UPDATE``) to an :class:`EventSink`
while one listens; a market move that brings a position near its
liquidation price emits a ``MARGIN_CALL``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, Protocol

from . import events as spell
from .margins import (
    ASSET_FIELDS,
    Key,
    PerAsset,
    Rows,
    asset_figures,
    liquidation_prices,
    pool_maintenance,
    pool_margin,
)
from .positions import (
    EIGHT_PLACES,
    Figures,
    Position,
    figures,
    fmt,
    margin_asset,
    parse_decimal,
    position_row,
    status_row,
)
from .signing import Verifier

__all__ = [
    "BASE_PRICES",
    "MARGIN_CALL_DISTANCE",
    "TOTAL_FIELDS",
    "ChangeReason",
    "EventSink",
    "SimAccount",
]

_ZERO = Decimal(0)

#: Starting mark prices; symbols quoted in USDT or USDC margin in that asset.
#: USDⓈ-M lists high-volume perpetuals whose symbols are not ASCII.
BASE_PRICES = {
    "BTCUSDT": Decimal("64250.10"),
    "ETHUSDT": Decimal("3120.45"),
    "SOLUSDT": Decimal("148.320"),
    "BNBUSDT": Decimal("585.60"),
    "XRPUSDT": Decimal("0.5234"),
    "DOGEUSDT": Decimal("0.15321"),
    "币安人生USDT": Decimal("0.13240"),
    "我踏马来了USDT": Decimal("0.023870"),
    "龙虾USDT": Decimal("0.045610"),
    "牛来USDT": Decimal("0.0081230"),
    "BTCUSDC": Decimal("64248.30"),
    "ETHUSDC": Decimal("3119.90"),
}
_LEVERAGES = (5, 10, 20)
#: Isolated positions are opened at low leverage only: a fresh isolated position sits
#: about 1/leverage from liquidation, so at 10x or 20x the shipped liquidation-distance
#: alerts would fire for as long as it lives, and --demo would show nothing else.
_ISOLATED_LEVERAGES = (2, 3, 5)
#: Leverage of a row that has open orders but no position yet.
_ORDER_LEVERAGE = 10

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

#: Why an account changed (see :meth:`SimAccount._commit`).
ChangeReason = Literal[
    "FILL", "LIQUIDATION", "ADL", "SETTLEMENT", "BALANCE", "FUNDING", "ORDERS"
]
#: Forced closes: their client order id, order type and execution type. What Binance
#: sends as the order and execution type of ADL and settlement closes is not documented;
#: these are guesses (the exporter reads only the client order id and the status).
_FORCED: dict[str, tuple[Callable[[int, int], str], str, str]] = {
    "LIQUIDATION": (lambda now, number: f"{spell.LIQUIDATION_PREFIX}{now}{number:06d}",
                    "LIQUIDATION", "CALCULATED"),
    "ADL": (lambda now, number: spell.ADL_CLIENT_ID, "LIQUIDATION", "CALCULATED"),
    "SETTLEMENT": (lambda now, number: f"{spell.SETTLEMENT_PREFIX}{now}{number:06d}",
                   "MARKET", "CALCULATED"),
}
_TRADE: tuple[Callable[[int, int], str], str, str] = (
    lambda now, number: f"sim-{number}", "MARKET", "TRADE")
#: A margin call goes out when a position's mark comes within this fraction of its
#: liquidation price (or beyond it). Binance sends MARGIN_CALL "when the position risk
#: ratio is too high" without a documented threshold; this one makes the demo's
#: liquidation cycle (3 % at its closest) send one per cycle.
MARGIN_CALL_DISTANCE = Decimal("0.05")
_SMALLEST_AMOUNT = Decimal("0.001")


class EventSink(Protocol):
    """Where an account's user data stream events go (the server's user streams)."""

    def listening(self, account: SimAccount) -> bool:
        """Whether any stream would receive ``account``'s events now."""
        ...

    def push(self, account: SimAccount, event: dict[str, Any]) -> None: ...


def _price_tick(price: Decimal) -> Decimal:
    """A plausible price step: five significant digits below the leading one."""
    return Decimal(1).scaleb(price.adjusted() - 5)


@dataclass
class _Asset:
    wallet: Decimal
    update_time: int
    #: Open-order margin a test set on the asset, beside that of the rows' orders.
    open_order_margin: Decimal = _ZERO
    #: Fields a test pinned with set_asset_field; they win over computed values.
    overrides: dict[str, Decimal] = field(default_factory=dict)


class SimAccount:
    """One simulated futures account with its balances and position rows.

    Figures are derived from state on every answer: per asset the wallet
    balance; per row amount, entry price, leverage, margin type and open-order
    margin; one mark price per symbol. Fields pinned with
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
        events: EventSink | None = None,
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
        #: The ``result`` last sent for this account: of v2/account.status ...
        self.last_result: dict[str, Any] | None = None
        #: ... and of v2/account.position.
        self.last_positions: list[dict[str, Any]] | None = None
        self._rng = rng
        self._clock = clock
        self._on_revoke = on_revoke
        self._marks = dict(BASE_PRICES)
        self._mark_paths: dict[str, Callable[[int], Decimal]] = {}
        self._assets: dict[str, _Asset] = {}
        self._rows: dict[Key, Position] = {}
        self._events = events
        self._order_ids = itertools.count(1_000_000_001)
        self._margin_called: set[Key] = set()  # rows whose margin call went out
        self._step_hooks: list[Callable[[int], None]] = []

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

        ``walletBalance`` and ``openOrderInitialMargin`` are state (the latter
        adds to the margin of the rows' open orders); any other field of
        :data:`ASSET_FIELDS` is pinned to ``value``. A new asset is added.
        """
        if field not in ASSET_FIELDS:
            raise KeyError(f"unknown asset field {field!r}")
        number = parse_decimal(value)
        if field == "walletBalance":
            self._commit("BALANCE", balances={asset: number})
            return
        state = self._asset(asset)
        if field == "openOrderInitialMargin":
            state.open_order_margin = number
        else:
            state.overrides[field] = number
        state.update_time = self._clock()

    def open_position(
        self,
        symbol: str,
        side: str,
        amount: str,
        entry_price: str,
        *,
        isolated: bool = False,
        leverage: int = 10,
        kept: bool = False,
    ) -> None:
        """Open (or replace) a position; the mark price starts at ``entry_price`` if new.

        ``side`` is BOTH in one-way mode (sign of ``amount`` = direction) and
        LONG or SHORT in hedge mode (the sign of ``amount`` is then ignored).
        A ``kept`` position is never closed by a lively market. The row's open
        orders, if any, stay.
        """
        self._check_side(side)
        quantity, entry = parse_decimal(amount), parse_decimal(entry_price)
        margin_asset(symbol)
        if quantity == 0 or entry <= 0 or leverage < 1:
            raise ValueError("a position needs a non-zero amount, a positive price, leverage >= 1")
        if side == "LONG":
            quantity = abs(quantity)
        elif side == "SHORT":
            quantity = -abs(quantity)
        self._marks.setdefault(symbol, entry)
        orders = self._rows.get((symbol, side))
        position = Position(
            symbol,
            side,
            quantity,
            entry,
            leverage,
            isolated,
            self._clock(),
            order_margin=orders.order_margin if orders else _ZERO,
            kept=kept,
        )
        self._commit("FILL", rows={(symbol, side): position})

    def close_position(self, symbol: str, side: str) -> None:
        """Close a position without touching the wallet (KeyError if there is none).

        A row that also has open orders stays, at amount 0.
        """
        row = self._rows.get((symbol, side))
        if row is None or row.amount == 0:
            raise KeyError(f"no {side} position in {symbol}")
        self._commit("FILL", rows={(symbol, side): self._without_position(row)})

    def place_open_order(self, symbol: str, side: str, initial_margin: str) -> None:
        """Add open orders worth ``initial_margin`` to the row of ``symbol`` and ``side``.

        Without a position, Binance lists the row anyway: ``positionAmt`` "0",
        zero figures, a recent ``updateTime``; the margin counts in the
        asset's ``openOrderInitialMargin``.
        """
        self._check_side(side)
        margin = parse_decimal(initial_margin)
        if margin <= 0:
            raise ValueError(f"initial margin must be positive: {initial_margin!r}")
        if symbol not in self._marks:
            raise ValueError(f"no mark price for {symbol!r}: open a position in it first")
        now = self._clock()
        row = self._rows.get((symbol, side)) or Position(
            symbol, side, _ZERO, _ZERO, _ORDER_LEVERAGE, False, now
        )
        row = replace(row, order_margin=row.order_margin + margin, update_time=now)
        self._commit("ORDERS", rows={(symbol, side): row})

    def cancel_open_orders(self, symbol: str, side: str) -> None:
        """Cancel the open orders of a row (KeyError if it has none).

        A row without a position then disappears, as on Binance.
        """
        row = self._rows.get((symbol, side))
        if row is None or row.order_margin == 0:
            raise KeyError(f"no open {side} orders in {symbol}")
        update = (
            replace(row, order_margin=_ZERO, update_time=self._clock()) if row.amount else None
        )
        self._commit("ORDERS", rows={(symbol, side): update})

    def set_mark(self, symbol: str, price: str) -> None:
        """Set a symbol's mark price (until the market moves it: :meth:`step`)."""
        margin_asset(symbol)
        mark = parse_decimal(price)
        if mark <= 0:
            raise ValueError(f"a mark price must be positive: {price!r}")
        self._marks[symbol] = mark
        self._check_margin_calls()

    def set_mark_path(self, symbol: str, path: Callable[[int], Decimal] | None) -> None:
        """Let ``path(server time in ms)`` give ``symbol``'s mark instead of a random drift.

        The mark is set at once, then at every :meth:`step`; None ends the path.
        """
        margin_asset(symbol)
        if path is None:
            self._mark_paths.pop(symbol, None)
            return
        self._mark_paths[symbol] = path
        self._marks[symbol] = path(self._clock()).quantize(EIGHT_PLACES)
        self._check_margin_calls()

    def on_step(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(server time in ms)`` at every :meth:`step`, once the marks moved and
        before the market acts on them (a scripted trader, as the demo's cycle uses)."""
        self._step_hooks.append(hook)

    def step(self) -> None:
        """Advance the market once: mark prices drift, or follow their path.

        When lively, positions past their liquidation price are then liquidated
        (unless kept), and sometimes one is opened or closed.
        """
        now = self._clock()
        for symbol, mark in self._marks.items():
            path = self._mark_paths.get(symbol)
            if path is not None:
                self._marks[symbol] = path(now).quantize(EIGHT_PLACES)
                continue
            drift = Decimal(repr(self._rng.gauss(0, 0.002)))
            self._marks[symbol] = max(EIGHT_PLACES, (mark * (1 + drift)).quantize(EIGHT_PLACES))
        for hook in self._step_hooks:
            hook(now)
        self._check_margin_calls()
        if not self.lively:
            return
        self._liquidate()
        if self._rng.random() >= 0.08:
            return
        closable = sorted(k for k, r in self._rows.items() if r.amount and not r.kept)
        held = sum(1 for r in self._rows.values() if r.amount)
        if closable and (held >= 5 or self._rng.random() < 0.5):
            self._realise(self._rows[self._rng.choice(closable)])
        else:
            self._open_random()

    def deposit(self, asset: str, amount: str | Decimal) -> None:
        """Add ``amount`` to an asset's wallet (a deposit or a transfer in)."""
        wallet = self._asset(asset).wallet + parse_decimal(amount)
        self._commit("BALANCE", balances={asset: wallet})

    def holds(self, symbol: str, side: str) -> bool:
        """Whether the account holds a position (not only open orders) in ``symbol``/``side``."""
        row = self._rows.get((symbol, side))
        return row is not None and row.amount != 0

    def funding_fee(self, symbol: str, amount: str) -> None:
        """Credit (or, negative, debit) a funding fee on ``symbol`` to its margin asset."""
        asset = margin_asset(symbol)
        wallet = self._asset(asset).wallet + parse_decimal(amount)
        self._commit("FUNDING", balances={asset: wallet}, symbol=symbol)

    def liquidate(self, symbol: str, side: str) -> None:
        """Let the liquidation engine close a position now (KeyError if there is none)."""
        row = self._position(symbol, side)
        self._close(row, "LIQUIDATION", self._liquidation_loss(row))

    def auto_deleverage(self, symbol: str, side: str) -> None:
        """Close a position by auto-deleveraging, at the mark (KeyError if there is none)."""
        self._realise(self._position(symbol, side), "ADL")

    def settle(self, symbol: str, side: str) -> None:
        """Close a position by delivery settlement, at the mark (KeyError if there is none)."""
        self._realise(self._position(symbol, side), "SETTLEMENT")

    def populate(self, positions: int) -> None:
        """Give the account random but plausible balances and ``positions`` positions."""
        rng = self._rng
        balances = {"USDT": rng.uniform(2_000, 50_000), "USDC": rng.uniform(0, 800), "BTC": 0.0}
        if self.multi_assets:
            balances |= {"BTC": rng.uniform(0.01, 0.5), "BNB": rng.uniform(1, 20)}
        self._commit("BALANCE", balances={a: Decimal(f"{v:.8f}") for a, v in balances.items()})
        for _ in range(positions):
            self._open_random()

    def _open_random(self) -> None:
        rng = self._rng
        symbols = [s for s in BASE_PRICES if self.multi_assets or margin_asset(s) == "USDT"]
        sides = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        free = [(s, side) for s in symbols for side in sides if (s, side) not in self._rows]
        if not free:
            return
        symbol, side = rng.choice(free)
        mark = self._marks[symbol]
        wallet = self._assets[margin_asset(symbol)].wallet
        notional = wallet * Decimal(f"{rng.uniform(0.2, 1.0):.4f}")
        quantity = max(Decimal("0.001"), (notional / mark).quantize(Decimal("0.001")))
        if side == "SHORT" or (side == "BOTH" and rng.random() < 0.4):
            quantity = -quantity
        entry = (mark * Decimal(f"{1 + rng.gauss(0, 0.01):.6f}")).quantize(_price_tick(mark))
        isolated = rng.random() < 0.25
        self.open_position(
            symbol,
            side,
            str(quantity),
            str(entry),
            isolated=isolated,
            leverage=rng.choice(_ISOLATED_LEVERAGES if isolated else _LEVERAGES),
        )

    def _position(self, symbol: str, side: str) -> Position:
        row = self._rows.get((symbol, side))
        if row is None or row.amount == 0:
            raise KeyError(f"no {side} position in {symbol}")
        return row

    def _realise(self, row: Position, reason: ChangeReason = "FILL") -> None:
        """Close a position at the mark: its PnL moves into the wallet."""
        self._close(row, reason, figures(row, self._marks[row.symbol]).unrealized_profit)

    def _liquidation_loss(self, row: Position) -> Decimal:
        """What a liquidation takes from the wallet: the isolated wallet, or the cross loss."""
        row_figures = figures(row, self._marks[row.symbol])
        return -row_figures.isolated_wallet if row.isolated else row_figures.unrealized_profit

    def _close(self, row: Position, reason: ChangeReason, realised: Decimal) -> None:
        """Close ``row``'s position, adding ``realised`` to its margin asset's wallet."""
        wallet = self._asset(row.margin_asset).wallet + realised
        self._commit(
            reason,
            rows={(row.symbol, row.side): self._without_position(row)},
            balances={row.margin_asset: wallet},
        )

    def _liquidate(self) -> None:
        """Close what the liquidation engine would.

        An isolated position whose margin no longer covers its maintenance
        margin loses its isolated wallet. When a margin pool no longer covers
        the maintenance margin of its cross positions, they are all closed at
        the mark and their loss is realised. Kept positions are spared.
        """
        for row, row_figures in self._row_figures():
            breached = row_figures.isolated_margin <= row_figures.maint_margin
            if row.amount and row.isolated and not row.kept and breached:
                self._close(row, "LIQUIDATION", self._liquidation_loss(row))
        rows = self._row_figures()
        per_asset = self._per_asset(rows)
        for pool in {frozenset(self._pool(p.margin_asset)) for p, _ in rows}:
            maintenance = pool_maintenance(pool, rows, self._usd)
            if maintenance and pool_margin(pool, per_asset, self._usd) <= maintenance:
                for row, row_figures in rows:
                    crossed = row.amount and not row.isolated and row.margin_asset in pool
                    if crossed and not row.kept:
                        self._close(row, "LIQUIDATION", row_figures.unrealized_profit)

    def _pool(self, asset: str) -> set[str]:
        """The assets whose cross margin backs cross positions margined in ``asset``."""
        return set(self._assets) if self.multi_assets else {asset}

    @staticmethod
    def _without_position(row: Position) -> Position | None:
        """The row once its position is gone: its open orders alone, or nothing."""
        if row.order_margin == 0:
            return None
        return replace(row, amount=_ZERO, entry_price=_ZERO, isolated=False, kept=False)

    def _commit(
        self,
        reason: ChangeReason,
        *,
        rows: Mapping[Key, Position | None] | None = None,
        balances: Mapping[str, Decimal] | None = None,
        symbol: str | None = None,
    ) -> None:
        """Apply one change of the account: the only place balances, rows and orders change.

        ``reason`` says what happened: ``"FILL"`` (a trade opened, changed or
        closed a position, maybe moving PnL into the wallet), a forced close
        (``"LIQUIDATION"`` by the liquidation engine, ``"ADL"``, or
        ``"SETTLEMENT"`` at delivery), ``"BALANCE"`` (a wallet changed without a
        trade: deposit, transfer, adjustment), ``"FUNDING"`` (a funding fee on
        ``symbol``) or ``"ORDERS"`` (open orders placed or cancelled). ``rows``
        maps (symbol, side) to the new row, or None when the row is gone;
        ``balances`` maps assets to their new wallet balance. While a user data
        stream listens, the change is emitted as its events.
        """
        now = self._clock()
        rows, balances = rows or {}, balances or {}
        listening = self._events is not None and self._events.listening(self)
        before_rows = {key: self._rows.get(key) for key in rows} if listening else {}
        before_wallets = ({asset: self._asset(asset).wallet for asset in balances}
                          if listening else {})
        for asset, wallet in balances.items():
            state = self._asset(asset)
            state.wallet, state.update_time = wallet, now
        for key, row in rows.items():
            if row is None:
                self._rows.pop(key, None)
            else:
                self._asset(row.margin_asset)
                self._rows[key] = row
        if listening:
            self._emit(reason, now, before_rows, before_wallets, symbol)

    # ---- user data stream events

    def _emit(self, reason: ChangeReason, now: int, before_rows: Mapping[Key, Position | None],
              before_wallets: Mapping[str, Decimal], symbol: str | None) -> None:
        """Push the events of one committed change: orders first, then the account update."""
        assert self._events is not None
        for key, old in before_rows.items():
            asset = margin_asset(key[0])
            realized = (self._assets[asset].wallet - before_wallets[asset]
                        if asset in before_wallets else _ZERO)
            for event in self._order_events(reason, now, old, self._rows.get(key), key,
                                            realized):
                self._events.push(self, event)
        changed = [key for key, old in before_rows.items() if reason != "ORDERS"
                   and _amount_of(old) != _amount_of(self._rows.get(key))]
        if not changed and not before_wallets:
            return
        rows = self._row_figures()
        per_asset = self._per_asset(rows)
        balances = [
            spell.balance_entry(asset, self._assets[asset].wallet,
                                per_asset[asset]["crossWalletBalance"],
                                self._assets[asset].wallet - old
                                if reason == "BALANCE" else _ZERO)
            for asset, old in before_wallets.items()
        ]
        positions = [self._position_entry(key, before_rows[key]) for key in changed]
        self._events.push(self, spell.account_update(now, _update_reason(reason, before_wallets,
                                                                         self._assets),
                                                     balances, positions, symbol))

    def _position_entry(self, key: Key, old: Position | None) -> dict[str, str]:
        row = self._rows.get(key)
        if row is None or row.amount == 0:  # closed: Binance sends the row at amount 0
            assert old is not None
            row = replace(old, amount=_ZERO, entry_price=_ZERO)
        return spell.position_entry(row, figures(row, self._marks[row.symbol]))

    def _order_events(self, reason: ChangeReason, now: int, old: Position | None,
                      new: Position | None, key: Key,
                      realized: Decimal) -> list[dict[str, Any]]:
        """The ORDER_TRADE_UPDATEs of one row's change: a fill (realizing ``realized``), or
        orders placed or cancelled."""
        symbol, side = key
        order_id = next(self._order_ids)
        if reason == "ORDERS":
            placed = _order_margin(new) > _order_margin(old)
            return [spell.order_trade_update(
                now, symbol=symbol, client_id=f"sim-{order_id}", side="SELL" if side == "SHORT"
                else "BUY", order_type="LIMIT", quantity=_SMALLEST_AMOUNT, price=_ZERO,
                execution="NEW" if placed else "CANCELED", status="NEW" if placed
                else "CANCELED", order_id=order_id, filled=_ZERO, last_filled=_ZERO,
                realized=_ZERO, position_side=side, trade_id=0)]
        before, after = _amount_of(old), _amount_of(new)
        if before == after:
            return []
        quantity = abs(after - before)
        price = (new.entry_price if new is not None and before == 0
                 else self._marks[symbol])
        client_id, order_type, execution = _FORCED.get(reason, _TRADE)
        fills = [quantity]
        if reason == "LIQUIDATION" and quantity >= 2 * _SMALLEST_AMOUNT:
            half = (quantity / 2).quantize(_SMALLEST_AMOUNT)
            fills = [half, quantity - half]  # a liquidation order filled in two parts
        updates, filled = [], _ZERO
        for number, part in enumerate(fills, start=1):
            filled += part
            updates.append(spell.order_trade_update(
                now, symbol=symbol, client_id=client_id(now, order_id),
                side="BUY" if after > before else "SELL", order_type=order_type,
                quantity=quantity, price=price, execution=execution,
                status="FILLED" if filled == quantity else "PARTIALLY_FILLED",
                order_id=order_id, filled=filled, last_filled=part,
                realized=realized * part / quantity, position_side=side,
                trade_id=order_id * 10 + number))
        return updates

    def _check_margin_calls(self) -> None:
        """Send a MARGIN_CALL for positions that came within MARGIN_CALL_DISTANCE of their
        liquidation price; each once, until it moves away again."""
        if self._events is None or not self._events.listening(self):
            return
        rows = self._row_figures()
        prices = self._liquidation_prices(rows)
        near: dict[Key, tuple[Position, Figures]] = {}
        for row, row_figures in rows:
            liquidation = prices.get((row.symbol, row.side), _ZERO)
            if not row.amount or liquidation <= 0:
                continue
            gap = row_figures.mark - liquidation if row.amount > 0 else (
                liquidation - row_figures.mark)
            if gap <= MARGIN_CALL_DISTANCE * row_figures.mark:
                near[(row.symbol, row.side)] = (row, row_figures)
        calls = [near[key] for key in near if key not in self._margin_called]
        self._margin_called = set(near)
        if not calls:
            return
        crossed = next((row for row, _ in calls if not row.isolated), None)
        cross_wallet = (self._per_asset(rows)[crossed.margin_asset]["crossWalletBalance"]
                        if crossed is not None else None)
        self._events.push(self, spell.margin_call(
            self._clock(), [spell.margin_call_entry(row, row_figures)
                            for row, row_figures in calls], cross_wallet))

    def _asset(self, asset: str) -> _Asset:
        return self._assets.setdefault(asset, _Asset(wallet=_ZERO, update_time=self._clock()))

    def _check_side(self, side: str) -> None:
        expected = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        if side not in expected:
            raise ValueError(f"side must be one of {expected} for account {self.name!r}")

    # ---- the answer

    def _usd(self, amount: Decimal, asset: str) -> Decimal:
        return amount * self._marks.get(f"{asset}USDT", Decimal(1))

    def _row_figures(self) -> Rows:
        """Every row with its figures at the current marks: the one source of both answers."""
        return [(row, figures(row, self._marks[row.symbol])) for row in self._rows.values()]

    def _per_asset(self, rows: Rows) -> PerAsset:
        return {
            name: asset_figures(
                name,
                rows,
                wallet=state.wallet,
                open_order_margin=state.open_order_margin,
                overrides=state.overrides,
            )
            for name, state in self._assets.items()
        }

    def _liquidation_prices(self, rows: Rows) -> dict[Key, Decimal]:
        return liquidation_prices(rows, self._per_asset(rows), self._pool, self._usd)

    def liquidation_price(self, symbol: str, side: str) -> Decimal:
        """The liquidation price v2/account.position shows for a row now (0: none)."""
        return self._liquidation_prices(self._row_figures()).get((symbol, side), _ZERO)

    def knows(self, symbol: str) -> bool:
        """Whether ``symbol`` is a symbol of this market (one with a mark price)."""
        return symbol in self._marks

    def position_result(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """The ``result`` of a v2/account.position answer: every row, or ``symbol``'s."""
        rows = self._row_figures()
        prices = self._liquidation_prices(rows)
        return [
            position_row(row, row_figures, prices.get((row.symbol, row.side), _ZERO))
            for row, row_figures in rows
            if symbol is None or row.symbol == symbol
        ]

    def v1_result(self) -> dict[str, Any]:
        """The ``result`` of v1 ``account.status`` (weight 10) at the current marks.

        Besides the v2 fields it says which margin mode is on
        (``multiAssetsMargin``), which no v2 method does. Binance's v1 rows carry
        more fields than v2's (leverage, entry price, ...); they are left out
        here, as the exporter reads only the mode from this method.
        """
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "updateTime": 0, "multiAssetsMargin": self.multi_assets, "tradeGroupId": -1,
                **self.result()}

    def result(self) -> dict[str, Any]:
        """The ``result`` object of a v2/account.status answer for the current state."""
        rows = self._row_figures()
        per_asset = self._per_asset(rows)
        if self.multi_assets:
            totals = {
                total: sum((self._usd(v[part], a) for a, v in per_asset.items()), _ZERO)
                for total, part in TOTAL_FIELDS.items()
            }
        else:
            usdt = per_asset.get("USDT", {})
            totals = {total: usdt.get(part, _ZERO) for total, part in TOTAL_FIELDS.items()}
        result: dict[str, Any] = {name: fmt(value) for name, value in totals.items()}
        result["assets"] = [
            self._asset_entry(name, values, self._assets[name].update_time)
            for name, values in per_asset.items()
        ]
        result["positions"] = [status_row(row, row_figures) for row, row_figures in rows]
        return result

    def _asset_entry(self, name: str, values: dict[str, Decimal], updated: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"asset": name}
        entry |= {f: fmt(values[f]) for f in ASSET_FIELDS}
        if self.multi_assets:  # Binance sends it only in multi-assets mode
            entry["marginAvailable"] = True
        entry["updateTime"] = updated
        return entry


def _amount_of(row: Position | None) -> Decimal:
    return row.amount if row is not None else _ZERO


def _order_margin(row: Position | None) -> Decimal:
    return row.order_margin if row is not None else _ZERO


def _update_reason(reason: ChangeReason, before: Mapping[str, Decimal],
                   assets: Mapping[str, _Asset]) -> str:
    """The ``m`` of an ACCOUNT_UPDATE: why Binance says the account changed."""
    if reason == "FUNDING":
        return "FUNDING_FEE"
    if reason == "BALANCE":
        rise = sum((assets[asset].wallet - old for asset, old in before.items()), _ZERO)
        return "DEPOSIT" if rise >= 0 else "WITHDRAW"
    return "ORDER"
