"""A real Prometheus, with the shipped rules, scraping a real ``--demo`` exporter."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import CliProcess, fetch, require_tool, wait_for

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "rules.yml"


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[tuple[str, CliProcess]]:
    """Prometheus on an ephemeral port, scraping the demo exporter every second."""
    binary = require_tool("prometheus")
    exporter = await CliProcess.start("--demo")
    target = exporter.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "binance-futures",
                            "static_configs": [{"targets": [target]}]}],
    }))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:0", stdout=output, stderr=output)
    try:
        def address() -> str | None:
            found = re.search(r'msg="Listening on" address=(\S+)', log.read_text())
            return found.group(1) if found else None

        yield f"http://{await wait_for(address, timeout=30)}", exporter
    finally:
        process.terminate()
        await process.wait()
        await exporter.stop()


async def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector of ``expr``; empty while Prometheus is still starting (503)."""
    url = f"{base}/api/v1/query?query={urllib.parse.quote(expr)}"
    try:
        _, _, body = await asyncio.to_thread(fetch, url)
    except urllib.error.HTTPError as error:
        if error.code == 503:
            return []
        raise
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


async def test_the_shipped_rules_compute_liquidation_distance_from_the_demo(
        prometheus: tuple[str, CliProcess]) -> None:
    base, _ = prometheus

    async def distances() -> list[dict[str, Any]] | None:
        found = await query(base, "binance_futures:position_liquidation_distance_ratio")
        return found or None

    found = await wait_for(distances, timeout=60)
    by_position = {(s["metric"]["account"], s["metric"]["symbol"], s["metric"]["position_side"]):
                   float(s["value"][1]) for s in found}
    # The liquidation cycle's position always has a price, and is never past it.
    assert by_position[("demo-oneway", "ETHUSDT", "BOTH")] > 0
    ratios = await wait_for(lambda: query(base, "binance_futures:asset_margin_ratio"),
                            timeout=30)
    assert {series["metric"]["asset"] for series in ratios} >= {"USDT"}
