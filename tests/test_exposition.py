"""The exposition as Prometheus and people read it: promtool-clean, both formats, gzip, the
exporter's own process metrics."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
from dataclasses import replace

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter import __version__
from exporter.app import run_exporter
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Exposition
from exporter.fields import POSITION_DETAIL_FIELDS, POSITION_FIELDS, TOTAL_FIELDS
from exporter.http import MetricsServer
from exporter.simulator import Simulator
from exporter.snapshot import AccountSnapshot, Position, PositionDetail, PositionDetails
from exporter.state import AccountState
from tests.support import (
    Samples,
    fetch,
    parse_metrics,
    require_tool,
    scrape,
    scrape_when_up,
    sim_config,
)

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_virtual_memory_bytes", "process_start_time_seconds",
                   "process_open_fds", "process_max_fds"}


def promtool_check(body: bytes) -> tuple[int, list[str]]:
    checked = subprocess.run([require_tool("promtool"), "check", "metrics"], input=body,
                             capture_output=True, timeout=30, check=False)
    return checked.returncode, (checked.stdout + checked.stderr).decode().splitlines()


def assert_promtool_clean(text: bytes, openmetrics: bytes) -> None:
    """promtool lints the text format; it has no OpenMetrics parser, so on OpenMetrics its
    only complaint may be that each counter's ``_total`` series has no HELP (OpenMetrics
    names the family without ``_total``), for the counters that have samples."""
    assert promtool_check(text) == (0, [])
    counters = sorted(f"{family.name}_total no help text"
                      for family in parse_om(openmetrics.decode())
                      if family.type == "counter" and family.samples)
    returncode, problems = promtool_check(openmetrics)
    assert sorted(problems) == counters and returncode == (3 if counters else 0), problems


def without_process(samples: Samples) -> Samples:
    """The samples of one scrape that must equal another's: process metrics change."""
    return {key: value for key, value in samples.items() if not key[0].startswith("process_")}


async def test_promtool_check_metrics_is_silent(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url
        await scrape_when_up(url)
        _, _, body = await asyncio.to_thread(fetch, url + "/metrics")
        _, _, om = await asyncio.to_thread(fetch, url + "/metrics", OPENMETRICS)
    assert_promtool_clean(body, om)
    # every family has HELP text
    families = {line.split()[2] for line in body.decode().splitlines()
                if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in body.decode().splitlines()
             if line.startswith("# HELP") and len(line.split()) > 3}
    assert families == helps


def tricky_state(name: str, positions: int = 3) -> AccountState:
    """Label values with Unicode, quotes, backslashes and newlines; values of every form."""
    symbols = ["币安人生USDT", 'quo"te', "back\\slash", "new\nline", "BTCUSDT"]
    rows = [Position(f"{symbols[index % len(symbols)]}{index}", "LONG",
                     (1e6 + index, -0.0, 0.0, 1.5e16, -1234567.0, 1e-5, float(index)), 1.7e9)
            for index in range(positions)]
    details = [PositionDetail(row.symbol, row.side, (2.5,) * len(POSITION_DETAIL_FIELDS),
                              index % 5, "BNFCR" if index % 2 else "USDT", None)
               for index, row in enumerate(rows)]
    assert len(rows[0].amounts) == len(POSITION_FIELDS)
    return replace(AccountState.initial(name, (0.1, 1.0)),
                   snapshot=AccountSnapshot((123.456,) * len(TOTAL_FIELDS), (), tuple(rows), 1.0),
                   expires_at=10**9, details=PositionDetails(tuple(details), 1.0),
                   details_expires_at=10**9, up=True, errors={"auth": 2})


def test_promtool_accepts_unicode_and_escaped_label_values() -> None:
    exposition = Exposition(__version__)
    for name in ("plain", "账户 \"二\"", "back\\slash"):
        exposition.publish(tricky_state(name))
    page = exposition.render_now()
    assert "币安人生USDT".encode() in page.text and b'quo\\"te' in page.text
    assert_promtool_clean(page.text, page.openmetrics)


async def test_openmetrics_and_gzip_negotiation(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url + "/metrics"
        await scrape_when_up(running.server.url)
        status, headers, text = await asyncio.to_thread(fetch, url)
        assert status == 200 and headers["Content-Type"] == TEXT_CONTENT_TYPE
        _, headers, om = await asyncio.to_thread(fetch, url, OPENMETRICS)
        assert headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        _, headers, zipped = await asyncio.to_thread(fetch, url, {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        samples = await scrape(running.server.url)
    text_samples = parse_metrics(text.decode())
    assert without_process(parse_metrics(gzip.decompress(zipped).decode())) == without_process(
        text_samples)
    assert om.endswith(b"# EOF\n")
    om_families = {family.name for family in parse_om(om.decode())}
    assert "binance_futures_request_errors" in om_families  # counters lose _total in OM
    assert without_process(text_samples) == without_process(samples)


async def test_own_process_metrics_are_served_in_both_formats(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url + "/metrics"
        await scrape_when_up(running.server.url)
        _, _, text = await asyncio.to_thread(fetch, url)
        _, _, om = await asyncio.to_thread(fetch, url, OPENMETRICS)
    assert {name for name, _ in parse_metrics(text.decode())} >= PROCESS_METRICS
    families = list(parse_om(om.decode()))  # the parser checks the order up to # EOF
    om_samples = {sample.name for family in families for sample in family.samples}
    assert om_samples >= PROCESS_METRICS
    assert families[-1].name.startswith("process_")  # last, after the page, before # EOF
    assert parse_metrics(text.decode())[("process_resident_memory_bytes", frozenset())] > 1e6


def fixed_own_metrics() -> list[Metric]:
    return [GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=7)]


async def test_curl_reads_the_whole_gzip_body() -> None:
    """The page's deflate blocks and the own metrics' form one gzip member: curl, which
    stops after the first member, reads it all."""
    curl = require_tool("curl")
    exposition = Exposition(__version__, own_metrics=fixed_own_metrics)
    exposition.publish(tricky_state("big", positions=400))
    server = MetricsServer("127.0.0.1", 0, exposition.body)
    await server.start()
    try:
        url = server.url + "/metrics"
        _, headers, zipped = await asyncio.to_thread(fetch, url, {"Accept-Encoding": "gzip"})
        curled = await asyncio.create_subprocess_exec(
            curl, "--silent", "--show-error", "--compressed", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await curled.communicate()
    finally:
        await server.stop()
    assert headers["Content-Encoding"] == "gzip" and curled.returncode == 0, err
    plain = gzip.decompress(zipped)
    assert len(plain) > 300_000 and plain.endswith(b"process_open_fds 7.0\n")
    assert out == plain
