"""The exporter's own HTTP server: ``/metrics``, ``/`` and ``/healthz`` on asyncio streams.

A scrape awaits ``body(openmetrics, gzipped)``: the exposition's bytes in the
format asked for, rendered off the event loop at most once per change and then
served from its cache.

HTTP/1.1 syntax - parsing request heads, framing, serialising responses - is
``h11``'s. This module is the connection manager around it, written for hostile
networks (the server may be bound to every interface):

- every wait on a client has a deadline: the TLS handshake and the first request
  head must arrive within ``header_timeout`` of the connection; on a kept-alive
  connection the next head may idle for ``idle_timeout``, then gets
  ``header_timeout`` from its first byte - slowloris cannot hold a connection
  longer; a write must drain within ``write_timeout``;
- the head is capped at ``max_head_bytes`` (431), request bodies are refused
  (413: the exporter has no use for one), malformed requests get 400, an
  HTTP/1.1 request without exactly one ``Host`` gets 400, versions other than
  1.0 and 1.1 get 505; HTTP/1.0 requests are answered and the connection closed;
- connections are accepted by this module (plain TCP; TLS is started on the
  accepted connection), so each one counts against the caps from ``accept()``,
  TLS handshakes included: at most ``max_connections`` in all and
  ``max_connections_per_peer`` per peer; when a cap is reached the
  longest-waiting idle connection is closed to make room
  (:mod:`exporter.connections`), so a flood of idle connections cannot lock out
  a scrape; only when every connection is busy is the newcomer answered 503;
- when ``accept()`` fails for want of file descriptors, the longest-waiting
  connection is closed to free one; accept errors, evictions and refusals are
  logged as rates (:mod:`exporter.ratelog`), never a line each.

Basic auth (:mod:`exporter.basicauth`, from the web config) protects every path
except ``/healthz``: a liveness probe carries no secret data and must work for a
kubelet that holds no credentials. When too many password checks are in
progress the answer is 503 (``Retry-After: 1``) instead of a growing queue.

For the addresses a listen host means (``""`` is dual-stack ``::``), see
:mod:`exporter.listen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

import h11

from exporter.basicauth import AuthResult, BasicAuth
from exporter.connections import ConnectionTable, peer_key
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.landing import render_landing
from exporter.listen import bind_listeners
from exporter.messages import brief
from exporter.ratelog import RateLog
from exporter.webconfig import WebConfig

__all__ = ["MetricsServer"]

_log = logging.getLogger("exporter.http")

_REALM = "binance-futures-exporter"
_ALLOW = "GET, HEAD"
_PLAIN = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_BACKLOG = 1024
_LINGER_SECONDS = 1.0
_ACCEPT_RETRY_SECONDS = 0.1
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_VERSIONS = (b"1.0", b"1.1")


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = _PLAIN
    headers: tuple[tuple[str, str], ...] = ()


class _HttpError(Exception):
    """A request we answer with ``status`` and then close the connection.

    ``head_only`` when the request is known to be a HEAD: h11 then sends no body.
    """

    def __init__(self, status: int, message: str, *, head_only: bool = False) -> None:
        super().__init__(message)
        self.response = _Response(status, f"{message}\n".encode())
        self.head_only = head_only


class _Connection:
    """One accepted connection: its peer, and how to drop it when it is evicted."""

    __slots__ = ("host", "peer", "task", "transport")

    def __init__(self, host: str) -> None:
        self.host = host  # the client's address, for logs
        self.peer = peer_key(host)  # what the per-peer caps count
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.WriteTransport | None = None

    def drop(self) -> None:
        """Close now: free the socket at once and end the connection's task.

        The task is cancelled, not only left to notice the abort: an abort during
        ``start_tls`` makes Python 3.11 complete the handshake with no transport at
        all, which breaks the StreamWriter; a cancellation unwinds it cleanly.
        """
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None:
            self.task.cancel()


class MetricsServer:
    """Serves the current :class:`Page` on ``/metrics`` (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        body: Callable[[bool, bool], Awaitable[bytes]],
        *,
        landing: Callable[[], bytes] | None = None,
        web_config: WebConfig | None = None,
        version: str = "",
        header_timeout: float = 10.0,
        idle_timeout: float = 90.0,
        write_timeout: float = 10.0,
        max_connections: int = 1024,
        max_connections_per_peer: int = 16,
        max_head_bytes: int = 16384,
        auth_max_pending: int = 8,
        auth_max_pending_per_peer: int = 2,
    ) -> None:
        """``landing()`` is called per request to ``/`` and returns the HTML page.

        Without it the page shows ``version`` and the links only.
        ``idle_timeout`` is above Prometheus' default 1 m scrape interval so such
        scrapes keep reusing their connection. ``max_connections`` should come from
        :func:`exporter.fdlimit.connection_cap`.
        """
        self._host = host
        self._port = port
        self._body = body
        self._landing = landing or (
            lambda: render_landing(version, demo=False, accounts=(), now=time.time())
        )
        self._auth_limits = (auth_max_pending, auth_max_pending_per_peer)
        web_config = web_config or WebConfig()
        self._ssl_context = web_config.ssl_context
        self._auth = self._basic_auth(web_config)
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._max_head_bytes = max_head_bytes
        self._table: ConnectionTable[_Connection] = ConnectionTable(
            max_connections, max_connections_per_peer
        )
        self._tasks: dict[asyncio.Task[None], _Connection] = {}
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._accept_errors = RateLog(_log, "failed accept() calls", level=logging.ERROR)
        self._evictions = RateLog(_log, "waiting connections closed to make room")
        self._refusals = RateLog(_log, "connections refused with 503, every slot busy")
        self._routes: dict[str, Callable[[_Request], Awaitable[_Response]]] = {
            "/metrics": self._metrics,
            "/": self._landing_page,
            "/healthz": self._healthz,
        }
        self.port = port
        self.url = ""

    async def start(self) -> None:
        """Bind and start accepting; afterwards ``port`` and ``url`` are the bound ones.

        Raises OSError when the address cannot be bound; describe it with
        :func:`exporter.listen.listen_error_message`.
        """
        self._listeners = await bind_listeners(self._host, self._port, backlog=_BACKLOG)
        self._acceptors = [
            asyncio.create_task(self._accept_loop(sock), name="http-accept")
            for sock in self._listeners
        ]
        bound_host, self.port = self._listeners[0].getsockname()[:2]
        scheme = "https" if self._ssl_context is not None else "http"
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"{scheme}://{url_host}:{self.port}"
        _log.info("serving metrics on %s", self.url)

    def reload(self, web_config: WebConfig) -> None:
        """Serve connections accepted from now on with ``web_config`` (TLS files, users).

        Connections already open keep their TLS session; checks still waiting on
        the old users are cancelled, which drops their connections.
        """
        old, self._auth = self._auth, self._basic_auth(web_config)
        self._ssl_context = web_config.ssl_context
        old.close()

    def _basic_auth(self, web_config: WebConfig) -> BasicAuth:
        pending, per_peer = self._auth_limits
        return BasicAuth(web_config.basic_auth_users, max_pending=pending,
                         max_pending_per_peer=per_peer)

    async def stop(self) -> None:
        """Stop listening and drop every open connection now (in-flight scrapes included)."""
        if not self._listeners:
            return
        for acceptor in self._acceptors:
            acceptor.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        tasks = list(self._tasks)
        for connection in self._tasks.values():
            connection.drop()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._auth.close()
        for rate in (self._accept_errors, self._evictions, self._refusals):
            rate.close()

    # -- accepting -----------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the client gave up before we accepted
            except OSError as err:
                await self._accept_failed(err)
                continue
            self._admit(sock, str(address[0]) if isinstance(address, tuple) else "?")

    async def _accept_failed(self, err: OSError) -> None:
        """Count the failure; out of descriptors, free one by closing a waiting connection."""
        self._accept_errors.note("accept() failed: %s", err.strerror or type(err).__name__)
        victim = self._table.oldest_waiting() if err.errno in _OUT_OF_DESCRIPTORS else None
        if victim is not None:
            victim.drop()
            await asyncio.sleep(0)  # let the transport close its socket
        else:
            await asyncio.sleep(_ACCEPT_RETRY_SECONDS)

    def _admit(self, sock: socket.socket, host: str) -> None:
        connection = _Connection(host)
        victims = self._table.admit(connection, connection.peer)
        if victims is None:
            self._refusals.note(
                "%d connections open and all busy: answering 503 to %s",
                len(self._table), host, peer=connection.peer,
            )
            _refuse(sock)
            return
        for victim in victims:
            self._evictions.note(
                "connection limit reached: closing a waiting connection from %s to admit one "
                "from %s",
                victim.host, host, peer=connection.peer,
            )
            victim.drop()
        task = asyncio.create_task(self._connection(sock, connection))
        connection.task = task
        self._tasks[task] = connection

    # -- connections ---------------------------------------------------------------

    async def _connection(self, sock: socket.socket, connection: _Connection) -> None:
        task = asyncio.current_task()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await _streams(sock, self._max_head_bytes)
            connection.transport = writer.transport
            await self._serve(reader, writer, connection)
        except (OSError, TimeoutError) as err:  # ssl.SSLError is an OSError
            _log.debug("connection from %s ended: %r", connection.host, err)
        except Exception:
            _log.exception("unexpected error serving %s", connection.host)
        finally:
            self._table.remove(connection)
            if task is not None:
                self._tasks.pop(task, None)
            if writer is not None:
                await self._close(writer)
            else:
                sock.close()

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close, giving buffered data and a TLS shutdown ``write_timeout`` to finish."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self._write_timeout)
        except TimeoutError:
            writer.transport.abort()
        except OSError:
            pass

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        protocol = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_bytes + 1)
        first = True
        while True:
            self._table.waiting(connection)
            try:
                head = await self._next_head(reader, writer, connection, first)
                if head is None:
                    return
                self._table.busy(connection)
                request = _parse(protocol, head)
            except _HttpError as err:
                _log.debug("%s bad request: %s", connection.host, err)
                await self._send(
                    writer, protocol, err.response, head_only=err.head_only, close=True
                )
                await _linger(reader, writer)
                return
            response = await self._respond(request, connection)
            await self._send(
                writer, protocol, response, head_only=request.method == "HEAD", close=False
            )
            if protocol.our_state is not h11.DONE:  # h11 says MUST_CLOSE
                return
            protocol.start_next_cycle()
            first = False

    async def _next_head(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        first: bool,
    ) -> bytes | None:
        """The next request head; None when the client closed the connection instead.

        The first request on a connection, TLS handshake included, has
        ``header_timeout`` from the connection on; later ones may idle for
        ``idle_timeout``, then get ``header_timeout`` from their first byte.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._header_timeout if first else self._idle_timeout) as cm:
            if first and self._ssl_context is not None:
                await writer.start_tls(
                    self._ssl_context, ssl_handshake_timeout=self._header_timeout
                )
                connection.transport = writer.transport
            try:
                lead = await reader.readexactly(1)
            except asyncio.IncompleteReadError:
                return None
            if not first:
                cm.reschedule(loop.time() + self._header_timeout)
            return await self._read_head(reader, lead)

    async def _read_head(self, reader: asyncio.StreamReader, lead: bytes) -> bytes | None:
        """Lines up to the empty line that ends a head, at most ``max_head_bytes`` in all.

        Empty lines before the request line are skipped (RFC 9112 2.2). This only
        finds where the head ends; h11 parses it.
        """
        lines: list[bytes] = []
        size = 0
        while True:
            try:
                line = lead + await reader.readline()
            except ValueError as err:  # a single line longer than the stream limit
                raise _HttpError(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large"
                ) from err
            lead = b""
            size += len(line)
            if size > self._max_head_bytes:
                raise _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
            if not line.endswith(b"\n"):
                return None  # the client closed mid-head
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                if len(lines) > 1:
                    return b"".join(lines)
                lines.clear()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        protocol: h11.Connection,
        response: _Response,
        *,
        head_only: bool,
        close: bool,
    ) -> None:
        writer.write(_serialize(protocol, response, head_only=head_only, close=close))
        try:
            await asyncio.wait_for(writer.drain(), self._write_timeout)
        except TimeoutError:
            writer.transport.abort()  # the client does not read: drop what it has not taken
            raise

    # -- requests ------------------------------------------------------------------

    async def _respond(self, request: _Request, connection: _Connection) -> _Response:
        response = await self._route(request, connection)
        _log.debug(
            "%s %s %s -> %d (%d bytes)",
            connection.host,
            request.method,
            request.path,
            response.status,
            len(response.body),
        )
        return response

    async def _route(self, request: _Request, connection: _Connection) -> _Response:
        if request.path != "/healthz" and self._auth.required:
            result = await self._auth.check(request.headers.get("authorization"), connection.peer)
            if result is AuthResult.BUSY:
                return _Response(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    b"Too many password checks in progress; retry\n",
                    headers=(("Retry-After", "1"),),
                )
            if result is AuthResult.DENIED:
                return _Response(
                    HTTPStatus.UNAUTHORIZED,
                    b"Unauthorized\n",
                    headers=(("WWW-Authenticate", f'Basic realm="{_REALM}"'),),
                )
        handler = self._routes.get(request.path)
        if handler is None:
            return _Response(HTTPStatus.NOT_FOUND, b"Not Found\n")
        if request.method not in ("GET", "HEAD"):
            return _Response(
                HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed\n", headers=(("Allow", _ALLOW),)
            )
        return await handler(request)

    async def _metrics(self, request: _Request) -> _Response:
        openmetrics = _wants_openmetrics(request.headers.get("accept", ""))
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        body = await self._body(openmetrics, gzipped)
        headers = [("Vary", "Accept-Encoding, Accept")]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return _Response(HTTPStatus.OK, body, content_type, tuple(headers))

    async def _landing_page(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, self._landing(), _HTML)

    async def _healthz(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, b"ok\n")


async def _streams(
    sock: socket.socket, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Server-side streams for an accepted socket (what ``asyncio.start_server`` makes).

    The protocol gets a client-connected callback because that is how
    ``StreamWriter.start_tls`` knows to take the server side of the handshake.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    made: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    def connected(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        made.set_result(writer)

    protocol = asyncio.StreamReaderProtocol(reader, connected)
    await loop.connect_accepted_socket(lambda: protocol, sock)
    return reader, await made


def _parse(protocol: h11.Connection, head: bytes) -> _Request:
    """A complete request head -> :class:`_Request`, or _HttpError with the status to answer."""
    protocol.receive_data(head)
    try:
        event = protocol.next_event()
    except h11.RemoteProtocolError as err:
        # h11's reason may quote the request; it goes to the debug log, not to the client.
        _log.debug("malformed request: %s", brief(str(err)))
        raise _HttpError(err.error_status_hint, "malformed request") from err
    if not isinstance(event, h11.Request):  # cannot happen for a complete head
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request")
    head_only = event.method == b"HEAD"
    if event.http_version not in _VERSIONS:
        raise _HttpError(
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and 1.1", head_only=head_only
        )
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    # h11 has checked that Content-Length is digits (repeats must agree).
    if "transfer-encoding" in headers or int(headers.get("content-length", "0")) > 0:
        raise _HttpError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "request bodies are not accepted",
            head_only=head_only,
        )
    protocol.next_event()  # EndOfMessage: the request had no body
    return _Request(
        method=event.method.decode("ascii"),
        path=_path(event.target.decode("ascii")),
        headers=headers,
    )


def _path(target: str) -> str:
    """The path of an origin-form or absolute-form target (any case of scheme), no query."""
    scheme, sep, _ = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        try:
            return urlsplit(target).path or "/"
        except ValueError as err:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request target") from err
    return target.partition("?")[0]


def _serialize(
    protocol: h11.Connection, response: _Response, *, head_only: bool, close: bool
) -> bytes:
    """The response's bytes from h11, which also decides whether the connection stays open."""
    headers = [
        ("Date", formatdate(usegmt=True)),
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    data = protocol.send(
        h11.Response(
            status_code=response.status,
            headers=headers,
            reason=HTTPStatus(response.status).phrase.encode("ascii"),
        )
    )
    body = b"" if head_only else protocol.send(h11.Data(data=response.body))
    return (data or b"") + (body or b"") + (protocol.send(h11.EndOfMessage()) or b"")


def _refuse(sock: socket.socket) -> None:
    """Every connection is busy: answer 503 on the raw socket and close it a moment later.

    The 503 fits the socket buffer, so no await is needed. Closing at once would
    answer request bytes we never read with a RST that can destroy the 503, so
    the connection is half-closed and dropped a moment later.
    """
    response = _Response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n")
    data = _serialize(h11.Connection(h11.SERVER), response, head_only=False, close=True)
    try:
        sock.setblocking(False)
        sock.send(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()
        return
    asyncio.get_running_loop().call_later(_LINGER_SECONDS, sock.close)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then discard what the client still sends for a moment.

    Closing a socket with unread input makes the kernel send a RST, which can
    destroy the error response before the client reads it.
    """
    if not writer.can_write_eof():
        return
    writer.write_eof()
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(_LINGER_SECONDS):
            while await reader.read(65536):
                pass


def _weighted(header: str) -> dict[str, float]:
    """Accept-style header -> {lower-case value: highest q}; a bad q counts as 0."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        value, *params = item.split(";")
        q = 1.0
        for param in params:
            name, _, raw = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also false for NaN
                    q = 0.0
        key = value.strip().lower()
        weights[key] = max(q, weights.get(key, 0.0))
    return weights


def _wants_openmetrics(accept: str) -> bool:
    """OpenMetrics when asked for, unless text/plain is explicitly preferred."""
    weights = _weighted(accept)
    openmetrics = weights.get("application/openmetrics-text", 0.0)
    return openmetrics > 0.0 and openmetrics >= weights.get("text/plain", 0.0)


def _accepts_gzip(accept_encoding: str) -> bool:
    weights = _weighted(accept_encoding)
    q = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return q > 0.0
