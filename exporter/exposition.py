"""How /metrics is encoded: both exposition formats, rendered when a scrape asks, cached.

Pollers :meth:`Exposition.publish` new account states; nothing is rendered
then. A scrape asks for one body (:meth:`Exposition.body`: text or OpenMetrics,
plain or gzip) and gets cached bytes while nothing changed; otherwise that one
format is rendered (on the render thread) and cached. What the page contains is
:mod:`exporter.metrics`' business; prometheus_client's own encoders are the
reference (:func:`render_page`) and the bytes served are theirs, byte for byte.

How a render stays cheap:

- **Per account, once per change.** Each account's samples are encoded when
  its state changed (or something it showed went stale), as pieces per
  family; the page is every family's header followed by that family's pieces
  of every account, in account order.
- **Encoded directly, shared by both formats, column by column.** A sample
  line is the series' prefix (name and labels, escaped as prometheus_client
  escapes them), kept per account while the rows stay, then the value as
  prometheus_client's ``floatToGoString`` writes it. An account's table
  (:class:`~exporter.metrics.Table`) is written a column (one family) at a
  time: a column whose values did not change since the account's last
  encoding is reused, and a changed one is formatted without Python code per
  sample where the values allow (finite floats below 1e6: ``repr``). Sample
  lines are the same in the text format and OpenMetrics; only the HELP/TYPE
  headers (counters are named differently), the own metrics and ``# EOF``
  differ, and those come from prometheus_client's encoders.
- **Lazily, per format.** A format, and its gzip, is built on the first
  scrape that asks for it after a change: Prometheus asks for one of the four.
- **The exporter's own metrics per scrape.** ``process_*`` (prometheus_client's
  ``ProcessCollector``) change on every scrape; they are a small tail after the
  cached page (before ``# EOF``), re-read at most every
  :data:`OWN_METRICS_MAX_AGE` seconds, so they never cause a page render.
  The gzip body is one gzip member: the page's deflate blocks, compressed once
  per change and ended with a sync flush, then the tail's own final block, and
  one CRC over both (``zlib.crc32`` continues a CRC). Several gzip members
  would be valid gzip too, but curl 7.88 ``--compressed`` shows only the first.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import ge
from typing import NamedTuple

from prometheus_client import ProcessCollector, exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.metrics import FAMILIES, Layout, Table, account_tables, build_info, collect
from exporter.state import AccountState

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "OWN_METRICS_MAX_AGE",
    "TEXT_CONTENT_TYPE",
    "Exposition",
    "Page",
    "render_page",
]

TEXT_CONTENT_TYPE = exposition.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST

#: Seconds a reading of the exporter's own ``process_*`` metrics is served again: scrapes
#: that close together (several scrapers, a flood) share one reading and the body built
#: with it; a single Prometheus scraping every second or slower always gets a fresh one.
OWN_METRICS_MAX_AGE = 0.5

OwnMetrics = Callable[[], Iterable[Metric]]

_EOF = b"# EOF\n"
# Level 1: a 3.7 MB page compresses in 12 ms instead of 40 ms at level 6, for a body 19 %
# larger; a page is compressed once per change.
_LEVEL = 1
# ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=4 (fastest) OS=255 (unknown): what gzip.compress(
# data, 1, mtime=0) writes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


class Page:
    """One exposition's four bodies: text and OpenMetrics, each plain and gzip-compressed."""

    __slots__ = ("_bodies",)

    def __init__(self, text: bytes, text_gzip: bytes, openmetrics: bytes,
                 openmetrics_gzip: bytes) -> None:
        self._bodies = {(False, False): text, (False, True): text_gzip,
                        (True, False): openmetrics, (True, True): openmetrics_gzip}

    @classmethod
    def from_bodies(cls, text: bytes, openmetrics_text: bytes) -> Page:
        return cls(text, _gzip(_deflate(text), b""), openmetrics_text,
                   _gzip(_deflate(openmetrics_text), b""))

    def body(self, openmetrics: bool, gzipped: bool) -> bytes:
        return self._bodies[openmetrics, gzipped]

    @property
    def text(self) -> bytes:
        return self.body(False, False)

    @property
    def text_gzip(self) -> bytes:
        return self.body(False, True)

    @property
    def openmetrics(self) -> bytes:
        return self.body(True, False)

    @property
    def openmetrics_gzip(self) -> bytes:
        return self.body(True, True)

    def __eq__(self, other: object) -> bool:
        """The same exposition: equal plain bodies, gzip bodies that decompress to them.

        (The compressed bytes themselves depend on where the deflate blocks end.)
        """
        if not isinstance(other, Page):
            return NotImplemented
        return all(self.body(openmetrics, False) == other.body(openmetrics, False)
                   == gzip.decompress(self.body(openmetrics, True))
                   == gzip.decompress(other.body(openmetrics, True))
                   for openmetrics in (False, True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Page(text={len(self.text)} bytes, openmetrics={len(self.openmetrics)} bytes)"


_FORMATS = ((False, False), (False, True), (True, False), (True, True))


class _OnDemand(Page):
    """The current page for callers that cannot await: a body is rendered when first read."""

    __slots__ = ("_render",)

    def __init__(self, render: Callable[[bool, bool], bytes]) -> None:
        self._render = render
        self._bodies = {}

    def body(self, openmetrics: bool, gzipped: bool) -> bytes:
        key = (openmetrics, gzipped)
        if key not in self._bodies:
            self._bodies[key] = self._render(openmetrics, gzipped)
        return self._bodies[key]


def render_page(states: Iterable[AccountState], now: float, version: str,
                own: Iterable[Metric] = ()) -> Page:
    """Every body of :func:`~exporter.metrics.collect` and ``own``, encoded by prometheus_client.

    The reference rendering: :class:`Exposition` serves the same bytes.
    """
    collector = _Families([*collect(states, now, version), *own])
    return Page.from_bodies(
        exposition.generate_latest(collector),  # type: ignore[arg-type]
        openmetrics.generate_latest(collector),  # type: ignore[arg-type]
    )


class _Families:
    """The ``collect()`` interface prometheus_client's encoders expect."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Sequence[Metric]:
        return self._families


def _encode_text(families: Sequence[Metric]) -> bytes:
    return exposition.generate_latest(_Families(families))  # type: ignore[arg-type]


def _encode_openmetrics(families: Sequence[Metric]) -> bytes:
    """OpenMetrics without the final ``# EOF``."""
    encoded = openmetrics.generate_latest(_Families(families))  # type: ignore[arg-type]
    return encoded.removesuffix(_EOF)


class Exposition:
    """The /metrics bodies of the published states, rendered when first asked for.

    Pollers :meth:`publish`; the HTTP server awaits :meth:`body`. While
    :meth:`run` runs, renders happen on a thread of their own (sharing the
    default executor with ``getaddrinfo`` would let a resolver that stops
    answering delay the page), so a render never stalls the event loop;
    outside it they happen in the caller. ``own_metrics`` gives the exporter's
    own families (prometheus_client's ``ProcessCollector`` by default).
    """

    def __init__(self, version: str, *, clock: Clock = SYSTEM_CLOCK,
                 own_metrics: OwnMetrics | None = None) -> None:
        self.version = version
        self._clock = clock
        self._own_metrics = own_metrics or ProcessCollector(registry=None).collect
        self._states: dict[str, AccountState] = {}
        self._generation = 0  # counts publications: the served bodies show one generation
        self._renderer: ThreadPoolExecutor | None = None
        # Everything below is touched only under the lock (the render thread, or a caller
        # rendering in its own thread), except _served, read without it by body().
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        info = build_info(version)
        self._formats = {False: _Format(_headers(_encode_text), _encode_text([info])),
                         True: _Format(_headers(_encode_openmetrics), _encode_openmetrics([info]))}
        self._own = _Own(-math.inf, [])  # read on the first render
        self._served: dict[tuple[bool, bool], _Served] = {}

    def publish(self, state: AccountState) -> None:
        self._states[state.name] = state
        self._generation += 1

    async def body(self, openmetrics: bool, gzipped: bool) -> bytes:
        """The body a scrape gets: cached bytes, or rendered now (on the render thread)."""
        now = self._clock.monotonic()
        served = self._cached(openmetrics, gzipped, now)
        if served is not None:
            return served
        request = (tuple(self._states.values()), self._generation, now, openmetrics, gzipped)
        renderer = self._renderer
        if renderer is None:
            return self._render(*request)
        return await asyncio.get_running_loop().run_in_executor(renderer, self._render, *request)

    def page(self) -> Page:
        """The current page for a caller that cannot await :meth:`body`.

        Each body is the cached one, or rendered when first read, in the caller's thread.
        """
        now = self._clock.monotonic()
        states, generation = tuple(self._states.values()), self._generation

        def body(openmetrics: bool, gzipped: bool) -> bytes:
            served = self._cached(openmetrics, gzipped, now)
            return served if served is not None else self._render(
                states, generation, now, openmetrics, gzipped)

        return _OnDemand(body)

    def render_now(self, now: float | None = None) -> Page:
        """All four bodies, rendered synchronously (start-up, ``--once``, tests).

        ``now`` is a monotonic time (the clock's by default).
        """
        when = self._clock.monotonic() if now is None else now
        states, generation = tuple(self._states.values()), self._generation
        return Page(*(self._render(states, generation, when, *key) for key in _FORMATS))

    async def run(self) -> None:
        """Render on a thread of its own until cancelled."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="render") as renderer:
            self._renderer = renderer
            try:
                await asyncio.get_running_loop().create_future()  # until cancelled
            finally:
                self._renderer = None

    def _cached(self, openmetrics: bool, gzipped: bool, now: float) -> bytes | None:
        """The body served last, if nothing was published since and nothing in it expired."""
        served = self._served.get((openmetrics, gzipped))
        if served is not None and served.generation == self._generation and now < served.until:
            return served.body
        return None

    def _render(self, states: tuple[AccountState, ...], generation: int, now: float,
                openmetrics: bool, gzipped: bool) -> bytes:
        with self._lock:
            page = self._formats[openmetrics]
            if page.generation != generation or now >= page.until:
                accounts = self._encoded(states, now)
                page.body = _join(page.headers, accounts, page.build_info)
                page.deflated = None
                page.generation = generation
                page.until = min((account.until for account in accounts), default=math.inf)
            own = self._own_at(now)
            tail = own.text(openmetrics)
            if gzipped:
                if page.deflated is None:
                    page.deflated = _deflate(page.body)
                body = _gzip(page.deflated, tail)
            else:
                body = page.body + tail
            self._served[openmetrics, gzipped] = _Served(
                generation, min(page.until, own.read_at + OWN_METRICS_MAX_AGE), body)
            return body

    def _encoded(self, states: tuple[AccountState, ...], now: float) -> list[_Account]:
        """Every account's encoding as of ``now``, in page order; re-encodes what changed."""
        accounts = []
        for state in sorted(states, key=_name):
            account = self._accounts.get(state.name)
            if account is None or account.state is not state or now >= account.until:
                account = _Account.encode(state, now, account.tables if account else {})
                self._accounts[state.name] = account
            accounts.append(account)
        return accounts

    def _own_at(self, now: float) -> _Own:
        if not self._own.read_at <= now < self._own.read_at + OWN_METRICS_MAX_AGE:
            self._own = _Own(now, list(self._own_metrics()))
        return self._own


def _name(state: AccountState) -> str:
    return state.name


def _headers(encode: Callable[[Sequence[Metric]], bytes]) -> tuple[bytes, ...]:
    """Each family's HELP and TYPE lines, as the encoder writes them for the family empty."""
    return tuple(encode([Metric(family.name, family.help, family.type)]) for family in FAMILIES)


def _join(headers: tuple[bytes, ...], accounts: list[_Account], build_info: bytes) -> bytes:
    parts = []
    for index, header in enumerate(headers):
        parts.append(header)
        for account in accounts:
            parts.extend(account.parts[index])
    parts.append(build_info)
    return b"".join(parts)


@dataclass(slots=True)
class _Format:
    """One format's page without the own metrics (and OpenMetrics' ``# EOF``)."""

    headers: tuple[bytes, ...]  # per family
    build_info: bytes
    body: bytes = b""
    deflated: _Deflated | None = None  # of body, made when a gzip scrape first asks
    generation: int = -1  # of the states body shows
    until: float = -math.inf  # monotonic: when something body shows goes stale


class _Served(NamedTuple):
    """A body as served, reusable while the states are unchanged and ``until`` is ahead."""

    generation: int
    until: float
    body: bytes


@dataclass(slots=True)
class _Own:
    """One reading of the exporter's own metrics, each format encoded when first needed."""

    read_at: float  # monotonic
    families: list[Metric]
    encoded: dict[bool, bytes] = field(default_factory=dict)

    def text(self, openmetrics: bool) -> bytes:
        if openmetrics not in self.encoded:
            self.encoded[openmetrics] = (_encode_openmetrics(self.families) + _EOF if openmetrics
                                         else _encode_text(self.families))
        return self.encoded[openmetrics]


# ---------------------------------------------------------------- one account's samples


@dataclass(frozen=True, slots=True)
class _Account:
    """One account's samples as of one state: per family, the pieces of its sample lines."""

    state: AccountState
    until: float  # monotonic: when something shown goes stale
    parts: tuple[tuple[bytes, ...], ...]  # per family
    tables: dict[Layout, _Encoded]  # what the next encoding of this account may reuse

    @classmethod
    def encode(cls, state: AccountState, now: float, known: dict[Layout, _Encoded]) -> _Account:
        """Encode ``state``, reusing what ``known`` (its last encoding) already wrote."""
        parts: list[list[bytes]] = [[] for _ in FAMILIES]
        tables = {}
        for table in account_tables(state, now):
            encoded = tables[table.layout] = _Encoded.of(table, known.get(table.layout))
            for (family, _), piece in zip(table.layout.samples, encoded.pieces, strict=True):
                if piece:
                    parts[family].append(piece)
        until = state.next_expiry(now)
        return cls(state, math.inf if until is None else until, tuple(map(tuple, parts)), tables)


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One table encoded column by column: a column is one family's samples of the table."""

    labels: list[tuple[str, ...]]  # per row
    prefixes: list[list[str]]  # per column, per row: "name{label="value",...} "
    columns: list[tuple[float | None, ...]]  # per column, per row: the values
    pieces: list[bytes]  # per column: its sample lines, each ending in a newline

    @classmethod
    def of(cls, table: Table, known: _Encoded | None) -> _Encoded:
        """Encode ``table``; a column equal to ``known``'s (same rows, same values) is reused.

        Equal means equal and, for zeros, of the same sign: ``-0.0 == 0.0`` but they
        are written differently.
        """
        layout, labels, rows = table
        width = len(layout.samples)
        columns: list[tuple[float | None, ...]] = (list(zip(*rows, strict=True)) if rows
                                                    else [()] * width)
        if known is not None and known.labels == labels:
            prefixes, reusable = known.prefixes, known
        else:
            prefixes = _prefixes(layout, labels, known)
            reusable = None
        pieces = []
        for index, column in enumerate(columns):
            if reusable is not None and _same(column, reusable.columns[index]):
                pieces.append(reusable.pieces[index])
            else:
                pieces.append(_column(prefixes[index], column))
        return cls(labels, prefixes, columns, pieces)


def _prefixes(layout: Layout, labels: list[tuple[str, ...]],
              known: _Encoded | None) -> list[list[str]]:
    """Per column, per row: the sample's ``name{labels} ``; rows ``known`` had are reused."""
    previous = dict(zip(known.labels, zip(*known.prefixes, strict=True), strict=True)) if (
        known is not None and known.labels) else {}
    rows = [previous.get(row) or _series(layout, row) for row in labels]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [
        [] for _ in layout.samples]


def _same(column: tuple[float | None, ...], old: tuple[float | None, ...]) -> bool:
    return column == old and (0.0 not in column or all(
        math.copysign(1.0, new) == math.copysign(1.0, was)  # type: ignore[arg-type]
        for new, was in zip(column, old, strict=True) if new == 0.0))


def _column(prefixes: list[str], column: tuple[float | None, ...]) -> bytes:
    """The sample lines of a column, values as ``floatToGoString`` writes them.

    For finite floats that is their ``repr``, with Go's exponent from 1e6 up:
    written without Python code per sample except for those from 1e6 up.
    """
    if not column:
        return b""
    if None not in column:
        values = list(map(float, column))  # type: ignore[arg-type]  # no None in it
        total = sum(values)
        if total - total == 0:  # all finite (an infinity or NaN makes the sum NaN or infinite)
            texts = list(map(repr, values))
            if max(values) >= 1e6:
                for index in compress(range(len(values)), map(ge, values, repeat(1e6))):
                    texts[index] = _go_exponent(texts[index])
            return ("\n".join(map(str.__add__, prefixes, texts)) + "\n").encode()
    lines = [prefix + floatToGoString(value)
             for prefix, value in zip(prefixes, column, strict=True) if value is not None]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _go_exponent(text: str) -> str:
    """``floatToGoString`` of a finite float from 1e6 up, from its ``repr``: Go switches to
    an exponent from 1e6 (``1.234567e+06``), Python's repr from 1e16 only."""
    dot = text.find(".")
    if dot > 6:
        return f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.") + f"e+{dot - 1:02d}"
    return text


def _series(layout: Layout, labels: tuple[str, ...]) -> tuple[str, ...]:
    """Per column of a row: ``name{label="value",...} ``.

    Labels are sorted by name and values escaped (backslash, newline, double
    quote), as prometheus_client writes them in both formats.
    """
    pairs = sorted(zip(layout.labels, labels, strict=True))
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return tuple(f"{sample}{{{text}}} " for _, sample in layout.samples)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


# ---------------------------------------------------------------- gzip


class _Deflated(NamedTuple):
    """Raw deflate blocks of ``size`` bytes with CRC-32 ``crc``, ending on a byte boundary
    and not final, so more blocks may follow in the same gzip member."""

    data: bytes
    crc: int
    size: int


def _deflate(body: bytes) -> _Deflated:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _Deflated(compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH),
                     zlib.crc32(body), len(body))


def _gzip(head: _Deflated, tail: bytes) -> bytes:
    """One gzip member of ``head``'s data followed by ``tail``, compressed on its own."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    end = compressor.compress(tail) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(tail, head.crc), (head.size + len(tail)) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, head.data, end, trailer))

