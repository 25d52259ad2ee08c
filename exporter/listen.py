"""The listening sockets of the HTTP server, and what to say when one cannot be bound.

Which sockets a listen address means:

- ``""`` (``:10317``, "every interface") binds ``::`` dual-stack, IPv4 mapped
  into IPv6, as Go exporters do, so IPv4 and IPv6 clients both reach it; where
  the system has no IPv6 (or no dual-stack sockets) it binds ``0.0.0.0``;
- ``"::"`` binds IPv6 and, where the system allows, IPv4 on the same socket;
- ``"0.0.0.0"`` or another literal address binds exactly that address;
- a host name binds every address it resolves to (with port 0 each gets its
  own ephemeral port).

When binding fails, :func:`listen_error_message` turns the error into one line
that says what to do; for a port in use it names the process holding it where
Linux' ``/proc`` tells (best effort: another user's processes are not visible
without privileges, another network namespace never).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

from exporter.messages import escape_controls

__all__ = ["bind_listeners", "display_address", "listen_error_message"]

_LISTEN_STATE = "0A"  # TCP_LISTEN in /proc/net/tcp
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)
_MAX_HOLDERS = 3


async def bind_listeners(host: str, port: int, *, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host``:``port`` (see the module docstring).

    Raises OSError (``socket.gaierror`` for a name that does not resolve). A host
    name is resolved off the event loop.
    """
    if host == "":
        try:
            sockets = [_dual_stack(port, backlog)] if socket.has_dualstack_ipv6() else []
        except OSError as err:
            if err.errno not in _NO_IPV6:
                raise
            sockets = []
        return sockets or [_server(("0.0.0.0", port), socket.AF_INET, backlog)]
    if host == "::" and socket.has_dualstack_ipv6():
        return [_dual_stack(port, backlog)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets = []
    try:
        for family, address in dict.fromkeys((info[0], info[4]) for info in infos):
            sockets.append(_server(address, family, backlog))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def display_address(host: str, port: int) -> str:
    """``host:port`` for messages: ``*`` for every interface, IPv6 in brackets."""
    shown = "*" if host == "" else f"[{host}]" if ":" in host else host
    return f"{escape_controls(shown)}:{port}"


def listen_error_message(err: OSError, host: str, port: int) -> str:
    """One line saying why ``host``:``port`` could not be bound and what to do instead."""
    where = display_address(host, port)
    advice = "choose another address with --listen HOST:PORT (or the listen key)"
    if isinstance(err, socket.gaierror):
        reason = escape_controls(err.strerror or str(err))
        return f"cannot listen on {where}: the name does not resolve ({reason}); {advice}"
    if err.errno == errno.EADDRINUSE:
        holders = _port_holders(port)
        who = ", ".join(f"pid {pid} ({escape_controls(name)})" for pid, name in holders)
        by = f"by {who}" if who else "by another process"
        return f"cannot listen on {where}: the port is already in use ({by}); {advice}"
    if err.errno == errno.EACCES:
        need = (
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if 0 < port < 1024 else ""
        )
        return f"cannot listen on {where}: permission denied{need}; {advice}"
    if err.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no interface of this machine has that address; {advice}"
    reason = escape_controls(err.strerror or str(err))
    return f"cannot listen on {where}: {reason}; {advice}"


def _dual_stack(port: int, backlog: int) -> socket.socket:
    sock = socket.create_server(
        ("::", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True
    )
    sock.setblocking(False)
    return sock


def _server(address: tuple[object, ...], family: int, backlog: int) -> socket.socket:
    # create_server sets SO_REUSEADDR, and IPV6_V6ONLY for IPv6 (one family per socket).
    sock = socket.create_server(address, family=family, backlog=backlog)  # type: ignore[arg-type]
    sock.setblocking(False)
    return sock


def _port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command name) of processes with a listening TCP socket on ``port``; best effort."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    holders: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            if _holds_any(entry.path, inodes):
                holders.append((int(entry.name), _command_name(entry.path)))
                if len(holders) >= _MAX_HOLDERS:
                    break
    return holders


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as file:
                next(file, None)  # the header
                for line in file:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == _LISTEN_STATE:
                        local_port = int(fields[1].rpartition(":")[2], 16)
                        if local_port == port and fields[9] != "0":
                            inodes.add(fields[9])
        except (OSError, ValueError):
            continue
    return inodes


def _holds_any(process: str, inodes: set[str]) -> bool:
    try:
        descriptors = os.scandir(f"{process}/fd")
    except OSError:  # another user's process, or gone
        return False
    with descriptors:
        for fd in descriptors:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _command_name(process: str) -> str:
    try:
        with open(f"{process}/comm", encoding="utf-8", errors="replace") as file:
            return file.read().strip() or "?"
    except OSError:
        return "?"

