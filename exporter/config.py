"""The YAML configuration: parsed, validated and resolved once at start-up.

Every problem raises :class:`ConfigError` with one line that names the key
(``accounts[1].api_secret: ...``). Secrets are resolved here (inline,
``${ENV_VAR}`` or ``<field>_file``) and kept in :class:`Secret` or inside a
signer, so no ``repr()`` of a config object can show one.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.signing import HmacSigner, PrivateKeyError, Signer, load_private_key

log = logging.getLogger(__name__)

DEFAULT_PORT = 10317
ENDPOINTS = {
    "production": "wss://ws-fapi.binance.com/ws-fapi/v1",
    "testnet": "wss://testnet.binancefuture.com/ws-fapi/v1",
}
MAX_RECV_WINDOW_MS = 60_000

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "kb": 1000, "mb": 1000**2}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


# Keys accepted at the top level and per account; anything else is an error.
_TOP_LEVEL_KEYS = {
    "listen", "endpoint", "poll_interval", "request_timeout", "recv_window", "stale_after",
    "reconnect_backoff_min", "reconnect_backoff_max", "connection_lifetime",
    "auth_retry_interval", "clock_sync_interval", "weight_limit", "max_frame_size",
    "position_details", "web_config_file", "accounts",
}
_SECRET_FIELDS = ("api_key", "api_secret", "private_key", "private_key_passphrase")
_ACCOUNT_KEYS = {"name", "session_logon"} | {
    f"{name}{suffix}" for name in _SECRET_FIELDS for suffix in ("", "_file")
}


def parse_duration(value: object, key: str) -> float:
    """``15s``, ``2m``, ``500ms``, ``1h30m`` or a plain number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 15s, 2m or 500ms, got {_brief(value)}")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else float("inf")
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value.strip()) == "":
        seconds = sum(
            float(number) * _DURATION_UNITS[unit]
            for number, unit in _DURATION_PART.findall(value.strip())
        )
    else:
        raise ConfigError(f"{key}: expected a duration like 15s, 2m or 500ms, got {_brief(value)}")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{key}: must be a positive duration, got {_brief(value)}")
    return seconds


def parse_size(value: object, key: str) -> int:
    """A byte count: an integer or ``512KiB``, ``4MiB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None or match.group(2) not in _SIZE_UNITS or int(match.group(1)) == 0:
        raise ConfigError(
            f"{key}: expected a positive size like 4MiB or 1048576, got {_brief(value)}"
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_listen(value: object, key: str = "listen") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[v6addr]:PORT``."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected HOST:PORT such as 127.0.0.1:{DEFAULT_PORT}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{key}: write IPv6 addresses in brackets, e.g. [::1]:{DEFAULT_PORT}")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT with a port 1-65535, got {_brief(value)}")
    return host, int(port)


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve the YAML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {_shown(path)}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {_shown(path)} is not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {_shown(path)} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if document is None:
        document = {}
    return parse_config(document, base_dir=path.parent)


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
                "clock_sync_interval"):
        if key in document:
            settings[key] = parse_duration(document[key], key)
    if "recv_window" in document:
        settings["recv_window_ms"] = _parse_recv_window(document["recv_window"])
    if "weight_limit" in document:
        settings["weight_limit"] = _parse_positive_int(document["weight_limit"], "weight_limit")
    if "max_frame_size" in document:
        settings["max_frame_size"] = parse_size(document["max_frame_size"], "max_frame_size")
    if "position_details" in document:
        settings["position_details"] = _parse_bool(document["position_details"],
                                                   "position_details")
    if document.get("web_config_file") is not None:
        settings["web_config_file"] = _resolve_path(document["web_config_file"], "web_config_file",
                                                    base_dir)
    _apply_derived_defaults(settings)
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


def _parse_endpoint(value: object) -> str:
    if isinstance(value, str) and value in ENDPOINTS:
        return ENDPOINTS[value]
    if isinstance(value, str) and re.fullmatch(r"wss?://[^\s/]+(/\S*)?", value):
        return value
    raise ConfigError(
        f"endpoint: expected production, testnet or a ws:// or wss:// URL, got {_brief(value)}"
    )


def _parse_recv_window(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        milliseconds = value
    else:
        milliseconds = round(parse_duration(value, "recv_window") * 1000)
    if not 0 < milliseconds <= MAX_RECV_WINDOW_MS:
        raise ConfigError(
            f"recv_window: must be 1 to {MAX_RECV_WINDOW_MS} milliseconds, got {_brief(value)}"
        )
    return milliseconds


def _parse_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_brief(value)}")
    return value


def _parse_positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {_brief(value)}")
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
            f"starting with a letter or digit, got {_brief(name)}"
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
    session_logon = entry.get("session_logon", False)
    if not isinstance(session_logon, bool):
        raise ConfigError(f"{prefix}.session_logon: expected true or false")
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
        return _read_secret_file(_resolve_path(entry[file_key], f"{prefix}.{file_key}", base_dir),
                                 f"{prefix}.{file_key}")
    if inline is None:
        return None
    if not isinstance(inline, str):
        raise ConfigError(f"{prefix}.{name}: expected a string (quote it in YAML)")
    reference = _ENV_REFERENCE.fullmatch(inline.strip())
    if reference:
        value = os.environ.get(reference.group(1))
        if value is None:
            raise ConfigError(
                f"{prefix}.{name}: environment variable {reference.group(1)} is not set"
            )
        inline = value
    if not inline.strip():
        raise ConfigError(f"{prefix}.{name}: is empty")
    return inline


def _read_secret_file(path: Path, key: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {_shown(path)}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {_shown(path)} is not UTF-8 text") from None
    if mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user on this machine; chmod 600 it",
                    _shown(path))
    text = text.rstrip("\r\n")
    if not text.strip():
        raise ConfigError(f"{key}: {_shown(path)} is empty")
    return text


def _resolve_path(value: object, key: str, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a file path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _reject_unknown(mapping: Mapping[Any, Any], known: set[str], prefix: str) -> None:
    for key in mapping:
        if key not in known:
            raise ConfigError(
                f"{prefix}{_shown(key)}: unknown key (known: {', '.join(sorted(known))})"
            )


def _brief(value: object) -> str:
    """``repr(value)``, cut short: error messages echo what was given, not all of it."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(value: object) -> str:
    """``value`` as text for a one-line message: quoted when it holds unprintable characters."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with line and column."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{problem}{where}"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
