"""The exporter's own HTTP server: ``/metrics``, ``/`` and ``/healthz`` on asyncio streams.

Serving is a byte copy: ``page()`` returns a :class:`~exporter.render.Page` rendered
when the data changed, so a scrape never renders or awaits anything slow.

The server is written for hostile networks (it may be bound to all interfaces):

- every wait on a client has a deadline: the request head (request line and
  headers) must arrive within ``header_timeout`` of its first byte - or of the
  connection - slowloris cannot hold a connection longer; an idle keep-alive
  connection is closed after ``idle_timeout``; a write must drain within
  ``write_timeout``; a TLS handshake must finish within ``header_timeout``;
- the head is capped at ``max_head_bytes`` (431), request bodies are refused
  (413: the exporter has no use for one), malformed requests get 400;
- at most ``max_connections`` connections are served at once; beyond that a
  new connection gets a 503 and is closed, so a flood cannot exhaust file
  descriptors, and its members time out and free their slots.

Basic auth (from the web config) protects every path except ``/healthz``: a
liveness probe carries no secret data and must work for a kubelet that holds no
credentials; ``/`` and ``/metrics`` need credentials. The check does not leak
which users exist through timing: an unknown user is checked against a dummy
hash of the same cost, and the decision is made after the check. bcrypt costs
~100-300 ms of CPU, so it runs in a worker thread (at most ``_BCRYPT_THREADS``
at once, so a flood of wrong passwords cannot take every thread of the default
executor that DNS lookups share), and successful checks are remembered as
SHA-256 digests of the credentials: Prometheus sends the same credentials every
scrape and would otherwise pay a bcrypt per scrape. Only digests are kept, never
passwords, and only of credentials that were verified.

``host`` ``""`` and ``"0.0.0.0"`` bind all IPv4 interfaces; ``"::"`` binds IPv6
and, where the system supports it, IPv4 on the same socket (like Go exporters);
a host name binds every address it resolves to (with port 0 each gets its own
ephemeral port and :attr:`MetricsServer.port` reports the first).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import html
import logging
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

import bcrypt

from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Page
from exporter.webconfig import WebConfig

_log = logging.getLogger("exporter.http")

_REALM = "binance-futures-exporter"
_ALLOW = "GET, HEAD"
_PLAIN = "text/plain; charset=utf-8"
_BACKLOG = 1024
_LINGER_SECONDS = 1.0
_BCRYPT_THREADS = 2
_BCRYPT_MAX_PASSWORD = 72
_AUTH_CACHE_MAX = 1024
# Salt and digest of a throwaway hash; the cost field is set to match the real hashes.
_DUMMY_SALT_AND_DIGEST = b"wvx4mOOoHoFTMUX9B8qGgOotleDLMsu46tIHumUyih8PTn3M4K09O"

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    http10: bool
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "keep-alive" in tokens if self.http10 else "close" not in tokens


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = _PLAIN
    headers: tuple[tuple[str, str], ...] = ()


class _HttpError(Exception):
    """A request we answer with ``status`` and then close the connection."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.response = _Response(status, f"{message}\n".encode())


class MetricsServer:
    """Serves the current :class:`Page` on ``/metrics`` (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        page: Callable[[], Page],
        *,
        web_config: WebConfig | None = None,
        version: str = "",
        landing_links: Sequence[tuple[str, str]] = (),
        header_timeout: float = 10.0,
        idle_timeout: float = 90.0,
        write_timeout: float = 10.0,
        max_connections: int = 1024,
        max_head_bytes: int = 16384,
    ) -> None:
        """``landing_links`` are extra (href, label) pairs for the landing page.

        ``idle_timeout`` is above Prometheus' default 1 m scrape interval so such
        scrapes keep reusing their connection.
        """
        self._host = host
        self._port = port
        self._page = page
        self._web_config = web_config or WebConfig()
        self._landing = _landing_html(version, landing_links)
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._max_connections = max_connections
        self._max_head_bytes = max_head_bytes
        self._dummy_hash = _dummy_hash(self._web_config.basic_auth_users.values())
        self._auth_cache: set[bytes] = set()
        self._bcrypt_slots = asyncio.Semaphore(_BCRYPT_THREADS)
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._saturated = False
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Callable[[_Request], _Response]] = {
            "/metrics": self._metrics,
            "/": self._landing_page,
            "/healthz": self._healthz,
        }
        self.port = port
        self.url = ""

    async def start(self) -> None:
        """Bind and start accepting; afterwards ``port`` and ``url`` are the bound ones."""
        options: dict[str, object] = {"limit": self._max_head_bytes, "backlog": _BACKLOG}
        ssl_context = self._web_config.ssl_context
        if ssl_context is not None:
            options.update(
                ssl=ssl_context,
                ssl_handshake_timeout=self._header_timeout,
                ssl_shutdown_timeout=self._write_timeout,
            )
        if self._host == "::" and socket.has_dualstack_ipv6():
            sock = socket.create_server(
                ("::", self._port), family=socket.AF_INET6, dualstack_ipv6=True
            )
            self._server = await asyncio.start_server(self._on_connect, sock=sock, **options)
        else:
            host = self._host or "0.0.0.0"
            self._server = await asyncio.start_server(self._on_connect, host, self._port, **options)
        bound_host, self.port = self._server.sockets[0].getsockname()[:2]
        scheme = "https" if ssl_context is not None else "http"
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"{scheme}://{url_host}:{self.port}"
        _log.info("serving metrics on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and drop every open connection now (in-flight scrapes included).

        Aborting the transports wakes every connection task with EOF or a reset,
        so they end by themselves; cancelling them instead would make Python 3.11's
        streams log the CancelledError as an error.
        """
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    # -- connections ---------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            self._refuse(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except (OSError, TimeoutError) as err:  # ssl.SSLError is an OSError
            _log.debug("connection from %s ended: %r", peer, err)
        except Exception:
            _log.exception("unexpected error serving %s", peer)
        finally:
            del self._connections[task]
            if len(self._connections) < self._max_connections:
                self._saturated = False
            await self._close(writer)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Over the connection limit: answer 503 without starting a task for the connection.

        The 503 fits the socket buffer, so no await is needed. Closing at once would
        answer request bytes we never read with a RST that can destroy the 503, so
        the connection is half-closed and dropped a moment later.
        """
        if not self._saturated:
            _log.warning(
                "%d connections open, the limit: answering 503 until some close",
                self._max_connections,
            )
            self._saturated = True
        response = _Response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n")
        writer.write(_serialize(response, head_only=False, close=True, http10=False))
        if writer.can_write_eof():
            writer.write_eof()
            asyncio.get_running_loop().call_later(_LINGER_SECONDS, writer.transport.abort)
        else:
            writer.close()

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
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        first = True
        while True:
            try:
                head = await self._read_head(reader, first)
                if head is None:
                    return
                request = _parse_head(head)
            except _HttpError as err:
                _log.debug("%s bad request: %s", peer, err)
                await self._send(writer, err.response, head_only=False, close=True, http10=False)
                await _linger(reader, writer)
                return
            first = False
            response = await self._respond(request, peer)
            close = not request.keep_alive
            await self._send(
                writer,
                response,
                head_only=request.method == "HEAD",
                close=close,
                http10=request.http10,
            )
            if close:
                return

    async def _read_head(self, reader: asyncio.StreamReader, first: bool) -> list[bytes] | None:
        """Read a request head; None when the client closed the connection instead.

        The first request on a connection has ``header_timeout`` from the connection
        on; later ones may idle for ``idle_timeout``, then get ``header_timeout``
        from their first byte.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._header_timeout if first else self._idle_timeout) as cm:
            try:
                lead = await reader.readexactly(1)
            except asyncio.IncompleteReadError:
                return None
            if not first:
                cm.reschedule(loop.time() + self._header_timeout)
            return await self._read_lines(reader, lead)

    async def _read_lines(self, reader: asyncio.StreamReader, lead: bytes) -> list[bytes] | None:
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
            if line not in (b"\r\n", b"\n"):
                lines.append(line)
            elif lines:
                return lines
            # else: an empty line before the request line, which RFC 9112 says to ignore

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        response: _Response,
        *,
        head_only: bool,
        close: bool,
        http10: bool,
    ) -> None:
        writer.write(_serialize(response, head_only=head_only, close=close, http10=http10))
        await asyncio.wait_for(writer.drain(), self._write_timeout)

    # -- requests ------------------------------------------------------------------

    async def _respond(self, request: _Request, peer: object) -> _Response:
        response = await self._route(request, peer)
        _log.debug(
            "%s %s %s -> %d (%d bytes)",
            peer,
            request.method,
            request.path,
            response.status,
            len(response.body),
        )
        return response

    async def _route(self, request: _Request, peer: object) -> _Response:
        if request.path != "/healthz" and not await self._authorized(request, peer):
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
        return handler(request)

    def _metrics(self, request: _Request) -> _Response:
        page = self._page()
        openmetrics = _wants_openmetrics(request.headers.get("accept", ""))
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        if openmetrics:
            body = page.openmetrics_gzip if gzipped else page.openmetrics
        else:
            body = page.text_gzip if gzipped else page.text
        headers = [("Vary", "Accept-Encoding, Accept")]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return _Response(HTTPStatus.OK, body, content_type, tuple(headers))

    def _landing_page(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, self._landing, "text/html; charset=utf-8")

    def _healthz(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, b"ok\n")

    async def _authorized(self, request: _Request, peer: object) -> bool:
        users = self._web_config.basic_auth_users
        if not users:
            return True
        credentials = _basic_credentials(request.headers.get("authorization"))
        if credentials is None:
            return False
        user, password = credentials
        user_bytes = user.encode()
        digest = hashlib.sha256(b"%d:%s:%s" % (len(user_bytes), user_bytes, password)).digest()
        if digest in self._auth_cache:
            return True
        hashed = users.get(user)
        async with self._bcrypt_slots:
            ok = await asyncio.to_thread(_verify, password, hashed, self._dummy_hash)
        if ok:
            if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                self._auth_cache.clear()
            self._auth_cache.add(digest)
        else:
            _log.warning(
                "basic auth failed for %s from %s",
                f"user {user!r}" if hashed is not None else "an unknown user",
                peer,
            )
        return ok


def _verify(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
    """Spend exactly one bcrypt whatever the input, then decide."""
    valid = hashed is not None and len(password) <= _BCRYPT_MAX_PASSWORD
    try:
        matches = bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed if valid else dummy)
    except ValueError:
        return False
    return valid and matches


def _dummy_hash(hashes: Iterable[bytes]) -> bytes:
    """A hash no password matches, as costly as the most costly configured one."""
    cost = max((int(h[4:6]) for h in hashes), default=4)
    return b"$2b$%02d$%s" % (cost, _DUMMY_SALT_AND_DIGEST)


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None


def _parse_head(lines: list[bytes]) -> _Request:
    request_line, *header_lines = (line.rstrip(b"\r\n") for line in lines)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    if version[1] != b"1":
        raise _HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is supported")
    headers = _parse_headers(header_lines)
    _refuse_body(headers)
    return _Request(
        method=parts[0].decode("ascii"),
        path=_path(parts[1].decode("ascii")),
        http10=version[2] == b"0",
        headers=headers,
    )


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, raw_value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or b"\r" in raw_value or b"\0" in raw_value:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.decode("ascii").lower()
        value = raw_value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _refuse_body(headers: Mapping[str, str]) -> None:
    if "transfer-encoding" in headers:
        raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request bodies are not accepted")
    length = headers.get("content-length", "0")
    if not length.isascii() or not length.isdigit():
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    if int(length) > 0:
        raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request bodies are not accepted")


def _path(target: str) -> str:
    """The path of an origin-form or absolute-form target, without the query."""
    if target.startswith(("http://", "https://")):
        try:
            return urlsplit(target).path or "/"
        except ValueError as err:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request target") from err
    return target.partition("?")[0]


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


def _serialize(response: _Response, *, head_only: bool, close: bool, http10: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    if close:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


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


def _landing_html(version: str, links: Sequence[tuple[str, str]]) -> bytes:
    # Relative links keep working behind a reverse proxy that adds a path prefix.
    items = [("metrics", "Metrics"), ("healthz", "Health check"), *links]
    entries = "\n".join(
        f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for href, label in items
    )
    version_line = f"<p>Version {html.escape(version)}</p>\n" if version else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head><meta charset="utf-8"><title>Binance Futures Exporter</title>'
        "</head>\n<body>\n<h1>Binance Futures Exporter</h1>\n"
        f"{version_line}<ul>\n{entries}\n</ul>\n</body>\n</html>\n"
    ).encode()
