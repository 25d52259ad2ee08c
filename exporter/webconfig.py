"""Load the exporter's web config file (TLS and basic auth for its own HTTP server).

The file uses the Prometheus exporter-toolkit format
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md)
so that operators can reuse what they already wrote for node_exporter::

    tls_server_config:
      cert_file: server.crt          # relative paths resolve against this file's directory
      key_file: server.key
      client_ca_file: clients-ca.crt
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash, e.g. from `htpasswd -nBC 12 ""`

Supported:

- ``tls_server_config``: ``cert_file``, ``key_file`` (both required once the
  section has any key; an empty section means plain HTTP, as in the toolkit),
  ``client_ca_file``, ``client_auth_type`` (``NoClientCert`` - the default -,
  ``VerifyClientCertIfGiven``, ``RequireAndVerifyClientCert``),
  ``min_version`` and ``max_version`` (``TLS12`` - the default minimum - or
  ``TLS13``).
- ``basic_auth_users``: user name -> bcrypt hash (``$2a$``, ``$2b$``, ``$2y$``),
  all of the same cost (see below).

Not supported, rejected with an error rather than silently ignored:

- ``http_server_config`` and ``rate_limit`` (HTTP/2, custom headers, rate limits);
- inline ``cert`` / ``key`` / ``client_ca``, ``client_allowed_sans``,
  ``cipher_suites``, ``prefer_server_cipher_suites``, ``curve_preferences``
  (OpenSSL's defaults apply);
- ``client_auth_type`` ``RequireAnyClientCert`` / ``RequestClientCert``: Python's
  ``ssl`` module cannot ask for a client certificate without verifying it;
- ``min_version`` ``TLS10`` / ``TLS11``;
- encrypted private keys (there is nowhere to type a passphrase).

Two rules are stricter than the toolkit: ``VerifyClientCertIfGiven`` and
``RequireAndVerifyClientCert`` need ``client_ca_file`` (the toolkit would fall
back to the system CAs, so any publicly issued certificate would pass), and,
like the toolkit, ``client_ca_file`` without a verifying ``client_auth_type``
is an error rather than a CA that is never used.

Hashes of different bcrypt costs are refused: a request for an unknown user is
checked against a dummy hash, and with mixed costs no single dummy costs the same
as every real user, so response times would tell which user names exist (a
cost-4 user answers in 2 ms, a cost-10 dummy in 60 ms). Re-hash with one cost.

The file is read with the shared strict loader (:mod:`exporter.yamlfile`): a
key given twice is an error, and every error is one line naming the key.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporter.messages import brief, escape_controls, key_shown, masked, shown
from exporter.yamlfile import UnreadableFileError, YamlFileError, load_yaml_file

__all__ = ["WebConfig", "WebConfigError", "bcrypt_cost", "load_web_config"]

_SUPPORTED_TOP = frozenset({"tls_server_config", "basic_auth_users"})
_UNSUPPORTED_TOP = frozenset({"http_server_config", "rate_limit"})
_SUPPORTED_TLS = frozenset(
    {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
)
_UNSUPPORTED_TLS = frozenset(
    {
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    }
)
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = frozenset({"RequireAnyClientCert", "RequestClientCert"})
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(Exception):
    """The web config file is unusable; the message is one line naming the key."""


@dataclass(frozen=True, repr=False)
class WebConfig:
    """What the HTTP server needs: a TLS context (or None) and the basic-auth users."""

    ssl_context: ssl.SSLContext | None = None
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: the server's users cannot change under it.
        object.__setattr__(self, "basic_auth_users", MappingProxyType(dict(self.basic_auth_users)))

    def __repr__(self) -> str:
        tls = "on" if self.ssl_context is not None else "off"
        return f"WebConfig(tls={tls}, basic_auth_users={sorted(self.basic_auth_users)!r})"


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: an encrypted key cannot be unlocked."""


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate the web config file at ``path``."""
    path = Path(path)
    try:
        return _parse(_read_yaml(path), path.parent)
    except WebConfigError as err:
        # A name that is no readable file may be a secret pasted into web_config_file.
        named = masked(str(path)) if isinstance(err.__cause__, UnreadableFileError) else shown(path)
        raise WebConfigError(f"web config {named}: {err}") from err.__cause__


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 of the rounds) of a validated bcrypt hash: ``$2b$12$...`` -> 12."""
    return int(hashed[4:6])


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        data = load_yaml_file(path)
    except YamlFileError as err:
        raise WebConfigError(str(err)) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WebConfigError("top level: must be a mapping")
    return data


def _parse(data: Mapping[str, Any], base: Path) -> WebConfig:
    _check_keys(data, "", _SUPPORTED_TOP, _UNSUPPORTED_TOP)
    tls = _mapping(data.get("tls_server_config"), "tls_server_config")
    users = _mapping(data.get("basic_auth_users"), "basic_auth_users")
    return WebConfig(
        ssl_context=_ssl_context(tls, base) if tls else None,
        basic_auth_users=_users(users),
    )


def _check_keys(
    section: Mapping[str, Any], prefix: str, supported: frozenset[str], unsupported: frozenset[str]
) -> None:
    for key in section:
        if key in unsupported:
            raise WebConfigError(f"{prefix}{key}: not supported by this exporter")
        if key not in supported:
            raise WebConfigError(f"{prefix}{key_shown(key)}: unknown key")


def _mapping(value: Any, key: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{key}: must be a mapping")
    return value


def _ssl_context(tls: Mapping[str, Any], base: Path) -> ssl.SSLContext:
    prefix = "tls_server_config."
    _check_keys(tls, prefix, _SUPPORTED_TLS, _UNSUPPORTED_TLS)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _tls_version(tls, "min_version", "TLS12")
    ctx.maximum_version = _tls_version(tls, "max_version", "TLS13")
    if ctx.minimum_version > ctx.maximum_version:
        raise WebConfigError(f"{prefix}min_version: is above max_version")
    ctx.set_alpn_protocols(["http/1.1"])
    _load_cert_chain(ctx, _file(tls, "cert_file", base), _file(tls, "key_file", base))
    _load_client_auth(ctx, tls, base)
    return ctx


def _tls_version(tls: Mapping[str, Any], key: str, default: str) -> ssl.TLSVersion:
    name = tls.get(key) or default
    if not isinstance(name, str) or name not in _TLS_VERSIONS:
        raise WebConfigError(
            f"tls_server_config.{key}: {brief(name)} not supported (use TLS12 or TLS13)"
        )
    return _TLS_VERSIONS[name]


def _file(tls: Mapping[str, Any], key: str, base: Path) -> Path:
    """Resolve ``key`` against the config's directory and check the file is readable.

    A value that names no readable file may be a key pasted into the wrong
    field, so it is shown masked.
    """
    value = tls.get(key)
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"tls_server_config.{key}: required, must be a file path")
    path = base / value
    try:
        path.read_bytes()
    except OSError as err:
        reason = escape_controls(err.strerror or type(err).__name__)
        raise WebConfigError(
            f"tls_server_config.{key}: cannot read {masked(value)}: {reason}"
        ) from err
    return path


def _load_cert_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    def refuse_passphrase() -> bytes:
        raise _EncryptedKey

    try:
        ctx.load_cert_chain(cert, key, password=refuse_passphrase)
    except _EncryptedKey as err:
        raise WebConfigError(
            "tls_server_config.key_file: encrypted private keys are not supported"
        ) from err
    except ssl.SSLError as err:
        raise WebConfigError(
            f"tls_server_config.cert_file/key_file: cannot load {shown(cert)} with {shown(key)}: "
            f"{_one_line(err)}"
        ) from err


def _load_client_auth(ctx: ssl.SSLContext, tls: Mapping[str, Any], base: Path) -> None:
    prefix = "tls_server_config."
    # Empty or null means the default, as in the toolkit.
    auth_type = tls.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str):
        raise WebConfigError(f"{prefix}client_auth_type: must be a string")
    if auth_type in _UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(f"{prefix}client_auth_type: {auth_type!r} not supported")
    if auth_type not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{prefix}client_auth_type: {brief(auth_type)} is not one of {', '.join(_CLIENT_AUTH)}"
        )
    verify_mode = _CLIENT_AUTH[auth_type]
    has_ca = "client_ca_file" in tls
    if verify_mode == ssl.CERT_NONE:
        if has_ca:
            raise WebConfigError(
                f"{prefix}client_ca_file: set but client_auth_type does not verify client "
                "certificates"
            )
        return
    if not has_ca:
        raise WebConfigError(f"{prefix}client_ca_file: required by {auth_type}")
    ca_file = _file(tls, "client_ca_file", base)
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as err:
        raise WebConfigError(
            f"{prefix}client_ca_file: cannot load {shown(ca_file)}: {_one_line(err)}"
        ) from err
    ctx.verify_mode = verify_mode


def _users(users: Mapping[Any, Any]) -> dict[str, bytes]:
    result = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user:
            raise WebConfigError(
                f"basic_auth_users.{shown(user)}: user name must be a non-empty string (quote it)"
            )
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f"basic_auth_users.{shown(user)}: not a bcrypt hash ($2a$/$2b$/$2y$, "
                "60 characters)"
            )
        result[user] = hashed.encode("ascii")
    costs = {user: bcrypt_cost(hashed) for user, hashed in result.items()}
    if len(set(costs.values())) > 1:
        listed = ", ".join(f"{shown(user)} {cost}" for user, cost in sorted(costs.items()))
        raise WebConfigError(
            f"basic_auth_users: hashes of different bcrypt costs ({listed}) would let response "
            "times tell which users exist; re-hash them with one cost, e.g. htpasswd -nBC 10"
        )
    return result


def _one_line(err: BaseException) -> str:
    return escape_controls(" ".join(str(err).split()))
