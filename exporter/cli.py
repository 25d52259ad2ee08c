"""Command line: parse flags, load the configuration, check it, then run or report.

``--demo`` only changes where the configuration comes from: it starts the
simulator on loopback and builds a config document for its accounts; from
there ``--demo`` and ``--config`` take the same path (weight check,
``--check-config``, ``--once``, serving).

Exit codes: 0 success; 1 a run-time failure (``--once`` with a failed account,
port in use); 2 a configuration problem, reported on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from exporter import __version__
from exporter.app import ListenError, poll_once, run_exporter, until_signalled
from exporter.budget import WARN_SHARE, verdict
from exporter.config import (
    DEFAULT_PORT,
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_listen,
    resolve_listen,
)
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

__all__ = ["main"]

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = "5s"
#: Where ``--demo`` listens without ``--listen``: loopback, so that trying the demo on a
#: cloud VM opens no public port. The container image sets this to all interfaces
#: (its network namespace is the boundary there).
DEMO_LISTEN_ENV = "BINANCE_FUTURES_EXPORTER_DEMO_LISTEN"
DEMO_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.demo and args.config:
        return _usage_error("--demo brings its own simulated accounts and cannot be combined "
                            "with --config; use --listen to choose its address")
    if not args.config and not args.demo:
        return _usage_error("give --config PATH, or --demo to try it without an account "
                            "(see --help)")
    return asyncio.run(_run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binance-futures-exporter",
        description="Prometheus exporter for Binance USDⓈ-M Futures accounts "
                    "(balances, positions, margin, liquidation distance, rate limits).")
    parser.add_argument("--config", metavar="PATH", help="YAML config file")
    parser.add_argument("--demo", action="store_true",
                        help="run against the built-in Binance simulator; no account needed "
                             f"(listens on {DEMO_LISTEN} unless --listen is given)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help=f"address to serve /metrics on (default :{DEFAULT_PORT}, every "
                             "interface, IPv4 and IPv6); overrides the config file's listen")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                        help="TLS and basic auth for /metrics (exporter-toolkit format)")
    parser.add_argument("--once", action="store_true",
                        help="poll every account once, print the metrics and exit")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, its secrets and the weight budget exactly "
                             "as a start would, print a summary and exit")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                        help="one of %(choices)s, any case (default %(default)s; debug logs "
                             "one line per poll)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _usage_error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


async def _run(args: argparse.Namespace) -> int:
    async with _config_source(args) as (document, base):
        try:
            config = _configure(args, document, base)
            web_config = _web_config(args, config)
        except (ConfigError, WebConfigError) as exc:
            return _usage_error(str(exc))
        if args.once:  # one poll per account: the weight budget of a long run does not apply
            return await _once(config)
        judged = verdict(config)
        if judged.error is not None:
            return _usage_error(judged.error)
        if args.check_config:
            try:
                await asyncio.to_thread(resolve_listen, config.listen_host, config.listen_port,
                                        "--listen" if args.listen else "listen")
            except ConfigError as exc:
                return _usage_error(str(exc))
            print(_summary(config, web_config, judged.warning))
            return 0
        if judged.warning is not None:
            log.warning("%s", judged.warning)
        return await _serve(args, config, web_config)


@contextlib.asynccontextmanager
async def _config_source(args: argparse.Namespace) -> AsyncIterator[tuple[Any, str | None]]:
    """The config document to use: ``--config``'s path, or the running simulator's accounts."""
    if not args.demo:
        yield None, args.config
        return
    from exporter.simulator import Simulator  # only --demo needs it

    logging.getLogger("websockets.server").setLevel(logging.WARNING)  # one line per connection
    async with Simulator() as simulator:
        accounts = []
        for account in Simulator.demo_accounts():
            account.add_to(simulator)
            entry: dict[str, object] = {"name": account.name, "api_key": account.api_key}
            if account.private_key_pem is not None:
                entry.update(private_key=account.private_key_pem.decode(), session_logon=True)
            else:
                entry["api_secret"] = account.api_secret
            accounts.append(entry)
        log.info("demo mode: polling %d simulated accounts at %s", len(accounts), simulator.url)
        yield {"endpoint": simulator.url, "user_stream_endpoint": simulator.stream_url,
               "poll_interval": DEMO_POLL_INTERVAL,
               "listen": os.environ.get(DEMO_LISTEN_ENV) or DEMO_LISTEN,
               "accounts": accounts}, None


def _configure(args: argparse.Namespace, document: Any, path: str | None) -> Config:
    config = load_config(path) if path is not None else parse_config(document)
    if args.listen:
        host, port = parse_listen(args.listen, key="--listen")
        config = replace(config, listen_host=host, listen_port=port)
    return config


def _web_config(args: argparse.Namespace, config: Config) -> WebConfig | None:
    path = args.web_config_file or config.web_config_file
    return load_web_config(path) if path else None


def _summary(config: Config, web_config: WebConfig | None, warning: str | None) -> str:
    """What --check-config prints: settings and accounts, never a secret."""
    budget = verdict(config).budget
    accounts = ", ".join(
        f"{account.name} ({account.signer.key_type}"
        f"{', session.logon' if account.session_logon else ''})"
        for account in config.accounts)
    listen = f"{config.listen_host or '*'}:{config.listen_port}"
    security = "TLS" if web_config and web_config.ssl_context else "plain HTTP"
    if web_config and web_config.basic_auth_users:
        security += f", basic auth ({len(web_config.basic_auth_users)} users)"
    lines = [
        "config OK",
        f"  accounts ({len(config.accounts)}): {accounts}",
        f"  endpoint: {config.endpoint}",
        f"  poll every {config.poll_interval:g}s, request timeout {config.request_timeout:g}s, "
        f"recvWindow {config.recv_window_ms} ms, stale after {config.stale_after:g}s",
        f"  user data stream: {_stream_summary(config)}",
        f"  weight: {budget.steady_per_minute:.0f}/min steady, {budget.first_minute:.0f} in the "
        f"first minute, of {budget.limit} per IP ({budget.usage:.0%})"
        + (f", plus polls for account changes (skipped above {WARN_SHARE:.0%})"
           if config.user_stream_endpoint else ""),
        f"  listen: {listen} ({security})",
    ]
    if warning is not None:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def _stream_summary(config: Config) -> str:
    if not config.user_stream:
        return "off (user_stream: false)"
    if config.user_stream_endpoint is None:
        return ("off: endpoint is a custom URL, whose user data stream is unknown; set "
                "user_stream_endpoint to turn it on")
    return (f"{config.user_stream_endpoint}, keepalive every "
            f"{config.user_stream_keepalive / 60:g}m, at most one poll for account changes "
            f"per {config.event_poll_min_gap:g}s")


async def _once(config: Config) -> int:
    text, failures = await poll_once(config)
    sys.stdout.buffer.write(text)
    sys.stdout.flush()
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


async def _serve(args: argparse.Namespace, config: Config, web_config: WebConfig | None) -> int:
    try:
        async with run_exporter(config, web_config, demo=args.demo) as running:

            def reload_web_config() -> None:
                """SIGHUP: read the web config file again (certificates, users)."""
                try:
                    fresh = _web_config(args, config)
                except WebConfigError as exc:
                    log.error("SIGHUP: keeping the current web config: %s", exc)
                    return
                running.server.reload(fresh or WebConfig())
                log.info("SIGHUP: web config reloaded")

            await until_signalled(on_hangup=reload_web_config)
            log.info("shutting down")
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    return 0
