"""Config loading: defaults, durations, secrets from env and files, one-line errors."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from exporter.config import (
    _TOP_LEVEL_KEYS,
    ENDPOINTS,
    USER_STREAM_ENDPOINTS,
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
    parse_size,
    resolve_listen,
)

SECRET = "s3cr3t-hmac-value-never-printed"
KEY = "apiKeyValue123"
# Shaped like a real Binance secret: 64 letters and digits.
LONG_SECRET = "Xq7Rk2LmP9sT4vWz8bN3cF6hJ1dG5yA0eU2iO7pQ4rS9tV3wX8zB6nM1kL5jH2gF"


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
    ("90", 90), ("1.5", 1.5), (" 90 ", 90),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "poll_interval") == seconds


def test_quoted_number_in_a_file_is_seconds(tmp_path: Path) -> None:
    path = write(tmp_path,
                 'poll_interval: "90"\naccounts: [{name: a, api_key: k, api_secret: s}]\n')
    assert load_config(path).poll_interval == 90


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0s", "0", "1e400", True, None, "15 s",
                                  "-5", "1.", ".5"])
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


def test_user_stream_defaults_follow_the_endpoint() -> None:
    config = parse_config({"accounts": [account()]})
    assert config.user_stream and config.user_stream_endpoint == (
        "wss://fstream.binance.com/private/ws")
    assert config.user_stream_keepalive == 1800 and config.event_poll_min_gap == 1
    for endpoint in ("testnet", ENDPOINTS["testnet"]):
        assert parse_config({"endpoint": endpoint, "accounts": [account()]}).user_stream_endpoint \
            == USER_STREAM_ENDPOINTS["testnet"] == "wss://fstream.binancefuture.com/private/ws"


def test_a_custom_endpoint_has_no_stream_unless_it_is_given() -> None:
    custom = {"endpoint": "ws://127.0.0.1:1/ws-fapi/v1", "accounts": [account()]}
    config = parse_config(custom)
    assert config.user_stream and config.user_stream_endpoint is None
    given = parse_config({**custom, "user_stream_endpoint": "ws://127.0.0.1:1/private/ws"})
    assert given.user_stream_endpoint == "ws://127.0.0.1:1/private/ws"
    query = "wss://fstream.binance.com/private/ws?events=ACCOUNT_UPDATE/MARGIN_CALL"
    assert parse_config({**custom, "user_stream_endpoint": query}).user_stream_endpoint == query
    assert parse_config({**custom, "user_stream_endpoint": "testnet"}).user_stream_endpoint == (
        USER_STREAM_ENDPOINTS["testnet"])
    off = parse_config({"user_stream": False, "accounts": [account()]})
    assert not off.user_stream and off.user_stream_endpoint is None


@pytest.mark.parametrize(("settings", "problem"), [
    ({"user_stream": "yes"}, r"^user_stream: expected true or false"),
    ({"user_stream_endpoint": "https://fstream.binance.com"}, r"^user_stream_endpoint: "),
    ({"user_stream_endpoint": "ws://[::1/private/ws"}, r"^user_stream_endpoint: "),
    ({"user_stream_endpoint": "wss:///private/ws"}, r"^user_stream_endpoint: "),
    ({"user_stream_endpoint": 5}, r"^user_stream_endpoint: "),
    ({"user_stream_endpoint": "wss://h/private/ws?listenKey=abc"},
     r"^user_stream_endpoint: give the URL without a listenKey"),
    ({"user_stream_keepalive": "46m"}, r"^user_stream_keepalive: must be at most 45m"),
    ({"user_stream_keepalive": "0s"}, r"^user_stream_keepalive: must be a positive duration"),
    ({"event_poll_min_gap": "soon"}, r"^event_poll_min_gap: expected a duration"),
])
def test_bad_user_stream_settings_name_the_key(settings: dict[str, object],
                                               problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config({**settings, "accounts": [account()]})


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
    ({"accounts": [account(session_logon="yes")]},
     r"session_logon: expected true or false, got 'yes'"),
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


def test_missing_secret_file_is_named_by_key_not_by_value(tmp_path: Path) -> None:
    path = write(tmp_path, {"accounts": [account(api_secret=None,
                                                 api_secret_file="no/such/secret.txt")]})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        "accounts[0] (main).api_secret_file: cannot read 'no…' (18 characters) relative to "
        f"{tmp_path}: No such file or directory")


@pytest.mark.parametrize("field", ["api_key_file", "api_secret_file", "private_key_file",
                                   "private_key_passphrase_file"])
def test_secret_pasted_into_a_file_key_is_not_echoed(tmp_path: Path, field: str) -> None:
    entry = {"name": "main", "api_key": KEY, "private_key": "x", field: LONG_SECRET}
    entry.pop(field.removesuffix("_file"), None)
    path = write(tmp_path, {"accounts": [entry]})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f".{field}: cannot read 'Xq7R…' (64 characters)" in message
    assert LONG_SECRET[4:12] not in message


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
    with pytest.raises(ConfigError, match=r"^config file .*absent\.yaml: cannot read: No such"):
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
                  "clock_sync_interval", "weight_limit", "max_frame_size", "web_config_file",
                  "position_details", "user_stream", "user_stream_endpoint",
                  "user_stream_keepalive", "event_poll_min_gap"):
        assert getattr(from_example, field) == getattr(defaults, field), field
    text = example.read_text(encoding="utf-8")
    shown = set(re.findall(r"^(?:# )?([a-z_]+):", text, re.M))
    assert shown >= _TOP_LEVEL_KEYS, f"not in the example: {_TOP_LEVEL_KEYS - shown}"


@pytest.mark.parametrize("interval", ["1m", "5m", "2s"])
def test_the_example_works_with_only_poll_interval_changed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, interval: str) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
    example = (Path(__file__).parent.parent / "config.example.yaml").read_text(encoding="utf-8")
    copy = tmp_path / "config.yaml"
    copy.write_text(example.replace("poll_interval: 15s", f"poll_interval: {interval}"))
    copy.chmod(0o600)
    config = load_config(copy)
    assert config.stale_after == 3 * config.poll_interval
    assert config.request_timeout == min(10.0, config.poll_interval)


# -- secrets that are not what they seem ----------------------------------------------------------


@pytest.mark.parametrize(("value", "fix"), [
    ("$BINANCE_API_KEY", "${BINANCE_API_KEY}"),
    ("  $BINANCE_API_KEY ", "${BINANCE_API_KEY}"),
    ("${BINANCE_API_KEY", "${BINANCE_API_KEY}"),
    ("$BINANCE_API_KEY}", "${BINANCE_API_KEY}"),
    ("$_x1", "${_x1}"),
])
def test_unexpanded_variable_is_an_error_naming_the_fix(value: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"accounts": [account(api_key=value)]})
    message = str(caught.value)
    assert message.startswith("accounts[0] (main).api_key: got ")
    assert f"write {fix}" in message


@pytest.mark.parametrize("field", ["api_secret", "private_key_passphrase"])
def test_unexpanded_variable_in_other_secret_fields(field: str) -> None:
    entry = account(**{field: "$MY_SECRET"})
    if field == "private_key_passphrase":
        entry.update(api_secret=None, private_key="x")
    with pytest.raises(ConfigError, match=rf"\.{field}: .*write \$\{{MY_SECRET\}}"):
        parse_config({"accounts": [entry]})


def test_a_passphrase_like_an_unexpanded_variable_is_not_echoed() -> None:
    entry = account(api_secret=None, private_key="x", private_key_passphrase="$Hunter2isMine")
    with pytest.raises(ConfigError) as caught:
        parse_config({"accounts": [entry]})
    message = str(caught.value)
    assert message == (
        "accounts[0] (main).private_key_passphrase: got '$…' (14 characters), which looks like "
        "an unexpanded variable reference: only ${NAME} is expanded; a value that really starts "
        "with $ goes in private_key_passphrase_file")
    assert "Hunter2" not in message


def test_unexpanded_variable_inside_an_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTER_FOR_TEST", "$INNER")
    with pytest.raises(ConfigError, match=r"environment variable OUTER_FOR_TEST holds '\$INNER'"):
        parse_config({"accounts": [account(api_secret="${OUTER_FOR_TEST}")]})


@pytest.mark.parametrize("value", ["a$b", "$", "$1abc", "pa$$word", "${A}${B}"])
def test_dollar_signs_that_are_no_reference_are_kept(value: str) -> None:
    config = parse_config({"accounts": [account(api_secret=value)]})
    assert config.accounts[0].signer.key_type == "hmac"


# -- masking in messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "account"])
def test_unknown_key_that_looks_like_a_secret_is_masked(where: str) -> None:
    document: dict[str, object] = {"accounts": [account()]}
    if where == "top":
        document[LONG_SECRET] = "x"
    else:
        document["accounts"] = [account(**{LONG_SECRET: "x"})]
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    message = str(caught.value)
    assert "'Xq7R…' (64 characters): unknown key" in message
    assert LONG_SECRET[4:12] not in message


@pytest.mark.parametrize("key", ["pol_interval", "api_secrte", "recv_windw", "extra"])
def test_unknown_key_that_looks_like_a_key_name_is_shown(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: unknown key"):
        parse_config({"accounts": [account()], key: 1})


def test_duplicate_secret_like_key_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, f"{LONG_SECRET}: 1\n{LONG_SECRET}: 2\naccounts: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "duplicate key 'Xq7R…' (64 characters) at line 2, column 1" in message
    assert LONG_SECRET[4:12] not in message


# -- permissions -------------------------------------------------------------------------------


def inline_config(tmp_path: Path, mode: int, api_secret: str = SECRET) -> Path:
    path = write(tmp_path, {"accounts": [account(api_secret=api_secret)]})
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(("mode", "who"), [(0o640, "its group"), (0o604, "every user")])
def test_inline_secret_in_a_shared_config_file_warns(tmp_path: Path, mode: int, who: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_config(inline_config(tmp_path, mode))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "accounts[0].api_key, accounts[0].api_secret" in warnings[0]
    assert who in warnings[0] and "chmod 600" in warnings[0]
    assert SECRET not in warnings[0]


def test_private_config_file_or_env_references_do_not_warn(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_FOR_TEST", SECRET)
    monkeypatch.setenv("KEY_FOR_TEST", KEY)
    with caplog.at_level(logging.WARNING):
        load_config(inline_config(tmp_path, 0o600))
        path = write(tmp_path, {"accounts": [account(api_key="${KEY_FOR_TEST}",
                                                     api_secret="${SECRET_FOR_TEST}")]})
        os.chmod(path, 0o644)
        load_config(path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_group_readable_secret_file_warns(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "secret").write_text(SECRET)
    os.chmod(tmp_path / "secret", 0o640)
    path = write(tmp_path, {"accounts": [account(api_secret=None, api_secret_file="secret")]})
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING):
        load_config(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"secret file {tmp_path / 'secret'} is readable by its group; chmod 600 it"]


# -- recv_window and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "milliseconds"), [
    (5000, 5000), ("5000", 5000), (5000.0, 5000), ("5s", 5000), ("500ms", 500), (1, 1),
    (60000, 60000), ("1m", 60000), ("0.5s", 500),
])
def test_recv_window_numbers_are_milliseconds(value: object, milliseconds: int) -> None:
    assert parse_config({"recv_window": value, "accounts": [account()]}).recv_window_ms == (
        milliseconds)


@pytest.mark.parametrize(("value", "problem"), [
    (60001, "must be 1 to 60000 milliseconds"), ("61s", "must be 1 to 60000"),
    (0, "must be 1 to 60000"), (-5, "must be 1 to 60000"), (True, "must be 1 to 60000"),
    (2.5, "whole milliseconds"), ("2.5", "whole milliseconds"), ("1.5ms", "whole milliseconds"),
    ("soon", "expected a duration"),
])
def test_bad_recv_window(value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^recv_window: .*{problem}"):
        parse_config({"recv_window": value, "accounts": [account()]})


@pytest.mark.parametrize(("value", "size"), [
    (1048576, 1048576), ("1048576", 1048576), ("4M", 4_000_000), ("4MB", 4_000_000),
    ("4mb", 4_000_000), ("4Mi", 4 * 2**20), ("4MiB", 4 * 2**20), ("4mib", 4 * 2**20),
    ("4 MiB", 4 * 2**20), ("64KiB", 65536), ("65536B", 65536), ("1G", 10**9), ("1GiB", 2**30),
    ("100k", 100_000), ("64Ki", 65536),
])
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value, "max_frame_size") == size
    assert parse_config({"max_frame_size": value, "accounts": [account()]}).max_frame_size == size


@pytest.mark.parametrize(("value", "problem"), [
    ("63KiB", "must be at least 64KiB"), (65535, "must be at least 64KiB"),
    ("64K", "must be at least 64KiB"), (0, "must be at least"), (-1, "must be at least"),
    ("4XB", "expected a size"), ("4.5MiB", "expected a size"), ("MiB", "expected a size"),
    (True, "expected a size"), ([4], "expected a size"),
])
def test_bad_max_frame_size(value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^max_frame_size: {problem}"):
        parse_config({"max_frame_size": value, "accounts": [account()]})


# -- listen -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "problem"), [
    ("http://127.0.0.1:10317", "drop the scheme"),
    ("HTTPS://[::1]:10317", "drop the scheme"),
    ("256.1.1.1:10317", "invalid IPv4 address '256.1.1.1'"),
    ("1.2.3:10317", "invalid IPv4 address '1.2.3'"),
    ("[zz::1]:10317", "invalid IPv6 address 'zz::1'"),
    ("::1:10317", "write IPv6 addresses in brackets"),
    ("exa mple:10317", "'exa mple' is not a valid host name"),
    ("-bad.example:10317", "is not a valid host name"),
    ("localhost", "expected HOST:PORT with a port 0-65535"),
    ("localhost:-1", "expected HOST:PORT with a port 0-65535"),
    ("localhost:65536", "expected HOST:PORT with a port 0-65535"),
    ("localhost:\uff11", "expected HOST:PORT with a port 0-65535"),  # a fullwidth digit
    (10317, "expected HOST:PORT"),
])
def test_bad_listen_values_get_precise_messages(value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(value, key="--listen")
    assert str(caught.value).startswith("--listen: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(("value", "host", "port"), [
    ("example.invalid:10317", "example.invalid", 10317),
    ("my_service.local.:80", "my_service.local.", 80),
    ("[fe80::1%eth0]:10317", "fe80::1%eth0", 10317),
    ("0.0.0.0:1", "0.0.0.0", 1),
])
def test_listen_parsing_looks_nothing_up(value: str, host: str, port: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_listen must not resolve names")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    assert parse_listen(value) == (host, port)


def test_resolve_listen() -> None:
    assert resolve_listen("", 10317) == ()
    assert resolve_listen("127.0.0.1", 10317) == ("127.0.0.1",)
    assert "127.0.0.1" in resolve_listen("localhost", 10317)


def test_resolve_listen_names_a_name_that_does_not_resolve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No real lookup: the tests must not send DNS queries off this machine.
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ConfigError) as caught:
        resolve_listen("example.invalid", 10317, key="--listen")
    assert str(caught.value) == (
        "--listen: 'example.invalid' does not resolve (Name or service not known); give an IP "
        "address or a name this machine resolves")
