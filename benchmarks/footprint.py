"""Memory and file descriptors of the exporter process over time.

Runs the real CLI (``python -m exporter --config ... --listen 127.0.0.1:PORT``) as
a subprocess against a simulator in this process (10 accounts polled every
second by default), scrapes it every 5 s as a Prometheus would, and reads
VmRSS, open fds, threads and CPU time from /proc/<pid> after start and then
every minute. Goal: RSS < 60 MB and flat.

    python -m benchmarks.footprint            # 10 minutes
    python -m benchmarks.footprint --minutes 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks._common import (
    LOOPBACK,
    Scraper,
    add_accounts,
    config_document,
    cpu_seconds,
    free_port,
    print_header,
    print_table,
    proc_status,
)
from exporter.simulator import Simulator

SCRAPE_EVERY = 5.0
RSS_GOAL_MB = 60.0
UP_LINE = re.compile(rb"^binance_futures_up\{[^}]*\} 1\.0$", re.MULTILINE)


@dataclass(frozen=True)
class Sample:
    minute: float
    rss_mb: float
    fds: int
    threads: int
    cpu_seconds: float
    polls: int
    page_bytes: int


def sample(pid: int, started: float, polls: int, page_bytes: int) -> Sample:
    status = proc_status(pid)
    return Sample(
        minute=(time.monotonic() - started) / 60,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        cpu_seconds=cpu_seconds(pid),
        polls=polls,
        page_bytes=page_bytes,
    )


async def scrape_forever(scraper: Scraper, last_size: list[int]) -> None:
    while True:
        status, body = await scraper.get()
        if status == 200:
            last_size[0] = len(body)
        await asyncio.sleep(SCRAPE_EVERY)


async def wait_all_up(scraper: Scraper, accounts: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            status, body = await scraper.get()
            if status == 200 and len(UP_LINE.findall(body)) == accounts:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("the exporter did not report every account up in time")


async def run(args: argparse.Namespace) -> list[Sample]:
    async with Simulator(seed=5, weight_limit=100_000) as sim:
        accounts = add_accounts(sim, args.accounts, positions=args.positions)
        document = config_document(sim.url, accounts, poll_interval=f"{args.interval}s",
                                   weight_limit=100_000)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp, "config.yaml")
            config.write_text(yaml.safe_dump(document))
            config.chmod(0o600)
            port = free_port()
            log = Path(tmp, "exporter.log").open("wb")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--config", str(config),
                 "--listen", f"{LOOPBACK}:{port}", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT)
            try:
                return await observe(sim, process, port, args)
            finally:
                process.terminate()
                # in a thread: the simulator shares this event loop and must answer
                # the exporter's close frames while it shuts down
                await asyncio.to_thread(process.wait, 10)
                log.close()
                errors = Path(tmp, "exporter.log").read_text(errors="replace").strip()
                if errors:
                    print("exporter log (warnings and errors):\n" + errors[-3000:] + "\n")


async def observe(sim: Simulator, process: subprocess.Popen[bytes], port: int,
                  args: argparse.Namespace) -> list[Sample]:
    started = time.monotonic()
    scraper = Scraper(port, headers={"Accept-Encoding": "gzip"})
    await asyncio.sleep(0.3)
    await wait_all_up(Scraper(port), args.accounts)
    last_size = [0]
    scraping = asyncio.create_task(scrape_forever(scraper, last_size))

    def polls() -> int:
        return sum(1 for r in sim.requests if r.method == "v2/account.status")

    samples = [sample(process.pid, started, polls(), last_size[0])]
    print_row(samples[-1])
    for minute in range(1, args.minutes + 1):
        await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
        if process.poll() is not None:
            raise RuntimeError(f"the exporter exited with {process.returncode}")
        samples.append(sample(process.pid, started, polls(), last_size[0]))
        print_row(samples[-1])
    scraping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await scraping
    await scraper.close()
    return samples


def print_row(row: Sample) -> None:
    print(f"  t={row.minute:5.2f} min  RSS {row.rss_mb:6.1f} MB  fds {row.fds}  threads "
          f"{row.threads}  cpu {row.cpu_seconds:.1f}s  polls {row.polls}", flush=True)


def report(samples: list[Sample], args: argparse.Namespace) -> None:
    print()
    print_table(
        ("t (min)", "RSS (MB)", "open fds", "threads", "CPU (s, cumulative)", "polls so far",
         "page (gzip bytes)"),
        [(f"{s.minute:.2f}", f"{s.rss_mb:.1f}", s.fds, s.threads, f"{s.cpu_seconds:.1f}",
          s.polls, s.page_bytes) for s in samples])
    first, last = samples[0], samples[-1]
    peak = max(s.rss_mb for s in samples)
    elapsed = (last.minute - first.minute) * 60
    cpu = (last.cpu_seconds - first.cpu_seconds) / elapsed if elapsed else float("nan")
    print_table(("figure", "value", "goal"), [
        ("RSS after start (MB)", f"{first.rss_mb:.1f}", f"< {RSS_GOAL_MB:.0f}"),
        ("RSS peak (MB)", f"{peak:.1f}", f"< {RSS_GOAL_MB:.0f}"),
        ("RSS growth start -> end (MB)", f"{last.rss_mb - first.rss_mb:+.1f}", "flat"),
        ("open fds start -> end", f"{first.fds} -> {last.fds}", "flat"),
        ("CPU use after start (% of one core)", f"{100 * cpu:.2f}", ""),
        ("polls during the run", last.polls - first.polls,
         f"{args.accounts} accounts x {elapsed / args.interval:.0f} ticks"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10, help="how long to watch (default 10)")
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds")
    parser.add_argument("--positions", type=int, default=3,
                        help="positions per simulated account (lively: they open and close)")
    args = parser.parse_args()
    print_header(f"footprint: exporter CLI subprocess, {args.accounts} accounts every "
                 f"{args.interval:g}s for {args.minutes} min, scraped (gzip) every "
                 f"{SCRAPE_EVERY:g}s", "python -m benchmarks.footprint " + " ".join(sys.argv[1:]))
    samples = asyncio.run(run(args))
    report(samples, args)


if __name__ == "__main__":
    main()
