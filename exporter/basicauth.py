"""HTTP basic auth against the web config's bcrypt hashes, bounded and timing-safe.

bcrypt is slow on purpose (~60 ms at cost 10, ~250 ms at cost 12), which makes
three problems this module solves:

- **Bounded work.** Checks run on a small dedicated thread pool (never the
  default executor that DNS lookups share) and at most ``max_pending`` wait or
  run at once, at most ``max_pending_per_peer`` of them for one peer. A check
  beyond either bound is refused at once (:attr:`AuthResult.BUSY`, served as
  503) instead of queueing, so a correct new credential waits behind at most
  ``max_pending`` checks, never behind hundreds of wrong ones (unbounded, that
  was 14.6 s: past Prometheus' default 10 s scrape timeout), and one peer
  cannot take every slot.
- **No user enumeration by timing.** A request for an unknown user is checked
  against a dummy hash of the configured cost and the decision is made after
  the check, so known and unknown users cost the same. The web config refuses
  hashes of different costs (:mod:`exporter.webconfig`), so "the configured
  cost" is one number.
- **One bcrypt per credential, not per scrape.** Verified credentials are
  remembered as SHA-256 digests (never the password), so Prometheus, which
  sends the same credentials every scrape, pays one bcrypt in total.

Failed attempts are logged as a rate (:class:`~exporter.ratelog.RateLog`): the
first at once with the peer and whether the user exists, then one line a
minute with how many and from how many peers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from exporter.ratelog import RateLog
from exporter.webconfig import bcrypt_cost

__all__ = ["AuthResult", "BasicAuth"]

_log = logging.getLogger("exporter.http")

_MAX_PASSWORD = 72  # bcrypt ignores bytes beyond 72; a longer password never matches
_CACHE_MAX = 1024
# Salt and digest of a throwaway hash; the cost field is set to the configured cost.
_DUMMY_SALT_AND_DIGEST = b"wvx4mOOoHoFTMUX9B8qGgOotleDLMsu46tIHumUyih8PTn3M4K09O"


class AuthResult(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"  # answer 401
    BUSY = "busy"  # too many checks in progress: answer 503, the client retries


class BasicAuth:
    """Checks ``Authorization`` headers against ``users`` (user name -> bcrypt hash)."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        max_pending: int = 8,
        max_pending_per_peer: int = 2,
        threads: int = 2,
    ) -> None:
        costs = {bcrypt_cost(hashed) for hashed in users.values()}
        if len(costs) > 1:
            raise ValueError("basic auth hashes must all have the same bcrypt cost")
        self._users = dict(users)
        self._dummy = _dummy_hash(costs.pop() if costs else 4)
        self._max_pending = max_pending
        self._max_pending_per_peer = max_pending_per_peer
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[str, int] = {}
        self._pending_total = 0
        self._verified: set[bytes] = set()
        self._failures = RateLog(_log, "failed basic-auth attempts")
        self._refusals = RateLog(_log, "basic-auth checks refused as too many were in progress")

    @property
    def required(self) -> bool:
        """Whether any user is configured; without users every request is allowed."""
        return bool(self._users)

    async def check(self, authorization: str | None, peer: str) -> AuthResult:
        """Decide on an ``Authorization`` header value from ``peer`` (an address or prefix)."""
        if not self._users:
            return AuthResult.ALLOWED
        credentials = _credentials(authorization)
        if credentials is None:
            return AuthResult.DENIED
        user, password = credentials
        user_bytes = user.encode()
        digest = hashlib.sha256(b"%d:%s:%s" % (len(user_bytes), user_bytes, password)).digest()
        if digest in self._verified:
            return AuthResult.ALLOWED
        if (
            self._pending_total >= self._max_pending
            or self._pending.get(peer, 0) >= self._max_pending_per_peer
        ):
            self._refusals.note(
                "basic auth: %d checks in progress, refusing one from %s",
                self._pending_total, peer, peer=peer,
            )
            return AuthResult.BUSY
        hashed = self._users.get(user)
        if await self._verify(peer, password, hashed):
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified.add(digest)
            return AuthResult.ALLOWED
        self._failures.note(
            "basic auth failed for %s from %s",
            f"user {user!r}" if hashed is not None else "an unknown user",
            peer,
            peer=peer,
        )
        return AuthResult.DENIED

    def close(self) -> None:
        """Flush the failure counts to the log and stop the worker threads."""
        self._failures.close()
        self._refusals.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _verify(self, peer: str, password: bytes, hashed: bytes | None) -> bool:
        """One bcrypt on the worker threads, counted as pending until the thread is done.

        The check is shielded: if the request is cancelled (the client went away)
        the thread still runs to the end, and its slot is released only then, so
        the bound counts real work.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="bcrypt")
        self._pending[peer] = self._pending.get(peer, 0) + 1
        self._pending_total += 1
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, _verify, password, hashed, self._dummy
        )
        future.add_done_callback(lambda _: self._release(peer))
        return await asyncio.shield(future)

    def _release(self, peer: str) -> None:
        self._pending_total -= 1
        left = self._pending[peer] - 1
        if left:
            self._pending[peer] = left
        else:
            del self._pending[peer]


def _verify(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
    """Spend exactly one bcrypt whatever the input, then decide."""
    valid = hashed is not None and len(password) <= _MAX_PASSWORD
    try:
        matches = bcrypt.checkpw(
            password[:_MAX_PASSWORD], hashed if hashed is not None and valid else dummy
        )
    except ValueError:
        return False
    return valid and matches


def _dummy_hash(cost: int) -> bytes:
    """A hash of ``cost`` that no password matches."""
    return b"$2b$%02d$%s" % (cost, _DUMMY_SALT_AND_DIGEST)


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from a ``Basic`` header value; None when absent or malformed."""
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
