"""The exposition as Prometheus reads it: promtool-clean, both formats, gzip."""

from __future__ import annotations

import asyncio
import gzip
import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter.app import run_exporter
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.simulator import Simulator
from tests.support import (
    fetch,
    parse_metrics,
    require_tool,
    scrape,
    scrape_when_up,
    sim_config,
)


async def test_promtool_check_metrics_is_silent(simulator: Simulator) -> None:
    promtool = require_tool("promtool")
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url
        await scrape_when_up(url)
        _, _, body = await asyncio.to_thread(fetch, url + "/metrics")
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                             timeout=30, check=False)
    assert checked.returncode == 0 and checked.stdout == b"" and checked.stderr == b"", (
        checked.stdout + checked.stderr).decode()
    # every family has HELP text
    families = {line.split()[2] for line in body.decode().splitlines()
                if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in body.decode().splitlines()
             if line.startswith("# HELP") and len(line.split()) > 3}
    assert families == helps


async def test_openmetrics_and_gzip_negotiation(simulator: Simulator) -> None:
    async with run_exporter(sim_config(simulator)) as running:
        url = running.server.url + "/metrics"
        await scrape_when_up(running.server.url)
        status, headers, text = await asyncio.to_thread(fetch, url)
        assert status == 200 and headers["Content-Type"] == TEXT_CONTENT_TYPE
        _, headers, om = await asyncio.to_thread(
            fetch, url, {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        _, headers, zipped = await asyncio.to_thread(fetch, url, {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        samples = await scrape(running.server.url)
    assert gzip.decompress(zipped) == text
    assert om.endswith(b"# EOF\n")
    om_families = {family.name for family in parse_om(om.decode())}
    assert "binance_futures_request_errors" in om_families  # counters lose _total in OM
    assert parse_metrics(text.decode()) == samples

