"""The composition root: one poller per account, the exposition and the HTTP server, run
together and stopped cleanly.

Everything here is wiring and lifecycle; each part's behaviour lives in its
own module. :func:`run_exporter` is what the CLI serves with and what tests
and benchmarks drive directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from exporter import __version__
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.exposition import Exposition
from exporter.fdlimit import connection_cap, raise_fd_limit
from exporter.http import MetricsServer
from exporter.landing import AccountStatus, render_landing
from exporter.listen import listen_error_message
from exporter.poller import AccountPoller
from exporter.userstream import UserStream
from exporter.webconfig import WebConfig

__all__ = [
    "SHUTDOWN_GRACE",
    "ListenError",
    "RunningExporter",
    "poll_once",
    "run_exporter",
    "until_signalled",
]

log = logging.getLogger("exporter")

SHUTDOWN_GRACE = 1.5  # seconds to close connections; the whole exit stays under 2 s


class ListenError(Exception):
    """The HTTP server could not bind its address."""


@dataclass(frozen=True)
class RunningExporter:
    server: MetricsServer
    exposition: Exposition
    pollers: list[AccountPoller]
    streams: list[UserStream]  # one per account, in the pollers' order; empty when off


@contextlib.asynccontextmanager
async def run_exporter(config: Config, web_config: WebConfig | None = None, *,
                       clock: Clock = SYSTEM_CLOCK,
                       demo: bool = False) -> AsyncIterator[RunningExporter]:
    """Serve /metrics and poll every account until the block exits, then stop cleanly."""
    exposition = Exposition(__version__, clock=clock)
    pollers = _pollers(config, exposition, clock)
    streams = _streams(config, pollers, clock)
    server = MetricsServer(
        config.listen_host, config.listen_port, exposition.body,
        landing=_landing(pollers, clock, demo=demo), web_config=web_config,
        max_connections=connection_cap(raise_fd_limit(), len(config.accounts)))
    try:
        await server.start()
    except OSError as exc:
        await _close(pollers, [])
        raise ListenError(listen_error_message(exc, config.listen_host,
                                               config.listen_port)) from None
    tasks = [asyncio.create_task(exposition.run(), name="exposition")]
    tasks += [asyncio.create_task(poller.run(), name=f"poller-{poller.account.name}")
              for poller in pollers]
    tasks += [asyncio.create_task(stream.run(), name=f"user-stream-{stream.name}")
              for stream in streams]
    try:
        yield RunningExporter(server, exposition, pollers, streams)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close(pollers, streams)
        await server.stop()


async def poll_once(config: Config, *, clock: Clock = SYSTEM_CLOCK) -> tuple[bytes, list[str]]:
    """Poll every account once: the page in the text format, and one line per failure."""
    exposition = Exposition(__version__, clock=clock)
    pollers = _pollers(config, exposition, clock)
    try:
        results = await asyncio.gather(*(poller.poll_once() for poller in pollers))
    finally:
        await _close(pollers, [])
    failures = []
    for poller, ok in zip(pollers, results, strict=True):
        error = poller.last_error
        if not ok:
            failures.append(f"account {poller.account.name}: "
                            f"{error.reason if error else 'unknown'}: {error}")
    return exposition.render_now().text, failures


def _landing(pollers: list[AccountPoller], clock: Clock, *,
             demo: bool) -> Callable[[], bytes]:
    """The landing page of the pollers' current states, built per request."""

    def page() -> bytes:
        accounts = [AccountStatus(poller.account.name, state.up, state.last_success,
                                  poller.last_error.reason if poller.last_error else None,
                                  state.stream.up if state.stream is not None else None)
                    for poller in pollers for state in (poller.state,)]
        return render_landing(__version__, demo=demo, accounts=accounts, now=clock.time())

    return page


def _pollers(config: Config, exposition: Exposition, clock: Clock) -> list[AccountPoller]:
    """One poller per account, staggered across the interval so polls never burst."""
    count = len(config.accounts)
    pollers = [AccountPoller(account, config, exposition.publish, clock=clock,
                             start_delay=index * config.poll_interval / count)
               for index, account in enumerate(config.accounts)]
    for poller in pollers:
        exposition.publish(poller.state)
    return pollers


def _streams(config: Config, pollers: list[AccountPoller], clock: Clock) -> list[UserStream]:
    """One user data stream per account (none when the stream is off), tied to its poller:
    the poller sends its requests, polls when it reports a change and publishes its state."""
    if config.user_stream_endpoint is None:
        return []
    streams = [UserStream(poller.account.name, config, request=poller.user_stream_request,
                          poll_soon=poller.poll_soon, publish=poller.set_stream, clock=clock)
               for poller in pollers]
    for poller, stream in zip(pollers, streams, strict=True):
        poller.set_stream(stream.state)
    return streams


async def _close(pollers: list[AccountPoller], streams: list[UserStream]) -> None:
    """Close the streams (their userDataStream.stop needs the pollers' connections), then
    the pollers, all within SHUTDOWN_GRACE."""

    async def close_all() -> None:
        await asyncio.gather(*(stream.close() for stream in streams), return_exceptions=True)
        await asyncio.gather(*(poller.close() for poller in pollers), return_exceptions=True)

    try:
        async with asyncio.timeout(SHUTDOWN_GRACE):
            await close_all()
    except TimeoutError:
        log.warning("some connections did not close within %.1fs", SHUTDOWN_GRACE)


async def until_signalled(on_hangup: Callable[[], None] | None = None) -> None:
    """Return on SIGINT or SIGTERM; call ``on_hangup`` on each SIGHUP (else SIGHUP stops too)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup or stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
