"""The user data stream of one account: listen key, stream connection, events, keepalive.

Binance pushes what happens to an account (balance and position changes,
fills, margin calls, forced closes) on a WebSocket stream of its own, at no
request weight. A :class:`UserStream` keeps one such stream connected:

1. ``userDataStream.start`` on the account's WebSocket API connection (sent by
   the poller, under its backoff and ban rules) returns the listen key;
2. a second connection, to the user data endpoint with the key
   (:func:`stream_url`), receives the events;
3. ``userDataStream.ping`` every ``user_stream_keepalive`` keeps the key alive
   (it expires 60 minutes after the last start or ping);
4. the session ends, and a new one begins with ``userDataStream.start`` again,
   when Binance sends ``listenKeyExpired``, closes the connection, the
   connection breaks, a keepalive fails, or the connection nears its 24 h limit
   (``connection_lifetime``: a planned renewal). Unplanned ends are counted by
   reason (:data:`~exporter.state.STREAM_ERRORS`) and followed by a jittered,
   exponentially growing wait, as for the WebSocket API connection.

Events are read by :mod:`exporter.streamevents` (pure functions). One that
changes the account asks the poller to poll now (``poll_soon``); the poller
merges bursts and keeps the weight in check. Every connection after the first
asks for one poll too, to catch up on what the gap missed. The stream
publishes its own immutable :class:`~exporter.state.StreamState` (``publish``).
A margin call's figure is shown for ``stale_after`` and then dropped.

Liveness: a quiet account sends nothing, so silence is healthy. The client
pings the stream connection (Binance also pings every 3 minutes) so that a
dead network path is noticed within :data:`PING_INTERVAL` +
:data:`PING_TIMEOUT`. A key Binance no longer knows gives a silent socket;
the next keepalive then fails (-1125) and a new session starts.

The listen key lets anyone read the account's events: it never appears in a
log line, an error or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from exporter import __version__
from exporter.client import WEBSOCKETS_LOG, Answer, ApiError, BadResponse, RequestError
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.messages import escape_controls, first_line
from exporter.state import MarginCall, StreamState
from exporter.streamevents import StreamEvent, parse_event

__all__ = [
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "REQUIRED_EVENTS",
    "KeyRequest",
    "UserStream",
    "stream_url",
]

log = logging.getLogger(__name__)

#: Events the exporter needs; a query-form endpoint is made to list at least these.
REQUIRED_EVENTS = ("ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE", "MARGIN_CALL", "listenKeyExpired")
#: Seconds between the client's pings on the stream connection, and the wait for a pong.
PING_INTERVAL, PING_TIMEOUT = 60.0, 30.0
_LISTEN_KEY = re.compile(r"[A-Za-z0-9]{1,128}")
_KEY_GONE = -1125  # "This listenKey does not exist."
_FORCED_ORDERS_REMEMBERED = 4096  # (symbol, order id) pairs kept to count each order once


class KeyRequest(Protocol):
    """Sends one ``userDataStream.*`` request (see ``AccountPoller.user_stream_request``)."""

    def __call__(self, method: str, *, wait: bool = True) -> Awaitable[Answer]: ...


def stream_url(endpoint: str, listen_key: str) -> str:
    """The URL of ``listen_key``'s stream at the configured ``endpoint``.

    Path form, ``<endpoint>/<listenKey>``, when ``endpoint`` has no query: the
    form Binance's pages show (``wss://fstream.binance.com/private/ws/<key>``).
    Query form when it has one (``.../private/ws?events=...``): ``listenKey``
    is added and ``events`` made to name at least :data:`REQUIRED_EVENTS`
    (the user's own events are kept, in their order). bbgo, a production bot,
    connects with ``/private/ws?listenKey=<key>&events=A/B/C`` and reports that
    without ``events`` Binance expires the key at once.

    Unknown: neither form's real behaviour has been verified against Binance
    from here (the simulator implements both as described above).
    """
    parts = urlsplit(endpoint)
    if not parts.query:
        return f"{endpoint.rstrip('/')}/{quote(listen_key, safe='')}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    events = [name for key, value in query if key == "events"
              for name in value.split("/") if name]
    events += [name for name in REQUIRED_EVENTS if name not in events]
    kept = [(key, value) for key, value in query if key not in ("events", "listenKey")]
    encoded = urlencode([*kept, ("listenKey", listen_key), ("events", "/".join(events))],
                        safe="/")
    return urlunsplit(parts._replace(query=encoded))


class _SessionEnd(Exception):
    """Why a session ended: ``reason`` is a STREAM_ERRORS label, or None for a renewal."""

    def __init__(self, reason: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class UserStream:
    """Keeps one account's user data stream connected (see the module docstring)."""

    def __init__(self, name: str, config: Config, *, request: KeyRequest,
                 poll_soon: Callable[[], None], publish: Callable[[StreamState], None],
                 clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None) -> None:
        if config.user_stream_endpoint is None:
            raise ValueError("the user data stream is off in this configuration")
        self.name = name
        self.endpoint = config.user_stream_endpoint
        self.host = urlsplit(self.endpoint).hostname or "the stream endpoint"
        self._config = config
        self._request = request
        self._poll_soon = poll_soon
        self._publish = publish
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = StreamState.initial()
        self._key: str | None = None
        self._ws: ClientConnection | None = None
        self._failures = 0  # unplanned session ends since the last healthy session
        self._reported_down = False  # a "down" warning awaits its "connected again"
        self._counted_orders: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._new_margin_call = asyncio.Event()
        self._logged_problems: set[str] = set()

    @property
    def state(self) -> StreamState:
        return self._state

    async def run(self) -> None:
        """Keep a stream connected until cancelled; then :meth:`close` ends it."""
        pruner = asyncio.ensure_future(self._drop_stale_margin_calls())
        try:
            while True:
                began = self._clock.monotonic()
                try:
                    await self._session()
                except _SessionEnd as end:
                    await self._after(end, self._clock.monotonic() - began)
                except Exception:  # a bug: a dead stream would stay down for good
                    log.exception("account %s: unexpected error in the user data stream",
                                  self.name)
                    self._update(up=False)
                    await self._clock.sleep(self._config.reconnect_backoff_max)
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner

    async def close(self) -> None:
        """Close the stream connection and give the listen key back (``userDataStream.stop``).

        The stop is not sent while requests are paused (a ban); the key then
        expires by itself within 60 minutes.
        """
        ws, self._ws = self._ws, None
        key, self._key = self._key, None
        closing = [ws.close()] if ws is not None else []
        if key is not None:
            closing.append(self._stop())
        await asyncio.gather(*closing, return_exceptions=True)

    async def _stop(self) -> None:
        try:
            await self._request("userDataStream.stop", wait=False)
        except RequestError as exc:
            log.debug("account %s: userDataStream.stop failed: %s", self.name, exc)

    # ---- one session: key, connection, events and keepalive until it ends

    async def _session(self) -> None:
        """Start a key, connect and serve; raises :class:`_SessionEnd` when it ends."""
        key = await self._start_key()
        ws = await self._connect(key)
        self._ws = ws
        catching_up = self._state.connections > 0
        self._update(up=True, connections=self._state.connections + 1)
        if self._reported_down:
            log.info("account %s: user data stream connected again", self.name)
            self._reported_down = False
        else:
            log.debug("account %s: user data stream connected to %s", self.name, self.endpoint)
        if catching_up:
            self._poll_soon()  # what changed while no stream was connected
        try:
            await self._serve(ws, key)
        except Exception:  # the session ended (or broke): let its connection go
            self._ws = None
            await ws.close()
            raise
        # Cancelled (shutdown): close() closes the connection within the shutdown grace.

    async def _start_key(self) -> str:
        try:
            answer = await self._request("userDataStream.start")
            result = answer.result
            key = result.get("listenKey") if isinstance(result, dict) else None
            if not isinstance(key, str) or not _LISTEN_KEY.fullmatch(key):
                raise BadResponse("userDataStream.start answer has no usable listenKey")
        except RequestError as exc:
            raise _SessionEnd("listen_key", f"userDataStream.start failed "
                                            f"({exc.reason}): {exc}") from None
        self._key = key
        return key

    async def _connect(self, key: str) -> ClientConnection:
        try:
            async with asyncio.timeout(self._config.request_timeout):
                return await connect(
                    stream_url(self.endpoint, key),
                    max_size=self._config.max_frame_size,
                    open_timeout=None,  # bounded by request_timeout instead
                    compression=None,  # as in exporter.client: sizes known before buffering
                    close_timeout=1,
                    ping_interval=PING_INTERVAL,
                    ping_timeout=PING_TIMEOUT,
                    user_agent_header=f"binance-futures-exporter/{__version__}",
                    logger=WEBSOCKETS_LOG,
                )
        except TimeoutError:
            raise _SessionEnd("connection", f"timed out connecting to {self.host}") from None
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise _SessionEnd("connection", f"cannot connect to {self.host}: "
                                            f"{_describe(exc)}") from None

    async def _serve(self, ws: ClientConnection, key: str) -> None:
        """Read events and keep the key alive until one of the two ends the session."""
        tasks = [asyncio.ensure_future(self._read(ws, key)),
                 asyncio.ensure_future(self._keep_alive(key))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            done.pop().result()  # raises the _SessionEnd that ended it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, ws: ClientConnection, key: str) -> None:
        try:
            async for message in ws:
                try:
                    expired = self._handle(message, key)
                except Exception:  # a dead reader would silence the stream for good
                    log.exception("account %s: dropped a user data stream frame that broke "
                                  "the reader", self.name)
                    continue
                if expired:
                    raise _SessionEnd("expired", "Binance says the listen key expired")
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            raise _SessionEnd("connection", f"connection lost ({_describe(exc)})") from None
        code = ws.close_code
        raise _SessionEnd("closed", f"closed by the server (code {code})" if code is not None
                          else "closed by the server")

    async def _keep_alive(self, key: str) -> None:
        """Ping the key every ``user_stream_keepalive``; renew before ``connection_lifetime``."""
        renew_at = self._clock.monotonic() + self._config.connection_lifetime
        while True:
            next_ping = self._clock.monotonic() + self._config.user_stream_keepalive
            if next_ping >= renew_at:
                await self._clock.sleep(renew_at - self._clock.monotonic())
                raise _SessionEnd(None, "renewing the connection before its 24 h limit")
            await self._clock.sleep(next_ping - self._clock.monotonic())
            try:
                answer = await self._request("userDataStream.ping")
            except RequestError as exc:
                gone = isinstance(exc, ApiError) and exc.code == _KEY_GONE
                raise _SessionEnd("keepalive", "Binance no longer knows the listen key"
                                  if gone else f"userDataStream.ping failed ({exc.reason}): "
                                               f"{exc}") from None
            current = answer.result.get("listenKey") if isinstance(answer.result, dict) else None
            if isinstance(current, str) and current != key:
                raise _SessionEnd("keepalive", "Binance answered the keepalive with another "
                                               "listen key")

    async def _after(self, end: _SessionEnd, lasted: float) -> None:
        """Count and log a session's end, then wait before the next one if it was unplanned."""
        if end.reason is None:
            log.info("account %s: user data stream: %s", self.name, end)
            self._failures = 0
            return
        # A session that lived as long as the longest backoff was healthy: start afresh.
        self._failures = 1 if lasted >= self._config.reconnect_backoff_max else (
            self._failures + 1)
        delay = min(self._config.reconnect_backoff_max,  # the exponent capped: no overflow
                    self._config.reconnect_backoff_min * 2 ** min(self._failures - 1, 64))
        delay *= self._rng.uniform(0.5, 1.0)
        errors = dict(self._state.errors)
        errors[end.reason] = errors.get(end.reason, 0) + 1
        self._update(up=False, errors=errors)
        log.log(logging.DEBUG if self._reported_down else logging.WARNING,
                "account %s: user data stream down (%s): %s; retrying in %.1fs", self.name,
                end.reason, end, delay)
        self._reported_down = True
        await self._clock.sleep(delay)

    # ---- events

    def _handle(self, message: str | bytes, key: str) -> bool:
        """Count one frame and act on it; True when it says ``key`` expired."""
        event = parse_event(message)
        for problem in event.problems:
            level = logging.DEBUG if problem.what in self._logged_problems else logging.WARNING
            self._logged_problems.add(problem.what)
            log.log(level, "account %s: user data stream: could not read %s; counted, the rest "
                    "is used (logged once per kind)", self.name, escape_controls(problem.detail))
        self._record(event)
        if event.changes_account:
            self._poll_soon()
        return event.kind == "listenKeyExpired" and event.expired_key in (None, key)

    def _record(self, event: StreamEvent) -> None:
        state = self._state
        events = dict(state.events)
        events[event.kind] = events.get(event.kind, 0) + 1
        changes: dict[str, Any] = {"events": events}
        if event.event_time is not None and (state.last_event_time is None
                                             or event.event_time > state.last_event_time):
            changes["last_event_time"] = event.event_time
        order = event.forced_order
        if order is not None and (order.symbol, order.order_id) not in self._counted_orders:
            self._counted_orders[(order.symbol, order.order_id)] = None
            if len(self._counted_orders) > _FORCED_ORDERS_REMEMBERED:
                self._counted_orders.popitem(last=False)
            forced = dict(state.forced_orders)
            forced[(order.symbol, order.kind)] = forced.get((order.symbol, order.kind), 0) + 1
            changes["forced_orders"] = forced
            log.warning("account %s: Binance filled a forced order (%s) on %s", self.name,
                        order.kind, order.symbol)
        if event.margin_calls:
            expires_at = self._clock.monotonic() + self._config.stale_after
            calls = dict(state.margin_calls)
            for row in event.margin_calls:
                calls[(row.symbol, row.side)] = MarginCall(row.maint_margin, expires_at)
            changes["margin_calls"] = calls
            self._new_margin_call.set()
            log.warning("account %s: margin call on %s", self.name,
                        ", ".join(f"{row.symbol} {row.side}" for row in event.margin_calls))
        self._update(**changes)

    async def _drop_stale_margin_calls(self) -> None:
        """Drop each margin call ``stale_after`` after it came, like other data."""
        while True:
            calls = self._state.margin_calls
            timeout = (min(call.expires_at for call in calls.values()) - self._clock.monotonic()
                       if calls else None)
            await self._clock.wait(self._new_margin_call, timeout)
            self._new_margin_call.clear()
            now = self._clock.monotonic()
            live = {position: call for position, call in self._state.margin_calls.items()
                    if call.expires_at > now}
            if len(live) != len(self._state.margin_calls):
                self._update(margin_calls=live)

    def _update(self, **changes: Any) -> None:
        self._state = replace(self._state, **changes)
        self._publish(self._state)


def _describe(exc: BaseException) -> str:
    """One line about a connection failure that cannot carry the URL (it holds the key)."""
    if isinstance(exc, websockets.InvalidURI):
        return "invalid URL"
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return first_line(exc)
