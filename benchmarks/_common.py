"""Shared helpers of the benchmarks: machine description, tables, percentiles, accounts,
configs, a keep-alive HTTP client for asyncio, and a simulator in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from exporter import __version__
from exporter.config import Config, parse_config
from exporter.poller import DURATION_BUCKETS
from exporter.simulator import SimAccount, Simulator
from exporter.snapshot import parse_account_status, parse_rate_limits
from exporter.state import AccountState

LOOPBACK = "127.0.0.1"
#: What Prometheus 2.x/3.x sends when it negotiates OpenMetrics.
OPENMETRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                      "application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


# ---------------------------------------------------------------- reporting


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, prometheus_client "
            f"{importlib.metadata.version('prometheus-client')}, websockets "
            f"{importlib.metadata.version('websockets')}, exporter {__version__}")


def print_header(title: str, command: str) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}")
    print(f"# command: {command}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    print()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---------------------------------------------------------------- accounts and configs


def api_key(index: int) -> str:
    """A 64-character alphanumeric key, as Binance issues them."""
    return f"benchKey{index:056d}"


def api_secret(index: int) -> str:
    return f"benchSecret{index:053d}"


def add_accounts(sim: Simulator, count: int, *, positions: int = 3,
                 hedge_mode: bool = False, multi_assets: bool = False) -> list[dict[str, Any]]:
    """Add ``count`` HMAC accounts to ``sim``; returns their exporter config entries."""
    for index in range(count):
        sim.add_account(account_name(index), api_key=api_key(index), api_secret=api_secret(index),
                        positions=positions, hedge_mode=hedge_mode, multi_assets=multi_assets)
    return [account_entry(index) for index in range(count)]


def account_name(index: int) -> str:
    return f"acct-{index:04d}"


def account_entry(index: int) -> dict[str, Any]:
    return {"name": account_name(index), "api_key": api_key(index),
            "api_secret": api_secret(index)}


def config_document(url: str, accounts: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    """An exporter config document; ``position_details`` is off unless asked for: the
    simulator does not serve ``v2/account.position`` yet, and a failing second request
    per poll would measure error handling instead of polling."""
    return {"endpoint": url, "position_details": False, "accounts": accounts, **settings}


def loopback_config(url: str, accounts: list[dict[str, Any]], **settings: Any) -> Config:
    """A validated config for the simulator at ``url``, serving on an ephemeral loopback port."""
    config = parse_config(config_document(url, accounts, **settings))
    return replace(config, listen_host=LOOPBACK, listen_port=0)


def open_symbols(account: SimAccount, symbols: int, rng: random.Random) -> None:
    """Open ``symbols`` made-up USDT symbols on both sides of a hedge-mode account.

    The simulator's own ``populate`` only knows 8 real symbols; the exporter does
    not care which symbols exist, so synthetic ones give any number of positions.
    """
    for number in range(symbols):
        symbol = f"X{number:04d}USDT"
        price = f"{rng.uniform(0.01, 50_000):.4f}"
        for side in ("LONG", "SHORT"):
            account.open_position(symbol, side, f"{rng.uniform(0.001, 500):.3f}", price,
                                  isolated=rng.random() < 0.25, leverage=rng.choice((5, 10, 20)))


def big_simulated_account(sim: Simulator, index: int, symbols: int) -> SimAccount:
    """A multi-assets hedge-mode account with ``2 * symbols`` positions and 4 assets."""
    account = sim.add_account(account_name(index), api_key=api_key(index),
                              api_secret=api_secret(index), hedge_mode=True,
                              multi_assets=True, positions=0)
    open_symbols(account, symbols, random.Random(index))
    return account


def answer_frame(account: SimAccount, request_id: int = 1,
                 result: dict[str, Any] | None = None) -> str:
    """The text frame Binance would send for one ``v2/account.status`` of ``account``."""
    return json.dumps({
        "id": request_id, "status": 200, "result": result or account.result(),
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": 2400, "count": 45}],
    })


#: The amounts that follow the mark price, so change on every answer in a live market.
MARKET_FIELDS = frozenset({
    "unrealizedProfit", "notional", "initialMargin", "maintMargin", "marginBalance",
    "positionInitialMargin", "crossUnPnl", "availableBalance", "maxWithdrawAmount",
    "totalUnrealizedProfit", "totalMarginBalance", "totalMaintMargin", "totalInitialMargin",
    "totalPositionInitialMargin", "totalCrossUnPnl",
})


def market_frames(account: SimAccount, count: int, seed: int = 1) -> list[str]:
    """``count`` successive answers of ``account`` while the market moves: every amount of
    :data:`MARKET_FIELDS` drifts between two answers, the rest stays."""
    rng = random.Random(seed)
    result = account.result()

    def moved(entry: dict[str, Any]) -> dict[str, Any]:
        return {key: f"{float(value) * (1 + rng.gauss(0, 0.002)):.8f}"
                if key in MARKET_FIELDS else value for key, value in entry.items()}

    frames = []
    for number in range(count):
        result = {**moved(result), "assets": [moved(a) for a in result["assets"]],
                  "positions": [moved(p) for p in result["positions"]]}
        frames.append(answer_frame(account, number, result))
    return frames


def state_from_frame(name: str, frame: str, now: float,
                     stale_after: float = 45.0) -> AccountState:
    """The :class:`AccountState` a poller publishes after receiving ``frame`` at ``now``
    (monotonic, as the exposition's clock)."""
    received_at = time.time()
    message = json.loads(frame)
    snapshot, _ = parse_account_status(message["result"], received_at=received_at)
    rate_limits, _ = parse_rate_limits(message["rateLimits"])
    initial = AccountState.initial(name, DURATION_BUCKETS)
    durations = initial.durations
    for round_trip in (0.004, 0.03, 0.12):
        durations = durations.observe(round_trip)
    return replace(
        initial, snapshot=snapshot, expires_at=now + stale_after,
        rate_limits=rate_limits, up=True, last_success=received_at, errors={"timeout": 1},
        connections=1, durations=durations, clock_offset=0.0012,
    )


def big_states(accounts: int, symbols: int, now: float) -> list[AccountState]:
    """``accounts`` states of ``2 * symbols`` positions each, deterministic but for time;
    ``now`` is monotonic."""
    sim = Simulator(seed=1, lively=False)  # never started: only its accounts are used
    return [state_from_frame(account_name(i), answer_frame(big_simulated_account(sim, i, symbols)),
                             now, stale_after=3600.0)
            for i in range(accounts)]


# ---------------------------------------------------------------- the exporter in this process


# ---------------------------------------------------------------- HTTP client for asyncio


class Scraper:
    """One keep-alive HTTP/1.1 connection GETting a path, as Prometheus does.

    Minimal on purpose (Content-Length bodies only, which is all the exporter
    sends), so the client costs little of the CPU the benchmark measures.
    """

    def __init__(self, port: int, path: str = "/metrics", headers: dict[str, str] | None = None,
                 source: str | None = None):
        """``source``: the local address to connect from (127.0.0.x: another peer)."""
        self.port = port
        self._local = (source, 0) if source is not None else None
        lines = [f"GET {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self) -> tuple[int, bytes]:
        """Status and body; reconnects once if the server closed the idle connection."""
        try:
            return await self._exchange()
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            return await self._exchange()

    async def _exchange(self) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                LOOPBACK, self.port, local_addr=self._local)
        assert self._reader is not None
        self._writer.write(self._request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


# ---------------------------------------------------------------- simulator in a child process


def _simulator_child(conn: Connection, accounts: int, weight_limit: int, positions: int,
                     symbols: int, lively: bool) -> None:
    async def serve() -> None:
        async with Simulator(seed=3, weight_limit=weight_limit, lively=lively) as sim:
            if symbols:
                for index in range(accounts):
                    big_simulated_account(sim, index, symbols)
            else:
                add_accounts(sim, accounts, positions=positions)
            conn.send(sim.url)
            while not conn.poll():
                await asyncio.sleep(0.2)
            account_requests = sum(1 for r in sim.requests if r.method == "v2/account.status")
            conn.send({"requests": account_requests, "connections": sim.connections_opened})

    asyncio.run(serve())


class ChildSimulator:
    """A :class:`Simulator` with ``accounts`` accounts in its own process.

    Keeps the simulator's CPU off the exporter's core, so a benchmark of the
    exporter measures the exporter. With ``symbols``, every account is a
    :func:`big_simulated_account` (``2 * symbols`` positions); otherwise it has
    ``positions`` from the simulator's own few symbols. ``stop()`` returns the
    simulator's counts.
    """

    def __init__(self, accounts: int, *, weight_limit: int = 10**9, positions: int = 3,
                 symbols: int = 0, lively: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_simulator_child,
            args=(child_conn, accounts, weight_limit, positions, symbols, lively), daemon=True)
        self.url = ""

    def start(self, timeout: float = 120.0) -> str:
        self._process.start()
        if not self._conn.poll(timeout):
            self._process.kill()
            raise RuntimeError("the simulator process did not start")
        self.url = self._conn.recv()
        return self.url

    def stop(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            self._conn.send("stop")
            if self._conn.poll(30):
                counts = self._conn.recv()
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        return counts


# ---------------------------------------------------------------- another process, from /proc


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def free_port() -> int:
    """A port that was free a moment ago: the CLI's ``--listen`` takes no port 0."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port
