"""Fixtures: a network guard that keeps every test on loopback, and a simulator."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.support import HEDGE_KEY, HEDGE_SECRET, HMAC_KEY, HMAC_SECRET, SteppedClock


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection from the test process to an address off this machine."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                raise OSError(f"test network guard: refusing to connect to {host}")
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def clock() -> SteppedClock:
    """A clock the test steps; it starts at this host's time, so the simulator may share it."""
    return SteppedClock(wall=time.time())


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """A static (not lively) simulator with a one-way and a hedge-mode account."""
    async with _simulator() as sim:
        yield sim


@pytest.fixture
async def stepped_simulator(clock: SteppedClock) -> AsyncIterator[Simulator]:
    """The ``simulator``, on the ``clock`` fixture's wall clock (for exporters on ``clock``)."""
    async with _simulator(wall=clock.time) as sim:
        yield sim


@contextlib.asynccontextmanager
async def _simulator(**options: Any) -> AsyncIterator[Simulator]:
    async with Simulator(seed=7, lively=False, **options) as sim:
        sim.add_account("oneway", api_key=HMAC_KEY, api_secret=HMAC_SECRET, positions=3)
        sim.add_account("hedge", api_key=HEDGE_KEY, api_secret=HEDGE_SECRET,
                        multi_assets=True, hedge_mode=True, positions=3)
        yield sim


