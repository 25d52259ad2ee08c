"""Capacity planning: the REQUEST_WEIGHT a configuration spends against the per-IP limit.

Binance counts REQUEST_WEIGHT per IP and minute (2400 by default), shared by
every account polled from that IP and by REST clients on it. Start-up and
``--check-config`` judge a configuration by the same :func:`verdict`: above
:data:`WARN_SHARE` of the limit the exporter warns, above
:data:`REFUSE_SHARE` it refuses to start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.config import Config

__all__ = [
    "CONNECT_WEIGHT",
    "DETAILS_WEIGHT",
    "MODE_WEIGHT",
    "REFUSE_SHARE",
    "SESSION_WEIGHT",
    "STATUS_WEIGHT",
    "USER_STREAM_WEIGHT",
    "WARN_SHARE",
    "Verdict",
    "WeightBudget",
    "verdict",
    "weight_budget",
]

STATUS_WEIGHT = 5  # v2/account.status
DETAILS_WEIGHT = 5  # v2/account.position, with position_details
MODE_WEIGHT = 10  # v1 account.status, for the margin mode: at start and with each clock check
CONNECT_WEIGHT = 5  # opening a WebSocket API connection
SESSION_WEIGHT = 2  # session.status and session.logon each
USER_STREAM_WEIGHT = 1  # userDataStream.start, .ping and .stop each
WARN_SHARE, REFUSE_SHARE = 0.5, 0.9


@dataclass(frozen=True)
class WeightBudget:
    """REQUEST_WEIGHT per minute this configuration needs against the per-IP limit.

    ``polls`` is what the polls cost per minute, ``clock_checks`` the periodic
    ``session.status``, ``keepalives`` the user data streams'
    ``userDataStream.ping``; ``connects`` (with their clock check, logon and
    listen key) are paid once, counted in the first minute. Polls for account
    changes the streams report come on top: they depend on the account's
    activity, and the exporter skips them above :data:`WARN_SHARE`.
    """

    polls: float
    clock_checks: float
    keepalives: float
    connects: float
    limit: int

    @property
    def steady_per_minute(self) -> float:
        return self.polls + self.clock_checks + self.keepalives

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
        room = share * self.limit - self.clock_checks - self.keepalives - self.connects
        return math.ceil(poll_interval * self.polls / room) if room > 0 else None


def weight_budget(config: Config) -> WeightBudget:
    """What polling every account costs: its requests per poll, connects, clock checks and
    user data stream keepalives."""
    accounts = len(config.accounts)
    per_poll = STATUS_WEIGHT + (DETAILS_WEIGHT if config.position_details else 0)
    streams = config.user_stream_endpoint is not None
    connects = sum(CONNECT_WEIGHT + SESSION_WEIGHT * (2 if account.session_logon else 1)
                   + MODE_WEIGHT + (USER_STREAM_WEIGHT if streams else 0)
                   for account in config.accounts)
    return WeightBudget(
        polls=accounts * 60 / config.poll_interval * per_poll,
        clock_checks=accounts * 60 / config.clock_sync_interval * (SESSION_WEIGHT + MODE_WEIGHT),
        keepalives=(accounts * 60 / config.user_stream_keepalive * USER_STREAM_WEIGHT
                    if streams else 0.0),
        connects=connects,
        limit=config.weight_limit,
    )


@dataclass(frozen=True)
class Verdict:
    """Whether a configuration may run: ``error`` refuses it, ``warning`` is logged."""

    budget: WeightBudget
    warning: str | None = None
    error: str | None = None


def verdict(config: Config) -> Verdict:
    """Warn above half of the per-IP weight limit; refuse above 90 %."""
    budget = weight_budget(config)
    if budget.usage <= WARN_SHARE:
        return Verdict(budget)
    fits = budget.fitting_interval(config.poll_interval, WARN_SHARE)
    advice = f"poll_interval {fits:g}s or more would fit, or " if fits else ""
    text = (f"{len(config.accounts)} accounts every {config.poll_interval:g}s need "
            f"{budget.first_minute:.0f} weight/min, {budget.usage:.0%} of the {budget.limit} "
            f"per-IP limit; {advice}split accounts over replicas with their own IPs")
    if budget.usage > REFUSE_SHARE:
        return Verdict(budget, error=f"poll_interval: {text}")
    return Verdict(budget, warning=text)
