"""BasicAuth on its own: decisions, the bound on pending checks, the credential cache."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator

import bcrypt
import pytest

import exporter.basicauth
from exporter.basicauth import AuthResult, BasicAuth
from tests.support import wait_for

PASSWORD = b"correct horse"
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4))


def header(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[bytes]]]:
    """Hold every bcrypt check until the event is set; list the passwords checked."""
    gate = threading.Event()
    checked: list[bytes] = []
    real = exporter.basicauth._verify

    def held(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
        checked.append(password)
        gate.wait(10)
        return real(password, hashed, dummy)

    monkeypatch.setattr(exporter.basicauth, "_verify", held)
    yield gate, checked
    gate.set()


async def test_without_users_everything_is_allowed() -> None:
    auth = BasicAuth({})
    assert not auth.required
    assert await auth.check(None, "192.0.2.1") is AuthResult.ALLOWED


@pytest.mark.parametrize("value", [
    None, "", "Basic", "Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),
])
async def test_malformed_headers_are_denied_without_a_bcrypt(
    value: str | None, checks: tuple[threading.Event, list[bytes]]
) -> None:
    auth = BasicAuth({"alice": HASH})
    assert await auth.check(value, "192.0.2.1") is AuthResult.DENIED
    assert checks[1] == []
    auth.close()


async def test_decisions_and_the_cache() -> None:
    auth = BasicAuth({"alice": HASH})
    assert await auth.check(header("alice", PASSWORD), "p") is AuthResult.ALLOWED
    assert await auth.check(header("alice", b"wrong"), "p") is AuthResult.DENIED
    assert await auth.check(header("bob", PASSWORD), "p") is AuthResult.DENIED
    # bcrypt reads 72 bytes; a longer password that starts with the right one is wrong
    long_hash = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=4))
    auth_long = BasicAuth({"carol": long_hash})
    assert await auth_long.check(header("carol", b"x" * 73), "p") is AuthResult.DENIED
    assert await auth_long.check(header("carol", b"x" * 72), "p") is AuthResult.ALLOWED
    auth.close()
    auth_long.close()


async def test_a_verified_credential_costs_no_further_bcrypt(
    checks: tuple[threading.Event, list[bytes]],
) -> None:
    gate, checked = checks
    gate.set()
    auth = BasicAuth({"alice": HASH})
    for _ in range(3):
        assert await auth.check(header("alice", PASSWORD), "p") is AuthResult.ALLOWED
    assert checked == [PASSWORD]
    assert await auth.check(header("alice", b"wrong"), "p") is AuthResult.DENIED
    assert await auth.check(header("alice", b"wrong"), "p") is AuthResult.DENIED
    assert checked == [PASSWORD, b"wrong", b"wrong"]  # failures are never cached
    auth.close()


async def test_pending_checks_are_bounded_per_peer_and_in_all(
    checks: tuple[threading.Event, list[bytes]],
) -> None:
    gate, _ = checks
    auth = BasicAuth({"alice": HASH}, max_pending=3, max_pending_per_peer=2)
    wrong = header("alice", b"wrong")
    held = [asyncio.create_task(auth.check(wrong, "a")) for _ in range(2)]
    await asyncio.sleep(0)
    assert await auth.check(wrong, "a") is AuthResult.BUSY  # the peer's share is taken
    held.append(asyncio.create_task(auth.check(header("alice", PASSWORD), "b")))
    await asyncio.sleep(0)
    assert await auth.check(wrong, "c") is AuthResult.BUSY  # every slot is taken
    gate.set()
    assert await asyncio.gather(*held) == [AuthResult.DENIED, AuthResult.DENIED,
                                           AuthResult.ALLOWED]
    assert await auth.check(wrong, "a") is AuthResult.DENIED  # slots are free again
    auth.close()


async def test_a_cancelled_check_holds_its_slot_until_the_thread_is_done(
    checks: tuple[threading.Event, list[bytes]],
) -> None:
    gate, checked = checks
    auth = BasicAuth({"alice": HASH}, max_pending=1)
    task = asyncio.create_task(auth.check(header("alice", b"wrong"), "a"))
    await wait_for(lambda: checked)  # the bcrypt thread is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the client is gone, the thread is not: the bound still counts it
    assert await auth.check(header("alice", PASSWORD), "b") is AuthResult.BUSY
    gate.set()
    await wait_for(lambda: not auth._pending)  # type: ignore[attr-defined]
    assert await auth.check(header("alice", PASSWORD), "b") is AuthResult.ALLOWED
    auth.close()
