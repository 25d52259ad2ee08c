"""The served bodies against prometheus_client's own encoders, through any history.

Hypothesis builds account states of every shape (Unicode and escaped label
values, missing fields, values on both sides of ``floatToGoString``'s
special cases), publishes them in sequences with time passing (snapshots go
stale), and scrapes every format in between. Each body must parse
(prometheus_client's parsers, gzip bodies gunzipped) to exactly the samples
of a reference render of the same states at the same moment, and equal it
byte for byte.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.clock import Clock
from exporter.exposition import Exposition, Page, render_page
from exporter.fields import ASSET_FIELDS, POSITION_DETAIL_FIELDS, POSITION_FIELDS, TOTAL_FIELDS
from exporter.snapshot import (
    AccountSnapshot,
    AssetBalance,
    Position,
    PositionDetail,
    PositionDetails,
    RateLimit,
)
from exporter.state import REASONS, AccountState, RequestDurations

VERSION = "9.9.9-test"
FORMATS = ((False, False), (False, True), (True, False), (True, True))

# Label values: real Binance symbols, Unicode ones, and everything the escaping rules touch.
SPECIAL_LABELS = ["BTCUSDT", "币安人生USDT", 'quo"te', "back\\slash", "new\nline", "\\n", "a,b=c}",
                  "LONG", "BOTH", " ", "ÄÖÜ", "🚀"]
labels = st.sampled_from(SPECIAL_LABELS) | st.text(
    st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
# Values around floatToGoString's cases: repr below 1e6, Go-style exponents from 1e6,
# Python's own exponents from 1e16 and below 1e-4, signed zeros, non-finite ones.
SPECIAL_VALUES = [0.0, -0.0, 1.0, 1e6, 999999.9999999999, 1000000.5, 1234567.0, 1e16, 1.5e17,
                  -1e6, -1234567.0, -1e20, 1e-5, 1.7e9, 1_800_000_123.456, math.inf, -math.inf,
                  math.nan]
values = (st.sampled_from(SPECIAL_VALUES) | st.floats(allow_nan=True, allow_infinity=True)
          | st.integers(-10**7, 10**12))
maybe = st.none() | values


def amounts(count: int) -> st.SearchStrategy[tuple[float | None, ...]]:
    return st.tuples(*[maybe] * count)


@st.composite
def snapshots(draw: st.DrawFn) -> AccountSnapshot:
    assets = draw(st.dictionaries(labels, st.tuples(
        amounts(len(ASSET_FIELDS)), st.none() | st.booleans(), st.none() | values), max_size=3))
    positions = draw(st.dictionaries(st.tuples(labels, labels), st.tuples(
        amounts(len(POSITION_FIELDS)), st.none() | values), max_size=4))
    return AccountSnapshot(
        totals=draw(st.tuples(*[values] * len(TOTAL_FIELDS))),
        assets=tuple(AssetBalance(name, *row) for name, row in assets.items()),
        positions=tuple(Position(symbol, side, *row) for (symbol, side), row in positions.items()),
        received_at=draw(values))


@st.composite
def details(draw: st.DrawFn) -> PositionDetails:
    rows = draw(st.dictionaries(st.tuples(labels, labels), st.tuples(
        amounts(len(POSITION_DETAIL_FIELDS)), st.none() | st.integers(0, 4),
        st.none() | labels, maybe), max_size=4))
    return PositionDetails(tuple(PositionDetail(symbol, side, *row)
                                 for (symbol, side), row in rows.items()), draw(values))


@st.composite
def states(draw: st.DrawFn, now: float) -> AccountState:
    """A state of one of three accounts; its answers expire up to 10 s from ``now``."""
    name = draw(st.sampled_from(["acct-a", "币安 \"b\"", "acct\\c"]))
    bounds = draw(st.sampled_from([(0.01, 0.1, 1.0), (0.5,), (1e-3, 2.5, 1e6)]))
    durations = RequestDurations.empty(bounds)
    for seconds in draw(st.lists(st.floats(0, 20), max_size=3)):
        durations = durations.observe(seconds)
    snapshot = draw(st.none() | snapshots())
    position_details = draw(st.none() | details())
    if position_details is not None and snapshot is not None and draw(st.booleans()):
        # a details row for a status row, so the details-only amount is left out for it
        first = snapshot.positions[:1]
        position_details = PositionDetails(tuple(
            PositionDetail(p.symbol, p.side, (1.0,) * len(POSITION_DETAIL_FIELDS), 1, "USDT", 2.0)
            for p in first) + position_details.positions[len(first):],
            position_details.received_at)
    limits = draw(st.dictionaries(st.tuples(labels, labels, st.integers(1, 10**5)),
                                  st.tuples(values, values), max_size=2))
    return AccountState(
        name=name, snapshot=snapshot, expires_at=now + draw(st.floats(0, 10)),
        details=position_details, details_expires_at=now + draw(st.floats(0, 10)),
        rate_limits=tuple(RateLimit(kind, interval, number, limit, used)
                          for (kind, interval, number), (limit, used) in limits.items()),
        up=draw(st.booleans()), last_success=draw(st.none() | values),
        errors=draw(st.dictionaries(st.sampled_from(REASONS), st.integers(0, 10**6))),
        connections=draw(st.integers(0, 10**4)), durations=durations,
        backoff_until=draw(values), clock_offset=draw(values),
        rows_skipped=draw(st.dictionaries(st.tuples(labels, labels), st.integers(0, 99),
                                          max_size=2)),
        fields_skipped=draw(st.dictionaries(st.tuples(labels, labels), st.integers(0, 99),
                                            max_size=2)))


@st.composite
def revised(draw: st.DrawFn, state: AccountState, now: float) -> AccountState:
    """The account's next answer: same rows, values kept, changed, or a zero's sign flipped.

    The encoder reuses a line whose value did not change; this is what tests that.
    """
    def value(old: float | None) -> float | None:
        change = draw(st.sampled_from(["keep", "negate", "new"]))
        if change == "new" or old is None:
            return draw(maybe)
        return -old if change == "negate" else old

    def row(old: tuple[float | None, ...]) -> tuple[float | None, ...]:
        return tuple(value(item) for item in old)

    snapshot = state.snapshot
    if snapshot is not None:
        snapshot = AccountSnapshot(
            row(snapshot.totals),  # type: ignore[arg-type]
            tuple(asset._replace(amounts=row(asset.amounts)) for asset in snapshot.assets),
            tuple(p._replace(amounts=row(p.amounts), update_time=value(p.update_time))
                  for p in snapshot.positions), snapshot.received_at)
    return replace(state, snapshot=snapshot, expires_at=now + draw(st.floats(0, 10)),
                   clock_offset=draw(st.sampled_from([state.clock_offset, -state.clock_offset])),
                   up=draw(st.booleans()))


class ManualClock(Clock):
    """Monotonic time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class OwnMetrics:
    """Stand-in for the process collector: every reading differs, and the last is kept."""

    readings: int = 0
    last: list[Metric] = field(default_factory=list)

    def __call__(self) -> list[Metric]:
        self.readings += 1
        self.last = [
            CounterMetricFamily("process_cpu_seconds", "CPU time.", value=0.25 * self.readings),
            GaugeMetricFamily("process_open_fds", "Open fds.", value=self.readings),
        ]
        return self.last


Step = tuple[str, object]
steps = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.none()),  # the state is drawn when published
    st.tuples(st.just("revise"), st.none()),  # a published state's next answer
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.05, 0.5, 3.0, 11.0])),
    st.tuples(st.just("render_now"), st.sampled_from(FORMATS)),
    st.tuples(st.just("page"), st.sampled_from(FORMATS)),
), min_size=1, max_size=12)


def _name(state: AccountState) -> str:
    return state.name


def samples(body: bytes, openmetrics: bool) -> list[tuple[str, str, str, tuple[object, ...]]]:
    """Every family and sample as parsed, NaN made comparable."""
    parse = parse_om if openmetrics else parse_text
    return [(family.name, family.type, family.documentation,
             (sample.name, sorted(sample.labels.items()),
              "NaN" if math.isnan(sample.value) else sample.value))
            for family in parse(body.decode()) for sample in family.samples]


def gunzip_single_member(body: bytes) -> bytes:
    """The content of a gzip body that must be exactly one gzip member (curl reads only one)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    content = decompressor.decompress(body)
    assert decompressor.eof and decompressor.unused_data == b""
    assert gzip.decompress(body) == content
    return content


def check(served: bytes, reference: Page, openmetrics: bool, gzipped: bool) -> None:
    expected = reference.body(openmetrics, False)
    plain = gunzip_single_member(served) if gzipped else served
    assert samples(plain, openmetrics) == samples(expected, openmetrics)
    assert plain == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.data())
def test_served_bodies_equal_the_reference_through_any_history(history: list[Step],
                                                               data: st.DataObject) -> None:
    clock, own = ManualClock(), OwnMetrics()
    exposition = Exposition(VERSION, clock=clock, own_metrics=own)
    current: dict[str, AccountState] = {}
    for action, argument in history:
        if action == "publish":
            state = data.draw(states(clock.now))
        elif action == "revise" and current:
            earlier = data.draw(st.sampled_from(sorted(current.values(), key=_name)))
            state = data.draw(revised(earlier, clock.now))
        elif action == "advance":
            assert isinstance(argument, float)
            clock.now += argument
            continue
        elif action in ("render_now", "page"):
            openmetrics, gzipped = FORMATS[FORMATS.index(argument)]  # type: ignore[arg-type]
            page = exposition.page() if action == "page" else exposition.render_now()
            check(page.body(openmetrics, gzipped),
                  render_page(current.values(), clock.now, VERSION, own.last),
                  openmetrics, gzipped)
            continue
        else:
            continue
        current[state.name] = state
        exposition.publish(state)


def test_a_zero_that_changes_sign_is_written_again() -> None:
    """``-0.0 == 0.0``, but floatToGoString writes them differently: no line may be reused."""
    clock = ManualClock()
    exposition = Exposition(VERSION, clock=clock, own_metrics=list)
    zeros = AccountSnapshot((0.0,) * len(TOTAL_FIELDS), (), (), 0.0)
    state = replace(AccountState.initial("a", (0.1,)), snapshot=zeros, expires_at=clock.now + 9)
    for sign in (1.0, -1.0, 1.0):
        state = replace(state, snapshot=replace(zeros, totals=(sign * 0.0,) * len(TOTAL_FIELDS)),
                        clock_offset=sign * 0.0)
        exposition.publish(state)
        for openmetrics, gzipped in FORMATS:
            check(exposition.render_now().body(openmetrics, gzipped),
                  render_page([state], clock.now, VERSION), openmetrics, gzipped)


def test_reference_families_are_unchanged_by_the_published_order() -> None:
    """Accounts are listed by name whatever the order they were published in."""
    clock = ManualClock()
    drawn = [AccountState.initial(name, (0.1,)) for name in ("b", "a", "c")]
    first = Exposition(VERSION, clock=clock, own_metrics=list)
    second = Exposition(VERSION, clock=clock, own_metrics=list)
    for state in drawn:
        first.publish(state)
    for state in reversed(drawn):
        second.publish(state)
    assert first.render_now() == second.render_now() == render_page(drawn, clock.now, VERSION)

