"""CPU cost of one poll: decode and parse an answer, build the state, render the page.

The answer is what the simulator sends for a hedge-mode, multi-assets account
with 200 symbols x 2 sides = 400 positions and 4 assets. Each step runs many
times in batches; a figure is the median over batches of the mean per call, as
CPU time (``time.process_time``) and wall time (``time.perf_counter``).
Goal: < 5 ms per 400-position answer.

Render: prometheus_client's own encoders (the reference) against the
exposition, whose cost per poll is publishing the polled account's next state
(its mark-price amounts moved, see ``market_frames``) and the one scrape after
it rendering the format it asks for.

    python -m benchmarks.poll_cost
    python -m benchmarks.poll_cost --iterations 2000 --renders 50
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from benchmarks._common import (
    account_name,
    add_accounts,
    answer_frame,
    big_simulated_account,
    big_states,
    market_frames,
    print_header,
    print_table,
    state_from_frame,
)
from exporter import __version__
from exporter.clock import Clock
from exporter.exposition import Exposition, render_page
from exporter.metrics import collect
from exporter.poller import DURATION_BUCKETS
from exporter.simulator import Simulator
from exporter.snapshot import parse_account_status, parse_rate_limits
from exporter.state import AccountState

GOAL_MS = 5.0
WHOLE_POLL = "whole poll: json.loads + parse + AccountState"


def measure(fn: Callable[[], object], iterations: int, batches: int = 5) -> tuple[float, float]:
    """Median over ``batches`` of the mean CPU and wall seconds per call of ``fn``.

    The garbage collector stays on, as in the exporter; batching keeps one
    unlucky full collection (or a neighbour's burst on a shared machine) from
    deciding the figure.
    """
    fn()
    per_batch = max(1, iterations // batches)
    cpu_times, wall_times = [], []
    for _ in range(batches):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(per_batch):
            fn()
        cpu_times.append((time.process_time() - cpu) / per_batch)
        wall_times.append((time.perf_counter() - wall) / per_batch)
    return statistics.median(cpu_times), statistics.median(wall_times)


def received_state(base: AccountState, message: dict[str, Any]) -> AccountState:
    """What the poller does with a decoded answer: parse it, then two ``replace`` calls."""
    received_at = time.time()
    snapshot, _ = parse_account_status(message["result"], received_at=received_at)
    rate_limits, _ = parse_rate_limits(message["rateLimits"])
    state = replace(base, rate_limits=rate_limits, durations=base.durations.observe(0.012))
    return replace(state, snapshot=snapshot, up=True, last_success=received_at,
                   expires_at=time.monotonic() + 45.0, backoff_until=0.0)


def poll_steps(frame: str, name: str) -> dict[str, Callable[[], object]]:
    """The steps the client and poller run for one answer, each callable on its own.

    The client's own frame checks (a few dict look-ups) are left out: they are
    private to ``exporter.client`` and cost nothing next to these.
    """
    message = json.loads(frame)
    base = AccountState.initial(name, DURATION_BUCKETS)
    return {
        "json.loads of the frame": lambda: json.loads(frame),
        "parse_account_status + parse_rate_limits": lambda: (
            parse_account_status(message["result"], received_at=1.0),
            parse_rate_limits(message["rateLimits"])),
        "parse + build the AccountState": lambda: received_state(base, message),
        WHOLE_POLL: lambda: received_state(base, json.loads(frame)),
    }


def render_steps(states: list[AccountState],
                 answers: list[AccountState]) -> dict[str, Callable[[], object]]:
    """The reference (prometheus_client renders every account) against the exposition."""
    now = time.monotonic()
    collector = _Families(collect(states, now, __version__))
    return {
        "reference: collect (families from states)": lambda: collect(states, now, __version__),
        "reference: text generate_latest": lambda: exposition.generate_latest(
            collector),  # type: ignore[arg-type]
        "reference: OpenMetrics generate_latest": lambda: openmetrics.generate_latest(
            collector),  # type: ignore[arg-type]
        "reference: render_page (all of the above, both gzips)":
            lambda: render_page(states, now, __version__),
        "Exposition, first scrape (every account encoded), OpenMetrics + gzip":
            lambda: first_scrape(states),
        "Exposition, one account polled, then a scrape, OpenMetrics + gzip":
            one_account_polled(states, answers, gzipped=True),
        "  same, OpenMetrics without gzip": one_account_polled(states, answers, gzipped=False),
    }


class SteppedClock(Clock):
    """Monotonic time that moves a second per poll, as with polls and scrapes every second."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


def first_scrape(states: list[AccountState]) -> bytes:
    exposition = Exposition(__version__)
    for state in states:
        exposition.publish(state)
    return exposition.page().openmetrics_gzip


def one_account_polled(states: list[AccountState], answers: list[AccountState],
                       gzipped: bool) -> Callable[[], object]:
    """What one poll costs the exposition: publish the account's next state (its values
    moved), then the scrape that follows renders (and reads the process metrics)."""
    clock = SteppedClock()
    exposition = Exposition(__version__, clock=clock)
    for state in states:
        exposition.publish(state)
    exposition.page().body(True, gzipped)
    polls = itertools.cycle(answers)

    def poll() -> object:
        clock.now += 1.0
        exposition.publish(next(polls))
        return exposition.page().body(True, gzipped)

    return poll


class _Families:
    """The ``collect()`` interface prometheus_client's encoders expect."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def samples_in(states: list[AccountState]) -> tuple[int, int]:
    """Number of samples and bytes of the text page."""
    page = render_page(states, time.monotonic(), __version__)
    lines = [line for line in page.text.split(b"\n") if line and not line.startswith(b"#")]
    return len(lines), len(page.text)


def small_states(accounts: int) -> list[AccountState]:
    """The footprint benchmark's page: one-way accounts with 3 positions each."""
    sim = Simulator(seed=5, lively=False)
    add_accounts(sim, accounts)
    now = time.monotonic()
    return [state_from_frame(account_name(i), answer_frame(sim.accounts[account_name(i)]), now)
            for i in range(accounts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=500,
                        help="calls per parse step (default 500)")
    parser.add_argument("--renders", type=int, default=20, help="calls per render step")
    parser.add_argument("--symbols", type=int, default=200,
                        help="symbols per account; positions = 2 x symbols (default 200)")
    args = parser.parse_args()
    print_header("poll_cost: CPU per answer, per position, and per render",
                 "python -m benchmarks.poll_cost " + " ".join(sys.argv[1:]))

    sim = Simulator(seed=1, lively=False)  # not started: only its account model is used
    account = big_simulated_account(sim, 0, args.symbols)
    frame = answer_frame(account)
    positions = 2 * args.symbols
    print(f"answer: {positions} positions, {len(account.result()['assets'])} assets, "
          f"{len(frame):,} bytes of JSON\n")
    rows, whole = [], 0.0
    for step, fn in poll_steps(frame, account_name(0)).items():
        cpu, wall = measure(fn, args.iterations)
        rows.append((step, f"{cpu * 1e6:,.0f}", f"{wall * 1e6:,.0f}",
                     f"{cpu * 1e6 / positions:.2f}"))
        whole = cpu if step == WHOLE_POLL else whole
    print_table(("step (one answer)", "CPU µs/answer", "wall µs/answer", "CPU µs/position"),
                rows)
    verdict = "meets" if whole * 1000 < GOAL_MS else "MISSES"
    print(f"whole poll: {whole * 1000:.2f} ms CPU per {positions}-position answer "
          f"-> {verdict} the goal < {GOAL_MS:g} ms\n")

    # the polled account's next answers: the market moved (unchanged rows are cheaper)
    answers = [state_from_frame(account_name(0), moved, time.monotonic(), stale_after=1e9)
               for moved in market_frames(account, 10)]
    small = small_states(10)
    pages = [
        (f"1 account x {positions} positions", answers[:1], answers),
        (f"10 accounts x {positions} positions",
         big_states(10, args.symbols, time.monotonic()), answers),
        ("10 accounts x 3 positions (footprint)", small,
         [replace(small[0], connections=number) for number in range(10)]),
    ]
    for title, states, polled in pages:
        samples, size = samples_in(states)
        rows = []
        for step, fn in render_steps(states, polled).items():
            cpu, wall = measure(fn, args.renders if samples < 5000 else args.renders // 4,
                                batches=3 if samples < 5000 else 1)
            rows.append((step, f"{cpu * 1000:.2f}", f"{wall * 1000:.2f}",
                         f"{cpu * 1e6 / samples:.2f}"))
        print(f"render per poll, page of {title}: {samples:,} samples, {size:,} bytes of text")
        print_table(("step", "CPU ms/render", "wall ms/render", "CPU µs/sample"), rows)


if __name__ == "__main__":
    main()
