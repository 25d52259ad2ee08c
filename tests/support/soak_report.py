"""The soak test's report: figures collected during the run, printed as a plain-text table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class KindStats:
    """Faults of one kind: how many were injected, recovered, and how fast."""

    injected: int = 0
    recoveries: list[float] = field(default_factory=list)


@dataclass
class SoakReport:
    """Everything the soak prints; ``None`` marks a figure that was never measured."""

    seed: int
    soak_seconds: float
    duration: float = 0.0
    polls_simulator: int = 0
    polls_exporter: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    unrecovered: list[str] = field(default_factory=list)
    down_transitions: dict[str, int] = field(default_factory=dict)
    unexplained_downs: list[str] = field(default_factory=list)
    rss_start_kib: int | None = None
    rss_end_kib: int | None = None
    rss_max_kib: int | None = None
    fds_start: int | None = None
    fds_end: int | None = None
    fds_max: int | None = None
    connections_exporter: int = 0
    connections_simulator: int = 0
    final_up: dict[str, float | None] = field(default_factory=dict)
    stream_connections: int = 0
    stream_errors: dict[str, int] = field(default_factory=dict)
    stream_events: int = 0
    final_stream_up: dict[str, float | None] = field(default_factory=dict)
    exit_code: int | None = None
    exit_seconds: float | None = None

    def kind(self, name: str) -> KindStats:
        return self.kinds.setdefault(name, KindStats())

    @property
    def recoveries(self) -> list[float]:
        return [seconds for stats in self.kinds.values() for seconds in stats.recoveries]

    def render(self) -> str:
        return "\n".join([
            f"soak report (seed {self.seed}, SOAK_SECONDS={self.soak_seconds:g})",
            "",
            *_table(("figure", "value"), self._summary_rows()),
            "",
            *_table(("fault kind", "injected", "recovered", "max s", "p95 s"), self._kind_rows()),
            "",
        ])

    def _summary_rows(self) -> list[tuple[str, ...]]:
        errors = ", ".join(f"{reason} {count}" for reason, count in sorted(self.errors.items())
                           if count) or "none"
        downs = ", ".join(f"{name} {count}" for name, count in sorted(
            self.down_transitions.items()))
        recoveries = self.recoveries
        return [
            ("duration (faults and quiet periods)", f"{self.duration:.1f} s"),
            ("polls seen by the simulator", str(self.polls_simulator)),
            ("polls seen by the exporter (ok + errors)",
             f"{self.polls_exporter} ({self.successes} ok)"),
            ("failures by reason", errors),
            ("faults injected", str(sum(k.injected for k in self.kinds.values()))),
            ("recoveries", f"{len(recoveries)} ({len(self.unrecovered)} never recovered)"),
            ("recovery time max / p95", f"{_seconds(max(recoveries, default=math.nan))} / "
                                        f"{_seconds(percentile(recoveries, 95))}"),
            ("up 1->0 transitions per account", downs),
            ("down without an open fault", str(len(self.unexplained_downs))),
            ("RSS start (after warm-up) / end / max",
             f"{_mib(self.rss_start_kib)} / {_mib(self.rss_end_kib)} / {_mib(self.rss_max_kib)}"),
            ("open fds start / end / max", f"{self.fds_start} / {self.fds_end} / {self.fds_max}"),
            ("connections opened (exporter / simulator)",
             f"{self.connections_exporter} / {self.connections_simulator}"),
            ("up at the end", ", ".join(f"{name}={value}" for name, value in
                                        sorted(self.final_up.items()))),
            ("user data stream: connections / events",
             f"{self.stream_connections} / {self.stream_events}"),
            ("user data stream: session ends by reason",
             ", ".join(f"{reason} {count}" for reason, count in sorted(
                 self.stream_errors.items()) if count) or "none"),
            ("user data stream up at the end", ", ".join(
                f"{name}={value}" for name, value in sorted(self.final_stream_up.items()))),
            ("SIGTERM", f"exit {self.exit_code} after {_seconds(self.exit_seconds)}"),
        ]

    def _kind_rows(self) -> list[tuple[str, ...]]:
        return [(name, str(stats.injected), str(len(stats.recoveries)),
                 _seconds(max(stats.recoveries, default=math.nan), unit=""),
                 _seconds(percentile(stats.recoveries, 95), unit=""))
                for name, stats in sorted(self.kinds.items())]


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    rows = [header, *rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(
            row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return [line(header), rule, *(line(row) for row in rows[1:])]


def _seconds(value: float | None, unit: str = " s") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}{unit}"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"
