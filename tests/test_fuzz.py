"""Property tests: hostile config and answers yield only the documented errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.client import ApiClient
from exporter.config import ConfigError, load_config, parse_config
from tests.support import json_values, scalars

config_keys = st.sampled_from([
    "listen", "endpoint", "poll_interval", "request_timeout", "recv_window", "stale_after",
    "reconnect_backoff_min", "reconnect_backoff_max", "connection_lifetime", "weight_limit",
    "max_frame_size", "accounts", "bogus"])
account_keys = st.sampled_from([
    "name", "api_key", "api_secret", "private_key", "private_key_passphrase", "api_key_file",
    "session_logon", "extra"])
accounts = st.lists(st.dictionaries(account_keys, scalars | st.just("x"), max_size=5),
                    max_size=3)

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


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64),
                 json_values.map(json.dumps),
                 st.fixed_dictionaries({"id": scalars, "status": scalars,
                                        "error": json_values, "result": json_values})
                 .map(json.dumps)))
def test_reader_survives_any_frame(frame: str | bytes) -> None:
    client = ApiClient("ws://127.0.0.1:1/", name="fuzz")
    client._dispatch(None, frame)  # type: ignore[arg-type]  # the reader's per-frame step
