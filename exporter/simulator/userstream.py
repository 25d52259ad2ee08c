"""The user data stream: listen keys, the ``/private/ws`` connections, and their faults.

:class:`UserStreams` serves the ``userDataStream.*`` methods of the WebSocket
API (through the server) and the stream connections of
``wss://fstream.binance.com/private/ws``:

- ``userDataStream.start`` returns the account's listen key; an account with
  an active key gets the same key back with its validity extended, as on
  Binance. ``userDataStream.ping`` extends it, or answers -1125 "This
  listenKey does not exist." when the account has no active key (or the
  ``listenKey`` param, which Binance's futures method does not take, names
  another); ``userDataStream.stop`` forgets it and closes its connections.
  Keys expire 60 minutes after the last start or ping, on the simulator's
  clock: the connections on the key get ``listenKeyExpired`` and fall silent.
- ``/private/ws/<listenKey>`` receives every event of the key's account.
  ``/private/ws?listenKey=<key>&events=A/B/C`` receives only the events
  named; without ``events`` the key is expired at once, as bbgo reports of
  Binance. An unknown key gives a silent socket: accepted, never sent to.
  Every connection is closed at ``lifetime`` seconds (Binance: 24 h).

Faults and observation for tests: :meth:`UserStreams.drop`,
:meth:`~UserStreams.silence`, :meth:`~UserStreams.expire`,
:meth:`~UserStreams.replay`, :meth:`~UserStreams.raw`,
:meth:`~UserStreams.burst`; ``pushed``, ``connections_opened``,
``open_connections``, :meth:`~UserStreams.key_of`.

Unknown, and the harsher choice taken: whether Binance keeps a connection
open after its key expired (here: open and silent), and whether it still
sends ``listenKeyExpired`` to a query-form connection whose ``events`` omit it
(here: no).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import string
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from . import events as spell
from .accounts import SimAccount
from .protocol import MSG_NO_LISTEN_KEY, STREAM_PATH, ApiError

__all__ = ["KEY_VALIDITY_MS", "UserStreams", "stream_target"]

#: A listen key lives this long after the last userDataStream.start or .ping.
KEY_VALIDITY_MS = 60 * 60 * 1000
#: How often (real seconds) keys are checked for expiry and connections for their lifetime.
WATCH_INTERVAL = 0.05
_KEY_ALPHABET = string.ascii_letters + string.digits
_PUSHED_KEPT = 10_000


def stream_target(path: str) -> tuple[str | None, frozenset[str] | None] | None:
    """(listen key, events) a stream request path asks for; None if it is no stream path.

    Events None: the path form, every event. An empty set: the query form
    without ``events``.
    """
    parts = urlsplit(path)
    if parts.path == STREAM_PATH:
        query = parse_qs(parts.query)
        key = query.get("listenKey", [None])[-1]
        names = "/".join(query.get("events", []))
        return key, frozenset(name for name in names.split("/") if name)
    if parts.path.startswith(STREAM_PATH + "/"):
        return unquote(parts.path[len(STREAM_PATH) + 1:]), None
    return None


@dataclass
class _Key:
    value: str
    expires_ms: int


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    key: str | None
    account: SimAccount | None  # None: an unknown key, a silent socket
    events: frozenset[str] | None  # None: every event
    opened_ms: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # keeps frames in order

    def wants(self, event: dict[str, Any]) -> bool:
        if self.events is None:
            return True
        # Without events the key expires at once, and that much is said (as bbgo reports).
        return event.get("e") in (self.events or {"listenKeyExpired"})


class UserStreams:
    """Listen keys and stream connections of a simulator's accounts (see the module)."""

    def __init__(self, accounts: Mapping[str, SimAccount], *, now_ms: Callable[[], int],
                 lifetime: float,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._accounts = accounts
        self._now_ms = now_ms
        self.lifetime = lifetime
        self._spawn = spawn
        self._keys: dict[str, _Key] = {}  # by account name
        self._open: set[_Connection] = set()
        #: The latest events pushed to listening accounts: (account name, event).
        self.pushed: deque[tuple[str, dict[str, Any]]] = deque(maxlen=_PUSHED_KEPT)
        self.connections_opened = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def key_of(self, name: str) -> str | None:
        """The active listen key of account ``name``, if it has one."""
        key = self._keys.get(name)
        return key.value if key is not None and key.expires_ms > self._now_ms() else None

    # ---- userDataStream.* (called by the server, which checks the API key)

    def start(self, account: SimAccount) -> dict[str, Any]:
        self.check()  # a key past its validity expires (with its event) before a new one
        key = self._keys.get(account.name)
        expires = self._now_ms() + KEY_VALIDITY_MS
        if key is None:
            key = _Key("".join(secrets.choice(_KEY_ALPHABET) for _ in range(64)), expires)
            self._keys[account.name] = key
        key.expires_ms = expires
        return {"listenKey": key.value}

    def ping(self, account: SimAccount, listen_key: object) -> dict[str, Any]:
        key = self._keys.get(account.name)
        if (key is None or key.expires_ms <= self._now_ms()
                or listen_key not in (None, key.value)):
            raise ApiError(400, -1125, MSG_NO_LISTEN_KEY)
        key.expires_ms = self._now_ms() + KEY_VALIDITY_MS
        return {"listenKey": key.value}

    def stop(self, account: SimAccount) -> dict[str, Any]:
        key = self._keys.pop(account.name, None)
        if key is not None:
            for conn in self._on_key(key.value):
                self._spawn(conn.ws.close(CloseCode.NORMAL_CLOSURE))
        return {}

    # ---- stream connections

    async def serve(self, ws: ServerConnection, key: str | None,
                    events: frozenset[str] | None) -> None:
        """One stream connection, from its handshake until it closes; it only sends."""
        self.connections_opened += 1
        account = self._account_of(key)
        conn = _Connection(ws, key, account, events, self._now_ms())
        self._open.add(conn)
        try:
            if account is not None and events is not None and not events:
                self._expire(account.name)  # the query form without events
            await ws.wait_closed()
        finally:
            self._open.discard(conn)

    def listening(self, account: SimAccount) -> bool:
        return any(conn.account is account for conn in self._open)

    def push(self, account: SimAccount, event: dict[str, Any]) -> None:
        """Send ``event`` to every connection of ``account``'s key that wants it."""
        self.pushed.append((account.name, event))
        self._send(account, event)

    def check(self) -> None:
        """Expire keys past their validity; close connections past their lifetime."""
        now = self._now_ms()
        for name, key in list(self._keys.items()):
            if key.expires_ms <= now:
                self._expire(name)
        for conn in list(self._open):
            if now - conn.opened_ms >= self.lifetime * 1000:
                self._open.discard(conn)
                self._spawn(conn.ws.close(CloseCode.GOING_AWAY, "connection lifetime reached"))

    async def watch(self) -> None:
        """:meth:`check` every :data:`WATCH_INTERVAL` real seconds, until cancelled."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            self.check()

    # ---- faults

    def drop(self, name: str, *, abrupt: bool = False) -> None:
        """Close account ``name``'s stream connections: code 1011, or abort the TCP stream."""
        for conn in self._of(name):
            self._open.discard(conn)
            if abrupt:
                conn.ws.transport.abort()
            else:
                self._spawn(conn.ws.close(CloseCode.INTERNAL_ERROR, "simulated drop"))

    def silence(self, name: str) -> None:
        """Forget ``name``'s key without a word: its connections fall silent, pings get -1125."""
        key = self._keys.pop(name, None)
        if key is not None:
            for conn in self._on_key(key.value):
                conn.account = None

    def expire(self, name: str) -> None:
        """Expire ``name``'s key now, as if 60 minutes had passed without a keepalive."""
        self._expire(name)

    def replay(self, name: str, event_type: str | None = None) -> None:
        """Send ``name``'s last event (of ``event_type``, e.g. ORDER_TRADE_UPDATE) again: a
        duplicate delivery."""
        for pushed_to, event in reversed(self.pushed):
            if pushed_to == name and event_type in (None, event["e"]):
                self._send(self._accounts[name], event)
                return

    def raw(self, name: str, frame: str | bytes) -> None:
        """Send ``frame`` as it is to ``name``'s connections (junk; bytes: a binary frame)."""
        for conn in self._of(name):
            self._spawn(_send(conn, frame))

    def burst(self, name: str, count: int, symbol: str = "BTCUSDT") -> None:
        """``count`` funding fees of 0.01 on ``symbol`` in a row: one ACCOUNT_UPDATE each."""
        for _ in range(count):
            self._accounts[name].funding_fee(symbol, "0.01")

    # ---- helpers

    def _account_of(self, key: str | None) -> SimAccount | None:
        now = self._now_ms()
        for name, active in self._keys.items():
            if active.value == key and active.expires_ms > now:
                return self._accounts[name]
        return None

    def _of(self, name: str) -> list[_Connection]:
        return [conn for conn in self._open
                if conn.account is not None and conn.account.name == name]

    def _on_key(self, key: str) -> list[_Connection]:
        return [conn for conn in self._open if conn.key == key]

    def _expire(self, name: str) -> None:
        key = self._keys.pop(name, None)
        if key is None:
            return
        event = spell.listen_key_expired(self._now_ms(), key.value)
        for conn in self._on_key(key.value):
            if conn.account is not None and conn.wants(event):
                self._spawn(_send(conn, json.dumps(event)))
            conn.account = None  # expired: silent from now on

    def _send(self, account: SimAccount, event: dict[str, Any]) -> None:
        frame = json.dumps(event, ensure_ascii=False)
        for conn in self._open:
            if conn.account is account and conn.wants(event):
                self._spawn(_send(conn, frame))


async def _send(conn: _Connection, frame: str | bytes) -> None:
    async with conn.lock:  # frames leave in the order they were pushed
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(frame)
