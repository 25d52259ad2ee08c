"""What /metrics exposes: every metric family, its HELP, type and labels, from account states.

This module decides *what* is shown (the collector idiom of prometheus_client:
families built from the current states); :mod:`exporter.exposition` decides
*how* it is encoded and cached. Families come in a fixed order and list their
samples account by account, so one account's samples can be encoded alone and
spliced into the page (see :class:`exporter.exposition.Exposition`).

Field families are named and described from :mod:`exporter.fields`;
``binance_futures_`` + ``account``/``asset``/``position`` + the Binance field in
snake_case.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.fields import ASSET_FIELDS, POSITION_DETAIL_FIELDS, POSITION_FIELDS, TOTAL_FIELDS
from exporter.snapshot import AccountSnapshot, PositionDetails
from exporter.state import (
    FORCED_ORDER_KINDS,
    REASONS,
    STREAM_ERRORS,
    STREAM_EVENTS,
    AccountState,
)

__all__ = ["PREFIX", "account_families", "build_info", "collect"]

PREFIX = "binance_futures"
_ACCOUNT_METRICS = tuple((f"{PREFIX}_account_{f.metric_suffix}", f.help) for f in TOTAL_FIELDS)
_ASSET_METRICS = tuple((f"{PREFIX}_asset_{f.metric_suffix}", f.help) for f in ASSET_FIELDS)
_POSITION_METRICS = tuple((f"{PREFIX}_position_{f.metric_suffix}", f.help)
                          for f in (*POSITION_FIELDS, *POSITION_DETAIL_FIELDS))
_POSITION_LABELS = ["account", "symbol", "position_side"]
_AMOUNT = [field.key for field in POSITION_FIELDS].index("positionAmt")


def collect(states: Iterable[AccountState], now: float, version: str) -> list[Metric]:
    """The metric families for ``states`` as of ``now`` (monotonic): what one scrape shows."""
    return [*account_families(states, now), build_info(version)]


def account_families(states: Iterable[AccountState], now: float) -> list[Metric]:
    """Every per-account family, in a fixed order, samples ordered by account name."""
    ordered = sorted(states, key=lambda state: state.name)
    return [
        *_account_families([(s.name, s.live_snapshot(now), s.live_details(now))
                            for s in ordered]),
        *_rate_limit_families(ordered),
        *_health_families(ordered),
        *_stream_families(ordered, now),
    ]


def build_info(version: str) -> Metric:
    build_info = GaugeMetricFamily(f"{PREFIX}_exporter_build_info",
                                   "Version of the exporter; always 1.", labels=["version"])
    build_info.add_metric([version], 1)
    return build_info


def _account_families(
    accounts: list[tuple[str, AccountSnapshot | None, PositionDetails | None]],
) -> list[Metric]:
    totals = [GaugeMetricFamily(name, text, labels=["account"])
              for name, text in _ACCOUNT_METRICS]
    assets = [GaugeMetricFamily(name, text, labels=["account", "asset"])
              for name, text in _ASSET_METRICS]
    margin_available = GaugeMetricFamily(
        f"{PREFIX}_asset_margin_available",
        "1 when the asset can be used as margin in multi-assets mode, else 0; absent in "
        "single-asset mode.", labels=["account", "asset"])
    asset_updated = GaugeMetricFamily(
        f"{PREFIX}_asset_update_timestamp_seconds",
        "When Binance last updated the asset balance (Unix time); absent when Binance sends 0.",
        labels=["account", "asset"])
    positions = [GaugeMetricFamily(name, text, labels=_POSITION_LABELS)
                 for name, text in _POSITION_METRICS]
    status_positions, detail_positions = (positions[:len(POSITION_FIELDS)],
                                          positions[len(POSITION_FIELDS):])
    adl = GaugeMetricFamily(
        f"{PREFIX}_position_adl_quantile",
        "Auto-deleveraging queue quantile, 0 (last in line) to 4 (first).",
        labels=_POSITION_LABELS)
    info = GaugeMetricFamily(
        f"{PREFIX}_position_info", "The asset that margins the position (USDT, USDC, BNFCR...); "
        "always 1.", labels=[*_POSITION_LABELS, "margin_asset"])
    position_updated = GaugeMetricFamily(
        f"{PREFIX}_position_update_timestamp_seconds",
        "When Binance last updated the position (Unix time); absent when Binance sends 0.",
        labels=_POSITION_LABELS)
    for name, snapshot, details in accounts:
        if snapshot is not None:
            for family, value in zip(totals, snapshot.totals, strict=True):
                family.add_metric([name], value)
            for asset in snapshot.assets:
                labels = [name, asset.asset]
                _add_row(assets, labels, asset.amounts)
                if asset.margin_available is not None:
                    margin_available.add_metric(labels, 1.0 if asset.margin_available else 0.0)
                if asset.update_time is not None:
                    asset_updated.add_metric(labels, asset.update_time)
            for position in snapshot.positions:
                labels = [name, position.symbol, position.side]
                _add_row(status_positions, labels, position.amounts)
                if position.update_time is not None:
                    position_updated.add_metric(labels, position.update_time)
        listed = {(p.symbol, p.side) for p in snapshot.positions} if snapshot else set()
        for detail in details.positions if details is not None else ():
            labels = [name, detail.symbol, detail.side]
            if (detail.symbol, detail.side) not in listed and detail.position_amt is not None:
                # A row only the details answer has: its amount, so that it can be read.
                status_positions[_AMOUNT].add_metric(labels, detail.position_amt)
            _add_row(detail_positions, labels, detail.amounts)
            if detail.adl_quantile is not None:
                adl.add_metric(labels, detail.adl_quantile)
            if detail.margin_asset is not None:
                info.add_metric([*labels, detail.margin_asset], 1.0)
    return [*totals, *assets, margin_available, asset_updated, *positions, adl, info,
            position_updated]


def _add_row(families: list[GaugeMetricFamily], labels: list[str],
             values: tuple[float | None, ...]) -> None:
    for family, value in zip(families, values, strict=True):
        if value is not None:
            family.add_metric(labels, value)


def _rate_limit_families(states: list[AccountState]) -> list[Metric]:
    labels = ["account", "rate_limit_type", "interval", "interval_num"]
    used = GaugeMetricFamily(f"{PREFIX}_rate_limit_used",
                             "Usage Binance reported with the last answer (per IP, shared "
                             "with REST).", labels=labels)
    limit = GaugeMetricFamily(f"{PREFIX}_rate_limit_max",
                              "Limit Binance reported with the last answer.", labels=labels)
    for state in states:
        for rate_limit in state.rate_limits:
            label_values = [state.name, rate_limit.rate_limit_type, rate_limit.interval,
                            str(rate_limit.interval_num)]
            used.add_metric(label_values, rate_limit.used)
            limit.add_metric(label_values, rate_limit.limit)
    return [used, limit]


def _health_families(states: list[AccountState]) -> list[Metric]:
    account = ["account"]
    up = GaugeMetricFamily(f"{PREFIX}_up", "1 when the last poll of the account succeeded.",
                           labels=account)
    last_success = GaugeMetricFamily(
        f"{PREFIX}_last_success_timestamp_seconds",
        "When the last successful poll's answer arrived (Unix time); absent before the first.",
        labels=account)
    durations = HistogramMetricFamily(
        f"{PREFIX}_request_duration_seconds",
        "Round trip of successful v2/account.status and v2/account.position requests.",
        labels=account)
    errors = CounterMetricFamily(
        f"{PREFIX}_request_errors",
        "Failed requests by reason: " + ", ".join(REASONS) + ".",
        labels=["account", "reason"])
    connections = CounterMetricFamily(f"{PREFIX}_connections",
                                      "WebSocket API connections opened.", labels=account)
    backoff = GaugeMetricFamily(
        f"{PREFIX}_backoff_until_timestamp_seconds",
        "Until when no request is sent after a rate limit, ban or auth error (Unix time; "
        "0 when not backing off).", labels=account)
    rows_skipped = CounterMetricFamily(
        f"{PREFIX}_answer_rows_skipped",
        "Rows of Binance's answers left out because they could not be read, by kind (asset, "
        "position, rate_limit) and reason (malformed, bad_identity, duplicate); the rest of "
        "each answer is exported.", labels=["account", "kind", "reason"])
    fields_skipped = CounterMetricFamily(
        f"{PREFIX}_answer_fields_skipped",
        "Fields of Binance's answers left out (their series is absent) because they could "
        "not be read, by kind of row and Binance field name.", labels=["account", "kind", "field"])
    clock_offset = GaugeMetricFamily(
        f"{PREFIX}_clock_offset_seconds",
        "Binance server time minus local time, as last measured.", labels=account)
    for state in states:
        name = [state.name]
        up.add_metric(name, 1.0 if state.up else 0.0)
        if state.last_success is not None:
            last_success.add_metric(name, state.last_success)
        histogram = state.durations
        buckets = [(_le(bound), count) for bound, count in
                   zip(histogram.bounds, histogram.cumulative_counts, strict=False)]
        buckets.append(("+Inf", histogram.cumulative_counts[-1]))
        durations.add_metric(name, buckets, histogram.total)
        for reason in REASONS:
            errors.add_metric([state.name, reason], state.errors.get(reason, 0))
        connections.add_metric(name, state.connections)
        backoff.add_metric(name, state.backoff_until)
        clock_offset.add_metric(name, state.clock_offset)
        for (kind, reason), count in sorted(state.rows_skipped.items()):
            rows_skipped.add_metric([state.name, kind, reason], count)
        for (kind, field), count in sorted(state.fields_skipped.items()):
            fields_skipped.add_metric([state.name, kind, field], count)
    return [up, last_success, durations, errors, connections, backoff, clock_offset,
            rows_skipped, fields_skipped]


def _stream_families(states: list[AccountState], now: float) -> list[Metric]:
    """The user data stream: absent for an account whose stream is off."""
    account = ["account"]
    up = GaugeMetricFamily(
        f"{PREFIX}_user_stream_up",
        "1 while the user data stream is connected with a listen key believed alive (a quiet "
        "account's stream is up), else 0; absent when the stream is off.", labels=account)
    events = CounterMetricFamily(
        f"{PREFIX}_user_stream_events",
        "Events received on the user data stream, by Binance's event type (e); types outside "
        "the known list, and frames that cannot be read, count as other.",
        labels=["account", "event"])
    last_event = GaugeMetricFamily(
        f"{PREFIX}_user_stream_last_event_timestamp_seconds",
        "Binance's own time (E) of the latest event on the user data stream (Unix time); absent "
        "before the first.", labels=account)
    connections = CounterMetricFamily(
        f"{PREFIX}_user_stream_connections",
        "User data stream connections opened.", labels=account)
    errors = CounterMetricFamily(
        f"{PREFIX}_user_stream_errors",
        "Unplanned ends of a user data stream session, by reason: " + ", ".join(STREAM_ERRORS)
        + ". A new listen key and connection follow each.", labels=["account", "reason"])
    forced = CounterMetricFamily(
        f"{PREFIX}_forced_orders",
        "Forced orders Binance filled, each counted once when FILLED, by kind from the client "
        "order id: " + ", ".join(FORCED_ORDER_KINDS) + ".",
        labels=["account", "symbol", "kind"])
    margin_calls = GaugeMetricFamily(
        f"{PREFIX}_margin_call_maint_margin",
        "Maintenance margin Binance reported with the position's last margin call, in its "
        "margin asset; shown for stale_after after the call.", labels=_POSITION_LABELS)
    for state in states:
        stream = state.stream
        if stream is None:
            continue
        name = [state.name]
        up.add_metric(name, 1.0 if stream.up else 0.0)
        for event in STREAM_EVENTS:
            events.add_metric([state.name, event], stream.events.get(event, 0))
        if stream.last_event_time is not None:
            last_event.add_metric(name, stream.last_event_time)
        connections.add_metric(name, stream.connections)
        for reason in STREAM_ERRORS:
            errors.add_metric([state.name, reason], stream.errors.get(reason, 0))
        for (symbol, kind), count in sorted(stream.forced_orders.items()):
            forced.add_metric([state.name, symbol, kind], count)
        for (symbol, side), maint_margin in sorted(stream.live_margin_calls(now).items()):
            margin_calls.add_metric([state.name, symbol, side], maint_margin)
    return [up, events, last_event, connections, errors, forced, margin_calls]


def _le(bound: float) -> str:
    return repr(float(bound))
