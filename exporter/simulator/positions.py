"""Position rows: every figure Binance shows for one symbol and side, from one code path.

A row is a position (a signed amount at an entry price, with a leverage and a
margin type), the open orders of that symbol and side, or both; Binance lists
a symbol while it has either. :func:`figures` computes, at a mark price,
everything ``v2/account.status`` and ``v2/account.position`` show for a row;
:func:`liquidation_price` solves for the mark price at which the margin
behind a position no longer covers its maintenance margin; :func:`status_row`
and :func:`position_row` spell a row the way each method does.

The simplifications against Binance: one maintenance margin rate for every
notional (Binance has brackets with a maintenance amount), break-even from a
taker fee paid on opening and on closing, an ADL quantile from the row's own
return on margin (Binance ranks against other traders), and an open order's
margin and notional are given, not derived from its price and quantity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAINT_MARGIN_RATE",
    "TAKER_FEE_RATE",
    "Figures",
    "Position",
    "figures",
    "fmt",
    "liquidation_price",
    "margin_asset",
    "parse_decimal",
    "position_row",
    "status_row",
]

MAINT_MARGIN_RATE = Decimal("0.004")
#: Fee rate of a taker fill, paid once to open and once to close (break-even price).
TAKER_FEE_RATE = Decimal("0.0005")
#: Return on position margin per step of the ADL quantile (1 at any profit, 4 from 75 %).
_ADL_STEP = Decimal("0.25")

EIGHT_PLACES = Decimal("1e-8")
AMOUNT_PLACES = Decimal("1e-3")
#: Bound on amounts a test may set, so that figures stay within Decimal's 28 digits.
_LARGEST = Decimal("1e12")
_ZERO = Decimal(0)

#: How Binance's documented examples spell zero in these fields; every other zero,
#: and every other value, has eight decimal places.
_ZERO_SPELLINGS = {
    "entryPrice": "0.00000",
    "breakEvenPrice": "0.0",
    "liquidationPrice": "0",
    "notional": "0",
    "isolatedWallet": "0",
    "initialMargin": "0",
    "maintMargin": "0",
    "positionInitialMargin": "0",
    "openOrderInitialMargin": "0",
    "bidNotional": "0",
    "askNotional": "0",
}


def parse_decimal(value: str | Decimal) -> Decimal:
    """A finite decimal below 1e12 in magnitude, else ValueError naming ``value``."""
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not number.is_finite() or abs(number) >= _LARGEST:
        raise ValueError(f"not a finite number below {_LARGEST}: {value!r}")
    return number


def fmt(number: Decimal, places: Decimal = EIGHT_PLACES) -> str:
    """``number`` with exactly the decimal places of ``places``; zero never has a sign."""
    text = f"{number.quantize(places):f}"
    return text.removeprefix("-") if Decimal(text) == 0 else text


def margin_asset(symbol: str) -> str:
    """The asset a symbol's positions are margined in: its quote asset, USDT or USDC."""
    for asset in ("USDT", "USDC"):
        if symbol.endswith(asset) and len(symbol) > len(asset):
            return asset
    raise ValueError(f"symbol {symbol!r} is not quoted in USDT or USDC")


@dataclass(frozen=True)
class Position:
    """One row: a position, the open orders of its symbol and side, or both."""

    symbol: str
    side: str  # BOTH in one-way mode, LONG or SHORT in hedge mode
    amount: Decimal  # signed: shorts are negative; 0 for a row with open orders only
    entry_price: Decimal  # 0 without a position
    leverage: int
    isolated: bool
    update_time: int
    order_margin: Decimal = _ZERO  # initial margin of the row's open orders
    kept: bool = False  # the lively market never closes it

    @property
    def margin_asset(self) -> str:
        return margin_asset(self.symbol)


@dataclass(frozen=True)
class Figures:
    """A row's figures at one mark price (amounts in its margin asset)."""

    mark: Decimal
    notional: Decimal
    unrealized_profit: Decimal
    isolated_wallet: Decimal
    isolated_margin: Decimal
    position_initial_margin: Decimal
    open_order_initial_margin: Decimal
    maint_margin: Decimal
    break_even_price: Decimal
    bid_notional: Decimal
    ask_notional: Decimal
    adl: int

    @property
    def initial_margin(self) -> Decimal:
        """Initial margin of the position and of the row's open orders."""
        return self.position_initial_margin + self.open_order_initial_margin


def figures(position: Position, mark: Decimal) -> Figures:
    """Everything Binance shows for ``position`` while its symbol's mark price is ``mark``.

    Each figure is rounded to eight places, as Binance keeps them, so that sums
    of figures (an asset's, the totals) equal the sums of what is shown.
    """

    def rounded(value: Decimal) -> Decimal:
        return value.quantize(EIGHT_PLACES)

    notional = rounded(position.amount * mark)
    pnl = rounded(position.amount * (mark - position.entry_price))
    isolated_wallet = (
        rounded(abs(position.amount * position.entry_price) / position.leverage)
        if position.isolated
        else _ZERO
    )
    position_margin = rounded(abs(notional) / position.leverage)
    # Open orders of a LONG (or, simplified, BOTH) row buy; those of a SHORT row sell.
    orders_notional = position.order_margin * position.leverage
    buys = position.side != "SHORT"
    return Figures(
        mark=mark,
        notional=notional,
        unrealized_profit=pnl,
        isolated_wallet=isolated_wallet,
        isolated_margin=isolated_wallet + pnl if position.isolated else _ZERO,
        position_initial_margin=position_margin,
        open_order_initial_margin=position.order_margin,
        maint_margin=rounded(abs(notional) * MAINT_MARGIN_RATE),
        break_even_price=rounded(_break_even(position.amount, position.entry_price)),
        bid_notional=orders_notional if buys else _ZERO,
        ask_notional=_ZERO if buys else orders_notional,
        adl=_adl_quantile(pnl, position_margin),
    )


def _break_even(amount: Decimal, entry: Decimal) -> Decimal:
    """The price at which closing pays back the taker fees of opening and closing."""
    if amount > 0:  # sell at p: p - fee * p = entry + fee * entry
        return entry * (1 + TAKER_FEE_RATE) / (1 - TAKER_FEE_RATE)
    if amount < 0:  # buy back at p: entry - fee * entry = p + fee * p
        return entry * (1 - TAKER_FEE_RATE) / (1 + TAKER_FEE_RATE)
    return _ZERO


def _adl_quantile(pnl: Decimal, position_margin: Decimal) -> int:
    """0 for a losing (or no) position, else 1-4 by return on margin."""
    if pnl <= 0 or position_margin <= 0:
        return 0
    return min(4, 1 + int(pnl / position_margin / _ADL_STEP))


def liquidation_price(
    positions: Iterable[Position], balance: Decimal, maint_margin: Decimal
) -> Decimal:
    """The mark price at which ``positions`` are liquidated, or 0 if no price does it.

    ``positions`` share one symbol (so one mark price) and one margin: an
    isolated position alone, or every cross position of the symbol (both
    sides of a hedge pair). ``balance`` is the margin that does not move with
    this mark (the isolated wallet; or the cross wallet balance plus the
    unrealized profit of other symbols' cross positions) and ``maint_margin``
    the maintenance margin of those other positions. The answer solves
    ``balance + sum(amount * (p - entry)) = maint_margin + rate * p * sum(|amount|)``
    for ``p``. Binance sends "0" when no positive price liquidates, e.g. a
    small long against a large balance; so does this.
    """
    rows = list(positions)
    net = sum((p.amount for p in rows), _ZERO)
    gross = sum((abs(p.amount) for p in rows), _ZERO)
    cost = sum((p.amount * p.entry_price for p in rows), _ZERO)
    slope = net - MAINT_MARGIN_RATE * gross  # d(margin - maintenance) / d(price)
    if slope == 0:
        return _ZERO
    price = ((maint_margin - balance + cost) / slope).quantize(EIGHT_PLACES)
    return price if price > 0 else _ZERO


def _spell(field: str, value: Decimal) -> str:
    if value == 0 and field in _ZERO_SPELLINGS:
        return _ZERO_SPELLINGS[field]
    return fmt(value)


def _price(field: str, value: Decimal) -> str:
    """An entry or break-even price as Binance writes them: no trailing zeros."""
    if value == 0:
        return _ZERO_SPELLINGS[field]
    return f"{value.normalize():f}"


def _amount(position: Position) -> str:
    return fmt(position.amount, AMOUNT_PLACES) if position.amount != 0 else "0"


def status_row(position: Position, row: Figures) -> dict[str, Any]:
    """The row as an entry of ``positions`` in a ``v2/account.status`` answer."""
    return {
        "symbol": position.symbol,
        "positionSide": position.side,
        "positionAmt": _amount(position),
        "unrealizedProfit": fmt(row.unrealized_profit),
        "isolatedMargin": fmt(row.isolated_margin),
        "notional": _spell("notional", row.notional),
        "isolatedWallet": _spell("isolatedWallet", row.isolated_wallet),
        "initialMargin": _spell("initialMargin", row.initial_margin),
        "maintMargin": _spell("maintMargin", row.maint_margin),
        "updateTime": position.update_time,
    }


def position_row(position: Position, row: Figures, liquidation: Decimal) -> dict[str, Any]:
    """The row as an entry of a ``v2/account.position`` answer (Position Information V2)."""
    return {
        "symbol": position.symbol,
        "positionSide": position.side,
        "positionAmt": _amount(position),
        "entryPrice": _price("entryPrice", position.entry_price),
        "breakEvenPrice": _price("breakEvenPrice", row.break_even_price),
        "markPrice": fmt(row.mark),
        "unRealizedProfit": fmt(row.unrealized_profit),
        "liquidationPrice": _spell("liquidationPrice", liquidation),
        "isolatedMargin": fmt(row.isolated_margin),
        "notional": _spell("notional", row.notional),
        "marginAsset": position.margin_asset,
        "isolatedWallet": _spell("isolatedWallet", row.isolated_wallet),
        "initialMargin": _spell("initialMargin", row.initial_margin),
        "maintMargin": _spell("maintMargin", row.maint_margin),
        "positionInitialMargin": _spell("positionInitialMargin", row.position_initial_margin),
        "openOrderInitialMargin": _spell("openOrderInitialMargin", row.open_order_initial_margin),
        "adl": row.adl,
        "bidNotional": _spell("bidNotional", row.bid_notional),
        "askNotional": _spell("askNotional", row.ask_notional),
        "updateTime": position.update_time,
    }
