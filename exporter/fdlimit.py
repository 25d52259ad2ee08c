"""File descriptor budget: raise the soft limit, size the HTTP connection cap below it.

Many systems start processes with a soft ``RLIMIT_NOFILE`` of 1024 and a much
higher hard limit. Every HTTP connection costs a descriptor, and so does every
Binance connection, DNS lookup and file the exporter opens; when they run out,
``accept()`` fails in a loop and connections to Binance fail too. So at start
the soft limit is raised to the hard limit (allowed without privileges), and the
HTTP server's connection cap is sized to leave a reserve for everything else.
"""

from __future__ import annotations

import contextlib
import resource
import sys

__all__ = ["BINANCE_FDS_PER_ACCOUNT", "FIXED_RESERVE", "connection_cap", "raise_fd_limit"]

# Per account: the WebSocket API connection and the user data stream, one
# descriptor each (a reconnect closes the old one first).
BINANCE_FDS_PER_ACCOUNT = 2
# Standard streams, the event loop's selector and self-pipe, listening sockets,
# DNS lookups, TLS and secret files being read, a log file: generous on purpose.
FIXED_RESERVE = 64
_NR_OPEN = "/proc/sys/fs/nr_open"  # Linux: the most a soft limit may be set to


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force.

    Never lowers it. Where the hard limit is "unlimited" the soft limit goes to
    the kernel's ceiling (Linux ``fs.nr_open``); an unlimited soft limit is
    returned as ``sys.maxsize``. If the system refuses, the old limit stays.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _kernel_ceiling()
    if target is not None and soft != resource.RLIM_INFINITY and target > soft:
        # A sandbox may forbid it: then the old limit stays.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def connection_cap(fd_limit: int, accounts: int, *, ceiling: int = 1024) -> int:
    """The most HTTP connections to serve at once under a descriptor limit of ``fd_limit``.

    Leaves ``BINANCE_FDS_PER_ACCOUNT`` per account plus ``FIXED_RESERVE``; at most
    ``ceiling`` (each connection also costs memory), at least 1. With a limit so
    low that the result is small the exporter still runs; a flood then makes the
    server evict idle connections sooner.
    """
    available = fd_limit - BINANCE_FDS_PER_ACCOUNT * accounts - FIXED_RESERVE
    return max(1, min(ceiling, available))


def _kernel_ceiling() -> int | None:
    try:
        with open(_NR_OPEN, encoding="ascii") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None
