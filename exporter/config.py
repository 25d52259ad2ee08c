"""The YAML configuration: parsed, validated and resolved once at start-up.

Every problem raises :class:`ConfigError` with one line that names the key
(``accounts[1].api_secret: ...``). Secrets are resolved here (inline,
``${ENV_VAR}`` or ``<field>_file``) and kept in :class:`Secret` or inside a
signer, so no ``repr()`` of a config object can show one. Errors never echo a
value that may be a secret pasted into the wrong field: a ``*_file`` value that
names no readable file and an unknown key that does not look like a key name
are masked (see :mod:`exporter.yamlfile`).

Units:

- durations: ``15s``, ``2m``, ``500ms``, ``1h30m``, or a number of seconds,
  quoted or not (``90``, ``"90"``, ``1.5``);
- ``recv_window``: a whole number of milliseconds (Binance's unit), quoted or
  not, or a duration with a unit (``5s``);
- sizes: a number of bytes, or a number with a unit, case-insensitive:
  ``K``/``KB``, ``M``/``MB``, ``G``/``GB`` are powers of 1000 and
  ``Ki``/``KiB``, ``Mi``/``MiB``, ``Gi``/``GiB`` powers of 1024 (as in
  Kubernetes): ``4M`` is 4,000,000 bytes, ``4MiB`` 4,194,304.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.messages import brief, escape_controls, key_shown, masked, shown
from exporter.signing import HmacSigner, PrivateKeyError, Signer, load_private_key
from exporter.yamlfile import YamlFileError, load_yaml_file

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PORT",
    "ENDPOINTS",
    "MAX_RECV_WINDOW_MS",
    "MAX_USER_STREAM_KEEPALIVE",
    "MIN_FRAME_SIZE",
    "USER_STREAM_ENDPOINTS",
    "Account",
    "Config",
    "ConfigError",
    "Secret",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen",
    "parse_size",
    "resolve_listen",
]

DEFAULT_PORT = 10317
# Every Binance URL the exporter knows, in one place.
ENDPOINTS = {
    "production": "wss://ws-fapi.binance.com/ws-fapi/v1",
    "testnet": "wss://testnet.binancefuture.com/ws-fapi/v1",
}
# The user data stream of each endpoint above: since Binance's 2026 routing change,
# user data is served under the /private route only; the listen key is appended as a
# path segment (<base>/private/ws/<listenKey>, the form Binance's pages show). See
# exporter.userstream.stream_url for the query form a configured URL may ask for.
USER_STREAM_ENDPOINTS = {
    "production": "wss://fstream.binance.com/private/ws",
    "testnet": "wss://fstream.binancefuture.com/private/ws",
}
# A listen key expires 60 minutes after the last userDataStream.start or .ping; a
# keepalive must leave room for one that comes late (a ban, a reconnect).
MAX_USER_STREAM_KEEPALIVE = 45 * 60.0
MAX_RECV_WINDOW_MS = 60_000
# The smallest max_frame_size: one v2/account.status answer with dozens of
# positions and assets is ~10-30 KiB, so a smaller limit would refuse real answers.
MIN_FRAME_SIZE = 64 * 1024

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a shell or docker-compose would have expanded but this loader does not:
# $NAME, or ${NAME without its closing brace.
_UNEXPANDED = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_TEXT = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_SHARED_READ = stat.S_IRGRP | stat.S_IROTH


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key."""


class Secret:
    """A resolved secret string whose ``repr``/``str`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True)
class Account:
    """One Binance account: a label for the metrics and the means to sign for it."""

    name: str
    api_key: Secret
    signer: Signer
    session_logon: bool = False


@dataclass(frozen=True)
class Config:
    """Everything the exporter needs, with defaults applied; durations in seconds."""

    accounts: tuple[Account, ...]
    listen_host: str = ""
    listen_port: int = DEFAULT_PORT
    endpoint: str = ENDPOINTS["production"]
    poll_interval: float = 15.0
    request_timeout: float = 10.0
    recv_window_ms: int = 5000
    stale_after: float = 45.0
    reconnect_backoff_min: float = 1.0
    reconnect_backoff_max: float = 60.0
    connection_lifetime: float = 23 * 3600.0
    auth_retry_interval: float = 300.0
    clock_sync_interval: float = 600.0
    weight_limit: int = 2400
    max_frame_size: int = 4 * 1024 * 1024
    position_details: bool = True
    web_config_file: Path | None = field(default=None)
    user_stream: bool = True
    #: Where the user data stream connects; None when it is off (``user_stream: false``,
    #: or a custom ``endpoint`` without ``user_stream_endpoint``).
    user_stream_endpoint: str | None = USER_STREAM_ENDPOINTS["production"]
    user_stream_keepalive: float = 1800.0
    event_poll_min_gap: float = 1.0


# Keys accepted at the top level and per account; anything else is an error.
_TOP_LEVEL_KEYS = {
    "listen", "endpoint", "poll_interval", "request_timeout", "recv_window", "stale_after",
    "reconnect_backoff_min", "reconnect_backoff_max", "connection_lifetime",
    "auth_retry_interval", "clock_sync_interval", "weight_limit", "max_frame_size",
    "position_details", "web_config_file", "accounts", "user_stream", "user_stream_endpoint",
    "user_stream_keepalive", "event_poll_min_gap",
}
_SECRET_FIELDS = ("api_key", "api_secret", "private_key", "private_key_passphrase")
_ACCOUNT_KEYS = {"name", "session_logon"} | {
    f"{name}{suffix}" for name in _SECRET_FIELDS for suffix in ("", "_file")
}


def parse_duration(value: object, key: str) -> float:
    """``15s``, ``2m``, ``500ms``, ``1h30m`` or a number of seconds (``90``, ``"90"``) -> s > 0."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 15s, 2m or 500ms, got {brief(value)}")
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else float("inf")
    elif text and _NUMBER.fullmatch(text):
        seconds = float(text)
    elif text and _DURATION_PART.sub("", text) == "":
        seconds = sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    else:
        raise ConfigError(f"{key}: expected a duration like 15s, 2m or 500ms, got {brief(value)}")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{key}: must be a positive duration, got {brief(value)}")
    return seconds


def parse_size(value: object, key: str, minimum: int = 1) -> int:
    """A byte count of at least ``minimum``: ``1048576``, ``512KiB``, ``4MiB``, ``4M``, ``4MB``.

    ``K``/``M``/``G`` (with or without ``B``) are powers of 1000, ``Ki``/``Mi``/``Gi``
    (with or without ``B``) powers of 1024; case does not matter.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ConfigError(
                f"{key}: expected a size like 4MiB, 4MB or 1048576 (bytes), got {brief(value)}"
            )
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size < minimum:
        least = f"{minimum // 1024}KiB" if minimum >= 1024 and minimum % 1024 == 0 else minimum
        raise ConfigError(f"{key}: must be at least {least}, got {brief(value)}")
    return size


def parse_listen(value: object, key: str = "listen") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every interface) or ``[v6addr]:PORT``; no name lookup.

    The host must be an IPv4 address, a bracketed IPv6 address or a syntactically
    valid host name; whether a name resolves is :func:`resolve_listen`'s job.
    """
    example = f"127.0.0.1:{DEFAULT_PORT}"
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected HOST:PORT such as {example}, got {brief(value)}")
    if _URL_SCHEME.match(value):
        raise ConfigError(
            f"{key}: drop the scheme: expected HOST:PORT such as {example}, got {brief(value)}"
        )
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) < 65536:
        # Port 0 asks the system for a free port; the log line names the one bound.
        raise ConfigError(f"{key}: expected HOST:PORT with a port 0-65535, got {brief(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{key}: invalid IPv6 address {brief(host)}") from None
    elif ":" in host:
        raise ConfigError(f"{key}: write IPv6 addresses in brackets, e.g. [::1]:{DEFAULT_PORT}")
    elif _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{key}: invalid IPv4 address {brief(host)}") from None
    elif host and not _HOST_NAME.fullmatch(host):
        raise ConfigError(f"{key}: {brief(host)} is not a valid host name or address")
    return host, int(port)


def resolve_listen(host: str, port: int, key: str = "listen") -> tuple[str, ...]:
    """The addresses ``host`` (from :func:`parse_listen`) would bind; ConfigError if none.

    A name lookup may take seconds, so this is for ``--check-config`` and start-up,
    not for parsing. ``""`` means every interface and resolves to nothing to check.
    """
    if not host:
        return ()
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as err:
        reason = escape_controls(getattr(err, "strerror", None) or str(err))
        raise ConfigError(
            f"{key}: {brief(host)} does not resolve ({reason}); give an IP address or a name "
            "this machine resolves"
        ) from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve the YAML file at ``path``.

    Warns (does not refuse) when the file holds an inline secret and other users
    may read it.
    """
    path = Path(path)
    try:
        document = load_yaml_file(path)
    except YamlFileError as err:
        raise ConfigError(f"config file {shown(path)}: {err}") from None
    if document is None:
        document = {}
    config = parse_config(document, base_dir=path.parent)
    _warn_inline_secrets(path, document)
    return config


def _warn_inline_secrets(path: Path, document: Mapping[str, Any]) -> None:
    """Warn when a config file with an inline (not ``${ENV}``) secret is group/world readable."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not mode & _SHARED_READ:
        return
    inline = [
        f"accounts[{index}].{name}"
        for index, entry in enumerate(document.get("accounts") or ())
        for name in _SECRET_FIELDS
        if isinstance(entry.get(name), str) and not _ENV_REFERENCE.fullmatch(entry[name].strip())
    ]
    if inline:
        log.warning(
            "config file %s holds secrets inline (%s) and %s; chmod 600 it, or use "
            "${ENV_VAR} or <field>_file",
            shown(path), ", ".join(inline), _readable_by(mode),
        )


def parse_config(document: object, *, base_dir: Path = Path(".")) -> Config:
    """Validate an already-parsed config document (a mapping) into a :class:`Config`."""
    if not isinstance(document, Mapping):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    _reject_unknown(document, _TOP_LEVEL_KEYS, prefix="")
    settings: dict[str, Any] = {}
    if "listen" in document:
        settings["listen_host"], settings["listen_port"] = parse_listen(document["listen"])
    if "endpoint" in document:
        settings["endpoint"] = _parse_endpoint(document["endpoint"])
    for key in ("poll_interval", "request_timeout", "stale_after", "reconnect_backoff_min",
                "reconnect_backoff_max", "connection_lifetime", "auth_retry_interval",
                "clock_sync_interval", "user_stream_keepalive", "event_poll_min_gap"):
        if key in document:
            settings[key] = parse_duration(document[key], key)
    if "recv_window" in document:
        settings["recv_window_ms"] = _parse_recv_window(document["recv_window"])
    if "weight_limit" in document:
        settings["weight_limit"] = _parse_positive_int(document["weight_limit"], "weight_limit")
    if "max_frame_size" in document:
        settings["max_frame_size"] = parse_size(document["max_frame_size"], "max_frame_size",
                                                minimum=MIN_FRAME_SIZE)
    if "position_details" in document:
        settings["position_details"] = _parse_bool(document["position_details"],
                                                   "position_details")
    if document.get("web_config_file") is not None:
        settings["web_config_file"] = _resolve_path(document["web_config_file"], "web_config_file",
                                                    base_dir)
    _apply_derived_defaults(settings)
    _resolve_user_stream(document, settings)
    settings["accounts"] = _parse_accounts(document.get("accounts"), base_dir)
    return Config(**settings)


def _apply_derived_defaults(settings: dict[str, Any]) -> None:
    """Defaults that follow the poll interval, and the checks that tie settings together."""
    interval = settings.setdefault("poll_interval", Config.poll_interval)
    settings.setdefault("request_timeout", min(Config.request_timeout, interval))
    settings.setdefault("stale_after", 3 * interval)
    if settings["request_timeout"] > interval:
        raise ConfigError(
            f"request_timeout: {settings['request_timeout']:g}s is longer than poll_interval "
            f"{interval:g}s; a poll must finish before the next one is due"
        )
    if settings["stale_after"] < interval:
        raise ConfigError(
            f"stale_after: {settings['stale_after']:g}s is shorter than poll_interval "
            f"{interval:g}s; every series would vanish between two polls"
        )
    low = settings.setdefault("reconnect_backoff_min", Config.reconnect_backoff_min)
    if settings.setdefault("reconnect_backoff_max", Config.reconnect_backoff_max) < low:
        raise ConfigError("reconnect_backoff_max: must not be less than reconnect_backoff_min")


def _resolve_user_stream(document: Mapping[str, Any], settings: dict[str, Any]) -> None:
    """Whether the user data stream runs, and where: its endpoint follows ``endpoint``.

    A custom ``endpoint`` URL has no known stream endpoint: without
    ``user_stream_endpoint`` the stream is off (``--check-config`` says so).
    """
    keepalive = settings.get("user_stream_keepalive", Config.user_stream_keepalive)
    if keepalive > MAX_USER_STREAM_KEEPALIVE:
        raise ConfigError(
            f"user_stream_keepalive: must be at most {MAX_USER_STREAM_KEEPALIVE / 60:g}m, got "
            f"{brief(document['user_stream_keepalive'])}: a listen key expires 60 minutes after "
            "the last keepalive"
        )
    enabled = _parse_bool(document.get("user_stream", True), "user_stream")
    if document.get("user_stream_endpoint") is not None:
        url: str | None = _parse_stream_endpoint(document["user_stream_endpoint"])
    else:
        endpoint = settings.get("endpoint", Config.endpoint)
        url = next((USER_STREAM_ENDPOINTS[name] for name, api in ENDPOINTS.items()
                    if api == endpoint), None)
    settings["user_stream"] = enabled
    settings["user_stream_endpoint"] = url if enabled else None


def _parse_stream_endpoint(value: object) -> str:
    if isinstance(value, str) and value in USER_STREAM_ENDPOINTS:
        return USER_STREAM_ENDPOINTS[value]
    error = ConfigError("user_stream_endpoint: expected production, testnet or a ws:// or "
                        f"wss:// URL, got {brief(value)}")
    if not isinstance(value, str) or not _URL_TEXT.fullmatch(value):
        raise error
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced [ in an IPv6 host
        raise error from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise error
    if parts.fragment or "listenKey" in parse_qs(parts.query):
        raise ConfigError("user_stream_endpoint: give the URL without a listenKey or #fragment; "
                          "the exporter adds the listen key itself")
    return value


def _parse_endpoint(value: object) -> str:
    if isinstance(value, str) and value in ENDPOINTS:
        return ENDPOINTS[value]
    if isinstance(value, str) and re.fullmatch(r"wss?://[^\s/]+(/\S*)?", value):
        return value
    raise ConfigError(
        f"endpoint: expected production, testnet or a ws:// or wss:// URL, got {brief(value)}"
    )


def _parse_recv_window(value: object) -> int:
    """Milliseconds: a number (quoted or not) is milliseconds, ``5s`` or ``500ms`` a duration."""
    if isinstance(value, bool):
        milliseconds = -1.0
    elif isinstance(value, int | float):
        milliseconds = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        milliseconds = float(value.strip())
    else:
        milliseconds = parse_duration(value, "recv_window") * 1000
    if not 0 < milliseconds <= MAX_RECV_WINDOW_MS:
        raise ConfigError(
            f"recv_window: must be 1 to {MAX_RECV_WINDOW_MS} milliseconds, got {brief(value)}"
        )
    if abs(milliseconds - round(milliseconds)) > 1e-6:
        raise ConfigError(
            f"recv_window: Binance takes whole milliseconds, got {brief(value)}"
        )
    return round(milliseconds)


def _parse_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {brief(value)}")
    return value


def _parse_positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {brief(value)}")
    return value


def _parse_accounts(value: object, base_dir: Path) -> tuple[Account, ...]:
    if value is None:
        raise ConfigError("accounts: at least one account is required")
    if not isinstance(value, list) or not value:
        raise ConfigError("accounts: expected a non-empty list of accounts")
    accounts: list[Account] = []
    for index, entry in enumerate(value):
        account = _parse_account(entry, f"accounts[{index}]", base_dir)
        if any(existing.name == account.name for existing in accounts):
            raise ConfigError(f"accounts[{index}].name: duplicate account name {account.name!r}")
        accounts.append(account)
    return tuple(accounts)


def _parse_account(entry: object, prefix: str, base_dir: Path) -> Account:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping with name and credentials")
    _reject_unknown(entry, _ACCOUNT_KEYS, prefix=f"{prefix}.")
    name = entry.get("name")
    if not isinstance(name, str) or not _ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(
            f"{prefix}.name: required; 1-64 characters of letters, digits and _.:@- "
            f"starting with a letter or digit, got {brief(name)}"
        )
    prefix = f"{prefix} ({name})"
    secrets = {
        field_name: _resolve_secret(entry, field_name, prefix, base_dir)
        for field_name in _SECRET_FIELDS
    }
    api_key = secrets["api_key"]
    if api_key is None:
        raise ConfigError(f"{prefix}.api_key: required (inline, ${{ENV_VAR}} or api_key_file)")
    if not re.fullmatch(r"[\x21-\x7e]+", api_key):
        raise ConfigError(f"{prefix}.api_key: must be printable ASCII without spaces")
    session_logon = _parse_bool(entry.get("session_logon", False), f"{prefix}.session_logon")
    signer = _build_signer(secrets, prefix)
    if session_logon and signer.key_type != "ed25519":
        raise ConfigError(f"{prefix}.session_logon: Binance allows it for Ed25519 keys only")
    return Account(name=name, api_key=Secret(api_key), signer=signer, session_logon=session_logon)


def _build_signer(secrets: Mapping[str, str | None], prefix: str) -> Signer:
    secret, private_key = secrets["api_secret"], secrets["private_key"]
    passphrase = secrets["private_key_passphrase"]
    if (secret is None) == (private_key is None):
        raise ConfigError(
            f"{prefix}: give exactly one of api_secret (HMAC) or private_key (Ed25519/RSA PEM)"
        )
    if secret is not None:
        if passphrase is not None:
            raise ConfigError(f"{prefix}.private_key_passphrase: only used with private_key")
        return HmacSigner(secret)
    assert private_key is not None
    try:
        return load_private_key(
            private_key.encode(), passphrase.encode() if passphrase is not None else None
        )
    except PrivateKeyError as exc:
        raise ConfigError(f"{prefix}.private_key: {exc}") from None


def _resolve_secret(entry: Mapping[str, Any], name: str, prefix: str,
                    base_dir: Path) -> str | None:
    """One secret from ``name`` (inline or ``${ENV}``) or ``name_file``; None when absent."""
    inline, file_key = entry.get(name), f"{name}_file"
    if inline is not None and entry.get(file_key) is not None:
        raise ConfigError(f"{prefix}.{name}: give either {name} or {file_key}, not both")
    if entry.get(file_key) is not None:
        given = entry[file_key]
        return _read_secret_file(_resolve_path(given, f"{prefix}.{file_key}", base_dir),
                                 f"{prefix}.{file_key}", given, base_dir)
    if inline is None:
        return None
    if not isinstance(inline, str):
        raise ConfigError(f"{prefix}.{name}: expected a string (quote it in YAML)")
    _refuse_unexpanded(inline, f"{prefix}.{name}", name)
    reference = _ENV_REFERENCE.fullmatch(inline.strip())
    if reference:
        variable = reference.group(1)
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(f"{prefix}.{name}: environment variable {variable} is not set")
        _refuse_unexpanded(value, f"{prefix}.{name}", name, variable=variable)
        inline = value
    if not inline.strip():
        raise ConfigError(f"{prefix}.{name}: is empty")
    return inline


def _refuse_unexpanded(value: str, key: str, name: str, variable: str | None = None) -> None:
    """A secret like ``$BINANCE_API_KEY`` is a reference nobody expanded, not a secret.

    Sent as is, Binance answers "invalid API key" and the operator looks in the
    wrong place; say what to write instead.
    """
    match = _UNEXPANDED.fullmatch(value.strip())
    if match is None or _ENV_REFERENCE.fullmatch(value.strip()):
        return
    where = f"environment variable {variable} holds" if variable else "got"
    hint = f"; a value that really starts with $ goes in {name}_file" if variable is None else ""
    reference = match.group(1)
    # Binance keys and secrets never start with $, but a passphrase might: echo the
    # value only where it cannot be a secret or follows the ENV_VAR naming habit.
    if name in ("api_key", "api_secret") or _ENV_NAME.fullmatch(reference):
        raise ConfigError(
            f"{key}: {where} {match.group(0)!r}, an unexpanded variable reference: only "
            f"${{NAME}} is expanded, write ${{{reference}}}{hint}"
        )
    raise ConfigError(
        f"{key}: {where} {masked(value)}, which looks like an unexpanded variable reference: "
        f"only ${{NAME}} is expanded{hint}"
    )


def _read_secret_file(path: Path, key: str, given: str, base_dir: Path) -> str:
    """The file's text without trailing newlines; warns when other users may read it.

    Until the file has been read, ``given`` may be a secret pasted into the wrong
    field, so errors show it masked.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        relative = "" if Path(given).expanduser().is_absolute() else (
            f" relative to {shown(base_dir)}")
        raise ConfigError(
            f"{key}: cannot read {masked(given)}{relative}: "
            f"{escape_controls(exc.strerror or type(exc).__name__)}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {shown(path)} is not UTF-8 text") from None
    if mode & _SHARED_READ:
        log.warning("secret file %s %s; chmod 600 it", shown(path), _readable_by(mode))
    text = text.rstrip("\r\n")
    if not text.strip():
        raise ConfigError(f"{key}: {shown(path)} is empty")
    return text


def _readable_by(mode: int) -> str:
    """Who besides the owner may read a file with ``mode``, as words for a warning."""
    if mode & stat.S_IROTH:
        return "is readable by every user on this machine"
    return "is readable by its group"


def _resolve_path(value: object, key: str, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a file path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _reject_unknown(mapping: Mapping[Any, Any], known: set[str], prefix: str) -> None:
    for key in mapping:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key_shown(key)}: unknown key (known: {', '.join(sorted(known))})"
            )
