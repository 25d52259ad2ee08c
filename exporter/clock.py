"""The one source of time: wall clock, monotonic clock and sleeping, injectable.

Durations (staleness, backoff and ban waits, render expiry, the poll grid,
keepalives) are measured on :meth:`Clock.monotonic`, which a step of the
system clock (NTP, a VM resume, an operator) cannot move. Wall time
(:meth:`Clock.time`) is used only for what is exported as a Unix time, for
request timestamps Binance checks against its own clock, and to convert a
Binance epoch deadline (``retryAfter``) into a duration once.

Tests pass a clock they step by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

__all__ = ["SYSTEM_CLOCK", "Clock"]


class Clock:
    """The system's clocks and asyncio's sleep."""

    def time(self) -> float:
        """Wall-clock time, epoch seconds."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward, for durations and deadlines."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        """Wait for ``event`` at most ``timeout`` seconds (None: forever); True if it is set."""
        if timeout is None:
            await event.wait()
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return event.is_set()


SYSTEM_CLOCK = Clock()
