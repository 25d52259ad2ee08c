"""Known fake secrets never appear in anything the exporter prints or serves."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from exporter import poller as poller_module
from exporter.app import run_exporter
from exporter.config import load_config
from exporter.simulator import Simulator
from tests.support import CliProcess, fetch, run_cli, wait_for

HMAC_KEY = "SecretApiKeyAAAA1111"
HMAC_SECRET = "SecretHmacSecretBBBB2222"
WRONG_SECRET = "SecretWrongSecretCCCC3333"
UNKNOWN_KEY = "SecretUnknownKeyDDDD4444"
ED_KEY = "SecretEdKeyEEEE5555"
RSA_KEY = "SecretRsaKeyFFFF6666"
PASSPHRASE = "SecretPassphraseGGGG7777"


class Keys:
    """Key pairs made for the test; the private PEM bodies count as secrets."""

    def __init__(self) -> None:
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed_pem = self.ed.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()))
        self.rsa_pem = self.rsa.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())

    def secrets(self) -> list[str]:
        pem_lines = [line for pem in (self.ed_pem, self.rsa_pem)
                     for line in pem.decode().splitlines() if "-----" not in line]
        return [HMAC_KEY, HMAC_SECRET, WRONG_SECRET, UNKNOWN_KEY, ED_KEY, RSA_KEY, PASSPHRASE,
                *pem_lines]


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def sim(keys: Keys) -> Simulator:
    def public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    async with Simulator(lively=False) as simulator:
        simulator.add_account("good", api_key=HMAC_KEY, api_secret=HMAC_SECRET)
        simulator.add_account("ed", api_key=ED_KEY, ed25519_public_key=public(keys.ed))
        simulator.add_account("rsa", api_key=RSA_KEY, rsa_public_key=public(keys.rsa))
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, keys: Keys) -> Path:
    """Accounts that succeed with every key type, and ones that fail signature and auth."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    files = {"hmac_secret": HMAC_SECRET, "ed.pem": keys.ed_pem.decode(),
             "passphrase": PASSPHRASE + "\n", "rsa.pem": keys.rsa_pem.decode()}
    for name, content in files.items():
        (secrets / name).write_text(content)
        os.chmod(secrets / name, 0o600)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "endpoint": sim.url, "poll_interval": "3s",
        "accounts": [
            {"name": "good", "api_key": HMAC_KEY, "api_secret_file": str(secrets / "hmac_secret")},
            {"name": "bad-signature", "api_key": HMAC_KEY, "api_secret": WRONG_SECRET},
            {"name": "unknown-key", "api_key": UNKNOWN_KEY, "api_secret": HMAC_SECRET},
            {"name": "ed", "api_key": ED_KEY, "private_key_file": str(secrets / "ed.pem"),
             "private_key_passphrase_file": str(secrets / "passphrase"), "session_logon": True},
            {"name": "rsa", "api_key": RSA_KEY, "private_key_file": str(secrets / "rsa.pem")},
        ]}))
    return path


def assert_no_secret(text: str, keys: Keys) -> None:
    leaked = [secret for secret in keys.secrets() if secret in text]
    assert not leaked, f"secrets leaked: {leaked}"


async def test_nothing_printed_or_served_contains_a_secret(sim: Simulator, keys: Keys,
                                                           tmp_path: Path) -> None:
    path = write_config(tmp_path, sim, keys)
    outputs = []
    for flags in (["--check-config"], ["--once", "--log-level", "debug"]):
        result = await run_cli("--config", str(path), *flags)
        outputs += [result.stdout, result.stderr]
    assert "account bad-signature: auth" in outputs[-1]  # the failure paths did run
    cli = await CliProcess.start("--config", str(path), "--log-level", "debug")

    async def all_polled() -> bool:
        _, _, body = await asyncio.to_thread(fetch, cli.url + "/metrics")
        return body.count(b"binance_futures_up{") == 5 and b'up{account="rsa"} 1.0' in body

    try:
        await wait_for(all_polled, timeout=20)
        for page in ("/metrics", "/", "/healthz"):
            outputs.append((await asyncio.to_thread(fetch, cli.url + page))[2].decode())
    finally:
        await cli.stop()
    assert cli.process.stdout is not None
    outputs += [(await cli.process.stdout.read()).decode(), cli.stderr]
    everything = "\n".join(outputs)
    assert "WebSocket" in everything and "DEBUG" in everything  # debug logging was on
    assert_no_secret(everything, keys)


async def test_config_reprs_hide_secrets(sim: Simulator, keys: Keys, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, sim, keys))
    assert_no_secret(repr(config) + str(config), keys)
    for account in config.accounts:
        assert_no_secret(repr(account) + repr(account.signer) + str(account.api_key), keys)


async def test_crash_in_a_poller_is_logged_without_secrets(
        sim: Simulator, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(result: object, *, received_at: float) -> None:
        raise RuntimeError("simulated bug while parsing")

    monkeypatch.setattr(poller_module, "parse_account_status", explode)
    config = load_config(write_config(tmp_path, sim, keys))
    with caplog.at_level(logging.DEBUG):
        async with run_exporter(config) as running:
            await wait_for(lambda: all(p.state.errors for p in running.pollers), timeout=10)
            assert all(not p.state.up for p in running.pollers)
    assert "simulated bug while parsing" in caplog.text and "Traceback" in caplog.text
    assert_no_secret(caplog.text, keys)
