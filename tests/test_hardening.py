"""Bad days in production that must never blind the exporter (issue 13's cases not covered
by the pacing, HTTP and config tests)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from exporter import __version__
from exporter.exposition import Exposition
from exporter.state import AccountState
from tests.support import SteppedClock, parse_metrics, wait_for


async def test_rendering_never_waits_behind_a_stuck_resolver(clock: SteppedClock) -> None:
    """A getaddrinfo that hangs occupies the default executor; the page must still follow."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    stuck = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # every worker busy
    exposition = Exposition(__version__, clock=clock)
    renderer = asyncio.create_task(exposition.run())
    try:
        state = AccountState.initial("acct", (1.0,))
        exposition.publish(replace(state, up=True))

        def up() -> bool:
            samples = parse_metrics(exposition.page().text.decode())
            return samples.get(("binance_futures_up", frozenset({("account", "acct")}))) == 1

        await wait_for(up, timeout=10)
    finally:
        release.set()
        renderer.cancel()
        await asyncio.gather(renderer, *stuck, return_exceptions=True)
