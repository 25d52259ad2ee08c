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
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.basicauth
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Page
from exporter.http import MetricsServer
from exporter.webconfig import WebConfig, load_web_config
from tests.support import serve_page, wait_for

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
        server = MetricsServer("127.0.0.1", 0, serve_page(page), version="1.2.3", **kwargs)
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


async def connect(
    server: MetricsServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection from ``source`` (any 127.0.0.0/8 address: another peer)."""
    return await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))


async def idle_connection(
    server: MetricsServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has been answered once and now idles in keep-alive."""
    reader, writer = await connect(server, source)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        await reader.readuntil(b"ok\n")
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (EOF or reset), waiting up to 5 s."""
    try:
        async with asyncio.timeout(5):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a /healthz request on this (idle) connection is answered with 200."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        async with asyncio.timeout(5):
            return (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200 ")
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return False


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


async def test_default_landing_page(serve: Serve) -> None:
    server = await serve()
    reply = await request(server, "/")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    page = reply.body.decode()
    assert "<title>Binance Futures Exporter</title>" in page
    assert "1.2.3" in page
    assert 'href="metrics"' in page
    assert 'href="healthz"' in page


async def test_landing_page_is_built_per_request(serve: Serve) -> None:
    calls: list[int] = []

    def landing() -> bytes:
        calls.append(1)
        return f"<p>call {len(calls)}</p>".encode()

    server = await serve(landing=landing)
    assert (await request(server, "/")).body == b"<p>call 1</p>"
    assert (await request(server, "/", method="HEAD")).body == b""
    assert (await request(server, "/")).body == b"<p>call 3</p>"
    assert (await request(server, "/metrics")).status == 200
    assert len(calls) == 3


async def test_healthz(serve: Serve) -> None:
    server = await serve()
    reply = await request(server, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")


async def test_unknown_path_is_404_and_query_is_ignored(serve: Serve) -> None:
    server = await serve()
    assert (await request(server, "/nope")).status == 404
    assert (await request(server, "/metrics/")).status == 404
    assert (await request(server, "/metrics?name[]=up&x=1")).body == TEXT


@pytest.mark.parametrize("scheme", [b"http", b"HTTP", b"Https", b"hTTp"])
async def test_absolute_form_target_with_any_case_of_scheme(serve: Serve, scheme: bytes) -> None:
    server = await serve()
    raw = await exchange(
        server, b"GET " + scheme + b"://example.com/healthz?x HTTP/1.1\r\nHost: x\r\n\r\n"
    )
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


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"])
async def test_http10_gets_one_answer_and_a_close(serve: Serve, connection: bytes) -> None:
    """h11 does not keep HTTP/1.0 connections alive, even when asked to (HTTP/1.0 is rare)."""
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n" + connection + b"\r\n")
    writer.write(b"GET /healthz HTTP/1.0\r\n" + connection + b"\r\n")
    async with asyncio.timeout(2):
        raw = await reader.read()  # EOF without our half-close: the server closed
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in raw
    assert raw.count(b"HTTP/1.1 200 OK") == 1
    assert b"\r\nConnection: close\r\n" in raw


async def test_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    server = await serve(idle_timeout=0.3)
    reader, writer = await idle_connection(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # still open: kept alive
    async with asyncio.timeout(3):
        raw = await reader.read()  # then closed by the server once idle
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"ok\n")


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\nHost: x\r\n\r\n",
        b"GET /metrics\r\nHost: x\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET metrics\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/x.y\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n folded: header\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in raw
    assert (await request(server, "/healthz")).status == 200


@pytest.mark.parametrize(
    "data",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nAccept: */*\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    ],
    ids=["no-headers", "no-host", "two-hosts", "same-host-twice"],
)
async def test_http11_needs_exactly_one_host(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in raw


async def test_http10_needs_no_host(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("version", [b"0.9", b"1.2", b"1.9", b"2.0", b"3.0", b"9.9"])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
async def test_versions_other_than_10_and_11_get_505(
    serve: Serve, version: bytes, method: bytes
) -> None:
    server = await serve()
    raw = await exchange(server, method + b" /metrics HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert b"Connection: close\r\n" in raw
    assert raw.endswith(b"\r\n\r\n") == (method == b"HEAD")  # no body for HEAD


@pytest.mark.parametrize(
    "data",
    [
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx",
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxx",
    ],
    ids=["content-length", "chunked", "large-body", "repeated-equal-length", "head"],
)
async def test_request_bodies_are_refused(serve: Serve, data: bytes) -> None:
    server = await serve()
    raw = await exchange(server, data)
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close\r\n" in raw


async def test_empty_content_length_zero_is_fine(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_empty_lines_before_the_request_line_are_ignored(serve: Serve) -> None:
    server = await serve()
    raw = await exchange(server, b"\r\n\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
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
    reply = await request(server)
    assert reply.status == 200
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # closed by the server, without an answer
    writer.close()


async def test_trickling_slowloris_is_cut_off_at_header_timeout(serve: Serve) -> None:
    server = await serve(header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def trickle() -> None:
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        for byte in itertools.cycle(b"X-Padding: aaaa\r\n"):
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    trickler = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(3):  # the trickle never ends: only the deadline can end it
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""  # closed without an answer: not a parse error
    finally:
        trickler.cancel()
        writer.close()


async def test_thousand_idle_connections_do_not_starve_scrapes(serve: Serve) -> None:
    server = await serve()
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", server.port) for _ in range(1000))
    )
    for i, (_, writer) in enumerate(connections):
        if i % 2:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost:")  # half a head
    reply = await request(server)
    assert reply.status == 200
    assert reply.body == TEXT
    for _, writer in connections:
        writer.close()
    assert (await request(server)).status == 200


# -- connection floods: per-peer cap and eviction (max 8, 4 per peer) ------------------------------


async def test_a_peer_beyond_its_cap_loses_its_oldest_idle_connection(serve: Serve) -> None:
    server = await serve(max_connections=8, max_connections_per_peer=4)
    flood = [await idle_connection(server, "127.0.0.2") for _ in range(12)]
    for reader, _ in flood[:8]:
        assert await closed_by_server(reader)
    for reader, writer in flood[8:]:
        assert await answers(reader, writer)
    assert (await request(server)).status == 200  # another peer is not affected
    for _, writer in flood:
        writer.close()


async def test_a_full_server_closes_the_longest_idle_connection_for_a_scrape(
    serve: Serve,
) -> None:
    server = await serve(max_connections=8, max_connections_per_peer=4)
    sources = ["127.0.0.2"] * 4 + ["127.0.0.3"] * 4
    held = [await idle_connection(server, source) for source in sources]
    reply = await request(server)  # a ninth connection, from 127.0.0.1
    assert (reply.status, reply.body) == (200, TEXT)
    assert await closed_by_server(held[0][0])  # the one idle the longest
    assert await answers(*held[1])
    assert await answers(*held[4])
    for _, writer in held:
        writer.close()


async def test_renewed_idle_connections_never_lock_out_scrapes(serve: Serve) -> None:
    """Issue 13.3: one client renewing idle connections made every scrape a 503."""
    server = await serve(max_connections=8, max_connections_per_peer=4)
    flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for round_ in range(3):
        for source in ("127.0.0.2", "127.0.0.3"):
            flood += [await connect(server, source) for _ in range(4)]  # silent, never a byte
        reply = await request(server)
        assert (reply.status, reply.body) == (200, TEXT), round_
    for _, writer in flood:
        writer.close()


async def test_when_every_connection_is_busy_a_new_one_gets_503(
    serve: Serve, gated_verify: Gate
) -> None:
    server = await serve(
        web_config=WebConfig(basic_auth_users={"prometheus": HASH}),
        max_connections=2,
        max_connections_per_peer=4,
    )
    busy = []
    for _ in range(2):  # each waits for its password check: busy, not idle
        reader, writer = await connect(server)
        writer.write(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + basic("prometheus", "wrong")["Authorization"].encode()
            + b"\r\n\r\n"
        )
        busy.append((reader, writer))
    await wait_for(lambda: gated_verify.waiting == 2)
    raw = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert b"Connection: close\r\n" in raw
    gated_verify.set()
    for reader, writer in busy:
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"Unauthorized\n")).startswith(b"HTTP/1.1 401 ")
        writer.close()


async def test_slow_reader_is_dropped_after_write_timeout(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.http")
    size = 20_000_000  # far more than the kernel buffers on both sides hold
    server = await serve(Page.from_bodies(b"x" * size, b"# EOF\n"), write_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    # Read nothing: the server's write times out and it drops the connection.
    await wait_for(lambda: "TimeoutError" in caplog.text)
    assert (await request(server, "/healthz")).status == 200

    def read_all() -> int:
        received = 0
        with contextlib.suppress(ConnectionResetError), sock:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        return received

    assert await asyncio.to_thread(read_all) < size


async def test_stop_closes_open_connections_promptly() -> None:
    server = MetricsServer("127.0.0.1", 0, serve_page(PAGE))
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
    server = MetricsServer("::", 0, serve_page(PAGE))
    await server.start()
    try:
        assert server.url == f"http://[::]:{server.port}"
        assert (await request(server, "/healthz")).status == 200  # over 127.0.0.1
    finally:
        await server.stop()


async def test_ipv6_loopback() -> None:
    try:
        server = MetricsServer("::1", 0, serve_page(PAGE))
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
    server = MetricsServer("127.0.0.1", 0, serve_page(PAGE), **kwargs)
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


async def test_tls_handshakes_count_against_the_caps_from_accept(serve: Serve, pki: Pki) -> None:
    """Issue 13.3: connections stuck before or in the TLS handshake hold a slot too."""
    server = await serve(web_config=pki.web_config(), max_connections=2, max_connections_per_peer=2)
    silent = [await connect(server, "127.0.0.2") for _ in range(2)]  # never say ClientHello
    reply = await request(server, "/healthz", context=pki.client_context(with_cert=False))
    assert reply.status == 200  # admitted by closing the silent connection waiting the longest
    assert await closed_by_server(silent[0][0])
    for _, writer in silent:
        writer.close()


async def test_tls_handshake_has_the_header_deadline(serve: Serve, pki: Pki) -> None:
    server = await serve(web_config=pki.web_config(), header_timeout=0.3)
    reader, writer = await connect(server)
    writer.write(b"\x16\x03\x01")  # the start of a TLS record, and then nothing
    assert await closed_by_server(reader)
    writer.close()


ACCEPT_ERROR_SERVER = """
import asyncio, logging, os, resource, sys
from exporter.http import MetricsServer
from exporter.exposition import Page
from tests.support import serve_page

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

async def main():
    page = Page.from_bodies(b"up 1\\n", b"up 1\\n# EOF\\n")
    server = MetricsServer("127.0.0.1", 0, serve_page(page),
                           max_connections=1000, max_connections_per_peer=1000)
    await server.start()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    print(server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_out_of_descriptors_accept_errors_are_a_rate_and_scrapes_go_on() -> None:
    """Issue 13.4: each failed accept() was logged (45 MB in 10 s); now one line, and the
    server frees a descriptor by closing the connection that waited longest."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ACCEPT_ERROR_SERVER,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        async with asyncio.timeout(20):
            port = int(await child.stdout.readline())
            flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
            reply = await asyncio.to_thread(_request_sync, port, "/metrics", "GET", {}, None)
            assert (reply.status, reply.body) == (200, b"up 1\n")
            for _, writer in flood:
                writer.close()
    finally:
        child.terminate()
        _, stderr = await child.communicate()
    log = stderr.decode().splitlines()
    failures = [line for line in log if "accept" in line]
    assert failures == [
        "ERROR accept() failed: Too many open files (more are summarised every minute)"
    ], log
    assert not [line for line in log if "Traceback" in line or "exception" in line.lower()]


# -- basic auth -------------------------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record the outcome of every bcrypt verification the server runs."""
    outcomes: list[bool] = []
    real = exporter.basicauth._verify

    def recording(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
        outcomes.append(real(password, hashed, dummy))
        return outcomes[-1]

    monkeypatch.setattr(exporter.basicauth, "_verify", recording)
    return outcomes


class Gate(threading.Event):
    """Holds every bcrypt check until set (a bcrypt as slow as we like); counts the held."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.waiting += 1
        self.wait(10)


@pytest.fixture
def gated_verify(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    real = exporter.basicauth._verify

    def gated(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
        gate.enter()
        return real(password, hashed, dummy)

    monkeypatch.setattr(exporter.basicauth, "_verify", gated)
    yield gate
    gate.set()  # never leave a worker thread blocked


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

    failures = [r.getMessage() for r in caplog.records if "basic auth failed" in r.getMessage()]
    assert failures == [  # the first failure in full, the rest counted
        "basic auth failed for user 'prometheus' from 127.0.0.1 "
        "(more are summarised every minute)"
    ]
    await server.stop()  # flushes the count
    summaries = [r.getMessage() for r in caplog.records if "failed basic-auth" in r.getMessage()]
    assert summaries == ["2 failed basic-auth attempts from 1 peer in the last minute"]
    log = caplog.text
    assert "nobody" not in log
    assert PASSWORD not in log
    assert "Basic" not in log


async def test_password_checks_are_bounded_and_a_correct_credential_is_answered(
    serve: Serve, gated_verify: Gate
) -> None:
    """Issue 13.5: a new correct credential waited 14.6 s behind hundreds of wrong ones."""
    server = await serve(
        web_config=WebConfig(basic_auth_users={"prometheus": HASH}),
        auth_max_pending=4,
        auth_max_pending_per_peer=2,
    )

    async def attempt(source: str, password: str) -> int:
        reader, writer = await connect(server, source)
        header = basic("prometheus", password)["Authorization"].encode()
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\n\r\n")
        try:
            async with asyncio.timeout(10):
                status_line = await reader.readline()
        finally:
            writer.close()
        return int(status_line.split()[1])

    attacker = [asyncio.create_task(attempt("127.0.0.2", f"guess{i}")) for i in range(10)]
    await wait_for(lambda: sum(task.done() for task in attacker) == 8)  # refused at once
    assert [task.result() for task in attacker if task.done()] == [503] * 8
    assert gated_verify.waiting == 2  # the two admitted guesses hold both bcrypt threads

    scrape = asyncio.create_task(attempt("127.0.0.3", PASSWORD))  # admitted: 3 of 4 slots
    other = asyncio.create_task(attempt("127.0.0.4", "guess"))  # admitted: 4 of 4 slots
    await wait_for(lambda: sum(pending_checks(server).values()) == 4)
    assert await attempt("127.0.0.5", "guess") == 503  # every slot taken: refused, not queued
    gated_verify.set()
    assert await scrape == 200
    assert await other == 401
    assert sorted(await asyncio.gather(*attacker)) == [401] * 2 + [503] * 8


def pending_checks(server: MetricsServer) -> dict[str, int]:
    """Pending password checks per peer (the server's own accounting)."""
    return server._auth._pending  # type: ignore[attr-defined]


async def test_busy_answer_says_retry(serve: Serve, gated_verify: Gate) -> None:
    server = await serve(
        web_config=WebConfig(basic_auth_users={"prometheus": HASH}),
        auth_max_pending=1,
    )
    first = asyncio.create_task(request(server, headers=basic("prometheus", "a")))
    await wait_for(lambda: gated_verify.waiting == 1)
    reply = await request(server, headers=basic("prometheus", PASSWORD))
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    gated_verify.set()
    assert (await first).status == 401
    assert (await request(server, headers=basic("prometheus", PASSWORD))).status == 200


def test_unknown_user_is_checked_against_a_dummy_of_the_configured_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    costly = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=6))
    auth = exporter.basicauth.BasicAuth({"alice": costly})
    dummy = auth._dummy  # type: ignore[attr-defined]
    assert dummy.startswith(b"$2b$06$")
    checked: list[bytes] = []
    monkeypatch.setattr(
        exporter.basicauth.bcrypt,
        "checkpw",
        lambda password, hashed: checked.append(hashed) or True,
    )
    assert exporter.basicauth._verify(b"pw", None, dummy) is False
    assert checked == [dummy]


def test_mixed_bcrypt_costs_are_refused() -> None:
    costly = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5))
    with pytest.raises(ValueError, match="same bcrypt cost"):
        exporter.basicauth.BasicAuth({"alice": HASH, "bob": costly})


def test_dummy_hash_is_a_valid_bcrypt_hash() -> None:
    auth = exporter.basicauth.BasicAuth({"alice": HASH})
    assert bcrypt.checkpw(b"", auth._dummy) is False  # type: ignore[attr-defined]
