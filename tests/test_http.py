"""MetricsServer over real sockets on 127.0.0.1: HTTP semantics, hostile clients, TLS, auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import http.client
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.http
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Page
from exporter.http import MetricsServer
from exporter.webconfig import WebConfig, load_web_config

TEXT = b"# HELP up_demo Demo.\n# TYPE up_demo gauge\nup_demo 1.0\n" * 50
OPENMETRICS = b"# HELP up_demo Demo.\n# TYPE up_demo gauge\nup_demo 1.0\n# EOF\n"
PAGE = Page.from_bodies(TEXT, OPENMETRICS)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PASSWORD = "s3cret-pw"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))

Serve = Callable[..., Awaitable[MetricsServer]]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start MetricsServers on an ephemeral 127.0.0.1 port; stopped after the test."""
    servers: list[MetricsServer] = []

    async def start(page: Page = PAGE, **kwargs: object) -> MetricsServer:
        server = MetricsServer("127.0.0.1", 0, lambda: page, version="1.2.3", **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def _request_sync(
    port: int,
    path: str,
    method: str,
    headers: dict[str, str],
    context: ssl.SSLContext | None,
) -> Reply:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


async def request(
    server: MetricsServer,
    path: str = "/metrics",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a fresh connection, made by http.client in a thread."""
    return await asyncio.to_thread(_request_sync, server.port, path, method, headers or {}, context)


async def exchange(server: MetricsServer, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        writer.write_eof()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- routes and negotiation ---------------------------------------------------------------


async def test_metrics_defaults_to_text_format(serve: Serve) -> None:
    server = await serve()
    assert server.url == f"http://127.0.0.1:{server.port}"
    reply = await request(server)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == TEXT_CONTENT_TYPE
    assert reply.headers["Content-Length"] == str(len(TEXT))
    assert reply.headers["Vary"] == "Accept-Encoding, Accept"
    assert "Content-Encoding" not in reply.headers
    assert reply.body == TEXT


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("text/plain;version=0.0.4", False),
        ("*/*", False),
        ("application/openmetrics-text;q=0.4,text/plain;q=0.9", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=nonsense", False),
    ],
)
async def test_metrics_format_negotiation(serve: Serve, accept: str, openmetrics: bool) -> None:
    server = await serve()
    reply = await request(server, headers={"Accept": accept})
    assert reply.status == 200
    if openmetrics:
        assert reply.headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        assert reply.body == OPENMETRICS
    else:
        assert reply.headers["Content-Type"] == TEXT_CONTENT_TYPE
        assert reply.body == TEXT


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("br, deflate", False),
    ],
)
async def test_metrics_gzip_negotiation(serve: Serve, accept_encoding: str, gzipped: bool) -> None:
    server = await serve()
    for accept, body in (("text/plain", TEXT), (PROMETHEUS_ACCEPT, OPENMETRICS)):
        reply = await request(
            server, headers={"Accept-Encoding": accept_encoding, "Accept": accept}
        )
        assert reply.status == 200
        assert int(reply.headers["Content-Length"]) == len(reply.body)
        if gzipped:
            assert reply.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(reply.body) == body
        else:
            assert "Content-Encoding" not in reply.headers
            assert reply.body == body


async def test_head_has_headers_but_no_body(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(TEXT)}".encode() in head
    assert rest == b""
    reply = await request(server, method="HEAD")
    assert reply.status == 200
    assert reply.body == b""


async def test_landing_page(serve: Serve) -> None:
    server = await serve(landing_links=[("https://example.com/docs", "Docs <here>")])
    reply = await request(server, "/")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    page = reply.body.decode()
    assert "<title>Binance Futures Exporter</title>" in page
    assert "1.2.3" in page
    assert 'href="metrics"' in page
    assert 'href="healthz"' in page
    assert "Docs &lt;here&gt;" in page


async def test_healthz(serve: Serve) -> None:
    server = await serve()
    reply = await request(server, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")


async def test_unknown_path_is_404_and_query_is_ignored(serve: Serve) -> None:
    server = await serve()
    assert (await request(server, "/nope")).status == 404
    assert (await request(server, "/metrics/")).status == 404
    assert (await request(server, "/metrics?name[]=up&x=1")).body == TEXT


async def test_absolute_form_target(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"GET http://example.com/healthz?x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"\r\n\r\nok\n")


@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz"])
async def test_other_methods_are_405_with_allow(serve: Serve, path: str) -> None:
    server = await serve()
    for method in ("DELETE", "OPTIONS", "PUT"):
        reply = await request(server, path, method=method)
        assert reply.status == 405
        assert reply.headers["Allow"] == "GET, HEAD"


# -- connection handling --------------------------------------------------------------------


async def test_keep_alive_serves_two_requests_on_one_connection(serve: Serve) -> None:
    server = await serve()

    def two_requests() -> tuple[int, int, bool]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            first = conn.getresponse()
            first.read()
            sock = conn.sock
            conn.request("GET", "/healthz")
            second = conn.getresponse()
            second.read()
            return first.status, second.status, conn.sock is sock and sock is not None
        finally:
            conn.close()

    assert await asyncio.to_thread(two_requests) == (200, 200, True)


async def test_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\nok\nHTTP/1.1 404 Not Found\r\n" in raw


async def test_connection_close_is_honoured(serve: Serve) -> None:
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(2):
        raw = await reader.read()  # EOF without our half-close: the server closed
    writer.close()
    assert b"\r\nConnection: close\r\n" in raw
    assert raw.endswith(b"\r\n\r\nok\n")


async def test_http10_closes_unless_keep_alive_asked(serve: Serve) -> None:
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    async with asyncio.timeout(2):
        raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in raw

    raw = await exchange(server, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
    assert raw.count(b"Connection: keep-alive\r\n") == 2


async def test_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    server = await serve(idle_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    async with asyncio.timeout(3):
        raw = await reader.read()
    writer.close()
    assert raw.endswith(b"ok\n")
    assert time.monotonic() - started >= 0.25


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET metrics\x7f HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/x.y\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n folded: header\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in raw
    assert (await request(server, "/healthz")).status == 200


async def test_http2_and_later_get_505(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"GET /metrics HTTP/2.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 505 ")


@pytest.mark.parametrize(
    "data",
    [
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
    ],
    ids=["content-length", "chunked", "large-body"],
)
async def test_request_bodies_are_refused(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close\r\n" in raw


async def test_empty_content_length_zero_is_fine(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Many: aaaaaaaaaaaaaaaaaaaa\r\n" * 1000 + b"\r\n",
        b"GET /" + b"m" * 20000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["huge-header", "many-headers", "huge-target"],
)
async def test_oversized_head_gets_431(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 431 ")
    assert (await request(server)).status == 200


async def test_slowloris_is_cut_off_and_does_not_block_scrapes(serve: Serve) -> None:
    server = await serve(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
    started = time.monotonic()
    reply = await request(server)
    assert reply.status == 200
    assert time.monotonic() - started < 0.4
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # closed by the server
    assert time.monotonic() - started >= 0.4
    writer.close()


async def test_trickling_slowloris_is_cut_off_at_header_timeout(serve: Serve) -> None:
    server = await serve(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def trickle() -> None:
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        for byte in itertools.cycle(b"X-Padding: aaaa\r\n"):
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    started = time.monotonic()
    trickler = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(3):
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
    finally:
        trickler.cancel()
        writer.close()
    assert 0.4 <= time.monotonic() - started < 2


async def test_thousand_idle_connections_do_not_starve_scrapes(serve: Serve) -> None:
    server = await serve()
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", server.port) for _ in range(1000))
    )
    for i, (_, writer) in enumerate(connections):
        if i % 2:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost:")  # half a head
    started = time.monotonic()
    reply = await request(server)
    assert reply.status == 200
    assert reply.body == TEXT
    assert time.monotonic() - started < 2
    for _, writer in connections:
        writer.close()
    assert (await request(server)).status == 200


async def test_connections_beyond_the_limit_get_503(serve: Serve) -> None:
    server = await serve(max_connections=3)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    raw = await exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 503 ")
    for _, writer in held:
        writer.close()
    for _ in range(50):  # the server notices the closes asynchronously
        raw = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        if raw.startswith(b"HTTP/1.1 200 "):
            break
        await asyncio.sleep(0.02)
    assert raw.startswith(b"HTTP/1.1 200 ")


async def test_slow_reader_is_dropped_after_write_timeout(serve: Serve) -> None:
    size = 20_000_000  # far more than the kernel buffers on both sides hold
    server = await serve(Page.from_bodies(b"x" * size, b"# EOF\n"), write_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(1.0)  # read nothing: the server's write times out and it aborts
    assert (await request(server, "/healthz")).status == 200

    def read_all() -> int:
        received = 0
        with contextlib.suppress(ConnectionResetError), sock:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        return received

    assert await asyncio.to_thread(read_all) < size


async def test_stop_closes_open_connections_promptly() -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: PAGE)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"ok\n")  # now an idle keep-alive connection
    async with asyncio.timeout(1):
        await server.stop()
        assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


async def test_dual_stack_host_binds_ipv4_too() -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 here")
    server = MetricsServer("::", 0, lambda: PAGE)
    await server.start()
    try:
        assert server.url == f"http://[::]:{server.port}"
        assert (await request(server, "/healthz")).status == 200  # over 127.0.0.1
    finally:
        await server.stop()


async def test_ipv6_loopback() -> None:
    try:
        server = MetricsServer("::1", 0, lambda: PAGE)
        await server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.url == f"http://[::1]:{server.port}"
        reader, writer = await asyncio.open_connection("::1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(2):
            assert (await reader.read()).endswith(b"\r\n\r\nok\n")
        writer.close()
    finally:
        await server.stop()


# -- hostile bytes, property-based ----------------------------------------------------------


@contextmanager
def server_in_thread(**kwargs: object) -> Iterator[MetricsServer]:
    """A MetricsServer on its own event loop in a thread, for synchronous clients."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = MetricsServer("127.0.0.1", 0, lambda: PAGE, **kwargs)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _send_and_read_all(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server already answered and closed
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


_HTTPISH = st.lists(
    st.sampled_from(
        [
            b"GET",
            b"HEAD",
            b"POST",
            b" ",
            b"/metrics",
            b"/",
            b"?x=\xff",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/9.9",
            b"\r\n",
            b"\n",
            b"\r",
            b":",
            b"Host",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Content-Length",
            b"Transfer-Encoding: chunked",
            b"Accept-Encoding: gzip;q=",
            b"Authorization: Basic ",
            b"0",
            b"7",
            b"\x00",
            b"\xff\xfe",
            b"\t",
        ]
    ),
    max_size=40,
).map(b"".join)


def test_random_request_heads_never_break_the_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.http")
    with server_in_thread(header_timeout=2.0) as server:

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(st.one_of(st.binary(max_size=600), _HTTPISH))
        def answers_or_closes(data: bytes) -> None:
            raw = _send_and_read_all(server.port, data)
            assert raw == b"" or raw.startswith(b"HTTP/1.1 ")

        answers_or_closes()
        reply = _request_sync(server.port, "/metrics", "GET", {}, None)
        assert (reply.status, reply.body) == (200, TEXT)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- TLS ---------------------------------------------------------------------------------------


@dataclass
class Pki:
    server_ca: trustme.CA
    client_ca: trustme.CA
    directory: Path

    def web_config(self, extra: str = "") -> WebConfig:
        path = self.directory / "web.yml"
        path.write_text(
            f"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}"
        )
        return load_web_config(path)

    def client_context(self, *, with_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if with_cert:
            self.client_ca.issue_cert("prometheus@example.com").configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert = server_ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(directory / "server.pem")
    cert.private_key_pem.write_to_path(directory / "server.key")
    client_ca.cert_pem.write_to_path(directory / "clients-ca.pem")
    return Pki(server_ca, client_ca, directory)


async def test_https(serve: Serve, pki: Pki) -> None:
    server = await serve(web_config=pki.web_config())
    assert server.url.startswith("https://127.0.0.1:")
    reply = await request(server, context=pki.client_context(with_cert=False))
    assert (reply.status, reply.body) == (200, TEXT)


async def test_plain_http_to_https_port_does_not_break_it(serve: Serve, pki: Pki) -> None:
    server = await serve(web_config=pki.web_config())
    with pytest.raises((http.client.HTTPException, OSError)):
        await request(server)
    reply = await request(server, "/healthz", context=pki.client_context(with_cert=False))
    assert reply.status == 200


async def test_client_certificate_required(serve: Serve, pki: Pki) -> None:
    config = pki.web_config(
        "  client_ca_file: clients-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    server = await serve(web_config=config)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        await request(server, context=pki.client_context(with_cert=False))
    foreign = ssl.create_default_context()
    pki.server_ca.configure_trust(foreign)
    trustme.CA().issue_cert("mallory@example.com").configure_cert(foreign)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        await request(server, context=foreign)
    reply = await request(server, context=pki.client_context(with_cert=True))
    assert (reply.status, reply.body) == (200, TEXT)


# -- basic auth -------------------------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record the outcome of every bcrypt verification the server runs."""
    outcomes: list[bool] = []
    real = exporter.http._verify

    def recording(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
        outcomes.append(real(password, hashed, dummy))
        return outcomes[-1]

    monkeypatch.setattr(exporter.http, "_verify", recording)
    return outcomes


async def test_basic_auth(
    serve: Serve, verifications: list[bool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.http")
    server = await serve(web_config=WebConfig(basic_auth_users={"prometheus": HASH}))

    reply = await request(server)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="binance-futures-exporter"'
    assert reply.body == b"Unauthorized\n"
    assert verifications == []

    for headers in (
        basic("prometheus", "wrong"),
        basic("nobody", PASSWORD),
        basic("prometheus", PASSWORD + "x" * 80),
    ):
        assert (await request(server, headers=headers)).status == 401
    assert verifications == [False, False, False]  # the unknown user cost a bcrypt too

    for value in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        assert (await request(server, headers={"Authorization": value})).status == 401

    for path in ("/metrics", "/"):
        assert (await request(server, path, headers=basic("prometheus", PASSWORD))).status == 200
    assert verifications == [False, False, False, True]  # the second success came from cache
    assert (await request(server, "/nope", headers=basic("prometheus", PASSWORD))).status == 404
    assert (await request(server, "/healthz")).status == 200

    log = caplog.text
    assert "user 'prometheus'" in log
    assert "nobody" not in log
    assert PASSWORD not in log
    assert "Basic" not in log


def test_unknown_user_is_checked_against_an_equally_costly_dummy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    costly = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=6))
    dummy = exporter.http._dummy_hash([HASH, costly])
    assert dummy.startswith(b"$2b$06$")
    checked: list[bytes] = []
    monkeypatch.setattr(
        exporter.http.bcrypt, "checkpw", lambda password, hashed: checked.append(hashed) or True
    )
    assert exporter.http._verify(b"pw", None, dummy) is False
    assert checked == [dummy]


def test_dummy_hash_is_a_valid_bcrypt_hash() -> None:
    assert bcrypt.checkpw(b"", exporter.http._dummy_hash([HASH])) is False
