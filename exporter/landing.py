"""The landing page at ``/``: what is exported, each account's state, demo mode.

A person who opens the exporter in a browser should see at a glance whether
every account is polled successfully, and why not, without reading /metrics.
The page is rebuilt per request from a few fields per account (cheap: string
joins, no template engine). Every value is HTML-escaped; links are relative so
they keep working behind a reverse proxy that adds a path prefix.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["AccountStatus", "render_landing"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:left}.up{color:#070}.down{color:#b00}"
    ".demo{background:#ffd;border:1px solid #cc0;padding:.5em}"
)


class AccountStatus(NamedTuple):
    """One account's state as the landing page shows it.

    ``last_success`` is a Unix time (None before the first success);
    ``error_reason`` is the last error's reason label while the account is not
    up; ``user_stream_up`` is None where the user data stream is not known.
    """

    name: str
    up: bool
    last_success: float | None
    error_reason: str | None
    user_stream_up: bool | None


def render_landing(
    version: str, *, demo: bool, accounts: Sequence[AccountStatus], now: float
) -> bytes:
    """The page as UTF-8 HTML; ``now`` (Unix time) is what ages are measured against."""
    version_line = f"<p>Version {_e(version)}</p>\n" if version else ""
    demo_line = (
        '<p class="demo"><strong>Demo mode:</strong> these accounts are simulated; '
        "nothing here comes from Binance.</p>\n"
        if demo
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>Binance Futures Exporter{' (demo)' if demo else ''}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>Binance Futures Exporter</h1>\n"
        f"{demo_line}{version_line}"
        f"{_accounts_table(accounts, now)}"
        '<ul>\n<li><a href="metrics">Metrics</a></li>\n'
        '<li><a href="healthz">Health check</a></li>\n</ul>\n'
        "</body>\n</html>\n"
    ).encode()


def _accounts_table(accounts: Sequence[AccountStatus], now: float) -> str:
    if not accounts:  # the caller shows no account state (every config has an account)
        return ""
    rows = "".join(_row(account, now) for account in accounts)
    return (
        "<table>\n<tr><th>Account</th><th>State</th><th>Last success</th>"
        "<th>Error</th><th>User data stream</th></tr>\n"
        f"{rows}</table>\n"
    )


def _row(account: AccountStatus, now: float) -> str:
    state = '<td class="up">up</td>' if account.up else '<td class="down">down</td>'
    if account.user_stream_up is None:
        stream = "<td>&ndash;</td>"
    elif account.user_stream_up:
        stream = '<td class="up">connected</td>'
    else:
        stream = '<td class="down">disconnected</td>'
    return (
        f"<tr><td>{_e(account.name)}</td>{state}<td>{_when(account.last_success, now)}</td>"
        f"<td>{_e(account.error_reason or '')}</td>{stream}</tr>\n"
    )


def _when(timestamp: float | None, now: float) -> str:
    """``12 s ago (2024-05-01 12:00:00 UTC)``, or ``never``."""
    if timestamp is None:
        return "never"
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    except (OverflowError, ValueError, OSError):  # not a time this platform can show
        return "unknown"
    return f"{_age(max(0.0, now - timestamp))} ago ({stamp})"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
