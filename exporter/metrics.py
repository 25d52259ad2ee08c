"""What /metrics exposes: every metric family, its HELP, type and labels, from account states.

This module decides *what* is shown; :mod:`exporter.exposition` decides *how*
it is encoded and cached. Families come in a fixed order (:data:`FAMILIES`)
and list their samples account by account, so each account's samples can be
encoded alone and spliced into the page.

An account's samples are given as *tables* (:func:`account_tables`): rows of
samples placed by a :class:`Layout` (e.g. the positions table has a row per
position, holding its seven amounts and its update time, all labelled account,
symbol and position side). The encoder works a table column by column (one
column is one family's samples of the account) and turns a row's labels into
text once; :func:`collect` builds prometheus_client's own families from the
same tables, the reference that the encoder's output is tested against.

Field families are named and described from :mod:`exporter.fields`;
``binance_futures_`` + ``account``/``asset``/``position`` + the Binance field in
snake_case.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from exporter.fields import (
    ASSET_FIELDS,
    POSITION_DETAIL_FIELDS,
    POSITION_FIELDS,
    TOTAL_FIELDS,
    Field,
)
from exporter.state import (
    FORCED_ORDER_KINDS,
    REASONS,
    STREAM_ERRORS,
    STREAM_EVENTS,
    AccountState,
)

__all__ = [
    "BUILD_INFO",
    "FAMILIES",
    "PREFIX",
    "Family",
    "Layout",
    "Table",
    "account_tables",
    "build_info",
    "collect",
]

PREFIX = "binance_futures"


class Family(NamedTuple):
    """One metric family as prometheus_client names it.

    A counter's samples are named ``name_total``; a histogram's ``name_bucket``,
    ``name_count`` and ``name_sum``.
    """

    name: str
    type: str  # gauge, counter or histogram
    help: str


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a cache key
class Layout:
    """Where a table's values go: its label names, and per column a family and sample name."""

    labels: tuple[str, ...]
    samples: tuple[tuple[int, str], ...]  # (index in FAMILIES, sample name), one per value


class Table(NamedTuple):
    """Rows of samples placed by one layout: per row its label values (in ``layout.labels``
    order) and its values (in ``layout.samples`` order; None leaves that sample out)."""

    layout: Layout
    labels: list[tuple[str, ...]]
    rows: list[tuple[float | None, ...]]


# A new family: a _family() call below, in page order; a _layout() that places its
# values (or a place in an existing layout with the same labels); its rows in
# account_tables(), one table per layout. A new Binance field is one line in
# exporter.fields: its family, layout column and parsed value follow from there.
_families: list[Family] = []


def _family(name: str, kind: str, text: str) -> int:
    """Register ``binance_futures_<name>``; returns its index in FAMILIES."""
    _families.append(Family(f"{PREFIX}_{name}", kind, text))
    return len(_families) - 1


def _gauges(prefix: str, fields: Sequence[Field]) -> list[int]:
    return [_family(f"{prefix}_{field.metric_suffix}", "gauge", field.help) for field in fields]


def _layout(labels: tuple[str, ...], families: Sequence[int],
            suffix: str = "") -> Layout:
    return Layout(labels, tuple((index, _families[index].name + suffix) for index in families))


_ACCOUNT = ("account",)
_ASSET = ("account", "asset")
_POSITION = ("account", "symbol", "position_side")

# Page order: account totals, assets, positions, rate limits, health, user data stream.
_totals = _gauges("account", TOTAL_FIELDS)
_multi_assets = _family(
    "account_multi_assets_mode", "gauge",
    "1 in multi-assets margin mode (totals in USD over every asset), 0 in single-asset mode "
    "(totals count USDT only); read from v1 account.status at start and every "
    "clock_sync_interval, absent until read.")
_asset_amounts = _gauges("asset", ASSET_FIELDS)
_margin_available = _family(
    "asset_margin_available", "gauge",
    "1 when the asset can be used as margin in multi-assets mode, else 0; absent in "
    "single-asset mode.")
_asset_updated = _family(
    "asset_update_timestamp_seconds", "gauge",
    "When Binance last updated the asset balance (Unix time); absent when Binance sends 0.")
_position_amounts = _gauges("position", POSITION_FIELDS)
_detail_amounts = _gauges("position", POSITION_DETAIL_FIELDS)
_adl = _family("position_adl_quantile", "gauge",
               "Auto-deleveraging queue quantile, 0 (last in line) to 4 (first).")
_info = _family("position_info", "gauge",
                "The asset that margins the position (USDT, USDC, BNFCR...); always 1.")
_position_updated = _family(
    "position_update_timestamp_seconds", "gauge",
    "When Binance last updated the position (Unix time); absent when Binance sends 0.")
_rate_limit_used = _family("rate_limit_used", "gauge",
                           "Usage Binance reported with the last answer (per IP, shared with "
                           "REST).")
_rate_limit_max = _family("rate_limit_max", "gauge",
                          "Limit Binance reported with the last answer.")
_up = _family("up", "gauge", "1 when the last poll of the account succeeded.")
_last_success = _family(
    "last_success_timestamp_seconds", "gauge",
    "When the last successful poll's answer arrived (Unix time); absent before the first.")
_durations = _family(
    "request_duration_seconds", "histogram",
    "Round trip of successful v2/account.status and v2/account.position requests.")
_errors = _family("request_errors", "counter",
                  "Failed requests by reason: " + ", ".join(REASONS) + ".")
_connections = _family("connections", "counter", "WebSocket API connections opened.")
_backoff = _family(
    "backoff_until_timestamp_seconds", "gauge",
    "Until when no request is sent after a rate limit, ban or auth error (Unix time; "
    "0 when not backing off).")
_clock_offset = _family("clock_offset_seconds", "gauge",
                        "Binance server time minus local time, as last measured.")
_rows_skipped = _family(
    "answer_rows_skipped", "counter",
    "Rows of Binance's answers left out because they could not be read, by kind (asset, "
    "position, rate_limit) and reason (malformed, bad_identity, duplicate); the rest of "
    "each answer is exported.")
_fields_skipped = _family(
    "answer_fields_skipped", "counter",
    "Fields of Binance's answers left out (their series is absent) because they could "
    "not be read, by kind of row and Binance field name.")
_stream_up = _family(
    "user_stream_up", "gauge",
    "1 while the user data stream is connected with a listen key believed alive (a quiet "
    "account's stream is up), else 0; absent when the stream is off.")
_stream_events = _family(
    "user_stream_events", "counter",
    "Events received on the user data stream, by Binance's event type (e); types outside "
    "the known list, and frames that cannot be read, count as other.")
_stream_last_event = _family(
    "user_stream_last_event_timestamp_seconds", "gauge",
    "Binance's own time (E) of the latest event on the user data stream (Unix time); absent "
    "before the first.")
_stream_connections = _family("user_stream_connections", "counter",
                              "User data stream connections opened.")
_stream_errors = _family(
    "user_stream_errors", "counter",
    "Unplanned ends of a user data stream session, by reason: " + ", ".join(STREAM_ERRORS)
    + ". A new listen key and connection follow each.")
_forced_orders = _family(
    "forced_orders", "counter",
    "Forced orders Binance filled, each counted once when FILLED, by kind from the client "
    "order id: " + ", ".join(FORCED_ORDER_KINDS) + ".")
_margin_calls = _family(
    "margin_call_maint_margin", "gauge",
    "Maintenance margin Binance reported with the position's last margin call, in its "
    "margin asset; shown for stale_after after the call.")

#: Every per-account family, in page order.
FAMILIES: tuple[Family, ...] = tuple(_families)
#: The exporter's own family, after the per-account ones.
BUILD_INFO = Family(f"{PREFIX}_exporter_build_info", "gauge",
                    "Version of the exporter; always 1.")

_TOTALS = _layout(_ACCOUNT, _totals)
_MODE = _layout(_ACCOUNT, [_multi_assets])
_ASSET_ROW = _layout(_ASSET, [*_asset_amounts, _margin_available, _asset_updated])
_POSITION_ROW = _layout(_POSITION, [*_position_amounts, _position_updated])
_AMOUNT = [field.key for field in POSITION_FIELDS].index("positionAmt")
_DETAIL_ONLY_AMOUNT = _layout(_POSITION, [_position_amounts[_AMOUNT]])
_DETAIL_ROW = _layout(_POSITION, [*_detail_amounts, _adl])
_POSITION_INFO = _layout((*_POSITION, "margin_asset"), [_info])
_RATE_LIMIT = _layout(("account", "rate_limit_type", "interval", "interval_num"),
                      [_rate_limit_used, _rate_limit_max])
_HEALTH = _layout(_ACCOUNT, [_up, _last_success, _backoff, _clock_offset])
_BUCKET = _layout(("account", "le"), [_durations], "_bucket")
_COUNT_SUM = Layout(_ACCOUNT, ((_durations, FAMILIES[_durations].name + "_count"),
                               (_durations, FAMILIES[_durations].name + "_sum")))
_ERRORS = _layout(("account", "reason"), [_errors], "_total")
_CONNECTIONS = _layout(_ACCOUNT, [_connections], "_total")
_ROWS_SKIPPED = _layout(("account", "kind", "reason"), [_rows_skipped], "_total")
_FIELDS_SKIPPED = _layout(("account", "kind", "field"), [_fields_skipped], "_total")
_STREAM = Layout(_ACCOUNT, ((_stream_up, FAMILIES[_stream_up].name),
                            (_stream_last_event, FAMILIES[_stream_last_event].name),
                            (_stream_connections, FAMILIES[_stream_connections].name + "_total")))
_STREAM_EVENTS = _layout(("account", "event"), [_stream_events], "_total")
_STREAM_ERRORS = _layout(("account", "reason"), [_stream_errors], "_total")
_FORCED_ORDERS = _layout(("account", "symbol", "kind"), [_forced_orders], "_total")
_MARGIN_CALLS = _layout(_POSITION, [_margin_calls])


def account_tables(state: AccountState, now: float) -> list[Table]:
    """An account's samples as of ``now`` (monotonic): stale answers are left out.

    One table per layout; within each family, samples come in table order, then
    row order.
    """
    name = state.name
    tables: list[Table] = []
    snapshot, details = state.live_snapshot(now), state.live_details(now)
    if snapshot is not None:
        tables.append(Table(_TOTALS, [(name,)], [snapshot.totals]))
    if state.multi_assets is not None:
        tables.append(Table(_MODE, [(name,)], [(1.0 if state.multi_assets else 0.0,)]))
    if snapshot is not None:
        assets = snapshot.assets
        tables.append(Table(_ASSET_ROW, [(name, asset.asset) for asset in assets], [
            (*asset.amounts, None if asset.margin_available is None
             else 1.0 if asset.margin_available else 0.0, asset.update_time)
            for asset in assets]))
        positions = snapshot.positions
        tables.append(Table(_POSITION_ROW, [(name, p.symbol, p.side) for p in positions],
                            [(*p.amounts, p.update_time) for p in positions]))
    if details is not None:
        listed = {(p.symbol, p.side) for p in snapshot.positions} if snapshot else set()
        rows = details.positions
        # A row only the details answer has: its amount, so that it can be read.
        only = [d for d in rows
                if (d.symbol, d.side) not in listed and d.position_amt is not None]
        tables.append(Table(_DETAIL_ONLY_AMOUNT, [(name, d.symbol, d.side) for d in only],
                            [(d.position_amt,) for d in only]))
        tables.append(Table(_DETAIL_ROW, [(name, d.symbol, d.side) for d in rows],
                            [(*d.amounts, d.adl_quantile) for d in rows]))
        margins = [(d, d.margin_asset) for d in rows if d.margin_asset is not None]
        tables.append(Table(_POSITION_INFO,
                            [(name, d.symbol, d.side, asset) for d, asset in margins],
                            [(1.0,)] * len(margins)))
    limits = state.rate_limits
    tables.append(Table(_RATE_LIMIT, [(name, limit.rate_limit_type, limit.interval,
                                       str(limit.interval_num)) for limit in limits],
                        [(limit.used, limit.limit) for limit in limits]))
    tables.append(Table(_HEALTH, [(name,)], [(1.0 if state.up else 0.0, state.last_success,
                                              state.backoff_until, state.clock_offset)]))
    histogram = state.durations
    tables.append(Table(_BUCKET, [(name, bound) for bound in (*map(_le, histogram.bounds),
                                                              "+Inf")],
                        [(count,) for count in histogram.cumulative_counts]))
    tables.append(Table(_COUNT_SUM, [(name,)],
                        [(histogram.cumulative_counts[-1], histogram.total)]))
    tables.append(Table(_ERRORS, [(name, reason) for reason in REASONS],
                        [(state.errors.get(reason, 0),) for reason in REASONS]))
    tables.append(Table(_CONNECTIONS, [(name,)], [(state.connections,)]))
    for layout, counts in ((_ROWS_SKIPPED, state.rows_skipped),
                           (_FIELDS_SKIPPED, state.fields_skipped)):
        ordered = sorted(counts.items())
        tables.append(Table(layout, [(name, *key) for key, _ in ordered],
                            [(count,) for _, count in ordered]))
    stream = state.stream
    if stream is not None:
        tables.append(Table(_STREAM, [(name,)], [(1.0 if stream.up else 0.0,
                                                  stream.last_event_time, stream.connections)]))
        tables.append(Table(_STREAM_EVENTS, [(name, event) for event in STREAM_EVENTS],
                            [(stream.events.get(event, 0),) for event in STREAM_EVENTS]))
        tables.append(Table(_STREAM_ERRORS, [(name, reason) for reason in STREAM_ERRORS],
                            [(stream.errors.get(reason, 0),) for reason in STREAM_ERRORS]))
        forced = sorted(stream.forced_orders.items())
        tables.append(Table(_FORCED_ORDERS, [(name, *key) for key, _ in forced],
                            [(count,) for _, count in forced]))
        calls = sorted(stream.live_margin_calls(now).items())
        tables.append(Table(_MARGIN_CALLS, [(name, *key) for key, _ in calls],
                            [(maint_margin,) for _, maint_margin in calls]))
    return tables


def build_info(version: str) -> Metric:
    """The exporter's version, after the per-account families: the same on every page."""
    info = Metric(BUILD_INFO.name, BUILD_INFO.help, BUILD_INFO.type)
    info.samples.append(Sample(BUILD_INFO.name, {"version": version}, 1.0))
    return info


def collect(states: Iterable[AccountState], now: float, version: str) -> list[Metric]:
    """prometheus_client's families for ``states`` as of ``now``: what one scrape shows.

    Built from the same tables the exposition encodes; encoded by
    prometheus_client, this is the reference rendering.
    """
    families = [Metric(family.name, family.help, family.type) for family in FAMILIES]
    for state in sorted(states, key=lambda state: state.name):
        for layout, labels, rows in account_tables(state, now):
            for row_labels, values in zip(labels, rows, strict=True):
                label_map = dict(zip(layout.labels, row_labels, strict=True))
                for (index, sample), value in zip(layout.samples, values, strict=True):
                    if value is not None:
                        families[index].samples.append(Sample(sample, label_map, value))
    return [*families, build_info(version)]


def _le(bound: float) -> str:
    return repr(float(bound))
