"""One-line message helpers: how a value from a config file, an answer or a peer is echoed.

Every error and log line of the exporter is one line that cannot be broken or
forged by what it quotes, and config files hold secrets, so some values are
never shown in full:

- :func:`brief`: ``repr`` cut short, for values that are not secret;
- :func:`masked`: a short prefix and the length, for values that may be a secret
  pasted into the wrong field (a ``*_file`` value that is not a readable file);
- :func:`key_shown`: an unknown mapping key in full only when it looks like a
  config key name (``pol_interval``), else masked;
- :func:`escape_controls`: text from elsewhere (an OS or YAML error, Binance's
  error text, a peer) with control characters escaped;
- :func:`first_line`: an exception as one short, escaped line.
"""

from __future__ import annotations

import re

__all__ = ["brief", "escape_controls", "first_line", "key_shown", "masked", "shown"]

_MASK_PREFIX_MAX = 4
# A typo of a config key (pol_interval, api_secrte, recv_windw) is shown in full;
# Binance keys and secrets (64 mixed-case letters and digits) never look like this.
_KEY_NAME = re.compile(r"[a-z]{1,32}(?:_[a-z0-9]{1,32}){0,4}")
_KEY_NAME_MAX = 40


def brief(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: messages echo what was given, not all
    of it (``repr`` escapes control characters and keeps printable Unicode)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name if empty), cut and escaped."""
    text = str(exc) or type(exc).__name__
    return escape_controls(text.splitlines()[0][:limit])
