"""Immutable, validated views of what Binance answered: the tolerant reader.

:func:`parse_account_status` turns the ``result`` of ``v2/account.status``
into an :class:`AccountSnapshot`. One rule decides what in an answer is fatal:

- **Fatal** (:class:`MalformedAnswer`, the whole answer is rejected and the
  last good snapshot kept): ``result`` is not an object, or one of the eleven
  totals is missing or not a number. Margin cannot be computed without them.
- **A row is skipped** (reported as a :class:`Problem`, the rest of the answer
  kept): an asset or position entry that is not an object, whose identity
  (asset; symbol and position side) is not a usable label, or that repeats an
  identity already seen (the first one wins). ``assets`` or ``positions`` that
  is not a list counts as one malformed row of that kind and yields none.
- **A field is omitted** (reported, the row kept): one amount, ``updateTime``
  or ``marginAvailable`` that cannot be parsed. Its series is simply absent.

:func:`parse_position_details` reads ``v2/account.position`` by the same
rules; only a ``result`` that is not a list is fatal there. A liquidation
price of zero, in any spelling, means Binance has none and is left out.

Numbers are any finite decimal Binance could mean: decimal strings, with an
exponent too (``1e-8``, ``0E-8``), and JSON numbers; never ``NaN``,
``inf``, an overflow, an empty string or whitespace. Identities are any text
without control characters up to :data:`MAX_LABEL_LENGTH` characters
(``币安人生USDT`` is a real symbol); unknown position sides are kept as given.
Fields this module does not know are ignored.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from exporter.fields import (
    ASSET_FIELDS,
    POSITION_DETAIL_FIELDS,
    POSITION_FIELDS,
    TOTAL_FIELDS,
    Field,
)
from exporter.messages import brief

__all__ = [
    "MAX_LABEL_LENGTH",
    "AccountSnapshot",
    "AssetBalance",
    "MalformedAnswer",
    "Position",
    "PositionDetail",
    "PositionDetails",
    "Problem",
    "RateLimit",
    "decimal_value",
    "label_value",
    "parse_account_status",
    "parse_margin_mode",
    "parse_position_details",
    "parse_rate_limits",
]

MAX_LABEL_LENGTH = 100
# ASCII digits only: \d would accept any Unicode digit, which float() also takes.
_DECIMAL_PATTERN = r"-?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][-+]?[0-9]{1,4})?"
_DECIMAL = re.compile(_DECIMAL_PATTERN)
_MAX_INTEGER = 2**53  # integers beyond this are not exact as floats (ms times are ~2**41)
# C0/C1 controls, line/paragraph separators and lone surrogates (not encodable as UTF-8).
_NOT_LABEL_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class MalformedAnswer(ValueError):
    """The answer cannot be used at all; the message names the field."""


class Problem(NamedTuple):
    """Something in an answer that was skipped (a row) or omitted (a field).

    ``kind`` is ``asset``, ``position`` or ``rate_limit``; ``reason`` is
    ``malformed``, ``bad_identity`` or ``duplicate`` for a skipped row, and
    ``bad_field`` for an omitted field, named by ``field``.
    """

    kind: str
    reason: str
    field: str | None
    detail: str  # for the log: where and what, values cut short


class AssetBalance(NamedTuple):
    asset: str
    amounts: tuple[float | None, ...]  # in ASSET_FIELDS order; None where unparseable
    margin_available: bool | None  # present only in multi-assets mode
    update_time: float | None  # epoch seconds; None when 0 or unparseable


class Position(NamedTuple):
    symbol: str
    side: str  # BOTH in one-way mode, LONG / SHORT in hedge mode, or what Binance sends
    amounts: tuple[float | None, ...]  # in POSITION_FIELDS order; None where unparseable
    update_time: float | None  # epoch seconds; None when 0 or unparseable


class PositionDetail(NamedTuple):
    """One row of ``v2/account.position``: what ``v2/account.status`` does not carry."""

    symbol: str
    side: str
    amounts: tuple[float | None, ...]  # in POSITION_DETAIL_FIELDS order; no 0 liquidation price
    adl_quantile: int | None  # 0-4
    margin_asset: str | None
    position_amt: float | None  # shown only for a row the status answer lacks


@dataclass(frozen=True, slots=True)
class PositionDetails:
    """One usable ``v2/account.position`` answer."""

    positions: tuple[PositionDetail, ...]
    received_at: float  # epoch seconds


class RateLimit(NamedTuple):
    rate_limit_type: str
    interval: str
    interval_num: int
    limit: float
    used: float  # Binance's "count"; a NamedTuple field cannot be named count


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One usable ``v2/account.status`` answer."""

    totals: tuple[float, ...]  # in TOTAL_FIELDS order
    assets: tuple[AssetBalance, ...]
    positions: tuple[Position, ...]
    received_at: float  # epoch seconds


def parse_account_status(result: object, *,
                         received_at: float) -> tuple[AccountSnapshot, tuple[Problem, ...]]:
    """Read a ``v2/account.status`` result; raise :class:`MalformedAnswer` only if fatal."""
    if not isinstance(result, dict):
        raise MalformedAnswer(f"result: expected an object, got {type(result).__name__}")
    totals = _amounts(result, TOTAL_FIELDS)
    if None in totals:
        missing = next(f.key for f, v in zip(TOTAL_FIELDS, totals, strict=True) if v is None)
        raise MalformedAnswer(
            f"result.{missing}: expected a decimal number, got {_excerpt(result.get(missing))}")
    problems: list[Problem] = []
    assets = _rows(result, "assets", "asset", _asset, problems)
    positions = _rows(result, "positions", "position", _position, problems)
    snapshot = AccountSnapshot(totals, assets, positions, received_at)  # type: ignore[arg-type]
    return snapshot, tuple(problems)


def parse_position_details(result: object, *,
                           received_at: float) -> tuple[PositionDetails, tuple[Problem, ...]]:
    """Read a ``v2/account.position`` result; only a result that is not a list is fatal."""
    if not isinstance(result, list):
        raise MalformedAnswer(f"result: expected a list, got {type(result).__name__}")
    problems: list[Problem] = []
    rows = _rows({"positions": result}, "positions", "position", _position_detail, problems)
    return PositionDetails(rows, received_at), tuple(problems)


def parse_margin_mode(result: object) -> bool:
    """True in multi-assets mode, from v1 ``account.status``'s ``multiAssetsMargin``."""
    mode = result.get("multiAssetsMargin") if isinstance(result, dict) else None
    if not isinstance(mode, bool):
        raise MalformedAnswer(f"result.multiAssetsMargin: expected true or false, got "
                              f"{_excerpt(mode)}")
    return mode


def parse_rate_limits(raw: object) -> tuple[tuple[RateLimit, ...], tuple[Problem, ...]]:
    """The ``rateLimits`` of any answer: malformed entries are skipped, never fatal.

    Entries that repeat (type, interval, intervalNum) become one, the one with
    the highest count: two series with the same labels would be invalid.
    """
    if raw is None:
        return (), ()
    if not isinstance(raw, list):
        return (), (Problem("rate_limit", "malformed", None, "rateLimits: not a list"),)
    limits: dict[tuple[str, str, int], RateLimit] = {}
    problems: list[Problem] = []
    for index, entry in enumerate(raw):
        limit = _rate_limit(entry)
        if limit is None:
            problems.append(Problem("rate_limit", "malformed", None,
                                    f"rateLimits[{index}]: {_excerpt(entry)}"))
            continue
        key = (limit.rate_limit_type, limit.interval, limit.interval_num)
        if key not in limits or limits[key].used < limit.used:
            limits[key] = limit
    return tuple(limits.values()), tuple(problems)


def _rate_limit(entry: object) -> RateLimit | None:
    if not isinstance(entry, dict):
        return None
    kind, interval = label_value(entry.get("rateLimitType")), label_value(entry.get("interval"))
    number = entry.get("intervalNum")
    limit, count = decimal_value(entry.get("limit")), decimal_value(entry.get("count"))
    if (kind is None or interval is None or type(number) is not int or not 0 < number < 10**6
            or limit is None or count is None):
        return None
    return RateLimit(kind, interval, number, limit, count)


_Place = tuple[str, int]  # (list name, index): where a row is
_RowParser = Callable[[dict[str, Any], _Place, list[Problem]], Any]


def _rows(result: Mapping[str, Any], name: str, kind: str, parse: _RowParser,
          problems: list[Problem]) -> tuple[Any, ...]:
    """Every usable row of ``result[name]``; the others become problems."""
    entries = result.get(name)
    if not isinstance(entries, list):
        problems.append(Problem(kind, "malformed", None, f"{name}: expected a list, got "
                                                         f"{_excerpt(entries)}"))
        return ()
    rows: dict[tuple[str, ...], Any] = {}
    width = 2 if kind == "position" else 1  # the identity: (symbol, side) or (asset,)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(Problem(kind, "malformed", None,
                                    f"{name}[{index}]: {_excerpt(entry)}"))
            continue
        row = parse(entry, (name, index), problems)
        if row is None:
            continue
        identity = row[:width]
        if identity in rows:
            problems.append(Problem(kind, "duplicate", None,
                                    f"{name}[{index}]: {tuple(identity)!r} again"))
            continue
        rows[identity] = row
    return tuple(rows.values())



def _at(where: _Place) -> str:
    """Where a row is (``positions[3]``), for a problem's detail: built only then."""
    return f"{where[0]}[{where[1]}]"


def _identity(entry: dict[str, Any], where: _Place,
              problems: list[Problem]) -> tuple[str | None, str | None]:
    """A position row's (symbol, side); a problem when either is not a usable label."""
    symbol, side = label_value(entry.get("symbol")), label_value(entry.get("positionSide"))
    if symbol is None or side is None:
        bad = "symbol" if symbol is None else "positionSide"
        problems.append(Problem("position", "bad_identity", None,
                                f"{_at(where)}.{bad}: {_excerpt(entry.get(bad))}"))
    return symbol, side


def _asset(entry: dict[str, Any], where: _Place, problems: list[Problem]) -> AssetBalance | None:
    asset = label_value(entry.get("asset"))
    if asset is None:
        problems.append(Problem("asset", "bad_identity", None,
                                f"{_at(where)}.asset: {_excerpt(entry.get('asset'))}"))
        return None
    amounts = _row_amounts(entry, ASSET_FIELDS, "asset", where, problems)
    margin_available = entry.get("marginAvailable")
    if margin_available is not None and not isinstance(margin_available, bool):
        problems.append(Problem("asset", "bad_field", "marginAvailable",
                                f"{_at(where)}.marginAvailable: {_excerpt(margin_available)}"))
        margin_available = None
    update_time = _update_time(entry, "asset", where, problems)
    return AssetBalance(asset, amounts, margin_available, update_time)


def _position(entry: dict[str, Any], where: _Place, problems: list[Problem]) -> Position | None:
    symbol, side = _identity(entry, where, problems)
    if symbol is None or side is None:
        return None
    amounts = _row_amounts(entry, POSITION_FIELDS, "position", where, problems)
    return Position(symbol, side, amounts, _update_time(entry, "position", where, problems))


_LIQUIDATION = next(index for index, field in enumerate(POSITION_DETAIL_FIELDS)
                    if field.key == "liquidationPrice")


def _position_detail(entry: dict[str, Any], where: _Place,
                     problems: list[Problem]) -> PositionDetail | None:
    symbol, side = _identity(entry, where, problems)
    if symbol is None or side is None:
        return None
    amounts = _row_amounts(entry, POSITION_DETAIL_FIELDS, "position", where, problems)
    if amounts[_LIQUIDATION] == 0:  # "0", "0.00000000": Binance has no liquidation price
        amounts = (*amounts[:_LIQUIDATION], None, *amounts[_LIQUIDATION + 1:])
    adl = entry.get("adl")
    if type(adl) is not int or not 0 <= adl <= 4:
        problems.append(Problem("position", "bad_field", "adl",
                                f"{_at(where)}.adl: {_excerpt(adl)}"))
        adl = None
    margin_asset = label_value(entry.get("marginAsset"))
    if margin_asset is None:
        problems.append(Problem("position", "bad_field", "marginAsset",
                                f"{_at(where)}.marginAsset: {_excerpt(entry.get('marginAsset'))}"))
    return PositionDetail(symbol, side, amounts, adl, margin_asset,
                          decimal_value(entry.get("positionAmt")))


def _row_amounts(entry: Mapping[str, Any], fields: tuple[Field, ...], kind: str, where: _Place,
                 problems: list[Problem]) -> tuple[float | None, ...]:
    amounts = _amounts(entry, fields)
    if None in amounts:
        for field, value in zip(fields, amounts, strict=True):
            if value is None:
                detail = f"{_at(where)}.{field.key}: {_excerpt(entry.get(field.key))}"
                problems.append(Problem(kind, "bad_field", field.key, detail))
    return amounts


def _update_time(entry: Mapping[str, Any], kind: str, where: _Place,
                 problems: list[Problem]) -> float | None:
    """``updateTime`` in epoch seconds; None for 0 (Binance's "never") or when unusable."""
    value = entry.get("updateTime")
    if type(value) is int and 0 <= value <= _MAX_INTEGER:
        return value / 1000 if value else None
    problems.append(Problem(kind, "bad_field", "updateTime",
                            f"{_at(where)}.updateTime: {_excerpt(value)}"))
    return None


def _amounts(entry: Mapping[str, Any], fields: tuple[Field, ...]) -> tuple[float | None, ...]:
    """Several amounts at once, with a fast path for the usual all-strings-valid row.

    The pattern allows at most 40 integer digits, so every string it accepts
    converts to a float; only an exponent can still overflow, which the
    finite check after the fast path catches.
    """
    try:
        values: Any = _getter(fields)(entry)
        joined = "\x00".join(values)  # TypeError unless every value is a string
    except (KeyError, TypeError):  # a field missing, or not a string
        values = [entry.get(field.key) for field in fields]
        joined = ""
    if _row_of(len(fields))(joined):
        numbers = tuple(map(float, values))
        # Only an exponent can overflow to inf: check finiteness only then.
        if ("e" not in joined and "E" not in joined) or all(map(math.isfinite, numbers)):
            return numbers
    return tuple(map(decimal_value, values))


@functools.cache
def _getter(fields: tuple[Field, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The fields' values in one C call (a tuple; KeyError if one is missing)."""
    getter = operator.itemgetter(*(field.key for field in fields))
    return getter if len(fields) > 1 else lambda entry: (getter(entry),)


@functools.cache
def _row_of(count: int) -> Callable[[str], re.Match[str] | None]:
    """Matches exactly ``count`` decimals joined by NUL: a whole row in one regex call.

    The exact count matters: a value that itself holds a NUL would otherwise
    pass as two numbers.
    """
    return re.compile(rf"{_DECIMAL_PATTERN}(?:\x00{_DECIMAL_PATTERN}){{{count - 1}}}").fullmatch


def decimal_value(value: object) -> float | None:
    """A decimal string or JSON number as a finite float; None for anything else."""
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value) is None:
            return None
    elif not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def label_value(value: object) -> str | None:
    """``value`` if it can be a label value: non-empty text, no control characters.

    Symbols and assets repeat in every answer: one accepted is remembered (up to
    :data:`_KNOWN_LABELS_MAX`), so the next answers skip the check.
    """
    if type(value) is str and value in _known_labels:
        return value
    if (isinstance(value, str) and 0 < len(value) <= MAX_LABEL_LENGTH
            and _NOT_LABEL_TEXT.search(value) is None):
        if len(_known_labels) >= _KNOWN_LABELS_MAX:
            _known_labels.clear()
        _known_labels.add(value)
        return value
    return None


_KNOWN_LABELS_MAX = 100_000
_known_labels: set[str] = set()


def _excerpt(value: object) -> str:
    return brief(value, 40)
