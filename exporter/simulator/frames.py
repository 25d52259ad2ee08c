"""Reading a request frame and its parameters, with Binance's answers to bad ones.

:func:`parse_frame` turns a frame into a :class:`ParsedRequest`; a frame that
is not a request object becomes one that carries its -1102 error, so that the
server answers every frame. The ``*_param`` functions read parameters, or
raise the :class:`~.protocol.ApiError` Binance answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import (
    DEFAULT_RECV_WINDOW,
    MAX_RECV_WINDOW,
    MSG_BAD_SYMBOL,
    MSG_MALFORMED_REQUEST,
    ApiError,
    malformed,
)

__all__ = ["ParsedRequest", "parse_frame", "symbol_param", "time_params"]


@dataclass
class ParsedRequest:
    """A request frame as read: what it asks for, or the error it is to be answered with."""

    id: Any
    method: str | None
    params: dict[str, Any]
    error: ApiError | None = None


def parse_frame(frame: str | bytes) -> ParsedRequest:
    """Read a request frame; anything unusable becomes a request carrying an error."""
    invalid = ParsedRequest(None, None, {}, ApiError(400, -1102, MSG_MALFORMED_REQUEST))
    if isinstance(frame, bytes):
        return invalid
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return invalid
    if not isinstance(message, dict):
        return invalid
    request_id = message.get("id")
    if "id" not in message or not (
        request_id is None
        or isinstance(request_id, str)
        or (isinstance(request_id, int) and not isinstance(request_id, bool))
    ):
        return ParsedRequest(None, None, {}, malformed("id"))
    method = message.get("method")
    if not isinstance(method, str):
        return ParsedRequest(request_id, None, {}, malformed("method"))
    params = message.get("params", {})
    if not isinstance(params, dict):
        return ParsedRequest(request_id, method, {}, malformed("params"))
    return ParsedRequest(request_id, method, params)


def symbol_param(params: dict[str, Any], known: Callable[[str], bool]) -> str | None:
    """The optional ``symbol`` param: None, or a symbol for which ``known`` is true."""
    if "symbol" not in params:
        return None
    symbol = params["symbol"]
    if not isinstance(symbol, str) or not symbol:
        raise malformed("symbol")
    if not known(symbol):
        raise ApiError(400, -1121, MSG_BAD_SYMBOL)
    return symbol


def time_params(params: dict[str, Any]) -> tuple[int, float]:
    """``timestamp`` and ``recvWindow`` (default 5000 ms) of a signed request."""
    timestamp = params.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise malformed("timestamp")
    window = params.get("recvWindow", DEFAULT_RECV_WINDOW)
    if (
        not isinstance(window, int | float)
        or isinstance(window, bool)
        or not 0 < window <= MAX_RECV_WINDOW
    ):
        raise ApiError(
            400, -1102, f"Param 'recvWindow' must be greater than 0 and at most {MAX_RECV_WINDOW}."
        )
    return timestamp, window
