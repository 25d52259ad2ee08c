"""Property tests: hostile config and answers yield only the documented errors."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.client import ApiClient
from exporter.config import ConfigError, load_config, parse_config
from exporter.snapshot import MalformedAnswer, parse_account_status, parse_rate_limits

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.integers(min_value=2**60, max_value=10**400)  # beyond float range
           | st.sampled_from(["1\x002", "1_0", " 1", "-0", "1.", ".5", "0x10", "\u0661"]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=12), inner, max_size=4), max_leaves=20)
config_keys = st.sampled_from([
    "listen", "endpoint", "poll_interval", "request_timeout", "recv_window", "stale_after",
    "reconnect_backoff_min", "reconnect_backoff_max", "connection_lifetime", "weight_limit",
    "max_frame_size", "accounts", "bogus"])
account_keys = st.sampled_from([
    "name", "api_key", "api_secret", "private_key", "private_key_passphrase", "api_key_file",
    "session_logon", "extra"])
accounts = st.lists(st.dictionaries(account_keys, scalars | st.just("x"), max_size=5),
                    max_size=3)

VALID_RESULT: dict[str, Any] = {
    **{name: "1.50000000" for name in (
        "totalInitialMargin", "totalMaintMargin", "totalWalletBalance", "totalUnrealizedProfit",
        "totalMarginBalance", "totalPositionInitialMargin", "totalOpenOrderInitialMargin",
        "totalCrossWalletBalance", "totalCrossUnPnl", "availableBalance", "maxWithdrawAmount")},
    "assets": [{"asset": "USDT", "walletBalance": "1", "unrealizedProfit": "0",
                "marginBalance": "1", "maintMargin": "0", "initialMargin": "0",
                "positionInitialMargin": "0", "openOrderInitialMargin": "0",
                "crossWalletBalance": "1", "crossUnPnl": "0", "availableBalance": "1",
                "maxWithdrawAmount": "1", "marginAvailable": True, "updateTime": 1625474304765}],
    "positions": [{"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "1.000",
                   "unrealizedProfit": "0", "isolatedMargin": "0", "notional": "0",
                   "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0",
                   "updateTime": 0}],
}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(config_keys, json_values | accounts, max_size=6))
def test_any_config_document_is_valid_or_a_config_error(document: dict[str, Any]) -> None:
    try:
        parse_config(document)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_yaml_text_is_valid_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value, for picking a place to corrupt."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(VALID_RESULT)[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), json_values, st.booleans())
def test_corrupted_answers_are_parsed_or_rejected_whole(path: tuple[Any, ...], value: Any,
                                                        delete: bool) -> None:
    result = copy.deepcopy(VALID_RESULT)
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        snapshot = parse_account_status(result, received_at=0.0)
    except MalformedAnswer as exc:
        assert "\n" not in str(exc)
        return
    assert len(snapshot.totals) == 11  # accepted only when every total is a finite number


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_as_result_or_rate_limits(value: Any) -> None:
    for parse in (lambda: parse_account_status(value, received_at=0.0),
                  lambda: parse_rate_limits(value)):
        with contextlib.suppress(MalformedAnswer):
            parse()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64),
                 json_values.map(json.dumps),
                 st.fixed_dictionaries({"id": scalars, "status": scalars,
                                        "error": json_values, "result": json_values})
                 .map(json.dumps)))
def test_reader_survives_any_frame(frame: str | bytes) -> None:
    client = ApiClient("ws://127.0.0.1:1/", name="fuzz")
    client._dispatch(frame)  # the reader's per-frame step: must never raise
