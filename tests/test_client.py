"""The WebSocket API client against the simulator: ids, timeouts, failures, junk frames."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from exporter.client import (
    ApiClient,
    ApiError,
    BadResponse,
    ConnectionFailed,
    ConnectionLost,
    RequestTimeout,
)
from exporter.signing import HmacSigner, signed
from exporter.simulator import Delay, Drop, RawFrame, Simulator
from tests.support import HMAC_KEY, HMAC_SECRET, wait_for


def status_params(sim: Simulator) -> dict[str, object]:
    return signed({"apiKey": HMAC_KEY, "timestamp": sim.server_time_ms()},
                  HmacSigner(HMAC_SECRET))


async def test_concurrent_requests_get_their_own_answers(simulator: Simulator) -> None:
    client = ApiClient(simulator.url, name="t")
    try:
        status, account = await asyncio.gather(
            client.request("session.status"),
            client.request("v2/account.status", status_params(simulator)))
    finally:
        await client.close()
    assert "serverTime" in status.result and "totalWalletBalance" not in status.result
    assert "totalWalletBalance" in account.result
    assert client.connections_opened == 1


async def test_a_timeout_replaces_the_connection_and_the_late_answer_is_lost(
        simulator: Simulator) -> None:
    client = ApiClient(simulator.url, name="t", request_timeout=0.4, backoff_min=0.05,
                       backoff_max=0.1)
    simulator.inject(Delay(0.6, method="session.status"))
    simulator.inject(Delay(0.3))
    try:
        with pytest.raises(RequestTimeout):
            await client.request("session.status")
        await asyncio.sleep(client.reconnect_delay())
        # The late session.status answer is due while this request waits; it must not
        # be taken for this request's answer.
        answer = await client.request("v2/account.status", status_params(simulator))
    finally:
        await client.close()
    assert "totalWalletBalance" in answer.result and "serverTime" not in answer.result
    assert client.connections_opened == 2


@pytest.mark.parametrize("abrupt", [False, True])
async def test_drop_mid_request_fails_it_and_next_request_reconnects(
        simulator: Simulator, abrupt: bool) -> None:
    client = ApiClient(simulator.url, name="t", backoff_min=0.05, backoff_max=0.1)
    simulator.inject(Drop(abrupt=abrupt))
    try:
        with pytest.raises(ConnectionLost):
            await client.request("v2/account.status", status_params(simulator))
        answer = await client.request("v2/account.status", status_params(simulator))
    finally:
        await client.close()
    assert "totalWalletBalance" in answer.result
    assert client.connections_opened == 2


async def test_refused_connections_back_off_exponentially_with_a_cap(
        simulator: Simulator) -> None:
    simulator.refuse_connections = True
    client = ApiClient(simulator.url, name="t", backoff_min=0.04, backoff_max=0.16,
                       request_timeout=2)
    delays = []
    for _ in range(5):
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await client.request("session.status")
        delays.append(client.reconnect_delay())
    for attempt, delay in enumerate(delays):
        ceiling = min(0.16, 0.04 * 2 ** attempt)
        assert ceiling * 0.5 - 0.01 <= delay <= ceiling, delays
    simulator.refuse_connections = False
    answer = await client.request("session.status")  # waits out the backoff, then connects
    await client.close()
    assert "serverTime" in answer.result
    assert simulator.connections_opened == 1


async def test_backoff_survives_more_failures_than_a_float_exponent_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,100 failures in a row: a day of an unreachable Binance at the 60 s backoff cap.
    client = ApiClient("ws://127.0.0.1:9/ws-fapi/v1", name="t", backoff_min=0.0,
                       backoff_max=0.0)

    async def refused() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(client, "_handshake", refused)
    for _ in range(1100):
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await client.request("session.status")
    await client.close()


async def test_backoff_longer_than_the_deadline_fails_fast(simulator: Simulator) -> None:
    simulator.refuse_connections = True
    client = ApiClient(simulator.url, name="t", backoff_min=30, backoff_max=30,
                       request_timeout=1)
    with pytest.raises(ConnectionFailed):
        await client.request("session.status")
    attempts = simulator.connections_opened
    with pytest.raises(ConnectionFailed, match="reconnecting in"):
        await client.request("session.status")
    await client.close()
    assert simulator.connections_opened == attempts


async def test_dns_failure_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    client = ApiClient("ws://exchange.example.test/ws-fapi/v1", name="t")
    with pytest.raises(ConnectionFailed, match="Name or service not known"):
        await client.request("session.status")
    await client.close()


async def test_tls_failure_is_a_connection_error(simulator: Simulator) -> None:
    client = ApiClient(simulator.url.replace("ws://", "wss://"), name="t")
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        await client.request("session.status")
    await client.close()


@pytest.mark.parametrize("frame", [
    b"\x00\x01binary",
    "<html><body>502 Bad Gateway</body></html>",
    "[1, 2, 3]",
    "[" * 100_000 + "]" * 100_000,  # deeper than json's recursion limit
], ids=["binary", "html", "not-an-object", "too-deep"])
async def test_a_frame_that_cannot_be_an_answer_fails_the_one_waiting_request_at_once(
        simulator: Simulator, frame: str | bytes) -> None:
    client = ApiClient(simulator.url, name="t", request_timeout=5)
    simulator.inject(RawFrame(frame, replace=True))
    try:
        with pytest.raises(BadResponse, match="instead of an answer"):
            await client.request("v2/account.status", status_params(simulator))
        answer = await client.request("v2/account.status", status_params(simulator))
    finally:
        await client.close()
    assert "totalWalletBalance" in answer.result
    assert client.connections_opened == 1
    assert not any(r.method == "v2/account.status" and r.id == 3 for r in simulator.requests)


async def test_junk_is_ignored_while_several_requests_wait_and_logged_once_per_kind(
        simulator: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    junk = [
        b"\x00\x01binary",
        "not json at all",
        "[1, 2, 3]",
        '{"id": 987654, "status": 200, "result": {}}',
        '{"id": true, "status": 200, "result": {}}',
        '{"id": null, "status": 500, "error": {"code": -1001, "msg": "Internal\\nerror"}}',
    ]
    client = ApiClient(simulator.url, name="junky")
    with caplog.at_level(logging.DEBUG, logger="exporter.client"):
        for frame in junk * 2:
            simulator.inject(Delay(0.05, method="session.status"))  # still waiting when...
            simulator.inject(RawFrame(frame))  # ...this comes before the account's answer
            clock, answer = await asyncio.gather(
                client.request("session.status"),
                client.request("v2/account.status", status_params(simulator)))
            assert "totalWalletBalance" in answer.result and "serverTime" in clock.result
    await client.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "exporter.client"]
    # binary, non-JSON, not an object, unknown id (twice: 987654 and true), unsolicited
    assert len(warnings) == 5, warnings
    assert any("-1001" in warning and "\\n" in warning for warning in warnings)
    assert client.connections_opened == 1


async def test_an_unsolicited_auth_error_ends_the_connection(simulator: Simulator) -> None:
    client = ApiClient(simulator.url, name="t", backoff_min=0.01, backoff_max=0.02)
    simulator.inject(RawFrame('{"id": null, "status": 401, "error": {"code": -2015, '
                              '"msg": "Invalid API-key, IP, or permissions for action."}}',
                              replace=True))
    try:
        with pytest.raises(ApiError) as raised:
            await client.request("v2/account.status", status_params(simulator))
        await asyncio.sleep(client.reconnect_delay())
        answer = await client.request("v2/account.status", status_params(simulator))
    finally:
        await client.close()
    assert raised.value.reason == "auth"
    assert "totalWalletBalance" in answer.result
    assert client.connections_opened == 2


async def test_answer_over_max_frame_size_is_refused(simulator: Simulator) -> None:
    client = ApiClient(simulator.url, name="t", max_frame_size=1024)
    with pytest.raises(Exception, match="max_frame_size") as caught:
        await client.request("v2/account.status", status_params(simulator))
    await client.close()
    assert getattr(caught.value, "reason", None) == "bad_response"


async def test_cancel_arriving_with_the_answer_is_not_lost(simulator: Simulator) -> None:
    """A poller cancelled in the same loop step as its answer arrives must stop.

    (Python 3.11's ``asyncio.wait_for`` returns the answer instead, which left
    pollers running after shutdown.)
    """
    client = ApiClient(simulator.url, name="t")
    await client.request("session.status")  # connected
    simulator.inject(Delay(5, method="session.status"))
    task = asyncio.create_task(client.request("session.status"))
    await wait_for(lambda: client._pending)
    (_, future), = client._pending.values()
    future.set_result(object())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
