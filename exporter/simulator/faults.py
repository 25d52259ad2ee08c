"""Faults a test queues with :meth:`Simulator.inject <exporter.simulator.Simulator.inject>`.

Each fault applies to the next ``count`` requests that match its ``method``
and ``api_key``; the first queued fault that matches a request is used (and
used up). What each one does to the answer is in its docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.frames import CloseCode

from .protocol import ACCOUNT_METHOD

__all__ = [
    "CloseConnection",
    "Delay",
    "Drop",
    "ErrorAnswer",
    "Fault",
    "Mutate",
    "Mute",
    "RawFrame",
    "Stall",
    "Unsolicited",
]


@dataclass
class Fault:
    """Base of the injectable faults: applies to the next ``count`` matching requests.

    ``method`` None matches every request, including frames that are not one;
    ``api_key`` None matches every account, else only requests for that key.
    """

    count: int = field(default=1, kw_only=True)
    method: str | None = field(default=ACCOUNT_METHOD, kw_only=True)
    api_key: str | None = field(default=None, kw_only=True)


@dataclass
class Drop(Fault):
    """Close the connection without answering: code 1011, or abort the TCP stream."""

    abrupt: bool = False


@dataclass
class Delay(Fault):
    """Send the (unchanged) answer after ``seconds``; later requests are not held up."""

    seconds: float


@dataclass
class ErrorAnswer(Fault):
    """Answer with this error instead of the real answer."""

    status: int
    code: int
    msg: str
    data: dict[str, Any] | None = None


@dataclass
class RawFrame(Fault):
    """Send ``frame`` (bytes: a binary frame) before the answer, or instead of it."""

    frame: str | bytes
    replace: bool = False


@dataclass
class Mutate(Fault):
    """Let ``fn`` change a deep copy of a successful answer's ``result`` before sending.

    The ``result`` is an object for ``v2/account.status`` and a list for
    ``v2/account.position``. An error answer is sent unchanged (the fault is
    still used up).
    """

    fn: Callable[[Any], None]


@dataclass
class Unsolicited(Fault):
    """Send ``frame`` as JSON on the requesting connection first, then answer normally."""

    frame: dict[str, Any]


@dataclass
class CloseConnection(Fault):
    """Answer, then close the connection cleanly with ``code``."""

    code: int = CloseCode.NORMAL_CLOSURE


@dataclass
class Mute(Fault):
    """Never answer again on this connection: neither this request nor any later one.

    The connection stays open and the WebSocket library still answers pings
    (a server whose request handling hangs while its socket lives). New
    connections are answered as usual.
    """


@dataclass
class Stall(Fault):
    """Stop reading this connection's socket for ``seconds``, then answer and read on.

    Nothing sent meanwhile is read: pings get their pong late (after this
    request's answer), later requests their answers late and in order (a
    server or network path that freezes).
    """

    seconds: float
