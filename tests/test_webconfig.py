"""load_web_config: the exporter-toolkit file format, its supported subset and its errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from exporter.webconfig import WebConfig, WebConfigError, load_web_config

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
MTLS = TLS + "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.pem/server.key, a client CA (ca.pem) and an encrypted key (encrypted.key)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(directory / "server.pem")
    cert.private_key_pem.write_to_path(directory / "server.key")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (directory / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    (directory / "garbage.pem").write_text("not a certificate\n")
    return directory


def write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_full_config_loads(pki_dir: Path) -> None:
    config = load_web_config(
        write(pki_dir, f"{MTLS}  min_version: TLS13\nbasic_auth_users:\n  prometheus: {HASH}\n")
    )
    context = config.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert dict(config.basic_auth_users) == {"prometheus": HASH.encode()}


@pytest.mark.parametrize(
    "extra", ["", '  client_auth_type: ""\n  min_version:\n', "  client_auth_type: NoClientCert\n"]
)
def test_tls_defaults(pki_dir: Path, extra: str) -> None:
    context = load_web_config(write(pki_dir, TLS + extra)).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_verify_if_given(pki_dir: Path) -> None:
    config = load_web_config(
        write(
            pki_dir, TLS + "  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n"
        )
    )
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_OPTIONAL


def test_relative_paths_resolve_against_the_config_directory(
    pki_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing named server.pem here
    assert load_web_config(write(pki_dir, TLS)).ssl_context is not None


def test_absolute_paths_work(pki_dir: Path, tmp_path: Path) -> None:
    text = f"tls_server_config:\n  cert_file: {pki_dir / 'server.pem'}\n"
    text += f"  key_file: {pki_dir / 'server.key'}\n"
    assert load_web_config(write(tmp_path, text)).ssl_context is not None


@pytest.mark.parametrize("text", ["", "# nothing\n", "tls_server_config:\nbasic_auth_users: {}\n"])
def test_empty_config_means_plain_http_without_auth(tmp_path: Path, text: str) -> None:
    config = load_web_config(write(tmp_path, text))
    assert config.ssl_context is None
    assert dict(config.basic_auth_users) == {}


def test_repr_shows_users_but_no_hashes(pki_dir: Path) -> None:
    config = load_web_config(write(pki_dir, f"{TLS}basic_auth_users:\n  alice: {HASH}\n"))
    text = repr(config)
    assert text == "WebConfig(tls=on, basic_auth_users=['alice'])"
    assert HASH not in text
    assert "$2" not in str(config)


def test_users_mapping_is_read_only() -> None:
    users = {"alice": HASH.encode()}
    config = WebConfig(basic_auth_users=users)
    users["mallory"] = HASH.encode()
    assert list(config.basic_auth_users) == ["alice"]
    with pytest.raises(TypeError):
        config.basic_auth_users["eve"] = b"x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("tls_server_confg: {}\n", "tls_server_confg", "unknown key"),
        ("http_server_config:\n  http2: false\n", "http_server_config", "not supported"),
        (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites", "not supported"),
        (TLS + "  cert_fille: x\n", "tls_server_config.cert_fille", "unknown key"),
        ("tls_server_config:\n  key_file: server.key\n", "tls_server_config.cert_file", "required"),
        (TLS.replace("server.pem", "missing.pem"), "tls_server_config.cert_file", "cannot read"),
        (TLS.replace("server.key", "missing.key"), "tls_server_config.key_file", "cannot read"),
        (TLS.replace("server.pem", "garbage.pem"), "cert_file/key_file", "cannot load"),
        (TLS.replace("server.key", "encrypted.key"), "tls_server_config.key_file", "encrypted"),
        (TLS + "  min_version: TLS10\n", "tls_server_config.min_version", "not supported"),
        (TLS + "  max_version: SSL3\n", "tls_server_config.max_version", "not supported"),
        (
            TLS + "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version",
            "above max_version",
        ),
        (TLS + "  min_version: [TLS12]\n", "tls_server_config.min_version", "not supported"),
        (TLS + "  client_auth_type: [a]\n", "tls_server_config.client_auth_type", "a string"),
        (TLS + "  client_auth_type: Sometimes\n", "tls_server_config.client_auth_type", "not one"),
        (
            TLS + "  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type",
            "not supported",
        ),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file",
            "required",
        ),
        (TLS + "  client_ca_file: ca.pem\n", "tls_server_config.client_ca_file", "does not verify"),
        (
            MTLS.replace("ca.pem", "garbage.pem"),
            "tls_server_config.client_ca_file",
            "cannot load",
        ),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice", "not a bcrypt hash"),
        (
            "basic_auth_users:\n  alice: $1$abc$0123456789abcdef\n",
            "basic_auth_users.alice",
            "not a bcrypt hash",
        ),
        ("basic_auth_users:\n  alice:\n", "basic_auth_users.alice", "not a bcrypt hash"),
        (f"basic_auth_users:\n  123: {HASH}\n", "basic_auth_users.123", "must be a non-empty"),
        ("basic_auth_users: [alice]\n", "basic_auth_users", "must be a mapping"),
        ("tls_server_config: yes\n", "tls_server_config", "must be a mapping"),
        ("- a list\n", "top level", "must be a mapping"),
        ("tls_server_config: {\n", "not valid YAML", "line 2, column 1"),
        (
            f"basic_auth_users:\n  alice: {HASH}\n  alice: {HASH}\n",
            "not valid YAML: duplicate key 'alice'",
            "at line 3, column 3",
        ),
        (TLS + "  cert_file: server.pem\n", "duplicate key 'cert_file'", "line 4"),
        ("tls_server_config: {}\ntls_server_config: {}\n", "duplicate key", "line 2"),
        ("? [a, b]\n: 1\n", "a mapping key must be a plain value", "line 1"),
    ],
)
def test_errors_name_the_key(pki_dir: Path, text: str, key: str, problem: str) -> None:
    message = load_error(write(pki_dir, text))
    assert key in message
    assert problem in message


def test_error_does_not_echo_a_rejected_hash_like_value(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "basic_auth_users:\n  alice: $2b$04$tooShort\n"))
    assert "tooShort" not in message


def test_missing_file_is_masked(tmp_path: Path) -> None:
    """An unreadable web_config_file value may be a secret pasted into the wrong key."""
    path = tmp_path / "absent.yml"
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert message == (
        f"web config '{str(path)[:4]}…' ({len(str(path))} characters): cannot read: "
        "No such file or directory"
    )


def test_unreadable_cert_file_is_masked(pki_dir: Path) -> None:
    secret = "Xq7Rk2LmP9sT4vWz8bN3cF6hJ1dG5yA0eU2iO7pQ4rS9tV3wX8zB6nM1kL5jH2gF"
    message = load_error(write(pki_dir, TLS.replace("server.pem", secret)))
    assert "tls_server_config.cert_file: cannot read 'Xq7R…' (64 characters): No such" in message
    assert secret[4:12] not in message


def test_unknown_key_that_looks_like_a_secret_is_masked(tmp_path: Path) -> None:
    secret = "Xq7Rk2LmP9sT4vWz8bN3cF6hJ1dG5yA0eU2iO7pQ4rS9tV3wX8zB6nM1kL5jH2gF"
    message = load_error(write(tmp_path, f"tls_server_config:\n  {secret}: x\n"))
    assert "tls_server_config.'Xq7R…' (64 characters): unknown key" in message
    assert secret[4:12] not in message


def test_mixed_bcrypt_costs_are_refused(tmp_path: Path) -> None:
    costly = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode()
    message = load_error(
        write(tmp_path, f"basic_auth_users:\n  alice: {HASH}\n  bob: {costly}\n")
    )
    assert "basic_auth_users: hashes of different bcrypt costs (alice 4, bob 5)" in message
    assert "re-hash them with one cost" in message


def test_same_cost_with_different_prefixes_is_fine(tmp_path: Path) -> None:
    other = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  a: {HASH}\n  b: {other}\n"))
    assert sorted(config.basic_auth_users) == ["a", "b"]


def test_control_characters_in_errors_are_escaped(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, 'tls_server_config:\n  min_version: "TLS\\x1b[31m"\n'))
    assert "\x1b" not in message
    assert "\\x1b" in message
