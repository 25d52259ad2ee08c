"""The user data stream's events as Binance spells them: pure builders of event objects.

Field names and shapes follow the event models of Binance's SDK
(``websocket_streams/models``: ``account_update*``, ``order_trade_update*``,
``margin_call*``, ``listen_key_expired``). :mod:`.accounts` decides when an
event happens; these functions only spell it.

Where Binance's documentation leaves a value open, the choice is noted: the
order type and execution type of ADL and settlement closes, and the figures
a margin call reports, are not documented precisely.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .positions import Figures, Position, fmt, margin_asset

__all__ = [
    "ADL_CLIENT_ID",
    "LIQUIDATION_PREFIX",
    "SETTLEMENT_PREFIX",
    "account_update",
    "balance_entry",
    "listen_key_expired",
    "margin_call",
    "margin_call_entry",
    "order_trade_update",
    "position_entry",
]

#: Client order id prefixes of forced closes (the exporter counts them by these).
LIQUIDATION_PREFIX = "autoclose-"
ADL_CLIENT_ID = "adl_autoclose"
SETTLEMENT_PREFIX = "settlement_autoclose-"


def account_update(now_ms: int, reason: str, balances: list[dict[str, str]],
                   positions: list[dict[str, str]], symbol: str | None = None) -> dict[str, Any]:
    """``ACCOUNT_UPDATE``: balances (``B``) and positions (``P``) that changed, and why (``m``).

    ``symbol`` is the ``S`` a ``FUNDING_FEE`` update carries.
    """
    update: dict[str, Any] = {"m": reason, "B": balances, "P": positions}
    if symbol is not None:
        update["S"] = symbol
    return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms, "a": update}


def balance_entry(asset: str, wallet: Decimal, cross_wallet: Decimal,
                  change: Decimal) -> dict[str, str]:
    """One ``B`` entry; ``change`` is the balance change except PnL and commission."""
    return {"a": asset, "wb": fmt(wallet), "cw": fmt(cross_wallet), "bc": fmt(change)}


def position_entry(row: Position, figures: Figures) -> dict[str, str]:
    """One ``P`` entry; a closed position has amount 0."""
    return {
        "s": row.symbol,
        "pa": f"{row.amount.normalize():f}" if row.amount else "0",
        "ep": f"{row.entry_price.normalize():f}" if row.entry_price else "0",
        "bep": f"{figures.break_even_price.normalize():f}" if row.amount else "0",
        "cr": "0",  # accumulated realized profit is not tracked by the simulator
        "up": fmt(figures.unrealized_profit),
        "mt": "isolated" if row.isolated else "cross",
        "iw": fmt(figures.isolated_wallet),
        "ps": row.side,
    }


def order_trade_update(now_ms: int, *, symbol: str, client_id: str, side: str,
                       order_type: str, quantity: Decimal, price: Decimal, execution: str,
                       status: str, order_id: int, filled: Decimal, last_filled: Decimal,
                       realized: Decimal, position_side: str, trade_id: int) -> dict[str, Any]:
    """``ORDER_TRADE_UPDATE`` for one order: placed (NEW), cancelled, or (partly) filled.

    ``side`` is BUY or SELL; ``filled`` the accumulated quantity,
    ``last_filled`` this update's (0 unless it is a fill).
    """
    order = {
        "s": symbol, "c": client_id, "S": side, "o": order_type,
        "f": "IOC" if order_type == "LIQUIDATION" else "GTC",
        "q": fmt(quantity), "p": "0", "ap": fmt(price) if filled else "0", "sp": "0",
        "x": execution, "X": status, "i": order_id, "l": fmt(last_filled), "z": fmt(filled),
        "L": fmt(price) if last_filled else "0", "N": margin_asset(symbol), "n": "0", "T": now_ms,
        "t": trade_id if last_filled else 0, "b": "0", "a": "0", "m": False, "R": False,
        "wt": "CONTRACT_PRICE", "ot": order_type, "ps": position_side, "cp": False,
        "rp": fmt(realized), "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE",
        "gtd": 0,
    }
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": order}


def margin_call(now_ms: int, positions: list[dict[str, str]],
                cross_wallet: Decimal | None) -> dict[str, Any]:
    """``MARGIN_CALL``: ``cw`` is sent only with a crossed position's margin call."""
    event: dict[str, Any] = {"e": "MARGIN_CALL", "E": now_ms, "p": positions}
    if cross_wallet is not None:
        event["cw"] = fmt(cross_wallet)
    return event


def margin_call_entry(row: Position, figures: Figures) -> dict[str, str]:
    return {
        "s": row.symbol,
        "ps": row.side,
        "pa": f"{row.amount.normalize():f}",
        "mt": "ISOLATED" if row.isolated else "CROSSED",
        "iw": fmt(figures.isolated_wallet),
        "mp": fmt(figures.mark),
        "up": fmt(figures.unrealized_profit),
        "mm": fmt(figures.maint_margin),
    }


def listen_key_expired(now_ms: int, listen_key: str) -> dict[str, Any]:
    return {"e": "listenKeyExpired", "E": now_ms, "listenKey": listen_key}
