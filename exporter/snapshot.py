"""Immutable, validated views of what Binance answered and of each account's health.

:func:`parse_account_status` turns the ``result`` of ``v2/account.status``
into an :class:`AccountSnapshot` or rejects the whole answer with
:class:`MalformedAnswer`: a half-parsed answer is never served. Amounts are
decimal strings; they are parsed strictly (no ``""``, ``"abc"``, ``"NaN"``,
``"inf"``, ``"1e400"``). Fields this module does not know are ignored.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple


def snake_case(name: str) -> str:
    """``totalCrossUnPnl`` -> ``total_cross_un_pnl``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


TOTAL_FIELDS = (
    "totalInitialMargin", "totalMaintMargin", "totalWalletBalance", "totalUnrealizedProfit",
    "totalMarginBalance", "totalPositionInitialMargin", "totalOpenOrderInitialMargin",
    "totalCrossWalletBalance", "totalCrossUnPnl", "availableBalance", "maxWithdrawAmount",
)
ASSET_FIELDS = (
    "walletBalance", "unrealizedProfit", "marginBalance", "maintMargin", "initialMargin",
    "positionInitialMargin", "openOrderInitialMargin", "crossWalletBalance", "crossUnPnl",
    "availableBalance", "maxWithdrawAmount",
)
POSITION_FIELDS = (
    "positionAmt", "unrealizedProfit", "isolatedMargin", "notional", "isolatedWallet",
    "initialMargin", "maintMargin",
)

_DECIMAL_PATTERN = r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?"  # ASCII only: \d matches any Unicode digit
_DECIMAL = re.compile(_DECIMAL_PATTERN)
_MAX_INTEGER = 2**53  # integers beyond this are not exact as floats (ms times are ~2**41)
_LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")


class MalformedAnswer(ValueError):
    """The answer is not shaped as Binance documents it; the message names the field."""


class AssetBalance(NamedTuple):
    asset: str
    amounts: tuple[float, ...]  # in ASSET_FIELDS order
    margin_available: bool | None  # present only in multi-assets mode
    update_time: float  # epoch seconds


class Position(NamedTuple):
    symbol: str
    side: str  # BOTH in one-way mode, LONG / SHORT in hedge mode
    amounts: tuple[float, ...]  # in POSITION_FIELDS order
    update_time: float  # epoch seconds; 0 when Binance sends 0


class RateLimit(NamedTuple):
    rate_limit_type: str
    interval: str
    interval_num: int
    limit: float
    count: float


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One complete, valid ``v2/account.status`` answer."""

    totals: tuple[float, ...]  # in TOTAL_FIELDS order
    assets: tuple[AssetBalance, ...]
    positions: tuple[Position, ...]
    received_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class RequestDurations:
    """Cumulative histogram counts of request round trips, in seconds."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]  # one per bound, then +Inf last
    total: float

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> RequestDurations:
        return cls(tuple(bounds), (0,) * (len(bounds) + 1), 0.0)

    def observe(self, seconds: float) -> RequestDurations:
        counts = tuple(
            count + (1 if index == len(self.bounds) or seconds <= self.bounds[index] else 0)
            for index, count in enumerate(self.cumulative_counts)
        )
        return RequestDurations(self.bounds, counts, self.total + seconds)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything /metrics shows for one account, as of one moment.

    ``snapshot`` is the last good answer; it is shown until ``expires_at``
    (last success + ``stale_after``) and then dropped, while the health
    fields are always shown.
    """

    name: str
    snapshot: AccountSnapshot | None
    expires_at: float
    rate_limits: tuple[RateLimit, ...]
    up: bool
    last_success: float | None
    errors: Mapping[str, int]
    connections: int
    durations: RequestDurations
    backoff_until: float
    clock_offset: float

    def live_snapshot(self, now: float) -> AccountSnapshot | None:
        return self.snapshot if self.snapshot is not None and now < self.expires_at else None


def parse_account_status(result: object, *, received_at: float) -> AccountSnapshot:
    """Validate a ``v2/account.status`` result, or raise :class:`MalformedAnswer`."""
    result = _mapping(result, "result")
    totals = _amounts(result, TOTAL_FIELDS, "result")
    assets = tuple(_asset(entry, index)
                   for index, entry in enumerate(_list(result, "assets", "result")))
    _reject_duplicates([asset.asset for asset in assets], "assets", "asset")
    positions = tuple(_position(entry, index)
                      for index, entry in enumerate(_list(result, "positions", "result")))
    _reject_duplicates([(p.symbol, p.side) for p in positions], "positions", "symbol and side")
    return AccountSnapshot(totals, assets, positions, received_at)


def parse_rate_limits(raw: object) -> tuple[RateLimit, ...]:
    """The ``rateLimits`` list of an answer (any answer, errors included)."""
    if not isinstance(raw, list):
        raise MalformedAnswer("rateLimits: expected a list")
    limits = []
    for index, entry in enumerate(raw):
        where = f"rateLimits[{index}]"
        entry = _mapping(entry, where)
        limits.append(RateLimit(
            rate_limit_type=_label(entry, "rateLimitType", where),
            interval=_label(entry, "interval", where),
            interval_num=int(_integer(entry, "intervalNum", where)),
            limit=_amount(entry, "limit", where),
            count=_amount(entry, "count", where),
        ))
    return tuple(limits)


def _asset(entry: object, index: int) -> AssetBalance:
    where = f"assets[{index}]"
    entry = _mapping(entry, where)
    margin_available = entry.get("marginAvailable")
    if margin_available is not None and not isinstance(margin_available, bool):
        raise MalformedAnswer(f"{where}.marginAvailable: expected true or false")
    return AssetBalance(
        asset=_label(entry, "asset", where),
        amounts=_amounts(entry, ASSET_FIELDS, where),
        margin_available=margin_available,
        update_time=_integer(entry, "updateTime", where) / 1000,
    )


def _position(entry: object, index: int) -> Position:
    where = f"positions[{index}]"
    entry = _mapping(entry, where)
    return Position(
        symbol=_label(entry, "symbol", where),
        side=_label(entry, "positionSide", where),
        amounts=_amounts(entry, POSITION_FIELDS, where),
        update_time=_integer(entry, "updateTime", where) / 1000,
    )


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(entry: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = entry.get(name)
    if not isinstance(value, list):
        raise MalformedAnswer(f"{where}.{name}: expected a list")
    return value


def _amounts(entry: Mapping[str, Any], names: tuple[str, ...], where: str) -> tuple[float, ...]:
    """Several amounts at once, with a fast path for the usual case.

    Binance sends decimal strings; the pattern allows at most 40 integer
    digits, so every string it accepts converts to a finite float. Anything
    else (missing, numbers, junk) goes through :func:`_amount` one by one.
    """
    values = [entry.get(name) for name in names]
    try:
        joined = "\x00".join(values)  # TypeError unless every value is a string
    except TypeError:
        joined = ""
    if _row_of(len(names))(joined):
        return tuple(map(float, values))
    return tuple(_amount(entry, name, where) for name in names)


@functools.cache
def _row_of(count: int) -> Callable[[str], re.Match[str] | None]:
    """Matches exactly ``count`` decimals joined by NUL: a whole row in one regex call.

    The exact count matters: a value that itself holds a NUL would otherwise
    pass as two numbers.
    """
    return re.compile(rf"{_DECIMAL_PATTERN}(?:\x00{_DECIMAL_PATTERN}){{{count - 1}}}").fullmatch


def _amount(entry: Mapping[str, Any], name: str, where: str) -> float:
    """A decimal string (or JSON number) as a finite float."""
    value = entry.get(name)
    is_decimal_string = isinstance(value, str) and _DECIMAL.fullmatch(value) is not None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_decimal_string or is_number):
        raise MalformedAnswer(f"{where}.{name}: expected a decimal number, got {_show(value)}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise MalformedAnswer(f"{where}.{name}: number out of range, got {_show(value)}")
    return number


def _integer(entry: Mapping[str, Any], name: str, where: str) -> int:
    value = entry.get(name)
    if type(value) is not int or not 0 <= value <= _MAX_INTEGER:
        raise MalformedAnswer(
            f"{where}.{name}: expected a non-negative integer, got {_show(value)}"
        )
    return value


def _label(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise MalformedAnswer(f"{where}.{name}: expected a short name, got {_show(value)}")
    return value


def _reject_duplicates(keys: list[Any], where: str, what: str) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise MalformedAnswer(f"{where}: the same {what} appears twice: {key!r}")
        seen.add(key)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
