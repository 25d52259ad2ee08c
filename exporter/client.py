"""One persistent connection to Binance's WebSocket API: ids, timeouts, reconnects.

:class:`ApiClient` sends JSON requests over a single WebSocket connection and
matches answers to requests by ``id``. It opens the connection lazily, renews
it before Binance's 24-hour limit, and after a failure waits a jittered,
exponentially growing delay before opening the next one (each open costs
weight 5). A frame it cannot match is logged once per kind and dropped; it
never stops the reader.

Every failure is a :class:`RequestError` whose ``reason`` is one of
:data:`exporter.state.REASONS`, the label values of
``binance_futures_request_errors_total``.

Liveness is judged by requests, not pings: the exporter sends one every poll,
each with a deadline, and a connection that lets one time out is replaced.
The client sends no pings of its own (Binance pings every 3 minutes and the
library answers), so a slow pong can never cost a healthy connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from exporter import __version__
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.messages import escape_controls, first_line

__all__ = [
    "WEBSOCKETS_LOG",
    "Answer",
    "ApiClient",
    "ApiError",
    "BadResponse",
    "ConnectionFailed",
    "ConnectionLost",
    "RequestError",
    "RequestTimeout",
    "Send",
]

log = logging.getLogger(__name__)

# websockets logs every frame at DEBUG, and our frames carry the API key and
# signature: its logger is pinned to INFO whatever level the user picks.
WEBSOCKETS_LOG = logging.getLogger("exporter.websockets")
WEBSOCKETS_LOG.setLevel(logging.INFO)

_AUTH_CODES = {-2014, -2015, -1022}
_CLOCK_CODE = -1021
_BANNED_UNTIL = re.compile(r"banned until (\d{12,})")
_MESSAGE_TOO_BIG = 1009


class RequestError(Exception):
    """A request that got no usable answer; ``reason`` labels the error metric."""

    reason = "api_error"


class ConnectionFailed(RequestError):
    """No connection could be opened, or it broke before the answer came."""

    reason = "connection"


class ConnectionLost(ConnectionFailed):
    """The connection broke while the request was waiting for its answer.

    Binance never answers such a request; a retry on a new connection is safe.
    """


class RequestTimeout(RequestError):
    reason = "timeout"


class BadResponse(RequestError):
    """The answer frame (or, for ``snapshot``, its result) is not what Binance sends."""

    reason = "bad_response"


class ApiError(RequestError):
    """Binance answered with an ``error`` object."""

    def __init__(self, status: int, code: int | None, message: str,
                 data: Mapping[str, Any] | None, rate_limits: list[Any]) -> None:
        super().__init__(f"status {status}, code {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.data = data or {}
        self.rate_limits = rate_limits

    @property
    def reason(self) -> str:  # type: ignore[override]
        if self.status == 418:
            return "banned"
        if self.status == 429 or self.code == -1003:
            return "rate_limited"
        if self.code in _AUTH_CODES or self.status == 401:
            return "auth"
        if self.code == _CLOCK_CODE:
            return "clock"
        return "api_error"

    def retry_after(self) -> float | None:
        """Epoch seconds before which Binance wants no request, when it says so."""
        retry_after = self.data.get("retryAfter")
        if isinstance(retry_after, int) and not isinstance(retry_after, bool):
            return retry_after / 1000
        match = _BANNED_UNTIL.search(self.message)
        return int(match.group(1)) / 1000 if match else None


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: the ``result`` and the ``rateLimits`` that came with it."""

    result: Any
    rate_limits: list[Any]
    sent_at: float  # epoch seconds, just before the frame was written
    received_at: float  # epoch seconds, when the answer was read
    round_trip: float  # seconds, from the monotonic clock


Send = Callable[[str, Mapping[str, Any]], Awaitable[Answer]]


class ApiClient:
    """Requests over one WebSocket API connection, opened lazily and renewed as needed.

    ``on_open`` runs on every new connection before any request uses it (this
    is where ``session.logon`` goes); it gets a ``send`` coroutine bound to that
    connection. Requests may be concurrent; answers are matched by ``id``.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        request_timeout: float = 10.0,
        max_frame_size: int = 4 * 1024 * 1024,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        lifetime: float = 23 * 3600.0,
        on_open: Callable[[Send], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = url
        self.host = urlsplit(url).hostname or url
        self.name = name
        self.request_timeout = request_timeout
        self.max_frame_size = max_frame_size
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.lifetime = lifetime
        self.connections_opened = 0
        self._on_open = on_open
        self._clock = clock
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        # id -> (connection it was sent on, waiter); ids are never reused.
        self._pending: dict[int, tuple[ClientConnection, asyncio.Future[_Received]]] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opened_at = 0.0
        self._failures = 0
        self._not_before = 0.0  # monotonic time before which no connection is opened
        self._open_lock = asyncio.Lock()
        self._logged_kinds: set[str] = set()
        self._closed = False

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> Answer:
        """Send one request and wait for its answer, within ``request_timeout`` overall."""
        deadline = self._clock.monotonic() + self.request_timeout
        ws = await self._connection(deadline)
        return await self._send(ws, method, params or {}, deadline)

    def reconnect_delay(self) -> float:
        """Seconds until the next connection may be opened (0 when it may now)."""
        return max(0.0, self._not_before - self._clock.monotonic())

    async def close(self) -> None:
        """Close the connection and fail requests still waiting; idempotent."""
        self._closed = True
        await self._drop_connection()

    async def _connection(self, deadline: float) -> ClientConnection:
        async with self._open_lock:
            if self._closed:
                raise ConnectionFailed("client is closed")
            ws = self._ws
            if ws is not None and self._clock.monotonic() - self._opened_at >= self.lifetime:
                log.info("account %s: renewing the WebSocket connection before its 24 h limit",
                         self.name)
                await self._drop_connection()
                ws = None
            if ws is None:
                ws = await self._open(deadline)
            return ws

    async def _open(self, deadline: float) -> ClientConnection:
        wait = self._not_before - self._clock.monotonic()
        if wait > 0:
            if self._clock.monotonic() + wait >= deadline:
                raise ConnectionFailed(f"reconnecting in {wait:.1f}s (backoff after failures)")
            await self._clock.sleep(wait)
        try:
            async with asyncio.timeout(deadline - self._clock.monotonic()):
                ws = await self._handshake()
        except TimeoutError:
            self._note_failure()
            raise ConnectionFailed(f"timed out connecting to {self.host}") from None
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            self._note_failure()
            raise ConnectionFailed(f"cannot connect to {self.host}: {first_line(exc)}") from None
        self.connections_opened += 1
        self._ws, self._opened_at = ws, self._clock.monotonic()
        self._reader = asyncio.create_task(self._read(ws), name=f"ws-reader-{self.name}")
        log.debug("account %s: connected to %s", self.name, self.url)
        if self._on_open is not None:
            try:
                await self._on_open(lambda method, params: self._send(ws, method, params,
                                                                      deadline))
            except RequestError:
                await self._drop_connection()
                raise
        return ws

    async def _handshake(self) -> ClientConnection:
        return await connect(
            self.url,
            max_size=self.max_frame_size,
            open_timeout=None,  # bounded by the request deadline instead
            # No permessage-deflate: an uncompressed frame's size is known from its
            # header, so one over max_size is refused before its payload is buffered,
            # whereas a compressed one is first inflated up to max_size (and that
            # buffer lingers until a full GC). Answers are a few kB per poll.
            compression=None,
            close_timeout=2,
            ping_interval=None,  # see the module docstring: requests are the liveness check
            user_agent_header=f"binance-futures-exporter/{__version__}",
            logger=WEBSOCKETS_LOG,
        )

    async def _send(self, ws: ClientConnection, method: str, params: Mapping[str, Any],
                    deadline: float) -> Answer:
        request_id = next(self._ids)
        future: asyncio.Future[_Received] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (ws, future)
        frame = json.dumps({"id": request_id, "method": method, "params": dict(params)})
        sent_at, started = self._clock.time(), self._clock.monotonic()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that
            # arrives as the answer does, and the poller would then never stop.
            async with asyncio.timeout(deadline - started):
                await ws.send(frame)
                answer = await future
        except TimeoutError:
            # Binance answers in milliseconds; a connection that lets a request time
            # out may answer pings but never requests again. A new one usually works.
            self._discard(ws, "a request timed out")
            self._note_failure()
            raise RequestTimeout(f"{method}: no answer within {self.request_timeout:g}s") from None
        except ApiError as exc:
            if exc.reason == "auth":
                # A session logon is redone only on a new connection; see _read.
                self._discard(ws, "Binance refused the key")
            raise
        except ConnectionClosed as exc:
            self._note_failure()
            raise ConnectionLost(f"{method}: connection closed ({first_line(exc)})") from None
        finally:
            # An answer arriving after this point has no waiter and is dropped:
            # ids are never reused, so it can never match a later request.
            self._pending.pop(request_id, None)
        self._failures = 0
        return Answer(answer.result, answer.rate_limits, sent_at, answer.received_at,
                      answer.received_monotonic - started)

    async def _read(self, ws: ClientConnection) -> None:
        """Dispatch every frame of ``ws`` to its waiting request until the connection ends.

        An unsolicited auth error (the key was revoked, or the IP is no longer
        allowed) ends the connection: a ``session.logon`` is only redone on a new
        one, so keeping it would keep the account down after the key works again.
        """
        failure: RequestError
        try:
            async for message in ws:
                try:
                    revoked = self._dispatch(ws, message)
                except Exception:  # a dead reader would silence the account for good
                    log.exception("account %s: dropped a frame that broke the reader",
                                  self.name)
                    continue
                if revoked is not None:
                    failure = revoked
                    await ws.close()
                    break
            else:
                failure = ConnectionLost(
                    f"connection closed by the server ({_describe_close(ws)})")
        except ConnectionClosed as exc:
            failure = (BadResponse(f"answer larger than max_frame_size {self.max_frame_size} B")
                       if _close_code(exc) == _MESSAGE_TOO_BIG
                       else ConnectionLost(f"connection lost ({first_line(exc)})"))
        waiting = [future for sent_on, future in self._pending.values() if sent_on is ws]
        for future in waiting:
            if not future.done():
                future.set_exception(failure)
        if self._ws is not ws:
            return  # closed by us: renewed or shutting down
        self._ws = None
        if waiting:
            self._note_failure()
        log.info("account %s: WebSocket connection ended: %s", self.name, failure)

    def _dispatch(self, ws: ClientConnection, message: str | bytes) -> ApiError | None:
        """Hand one frame to its request; an id-less auth error is returned to end ``ws``."""
        received_at, received_monotonic = self._clock.time(), self._clock.monotonic()
        if isinstance(message, bytes):
            self._not_an_answer(ws, "binary", "ignored a binary frame (Binance sends text)")
            return None
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            self._not_an_answer(ws, "non-json", "ignored a text frame that is not JSON")
            return None
        if not isinstance(frame, dict):
            self._not_an_answer(ws, "not-object", "ignored a JSON frame that is not an object")
            return None
        request_id = frame.get("id")
        pending = self._pending.get(request_id) if type(request_id) is int else None
        if pending is None:
            return self._unmatched(frame)
        future = pending[1]
        if not future.done():
            try:
                future.set_result(_parse_answer(frame, received_at, received_monotonic))
            except RequestError as exc:
                future.set_exception(exc)
        return None

    def _not_an_answer(self, ws: ClientConnection, kind: str, text: str) -> None:
        """A frame that cannot be an answer: it fails the request if it can only be its.

        A proxy's error page arriving while one request waits is that request's
        answer in all but form; waiting out ``request_timeout`` would only hide it.
        """
        waiting = [future for sent_on, future in self._pending.values()
                   if sent_on is ws and not future.done()]
        if len(waiting) == 1:
            waiting[0].set_exception(BadResponse(f"{text} instead of an answer"))
        self._log_once(kind, text)

    def _unmatched(self, frame: dict[str, Any]) -> ApiError | None:
        error = frame.get("error")
        if frame.get("id") is None and isinstance(error, dict):
            # e.g. -2015 when the key is revoked or the IP no longer allowed.
            exc = _api_error(frame, error)
            self._log_once("unsolicited", f"Binance sent an unsolicited error: {exc}")
            return exc if exc.reason == "auth" else None
        self._log_once("unknown-id", "ignored an answer for an id no request is waiting on "
                       "(a late answer to a request that already timed out)")
        return None

    def _log_once(self, kind: str, text: str) -> None:
        level = logging.DEBUG if kind in self._logged_kinds else logging.WARNING
        self._logged_kinds.add(kind)
        log.log(level, "account %s: %s", self.name, text)

    def _discard(self, ws: ClientConnection, why: str) -> None:
        """Stop using ``ws`` now; the next request opens a new connection.

        The transport is aborted rather than closed politely: a connection that
        stopped answering would hold the caller for the whole close handshake.
        Its reader then fails whatever else was waiting on it.
        """
        if self._ws is ws:
            log.info("account %s: dropping the WebSocket connection: %s", self.name, why)
            self._ws = None
            ws.transport.abort()

    def _note_failure(self) -> None:
        """Schedule the next connection after a jittered exponential backoff."""
        self._failures += 1
        # The exponent is capped: 2**1024 and more overflow a float (after ~17 h of failures).
        delay = min(self.backoff_max, self.backoff_min * 2 ** min(self._failures - 1, 64))
        self._not_before = self._clock.monotonic() + delay * self._rng.uniform(0.5, 1.0)

    async def _drop_connection(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws, self._reader = None, None
        if ws is not None:
            await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for sent_on, future in self._pending.values():
            if sent_on is ws and not future.done():
                future.set_exception(ConnectionFailed("connection closed by the exporter"))


@dataclass(frozen=True, slots=True)
class _Received:
    result: Any
    rate_limits: list[Any]
    received_at: float
    received_monotonic: float


def _parse_answer(frame: dict[str, Any], received_at: float,
                  received_monotonic: float) -> _Received:
    """The frame's result, or the :class:`ApiError` / :class:`BadResponse` it amounts to."""
    rate_limits = frame.get("rateLimits")
    if not isinstance(rate_limits, list):
        rate_limits = []
    status = frame.get("status")
    error = frame.get("error")
    if isinstance(error, dict):
        raise _api_error(frame, error)
    if status != 200 or "result" not in frame:
        raise BadResponse(f"answer has status {status!r} and no result")
    return _Received(frame["result"], rate_limits, received_at, received_monotonic)


def _api_error(frame: dict[str, Any], error: dict[str, Any]) -> ApiError:
    status, code, data = frame.get("status"), error.get("code"), error.get("data")
    rate_limits = frame.get("rateLimits")
    return ApiError(
        status if type(status) is int else 0,
        code if type(code) is int else None,
        escape_controls(str(error.get("msg", ""))[:500]),
        data if isinstance(data, dict) else None,
        rate_limits if isinstance(rate_limits, list) else [],
    )


def _close_code(exc: ConnectionClosed) -> int | None:
    frame = exc.rcvd or exc.sent
    return frame.code if frame is not None else None


def _describe_close(ws: ClientConnection) -> str:
    return f"code {ws.close_code}" if ws.close_code is not None else "no close frame"
