"""The page /metrics serves is exactly a fresh render of the pollers' current states.

A real exporter polls a static simulator every 250 ms. After each poll, after a
position closes and after a balance changes, the four bodies served over HTTP
(text, OpenMetrics, each plain and gzip) must equal ``render_page`` of the
pollers' states at that moment, followed by the exporter's own ``process_*``
metrics (read at each scrape, so they are cut off before comparing). A poll
may land between the scrape and the test's render, so the comparison is
retried; a page rendered from other states never matches and times out.
``now`` only decides which snapshots are live; with polls every 250 ms and
``stale_after`` 750 ms every snapshot is live both when the exporter rendered
and when the test renders, so the two pages must be byte-identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time

from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.app import RunningExporter, run_exporter
from exporter.exposition import Page, render_page
from exporter.simulator import Simulator
from tests.support import fetch, parse_metrics, sim_config, wait_for

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
VARIANTS = {
    "text": {},
    "text_gzip": {"Accept-Encoding": "gzip"},
    "openmetrics": {"Accept": OPENMETRICS},
    "openmetrics_gzip": {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"},
}


def exporter(simulator: Simulator) -> contextlib.AbstractAsyncContextManager[RunningExporter]:
    """``run_exporter`` polling both simulated accounts every 250 ms."""
    return run_exporter(sim_config(simulator, poll_interval="250ms"))


OWN_METRICS = b"# HELP process_"


def without_own_metrics(body: bytes, openmetrics: bool) -> bytes:
    """The page before the exporter's own metrics (which always come last, before # EOF)."""
    page, marker, own = body.partition(OWN_METRICS)
    families = {family.name for family in text_string_to_metric_families(
        (marker + own).removesuffix(b"# EOF\n").decode())}
    assert families and all(name.startswith("process_") for name in families), families
    return page + (b"# EOF\n" if openmetrics else b"")


async def served(url: str) -> Page:
    """The four bodies of /metrics, as served over HTTP, without the own metrics."""
    bodies = await asyncio.gather(*(asyncio.to_thread(fetch, url + "/metrics", headers)
                                    for headers in VARIANTS.values()))
    pages = []
    for (status, headers, body), variant in zip(bodies, VARIANTS, strict=True):
        assert status == 200
        gzipped = variant.endswith("_gzip")
        assert ("Content-Encoding" in headers) == gzipped
        page = without_own_metrics(gzip.decompress(body) if gzipped else body,
                                   variant.startswith("openmetrics"))
        pages.append(gzip.compress(page) if gzipped else page)
    return Page(*pages)


def fresh(running: RunningExporter) -> Page:
    """A new render of the pollers' current states, as the exposition would make it now."""
    return render_page([poller.state for poller in running.pollers], time.monotonic(),
                       __version__)


async def served_when_current(running: RunningExporter) -> Page:
    """The served page once it equals a fresh render (retried while a render is pending)."""

    async def current() -> Page | None:
        page = await served(running.server.url)
        return page if page == fresh(running) else None

    return await wait_for(current, timeout=3.0, interval=0.02)


def successes(running: RunningExporter) -> dict[str, int]:
    """Successful polls so far per account (the count of the round-trip histogram)."""
    return {poller.account.name: poller.state.durations.cumulative_counts[-1]
            for poller in running.pollers}


async def after_next_polls(running: RunningExporter, polls: int = 1) -> Page:
    """The served page after every account has had ``polls`` more successful polls.

    After a change in the simulator, wait for 2: a request it received just
    before the change may still be answered with the old figures.
    """
    before = successes(running)
    await wait_for(lambda: all(count >= before[name] + polls
                               for name, count in successes(running).items()),
                   timeout=3.0, interval=0.02)
    return await served_when_current(running)


def hedge_positions(page: Page) -> set[tuple[str, str]]:
    """(symbol, side) of every position of the hedge account on the page."""
    return {(labels["symbol"], labels["position_side"])
            for name, label_set in parse_metrics(page.text.decode())
            if name == "binance_futures_position_position_amt"
            for labels in [dict(label_set)] if labels["account"] == "hedge"}


def oneway_usdt_balance(page: Page) -> float | None:
    samples = parse_metrics(page.text.decode())
    return samples.get(("binance_futures_asset_wallet_balance",
                        frozenset({("account", "oneway"), ("asset", "USDT")})))


async def test_served_page_is_a_fresh_render_after_every_poll(simulator: Simulator) -> None:
    async with exporter(simulator) as running:
        await wait_for(lambda: all(p.state.up for p in running.pollers), timeout=3.0)
        previous = await served_when_current(running)
        for _ in range(3):
            page = await after_next_polls(running)
            assert page != previous  # each poll's answer (its time, its round trip) is shown
            previous = page


async def test_served_page_follows_a_closed_position(simulator: Simulator) -> None:
    async with exporter(simulator) as running:
        await wait_for(lambda: all(p.state.up for p in running.pollers), timeout=3.0)
        hedge = simulator.accounts["hedge"]
        assert hedge.last_result is not None
        served = {(p["symbol"], p["positionSide"]) for p in hedge.last_result["positions"]}
        assert hedge_positions(await served_when_current(running)) == served
        closing = sorted(served)[0]

        hedge.close_position(*closing)
        page = await after_next_polls(running, polls=2)
        assert hedge_positions(page) == served - {closing}
        await after_next_polls(running)  # and it stays consistent afterwards


async def test_served_page_follows_a_balance_change(simulator: Simulator) -> None:
    async with exporter(simulator) as running:
        await wait_for(lambda: all(p.state.up for p in running.pollers), timeout=3.0)
        assert oneway_usdt_balance(await served_when_current(running)) != 4321.5

        simulator.accounts["oneway"].set_asset_field("USDT", "walletBalance", "4321.5")
        page = await after_next_polls(running, polls=2)
        assert oneway_usdt_balance(page) == 4321.5
        await after_next_polls(running)
