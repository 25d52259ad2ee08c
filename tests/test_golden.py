"""Golden: Binance's own documented answers, served verbatim, reach /metrics value for value.

The examples come from ``tests/data/binance-account-information-v2.md``, a
verbatim copy of the method's doc page (source URL in its front matter).
They are not valid JSON as published: they carry ``//`` comments, miss
commas at some line ends and have a trailing comma. Those are mended here
and nothing else is changed. A WebSocket server on loopback
answers ``session.status`` and, with the documented frame (its ``id``
replaced by the request's), ``v2/account.status``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from exporter.app import run_exporter
from tests.support import Samples, scrape_when_up, sim_config

DOC = Path(__file__).resolve().parent / "data" / "binance-account-information-v2.md"
ACCOUNT = "golden"


def documented_answers() -> dict[str, dict[str, Any]]:
    """The English page's two response examples, by mode, as JSON."""
    text = DOC.read_text(encoding="utf-8").split("# 账户信息V2")[0]  # the Chinese copy follows
    examples = re.findall(r"^> (Single Asset Mode|Multi-Asset Mode)\s*$(.*?)(?=^> |^---|\Z)",
                          text, re.S | re.M)
    return {mode: json.loads(_mend(body)) for mode, body in examples}


def _mend(example: str) -> str:
    """Strip the page's comments and mend its commas; nothing else changes."""
    lines = [re.sub(r"\s*//.*$", "", line).rstrip() for line in example.splitlines()]
    text = "\n".join(line for line in lines if line.strip())
    text = re.sub(r'(["\d\]}])\n(\s*["{])', r"\1,\n\2", text)  # a missing comma at line end
    return re.sub(r",(\s*[\]}])", r"\1", text)  # a trailing comma


@pytest.fixture(params=["Single Asset Mode", "Multi-Asset Mode"])
async def binance(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    answer = documented_answers()[request.param]

    async def handle(ws: ServerConnection) -> None:
        async for message in ws:
            frame = json.loads(message)
            if frame["method"] == "session.status":
                reply = {"id": frame["id"], "status": 200,
                         "result": {"serverTime": time.time_ns() // 1_000_000}}
            else:
                reply = {**answer, "id": frame["id"]}
            await ws.send(json.dumps(reply, ensure_ascii=False))

    async with serve(handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws-fapi/v1", answer


def expected(answer: dict[str, Any]) -> Samples:
    """Every data sample the documented answer must give, computed from the JSON alone."""
    samples: Samples = {}

    def put(name: str, value: float, **labels: str) -> None:
        samples[(f"binance_futures_{name}", frozenset({"account": ACCOUNT, **labels}.items()))] \
            = value

    result = answer["result"]
    for key, value in result.items():
        if isinstance(value, str):
            put("account_" + _snake(key), float(value))
    for asset in result["assets"]:
        for key, value in asset.items():
            if key == "marginAvailable":
                put("asset_margin_available", 1.0 if value else 0.0, asset=asset["asset"])
            elif key == "updateTime":
                put("asset_update_timestamp_seconds", value / 1000, asset=asset["asset"])
            elif key != "asset":
                put("asset_" + _snake(key), float(value), asset=asset["asset"])
    for position in result["positions"]:
        labels = {"symbol": position["symbol"], "position_side": position["positionSide"]}
        for key, value in position.items():
            if key == "updateTime":
                assert value == 0  # documented as 0: "never", so no series
            elif key not in ("symbol", "positionSide"):
                put("position_" + _snake(key), float(value), **labels)
    return samples


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_documented_examples_are_mended_only() -> None:
    answers = documented_answers()
    assert set(answers) == {"Single Asset Mode", "Multi-Asset Mode"}
    single = answers["Single Asset Mode"]["result"]
    assert single["totalWalletBalance"] == "103.12345678"
    assert [a["asset"] for a in single["assets"]] == ["USDT", "USDC"]
    assert "marginAvailable" not in single["assets"][0]
    multi = answers["Multi-Asset Mode"]["result"]
    assert [a["asset"] for a in multi["assets"]] == ["USDT", "BUSD"]
    assert all(a["marginAvailable"] is True for a in multi["assets"])


async def test_every_documented_value_is_exported(
        binance: tuple[str, dict[str, Any]]) -> None:
    url, answer = binance
    config = sim_config(url, accounts=[{"name": ACCOUNT, "api_key": "k" * 64,
                                        "api_secret": "s" * 64}])
    async with run_exporter(config) as running:
        samples = await scrape_when_up(running.server.url, (ACCOUNT,))
    data = {key: value for key, value in samples.items()
            if key[0].startswith(("binance_futures_account_", "binance_futures_asset_",
                                  "binance_futures_position_"))}
    assert data == expected(answer)
    limit = frozenset({"account": ACCOUNT, "rate_limit_type": "REQUEST_WEIGHT",
                       "interval": "MINUTE", "interval_num": "1"}.items())
    assert samples[("binance_futures_rate_limit_used", limit)] == 20
    assert samples[("binance_futures_rate_limit_max", limit)] == 2400
    skipped = [value for (name, _), value in samples.items()
               if name.startswith("binance_futures_answer_") and value]
    assert skipped == []
