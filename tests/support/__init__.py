"""Shared test helpers: credentials, configs for the simulator, scraping, waiting, tools.

Every test module imports its helpers from here; fixtures live in conftest.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter.clock import Clock
from exporter.config import Config, parse_config
from exporter.exposition import Page
from exporter.simulator import Simulator

# Credentials of the simulated accounts the tests use; fake, and grepped for in logs.
HMAC_KEY = "testHmacApiKey0000000000000000000000000000000000000000000000000001"
HMAC_SECRET = "testHmacSecretXyZ000000000000000000000000000000000000000000000001"
HEDGE_KEY = "testHedgeApiKey000000000000000000000000000000000000000000000000002"
HEDGE_SECRET = "testHedgeSecretQwE00000000000000000000000000000000000000000000002"

# Hypothesis strategies for hostile JSON: scalars that look almost like numbers, nesting.
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.integers(min_value=2**60, max_value=10**400)  # beyond float range
           | st.sampled_from(["1\x002", "1_0", " 1", "-0", "1.", ".5", "0x10", "\u0661"]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=12), inner, max_size=4), max_leaves=20)


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, but fail in CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def sim_config(sim: Simulator | str, *, accounts: list[dict[str, Any]] | None = None,
               **settings: Any) -> Config:
    """A validated config for the simulator's accounts (or any endpoint URL), serving on an
    ephemeral port."""
    document: dict[str, Any] = {
        "endpoint": sim if isinstance(sim, str) else sim.url,
        "poll_interval": "1s",
        "accounts": accounts if accounts is not None else [
            {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET},
            {"name": "hedge", "api_key": HEDGE_KEY, "api_secret": HEDGE_SECRET},
        ],
    }
    document.update(settings)
    return replace(parse_config(document), listen_host="127.0.0.1", listen_port=0)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


async def scrape(url: str) -> Samples:
    _, _, body = await asyncio.to_thread(fetch, url + "/metrics")
    return parse_metrics(body.decode())


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0,
                   interval: float = 0.05) -> Any:
    """Poll an (async or sync) condition until it is truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def up(samples: Samples, account: str) -> float | None:
    return samples.get(("binance_futures_up", frozenset({("account", account)})))


async def scrape_when_up(url: str, accounts: tuple[str, ...] = ("oneway", "hedge")) -> Samples:
    """The first scrape on which every account is up."""

    async def all_up() -> Samples | None:
        samples = await scrape(url)
        return samples if all(up(samples, name) == 1 for name in accounts) else None

    return await wait_for(all_up)


class SteppedClock(Clock):
    """A clock that only moves when the test says: :meth:`advance` and :meth:`step_wall`.

    ``sleep`` waits until the clock is advanced past its deadline, so code
    under test that waits minutes runs in milliseconds, deterministically.
    Request deadlines still elapse in real time (they bound network I/O).
    """

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.sleeps_started = 0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._order), future))
        self.sleeps_started += 1
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for the clock."""
        return sum(1 for *_, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move both clocks forward, waking every sleeper that falls due, in order.

        After each wake-up the event loop runs until it has nothing ready, so
        whatever a woken task does without I/O has happened when this returns.
        """
        target = self._monotonic + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self._move(due)
            if not future.done():
                future.set_result(None)
                await settle()
        self._move(target)
        await settle()

    async def advance_until_asleep(self, seconds: float, sleeps: int = 1) -> None:
        """:meth:`advance`, then wait (real time, network I/O included) until ``sleeps`` more
        sleeps have started: the woken tasks have done their work and wait for the clock."""
        started = self.sleeps_started
        await self.advance(seconds)
        await wait_for(lambda: self.sleeps_started >= started + sleeps)

    def step_wall(self, seconds: float) -> None:
        """Step only the wall clock, as NTP or an operator would; monotonic time is unmoved."""
        self._wall += seconds

    def _move(self, monotonic: float) -> None:
        if monotonic > self._monotonic:
            self._wall += monotonic - self._monotonic
            self._monotonic = monotonic


async def settle(rounds: int = 20) -> None:
    """Let every ready task run (a few loop iterations), without waiting on real time."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def serve_page(page: Page) -> Callable[[bool, bool], Awaitable[bytes]]:
    """A fixed page as the HTTP server's ``body`` source."""

    async def body(openmetrics: bool, gzipped: bool) -> bytes:
        return page.body(openmetrics, gzipped)

    return body


COMMAND = [sys.executable, "-m", "exporter"]


async def run_cli(*args: str, timeout: float = 60,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end without blocking the event loop (a simulator may live here)."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, stdout.decode(), stderr.decode())


class CliProcess:
    """The exporter's CLI as a subprocess serving on an ephemeral port of 127.0.0.1.

    ``--listen 127.0.0.1:0`` is added unless given; the bound URL is read from
    the ``serving metrics on`` log line, so no port is ever guessed. Its stderr
    is read continuously (into :attr:`lines`) so the process never blocks on it.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""
        self._serving = asyncio.Event()
        assert process.stderr is not None
        self._reader = asyncio.create_task(self._read(process.stderr))

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> CliProcess:
        if "--listen" not in args:
            args = (*args, "--listen", "127.0.0.1:0")
        process = await asyncio.create_subprocess_exec(
            *COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env)
        cli = cls(process)
        waiter = asyncio.ensure_future(cli._serving.wait())
        await asyncio.wait((waiter, asyncio.ensure_future(process.wait())), timeout=30,
                           return_when=asyncio.FIRST_COMPLETED)
        if not cli.url:
            waiter.cancel()
            await cli.stop()
            raise AssertionError("the exporter did not start serving:\n" + cli.stderr)
        return cli

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            if "serving metrics on " in text and not self.url:
                self.url = text.split("serving metrics on ", 1)[1].split()[0]
                self._serving.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum``, wait for the exit (killing it after 30 s) and return its code."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader
        return self.process.returncode if self.process.returncode is not None else -1
