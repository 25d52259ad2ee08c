"""One strict YAML loader and the one-line message helpers both config files share.

The loader is PyYAML's ``SafeLoader`` (no Python objects) made strict: a mapping
key given twice is an error instead of "the last one wins", and a key must be a
plain scalar. Every error becomes one line with its line and column, so the
exporter can print it as ``error: <file>: <problem>``.

The helpers decide how a value given in a config file is echoed back in an
error. Config files hold secrets, so some values are never shown in full:

- :func:`brief`: ``repr`` cut to 60 characters, for values that are not secret;
- :func:`masked`: a short prefix and the length, for values that may be a secret
  pasted into the wrong field (a ``*_file`` value that is not a readable file);
- :func:`key_shown`: an unknown mapping key in full only when it looks like a
  config key name (``pol_interval``), else masked;
- :func:`escape_controls`: text from elsewhere (an OS or YAML error, a peer)
  with control characters escaped, so it cannot break or forge a log line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "UnreadableFileError",
    "YamlFileError",
    "brief",
    "escape_controls",
    "key_shown",
    "load_yaml_file",
    "masked",
    "shown",
]

_BRIEF_MAX = 60
_MASK_PREFIX_MAX = 4
# A typo of a config key (pol_interval, api_secrte, recv_windw) is shown in full;
# Binance keys and secrets (64 mixed-case letters and digits) never look like this.
_KEY_NAME = re.compile(r"[a-z]{1,32}(?:_[a-z0-9]{1,32}){0,4}")
_KEY_NAME_MAX = 40


class YamlFileError(Exception):
    """The file cannot be read or is not valid YAML; the message is one line."""


class UnreadableFileError(YamlFileError):
    """The file cannot be opened or read (it may not exist: the name may be a pasted secret)."""


def load_yaml_file(path: Path) -> Any:
    """Parse the YAML file at ``path`` strictly; None for an empty document.

    The message of :class:`YamlFileError` does not name the file: callers
    prefix it with what the file is (``config file x.yaml: ...``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        reason = escape_controls(err.strerror or type(err).__name__)
        raise UnreadableFileError(f"cannot read: {reason}") from None
    except UnicodeDecodeError:
        raise YamlFileError("not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise YamlFileError(f"not valid YAML: {_yaml_problem(err)}") from None


def brief(value: object) -> str:
    """``repr(value)``, cut short: error messages echo what was given, not all of it."""
    text = repr(value)
    return text if len(text) <= _BRIEF_MAX else text[: _BRIEF_MAX - 3] + "..."


def shown(value: object) -> str:
    """``value`` as text for a one-line message: quoted when it holds unprintable characters."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def masked(value: object) -> str:
    """A value that may be a secret: a short prefix and its length, never the whole.

    The prefix is at most 4 characters and at most an eighth of the value, so
    a 64-character secret shows 4 and a short one shows nothing.
    """
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    prefix = escape_controls(value[: min(_MASK_PREFIX_MAX, len(value) // 8)])
    return f"'{prefix}…' ({len(value)} characters)"


def key_shown(key: object) -> str:
    """A mapping key for an "unknown key" message: in full if it looks like a key name."""
    if isinstance(key, str) and len(key) <= _KEY_NAME_MAX and _KEY_NAME.fullmatch(key):
        return key
    return masked(key) if isinstance(key, str) else brief(key)


def escape_controls(text: str) -> str:
    """``text`` with every unprintable character (newline, ESC, NUL, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with line and column."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or "syntax error"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{escape_controls(problem)}{where}"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate and non-scalar mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            name = key_shown(key)
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {brief(key) if name == key else name}",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
