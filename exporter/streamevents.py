"""Reading the user data stream's events: pure functions, tolerant like the snapshot reader.

:func:`parse_event` turns one frame of the stream into a :class:`StreamEvent`
and never raises. What it reads:

- the type ``e``, as a label of :data:`~exporter.state.STREAM_EVENTS`: a type
  outside that list is ``other``, and so is a frame that is not a JSON object
  with a text ``e`` (an *unparseable* event, reported as a problem);
- Binance's event time ``E``;
- whether the event changes the account, so that a poll should follow: every
  ``ACCOUNT_UPDATE``, every ``MARGIN_CALL``, and an ``ORDER_TRADE_UPDATE`` that
  is a fill (status ``PARTIALLY_FILLED`` or ``FILLED``, execution type
  ``TRADE`` or ``CALCULATED``);
- a forced order: an ``ORDER_TRADE_UPDATE`` whose status is ``FILLED`` and
  whose client order id ``c`` marks a forced close (:func:`forced_order_kind`);
- the positions of a ``MARGIN_CALL`` with their maintenance margin ``mm``;
- the key a ``listenKeyExpired`` names.

A known event whose body cannot be read in part is kept, its unreadable part
reported as a :class:`EventProblem`; an ``ORDER_TRADE_UPDATE`` whose order
cannot be read still asks for a poll (it may have been a fill). Field shapes
follow Binance's SDK models (``websocket_streams/models``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from exporter.messages import brief
from exporter.snapshot import decimal_value, label_value
from exporter.state import STREAM_EVENTS

__all__ = [
    "EventProblem",
    "ForcedOrder",
    "MarginCallRow",
    "StreamEvent",
    "forced_order_kind",
    "parse_event",
]

_KNOWN = frozenset(STREAM_EVENTS) - {"other"}
_FILL_STATUSES = ("PARTIALLY_FILLED", "FILLED")
_FILL_EXECUTIONS = ("TRADE", "CALCULATED")  # CALCULATED: a liquidation or ADL fill
# Client order id prefixes of forced closes, as Binance documents them for ORDER_TRADE_UPDATE.
_FORCED_PREFIXES = (
    ("autoclose-", "liquidation"),
    ("adl_autoclose", "adl"),
    ("settlement_autoclose-", "settlement"),
)
_MAX_INTEGER = 2**53


class EventProblem(NamedTuple):
    """Part of an event that could not be read: ``what`` is stable (log once per kind)."""

    what: str
    detail: str


class ForcedOrder(NamedTuple):
    """A filled forced order; ``(symbol, order_id)`` identifies it for counting once."""

    symbol: str
    order_id: int
    kind: str  # one of exporter.state.FORCED_ORDER_KINDS


class MarginCallRow(NamedTuple):
    symbol: str
    side: str  # position side: BOTH, LONG, SHORT
    maint_margin: float


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One frame of the user data stream, as far as it could be read."""

    kind: str  # a label of STREAM_EVENTS
    event_time: float | None  # Binance's E, epoch seconds
    changes_account: bool
    forced_order: ForcedOrder | None = None
    margin_calls: tuple[MarginCallRow, ...] = ()
    expired_key: str | None = None  # listenKeyExpired: the key it names, if it names one
    problems: tuple[EventProblem, ...] = ()


def forced_order_kind(client_order_id: str) -> str | None:
    """``liquidation``, ``adl`` or ``settlement`` for a forced close's client order id."""
    for prefix, kind in _FORCED_PREFIXES:
        if client_order_id.startswith(prefix):
            return kind
    return None


def parse_event(message: str | bytes) -> StreamEvent:
    """Read one stream frame; anything unusable becomes an ``other`` event with a problem."""
    if isinstance(message, bytes):
        return _unparseable("binary", "a binary frame (Binance sends text)")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        return _unparseable("not-json", f"a frame that is not JSON: {brief(message)}")
    if isinstance(frame, dict) and isinstance(frame.get("data"), dict) and "stream" in frame:
        frame = frame["data"]  # the combined-stream wrapping: {"stream": ..., "data": event}
    if not isinstance(frame, dict) or not isinstance(frame.get("e"), str):
        return _unparseable("no-type", f"a frame without a text event type: {brief(frame)}")
    kind = frame["e"] if frame["e"] in _KNOWN else "other"
    problems: list[EventProblem] = []
    event_time = _event_time(frame, problems)
    if kind == "ORDER_TRADE_UPDATE":
        fill, forced = _order(frame.get("o"), problems)
        return StreamEvent(kind, event_time, fill, forced_order=forced,
                           problems=tuple(problems))
    if kind == "MARGIN_CALL":
        rows = _margin_calls(frame.get("p"), problems)
        return StreamEvent(kind, event_time, True, margin_calls=rows, problems=tuple(problems))
    if kind == "listenKeyExpired":
        key = frame.get("listenKey")
        return StreamEvent(kind, event_time, False, expired_key=key if isinstance(key, str)
                           else None, problems=tuple(problems))
    return StreamEvent(kind, event_time, kind == "ACCOUNT_UPDATE", problems=tuple(problems))


def _unparseable(what: str, detail: str) -> StreamEvent:
    return StreamEvent("other", None, False, problems=(EventProblem(what, detail),))


def _event_time(frame: dict[str, Any], problems: list[EventProblem]) -> float | None:
    value = frame.get("E")
    if type(value) is int and 0 < value <= _MAX_INTEGER:
        return value / 1000
    problems.append(EventProblem(f"{frame['e']}.E", f"event time E: {brief(value)}"))
    return None


def _order(order: object, problems: list[EventProblem]) -> tuple[bool, ForcedOrder | None]:
    """(is a fill, the forced order it completes); an unreadable order counts as a fill."""
    if not isinstance(order, dict):
        problems.append(EventProblem("ORDER_TRADE_UPDATE.o", f"order o: {brief(order)}"))
        return True, None
    status, execution = order.get("X"), order.get("x")
    fill = status in _FILL_STATUSES and execution in _FILL_EXECUTIONS
    client_id = order.get("c")
    kind = forced_order_kind(client_id) if isinstance(client_id, str) else None
    if kind is None or status != "FILLED":
        return fill, None
    symbol, order_id = label_value(order.get("s")), order.get("i")
    if symbol is None or type(order_id) is not int:
        problems.append(EventProblem("ORDER_TRADE_UPDATE.forced",
                                     f"a forced order without a usable symbol s "
                                     f"({brief(order.get('s'))}) or order id i "
                                     f"({brief(order_id)})"))
        return fill, None
    return fill, ForcedOrder(symbol, order_id, kind)


def _margin_calls(rows: object, problems: list[EventProblem]) -> tuple[MarginCallRow, ...]:
    if not isinstance(rows, list):
        problems.append(EventProblem("MARGIN_CALL.p", f"positions p: {brief(rows)}"))
        return ()
    calls: dict[tuple[str, str], MarginCallRow] = {}
    for index, row in enumerate(rows):
        entry = row if isinstance(row, dict) else {}
        symbol, side = label_value(entry.get("s")), label_value(entry.get("ps"))
        maint_margin = decimal_value(entry.get("mm"))
        if symbol is None or side is None or maint_margin is None:
            problems.append(EventProblem("MARGIN_CALL.p", f"p[{index}]: {brief(row)}"))
            continue
        calls[(symbol, side)] = MarginCallRow(symbol, side, maint_margin)
    return tuple(calls.values())
