"""/metrics latency with a large page, against rendering the page on every scrape.

10 accounts x 200 symbols x 2 sides (hedge mode, multi-assets: 4000 positions
and 40 asset balances, ~33k samples) are parsed from simulator answers into
``AccountState``s and served by the real ``Exposition`` + ``MetricsServer`` in
a child process (so client and server do not share a GIL). This process
scrapes with ``http.client`` over keep-alive connections: first sequentially,
then from concurrent threads, for plain text, gzip, OpenMetrics and
OpenMetrics + gzip. Latency = request written to last body byte read.

Beside it: what prometheus_client's ``generate_latest()`` takes to produce
the same series (collect + encode, as an exporter that renders per scrape
does), and what the exporter pays for a first scrape, when every account has
to be encoded (after a change it encodes only the accounts that changed).
Goal: p99 < 5 ms and at least 10x below generate_latest at this size.

    python -m benchmarks.scrape_latency
    python -m benchmarks.scrape_latency --scrapes 5000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from benchmarks._common import (
    LOOPBACK,
    OPENMETRICS_ACCEPT,
    big_states,
    ms,
    percentile,
    print_header,
    print_table,
)
from exporter import __version__
from exporter.exposition import Exposition, render_page
from exporter.http import MetricsServer
from exporter.metrics import collect
from exporter.state import AccountState

GOAL_P99_MS = 5.0
VARIANTS: dict[str, dict[str, str]] = {
    "plain text": {},
    "text + gzip": {"Accept-Encoding": "gzip"},
    "OpenMetrics": {"Accept": OPENMETRICS_ACCEPT},
    "OpenMetrics + gzip": {"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"},
}


# ---------------------------------------------------------------- the server (child process)


def serve(conn: Connection, accounts: int, symbols: int) -> None:
    """Child process: serve the states through Exposition + MetricsServer until told to stop."""

    async def run() -> None:
        exposition = Exposition(__version__)
        for state in big_states(accounts, symbols, time.monotonic()):
            exposition.publish(state)
        exposition.render_now()
        server = MetricsServer(LOOPBACK, 0, exposition.body, version=__version__)
        await server.start()
        conn.send(server.port)
        while not conn.poll():
            await asyncio.sleep(0.1)
        await server.stop()

    asyncio.run(run())


# ---------------------------------------------------------------- render-per-scrape baseline


class StatesCollector:
    """A custom collector over fixed states: how an exporter rendering per scrape is built."""

    def __init__(self, states: list[AccountState]) -> None:
        self._states = states

    def collect(self) -> Iterable[Metric]:
        return collect(self._states, time.monotonic(), __version__)


def first_scrape(states: list[AccountState]) -> bytes:
    exposition = Exposition(__version__)
    for state in states:
        exposition.publish(state)
    return exposition.page().openmetrics_gzip


def timed(fn: object, repeat: int) -> list[float]:
    assert callable(fn)
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def render_figures(states: list[AccountState], repeat: int) -> dict[str, float]:
    """Median seconds of generate_latest (both formats) and of the exposition's first render."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatesCollector(states))  # type: ignore[arg-type]
    return {
        "generate_latest (text)": percentile(timed(lambda: generate_latest(registry), repeat), 50),
        "generate_latest (OpenMetrics)": percentile(
            timed(lambda: openmetrics.generate_latest(registry), repeat), 50),
        "Exposition, first scrape (every account encoded), OpenMetrics + gzip": percentile(
            timed(lambda: first_scrape(states), repeat), 50),
    }


# ---------------------------------------------------------------- the scrapers


def scrape_many(port: int, headers: dict[str, str], count: int) -> tuple[list[float], int]:
    """``count`` keep-alive GET /metrics; returns each latency and the last body size."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    latencies, size = [], 0
    try:
        for _ in range(count):
            start = time.perf_counter()
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
            size = len(body)
    finally:
        connection.close()
    return latencies, size


def scrape_concurrently(port: int, headers: dict[str, str], threads: int,
                        per_thread: int) -> tuple[list[float], float]:
    """``threads`` scrapers at once, each ``per_thread`` scrapes; latencies and wall time."""
    results: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        scrape_many(port, headers, 2)  # connect and warm up outside the measurement
        barrier.wait()
        results[index] = scrape_many(port, headers, per_thread)[0]

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in workers:
        thread.join()
    return [t for result in results for t in result], time.perf_counter() - start


def latency_row(name: str, latencies: list[float], size: int | str) -> tuple[object, ...]:
    return (name, size, f"{ms(percentile(latencies, 50)):.2f}",
            f"{ms(percentile(latencies, 99)):.2f}", f"{ms(max(latencies)):.2f}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=200,
                        help="symbols per account, each with a LONG and a SHORT position")
    parser.add_argument("--scrapes", type=int, default=1000,
                        help="scrapes per format, sequential and concurrent (default 1000)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--renders", type=int, default=5, help="repetitions of each render")
    args = parser.parse_args()
    print_header(f"scrape_latency: {args.accounts} accounts x {args.symbols} symbols x 2 sides",
                 "python -m benchmarks.scrape_latency " + " ".join(sys.argv[1:]))

    states = big_states(args.accounts, args.symbols, time.monotonic())
    page = render_page(states, time.monotonic(), __version__)
    samples = sum(1 for line in page.text.split(b"\n") if line and not line.startswith(b"#"))
    print(f"page: {samples:,} samples; text {len(page.text):,} B, gzip {len(page.text_gzip):,} B, "
          f"OpenMetrics {len(page.openmetrics):,} B, gzip {len(page.openmetrics_gzip):,} B\n")
    renders = render_figures(states, args.renders)
    del states, page

    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    server = context.Process(target=serve, args=(child_conn, args.accounts, args.symbols),
                             daemon=True)
    server.start()
    try:
        port = conn.recv()
        sequential, concurrent = measure(port, args)
    finally:
        conn.send("stop")
        server.join(10)
    report(sequential, concurrent, renders, args)


def measure(port: int, args: argparse.Namespace) -> tuple[list[tuple[object, ...]],
                                                          list[tuple[object, ...]]]:
    sequential, concurrent = [], []
    for name, headers in VARIANTS.items():
        scrape_many(port, headers, 20)  # warm up
        latencies, size = scrape_many(port, headers, args.scrapes)
        sequential.append(latency_row(name, latencies, size))
        per_thread = max(1, args.scrapes // args.concurrency)
        latencies, wall = scrape_concurrently(port, headers, args.concurrency, per_thread)
        concurrent.append((*latency_row(name, latencies, size), f"{len(latencies) / wall:,.0f}"))
        print(f"  measured {name}", flush=True)
    print()
    return sequential, concurrent


def report(sequential: list[tuple[object, ...]], concurrent: list[tuple[object, ...]],
           renders: dict[str, float], args: argparse.Namespace) -> None:
    print(f"{args.scrapes} sequential scrapes per format, one keep-alive connection (ms):")
    print_table(("format", "body bytes", "p50", "p99", "max"), sequential)
    print(f"{args.concurrency} concurrent scrapers, {args.scrapes // args.concurrency} scrapes "
          f"each (ms; the server is one event loop, so they queue):")
    print_table(("format", "body bytes", "p50", "p99", "max", "scrapes/s"), concurrent)
    print("rendering the same series (median of runs, ms):")
    print_table(("what", "ms"), [(name, f"{ms(t):.1f}") for name, t in renders.items()])
    text_p99 = float(str(sequential[0][3]))
    om_p99 = float(str(sequential[2][3]))
    worst_p99 = max(float(str(row[3])) for row in sequential)
    text_ratio = ms(renders["generate_latest (text)"]) / text_p99
    om_ratio = ms(renders["generate_latest (OpenMetrics)"]) / om_p99
    print_table(("goal", "measured", "verdict"), [
        (f"sequential p99 < {GOAL_P99_MS:g} ms (worst format)", f"{worst_p99:.2f} ms",
         "met" if worst_p99 < GOAL_P99_MS else "MISSED"),
        (">= 10x below generate_latest (text)", f"{text_ratio:,.0f}x",
         "met" if text_ratio >= 10 else "MISSED"),
        (">= 10x below generate_latest (OpenMetrics)", f"{om_ratio:,.0f}x",
         "met" if om_ratio >= 10 else "MISSED"),
    ])


if __name__ == "__main__":
    main()
