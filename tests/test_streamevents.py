"""Reading user data stream events: what asks for a poll, forced orders, margin calls, and
frames that cannot be read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from exporter.state import STREAM_EVENTS
from exporter.streamevents import ForcedOrder, MarginCallRow, forced_order_kind, parse_event
from exporter.userstream import REQUIRED_EVENTS, stream_url
from tests.support import json_values


def order(status: str, execution: str, client_id: str = "web_1", **fields: Any) -> str:
    body = {"s": "BTCUSDT", "c": client_id, "X": status, "x": execution, "i": 8886774,
            **fields}
    return json.dumps({"e": "ORDER_TRADE_UPDATE", "E": 1568879465651, "T": 1568879465650,
                       "o": body})


@pytest.mark.parametrize(("status", "execution", "fill"), [
    ("FILLED", "TRADE", True),
    ("PARTIALLY_FILLED", "TRADE", True),
    ("FILLED", "CALCULATED", True),
    ("NEW", "NEW", False),
    ("CANCELED", "CANCELED", False),
    ("EXPIRED", "EXPIRED", False),
    ("NEW", "AMENDMENT", False),
])
def test_only_fills_ask_for_a_poll(status: str, execution: str, fill: bool) -> None:
    event = parse_event(order(status, execution))
    assert event.kind == "ORDER_TRADE_UPDATE" and event.changes_account is fill
    assert event.event_time == pytest.approx(1568879465.651) and not event.problems


def test_account_updates_and_margin_calls_ask_for_a_poll_and_expiry_does_not() -> None:
    update = {"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": {"m": "FUNDING_FEE", "B": [], "P": []}}
    assert parse_event(json.dumps(update)).changes_account
    expired = parse_event('{"e":"listenKeyExpired","E":2,"listenKey":"abc"}')
    assert expired.kind == "listenKeyExpired" and not expired.changes_account
    assert expired.expired_key == "abc"
    # Binance has sent it without the key too (then it is about the connection's own key).
    assert parse_event('{"e":"listenKeyExpired","E":2}').expired_key is None


@pytest.mark.parametrize(("client_id", "kind"), [
    ("autoclose-1596107620040000020", "liquidation"),
    ("adl_autoclose", "adl"),
    ("adl_autoclose-123", "adl"),
    ("settlement_autoclose-1596107620040", "settlement"),
    ("web_autoclose-1", None),
    ("autoclose", None),
    ("x", None),
])
def test_forced_order_kinds_come_from_the_client_order_id(client_id: str,
                                                          kind: str | None) -> None:
    assert forced_order_kind(client_id) == kind


def test_a_forced_order_counts_when_filled_not_before() -> None:
    partly = parse_event(order("PARTIALLY_FILLED", "CALCULATED", "autoclose-17"))
    assert partly.changes_account and partly.forced_order is None
    filled = parse_event(order("FILLED", "CALCULATED", "autoclose-17"))
    assert filled.forced_order == ForcedOrder("BTCUSDT", 8886774, "liquidation")


def test_a_forced_order_without_an_order_id_is_reported_not_counted() -> None:
    event = parse_event(order("FILLED", "CALCULATED", "adl_autoclose", i="8886774"))
    assert event.forced_order is None and event.changes_account
    assert [problem.what for problem in event.problems] == ["ORDER_TRADE_UPDATE.forced"]


def test_margin_call_rows_and_their_problems() -> None:
    event = parse_event(json.dumps({"e": "MARGIN_CALL", "E": 1587727187525, "cw": "3.16812045",
                                    "p": [{"s": "ETHUSDT", "ps": "LONG", "pa": "1.327",
                                           "mt": "CROSSED", "iw": "0", "mp": "187.17127",
                                           "up": "-1.166074", "mm": "1.614445"},
                                          {"s": "BTCUSDT", "ps": "SHORT", "mm": "NaN"},
                                          "not a row"]}))
    assert event.kind == "MARGIN_CALL" and event.changes_account
    assert event.margin_calls == (MarginCallRow("ETHUSDT", "LONG", 1.614445),)
    assert len(event.problems) == 2


def test_an_unreadable_order_still_asks_for_a_poll() -> None:
    event = parse_event('{"e":"ORDER_TRADE_UPDATE","E":5,"o":"nope"}')
    assert event.kind == "ORDER_TRADE_UPDATE" and event.changes_account and event.problems


@pytest.mark.parametrize("frame", [b"\x00binary", "not json {", "[1,2]", '"text"', "{}",
                                   '{"e": 5}', "[" * 100_000])
def test_unparseable_frames_are_other_with_a_problem(frame: str | bytes) -> None:
    event = parse_event(frame)
    assert event.kind == "other" and not event.changes_account and event.problems


def test_unknown_types_are_other_without_a_problem() -> None:
    event = parse_event('{"e":"SOMETHING_NEW","E":7}')
    assert event.kind == "other" and not event.problems and event.event_time == 0.007


def test_the_combined_stream_wrapping_is_unwrapped() -> None:
    event = parse_event(json.dumps({"stream": "key", "data": {"e": "ACCOUNT_UPDATE", "E": 9}}))
    assert event.kind == "ACCOUNT_UPDATE" and event.changes_account


@given(json_values)
def test_no_json_value_breaks_the_reader(value: object) -> None:
    for frame in (value, {"e": "ORDER_TRADE_UPDATE", "o": value},
                  {"e": "MARGIN_CALL", "p": value}, {"e": "ACCOUNT_UPDATE", "E": value}):
        event = parse_event(json.dumps(frame))
        assert event.kind in STREAM_EVENTS


def test_stream_url_path_form() -> None:
    assert stream_url("wss://fstream.binance.com/private/ws", "Key1") == (
        "wss://fstream.binance.com/private/ws/Key1")
    assert stream_url("ws://127.0.0.1:9/private/ws/", "Key1") == "ws://127.0.0.1:9/private/ws/Key1"


def test_stream_url_query_form_adds_the_key_and_the_events_it_needs() -> None:
    url = stream_url("wss://fstream.binance.com/private/ws?events=TRADE_LITE/ACCOUNT_UPDATE&x=1",
                     "Key1")
    base, query = url.split("?")
    assert base == "wss://fstream.binance.com/private/ws"
    params = dict(part.split("=") for part in query.split("&"))
    assert params["listenKey"] == "Key1" and params["x"] == "1"
    events = params["events"].split("/")
    assert events[:2] == ["TRADE_LITE", "ACCOUNT_UPDATE"]
    assert set(REQUIRED_EVENTS) <= set(events) and len(events) == len(set(events))
    assert stream_url("ws://h/private/ws?events=", "K").endswith(
        "listenKey=K&events=" + "/".join(REQUIRED_EVENTS))
