"""File descriptor budget: the soft limit is raised (in a child process), the cap sized."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.fdlimit import BINANCE_FDS_PER_ACCOUNT, FIXED_RESERVE, connection_cap

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(("limit", "accounts", "cap"), [
    (1024, 2, 1024 - 2 * BINANCE_FDS_PER_ACCOUNT - FIXED_RESERVE),
    (1024, 100, 1024 - 100 * BINANCE_FDS_PER_ACCOUNT - FIXED_RESERVE),
    (1_048_576, 10, 1024),  # the ceiling: every connection costs memory too
    (sys.maxsize, 1, 1024),
    (100, 30, 1),  # hopeless, but still serve one
])
def test_connection_cap(limit: int, accounts: int, cap: int) -> None:
    assert connection_cap(limit, accounts) == cap


def test_connection_cap_ceiling() -> None:
    assert connection_cap(1_048_576, 1, ceiling=4096) == 4096
    assert connection_cap(256, 1, ceiling=4096) == 256 - BINANCE_FDS_PER_ACCOUNT - FIXED_RESERVE


def run_child(soft: int) -> tuple[int, int, int]:
    """raise_fd_limit() in a child started with ``soft``: (returned, soft now, hard)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = (
        "import resource\n"
        "from exporter.fdlimit import raise_fd_limit\n"
        "result = raise_fd_limit()\n"
        "print(result, *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
        timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    ).stdout
    returned, now, child_hard = map(int, output.split())
    return returned, now, child_hard


def test_raise_fd_limit_raises_the_soft_limit_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise to")
    assert run_child(256) == (hard, hard, hard)


def test_raise_fd_limit_at_the_hard_limit_changes_nothing() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("unlimited hard limit")
    assert run_child(hard) == (hard, hard, hard)
