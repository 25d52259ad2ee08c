"""The WebSocket server: a loopback stand-in for ``wss://ws-fapi.binance.com/ws-fapi/v1``,
and for the user data stream of ``wss://fstream.binance.com/private/ws``.

:class:`Simulator` accepts WebSocket connections on :data:`~.protocol.PATH`,
reads one JSON request per text frame and answers it the way Binance's
USDⓈ-M futures WebSocket API does: frames and ids, signatures and
``recvWindow``, ``session.*`` logon, the account data methods
``v2/account.status`` and ``v2/account.position`` (the market moves once per
status request, so the two answers of a poll share their mark prices),
REQUEST_WEIGHT counted per calendar minute with ``rateLimits`` in every
answer, 429 over the limit and 418 while banned, and an id-less 401/-2015
frame to the connections that use a key when it is revoked. Queued
:mod:`faults <.faults>` change what a request gets. The ``userDataStream.*``
methods and the stream connections on :data:`~.protocol.STREAM_PATH` are
served by :class:`~.userstream.UserStreams` (``sim.user_streams``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from .accounts import SimAccount
from .demo import DemoAccount, demo_accounts
from .faults import (
    CloseConnection,
    Delay,
    Drop,
    ErrorAnswer,
    Fault,
    Mutate,
    Mute,
    RawFrame,
    Stall,
    Unsolicited,
)
from .frames import ParsedRequest, parse_frame, symbol_param, time_params
from .protocol import (
    ACCOUNT_METHOD,
    ACCOUNT_V1_METHOD,
    CONNECTION_WEIGHT,
    INVALID_REQUEST_WEIGHT,
    METHOD_WEIGHTS,
    MSG_BAD_KEY,
    MSG_BAD_SIGNATURE,
    MSG_BANNED,
    MSG_KEY_FORMAT,
    MSG_KEY_TYPE,
    MSG_RECV_WINDOW,
    MSG_TOO_MANY_REQUESTS,
    PATH,
    POSITION_METHOD,
    STREAM_PATH,
    USER_STREAM_METHODS,
    ApiError,
    malformed,
)
from .signing import Verifier
from .userstream import UserStreams, stream_target

__all__ = ["RequestRecord", "Simulator", "server_time_now"]

_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{64}")


def server_time_now(offset_ms: int = 0) -> int:
    """Epoch milliseconds of a clock that runs ``offset_ms`` ahead of this host's."""
    return time.time_ns() // 1_000_000 + offset_ms


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int


class RequestRecord(NamedTuple):
    """One request frame as the simulator received it.

    ``api_key`` is the ``apiKey`` param, else the key the connection is logged
    on with, else None.
    """

    monotonic: float
    wall_ms: int
    method: str | None
    api_key: str | None
    id: Any
    connection: int


@dataclass(eq=False)
class _Connection:
    number: int
    connected_since: int
    return_rate_limits: bool
    ws: ServerConnection
    account: SimAccount | None = None
    authorized_since: int | None = None
    #: The ``apiKey`` of the last request on this connection that carried one.
    last_api_key: str | None = None
    #: The session's key was revoked while logged on: it never works again here.
    session_revoked: bool = False
    #: Set by a Mute fault: no request on this connection is answered any more.
    muted: bool = False


@dataclass
class _Reply:
    payload: dict[str, Any]
    used_weight: int
    with_rate_limits: bool
    account: SimAccount | None = None  # set on successful account data answers
    method: str | None = None


def _session_key(conn: _Connection) -> str | None:
    return conn.account.api_key if conn.account is not None else None


async def _send_quietly(ws: ServerConnection, frame: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)


async def _closed_or_timeout(ws: ServerConnection, seconds: float) -> None:
    """Wait ``seconds``, or less if the connection closes (so that stopping is prompt)."""
    closed = asyncio.ensure_future(ws.wait_closed())
    try:
        await asyncio.wait({closed}, timeout=seconds)
    finally:
        closed.cancel()


def _wants_rate_limits(conn: _Connection, params: dict[str, Any]) -> bool:
    """``returnRateLimits``: the request's param, else the connection URL's, else true."""
    return params.get("returnRateLimits", conn.return_rate_limits) is not False


class Simulator:
    """A WebSocket server on loopback that behaves like Binance's futures WebSocket API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        weight_limit: int = 2400,
        clock_offset_ms: int = 0,
        lively: bool = True,
        wall: Callable[[], float] = time.time,
        stream_lifetime: float = 24 * 3600.0,
    ) -> None:
        """``wall`` is the host's wall clock in epoch seconds (a test may step its own);
        user data stream connections close after ``stream_lifetime`` seconds of it."""
        self.host = host
        self._wall = wall
        self.port = port
        self.seed = seed
        self.weight_limit = weight_limit
        self.clock_offset_ms = clock_offset_ms
        self.lively = lively
        #: While True, WebSocket handshakes are refused with HTTP 503.
        self.refuse_connections = False
        self.requests: list[RequestRecord] = []
        self.connections_opened = 0
        self.accounts: dict[str, SimAccount] = {}
        self._by_key: dict[str, SimAccount] = {}
        self._faults: list[_QueuedFault] = []
        self._banned_until = 0
        self._weight_minute = 0
        self._weight = 0
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[_Connection] = set()
        #: Listen keys and stream connections; their faults and what they pushed.
        self.user_streams = UserStreams(self.accounts, now_ms=self.server_time_ms,
                                        lifetime=stream_lifetime, spawn=self._spawn)
        self._watcher: asyncio.Task[None] | None = None

    # ---- lifecycle

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_handshake,
            ping_interval=180,
            ping_timeout=600,
            close_timeout=1,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._watcher = asyncio.get_running_loop().create_task(self.user_streams.watch())

    async def stop(self) -> None:
        """Close the server and every connection; pending delayed answers are dropped."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
            self._cancel_delayed()
            await server.wait_closed()
        # Frames still being handled while connections closed may have queued more.
        self._cancel_delayed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _cancel_delayed(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def stream_url(self) -> str:
        """The user data stream endpoint, without a listen key (``.../private/ws``)."""
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return f"ws://{self.host}:{self.port}{STREAM_PATH}"

    # ---- set-up and control

    def server_time_ms(self) -> int:
        """Binance's clock: the host's wall clock plus ``clock_offset_ms``."""
        return int(self._wall() * 1000) + self.clock_offset_ms

    def add_account(
        self,
        name: str,
        *,
        api_key: str,
        api_secret: str | None = None,
        ed25519_public_key: bytes | None = None,
        rsa_public_key: bytes | None = None,
        multi_assets: bool = False,
        hedge_mode: bool = False,
        positions: int = 3,
        portfolio_margin: bool = False,
    ) -> SimAccount:
        """Add an account whose key is checked with exactly one of the three credentials.

        A ``portfolio_margin`` account's data requests are answered 401/-2015:
        Portfolio Margin accounts must use the papi endpoints. What Binance
        answers exactly is unknown; this is the harsher guess.
        """
        if sum(c is not None for c in (api_secret, ed25519_public_key, rsa_public_key)) != 1:
            raise ValueError("give exactly one of api_secret, ed25519_public_key, rsa_public_key")
        if name in self.accounts or api_key in self._by_key:
            raise ValueError(f"account name {name!r} or its API key is already in use")
        if api_secret is not None:
            verifier = Verifier.hmac_sha256(api_secret)
        elif ed25519_public_key is not None:
            verifier = Verifier.ed25519(ed25519_public_key)
        else:
            assert rsa_public_key is not None
            verifier = Verifier.rsa(rsa_public_key)
        account = SimAccount(
            name,
            api_key=api_key,
            verifier=verifier,
            multi_assets=multi_assets,
            hedge_mode=hedge_mode,
            lively=self.lively,
            rng=random.Random(f"{self.seed}/{name}") if self.seed is not None else random.Random(),
            clock=self.server_time_ms,
            portfolio_margin=portfolio_margin,
            on_revoke=self._announce_revocation,
            events=self.user_streams,
        )
        account.populate(positions)
        self.accounts[name] = account
        self._by_key[api_key] = account
        return account

    def _announce_revocation(self, account: SimAccount) -> None:
        """Push the id-less 401/-2015 frame to every connection that uses the key.

        What Binance does on a live connection when a key is revoked is only
        partly documented (the frame); the simulator also keeps sessions that
        were logged on with the key dead for good (see :meth:`_authenticate`).
        """
        frame = json.dumps(
            {"id": None, "status": 401, "error": {"code": -2015, "msg": MSG_BAD_KEY}}
        )
        for conn in self._open:
            if conn.account is account:
                conn.session_revoked = True
            if not conn.muted and account.api_key in (conn.last_api_key, _session_key(conn)):
                self._spawn(_send_quietly(conn.ws, frame))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def inject(self, fault: Fault) -> None:
        """Queue a fault. Each request takes the first queued fault matching its method."""
        if fault.count < 1:
            raise ValueError("a fault must apply to at least one request")
        self._faults.append(_QueuedFault(fault, fault.count))

    def ban(self, until_ms: int) -> None:
        """Answer every request with 418 until server time ``until_ms``."""
        self._banned_until = until_ms

    def weight_used(self) -> int:
        """REQUEST_WEIGHT used in the current (server clock) minute."""
        return self._weight if self.server_time_ms() // 60_000 == self._weight_minute else 0

    @property
    def open_connections(self) -> int:
        """WebSocket connections open now (``connections_opened`` counts every one)."""
        return len(self._open)

    @staticmethod
    def demo_accounts() -> list[DemoAccount]:
        """The accounts ``--demo`` adds (see :mod:`.demo`)."""
        return demo_accounts()

    # ---- connections

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        if urlsplit(request.path).path != PATH and stream_target(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        target = stream_target(ws.request.path) if ws.request else None
        if target is not None:
            await self.user_streams.serve(ws, *target)
            return
        self.connections_opened += 1
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
        conn = _Connection(
            number=self.connections_opened,
            connected_since=self.server_time_ms(),
            return_rate_limits=query.get("returnRateLimits", ["true"])[-1].lower() != "false",
            ws=ws,
        )
        self._charge(CONNECTION_WEIGHT)
        self._open.add(conn)
        try:
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    if not await self._serve_frame(ws, conn, frame):
                        return
        finally:
            self._open.discard(conn)

    async def _serve_frame(
        self, ws: ServerConnection, conn: _Connection, frame: str | bytes
    ) -> bool:
        """Answer one frame, applying a queued fault; False once the connection is done."""
        request = parse_frame(frame)
        api_key = request.params.get("apiKey")
        if isinstance(api_key, str):
            conn.last_api_key = api_key
        else:
            api_key = conn.account.api_key if conn.account else None
        self.requests.append(
            RequestRecord(
                time.monotonic(),
                int(self._wall() * 1000),
                request.method,
                api_key,
                request.id,
                conn.number,
            )
        )
        fault = self._take_fault(request.method, api_key)
        if isinstance(fault, Mute):
            conn.muted = True
        if conn.muted:
            return True
        reply = self._reply(conn, request)
        return await self._deliver(ws, reply, fault)

    def _take_fault(self, method: str | None, api_key: str | None) -> Fault | None:
        for queued in self._faults:
            if queued.fault.method in (None, method) and queued.fault.api_key in (None, api_key):
                queued.remaining -= 1
                if queued.remaining == 0:
                    self._faults.remove(queued)
                return queued.fault
        return None

    async def _deliver(self, ws: ServerConnection, reply: _Reply, fault: Fault | None) -> bool:
        match fault:
            case Drop(abrupt=True):
                ws.transport.abort()
                return False
            case Drop():
                await ws.close(CloseCode.INTERNAL_ERROR, "simulated drop")
                return False
            case Delay(seconds=seconds):
                self._spawn(self._send_later(ws, reply, seconds))
                return True
            case ErrorAnswer():
                error = ApiError(fault.status, fault.code, fault.msg, fault.data)
                reply = self._error_reply(reply.payload["id"], error, reply)
            case Mutate(fn=fn) if "result" in reply.payload:
                result = copy.deepcopy(reply.payload["result"])
                fn(result)
                reply.payload["result"] = result
            case RawFrame(frame=raw, replace=replace):
                await ws.send(raw)
                if replace:
                    return True
            case Unsolicited(frame=unsolicited):
                await ws.send(json.dumps(unsolicited))
            case Stall(seconds=seconds):
                ws.transport.pause_reading()
                try:
                    await _closed_or_timeout(ws, seconds)
                    await self._send(ws, reply)
                finally:
                    if not ws.transport.is_closing():
                        ws.transport.resume_reading()
                return True
        await self._send(ws, reply)
        if isinstance(fault, CloseConnection):
            await ws.close(fault.code)
            return False
        return True

    async def _send(self, ws: ServerConnection, reply: _Reply) -> None:
        if reply.account is not None and reply.method == POSITION_METHOD:
            reply.account.last_positions = reply.payload["result"]
        elif reply.account is not None:
            reply.account.last_result = reply.payload["result"]
        # Raw UTF-8, as Binance sends symbols such as 币安人生USDT.
        await ws.send(json.dumps(reply.payload, ensure_ascii=False))

    async def _send_later(self, ws: ServerConnection, reply: _Reply, seconds: float) -> None:
        await asyncio.sleep(seconds)
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, reply)

    # ---- answers

    def _reply(self, conn: _Connection, request: ParsedRequest) -> _Reply:
        weight = METHOD_WEIGHTS.get(request.method or "", INVALID_REQUEST_WEIGHT)
        used = self._charge(weight if request.error is None else INVALID_REQUEST_WEIGHT)
        reply = _Reply({"id": request.id}, used, _wants_rate_limits(conn, request.params))
        try:
            self._check_limits(used)
            if request.error is not None:
                raise request.error
            result, reply.account = self._dispatch(conn, request)
            reply.method = request.method
        except ApiError as error:
            return self._error_reply(request.id, error, reply)
        reply.payload |= {"status": 200, "result": result}
        self._add_rate_limits(reply)
        return reply

    def _error_reply(self, request_id: Any, error: ApiError, template: _Reply) -> _Reply:
        reply = _Reply(
            {"id": request_id, "status": error.status, "error": error.body()},
            template.used_weight,
            template.with_rate_limits,
        )
        self._add_rate_limits(reply)
        return reply

    def _add_rate_limits(self, reply: _Reply) -> None:
        if reply.with_rate_limits:
            reply.payload["rateLimits"] = [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                    "count": reply.used_weight,
                }
            ]

    def _charge(self, weight: int) -> int:
        """Add weight to the current calendar minute's count and return the new count."""
        minute = self.server_time_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight = minute, 0
        self._weight += weight
        return self._weight

    def _check_limits(self, used: int) -> None:
        now = self.server_time_ms()
        if now < self._banned_until:
            raise ApiError(
                418,
                -1003,
                MSG_BANNED.format(until=self._banned_until),
                {"retryAfter": self._banned_until, "serverTime": now},
            )
        if used > self.weight_limit:
            raise ApiError(
                429,
                -1003,
                MSG_TOO_MANY_REQUESTS.format(limit=self.weight_limit),
                {"retryAfter": (now // 60_000 + 1) * 60_000, "serverTime": now},
            )

    def _dispatch(self, conn: _Connection, request: ParsedRequest) -> tuple[Any, SimAccount | None]:
        params = request.params
        if request.method in (ACCOUNT_METHOD, POSITION_METHOD, ACCOUNT_V1_METHOD):
            account = self._authenticate(conn, params)
            if account.portfolio_margin:
                raise ApiError(401, -2015, MSG_BAD_KEY)
            if request.method == POSITION_METHOD:
                return account.position_result(symbol_param(params, account.knows)), account
            if request.method == ACCOUNT_V1_METHOD:
                return account.v1_result(), None
            # The market moves once per poll, on its first request: both answers of a
            # poll (status, then positions) describe the same marks.
            if account.lively:
                account.step()
            return account.result(), account
        if request.method in USER_STREAM_METHODS:
            return self._user_stream(conn, request.method, params), None
        if request.method == "session.logon":
            account = self._verify_signed(params)
            if conn.session_revoked:
                raise ApiError(401, -2015, MSG_BAD_KEY)
            if account.verifier.kind != "ED25519":
                raise ApiError(400, -4056, MSG_KEY_TYPE)
            conn.account, conn.authorized_since = account, self.server_time_ms()
        elif request.method == "session.logout":
            conn.account, conn.authorized_since = None, None
        elif request.method != "session.status":
            raise ApiError(400, -1102, f"Unknown method '{request.method}'.")
        return self._session_status(conn, params), None

    def _user_stream(self, conn: _Connection, method: str,
                     params: dict[str, Any]) -> dict[str, Any]:
        """A USER_STREAM request: the API key (the param, else the session's), no signature."""
        api_key = params.get("apiKey")
        if api_key is None and conn.account is not None:
            if conn.session_revoked or conn.account.revoked:
                raise ApiError(401, -2015, MSG_BAD_KEY)
            account = conn.account
        else:
            account = self._account_for_key(api_key)
        if method == "userDataStream.start":
            return self.user_streams.start(account)
        if method == "userDataStream.ping":
            return self.user_streams.ping(account, params.get("listenKey"))
        return self.user_streams.stop(account)

    def _session_status(self, conn: _Connection, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiKey": conn.account.api_key if conn.account else None,
            "authorizedSince": conn.authorized_since,
            "connectedSince": conn.connected_since,
            "returnRateLimits": _wants_rate_limits(conn, params),
            "serverTime": self.server_time_ms(),
            "userDataStream": False,
        }

    def _authenticate(self, conn: _Connection, params: dict[str, Any]) -> SimAccount:
        """The account a request acts for: its signature's, else the session's.

        A session whose key was revoked while it was logged on stays unusable,
        also after the key is restored, until the client logs on again on a
        new connection. Binance's real behaviour here is unknown; this is the
        harsher choice, so that a client must reconnect to recover.
        """
        if "signature" not in params and conn.account is not None:
            if conn.session_revoked or conn.account.revoked:
                raise ApiError(401, -2015, MSG_BAD_KEY)
            self._check_timestamp(*time_params(params))
            return conn.account
        return self._verify_signed(params)

    def _verify_signed(self, params: dict[str, Any]) -> SimAccount:
        api_key = params.get("apiKey")
        if not isinstance(api_key, str) or not api_key:
            raise malformed("apiKey")
        if not isinstance(params.get("signature"), str):
            raise malformed("signature")
        timestamp, window = time_params(params)
        account = self._account_for_key(api_key)
        if not account.verifier.verify(params):
            raise ApiError(400, -1022, MSG_BAD_SIGNATURE)
        self._check_timestamp(timestamp, window)
        return account

    def _account_for_key(self, api_key: object) -> SimAccount:
        """The account of an ``apiKey`` param; -1102, -2014 or -2015 as Binance answers."""
        if not isinstance(api_key, str) or not api_key:
            raise malformed("apiKey")
        account = self._by_key.get(api_key)
        if account is None:
            if _KEY_FORMAT.fullmatch(api_key):
                raise ApiError(401, -2015, MSG_BAD_KEY)
            raise ApiError(401, -2014, MSG_KEY_FORMAT)
        if account.revoked:
            raise ApiError(401, -2015, MSG_BAD_KEY)
        return account

    def _check_timestamp(self, timestamp: int, window: float) -> None:
        now = self.server_time_ms()
        if not (timestamp < now + 1000 and now - timestamp <= window):
            raise ApiError(400, -1021, MSG_RECV_WINDOW)
