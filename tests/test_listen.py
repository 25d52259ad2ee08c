"""Listening sockets: dual-stack for every interface, and one-line bind errors."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest

import exporter.listen
from exporter.exposition import Page
from exporter.http import MetricsServer
from exporter.listen import bind_listeners, display_address, listen_error_message
from tests.support import serve_page

PAGE = Page.from_bodies(b"up 1\n", b"up 1\n# EOF\n")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def healthz(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(5):
        raw = await reader.read()
    writer.close()
    return raw


async def test_every_interface_means_dual_stack() -> None:
    if not socket.has_dualstack_ipv6() or not ipv6_loopback():
        pytest.skip("no dual-stack IPv6 here")
    server = MetricsServer("", 0, serve_page(PAGE))
    await server.start()
    try:
        assert server.url == f"http://[::]:{server.port}"
        assert (await healthz("127.0.0.1", server.port)).endswith(b"ok\n")
        assert (await healthz("::1", server.port)).endswith(b"ok\n")
    finally:
        await server.stop()


@pytest.mark.parametrize("how", ["no-dual-stack", "ipv6-disabled"])
async def test_every_interface_falls_back_to_ipv4(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "no-dual-stack":
        monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: False)
    else:
        def no_ipv6(port: int, backlog: int) -> socket.socket:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

        monkeypatch.setattr(exporter.listen, "_dual_stack", no_ipv6)
    sockets = await bind_listeners("", 0, backlog=8)
    try:
        assert [(s.family, s.getsockname()[0]) for s in sockets] == [
            (socket.AF_INET, "0.0.0.0")
        ]
    finally:
        for sock in sockets:
            sock.close()


async def test_other_errors_binding_every_interface_are_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def in_use(port: int, backlog: int) -> socket.socket:
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: True)
    monkeypatch.setattr(exporter.listen, "_dual_stack", in_use)
    with pytest.raises(OSError) as caught:
        await bind_listeners("", 0, backlog=8)
    assert caught.value.errno == errno.EADDRINUSE


async def test_a_literal_address_binds_just_that() -> None:
    sockets = await bind_listeners("127.0.0.1", 0, backlog=8)
    try:
        assert len(sockets) == 1
        assert sockets[0].getsockname()[0] == "127.0.0.1"
        assert not sockets[0].getblocking()
    finally:
        sockets[0].close()


async def test_port_in_use_names_the_holder_and_the_fix() -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        with pytest.raises(OSError) as caught:
            await bind_listeners("127.0.0.1", port, backlog=8)
        message = listen_error_message(caught.value, "127.0.0.1", port)
    finally:
        holder.close()
    with open(f"/proc/{os.getpid()}/comm") as comm:
        name = comm.read().strip()
    assert message == (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (by pid {os.getpid()} "
        f"({name})); choose another address with --listen HOST:PORT (or the listen key)"
    )


def test_port_in_use_by_an_unknown_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter.listen, "_listening_inodes", lambda port: set())
    message = listen_error_message(OSError(errno.EADDRINUSE, "Address in use"), "", 10317)
    assert message.startswith("cannot listen on *:10317: the port is already in use (by another "
                              "process); choose another address with --listen")


@pytest.mark.parametrize(("err", "host", "port", "expected"), [
    (OSError(errno.EACCES, "Permission denied"), "", 80,
     "cannot listen on *:80: permission denied (ports below 1024 need root or "
     "CAP_NET_BIND_SERVICE); "),
    (OSError(errno.EACCES, "Permission denied"), "::1", 8080,
     "cannot listen on [::1]:8080: permission denied; "),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "192.0.2.1", 10317,
     "cannot listen on 192.0.2.1:10317: no interface of this machine has that address; "),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "example.invalid", 1,
     "cannot listen on example.invalid:1: the name does not resolve (Name or service not "
     "known); "),
    (OSError(errno.EMFILE, "Too many open files"), "a\nb", 1,
     "cannot listen on a\\nb:1: Too many open files; "),
])
def test_other_bind_errors(err: OSError, host: str, port: int, expected: str) -> None:
    advice = "choose another address with --listen HOST:PORT (or the listen key)"
    assert listen_error_message(err, host, port) == expected + advice


async def test_an_address_this_machine_does_not_have() -> None:
    with pytest.raises(OSError) as caught:
        await bind_listeners("192.0.2.1", 0, backlog=8)  # TEST-NET-1: bound locally, never routed
    assert "no interface of this machine has that address" in listen_error_message(
        caught.value, "192.0.2.1", 0)


def test_display_address() -> None:
    assert display_address("", 10317) == "*:10317"
    assert display_address("::", 1) == "[::]:1"
    assert display_address("localhost", 2) == "localhost:2"
