"""One poller per account: pacing, backoff and health.

An :class:`AccountPoller` sends one signed ``v2/account.status`` per
``poll_interval`` on a fixed schedule (a slow poll skips the ticks it
missed instead of bursting to catch up), keeps the last good answer, and
publishes an immutable :class:`~exporter.snapshot.AccountState` after every
change. Scrapes never cause a request.

Failures are counted by reason and handled by what Binance asks for: a
dropped connection is retried once on a new one, ``-1021`` (clock) triggers a
clock measurement and one retry, 429/418 stop all requests until the time
Binance gives, and auth errors wait ``auth_retry_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import replace as _replace

from exporter.client import (
    Answer,
    ApiClient,
    ApiError,
    BadResponse,
    ConnectionLost,
    RequestError,
    Send,
)
from exporter.config import Account, Config
from exporter.signing import signed
from exporter.snapshot import (
    AccountSnapshot,
    MalformedAnswer,
    Problem,
    parse_account_status,
    parse_rate_limits,
)
from exporter.state import AccountState

log = logging.getLogger(__name__)

STATUS_METHOD = "v2/account.status"
STATUS_WEIGHT = 5
CONNECT_WEIGHT = 5
SESSION_WEIGHT = 2  # session.status and session.logon each
BAN_FALLBACK = 120.0  # Binance's shortest IP ban, when it does not say how long
# Round trips to Binance range from a few ms (co-located) to seconds (far away).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AccountPoller:
    """Polls one account forever (:meth:`run`) or once (:meth:`poll_once`)."""

    def __init__(self, account: Account, config: Config,
                 publish: Callable[[AccountState], None], *, start_delay: float = 0.0) -> None:
        self.account = account
        self.config = config
        self.start_delay = start_delay
        self._publish = publish
        self.client = ApiClient(
            config.endpoint,
            name=account.name,
            request_timeout=config.request_timeout,
            max_frame_size=config.max_frame_size,
            backoff_min=config.reconnect_backoff_min,
            backoff_max=config.reconnect_backoff_max,
            lifetime=config.connection_lifetime,
            on_open=self._on_open,
        )
        self._state = AccountState.initial(account.name, DURATION_BUCKETS)
        self._logged_problems: set[tuple[str, str]] = set()
        # Every new connection measures the clock before its first request, so the
        # periodic measurement only counts from construction.
        self._last_clock_sync = time.monotonic()
        self.last_error: RequestError | None = None

    @property
    def state(self) -> AccountState:
        return self._state

    async def run(self) -> None:
        """Poll on a fixed grid of ``poll_interval`` until cancelled."""
        interval = self.config.poll_interval
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.start_delay
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if time.time() < self._state.backoff_until:
                log.debug("account %s: backing off, no request this tick", self.account.name)
            else:
                await self._tick()
            next_tick += interval
            late = loop.time() - next_tick
            if late > 0:
                next_tick += math.ceil(late / interval) * interval

    async def _tick(self) -> None:
        """One scheduled poll; a bug in it is logged and counted, never ends the loop."""
        try:
            if time.monotonic() - self._last_clock_sync >= self.config.clock_sync_interval:
                await self._sync_clock_quietly()
            await self.poll_once()
        except Exception:
            log.exception("account %s: unexpected error while polling", self.account.name)
            self._record_failure(RequestError("unexpected error in the exporter (see log)"))

    async def poll_once(self) -> bool:
        """One poll: request, parse, record; True when it succeeded."""
        try:
            snapshot = await self._fetch()
        except RequestError as exc:
            self._record_failure(exc)
            return False
        self._record_success(snapshot)
        return True

    async def close(self) -> None:
        await self.client.close()

    async def _fetch(self) -> AccountSnapshot:
        """The account status, retrying once where Binance's rules say a retry helps.

        A request lost with its connection is retried on a new connection, and
        ``-1021`` is retried after measuring the clock offset; the first
        failure is still counted.
        """
        try:
            return await self._request_status()
        except ConnectionLost as exc:
            self._count_error(exc)
        except ApiError as exc:
            if exc.reason != "clock":
                raise
            self._count_error(exc)
            log.info("account %s: Binance says our timestamp is off (-1021); measuring the clock",
                     self.account.name)
            await self._sync_clock()
        return await self._request_status()

    async def _request_status(self) -> AccountSnapshot:
        params: dict[str, object] = {"timestamp": self._timestamp(),
                                     "recvWindow": self.config.recv_window_ms}
        if not self.account.session_logon:
            params = signed({"apiKey": self.account.api_key.reveal(), **params},
                            self.account.signer)
        try:
            answer = await self.client.request(STATUS_METHOD, params)
        except ApiError as exc:
            self._keep_rate_limits(exc.rate_limits)
            raise
        finally:
            self._note_connections()
        return self._parse(answer)

    def _parse(self, answer: Answer) -> AccountSnapshot:
        self._keep_rate_limits(answer.rate_limits)
        try:
            snapshot, problems = parse_account_status(answer.result,
                                                      received_at=answer.received_at)
        except MalformedAnswer as exc:
            raise BadResponse(f"malformed answer: {exc}") from None
        self._note_problems(problems)
        self._state = _replace(self._state,
                               durations=self._state.durations.observe(answer.round_trip))
        return snapshot

    async def _on_open(self, send: Send) -> None:
        """On every new connection: measure the clock, then log on if configured."""
        await self._sync_clock(send)
        if self.account.session_logon:
            params = signed({"apiKey": self.account.api_key.reveal(),
                             "timestamp": self._timestamp(),
                             "recvWindow": self.config.recv_window_ms}, self.account.signer)
            await send("session.logon", params)
            log.debug("account %s: logged on to the WebSocket session", self.account.name)

    async def _sync_clock(self, send: Send | None = None) -> None:
        """Measure Binance's clock with ``session.status``: offset = server - midpoint."""
        answer = await (send or self.client.request)("session.status", {})
        server_time = answer.result.get("serverTime") if isinstance(answer.result, dict) else None
        if type(server_time) is not int:
            raise BadResponse("session.status answer has no integer serverTime")
        offset = server_time / 1000 - (answer.sent_at + answer.received_at) / 2
        self._last_clock_sync = time.monotonic()
        self._state = _replace(self._state, clock_offset=offset)
        self._publish(self._state)

    async def _sync_clock_quietly(self) -> None:
        try:
            await self._sync_clock()
        except RequestError as exc:
            log.info("account %s: clock measurement failed (%s): %s", self.account.name,
                     exc.reason, exc)
            self._count_error(exc)
            self._publish(self._state)
        finally:
            self._note_connections()

    def _timestamp(self) -> int:
        return int((time.time() + self._state.clock_offset) * 1000)

    def _record_success(self, snapshot: AccountSnapshot) -> None:
        if self.last_error is not None:
            log.info("account %s: polls succeed again", self.account.name)
        self.last_error = None
        self._state = _replace(
            self._state, snapshot=snapshot, up=True, last_success=snapshot.received_at,
            expires_at=snapshot.received_at + self.config.stale_after, backoff_until=0.0,
        )
        self._publish(self._state)

    def _record_failure(self, exc: RequestError) -> None:
        self._count_error(exc)
        backoff_until = self._backoff_until(exc)
        self._state = _replace(self._state, up=False, backoff_until=backoff_until)
        if self.last_error is None or exc.reason != self.last_error.reason:
            until = time.strftime("%H:%M:%S", time.localtime(backoff_until))
            pause = f"; no request until {until}" if backoff_until else ""
            log.warning("account %s: poll failed (%s): %s%s", self.account.name, exc.reason, exc,
                        pause + _advice(exc.reason))
        self.last_error = exc
        self._publish(self._state)

    def _backoff_until(self, exc: RequestError) -> float:
        """Epoch seconds before which no request may be sent after ``exc``; 0 for none."""
        now = time.time()
        if not isinstance(exc, ApiError):
            return 0.0
        given = exc.retry_after()
        local_given = given - self._state.clock_offset if given is not None else None
        if exc.reason == "rate_limited":
            server_now = now + self._state.clock_offset
            next_minute = (math.floor(server_now / 60) + 1) * 60 - self._state.clock_offset
            return local_given if local_given is not None else next_minute
        if exc.reason == "banned":
            return local_given if local_given is not None else now + BAN_FALLBACK
        if exc.reason == "auth":
            return now + self.config.auth_retry_interval
        return 0.0

    def _count_error(self, exc: RequestError) -> None:
        errors = dict(self._state.errors)
        errors[exc.reason] = errors.get(exc.reason, 0) + 1
        self._state = _replace(self._state, errors=errors)

    def _keep_rate_limits(self, raw: Sequence[object]) -> None:
        """The usage Binance reported with any answer, an error's included."""
        rate_limits, problems = parse_rate_limits(list(raw))
        self._note_problems(problems)
        self._state = _replace(self._state, rate_limits=rate_limits)

    def _note_problems(self, problems: Sequence[Problem]) -> None:
        """Count what the tolerant reader skipped; log each kind of problem once."""
        if not problems:
            return
        rows, fields = dict(self._state.rows_skipped), dict(self._state.fields_skipped)
        for problem in problems:
            if problem.field is None:
                key, counts, what = (problem.kind, problem.reason), rows, "skipped a row"
            else:
                key, counts, what = (problem.kind, problem.field), fields, "omitted a field"
            counts[key] = counts.get(key, 0) + 1
            level = logging.DEBUG if key in self._logged_problems else logging.WARNING
            self._logged_problems.add(key)
            log.log(level, "account %s: %s of Binance's answer (%s, %s): %s; the rest is "
                    "exported (logged once per kind)", self.account.name, what, problem.kind,
                    problem.field or problem.reason, problem.detail)
        self._state = _replace(self._state, rows_skipped=rows, fields_skipped=fields)

    def _note_connections(self) -> None:
        if self._state.connections != self.client.connections_opened:
            self._state = _replace(self._state, connections=self.client.connections_opened)


def _advice(reason: str) -> str:
    return {
        "auth": " (check that the API key exists, is enabled for futures, allows this IP, and "
                "that the secret or private key matches it; if this is a Portfolio Margin "
                "account, it is not supported yet)",
        "clock": " (the local clock is off; run NTP)",
        "banned": " (Binance banned this IP for too many requests)",
    }.get(reason, "")


@dataclass(frozen=True)
class WeightBudget:
    """REQUEST_WEIGHT per minute this configuration needs against the per-IP limit.

    ``polls`` is what the polls cost per minute, ``clock_checks`` the periodic
    ``session.status``; ``connects`` (with their clock check and logon) are
    paid once, counted in the first minute.
    """

    polls: float
    clock_checks: float
    connects: float
    limit: int

    @property
    def steady_per_minute(self) -> float:
        return self.polls + self.clock_checks

    @property
    def first_minute(self) -> float:
        return self.steady_per_minute + self.connects

    @property
    def usage(self) -> float:
        return self.first_minute / self.limit

    def fitting_interval(self, poll_interval: float, share: float) -> float | None:
        """The shortest whole-second interval whose first minute stays within ``share``.

        None when no interval fits (the connects alone take more than the share).
        """
        room = share * self.limit - self.clock_checks - self.connects
        return math.ceil(poll_interval * self.polls / room) if room > 0 else None


def weight_budget(config: Config) -> WeightBudget:
    """What polling every account costs: 5 per poll, plus connects and clock checks."""
    accounts = len(config.accounts)
    connects = sum(CONNECT_WEIGHT + SESSION_WEIGHT * (2 if account.session_logon else 1)
                   for account in config.accounts)
    return WeightBudget(
        polls=accounts * 60 / config.poll_interval * STATUS_WEIGHT,
        clock_checks=accounts * 60 / config.clock_sync_interval * SESSION_WEIGHT,
        connects=connects,
        limit=config.weight_limit,
    )
