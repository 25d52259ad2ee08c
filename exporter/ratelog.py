"""Log a repeated event as a rate: the first at once, then one summary line per interval.

A flood (wrong passwords, connections beyond a cap, ``accept()`` out of file
descriptors) must not turn into a flood of log lines: one line per event wrote
45 MB in 10 s and took 70 % of a CPU. :class:`RateLog` logs the first event of
a quiet period in full, so an operator sees it immediately, and then counts:
while events keep coming, one line per interval says how many there were and
from how many peers ("37 failed basic-auth attempts from 2 peers in the last
minute"). After an interval without events the next one is logged in full again.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["RateLog"]

_MAX_PEERS = 10_000  # distinct peers remembered per interval; beyond, "at least"


class RateLog:
    """Rate-limited logging of one kind of event (see the module docstring).

    ``what`` names the events in the plural for the summary ("failed basic-auth
    attempts"). Call :meth:`note` from the event loop's thread.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = 60.0,
        level: int = logging.WARNING,
    ) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._level = level
        self._count = 0
        self._peers: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, message: str, *args: object, peer: str | None = None) -> None:
        """Record one event (from ``peer``, if it has one); log ``message % args`` if first."""
        if self._timer is None:
            self._logger.log(
                self._level,
                f"{message} (more are summarised every {self._period()})",
                *args,
            )
            self._schedule()
            return
        self._count += 1
        if peer is not None and len(self._peers) < _MAX_PEERS:
            self._peers.add(peer)

    def close(self) -> None:
        """Log what was counted but not yet summarised, and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._summarise()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._summarise():
            self._schedule()  # still busy: keep summarising instead of logging each

    def _summarise(self) -> bool:
        if not self._count:
            return False
        peers = len(self._peers)
        source = ""
        if peers:
            at_least = "at least " if peers >= _MAX_PEERS else ""
            source = f" from {at_least}{peers} peer{'' if peers == 1 else 's'}"
        self._logger.log(
            self._level, "%d %s%s in the last %s", self._count, self._what, source, self._period()
        )
        self._count = 0
        self._peers.clear()
        return True

    def _period(self) -> str:
        return "minute" if self._interval == 60 else f"{self._interval:g} s"
