"""The command line as a user runs it: a real subprocess against the simulator."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import urllib.error
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter import __version__
from exporter.simulator import Simulator
from tests.support import (
    HEDGE_KEY,
    HEDGE_SECRET,
    HMAC_KEY,
    HMAC_SECRET,
    CliProcess,
    fetch,
    parse_metrics,
    run_cli,
    wait_for,
)


def write_config(tmp_path: Path, sim: Simulator, accounts: list[dict[str, object]]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"endpoint": sim.url, "poll_interval": "2s",
                                    "accounts": accounts}))
    return path


async def test_once_prints_metrics_and_exits_0(simulator: Simulator, tmp_path: Path) -> None:
    path = write_config(tmp_path, simulator, [
        {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET},
        {"name": "hedge", "api_key": HEDGE_KEY, "api_secret": HEDGE_SECRET},
    ])
    result = await run_cli("--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    samples = parse_metrics(result.stdout)
    for name in ("oneway", "hedge"):
        assert samples[("binance_futures_up", frozenset({("account", name)}))] == 1
        served = simulator.accounts[name].last_result
        assert served is not None
        assert samples[("binance_futures_account_total_wallet_balance",
                        frozenset({("account", name)}))] == float(served["totalWalletBalance"])
    output = result.stdout + result.stderr
    assert HMAC_SECRET not in output and HEDGE_SECRET not in output and HMAC_KEY not in output


async def test_once_names_each_failed_account_and_exits_1(simulator: Simulator,
                                                          tmp_path: Path) -> None:
    path = write_config(tmp_path, simulator, [
        {"name": "good", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET},
        {"name": "wrong-secret", "api_key": HEDGE_KEY, "api_secret": "not-the-secret"},
        {"name": "unknown-key", "api_key": "no-such-key", "api_secret": HMAC_SECRET},
    ])
    result = await run_cli("--config", str(path), "--once")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any("account wrong-secret: auth" in line for line in errors)
    assert any("account unknown-key: auth" in line for line in errors)
    samples = parse_metrics(result.stdout)
    assert samples[("binance_futures_up", frozenset({("account", "good")}))] == 1
    assert samples[("binance_futures_up", frozenset({("account", "wrong-secret")}))] == 0
    assert HMAC_SECRET not in result.stdout + result.stderr


async def test_check_config_prints_a_summary_without_secrets(simulator: Simulator,
                                                             tmp_path: Path) -> None:
    path = write_config(tmp_path, simulator, [
        {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}])
    result = await run_cli("--config", str(path), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "oneway (hmac)" in result.stdout
    assert HMAC_SECRET not in result.stdout + result.stderr
    assert HMAC_KEY not in result.stdout + result.stderr
    assert len(simulator.requests) == 0  # checking talks to nobody


@pytest.mark.parametrize(("config", "problem"), [
    ("accounts: [{name: a, api_key: k, api_secret: s}]\nbogus: 1\n", "error: bogus: unknown key"),
    ("poll_interval: soon\naccounts: [{name: a, api_key: k, api_secret: s}]\n",
     "error: poll_interval: expected a duration"),
    ("accounts:\n- {name: a, api_key: k, api_secret: s}\n- {name: a, api_key: k, api_secret: s}\n",
     "error: accounts[1].name: duplicate account name 'a'"),
    ("accounts: [{name: a, api_key: k, api_secret_file: /nonexistent/secret}]\n",
     "error: accounts[0] (a).api_secret_file: cannot read '/n…' (19 characters): No such"),
    ("poll_interval: 100ms\naccounts: [{name: a, api_key: k, api_secret: s}]\n",
     "error: poll_interval: 1 accounts every 0.1s need"),
])
async def test_bad_config_exits_2_with_one_line(tmp_path: Path, config: str,
                                                problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    path.chmod(0o600)  # inline secrets: a shared file would add a warning line
    result = await run_cli("--config", str(path), "--check-config")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(problem), result.stderr


async def test_no_config_and_bad_listen_exit_2(tmp_path: Path) -> None:
    result = await run_cli()
    assert result.returncode == 2 and "--demo" in result.stderr
    path = tmp_path / "c.yaml"
    path.write_text("accounts: [{name: a, api_key: k, api_secret: s}]\n")
    path.chmod(0o600)  # inline secrets: a shared file would add a warning line
    result = await run_cli("--config", str(path), "--listen", "nowhere", "--check-config")
    assert result.returncode == 2 and result.stderr.startswith("error: --listen: ")


async def test_version() -> None:
    result = await run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == (
        f"binance-futures-exporter {__version__}")


async def test_demo_once_needs_no_account() -> None:
    result = await run_cli("--demo", "--once")
    assert result.returncode == 0, result.stderr
    samples = parse_metrics(result.stdout)
    ups = {dict(labels)["account"]: value for (name, labels), value in samples.items()
           if name == "binance_futures_up"}
    assert len(ups) == 3 and set(ups.values()) == {1.0}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_closes_every_connection_and_exits_0(simulator: Simulator,
                                                            tmp_path: Path, signum: int) -> None:
    path = write_config(tmp_path, simulator, [
        {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}])
    cli = await CliProcess.start("--config", str(path))
    await wait_for(lambda: any(r.method == "v2/account.status" for r in simulator.requests))
    assert await cli.stop(signum) == 0, cli.stderr
    assert "Traceback" not in cli.stderr and "shutting down" in cli.stderr
    await wait_for(lambda: simulator.open_connections == 0)


async def test_weight_budget_above_half_warns_and_names_a_fitting_interval(
        tmp_path: Path) -> None:
    accounts = [{"name": f"a{i}", "api_key": "k", "api_secret": "s"} for i in range(12)]
    path = tmp_path / "config.yaml"
    # nothing listens on port 1: the pollers fail without leaving this machine
    path.write_text(yaml.safe_dump({"endpoint": "ws://127.0.0.1:1/ws-fapi/v1",
                                    "poll_interval": "4s", "accounts": accounts}))
    result = await run_cli("--config", str(path), "--check-config")
    assert result.returncode == 0
    # 12 x (15 polls x (5 status + 5 position details) + 0.1 x (2 clock check + 10 mode))
    assert "weight: 1814/min steady" in result.stdout
    assert "warning: " in result.stdout and "poll_interval 8s or more would fit" in result.stdout
    cli = await CliProcess.start("--config", str(path))
    await cli.stop()
    warnings = [line for line in cli.lines if "WARNING exporter:" in line]
    assert len(warnings) == 1 and "poll_interval 8s or more would fit" in warnings[0], warnings
    # the advice is true: at 8 s the first minute is within half the limit, at 7 s it is not
    for interval, within in (("8s", True), ("7s", False)):
        path.write_text(yaml.safe_dump({"endpoint": "ws://127.0.0.1:1/ws-fapi/v1",
                                        "poll_interval": interval, "accounts": accounts}))
        result = await run_cli("--config", str(path), "--check-config")
        usage = int(result.stdout.split("per IP (")[1].split("%")[0])
        assert (usage <= 50) is within, result.stdout


async def test_check_config_says_whether_the_user_stream_runs_and_counts_its_weight(
        tmp_path: Path) -> None:
    accounts = [{"name": f"a{i}", "api_key": "k", "api_secret": "s"} for i in range(10)]
    path = tmp_path / "config.yaml"

    async def check(**settings: object) -> str:
        path.write_text(yaml.safe_dump({**settings, "accounts": accounts}))
        result = await run_cli("--config", str(path), "--check-config")
        assert result.returncode == 0, result.stderr
        return result.stdout

    on = await check(user_stream_keepalive="1m")
    assert ("user data stream: wss://fstream.binance.com/private/ws, keepalive every 1m, at "
            "most one poll for account changes per 1s") in on
    assert "plus polls for account changes (skipped above 50%)" in on
    custom = await check(endpoint="ws://127.0.0.1:1/ws-fapi/v1")
    assert ("user data stream: off: endpoint is a custom URL, whose user data stream is "
            "unknown; set user_stream_endpoint to turn it on") in custom
    off = await check(user_stream=False, user_stream_keepalive="1m")
    assert "user data stream: off (user_stream: false)" in off

    def weights(text: str) -> tuple[int, int]:
        line = next(line for line in text.splitlines() if "weight:" in line)
        steady, first = line.split("weight: ")[1].split("/min steady, ")
        return int(steady), int(first.split(" in the first minute")[0])

    # 10 accounts: a keepalive a minute each, and a userDataStream.start each at start
    assert weights(on)[0] - weights(off)[0] == 10
    assert weights(on)[1] - weights(off)[1] == 20


async def test_demo_runs_the_user_stream_of_every_account() -> None:
    cli = await CliProcess.start("--demo")
    try:
        async def streams_up() -> bool:
            _, _, body = await asyncio.to_thread(fetch, cli.url + "/metrics")
            ups = [value for (name, _), value in parse_metrics(body.decode()).items()
                   if name == "binance_futures_user_stream_up"]
            return ups == [1.0, 1.0, 1.0]

        await wait_for(streams_up, timeout=20)
    finally:
        assert await cli.stop() == 0, cli.stderr
    assert "Traceback" not in cli.stderr


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return (await asyncio.to_thread(fetch, url, headers))[0]
    except urllib.error.HTTPError as error:
        return error.code


async def test_web_config_file_locks_metrics_and_sighup_reloads_it(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"

    def users(**passwords: str) -> None:
        web_config.write_text(yaml.safe_dump({"basic_auth_users": {
            user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            for user, password in passwords.items()}}))

    users(prometheus="scrape-password")
    cli = await CliProcess.start("--demo", "--web.config.file", str(web_config))
    url = cli.url + "/metrics"
    try:
        assert await status_of(url) == 401
        assert await status_of(url, basic("prometheus", "scrape-password")) == 200
        users(grafana="new-password")
        cli.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "web config reloaded" in cli.stderr)
        assert await status_of(url, basic("prometheus", "scrape-password")) == 401
        assert await status_of(url, basic("grafana", "new-password")) == 200
        web_config.write_text("basic_auth_users: {grafana: not-a-hash}\n")
        cli.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "keeping the current web config" in cli.stderr)
        assert await status_of(url, basic("grafana", "new-password")) == 200
    finally:
        assert await cli.stop() == 0, cli.stderr


async def test_demo_listens_on_loopback_and_refuses_a_config_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BINANCE_FUTURES_EXPORTER_DEMO_LISTEN"}
    result = await run_cli("--demo", "--check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "listen: 127.0.0.1:10317" in result.stdout
    result = await run_cli("--demo", "--check-config",
                           env={**env, "BINANCE_FUTURES_EXPORTER_DEMO_LISTEN": ":10317"})
    assert "listen: *:10317" in result.stdout
    path = tmp_path / "config.yaml"
    path.write_text("accounts: [{name: a, api_key: k, api_secret_file: /nonexistent}]\n")
    result = await run_cli("--demo", "--config", str(path), "--check-config")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --demo brings its own simulated accounts")


async def test_landing_page_shows_each_account_and_demo_mode() -> None:
    cli = await CliProcess.start("--demo")
    try:
        async def all_up() -> str | None:
            _, _, body = await asyncio.to_thread(fetch, cli.url + "/")
            page = body.decode()
            ready = page.count(">up<") == 3 and page.count('"up">connected<') == 3
            return page if ready else None

        page = await wait_for(all_up, timeout=20)
    finally:
        await cli.stop()
    assert "Demo mode" in page
    for name in ("demo-oneway", "demo-hedge", "demo-ed25519"):
        assert name in page


async def test_log_level_is_case_insensitive() -> None:
    result = await run_cli("--demo", "--check-config", "--log-level", "DEBUG")
    assert result.returncode == 0, result.stderr
    assert " DEBUG " in result.stderr
