"""ConnectionTable: per-peer and total caps, eviction of the longest-waiting connection."""

from __future__ import annotations

import pytest

from exporter.connections import ConnectionTable, peer_key


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::9", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::1"),
    ("not an address", "not an address"),
])
def test_peer_key(host: str, key: str) -> None:
    assert peer_key(host) == key


def test_admits_under_the_caps() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=3, max_per_peer=2)
    assert table.admit("a1", "a") == []
    assert table.admit("a2", "a") == []
    assert table.admit("b1", "b") == []
    assert len(table) == 3 and table.count("a") == 2 and table.count("b") == 1


def test_a_peer_at_its_cap_gives_up_its_own_longest_waiting_connection() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=10, max_per_peer=2)
    for item, peer in (("a1", "a"), ("b1", "b"), ("a2", "a")):
        table.admit(item, peer)
    assert table.admit("a3", "a") == ["a1"]  # not b1, which waited longer
    assert table.count("a") == 2 and len(table) == 3


def test_a_full_table_gives_up_the_longest_waiting_connection_of_any_peer() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=3, max_per_peer=3)
    for item, peer in (("a1", "a"), ("b1", "b"), ("b2", "b")):
        table.admit(item, peer)
    assert table.admit("c1", "c") == ["a1"]
    assert table.count("a") == 0 and table.count("c") == 1 and len(table) == 3


def test_waiting_again_moves_a_connection_to_the_back() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=2, max_per_peer=2)
    table.admit("a1", "a")
    table.admit("a2", "a")
    table.busy("a1")
    table.waiting("a1")  # answered, idle again: now the newest waiting
    assert table.admit("a3", "a") == ["a2"]


def test_busy_connections_are_never_given_up() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=2, max_per_peer=2)
    table.admit("a1", "a")
    table.admit("b1", "b")
    table.busy("a1")
    assert table.admit("c1", "c") == ["b1"]
    table.busy("c1")
    assert table.admit("d1", "d") is None  # both busy: refuse the newcomer
    assert len(table) == 2
    table.busy("x")  # unknown items are ignored
    table.waiting("x")


def test_a_peer_whose_connections_are_all_busy_is_refused() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=10, max_per_peer=1)
    table.admit("a1", "a")
    table.busy("a1")
    assert table.admit("a2", "a") is None
    assert table.admit("b1", "b") == []


def test_remove_and_oldest_waiting() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=5, max_per_peer=5)
    for item in ("a1", "a2", "a3"):
        table.admit(item, "a")
    table.busy("a1")
    assert table.oldest_waiting() == "a2"
    table.remove("a3")
    table.remove("a3")  # idempotent
    assert table.oldest_waiting() is None  # a1 is busy
    assert len(table) == 1 and table.count("a") == 1
    table.remove("a1")
    assert len(table) == 0 and table.count("a") == 0


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectionTable(max_total=0, max_per_peer=1)
