"""How many accounts one exporter process polls on time, and the per-IP weight cap.

For each account count, a simulator with that many accounts (``--positions``
each, hedge mode, multi-assets; lively, so values change on every answer) runs
in a child process (weight limit raised so it never refuses) and
``run_exporter`` polls them every 15 s in this process, while a scraper in this
process GETs /metrics once a second as Prometheus would (OpenMetrics, gzip).
``AccountPoller.run`` and ``_tick`` are wrapped (in this process only) to
record when each tick was due, when its poll started and when it finished.
After one warm-up interval (every account connects), ``--rounds`` intervals
are measured:

- start lateness: poll start - the tick it belongs to (the fixed grid
  ``run start + start_delay + k x interval``);
- finish: poll end - its tick;
- missed: ticks in the window whose poll never started (the poller skips
  ticks it is late for) or had not finished 3 s after the window;
- renders: page renders and their mean duration (a scrape renders when
  something changed since the last one: the accounts polled since, then the
  format's page and its gzip);
- scrape: latency of the scrapes in the window (request to last body byte);
- page lag: how long a poll's answer can wait before /metrics shows it. A
  scrape shows every answer published before it arrived, so that is the
  longest scrape in the window.

A count is *sustained* when no tick is missed, every poll succeeds, the p99
start lateness stays under 1 s and the page lag under 1 s (issue 14's goal).

    python -m benchmarks.scale
    python -m benchmarks.scale --accounts 100 200 400 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks._common import (
    OPENMETRICS_ACCEPT,
    ChildSimulator,
    Scraper,
    account_entry,
    loopback_config,
    ms,
    percentile,
    print_header,
    print_table,
    rss_mb,
)
from exporter.app import run_exporter
from exporter.budget import REFUSE_SHARE, STATUS_WEIGHT, WARN_SHARE, weight_budget
from exporter.config import parse_config
from exporter.exposition import Exposition
from exporter.poller import AccountPoller

BINANCE_WEIGHT_LIMIT = 2400  # REQUEST_WEIGHT per minute per IP
SUSTAINED_P99 = 1.0  # seconds of start lateness
MAX_PAGE_LAG = 1.0  # seconds


@dataclass
class Recorder:
    """What the wrapped poller and exposition methods saw, on the event loop's clock."""

    runs: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (start, delay)
    ticks: list[tuple[str, float, float, bool]] = field(default_factory=list)
    renders: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)

    def reset(self) -> None:
        self.runs.clear()
        self.ticks.clear()
        self.renders.clear()


RECORDER = Recorder()


def instrument() -> None:
    """Wrap AccountPoller.run/_tick and Exposition._render to record timings (private
    names: this benchmark follows the exporter's internals)."""
    original_run = AccountPoller.run
    original_tick = AccountPoller._tick
    original_render = Exposition._render

    async def run(self: AccountPoller) -> None:
        # run() reads loop.time() for its grid before its first await: same instant.
        RECORDER.runs[self.account.name] = (asyncio.get_running_loop().time(), self.start_delay)
        await original_run(self)

    async def tick(self: AccountPoller) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await original_tick(self)
        RECORDER.ticks.append((self.account.name, start, loop.time(), self.state.up))

    def render(self: Exposition, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original_render(self, *args, **kwargs)
        finally:
            RECORDER.renders.append((start, time.monotonic() - start))

    AccountPoller.run = run  # type: ignore[method-assign]
    AccountPoller._tick = tick  # type: ignore[method-assign]
    Exposition._render = render  # type: ignore[method-assign]


@dataclass(frozen=True)
class Result:
    accounts: int
    polls: int
    missed: int
    failed: int
    start_late: list[float]
    finish: list[float]
    first_round_late: list[float]
    renders: int
    render_mean: float
    cpu: float  # this process's CPU seconds per wall second during the window
    loop_lag_p99: float
    interval: float
    scrapes: list[float]  # latencies
    page_bytes: int  # the last scrape's gzip body
    rss_mb: float  # this process at the end of the window

    @property
    def page_lag(self) -> float:
        """Longest wait from a poll's answer to a page showing it: the longest scrape."""
        return max(self.scrapes, default=math.nan)

    @property
    def sustained(self) -> bool:
        return (self.missed == 0 and self.failed == 0
                and percentile(self.start_late, 99) < SUSTAINED_P99
                and self.page_lag < MAX_PAGE_LAG)


async def watch_loop_lag(lags: list[float], period: float = 0.05) -> None:
    """How late a short sleep wakes up: what every other task on the loop waits."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(period)
        lags.append(loop.time() - start - period)


async def scrape_every_second(port: int, latencies: list[tuple[float, float]],
                              size: list[int]) -> None:
    """GET /metrics (OpenMetrics, gzip) on a 1 s grid; records (start, latency)."""
    loop = asyncio.get_running_loop()
    scraper = Scraper(port, headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"})
    next_slot = loop.time()
    try:
        while True:
            start = loop.time()
            _, body = await scraper.get()
            latencies.append((start, loop.time() - start))
            size[0] = len(body)
            next_slot = max(next_slot + 1.0, loop.time())
            await asyncio.sleep(next_slot - loop.time())
    finally:
        await scraper.close()


async def measure(url: str, accounts: int, interval: float, rounds: int) -> Result:
    RECORDER.reset()
    config = loopback_config(url, [account_entry(i) for i in range(accounts)],
                             poll_interval=f"{interval}s", weight_limit=10**9)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    scrapes: list[tuple[float, float]] = []
    size = [0]
    async with run_exporter(config) as running:
        started = loop.time()
        scraping = asyncio.create_task(scrape_every_second(running.server.port, scrapes, size))
        window = (started + interval, started + interval * (1 + rounds))
        await asyncio.sleep(window[0] - loop.time())
        cpu, wall = time.process_time(), loop.time()
        lag_task = asyncio.create_task(watch_loop_lag(lags))
        await asyncio.sleep(window[1] - loop.time())
        cpu = (time.process_time() - cpu) / (loop.time() - wall)
        rss = rss_mb(os.getpid())
        lag_task.cancel()
        await asyncio.sleep(min(interval, 3.0))  # let late polls of the window start
        scraping.cancel()
        await asyncio.gather(scraping, return_exceptions=True)
    in_window = [latency for start, latency in scrapes if window[0] <= start < window[1]]
    return summarize(accounts, interval, window, cpu, lags, in_window, size[0], rss)


def summarize(accounts: int, interval: float, window: tuple[float, float], cpu: float,
              lags: list[float], scrapes: list[float], page_bytes: int,
              rss: float) -> Result:
    start_late, finish, first_round, failed = [], [], [], 0
    due_in_window: set[tuple[str, int]] = set()
    for name, (run_start, delay) in RECORDER.runs.items():
        # AccountPoller.run polls at once and then from start_delay + interval: tick 0
        # (start_delay) is never polled, by design (the first poll stood in for it).
        first = max(1, math.ceil((window[0] - run_start - delay) / interval))
        last = math.ceil((window[1] - run_start - delay) / interval)
        due_in_window.update((name, k) for k in range(first, last))
    started_ticks = set()
    for name, start, end, ok in RECORDER.ticks:
        run_start, delay = RECORDER.runs[name]
        k = math.floor((start - run_start - delay) / interval + 1e-9)
        due = run_start + delay + k * interval
        if k == 0:
            first_round.append(start - due)
        if (name, k) not in due_in_window:
            continue
        started_ticks.add((name, k))
        start_late.append(start - due)
        finish.append(end - due)
        failed += not ok
    renders = [seconds for start, seconds in RECORDER.renders if window[0] <= start < window[1]]
    return Result(
        accounts=accounts, polls=len(started_ticks), missed=len(due_in_window - started_ticks),
        failed=failed, start_late=start_late, finish=finish, first_round_late=first_round,
        renders=len(renders), render_mean=sum(renders) / len(renders) if renders else 0.0,
        cpu=cpu, loop_lag_p99=percentile(lags, 99), interval=interval, scrapes=scrapes,
        page_bytes=page_bytes, rss_mb=rss)


def row(result: Result) -> tuple[object, ...]:
    return (
        result.accounts, result.polls, result.missed, result.failed,
        f"{ms(percentile(result.start_late, 50)):.1f} / {ms(percentile(result.start_late, 99)):.1f}"
        f" / {ms(max(result.start_late, default=math.nan)):.1f}",
        f"{ms(percentile(result.finish, 99)):.1f}",
        f"{ms(max(result.first_round_late, default=math.nan)):.0f}",
        f"{result.renders} x {ms(result.render_mean):.0f}",
        f"{result.page_lag:.1f}",
        f"{100 * result.cpu:.0f}",
        f"{ms(result.loop_lag_p99):.0f}",
        f"{ms(percentile(result.scrapes, 50)):.0f} / {ms(percentile(result.scrapes, 99)):.0f}"
        f" / {ms(max(result.scrapes, default=math.nan)):.0f}",
        f"{result.page_bytes / 1e6:.1f}",
        f"{result.rss_mb:.0f}",
        "yes" if result.sustained else "NO",
    )


def weight_caps(interval: float) -> list[tuple[str, object]]:
    """The per-IP cap from Binance's limit alone, and where the CLI warns and refuses."""
    per_account = STATUS_WEIGHT * 60 / interval
    hard_cap = math.floor(BINANCE_WEIGHT_LIMIT / per_account)
    warn = refuse = 0
    for count in range(1, hard_cap + 2):
        usage = weight_budget(_config(count, interval)).usage
        warn = count if usage <= WARN_SHARE else warn
        refuse = count if usage <= REFUSE_SHARE else refuse
    return [
        (f"weight per account: {STATUS_WEIGHT} per poll x {60 / interval:g} polls/min",
         f"{per_account:g}/min"),
        (f"per-IP cap: {BINANCE_WEIGHT_LIMIT}/min / ({STATUS_WEIGHT} x 60/{interval:g})",
         f"{hard_cap} accounts"),
        (f"CLI starts without warning (first minute <= {WARN_SHARE:.0%} incl. connects, "
         "clock checks)", f"<= {warn} accounts"),
        (f"CLI refuses to start (first minute > {REFUSE_SHARE:.0%})", f"> {refuse} accounts"),
    ]


def _config(count: int, interval: float) -> Any:
    return parse_config({"poll_interval": f"{interval}s", "position_details": False,
                         "accounts": [account_entry(i) for i in range(count)]})


def sharding_recipe(interval: float, sustained: int | None) -> str:
    cpu = (f"the largest count sustained here was {sustained}" if sustained
           else "no tested count was sustained")
    return f"""Sharding recipe (the weight limit is per egress IP, shared with anything else
using that IP, REST included):
  1. Accounts per IP <= the CLI's limit above at poll_interval {interval:g}s; check CPU
     and page lag in the table for that count ({cpu}).
  2. Split the accounts into shards of at most that many; run one exporter per shard, each
     with its own config (its subset of accounts) and its own egress IP (separate host, NAT
     gateway or network namespace). Account names stay unique across shards.
  3. Prometheus scrapes every shard as a target of the same job; the `account` label tells
     accounts apart, `instance` tells shards apart. Alerts and dashboards need no change.
  4. Or lengthen poll_interval: N accounts fit in half the limit at
     60 x {STATUS_WEIGHT} x N / ({BINANCE_WEIGHT_LIMIT} / 2) seconds (`binance-futures-exporter
     --check-config` prints the budget)."""


async def run_count(accounts: int, positions: int, interval: float, rounds: int) -> Result:
    simulator = ChildSimulator(accounts, weight_limit=10**9, symbols=positions // 2,
                               lively=True)
    url = await asyncio.to_thread(simulator.start)
    try:
        return await measure(url, accounts, interval, rounds)
    finally:
        await asyncio.to_thread(simulator.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--positions", type=int, default=20,
                        help="positions per account, an even number (default 20)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measured intervals after the warm-up one (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print_header(f"scale: accounts of {args.positions} positions per process at a "
                 f"{args.interval:g}s interval, scraped every 1 s",
                 "python -m benchmarks.scale " + " ".join(sys.argv[1:]))
    instrument()
    results: list[Result] = []
    for count in args.accounts:
        results.append(asyncio.run(run_count(count, args.positions, args.interval,
                                             args.rounds)))
        print(f"  {count} accounts measured", flush=True)
    print()
    print_table(("accounts", "polls", "missed ticks", "failed", "start late p50/p99/max (ms)",
                 "finish p99 (ms)", "first round max late (ms)", "renders x mean ms",
                 "page lag <= (s)",
                 "CPU % (1 core=100)", "loop lag p99 (ms)", "scrape p50/p99/max (ms)",
                 "gzip page (MB)", "RSS (MB)", "sustained"),
                [row(result) for result in results])
    sustained = max((r.accounts for r in results if r.sustained), default=None)
    print_table(("per-IP weight", "value"), weight_caps(args.interval))
    print(sharding_recipe(args.interval, sustained))


if __name__ == "__main__":
    main()
