"""What /metrics shows of one account at one moment: its last snapshot and its health.

A poller replaces its :class:`AccountState` (immutable) after every change and
publishes it; the exposition encodes whatever state it was last given. The
label vocabularies of the health counters live here, beside the state they
label, so that encoding needs nothing from the client that produces them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.snapshot import AccountSnapshot, PositionDetails, RateLimit

__all__ = [
    "FORCED_ORDER_KINDS",
    "REASONS",
    "SKIPPED_ROW_REASONS",
    "STREAM_ERRORS",
    "STREAM_EVENTS",
    "AccountState",
    "MarginCall",
    "RequestDurations",
    "StreamState",
]

#: Why a request failed: the ``reason`` label of ``binance_futures_request_errors_total``.
REASONS = (
    "timeout", "connection", "auth", "clock", "rate_limited", "banned", "bad_response",
    "api_error",
)

#: Kinds of answer rows and why one may be skipped; every pair is exported from 0.
SKIPPED_ROW_REASONS: Mapping[str, tuple[str, ...]] = {
    "asset": ("malformed", "bad_identity", "duplicate"),
    "position": ("malformed", "bad_identity", "duplicate"),
    "rate_limit": ("malformed",),
}


#: The user data stream's event types (Binance's ``e``) counted by name, each from 0:
#: ``binance_futures_user_stream_events_total{event}``; any other type counts as ``other``.
STREAM_EVENTS = (
    "ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE", "MARGIN_CALL", "TRADE_LITE",
    "ACCOUNT_CONFIG_UPDATE", "ALGO_UPDATE", "CONDITIONAL_ORDER_TRIGGER_REJECT", "GRID_UPDATE",
    "STRATEGY_UPDATE", "listenKeyExpired", "other",
)

#: Why the user data stream was (re)started: ``binance_futures_user_stream_errors_total``.
#: ``listen_key``: userDataStream.start failed; ``keepalive``: userDataStream.ping failed;
#: ``connection``: the stream connection could not be opened or broke; ``closed``: the
#: server closed it; ``expired``: Binance sent ``listenKeyExpired``.
STREAM_ERRORS = ("listen_key", "keepalive", "connection", "closed", "expired")

#: Kinds of forced orders, from the client order id: ``autoclose-`` (liquidation),
#: ``adl_autoclose`` (auto-deleveraging), ``settlement_autoclose-`` (delivery settlement).
FORCED_ORDER_KINDS = ("liquidation", "adl", "settlement")


@dataclass(frozen=True, slots=True)
class MarginCall:
    """The maintenance margin Binance reported for one position in its last margin call."""

    maint_margin: float
    expires_at: float  # monotonic: shown until then (its arrival + stale_after)


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the user data stream of one account contributes to /metrics.

    ``up`` is true while the stream is connected with a listen key believed
    alive; a quiet account's stream is up. ``last_event_time`` is Binance's
    own time (``E``) of the latest event, epoch seconds.
    """

    up: bool
    connections: int
    errors: Mapping[str, int]  # STREAM_ERRORS -> count
    events: Mapping[str, int]  # STREAM_EVENTS -> count
    last_event_time: float | None
    forced_orders: Mapping[tuple[str, str], int]  # (symbol, kind) -> filled forced orders
    margin_calls: Mapping[tuple[str, str], MarginCall]  # (symbol, position side) -> last call

    @classmethod
    def initial(cls) -> StreamState:
        """Before the first connection: down, every counter at 0."""
        return cls(up=False, connections=0, errors=dict.fromkeys(STREAM_ERRORS, 0),
                   events=dict.fromkeys(STREAM_EVENTS, 0), last_event_time=None,
                   forced_orders={}, margin_calls={})

    def live_margin_calls(self, now: float) -> dict[tuple[str, str], float]:
        """The maintenance margin of each margin call not yet stale at monotonic ``now``."""
        return {position: call.maint_margin for position, call in self.margin_calls.items()
                if now < call.expires_at}


@dataclass(frozen=True, slots=True)
class RequestDurations:
    """Cumulative histogram counts of request round trips, in seconds."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]  # one per bound, then +Inf last
    total: float

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> RequestDurations:
        return cls(tuple(bounds), (0,) * (len(bounds) + 1), 0.0)

    def observe(self, seconds: float) -> RequestDurations:
        counts = tuple(
            count + (1 if index == len(self.bounds) or seconds <= self.bounds[index] else 0)
            for index, count in enumerate(self.cumulative_counts)
        )
        return RequestDurations(self.bounds, counts, self.total + seconds)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything /metrics shows for one account, as of one moment.

    ``snapshot`` is the last good ``v2/account.status`` answer and ``details``
    the last good ``v2/account.position`` answer; each is shown until its
    expiry (its success + ``stale_after``, on the monotonic clock) and then
    dropped, while the health fields are always shown. ``backoff_until`` is
    the wall-clock time exported for the current pause (0: none). The margin
    mode (``multi_assets``) is a setting of the account, shown once known.
    """

    name: str
    snapshot: AccountSnapshot | None
    expires_at: float  # monotonic
    details: PositionDetails | None
    details_expires_at: float  # monotonic
    rate_limits: tuple[RateLimit, ...]
    up: bool
    last_success: float | None
    errors: Mapping[str, int]
    connections: int
    durations: RequestDurations
    backoff_until: float
    clock_offset: float
    rows_skipped: Mapping[tuple[str, str], int]  # (kind, reason) -> count
    fields_skipped: Mapping[tuple[str, str], int]  # (kind, Binance field) -> count
    stream: StreamState | None = None  # None: the user data stream is off
    multi_assets: bool | None = None  # the margin mode, once read; None: not known yet

    @classmethod
    def initial(cls, name: str, duration_bounds: Sequence[float]) -> AccountState:
        """The state of an account before its first poll: down, no data, counters at 0."""
        return cls(
            name=name, snapshot=None, expires_at=0.0, details=None, details_expires_at=0.0,
            rate_limits=(), up=False,
            last_success=None, errors={}, connections=0,
            durations=RequestDurations.empty(duration_bounds), backoff_until=0.0,
            clock_offset=0.0,
            rows_skipped={(kind, reason): 0 for kind, reasons in SKIPPED_ROW_REASONS.items()
                          for reason in reasons},
            fields_skipped={},
        )

    def live_snapshot(self, now: float) -> AccountSnapshot | None:
        """The status answer if it is not stale at monotonic time ``now``."""
        return self.snapshot if now < self.expires_at else None

    def live_details(self, now: float) -> PositionDetails | None:
        """The position details if they are not stale at monotonic time ``now``."""
        return self.details if now < self.details_expires_at else None

    def next_expiry(self, now: float) -> float | None:
        """When something shown at ``now`` goes stale (monotonic), if anything will."""
        expiries = [at for at in (self.expires_at, self.details_expires_at) if at > now]
        return min(expiries, default=None)
