"""CPU the exporter process spends per poll, against ``json.loads`` of the answer it parses.

The issue-14 figure, black-box: the real CLI (``python -m exporter --config
...``) polls one simulated account of 400 positions (hedge mode, multi-assets,
200 symbols x 2 sides) every second; the simulator runs in its own process and
is lively, so mark prices and with them every position's PnL and notional
change on every answer. This process scrapes /metrics once a second as
Prometheus does (OpenMetrics preferred, gzip). After a warm-up, the exporter's
CPU time (utime + stime from ``/proc/<pid>/stat``) over the window is divided
by the polls it made (the count of its own request-duration histogram, read
from the scraped page), and compared with ``json.loads`` of an answer of the
same shape, timed here: CPU per poll includes the WebSocket frame, parsing,
publishing, rendering and the poll's share of the scrapes.
Goal: at most 10x ``json.loads`` (stretch 5x).

``--baseline DIR`` first measures the CLI of another checkout (e.g. a
``git worktree`` of an older commit) the same way and prints both.

    python -m benchmarks.poll_cpu
    python -m benchmarks.poll_cpu --seconds 120 --baseline /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import (
    LOOPBACK,
    OPENMETRICS_ACCEPT,
    ChildSimulator,
    Scraper,
    account_entry,
    account_name,
    answer_frame,
    big_simulated_account,
    config_document,
    cpu_seconds,
    free_port,
    ms,
    percentile,
    print_header,
    print_table,
    rss_mb,
)
from exporter.simulator import Simulator

GOAL, STRETCH = 10.0, 5.0
REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """What one exporter process did during the measured window."""

    checkout: Path
    seconds: float
    polls: int
    cpu: float  # seconds
    rss_mb: float
    scrape_latencies: list[float]
    body_bytes: int

    @property
    def cpu_per_poll(self) -> float:
        return self.cpu / self.polls if self.polls else float("nan")


def json_loads_times(frame: str, repeat: int = 200) -> list[float]:
    """CPU seconds of ``json.loads`` of ``frame``: the mean of each of ``repeat`` batches."""
    json.loads(frame)
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(10):
            json.loads(frame)
        times.append((time.process_time() - start) / 10)
    return times


def polls_on(page: bytes, account: str) -> int:
    """Successful requests so far, from the page's request-duration histogram count."""
    prefix = f'binance_futures_request_duration_seconds_count{{account="{account}"}} '.encode()
    start = page.index(prefix) + len(prefix)
    return int(float(page[start:page.index(b"\n", start)]))


async def scrape_every_second(scraper: Scraper, pages: list[tuple[float, bytes]],
                              latencies: list[float]) -> None:
    """GET /metrics on a 1 s grid; keeps (time, decompressed body) of the last scrape."""
    loop = asyncio.get_running_loop()
    next_slot = loop.time()
    while True:
        start = loop.time()
        status, body = await scraper.get()
        latencies.append(loop.time() - start)
        if status == 200:
            pages[:] = [(start, gzip.decompress(body))]
        next_slot += 1.0
        await asyncio.sleep(max(0.0, next_slot - loop.time()))


async def wait_for_page(pages: list[tuple[float, bytes]], after: float, account: str,
                        timeout: float = 60.0) -> tuple[float, bytes]:
    """The first page scraped after ``after`` on which the account is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    up = f'binance_futures_up{{account="{account}"}} 1.0\n'.encode()
    while loop.time() < deadline:
        if pages and pages[0][0] > after and up in pages[0][1]:
            return pages[0]
        await asyncio.sleep(0.05)
    raise RuntimeError("the exporter did not serve a page with the account up in time")


async def measure(checkout: Path, url: str, args: argparse.Namespace) -> Run:
    account = account_name(0)
    document = config_document(url, [account_entry(0)], poll_interval=f"{args.interval}s",
                               weight_limit=10**9, position_details=args.position_details)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "config.yaml")
        config.write_text(yaml.safe_dump(document))
        config.chmod(0o600)
        port = free_port()
        log_path = Path(tmp, "exporter.log")
        with log_path.open("wb") as log:
            # cwd and PYTHONPATH pick the checkout whose exporter package runs.
            process = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--config", str(config),
                 "--listen", f"{LOOPBACK}:{port}", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, cwd=checkout,
                env={**os.environ, "PYTHONPATH": str(checkout)})
            try:
                return await observe(checkout, process, port, account, args)
            finally:
                process.terminate()
                await asyncio.to_thread(process.wait, 10)
        errors = log_path.read_text(errors="replace").strip()
        if errors:
            print(f"exporter log ({checkout}):\n{errors[-3000:]}\n")


async def observe(checkout: Path, process: subprocess.Popen[bytes], port: int, account: str,
                  args: argparse.Namespace) -> Run:
    loop = asyncio.get_running_loop()
    scraper = Scraper(port, headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"})
    for _ in range(100):  # the CLI needs a moment to import and bind
        with contextlib.suppress(OSError):
            await scraper.get()
            break
        await asyncio.sleep(0.1)
    pages: list[tuple[float, bytes]] = []
    latencies: list[float] = []
    scraping = asyncio.create_task(scrape_every_second(scraper, pages, latencies))
    try:
        await wait_for_page(pages, 0.0, account)
        await asyncio.sleep(args.warmup)
        first_at, first = await wait_for_page(pages, loop.time(), account)
        cpu_start, latencies_start = cpu_seconds(process.pid), len(latencies)
        await asyncio.sleep(args.seconds)
        last_at, last = await wait_for_page(pages, loop.time(), account)
        cpu_end = cpu_seconds(process.pid)
        if process.poll() is not None:
            raise RuntimeError(f"the exporter exited with {process.returncode}")
        requests_per_poll = 2 if args.position_details else 1
        return Run(checkout=checkout, seconds=last_at - first_at,
                   polls=(polls_on(last, account) - polls_on(first, account)) // requests_per_poll,
                   cpu=cpu_end - cpu_start, rss_mb=rss_mb(process.pid),
                   scrape_latencies=latencies[latencies_start:], body_bytes=len(last))
    finally:
        scraping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraping
        await scraper.close()


async def run_all(checkouts: list[Path], args: argparse.Namespace) -> list[Run]:
    runs = []
    for checkout in checkouts:
        simulator = ChildSimulator(1, symbols=args.symbols, lively=True)
        url = await asyncio.to_thread(simulator.start)
        try:
            runs.append(await measure(checkout, url, args))
        finally:
            await asyncio.to_thread(simulator.stop)
        print(f"  measured {checkout}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval (default 1)")
    parser.add_argument("--symbols", type=int, default=200,
                        help="symbols of the account; positions = 2 x symbols (default 200)")
    parser.add_argument("--position-details", action="store_true",
                        help="also poll v2/account.position (needs a simulator that serves it)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a checkout whose exporter is measured first, for comparison")
    args = parser.parse_args()
    print_header(f"poll_cpu: CLI process, 1 account x {2 * args.symbols} changing positions "
                 f"every {args.interval:g}s, scraped every 1 s (OpenMetrics + gzip)",
                 "python -m benchmarks.poll_cpu " + " ".join(sys.argv[1:]))
    sim = Simulator(seed=3, lively=False)  # not started: only its account model is used
    account = big_simulated_account(sim, 0, args.symbols)
    # The answers one poll parses: the status, and with --position-details the positions.
    frames = [answer_frame(account)]
    if args.position_details:
        positions: Any = account.position_result()  # a list: the result of v2/account.position
        frames.append(answer_frame(account, result=positions))
    before = [json_loads_times(frame) for frame in frames]
    checkouts = [args.baseline.resolve()] if args.baseline else []
    runs = asyncio.run(run_all([*checkouts, REPOSITORY], args))
    # Timed before and after the runs: on a shared machine one batch of timings can be off.
    after = [json_loads_times(frame) for frame in frames]
    loads = sum(statistics.median(early + late) for early, late in zip(before, after, strict=True))
    sizes = " + ".join(f"{len(frame):,}" for frame in frames)
    print(f"\njson.loads of the {len(frames)} answer(s) of a poll ({sizes} bytes): "
          f"{ms(loads):.3f} ms CPU (sum of medians; before the runs "
          f"{ms(sum(map(statistics.median, before))):.3f}, after "
          f"{ms(sum(map(statistics.median, after))):.3f})\n")
    print_table(
        ("exporter", "window (s)", "polls", "CPU (s)", "CPU per poll (ms)", "x json.loads",
         "CPU % of a core", "RSS (MB)", "scrape p50 / p99 / max (ms)", "page (bytes, gunzipped)"),
        [(("baseline " if run.checkout != REPOSITORY else "this checkout ") + str(run.checkout),
          f"{run.seconds:.1f}", run.polls, f"{run.cpu:.2f}", f"{ms(run.cpu_per_poll):.2f}",
          f"{run.cpu_per_poll / loads:.1f}", f"{100 * run.cpu / run.seconds:.1f}",
          f"{run.rss_mb:.1f}",
          f"{ms(percentile(run.scrape_latencies, 50)):.2f} / "
          f"{ms(percentile(run.scrape_latencies, 99)):.2f} / "
          f"{ms(max(run.scrape_latencies, default=float('nan'))):.2f}",
          run.body_bytes) for run in runs])
    ratio = runs[-1].cpu_per_poll / loads
    verdict = ("meets the goal and the stretch goal" if ratio <= STRETCH
               else "meets the goal" if ratio <= GOAL else "MISSES the goal")
    ticks = os.sysconf("SC_CLK_TCK")
    print(f"CPU per poll = {ratio:.1f} x json.loads: {verdict} (<= {GOAL:g}x, stretch "
          f"{STRETCH:g}x). /proc counts CPU in clock ticks ({ticks}/s): the CPU of this "
          f"window is exact to +-{2 / ticks / runs[-1].cpu:.1%}.")


if __name__ == "__main__":
    main()
