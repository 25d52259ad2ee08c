"""What the exposition renders, when, and where: only what changed, only when asked.

Renders are counted by wrapping the two steps that cost (encoding an
account's samples, joining a format's page); the clock is stepped by hand.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

import exporter.exposition as exposition_module
from exporter import __version__
from exporter.clock import Clock
from exporter.exposition import Exposition, render_page
from exporter.simulator import Simulator
from exporter.snapshot import RateLimit, parse_account_status
from exporter.state import AccountState, RequestDurations
from tests.support import parse_metrics, settle

NOW = 1_000.0


class ManualClock(Clock):
    def __init__(self) -> None:
        self.now = NOW

    def monotonic(self) -> float:
        return self.now


class OwnMetrics:
    """A stand-in for the process collector that counts its readings and where they ran."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self) -> list[Metric]:
        self.threads.append(threading.current_thread().name)
        return [GaugeMetricFamily("process_open_fds", "Open fds.", value=len(self.threads))]


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts account encodings (by account name) and page joins ("page")."""
    counts: Counter[str] = Counter()
    blocks, join = exposition_module.account_tables, exposition_module._join

    def counted_blocks(state: AccountState, now: float) -> Any:
        counts[state.name] += 1
        return blocks(state, now)

    def counted_join(*args: Any) -> bytes:
        counts["page"] += 1
        return join(*args)

    monkeypatch.setattr(exposition_module, "account_tables", counted_blocks)
    monkeypatch.setattr(exposition_module, "_join", counted_join)
    return counts


def states_from_simulator(count: int, seed: int) -> list[AccountState]:
    """Realistic states: answers of simulated accounts of every shape."""
    sim = Simulator(seed=seed, lively=False)
    states = []
    for index in range(count):
        account = sim.add_account(f"acct-{index:02d}", api_key=f"key{index}", api_secret="s",
                                  multi_assets=index % 2 == 1, hedge_mode=index % 3 == 1,
                                  positions=index % 4)
        result = json.loads(json.dumps(account.result()))
        snapshot, _ = parse_account_status(result, received_at=1_800_000_000.0)
        states.append(replace(
            AccountState.initial(account.name, (0.1, 1.0)),
            snapshot=snapshot, expires_at=NOW + 10,
            rate_limits=(RateLimit("REQUEST_WEIGHT", "MINUTE", 1, 2400, 5),),
            up=True, last_success=1_800_000_000.0, errors={"timeout": index},
            connections=1, durations=RequestDurations.empty((0.1, 1.0)).observe(0.05 * index),
            clock_offset=0.001 * index))
    return states


def published(states: list[AccountState], clock: Clock, own: OwnMetrics) -> Exposition:
    exposition = Exposition(__version__, clock=clock, own_metrics=own)
    for state in states:
        exposition.publish(state)
    return exposition


async def test_only_changed_accounts_are_reencoded(renders: Counter[str]) -> None:
    states = states_from_simulator(3, seed=5)
    exposition = published(states, ManualClock(), OwnMetrics())
    await exposition.body(openmetrics=True, gzipped=True)
    assert renders == {"acct-00": 1, "acct-01": 1, "acct-02": 1, "page": 1}

    exposition.publish(replace(states[1], up=False))
    await exposition.body(openmetrics=True, gzipped=True)
    assert renders == {"acct-00": 1, "acct-01": 2, "acct-02": 1, "page": 2}
    # the other format reuses the accounts' encodings: one more page, no account
    await exposition.body(openmetrics=False, gzipped=False)
    assert renders == {"acct-00": 1, "acct-01": 2, "acct-02": 1, "page": 3}


async def test_nothing_is_rendered_until_a_scrape_asks(renders: Counter[str]) -> None:
    states = states_from_simulator(2, seed=5)
    own = OwnMetrics()
    exposition = published(states, ManualClock(), own)
    for number in range(5):
        exposition.publish(replace(states[0], connections=number))
    assert renders == {} and own.threads == []
    await exposition.body(openmetrics=False, gzipped=True)
    assert renders == {"acct-00": 1, "acct-01": 1, "page": 1}


async def test_own_metrics_are_refreshed_without_rendering_the_page(
        renders: Counter[str]) -> None:
    clock, own = ManualClock(), OwnMetrics()
    exposition = published(states_from_simulator(2, seed=5), clock, own)
    first = await exposition.body(openmetrics=True, gzipped=False)
    again = await exposition.body(openmetrics=True, gzipped=False)
    assert again is first and len(own.threads) == 1  # served from the cache
    clock.now += exposition_module.OWN_METRICS_MAX_AGE
    second = await exposition.body(openmetrics=True, gzipped=False)
    assert len(own.threads) == 2 and renders["page"] == 1
    assert second != first
    assert second.endswith(b"process_open_fds 2.0\n# EOF\n")
    assert first.endswith(b"process_open_fds 1.0\n# EOF\n")


async def test_stale_answers_leave_the_page_without_a_publication(
        renders: Counter[str]) -> None:
    clock = ManualClock()
    states = states_from_simulator(2, seed=5)
    states[1] = replace(states[1], expires_at=NOW + 5)
    exposition = published(states, clock, OwnMetrics())
    before = parse_metrics((await exposition.body(False, False)).decode())
    assert ("binance_futures_account_total_wallet_balance",
            frozenset({("account", "acct-01")})) in before

    clock.now = NOW + 5  # the snapshot's expiry
    after = await exposition.body(False, False)
    assert ("binance_futures_account_total_wallet_balance",
            frozenset({("account", "acct-01")})) not in parse_metrics(after.decode())
    assert after.startswith(render_page(states, clock.now, __version__).text)
    assert renders["acct-01"] == 2 and renders["acct-00"] == 1


async def test_scrapes_render_on_the_render_thread_while_it_runs() -> None:
    own = OwnMetrics()
    clock = ManualClock()
    exposition = published(states_from_simulator(1, seed=5), clock, own)
    await exposition.body(False, False)  # before run(): in the caller
    assert own.threads == [threading.current_thread().name]

    running = asyncio.create_task(exposition.run())
    await settle()
    clock.now += 1
    await exposition.body(False, False)
    assert own.threads[-1].startswith("render")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    clock.now += 1
    await exposition.body(False, False)  # after run(): in the caller again
    assert own.threads[-1] == threading.current_thread().name


def test_page_renders_each_body_when_first_read(renders: Counter[str]) -> None:
    exposition = published(states_from_simulator(2, seed=5), ManualClock(), OwnMetrics())
    page = exposition.page()
    assert renders == {}
    text = page.text
    assert page.text is text and renders["page"] == 1
    assert page.openmetrics.endswith(b"# EOF\n") and renders["page"] == 2
