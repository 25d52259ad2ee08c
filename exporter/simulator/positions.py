"""Position rows: every figure Binance shows for one symbol and side, from one code path.

A row is a position (a signed amount at an entry price, with a leverage and a
margin type), the open orders of that symbol and side, or both; Binance lists
a symbol while it has either. :func:`figures` computes, at a mark price,
everything ``v2/account.status`` shows for a row, and :func:`status_row`
spells it the way that method does.

The simplifications against Binance: one maintenance margin rate for every
notional (Binance has brackets), and an open order's margin is given, not
derived from its price and quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAINT_MARGIN_RATE",
    "Figures",
    "Position",
    "figures",
    "fmt",
    "margin_asset",
    "parse_decimal",
    "status_row",
]

MAINT_MARGIN_RATE = Decimal("0.004")

EIGHT_PLACES = Decimal("1e-8")
AMOUNT_PLACES = Decimal("1e-3")
#: Bound on amounts a test may set, so that figures stay within Decimal's 28 digits.
_LARGEST = Decimal("1e12")
_ZERO = Decimal(0)

#: How Binance's documented examples spell zero in these fields; every other zero,
#: and every other value, has eight decimal places.
_ZERO_SPELLINGS = {
    "notional": "0",
    "isolatedWallet": "0",
    "initialMargin": "0",
    "maintMargin": "0",
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
    return Figures(
        mark=mark,
        notional=notional,
        unrealized_profit=pnl,
        isolated_wallet=isolated_wallet,
        isolated_margin=isolated_wallet + pnl if position.isolated else _ZERO,
        position_initial_margin=rounded(abs(notional) / position.leverage),
        open_order_initial_margin=position.order_margin,
        maint_margin=rounded(abs(notional) * MAINT_MARGIN_RATE),
    )


def _spell(field: str, value: Decimal) -> str:
    if value == 0 and field in _ZERO_SPELLINGS:
        return _ZERO_SPELLINGS[field]
    return fmt(value)


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
