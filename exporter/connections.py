"""Which HTTP connections the server keeps when a new one arrives: caps and eviction.

A connection is either *waiting* on its client (a TLS handshake, a request head
that has not fully arrived, an idle keep-alive connection) or *busy* (its request
is being answered). Only waiting connections cost the server nothing to drop:
the client has nothing outstanding, and a well-behaved one (Prometheus, a
browser) simply reconnects.

When a connection arrives:

1. if its peer already has ``max_per_peer`` connections, the peer's own
   longest-waiting connection is closed to make room; a peer is an IPv4
   address or an IPv6 /64 (one host usually owns a whole /64);
2. else, if ``max_total`` connections are open, the longest-waiting connection
   of any peer is closed;
3. if there is nothing to close (every candidate is busy), the new connection
   is refused (the server answers 503).

So ~1,000 idle connections from one client cannot lock out a scrape: they are
capped per peer, and beyond the total cap the oldest idle one gives way, where
refusing the newcomer (the old behaviour) answered every scrape with 503.
Busy connections are bounded in time by the server's own deadlines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ConnectionTable", "peer_key"]

T = TypeVar("T", bound=Hashable)


def peer_key(host: str) -> str:
    """The unit the per-peer cap counts: an IPv4 address or an IPv6 /64 prefix.

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, seen on a dual-stack
    socket) count as their IPv4 address; IPv6 loopback stays ``::1``.
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if not address.is_loopback:
            return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionTable(Generic[T]):
    """Open connections by state and peer; decides admissions (see the module docstring)."""

    def __init__(self, max_total: int, max_per_peer: int) -> None:
        if max_total < 1 or max_per_peer < 1:
            raise ValueError("connection caps must be at least 1")
        self._max_total = max_total
        self._max_per_peer = max_per_peer
        self._peer: dict[T, str] = {}
        # Waiting connections in the order they started waiting: oldest first.
        self._waiting: dict[T, None] = {}
        self._waiting_by_peer: dict[str, dict[T, None]] = {}
        self._count_by_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._peer)

    def count(self, peer: str) -> int:
        """How many connections ``peer`` has open."""
        return self._count_by_peer.get(peer, 0)

    def admit(self, item: T, peer: str) -> list[T] | None:
        """Add ``item`` (waiting) for ``peer``; return the connections to close first.

        None means the caps are reached and nothing can be closed: refuse ``item``.
        Returned connections are already removed from the table.
        """
        if self.count(peer) >= self._max_per_peer:
            victim = next(iter(self._waiting_by_peer.get(peer, ())), None)
            if victim is None:
                return None
        elif len(self._peer) >= self._max_total:
            victim = next(iter(self._waiting), None)
            if victim is None:
                return None
        else:
            victim = None
        victims = []
        if victim is not None:
            self.remove(victim)
            victims.append(victim)
        self._peer[item] = peer
        self._count_by_peer[peer] = self._count_by_peer.get(peer, 0) + 1
        self.waiting(item)
        return victims

    def oldest_waiting(self) -> T | None:
        """Remove and return the longest-waiting connection (to free a descriptor), if any."""
        victim = next(iter(self._waiting), None)
        if victim is not None:
            self.remove(victim)
        return victim

    def waiting(self, item: T) -> None:
        """``item`` now waits on its client (it becomes the newest waiting connection)."""
        peer = self._peer.get(item)
        if peer is None:
            return
        self._unwait(item, peer)
        self._waiting[item] = None
        self._waiting_by_peer.setdefault(peer, {})[item] = None

    def busy(self, item: T) -> None:
        """``item`` is being answered: it must not be closed to make room."""
        peer = self._peer.get(item)
        if peer is not None:
            self._unwait(item, peer)

    def remove(self, item: T) -> None:
        """Forget ``item`` (closed); a no-op if it is not in the table."""
        peer = self._peer.pop(item, None)
        if peer is None:
            return
        self._unwait(item, peer)
        left = self._count_by_peer[peer] - 1
        if left:
            self._count_by_peer[peer] = left
        else:
            del self._count_by_peer[peer]

    def _unwait(self, item: T, peer: str) -> None:
        self._waiting.pop(item, None)
        by_peer = self._waiting_by_peer.get(peer)
        if by_peer is not None:
            by_peer.pop(item, None)
            if not by_peer:
                del self._waiting_by_peer[peer]
