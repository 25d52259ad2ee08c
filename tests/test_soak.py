"""Soak test of the issue "Resilience": the exporter process against a faulty simulator.

Opt-in (the default run excludes the ``soak`` marker)::

    python -m pytest -m soak -s tests/test_soak.py      # SOAK_SECONDS=60 for a short run

The simulator (three lively accounts: HMAC one-way, HMAC hedge multi-assets,
Ed25519 with ``session.logon``) runs in this process on 127.0.0.1; the
exporter runs as a real subprocess, so the RSS and open fds read from /proc
are its own. For ``SOAK_SECONDS`` (default 600) a seeded (``SOAK_SEED``)
random fault is injected every 2-5 s while /metrics is scraped every 0.5 s:
20 s of warm-up, a quiet period of 10 s after which RSS and open fds are
measured, the rest of the faults, and a final quiet period of 10 s after
which they are measured again and every account must be up. Then SIGTERM,
the report (printed, and written under the pytest tmp dir) and the checks.

Besides faults of Binance's side (drops, delays, errors, junk, bans, Binance's
clock jumping) it mutes and stalls connections, and, where libfaketime is
installed (Debian: faketime), steps the exporter's own wall clock by an hour
while its monotonic clock runs on.

Recovery time of a fault: from its injection until every affected account
has answered a poll successfully after the fault stopped acting on it (the
request that consumed it, the end of a refusal or ban window, the first poll
after a clock jump), as shown by a scrape with ``up == 1`` and a newer
``last_success_timestamp_seconds``. A new fault only targets accounts that
have recovered from their previous one (global faults wait until all have),
so each recovery time measures one fault and not a pile-up; accounts still
overlap, one being faulted while another recovers.

The user data stream runs too (keepalive every 5 s), and its faults are in
the deck: a dropped connection (closed or aborted), a silent socket (the key
forgotten without a word: only the next keepalive notices) and an expired
key. A stream fault has recovered when the account's stream is up on a new
connection (``user_stream_connections_total`` grew), as a scrape shows; the
slowest, the silent socket, takes a keepalive (5 s), a backoff (at most 1 s)
and a new key and connection.

Bound on recovery, ``MAX_RECOVERY`` = 15 s. The slowest single faults are:
a 418 ban (at most 4 s here) or a 429 (retryAfter at most 3 s), whose end the
exporter converts with its last measured clock offset, which may be 3 s stale
after a clock jump it did not need to notice (+3 s stays inside recvWindow),
so up to 7 s; then the next tick on the 1 s grid and a request of at most
0.8 s: about 9 s. A refusal (at most 3 s) adds a reconnect backoff of at most
1 s, a tick and a request: about 6 s. An auth error waits
``auth_retry_interval`` = 2 s, a tick and a request: about 4 s. A fault is
consumed by the account's next poll, at most 1 s after injection. 15 s
leaves room for a scrape every 0.5 s and a loaded machine, and is still far
below what a stuck reconnect loop or a forgotten backoff would produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from exporter.simulator import (
    MSG_BAD_KEY,
    CloseConnection,
    Delay,
    Drop,
    ErrorAnswer,
    Fault,
    Mutate,
    Mute,
    RawFrame,
    RequestRecord,
    Simulator,
    Stall,
    Unsolicited,
)
from tests.support import Samples, parse_metrics
from tests.support.soak_report import SoakReport

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SEED = int(os.environ.get("SOAK_SEED", "20240611"))
WARM_UP = 20.0  # faults already run; RSS and fds are measured from its end
QUIET = 10.0
SCRAPE_EVERY = 0.5
RESOURCES_EVERY = 5.0
FAULT_GAP = (2.0, 5.0)
WEIGHT_LIMIT = 6000  # the soak's own load is about 950 per minute, reconnects included
MAX_RECOVERY = 15.0
RSS_GROWTH_KIB = 10 * 1024
FD_GROWTH = 3
EXIT_WITHIN = 5.0
STATUS_METHOD = "v2/account.status"
REPO = Path(__file__).resolve().parent.parent

EXPORTER_SETTINGS: dict[str, Any] = {
    "poll_interval": "1s",
    "request_timeout": "800ms",
    "stale_after": "5s",
    "reconnect_backoff_min": "100ms",
    "reconnect_backoff_max": "1s",
    "auth_retry_interval": "2s",
    "weight_limit": WEIGHT_LIMIT,
    "user_stream_keepalive": "5s",
}


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Target:
    name: str
    api_key: str


@dataclass
class Watch:
    """Waits for the ``count``-th status request of ``target`` from request number ``start``.

    That request is the one that consumes a fault queued for the target when
    the fault was injected (only one fault per account is ever outstanding).
    """

    target: Target
    start: int
    count: int = 1
    matched: int = 0
    seen_at: float | None = None  # epoch seconds, as the simulator received it

    def update(self, requests: Sequence[RequestRecord]) -> None:
        while self.seen_at is None and self.start < len(requests):
            record = requests[self.start]
            self.start += 1
            if record.method == STATUS_METHOD and record.api_key == self.target.api_key:
                self.matched += 1
                if self.matched == self.count:
                    self.seen_at = record.wall_ms / 1000


@dataclass
class Injection:
    """One injected fault and the accounts it affects."""

    kind: str
    injected_at: float  # epoch seconds
    affected: tuple[str, ...]
    watches: dict[str, Watch] = field(default_factory=dict)  # by account name
    window_end: float = 0.0  # epoch seconds; 0 when the fault has no time window
    recovered_at: dict[str, float] = field(default_factory=dict)  # last_success after it
    #: A user data stream fault: the stream connections the account had when injected.
    stream_connections: float | None = None

    def settled_at(self, account: str) -> float | None:
        """From when a successful poll of ``account`` counts as recovery; None: not yet known."""
        watch = self.watches.get(account)
        if watch is not None and watch.seen_at is None:
            return None
        seen = watch.seen_at if watch is not None and watch.seen_at is not None else 0.0
        return max(self.injected_at, self.window_end, seen)

    def open_for(self, account: str) -> bool:
        return account in self.affected and account not in self.recovered_at

    @property
    def recovered(self) -> bool:
        return len(self.recovered_at) == len(self.affected)

    @property
    def recovery_time(self) -> float:
        return max(self.recovered_at.values()) - self.injected_at


def _delete_total(result: dict[str, Any]) -> None:
    del result["totalMaintMargin"]


def _nan_total(result: dict[str, Any]) -> None:
    result["totalWalletBalance"] = "NaN"


def _empty_balance(result: dict[str, Any]) -> None:
    result["availableBalance"] = ""


def _bool_total(result: dict[str, Any]) -> None:
    result["totalWalletBalance"] = True


def _assets_null(result: dict[str, Any]) -> None:
    result["assets"] = None


def _positions_object(result: dict[str, Any]) -> None:
    result["positions"] = {"BTCUSDT": 1}


def _asset_without_name(result: dict[str, Any]) -> None:
    del result["assets"][0]["asset"]


MUTATIONS: tuple[Callable[[dict[str, Any]], None], ...] = (
    _delete_total, _nan_total, _empty_balance, _bool_total, _assets_null, _positions_object,
    _asset_without_name,
)
JUNK_FRAMES: tuple[str | bytes, ...] = (
    b"\x00\xff binary junk",
    "not json {",
    "[1, 2, 3]",
    '"just a string"',
    "{" * 64,
    json.dumps({"id": 987654321, "status": 200, "result": {}}),
    json.dumps({"id": "not-an-int", "status": 200, "result": {}}),
)
#: Valid-looking JSON nested deeper than a recursive parser goes (100 kB, well under 4 MiB).
DEEPLY_NESTED = "[" * 100_000
#: One byte over the exporter's default max_frame_size of 4 MiB.
OVERSIZE = "x" * (4 * 1024 * 1024 + 1)
UNSOLICITED: tuple[dict[str, Any], ...] = (
    {"id": None, "status": 401, "error": {"code": -2015, "msg": MSG_BAD_KEY}},
    {"id": None, "status": 400, "error": {"code": -1003, "msg": "Too much request weight."}},
    {"id": None, "status": 500, "error": {"code": -1001, "msg": "Internal error."}},
)
SERVER_ERRORS = (
    (500, -1001, "Internal error; unable to process your request. Please try again."),
    (503, -1008, "Server is currently overloaded with other requests. Please try again."),
    (502, -1000, "An unknown error occurred while processing the request."),
)

AccountFault = Callable[[random.Random, Simulator, str], Fault]


def _rate_limited(rng: random.Random, sim: Simulator, key: str) -> Fault:
    now = sim.server_time_ms()
    return ErrorAnswer(429, -1003, f"Too many requests; current limit is {WEIGHT_LIMIT} request "
                       "weight per 1 MINUTE.",
                       {"retryAfter": now + rng.randint(1000, 3000), "serverTime": now},
                       api_key=key)


ACCOUNT_FAULTS: dict[str, AccountFault] = {
    "drop": lambda rng, sim, key: Drop(api_key=key),
    "drop_abrupt": lambda rng, sim, key: Drop(abrupt=True, api_key=key),
    "delay_beyond_timeout": lambda rng, sim, key: Delay(rng.uniform(1.0, 2.5), api_key=key),
    "server_error_5xx": lambda rng, sim, key: ErrorAnswer(*rng.choice(SERVER_ERRORS),
                                                          api_key=key),
    "rate_limited_429": _rate_limited,
    "auth_2015": lambda rng, sim, key: ErrorAnswer(401, -2015, MSG_BAD_KEY, api_key=key),
    "malformed_answer": lambda rng, sim, key: Mutate(rng.choice(MUTATIONS), api_key=key),
    "junk_frame_before_answer": lambda rng, sim, key: RawFrame(rng.choice(JUNK_FRAMES),
                                                               api_key=key),
    "junk_frame_instead": lambda rng, sim, key: RawFrame(rng.choice(JUNK_FRAMES), replace=True,
                                                         api_key=key),
    "junk_deeply_nested_json": lambda rng, sim, key: RawFrame(DEEPLY_NESTED, api_key=key),
    "oversize_frame": lambda rng, sim, key: RawFrame(OVERSIZE, replace=True, api_key=key),
    "unsolicited_id_null": lambda rng, sim, key: Unsolicited(rng.choice(UNSOLICITED),
                                                             api_key=key),
    "close_connection": lambda rng, sim, key: CloseConnection(
        code=rng.choice((1000, 1001, 1011, 1012)), api_key=key),
    "muted_connection": lambda rng, sim, key: Mute(api_key=key),
    "stalled_connection": lambda rng, sim, key: Stall(rng.uniform(0.2, 2.0), api_key=key),
}
GLOBAL_FAULTS = ("refuse_connections", "ban_418", "clock_jump")
#: libfaketime (Debian package faketime; the MT build, as the exporter runs threads) steps
#: the exporter's own wall clock; the monotonic clock it measures durations with is left
#: alone (DONT_FAKE_MONOTONIC).
FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
LOCAL_CLOCK_STEP = 3600
STREAM_FAULTS: dict[str, Callable[[Simulator, str], None]] = {
    "stream_drop": lambda sim, name: sim.user_streams.drop(name),
    "stream_drop_abrupt": lambda sim, name: sim.user_streams.drop(name, abrupt=True),
    "stream_silent_socket": lambda sim, name: sim.user_streams.silence(name),
    "stream_key_expired": lambda sim, name: sim.user_streams.expire(name),
}


class FaultInjector:
    """Draws faults from a shuffled deck of every kind (so all kinds come up evenly)."""

    def __init__(self, sim: Simulator, targets: Sequence[Target], rng: random.Random,
                 faketime: Path | None = None) -> None:
        self.faketime = faketime  # the file libfaketime reads the exporter's clock step from
        self.local_steps = [0]  # every total step of the exporter's clock so far, newest first
        self.sim = sim
        self.targets = tuple(targets)
        self.rng = rng
        self.injections: list[Injection] = []
        self._deck: list[str] = []
        #: Stream connections per account as last scraped (the Observer keeps it current).
        self.stream_connections: dict[str, float] = {}

    def busy(self, *, polling_only: bool = False) -> set[str]:
        """Accounts with a fault they have not recovered from (that can fail a poll)."""
        return {name for injection in self.injections if not injection.recovered
                and not (polling_only and injection.stream_connections is not None)
                for name in injection.affected if injection.open_for(name)}

    def inject(self) -> Injection | None:
        """Inject the next feasible fault of the deck; None when every account is busy."""
        free = [target for target in self.targets if target.name not in self.busy()]
        if not free:
            return None
        if not self._deck:
            self._deck = [*ACCOUNT_FAULTS, *STREAM_FAULTS, *GLOBAL_FAULTS]
            if self.faketime is not None:
                self._deck.append("local_clock_step")
            self.rng.shuffle(self._deck)
        feasible = [kind for kind in self._deck
                    if kind not in GLOBAL_FAULTS or len(free) == len(self.targets)]
        if not feasible:
            return None
        kind = feasible[0]
        self._deck.remove(kind)
        if kind in ACCOUNT_FAULTS:
            injection = self._account_fault(kind, self.rng.choice(free))
        elif kind in STREAM_FAULTS:
            injection = self._stream_fault(kind, self.rng.choice(free))
        else:
            injection = self._global_fault(kind)
        self.injections.append(injection)
        return injection

    def update(self) -> None:
        for injection in self.injections:
            for watch in injection.watches.values():
                watch.update(self.sim.requests)

    def _account_fault(self, kind: str, target: Target) -> Injection:
        watch = self._watch(target)
        self.sim.inject(ACCOUNT_FAULTS[kind](self.rng, self.sim, target.api_key))
        return Injection(kind, time.time(), (target.name,), {target.name: watch})

    def _stream_fault(self, kind: str, target: Target) -> Injection:
        before = self.stream_connections.get(target.name, 0.0)
        STREAM_FAULTS[kind](self.sim, target.name)
        return Injection(kind, time.time(), (target.name,), stream_connections=before)

    def _global_fault(self, kind: str) -> Injection:
        names = tuple(target.name for target in self.targets)
        now = time.time()
        if kind == "refuse_connections":
            # Refused handshakes only matter to an exporter that reconnects: drop everyone.
            seconds = self.rng.uniform(1.5, 3.0)
            self.sim.refuse_connections = True
            asyncio.get_running_loop().call_later(seconds, setattr, self.sim,
                                                  "refuse_connections", False)
            watches = {target.name: self._watch(target) for target in self.targets}
            for target in self.targets:
                self.sim.inject(Drop(abrupt=True, api_key=target.api_key))
            return Injection(kind, now, names, watches, window_end=now + seconds)
        if kind == "ban_418":
            milliseconds = self.rng.randint(1500, 4000)
            self.sim.ban(self.sim.server_time_ms() + milliseconds)
            return Injection(kind, now, names, window_end=now + milliseconds / 1000)
        if kind == "local_clock_step":
            # NTP, a VM resume or an operator steps the exporter host's clock by an hour.
            assert self.faketime is not None
            total = self.local_steps[0]
            steps = [step for step in (-LOCAL_CLOCK_STEP, LOCAL_CLOCK_STEP)
                     if abs(total + step) <= LOCAL_CLOCK_STEP]
            step = self.rng.choice(steps)
            self.local_steps.insert(0, total + step)
            watches = {target.name: self._watch(target) for target in self.targets}
            self.faketime.write_text(f"{total + step:+d}\n")
            return Injection(f"local_clock_step_{step // 3600:+d}h", now, names, watches)
        assert kind == "clock_jump"
        offset = self.sim.clock_offset_ms
        jumps = [jump for jump in (-3000, 3000) if abs(offset + jump) <= 3000]
        jump = self.rng.choice(jumps)
        watches = {target.name: self._watch(target) for target in self.targets}
        self.sim.clock_offset_ms = offset + jump
        return Injection(f"clock_jump_{jump // 1000:+d}s", now, names, watches)

    def _watch(self, target: Target) -> Watch:
        return Watch(target, start=len(self.sim.requests))


# --------------------------------------------------------------------------- observing


@dataclass
class Observer:
    """Follows ``up`` per account across scrapes and marks faults as recovered."""

    names: tuple[str, ...]
    injector: FaultInjector
    report: SoakReport
    started: float = field(default_factory=time.time)
    last_up: dict[str, float | None] = field(default_factory=dict)

    def observe(self, samples: Samples) -> None:
        self.injector.update()
        busy = self.injector.busy(polling_only=True)  # a stream fault never fails a poll
        for name in self.names:
            up = samples.get(("binance_futures_up", _account(name)))
            last = samples.get(("binance_futures_last_success_timestamp_seconds", _account(name)))
            self._transition(name, up, busy)
            if up == 1 and last is not None:
                self._recover(name, self._our_time(last))
            stream_up = samples.get(("binance_futures_user_stream_up", _account(name)))
            connections = samples.get(("binance_futures_user_stream_connections_total",
                                       _account(name)))
            if connections is not None:
                self.injector.stream_connections[name] = connections
                if stream_up == 1:
                    self._recover_stream(name, connections)

    def _transition(self, name: str, up: float | None, busy: set[str]) -> None:
        if self.last_up.get(name) == 1 and up == 0:
            self.report.down_transitions[name] = self.report.down_transitions.get(name, 0) + 1
            if name not in busy:
                self.report.unexplained_downs.append(
                    f"{name} at +{time.time() - self.started:.1f}s")
        self.last_up[name] = up

    def _our_time(self, exported: float) -> float:
        """An exporter timestamp on this process' clock: undo its local clock steps.

        The steps are an hour and the timestamp at most a scrape old, so only one
        of the steps made so far puts it near now.
        """
        for step in self.injector.local_steps:
            ours = exported - step
            if abs(ours - time.time()) < LOCAL_CLOCK_STEP / 2:
                return ours
        return exported

    def _recover(self, name: str, last_success: float) -> None:
        for injection in self.injector.injections:
            if not injection.open_for(name) or injection.stream_connections is not None:
                continue
            settled = injection.settled_at(name)
            if settled is not None and last_success > settled:
                injection.recovered_at[name] = last_success

    def _recover_stream(self, name: str, connections: float) -> None:
        """A stream fault is over once the stream is up on a connection opened after it."""
        for injection in self.injector.injections:
            before = injection.stream_connections
            if injection.open_for(name) and before is not None and connections > before:
                injection.recovered_at[name] = time.time()


def _account(name: str) -> frozenset[tuple[str, str]]:
    return frozenset({("account", name)})


class ProcessProbe:
    """RSS and open file descriptors of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def command_line(self) -> list[str]:
        return Path(f"/proc/{self.pid}/cmdline").read_text().split("\0")


# --------------------------------------------------------------------------- the exporter


def add_accounts(sim: Simulator) -> tuple[list[Target], list[dict[str, Any]]]:
    """The demo accounts in the simulator, and their entries for the exporter config."""
    targets, entries = [], []
    for account in Simulator.demo_accounts():
        account.add_to(sim)
        entry: dict[str, Any] = {"name": account.name, "api_key": account.api_key}
        if account.private_key_pem is not None:
            entry |= {"private_key": account.private_key_pem.decode(), "session_logon": True}
        else:
            entry["api_secret"] = account.api_secret
        targets.append(Target(account.name, account.api_key))
        entries.append(entry)
    return targets, entries


def write_config(path: Path, sim: Simulator, accounts: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"endpoint": sim.url, "user_stream_endpoint": sim.stream_url,
                                    **EXPORTER_SETTINGS, "accounts": accounts}))
    path.chmod(0o600)
    return path


async def bound_url(log_path: Path, process: asyncio.subprocess.Process) -> str:
    """The /metrics URL the exporter logged after binding port 0."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.returncode is None, f"the exporter exited with {process.returncode}"
        for line in log_path.read_text(errors="replace").splitlines():
            if "serving metrics on " in line:
                return line.split("serving metrics on ", 1)[1].split()[0] + "/metrics"
        await asyncio.sleep(0.1)
    raise AssertionError("the exporter never logged the address it serves on")


def fetch_metrics(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse_metrics(response.read().decode())


async def scrape(url: str) -> Samples:
    return await asyncio.to_thread(fetch_metrics, url)


async def wait_until_up(url: str, names: Sequence[str], process: asyncio.subprocess.Process,
                        timeout: float = 30.0) -> None:
    """Bounded wait for the first scrape on which every account is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.returncode is None, f"the exporter exited with {process.returncode}"
        with contextlib.suppress(OSError):
            samples = await scrape(url)
            if all(samples.get(("binance_futures_up", _account(n))) == 1 for n in names):
                return
        await asyncio.sleep(SCRAPE_EVERY)
    raise AssertionError(f"accounts not all up within {timeout:g}s")


async def terminate(process: asyncio.subprocess.Process) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None if it had to be killed) and how long the exit took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, time.monotonic() - started
    return process.returncode, time.monotonic() - started


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    """What one phase loop needs: the process, where to scrape, and who records what."""

    process: asyncio.subprocess.Process
    url: str
    probe: ProcessProbe
    injector: FaultInjector
    observer: Observer
    report: SoakReport
    log_path: Path
    last_samples: Samples = field(default_factory=dict)
    rss_samples: list[int] = field(default_factory=list)
    fd_samples: list[int] = field(default_factory=list)

    async def phase(self, seconds: float, *, inject: bool) -> None:
        """Scrape every 0.5 s for ``seconds``, injecting faults every 2-5 s when asked."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_fault = loop.time() + self.injector.rng.uniform(*FAULT_GAP)
        next_resources = loop.time()
        while (now := loop.time()) < end:
            self.check_alive()
            self.last_samples = await scrape(self.url)
            self.observer.observe(self.last_samples)
            if inject and now >= next_fault and self.injector.inject() is not None:
                next_fault = now + self.injector.rng.uniform(*FAULT_GAP)
            if now >= next_resources:
                self.sample_resources()
                next_resources = now + RESOURCES_EVERY
            await asyncio.sleep(max(0.0, min(end, now + SCRAPE_EVERY) - loop.time()))

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the exporter exited with {self.process.returncode}:\n{tail}")

    def sample_resources(self) -> tuple[int, int]:
        rss, fds = self.probe.rss_kib(), self.probe.fds()
        self.rss_samples.append(rss)
        self.fd_samples.append(fds)
        return rss, fds


def fill_from_metrics(report: SoakReport, samples: Samples, names: Sequence[str]) -> None:
    """Polls, failures by reason and connections as the exporter counts them."""
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "binance_futures_request_errors_total":
            report.errors[label["reason"]] = report.errors.get(label["reason"], 0) + int(value)
        elif name == "binance_futures_request_duration_seconds_count":
            report.successes += int(value)
        elif name == "binance_futures_connections_total":
            report.connections_exporter += int(value)
        elif name == "binance_futures_user_stream_connections_total":
            report.stream_connections += int(value)
        elif name == "binance_futures_user_stream_errors_total":
            reason = label["reason"]
            report.stream_errors[reason] = report.stream_errors.get(reason, 0) + int(value)
        elif name == "binance_futures_user_stream_events_total":
            report.stream_events += int(value)
    report.polls_exporter = report.successes + sum(report.errors.values())
    report.final_up = {n: samples.get(("binance_futures_up", _account(n))) for n in names}
    report.final_stream_up = {n: samples.get(("binance_futures_user_stream_up", _account(n)))
                              for n in names}


def fill_faults(report: SoakReport, injections: Sequence[Injection], started: float) -> None:
    for injection in injections:
        stats = report.kind(injection.kind)
        stats.injected += 1
        if injection.recovered:
            stats.recoveries.append(injection.recovery_time)
        else:
            missing = sorted(set(injection.affected) - set(injection.recovered_at))
            at = injection.injected_at - started
            report.unrecovered.append(f"{injection.kind} at +{at:.1f}s "
                                      f"(accounts {', '.join(missing)})")


def log_problems(text: str) -> list[str]:
    """Lines of the exporter's log that betray a bug rather than a handled fault."""
    return [line for line in text.splitlines()
            if "Traceback" in line or "unexpected error" in line or " ERROR " in line]


async def test_exporter_survives_random_faults_without_leaking(tmp_path: Path) -> None:
    assert SOAK_SECONDS >= 2 * WARM_UP, f"SOAK_SECONDS must be at least {2 * WARM_UP:g}"
    rng = random.Random(SEED)
    report = SoakReport(SEED, SOAK_SECONDS)
    log_path = tmp_path / "exporter.log"
    async with Simulator(seed=SEED, weight_limit=WEIGHT_LIMIT, lively=True) as sim:
        targets, entries = add_accounts(sim)
        config = write_config(tmp_path / "config.yaml", sim, entries)
        faketime = tmp_path / "faketime" if FAKETIME_LIBRARY.exists() else None
        if faketime is None:
            print(f"\nno {FAKETIME_LIBRARY} (apt-get install faketime): no local clock steps")
        with log_path.open("wb") as log_file:
            process = await start_exporter(config, log_file, faketime)
            try:
                url = await bound_url(log_path, process)
                problems = await soak(process, url, sim, targets, rng, report, log_path,
                                      faketime)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        report.polls_simulator = sum(r.method == STATUS_METHOD for r in sim.requests)
        report.connections_simulator = sim.connections_opened
    problems += log_problems(log_path.read_text(errors="replace"))
    text = report.render()
    path = tmp_path / "soak-report.txt"
    path.write_text(text + ("\nlog problems:\n" + "\n".join(problems) if problems else ""))
    print("\n" + text)
    print(f"report: {path}\nexporter log: {log_path}")
    check(report, problems)


async def start_exporter(config: Path, log_file: IO[bytes],
                         faketime: Path | None) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    if faketime is not None:
        faketime.write_text("+0\n")
        env |= {"LD_PRELOAD": str(FAKETIME_LIBRARY), "FAKETIME_TIMESTAMP_FILE": str(faketime),
                "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config", str(config),
        "--listen", "127.0.0.1:0", cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file)


async def soak(process: asyncio.subprocess.Process, url: str, sim: Simulator,
               targets: Sequence[Target], rng: random.Random, report: SoakReport,
               log_path: Path, faketime: Path | None) -> list[str]:
    """Warm-up, faults, quiet period and SIGTERM; fills ``report``."""
    names = tuple(target.name for target in targets)
    await wait_until_up(url, names, process)
    probe = ProcessProbe(process.pid)
    assert "exporter" in probe.command_line(), "the pid measured must be the exporter's"
    injector = FaultInjector(sim, targets, rng, faketime)
    run = Run(process, url, probe, injector, Observer(names, injector, report), report,
              log_path)
    started = time.monotonic()
    await run.phase(WARM_UP, inject=True)
    # Measure the baseline in the same state as the end: after a quiet period, all connected.
    await run.phase(QUIET, inject=False)
    report.rss_start_kib, report.fds_start = run.sample_resources()
    await run.phase(SOAK_SECONDS - WARM_UP, inject=True)
    await run.phase(QUIET, inject=False)
    run.check_alive()
    report.rss_end_kib, report.fds_end = run.sample_resources()
    report.duration = time.monotonic() - started
    report.rss_max_kib, report.fds_max = max(run.rss_samples), max(run.fd_samples)
    fill_from_metrics(report, run.last_samples, names)
    fill_faults(report, injector.injections, run.observer.started)
    missing = [name for name in names
               if ("binance_futures_account_total_wallet_balance", _account(name))
               not in run.last_samples]
    report.exit_code, report.exit_seconds = await terminate(process)
    return [f"no balance series for {name} at the end" for name in missing]


def check(report: SoakReport, problems: list[str]) -> None:
    assert report.exit_code == 0, f"exit code on SIGTERM: {report.exit_code}"
    assert report.exit_seconds is not None and report.exit_seconds < EXIT_WITHIN
    assert all(value == 1 for value in report.final_up.values()), (
        f"stuck accounts after {QUIET:g}s without faults: {report.final_up}; faults never "
        f"recovered from: {report.unrecovered}")
    assert all(value == 1 for value in report.final_stream_up.values()), (
        f"user data streams down after {QUIET:g}s without faults: {report.final_stream_up}")
    assert not report.unrecovered, f"faults never recovered from: {report.unrecovered}"
    # On loopback a poll fails only when a fault makes it fail.
    assert not report.unexplained_downs, f"up fell to 0 without a fault: {report.unexplained_downs}"
    injected = sum(stats.injected for stats in report.kinds.values())
    assert injected >= SOAK_SECONDS / (2 * FAULT_GAP[1]), f"only {injected} faults injected"
    worst = max(report.recoveries)
    assert worst < MAX_RECOVERY, f"slowest recovery {worst:.1f}s (bound {MAX_RECOVERY:g}s)"
    assert report.rss_start_kib is not None and report.rss_end_kib is not None
    assert report.rss_end_kib <= report.rss_start_kib + RSS_GROWTH_KIB, (
        f"RSS grew from {report.rss_start_kib} KiB to {report.rss_end_kib} KiB")
    assert report.fds_start is not None and report.fds_end is not None
    assert report.fds_end <= report.fds_start + FD_GROWTH, (
        f"open fds grew from {report.fds_start} to {report.fds_end}")
    assert not problems, problems
