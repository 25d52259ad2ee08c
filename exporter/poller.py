"""One poller per account: pacing, backoff and health.

An :class:`AccountPoller` polls its account once at start, then on a fixed
grid of ``poll_interval`` (offset by ``start_delay`` so accounts never poll
together; a slow poll skips the ticks it missed instead of bursting to catch
up). A poll is a signed ``v2/account.status`` and, with ``position_details``,
a signed ``v2/account.position`` sent right behind it on the same
connection, so both describe the same moment. The poller keeps the last good
answers and publishes an immutable :class:`~exporter.state.AccountState`
after every change; scrapes never cause a request.

Failures are counted by reason and handled by what Binance asks for: a
request lost with its connection is retried once on a new one, ``-1021``
(clock) triggers a clock measurement and one retry, 429/418 stop all requests
until the time Binance gives, and auth errors wait ``auth_retry_interval``.
Every wait is measured on the monotonic clock.

With a user data stream (:mod:`exporter.userstream`), the poller also polls
when the stream says the account changed (:meth:`AccountPoller.poll_soon`),
sends the stream's ``userDataStream.*`` requests under the same rules
(:meth:`AccountPoller.user_stream_request`), and publishes the stream's state
with its own (:meth:`AccountPoller.set_stream`). It never sees the events.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time  # only to format wall-clock times for the log; see exporter.clock
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace as _replace
from typing import TypeVar

from exporter.budget import WARN_SHARE
from exporter.client import (
    Answer,
    ApiClient,
    ApiError,
    BadResponse,
    ConnectionLost,
    RequestError,
    Send,
)
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Account, Config
from exporter.signing import signed
from exporter.snapshot import (
    AccountSnapshot,
    MalformedAnswer,
    PositionDetails,
    Problem,
    parse_account_status,
    parse_margin_mode,
    parse_position_details,
    parse_rate_limits,
)
from exporter.state import AccountState, StreamState

__all__ = [
    "BAN_FALLBACK",
    "DETAILS_METHOD",
    "DURATION_BUCKETS",
    "MODE_METHOD",
    "STATUS_METHOD",
    "AccountPoller",
]

log = logging.getLogger(__name__)

STATUS_METHOD = "v2/account.status"
DETAILS_METHOD = "v2/account.position"
MODE_METHOD = "account.status"  # v1: the only one with multiAssetsMargin
BAN_FALLBACK = 120.0  # Binance's shortest IP ban, when it does not say how long
# Round trips to Binance range from a few ms (co-located) to seconds (far away).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A failure that keeps repeating is logged again this often, with its count.
REPEAT_LOG_INTERVAL = 600.0

_Parsed = TypeVar("_Parsed")


class AccountPoller:
    """Polls one account forever (:meth:`run`) or once (:meth:`poll_once`)."""

    def __init__(self, account: Account, config: Config,
                 publish: Callable[[AccountState], None], *, clock: Clock = SYSTEM_CLOCK,
                 start_delay: float = 0.0) -> None:
        self.account = account
        self.config = config
        self.start_delay = start_delay
        self._publish = publish
        self._clock = clock
        self.client = ApiClient(
            config.endpoint,
            name=account.name,
            request_timeout=config.request_timeout,
            max_frame_size=config.max_frame_size,
            backoff_min=config.reconnect_backoff_min,
            backoff_max=config.reconnect_backoff_max,
            lifetime=config.connection_lifetime,
            on_open=self._on_open,
            clock=clock,
        )
        self._state = AccountState.initial(account.name, DURATION_BUCKETS)
        self._paused_until = 0.0  # monotonic; no request before it
        self._resync: asyncio.Future[None] | None = None
        self._logged_problems: set[tuple[str, str]] = set()
        # Every new connection measures the clock before its first request, so the
        # periodic measurement only counts from construction.
        self._last_clock_sync = clock.monotonic()
        self.last_error: RequestError | None = None
        self._repeats = 0  # failures like last_error since it was last logged
        self._logged_at = 0.0
        self._wake = asyncio.Event()  # poll_soon was called
        self._events_waiting = False  # the account changed after the last poll started
        self._event_polled_at: float | None = None  # monotonic start of the last event poll
        self._logged_skip = False
        self._last_mode_check: float | None = None  # monotonic; None: never read

    @property
    def state(self) -> AccountState:
        return self._state

    def poll_soon(self) -> None:
        """Poll soon: the account changed (its user data stream said so).

        The first such request polls at once; requests that come within
        ``event_poll_min_gap`` of that poll's start make one more poll at the end
        of the gap, so a burst of events never queues a poll per event and its
        last event is always reflected. These polls wait out a backoff or ban like
        scheduled ones, and are skipped while Binance reports more than
        :data:`~exporter.budget.WARN_SHARE` of its REQUEST_WEIGHT limit used.
        """
        self._events_waiting = True
        self._wake.set()

    def set_stream(self, stream: StreamState) -> None:
        """Show ``stream`` as the account's user data stream state, and publish."""
        self._state = _replace(self._state, stream=stream)
        self._publish(self._state)

    async def user_stream_request(self, method: str, *, wait: bool = True) -> Answer:
        """Send a USER_STREAM request (``userDataStream.*``: API key, no signature).

        It goes on the account's connection under the poller's rules: it waits out
        a backoff or ban first (with ``wait=False`` it raises :class:`RequestError`
        instead, sending nothing); its failure is counted and may pause every
        request of the account; the usage reported with its answer is kept.
        """
        while (pause := self._paused_until - self._clock.monotonic()) > 0:
            if not wait:
                raise RequestError(f"{method} not sent: requests are paused for {pause:.0f}s")
            await self._clock.sleep(pause)
        try:
            answer = await self.client.request(method, {"apiKey": self.account.api_key.reveal()})
        except RequestError as exc:
            if isinstance(exc, ApiError):
                self._keep_rate_limits(exc.rate_limits)
            self._count_error(exc)
            self._pause_after(exc)
            raise
        else:
            self._keep_rate_limits(answer.rate_limits)
            return answer
        finally:
            self._note_connections()
            self._publish(self._state)

    async def run(self) -> None:
        """Poll now, then on a fixed grid of ``poll_interval`` from ``start_delay``, and
        when :meth:`poll_soon` asks."""
        interval = self.config.poll_interval
        start = self._clock.monotonic()
        await self._tick()
        next_tick = start + self.start_delay + interval
        while True:
            due = self._event_poll_due()
            wake_at = next_tick if due is None else min(next_tick, due)
            await self._clock.wait(self._wake, wake_at - self._clock.monotonic())
            self._wake.clear()
            now = self._clock.monotonic()
            if now >= next_tick:
                await self._tick()
                next_tick += interval
                late = self._clock.monotonic() - next_tick
                if late > 0:
                    next_tick += math.ceil(late / interval) * interval
            elif (due := self._event_poll_due()) is not None and now >= due:
                await self._event_poll()

    def _event_poll_due(self) -> float | None:
        """When the next event-driven poll may start (monotonic); None if none is wanted."""
        if not self._events_waiting:
            return None
        due = self._paused_until
        if self._event_polled_at is not None:
            due = max(due, self._event_polled_at + self.config.event_poll_min_gap)
        return due

    async def _event_poll(self) -> None:
        share = self._weight_share()
        if share > WARN_SHARE:
            self._events_waiting = False
            log.log(logging.DEBUG if self._logged_skip else logging.WARNING,
                    "account %s: Binance reports %.0f%% of the request weight limit used; "
                    "polls for account changes are skipped (scheduled polls go on, events are "
                    "still counted; logged once)", self.account.name, share * 100)
            self._logged_skip = True
            return
        self._event_polled_at = self._clock.monotonic()
        await self._poll()

    def _weight_share(self) -> float:
        """The largest share of a REQUEST_WEIGHT limit Binance last reported as used."""
        return max((limit.used / limit.limit for limit in self._state.rate_limits
                    if limit.rate_limit_type == "REQUEST_WEIGHT" and limit.limit > 0),
                   default=0.0)

    async def _tick(self) -> None:
        """One scheduled poll, unless requests are paused."""
        if self._clock.monotonic() < self._paused_until:
            log.debug("account %s: backing off, no request this tick", self.account.name)
            return
        await self._poll()

    async def _poll(self) -> None:
        """One poll of the loop; a bug in it is logged and counted, never ends the loop."""
        self._events_waiting = False  # this poll reads what every event so far changed
        try:
            if (self._clock.monotonic() - self._last_clock_sync
                    >= self.config.clock_sync_interval):
                await self._sync_clock_quietly()
            if (self._last_mode_check is None or self._clock.monotonic() - self._last_mode_check
                    >= self.config.clock_sync_interval):
                await self._read_margin_mode()
            await self.poll_once()
        except Exception:
            log.exception("account %s: unexpected error while polling", self.account.name)
            self._record_failure(RequestError("unexpected error in the exporter (see log)"))

    async def poll_once(self) -> bool:
        """One poll: request, parse, record; True when the account status was read."""
        requests: list[Awaitable[object]] = [
            self._fetch(STATUS_METHOD, self._reader(STATUS_METHOD, parse_account_status))]
        if self.config.position_details:
            requests.append(self._fetch(DETAILS_METHOD,
                                        self._reader(DETAILS_METHOD, parse_position_details)))
        results = await asyncio.gather(*requests, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RequestError):
                raise result
        status, details = results[0], results[1] if len(results) > 1 else None
        if isinstance(status, RequestError):
            if isinstance(details, RequestError):
                self._count_error(details)
                self._pause_after(details)
            self._record_failure(status)
            return False
        assert isinstance(status, AccountSnapshot)
        if isinstance(details, RequestError):
            self._count_error(details)
            self._pause_after(details)
            log.info("account %s: position details failed (%s): %s; the status is exported",
                     self.account.name, details.reason, details)
            details = None
        self._record_success(status, details if isinstance(details, PositionDetails) else None)
        log.debug("account %s: polled: %d assets, %d positions%s", self.account.name,
                  len(status.assets), len(status.positions),
                  f", {len(details.positions)} position details"
                  if isinstance(details, PositionDetails) else "")
        return True

    async def close(self) -> None:
        await self.client.close()

    async def _fetch(self, method: str, parse: Callable[[Answer], _Parsed]) -> _Parsed:
        """One signed request, retried once where Binance's rules say a retry helps.

        A request lost with its connection is retried on a new connection, and
        ``-1021`` is retried after measuring the clock offset; the first
        failure is still counted.
        """
        try:
            return parse(await self._request(method))
        except ConnectionLost as exc:
            self._count_error(exc)
        except ApiError as exc:
            if exc.reason != "clock":
                raise
            self._count_error(exc)
            await self._resync_clock()
        return parse(await self._request(method))

    async def _resync_clock(self) -> None:
        """Measure the clock after a -1021; requests of one poll that got it together share
        one measurement."""
        if self._resync is None or self._resync.done():
            log.info("account %s: Binance says our timestamp is off (-1021); measuring the clock",
                     self.account.name)
            self._resync = asyncio.ensure_future(self._sync_clock())
        await asyncio.shield(self._resync)

    async def _request(self, method: str) -> Answer:
        params: dict[str, object] = {"timestamp": self._timestamp(),
                                     "recvWindow": self.config.recv_window_ms}
        if not self.account.session_logon:
            params = signed({"apiKey": self.account.api_key.reveal(), **params},
                            self.account.signer)
        try:
            answer = await self.client.request(method, params)
        except ApiError as exc:
            self._keep_rate_limits(exc.rate_limits)
            raise
        finally:
            self._note_connections()
        self._keep_rate_limits(answer.rate_limits)
        self._state = _replace(self._state,
                               durations=self._state.durations.observe(answer.round_trip))
        return answer

    def _reader(self, method: str, parse: Callable[..., tuple[_Parsed, Sequence[Problem]]]
                ) -> Callable[[Answer], _Parsed]:
        """``parse`` as the reader of ``method``'s answers: an answer it cannot use is a
        :class:`BadResponse`; the rows and fields it left out are counted."""

        def read(answer: Answer) -> _Parsed:
            try:
                parsed, problems = parse(answer.result, received_at=answer.received_at)
            except MalformedAnswer as exc:
                raise BadResponse(f"malformed {method} answer: {exc}") from None
            self._note_problems(problems)
            return parsed

        return read

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
        self._last_clock_sync = self._clock.monotonic()
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

    async def _read_margin_mode(self) -> None:
        """Read which margin mode is on, at start and every ``clock_sync_interval``.

        Only v1 ``account.status`` (weight 10) says it; the totals of
        ``v2/account.status`` mean USDT in one mode and USD in the other. A
        failure is counted and the last known mode kept.
        """
        self._last_mode_check = self._clock.monotonic()
        try:
            answer = await self._fetch(MODE_METHOD, lambda answer: answer)
            multi_assets = parse_margin_mode(answer.result)
        except MalformedAnswer as exc:
            self._count_error(BadResponse(str(exc)))
            log.info("account %s: margin mode unreadable: %s", self.account.name, exc)
        except RequestError as exc:
            self._count_error(exc)
            self._pause_after(exc)
            log.info("account %s: margin mode not read (%s): %s", self.account.name,
                     exc.reason, exc)
        else:
            self._state = _replace(self._state, multi_assets=multi_assets)
        self._publish(self._state)

    def _timestamp(self) -> int:
        return int((self._clock.time() + self._state.clock_offset) * 1000)

    def _record_success(self, snapshot: AccountSnapshot, details: PositionDetails | None) -> None:
        if self.last_error is not None:
            log.info("account %s: polls succeed again%s", self.account.name, self._repeated())
        self.last_error = None
        now = self._clock.monotonic()
        state = _replace(self._state, snapshot=snapshot, up=True,
                         last_success=snapshot.received_at,
                         expires_at=now + self.config.stale_after)
        if details is not None:
            state = _replace(state, details=details,
                             details_expires_at=now + self.config.stale_after)
        if now >= self._paused_until:
            state = _replace(state, backoff_until=0.0)
        self._state = state
        self._publish(self._state)

    def _record_failure(self, exc: RequestError) -> None:
        self._count_error(exc)
        self._pause_after(exc)
        self._state = _replace(self._state, up=False)
        same = self.last_error is not None and exc.reason == self.last_error.reason
        now = self._clock.monotonic()
        if not same or now - self._logged_at >= REPEAT_LOG_INTERVAL:
            backoff_until = self._state.backoff_until
            pause = (f"; no request until {_local_time(backoff_until)}"
                     if self._paused_until > now else "")
            log.warning("account %s: poll failed (%s): %s%s%s", self.account.name, exc.reason,
                        exc, pause + _advice(exc.reason), self._repeated())
            self._logged_at = now
        else:
            self._repeats += 1
        self.last_error = exc
        self._publish(self._state)

    def _repeated(self) -> str:
        """How often the last logged failure repeated since; resets the count."""
        repeats, self._repeats = self._repeats, 0
        if not repeats or self.last_error is None:
            return ""
        return (f" (the {self.last_error.reason} failure before repeated {repeats} more "
                f"time{'s' if repeats > 1 else ''})")

    def _pause_after(self, exc: RequestError) -> None:
        """Stop requests for as long as ``exc`` asks; the pause is measured monotonically.

        Binance's ``retryAfter`` is an epoch time on its clock: it is converted to a
        duration once, here, with the measured clock offset.
        """
        delay = self._pause_for(exc)
        if delay is None:
            return
        now = self._clock.monotonic()
        if now + delay > self._paused_until:
            self._paused_until = now + delay
            self._state = _replace(self._state, backoff_until=self._clock.time() + delay)

    def _pause_for(self, exc: RequestError) -> float | None:
        if not isinstance(exc, ApiError):
            return None
        server_now = self._clock.time() + self._state.clock_offset
        given = exc.retry_after()
        if exc.reason == "rate_limited":
            next_minute = (math.floor(server_now / 60) + 1) * 60
            return (given if given is not None else next_minute) - server_now
        if exc.reason == "banned":
            return given - server_now if given is not None else BAN_FALLBACK
        if exc.reason == "auth":
            return self.config.auth_retry_interval
        return None

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


def _local_time(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _advice(reason: str) -> str:
    return {
        "auth": " (check that the API key exists, is enabled for futures, allows this IP, and "
                "that the secret or private key matches it; if this is a Portfolio Margin "
                "account, it is not supported yet)",
        "clock": " (the local clock is off; run NTP)",
        "banned": " (Binance banned this IP for too many requests)",
    }.get(reason, "")
