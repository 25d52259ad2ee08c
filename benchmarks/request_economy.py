"""Requests to Binance do not depend on how often /metrics is scraped.

50 scrapers GET /metrics every 100 ms for 60 s against an exporter
(``run_exporter``) that polls 3 simulated accounts every 5 s. The simulator
counts the ``v2/account.status`` requests it receives; they are compared with
the minimum the schedule needs (accounts x ceil(duration / interval)) and
with a design that sends a request per scrape.

    python -m benchmarks.request_economy
    python -m benchmarks.request_economy --duration 20   # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import sys
from dataclasses import dataclass, field

from benchmarks._common import (
    Scraper,
    add_accounts,
    loopback_config,
    ms,
    percentile,
    print_header,
    print_table,
)
from exporter.app import run_exporter
from exporter.simulator import ACCOUNT_METHOD, Simulator


@dataclass
class ScrapeCounts:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # slots missed because the previous scrape was still running
    latencies: list[float] = field(default_factory=list)


async def scrape_at_fixed_rate(port: int, source: str, offset: float, period: float,
                               until: float, counts: ScrapeCounts) -> None:
    """GET /metrics every ``period`` from ``offset``; a late scraper skips slots (no bursts).

    Each scraper connects from its own loopback address, as separate Prometheus
    servers would: one peer may hold only a few connections (the flood guard).
    """
    loop = asyncio.get_running_loop()
    scraper = Scraper(port, source=source)
    next_slot = loop.time() + offset
    try:
        while next_slot < until:
            await asyncio.sleep(max(0.0, next_slot - loop.time()))
            start = loop.time()
            try:
                status, _ = await scraper.get()
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            counts.latencies.append(loop.time() - start)
            if status == 200:
                counts.ok += 1
            else:
                counts.failed += 1
            next_slot += period
            missed = math.floor((loop.time() - next_slot) / period) + 1
            if missed > 0:
                counts.skipped += missed
                next_slot += missed * period
    finally:
        await scraper.close()


async def run(args: argparse.Namespace) -> tuple[Simulator, ScrapeCounts, float]:
    counts = ScrapeCounts()
    async with Simulator(seed=11) as sim:
        accounts = add_accounts(sim, args.accounts)
        config = loopback_config(sim.url, accounts, poll_interval=f"{args.interval}s",
                                 position_details=args.position_details)
        loop = asyncio.get_running_loop()
        async with run_exporter(config) as running:
            started = loop.time()
            until = started + args.duration
            await asyncio.gather(*(
                scrape_at_fixed_rate(running.server.port, f"127.0.{i // 250}.{2 + i % 250}",
                                     i * args.period / args.scrapers, args.period, until,
                                     counts)
                for i in range(args.scrapers)))
            await asyncio.sleep(max(0.0, until - loop.time()))
            lifetime = loop.time() - started
    return sim, counts, lifetime


def expected_per_account(duration: float, interval: float, accounts: int) -> list[int]:
    """Ticks inside [0, duration) of each staggered poller (first tick at index x interval / n)."""
    return [math.ceil((duration - index * interval / accounts) / interval)
            for index in range(accounts)]


def report(sim: Simulator, counts: ScrapeCounts, lifetime: float,
           args: argparse.Namespace) -> None:
    polls = [r for r in sim.requests if r.method == ACCOUNT_METHOD]
    by_account = {key: sum(1 for r in polls if r.api_key == key)
                  for key in sorted({r.api_key for r in polls})}
    minimum = args.accounts * math.ceil(args.duration / args.interval)
    schedule = expected_per_account(args.duration, args.interval, args.accounts)
    scrapes = counts.ok + counts.failed
    others = collections.Counter(r.method for r in sim.requests if r.method != ACCOUNT_METHOD)
    print_table(("figure", "value"), [
        ("exporter lifetime (s)", f"{lifetime:.2f}"),
        ("scrapes of /metrics (200 OK / failed / slots skipped)",
         f"{counts.ok:,} / {counts.failed} / {counts.skipped}"),
        ("scrape latency p50 / p99 / max (ms, client in the same process)",
         f"{ms(percentile(counts.latencies, 50)):.2f} / "
         f"{ms(percentile(counts.latencies, 99)):.2f} / {ms(max(counts.latencies)):.2f}"),
        ("v2/account.status requests seen by the simulator", len(polls)),
        ("  per account", " ".join(str(n) for n in by_account.values())),
        (f"theoretical minimum: {args.accounts} x ceil({args.duration:g} / {args.interval:g})",
         minimum),
        ("  ticks the staggered schedule has in the window, per account",
         " ".join(str(n) for n in schedule)),
        ("other requests", ", ".join(f"{method} {count}" for method, count in
                                     sorted(others.items(), key=lambda item: str(item[0])))),
        ("WebSocket connections", sim.connections_opened),
        ("scrape-driven design, one request per scrape", f"{scrapes:,}"),
        ("scrape-driven design, one request per account per scrape",
         f"{scrapes * args.accounts:,}"),
        ("saving vs one request per scrape", f"{scrapes / max(1, len(polls)):,.0f}x"),
    ])
    extra = len(polls) - minimum
    print(f"requests - minimum = {extra:+d}. Each poller sends its first request at its start "
          f"delay (account i at i x {args.interval:g}/{args.accounts} s) and then one per "
          f"interval, so over {args.duration:g} s it makes ceil(({args.duration:g} - delay) / "
          f"{args.interval:g}) requests: equal to the minimum, or one more for an account whose "
          "tick falls exactly at the end of the window (first-tick rounding). Scrapes add none.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--position-details", action="store_true",
                        help="also send v2/account.position each poll (the exporter's default)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between scrapes")
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval in seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print_header(f"request_economy: {args.scrapers} scrapers every {args.period:g}s for "
                 f"{args.duration:g}s; {args.accounts} accounts polled every {args.interval:g}s",
                 "python -m benchmarks.request_economy " + " ".join(sys.argv[1:]))
    sim, counts, lifetime = asyncio.run(run(args))
    report(sim, counts, lifetime, args)


if __name__ == "__main__":
    main()
