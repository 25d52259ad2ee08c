"""Command line: parse flags, load the config, wire pollers, exposition and HTTP server.

Exit codes: 0 success; 1 a run-time failure (``--once`` with a failed account,
port in use); 2 a configuration problem, reported on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from exporter import __version__
from exporter.config import (
    DEFAULT_PORT,
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_listen,
)
from exporter.http import MetricsServer
from exporter.poller import AccountPoller, weight_budget
from exporter.render import Exposition
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("exporter")

DEMO_POLL_INTERVAL = "5s"
WEIGHT_WARN, WEIGHT_REFUSE = 0.5, 0.9
SHUTDOWN_GRACE = 1.5  # seconds to close connections; the whole exit stays under 2 s


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.config and not args.demo:
        print("error: give --config PATH, or --demo to try it without an account "
              "(see --help)", file=sys.stderr)
        return 2
    if args.demo:
        return asyncio.run(_with_demo(args))
    try:
        config = _load(args)
        web_config = _web_config(args, config)
    except (ConfigError, WebConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _dispatch(args, config, web_config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binance-futures-exporter",
        description="Prometheus exporter for Binance USDⓈ-M Futures accounts "
                    "(balances, positions, margin, rate limits).")
    parser.add_argument("--config", metavar="PATH", help="YAML config file")
    parser.add_argument("--demo", action="store_true",
                        help="run against the built-in Binance simulator; no account needed")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help=f"address to serve /metrics on (default :{DEFAULT_PORT}, all "
                             "interfaces)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                        help="TLS and basic auth for /metrics (exporter-toolkit format)")
    parser.add_argument("--once", action="store_true",
                        help="poll every account once, print the metrics and exit")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and its secrets, print a summary and exit")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _load(args: argparse.Namespace, document: dict[str, object] | None = None) -> Config:
    config = parse_config(document) if document is not None else load_config(args.config)
    if args.listen:
        host, port = parse_listen(args.listen, key="--listen")
        config = replace(config, listen_host=host, listen_port=port)
    return config


def _web_config(args: argparse.Namespace, config: Config) -> WebConfig | None:
    path = args.web_config_file or config.web_config_file
    return load_web_config(path) if path else None


def _dispatch(args: argparse.Namespace, config: Config, web_config: WebConfig | None) -> int:
    if args.check_config:
        print(_summary(config, web_config))
        return 0
    if not _weight_fits(config):
        return 2
    if args.once:
        return asyncio.run(_once(config))
    return asyncio.run(_serve(config, web_config))


async def _with_demo(args: argparse.Namespace) -> int:
    """Start the simulator on loopback and run as usual against its demo accounts."""
    from exporter.simulator import Simulator  # only --demo needs it

    logging.getLogger("websockets.server").setLevel(logging.WARNING)  # one line per connection
    async with Simulator() as simulator:
        demo = Simulator.demo_accounts()
        accounts = []
        for account in demo:
            account.add_to(simulator)
            entry: dict[str, object] = {"name": account.name, "api_key": account.api_key}
            if account.private_key_pem is not None:
                entry.update(private_key=account.private_key_pem.decode(), session_logon=True)
            else:
                entry["api_secret"] = account.api_secret
            accounts.append(entry)
        document = {"endpoint": simulator.url, "poll_interval": DEMO_POLL_INTERVAL,
                    "accounts": accounts}
        try:
            config = _load(args, document)
            web_config = _web_config(args, config)
        except (ConfigError, WebConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log.info("demo mode: polling %d simulated accounts at %s", len(accounts), simulator.url)
        if args.check_config:
            print(_summary(config, web_config))
            return 0
        if args.once:
            return await _once(config)
        return await _serve(config, web_config)


def _summary(config: Config, web_config: WebConfig | None) -> str:
    """What --check-config prints: settings and accounts, never a secret."""
    budget = weight_budget(config)
    accounts = ", ".join(
        f"{account.name} ({account.signer.key_type}"
        f"{', session.logon' if account.session_logon else ''})"
        for account in config.accounts)
    listen = f"{config.listen_host or '*'}:{config.listen_port}"
    security = "TLS" if web_config and web_config.ssl_context else "plain HTTP"
    if web_config and web_config.basic_auth_users:
        security += f", basic auth ({len(web_config.basic_auth_users)} users)"
    return "\n".join((
        "config OK",
        f"  accounts ({len(config.accounts)}): {accounts}",
        f"  endpoint: {config.endpoint}",
        f"  poll every {config.poll_interval:g}s, request timeout {config.request_timeout:g}s, "
        f"recvWindow {config.recv_window_ms} ms, stale after {config.stale_after:g}s",
        f"  weight: {budget.steady_per_minute:.0f}/min steady, {budget.first_minute:.0f} in the "
        f"first minute, of {budget.limit} per IP ({budget.usage:.0%})",
        f"  listen: {listen} ({security})",
    ))


def _weight_fits(config: Config) -> bool:
    """Warn above half of the per-IP weight limit; refuse above 90 %."""
    budget = weight_budget(config)
    if budget.usage <= WEIGHT_WARN:
        return True
    fits = budget.fitting_interval(config.poll_interval, WEIGHT_WARN)
    advice = f"poll_interval {fits:g}s or more would fit, or " if fits else ""
    text = (f"{len(config.accounts)} accounts every {config.poll_interval:g}s need "
            f"{budget.first_minute:.0f} weight/min, {budget.usage:.0%} of the {budget.limit} "
            f"per-IP limit; {advice}split accounts over replicas with their own IPs")
    if budget.usage > WEIGHT_REFUSE:
        print(f"error: poll_interval: {text}", file=sys.stderr)
        return False
    log.warning("%s", text)
    return True


def _pollers(config: Config, exposition: Exposition) -> list[AccountPoller]:
    """One poller per account, staggered across the interval so polls never burst."""
    count = len(config.accounts)
    pollers = [AccountPoller(account, config, exposition.publish,
                             start_delay=index * config.poll_interval / count)
               for index, account in enumerate(config.accounts)]
    for poller in pollers:
        exposition.publish(poller.state)
    return pollers


async def _once(config: Config) -> int:
    exposition = Exposition(__version__)
    pollers = _pollers(config, exposition)
    try:
        results = await asyncio.gather(*(poller.poll_once() for poller in pollers))
    finally:
        await _close(pollers)
    sys.stdout.buffer.write(exposition.render_now().text)
    sys.stdout.flush()
    failed = [poller for poller, ok in zip(pollers, results, strict=True) if not ok]
    for poller in failed:
        error = poller.last_error
        print(f"error: account {poller.account.name}: {error.reason if error else '?'}: {error}",
              file=sys.stderr)
    return 1 if failed else 0


async def _serve(config: Config, web_config: WebConfig | None) -> int:
    try:
        async with run_exporter(config, web_config):
            await _until_signalled()
            log.info("shutting down")
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    return 0


class ListenError(Exception):
    """The HTTP server could not bind its address."""


@dataclass(frozen=True)
class RunningExporter:
    server: MetricsServer
    exposition: Exposition
    pollers: list[AccountPoller]


@contextlib.asynccontextmanager
async def run_exporter(config: Config,
                       web_config: WebConfig | None = None) -> AsyncIterator[RunningExporter]:
    """Serve /metrics and poll every account until the block exits, then stop cleanly."""
    exposition = Exposition(__version__)
    pollers = _pollers(config, exposition)
    exposition.render_now()
    server = MetricsServer(config.listen_host, config.listen_port, exposition.page,
                           web_config=web_config, version=__version__)
    try:
        await server.start()
    except OSError as exc:
        await _close(pollers)
        raise ListenError(f"cannot listen on {config.listen_host or '*'}:{config.listen_port}: "
                          f"{exc.strerror or exc}") from None
    tasks = [asyncio.create_task(exposition.run(), name="exposition")]
    tasks += [asyncio.create_task(poller.run(), name=f"poller-{poller.account.name}")
              for poller in pollers]
    try:
        yield RunningExporter(server, exposition, pollers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close(pollers)
        await server.stop()


async def _close(pollers: list[AccountPoller]) -> None:
    closing = asyncio.gather(*(poller.close() for poller in pollers), return_exceptions=True)
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE):
            await closing
    except TimeoutError:
        log.warning("some connections did not close within %.1fs", SHUTDOWN_GRACE)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
