"""Config loading: defaults, durations, secrets from env and files, one-line errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from exporter.config import ENDPOINTS, ConfigError, load_config, parse_config, parse_duration

SECRET = "s3cr3t-hmac-value-never-printed"
KEY = "apiKeyValue123"


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def account(**fields: object) -> dict[str, object]:
    return {"name": "main", "api_key": KEY, "api_secret": SECRET, **fields}


def test_defaults() -> None:
    config = parse_config({"accounts": [account()]})
    assert config.listen_host == "" and config.listen_port == 10317
    assert config.endpoint == ENDPOINTS["production"]
    assert config.poll_interval == 15 and config.request_timeout == 10
    assert config.recv_window_ms == 5000
    assert config.stale_after == 45  # 3 x poll_interval
    assert config.connection_lifetime == 23 * 3600
    assert config.accounts[0].signer.key_type == "hmac"


def test_stale_after_follows_poll_interval() -> None:
    config = parse_config({"poll_interval": "2m", "accounts": [account()]})
    assert config.stale_after == 360 and config.request_timeout == 10


@pytest.mark.parametrize(("text", "seconds"), [
    ("15s", 15), ("2m", 120), ("500ms", 0.5), ("1h30m", 5400), (7, 7), (0.25, 0.25),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "poll_interval") == seconds


@pytest.mark.parametrize("text", ["", "15", "fast", "-1s", "0s", "1e400", True, None, "15 s"])
def test_bad_durations_name_the_key(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^poll_interval: "):
        parse_config({"poll_interval": text, "accounts": [account()]})


def test_endpoint_choices() -> None:
    assert parse_config({"endpoint": "testnet", "accounts": [account()]}).endpoint == (
        ENDPOINTS["testnet"])
    assert parse_config({"endpoint": "ws://127.0.0.1:1/x", "accounts": [account()]}).endpoint == (
        "ws://127.0.0.1:1/x")
    with pytest.raises(ConfigError, match=r"^endpoint: "):
        parse_config({"endpoint": "https://fapi.binance.com", "accounts": [account()]})


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:9999", "127.0.0.1", 9999), (":10317", "", 10317), ("[::1]:8080", "::1", 8080),
])
def test_listen(listen: str, host: str, port: int) -> None:
    config = parse_config({"listen": listen, "accounts": [account()]})
    assert (config.listen_host, config.listen_port) == (host, port)


@pytest.mark.parametrize(("document", "problem"), [
    ({"accounts": [account()], "pol_interval": "5s"}, r"^pol_interval: unknown key"),
    ({"accounts": [account(extra=1)]}, r"^accounts\[0\]\.extra: unknown key"),
    ({"accounts": [account(), account()]}, r"^accounts\[1\]\.name: duplicate account name"),
    ({"accounts": []}, r"^accounts: "),
    ({}, r"^accounts: at least one account"),
    ({"accounts": [{"name": "main", "api_key": KEY}]}, r"give exactly one of api_secret"),
    ({"accounts": [account(private_key="x")]}, r"give exactly one of api_secret"),
    ({"accounts": [{"name": "main", "api_secret": SECRET}]}, r"\.api_key: required"),
    ({"accounts": [account(name="bad name")]}, r"^accounts\[0\]\.name: "),
    ({"accounts": [account(api_secret="${NOT_SET_ANYWHERE_42}")]},
     r"api_secret: environment variable NOT_SET_ANYWHERE_42 is not set"),
    ({"accounts": [account(session_logon=True)]}, r"session_logon: .*Ed25519"),
    ({"recv_window": 60001, "accounts": [account()]}, r"^recv_window: "),
    ({"listen": "localhost", "accounts": [account()]}, r"^listen: "),
    ({"request_timeout": "20s", "accounts": [account()]}, r"^request_timeout: .*longer"),
    ({"poll_interval": "10s", "stale_after": "5s", "accounts": [account()]}, r"^stale_after: "),
    ([1, 2], r"top level must be a mapping"),
])
def test_config_errors_are_one_line_naming_the_key(document: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_config(document)
    assert "\n" not in str(caught.value)
    assert SECRET not in str(caught.value)


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_SECRET_FOR_TEST", SECRET)
    config = parse_config({"accounts": [account(api_secret="${BINANCE_SECRET_FOR_TEST}")]})
    assert config.accounts[0].signer.sign(b"x") == parse_config(
        {"accounts": [account()]}).accounts[0].signer.sign(b"x")


def test_secrets_from_files_strip_trailing_newlines(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "secret").write_text(SECRET + "\r\n")
    os.chmod(tmp_path / "key", 0o600)
    os.chmod(tmp_path / "secret", 0o644)
    path = write(tmp_path, {"accounts": [{"name": "main", "api_key_file": "key",
                                          "api_secret_file": str(tmp_path / "secret")}]})
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.accounts[0].api_key.reveal() == KEY
    assert config.accounts[0].signer.sign(b"x") == parse_config(
        {"accounts": [account()]}).accounts[0].signer.sign(b"x")
    # world-readable secret file: a warning naming the file, not a refusal
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(tmp_path / "secret") in w for w in warnings)
    assert not any(str(tmp_path / "key") + " " in w for w in warnings)


def test_missing_secret_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"accounts": [account(api_secret=None, api_secret_file="nope")]})
    with pytest.raises(ConfigError, match=r"api_secret_file: cannot read .*nope"):
        load_config(path)


def test_private_key_with_passphrase_from_file(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"phrase")))
    (tmp_path / "phrase").write_text("phrase\n")
    path = write(tmp_path, {"accounts": [{
        "name": "ed", "api_key": KEY, "private_key_file": "key.pem",
        "private_key_passphrase_file": "phrase", "session_logon": True}]})
    config = load_config(path)
    assert config.accounts[0].signer.key_type == "ed25519"
    assert config.accounts[0].session_logon


def test_bad_private_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"accounts\[0\] \(main\)\.private_key: .*not a valid"):
        parse_config({"accounts": [{"name": "main", "api_key": KEY,
                                    "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"}]})


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    config = parse_config({"accounts": [account()]})
    assert SECRET not in repr(config) and KEY not in repr(config)
    assert SECRET not in str(config.accounts[0]) and KEY not in str(config.accounts[0].api_key)


@pytest.mark.parametrize(("text", "problem"), [
    ("accounts: [", "not valid YAML"),
    ("poll_interval: 5s\npoll_interval: 6s\naccounts: []\n", "duplicate key 'poll_interval'"),
    ("\xff", None),
])
def test_yaml_problems(tmp_path: Path, text: str, problem: str | None) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    if problem:
        assert problem in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_example_config_is_valid_and_shows_every_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
    from_example = load_config(example)
    defaults = parse_config({"accounts": [account()]})
    for field in ("listen_host", "listen_port", "endpoint", "poll_interval", "request_timeout",
                  "recv_window_ms", "stale_after", "reconnect_backoff_min",
                  "reconnect_backoff_max", "connection_lifetime", "auth_retry_interval",
                  "clock_sync_interval", "weight_limit", "max_frame_size", "web_config_file"):
        assert getattr(from_example, field) == getattr(defaults, field), field
