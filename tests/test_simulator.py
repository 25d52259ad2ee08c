"""Tests of the Binance futures WebSocket API simulator, through real WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from exporter.simulator import (
    BASE_PRICES,
    MSG_BAD_KEY,
    CloseConnection,
    Delay,
    Drop,
    ErrorAnswer,
    Mutate,
    Mute,
    RawFrame,
    Simulator,
    Stall,
    Unsolicited,
    Verifier,
    signature_payload,
)

ACCOUNT = "v2/account.status"
# Binance's published HMAC test vectors (see shared/reference/protocol-notes.md).
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
VECTOR1_TIMESTAMP = 1649729878532
VECTOR1_SIGNATURE = "1cf54395b336b0a9727ef27d5d98987962bc47aca6e13fe978612d0adee066ed"
VECTOR2_SIGNATURE = "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
# Binance's published Ed25519 test key.
ED25519_PEM = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MC4CAQAwBQYDK2VwBCIEIIJEYWtGBrhACmb9Dvy+qa8WEf0lQOl1s4CLIAB9m89u\n"
    b"-----END PRIVATE KEY-----\n"
)
ED25519_KEY = "E" * 64
RSA_KEY = "R" * 64
RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)

TOTALS = (
    "totalInitialMargin",
    "totalMaintMargin",
    "totalWalletBalance",
    "totalUnrealizedProfit",
    "totalMarginBalance",
    "totalPositionInitialMargin",
    "totalOpenOrderInitialMargin",
    "totalCrossWalletBalance",
    "totalCrossUnPnl",
    "availableBalance",
    "maxWithdrawAmount",
)


# ---------------------------------------------------------------- signing helpers (independent)


def _payload(params: dict[str, Any]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items())).encode()


def sign_hmac(params: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
    digest = hmac.new(secret.encode(), _payload(params), hashlib.sha256).hexdigest()
    return {**params, "signature": digest}


def sign_with(params: dict[str, Any], private_key: Any) -> dict[str, Any]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(_payload(params), padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = private_key.sign(_payload(params))
    return {**params, "signature": base64.b64encode(raw).decode()}


def public_pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ed25519_private() -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(ED25519_PEM, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def signed(sim: Simulator, key: str = KEY, secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    return sign_hmac({"apiKey": key, "timestamp": sim.server_time_ms(), **extra}, secret)


# ---------------------------------------------------------------- client helpers


async def recv(ws: ClientConnection) -> Any:
    frame = await asyncio.wait_for(ws.recv(), 2)
    return json.loads(frame)


async def call(
    ws: ClientConnection, method: str, params: dict[str, Any] | None = None, request_id: Any = 1
) -> dict[str, Any]:
    await ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
    return await recv(ws)


def assert_error(answer: dict[str, Any], status: int, code: int) -> None:
    assert answer["status"] == status, answer
    assert answer["error"]["code"] == code, answer
    assert "result" not in answer
    assert answer["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"


def minute_start_offset() -> int:
    """A clock offset that puts the server one second into a fresh minute."""
    now = time.time_ns() // 1_000_000
    return (now // 60_000 + 1) * 60_000 + 1000 - now


@pytest.fixture
async def sim():
    async with Simulator(seed=7, lively=False) as simulator:
        simulator.add_account("main", api_key=KEY, api_secret=SECRET)
        yield simulator


# ---------------------------------------------------------------- signatures


async def test_hmac_vector_one_is_accepted(sim: Simulator) -> None:
    sim.clock_offset_ms = VECTOR1_TIMESTAMP + 300 - time.time_ns() // 1_000_000
    params = {"apiKey": KEY, "timestamp": VECTOR1_TIMESTAMP, "signature": VECTOR1_SIGNATURE}
    async with connect(sim.url) as ws:
        answer = await call(ws, ACCOUNT, params, request_id="605a6d20")
    assert answer["id"] == "605a6d20"
    assert answer["status"] == 200
    result = answer["result"]
    assert set(TOTALS) <= result.keys()
    assert all(isinstance(result[name], str) for name in TOTALS)
    assert result["assets"] and result["positions"]
    assert answer["rateLimits"] == [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": 2400,
            "count": 10,  # 5 for the connection, 5 for v2/account.status
        }
    ]


def test_hmac_vector_two_payload_and_signature() -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01000000",
        "price": "52000.00",
        "recvWindow": 100,
        "timestamp": 1645423376532,
        "apiKey": KEY,
        "signature": VECTOR2_SIGNATURE,
    }
    assert signature_payload(params) == (
        f"apiKey={KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL"
        "&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
    )
    verifier = Verifier.hmac_sha256(SECRET)
    assert verifier.verify(params)
    assert not verifier.verify({**params, "signature": VECTOR2_SIGNATURE.upper()})
    assert not verifier.verify({**params, "price": "52000.01"})
    assert not verifier.verify({**params, "signature": "ü"})


def test_unicode_values_are_signed_raw_not_percent_encoded() -> None:
    params = {"apiKey": KEY, "symbol": "币安人生USDT", "timestamp": VECTOR1_TIMESTAMP}
    raw = f"apiKey={KEY}&symbol=币安人生USDT&timestamp={VECTOR1_TIMESTAMP}"
    assert signature_payload(params) == raw
    encoded = raw.replace("币安人生", quote("币安人生"))
    assert encoded != raw
    verifier = Verifier.hmac_sha256(SECRET)

    def hmac_over(text: str) -> str:
        return hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()

    assert verifier.verify({**params, "signature": hmac_over(raw)})
    assert not verifier.verify({**params, "signature": hmac_over(encoded)})
    private = ed25519_private()
    ed = Verifier.ed25519(public_pem(private))
    assert ed.verify(sign_with(params, private))
    signed_encoded = base64.b64encode(private.sign(encoded.encode())).decode()
    assert not ed.verify({**params, "signature": signed_encoded})


async def test_bad_signature_unknown_and_malformed_keys(sim: Simulator) -> None:
    async with connect(sim.url) as ws:
        assert_error(await call(ws, ACCOUNT, signed(sim, secret="x" * 64)), 400, -1022)
        assert_error(await call(ws, ACCOUNT, signed(sim, key="Z" * 64)), 401, -2015)
        assert_error(await call(ws, ACCOUNT, signed(sim, key="not a key")), 401, -2014)
        unsigned = {"apiKey": KEY, "timestamp": sim.server_time_ms()}
        assert_error(await call(ws, ACCOUNT, unsigned), 400, -1102)
        assert_error(await call(ws, ACCOUNT, sign_hmac({"apiKey": KEY})), 400, -1102)
        assert_error(await call(ws, ACCOUNT, signed(sim, timestamp="1")), 400, -1102)
        assert_error(await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()}), 400, -1102)
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200


@pytest.mark.parametrize(
    ("offset_ms", "extra", "status"),
    [
        (6000, {}, 400),  # server ahead: the request is too old for the 5000 ms default
        (4000, {}, 200),
        (6000, {"recvWindow": 10_000}, 200),
        (-1500, {}, 400),  # server behind: the request is from the future
        (-500, {}, 200),
    ],
)
async def test_timestamp_against_server_clock(
    sim: Simulator, offset_ms: int, extra: dict[str, int], status: int
) -> None:
    sim.clock_offset_ms = offset_ms
    params = sign_hmac({"apiKey": KEY, "timestamp": time.time_ns() // 1_000_000, **extra})
    async with connect(sim.url) as ws:
        answer = await call(ws, ACCOUNT, params)
    assert answer["status"] == status
    if status != 200:
        assert answer["error"] == {
            "code": -1021,
            "msg": "Timestamp for this request is outside of the recvWindow.",
        }


@pytest.mark.parametrize(("window", "status"), [(60_000, 200), (60_001, 400), (0, 400)])
async def test_recv_window_limit(sim: Simulator, window: int, status: int) -> None:
    async with connect(sim.url) as ws:
        answer = await call(ws, ACCOUNT, signed(sim, recvWindow=window))
    assert answer["status"] == status
    if status != 200:
        assert answer["error"]["code"] == -1102


async def test_ed25519_signed_request_and_session_logon(sim: Simulator) -> None:
    private = ed25519_private()
    sim.add_account("ed", api_key=ED25519_KEY, ed25519_public_key=public_pem(private))

    def ed_params() -> dict[str, Any]:
        return sign_with({"apiKey": ED25519_KEY, "timestamp": sim.server_time_ms()}, private)

    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, ed_params()))["status"] == 200
        # Without logon, an unsigned request is missing its apiKey.
        assert_error(await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()}), 400, -1102)
        logon = await call(ws, "session.logon", ed_params())
        assert logon["status"] == 200
        assert logon["result"]["apiKey"] == ED25519_KEY
        assert isinstance(logon["result"]["authorizedSince"], int)
        answer = await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()})
        assert answer["status"] == 200
        assert answer["result"] == sim.accounts["ed"].last_result
        assert_error(await call(ws, ACCOUNT, {}), 400, -1102)  # timestamp still needed
        status = await call(ws, "session.status")
        assert status["result"]["apiKey"] == ED25519_KEY
        logout = await call(ws, "session.logout")
        assert logout["result"]["apiKey"] is None
        assert_error(await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()}), 400, -1102)


async def test_logon_is_lost_after_reconnect(sim: Simulator) -> None:
    private = ed25519_private()
    sim.add_account("ed", api_key=ED25519_KEY, ed25519_public_key=public_pem(private))
    params = sign_with({"apiKey": ED25519_KEY, "timestamp": sim.server_time_ms()}, private)
    async with connect(sim.url) as ws:
        assert (await call(ws, "session.logon", params))["status"] == 200
    async with connect(sim.url) as ws:
        assert (await call(ws, "session.status"))["result"]["apiKey"] is None
        assert_error(await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()}), 400, -1102)


async def test_logon_needs_an_ed25519_key(sim: Simulator) -> None:
    async with connect(sim.url) as ws:
        answer = await call(ws, "session.logon", signed(sim))
        assert_error(answer, 400, -4056)
        assert answer["error"]["msg"] == "Invalid api key type."
        assert_error(await call(ws, "session.logon", signed(sim, secret="y")), 400, -1022)


async def test_rsa_signed_request(sim: Simulator) -> None:
    sim.add_account("rsa", api_key=RSA_KEY, rsa_public_key=public_pem(RSA_PRIVATE))
    params = sign_with({"apiKey": RSA_KEY, "timestamp": sim.server_time_ms()}, RSA_PRIVATE)
    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, params))["status"] == 200
        assert_error(await call(ws, ACCOUNT, {**params, "recvWindow": 6000}), 400, -1022)
        assert_error(await call(ws, ACCOUNT, {**params, "signature": "%%%"}), 400, -1022)


def test_add_account_needs_exactly_one_credential() -> None:
    sim = Simulator()
    with pytest.raises(ValueError):
        sim.add_account("none", api_key=KEY)
    with pytest.raises(ValueError):
        sim.add_account("two", api_key=KEY, api_secret="s", rsa_public_key=b"pem")
    with pytest.raises(ValueError):
        sim.add_account("wrong type", api_key=KEY, rsa_public_key=public_pem(ed25519_private()))
    sim.add_account("one", api_key=KEY, api_secret="s")
    with pytest.raises(ValueError):
        sim.add_account("other", api_key=KEY, api_secret="s")
    with pytest.raises(RuntimeError):
        _ = sim.url


# ---------------------------------------------------------------- revoked keys, account types

REVOKED = {"id": None, "status": 401, "error": {"code": -2015, "msg": MSG_BAD_KEY}}


async def test_revoked_key_signed_requests(sim: Simulator) -> None:
    account = sim.accounts["main"]
    other = sim.add_account("other", api_key="O" * 64, api_secret="o")
    async with connect(sim.url) as ws, connect(sim.url) as bystander:
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
        assert (await call(bystander, ACCOUNT, signed(sim, "O" * 64, "o")))["status"] == 200
        account.revoke()
        assert await recv(ws) == REVOKED  # pushed, without a request
        assert_error(await call(ws, ACCOUNT, signed(sim), request_id=2), 401, -2015)
        async with connect(sim.url) as fresh:
            assert_error(await call(fresh, ACCOUNT, signed(sim)), 401, -2015)
            # Checked before the signature: a revoked key is not a bad signature.
            assert_error(await call(fresh, ACCOUNT, signed(sim, secret="x")), 401, -2015)
        # Another key's connection got no frame: its next one answers its request.
        assert (await call(bystander, ACCOUNT, signed(sim, "O" * 64, "o"), 2))["status"] == 200
        assert not other.revoked
        account.restore()
        assert (await call(ws, ACCOUNT, signed(sim), request_id=3))["status"] == 200


async def test_revoked_session_stays_dead_until_a_new_connection_logs_on(
    sim: Simulator,
) -> None:
    private = ed25519_private()
    account = sim.add_account("ed", api_key=ED25519_KEY, ed25519_public_key=public_pem(private))

    def ed_params() -> dict[str, Any]:
        return sign_with({"apiKey": ED25519_KEY, "timestamp": sim.server_time_ms()}, private)

    async with connect(sim.url) as ws:
        assert (await call(ws, "session.logon", ed_params()))["status"] == 200
        assert (await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()}))["status"] == 200
        account.revoke()
        assert await recv(ws) == REVOKED
        unsigned = {"timestamp": sim.server_time_ms()}
        assert_error(await call(ws, ACCOUNT, unsigned, request_id=2), 401, -2015)
        async with connect(sim.url) as fresh:
            assert_error(await call(fresh, "session.logon", ed_params()), 401, -2015)
        account.restore()
        # The key works again for signed requests, on this connection too ...
        assert (await call(ws, ACCOUNT, ed_params(), request_id=3))["status"] == 200
        # ... but this connection's session does not, not even after a new logon.
        unsigned = {"timestamp": sim.server_time_ms()}
        assert_error(await call(ws, ACCOUNT, unsigned, request_id=4), 401, -2015)
        assert_error(await call(ws, "session.logon", ed_params(), request_id=5), 401, -2015)
    async with connect(sim.url) as fresh:
        assert (await call(fresh, "session.logon", ed_params()))["status"] == 200
        answer = await call(fresh, ACCOUNT, {"timestamp": sim.server_time_ms()}, request_id=2)
        assert answer["status"] == 200


async def test_revocation_before_any_connection_and_restore(sim: Simulator) -> None:
    sim.accounts["main"].revoke()  # no connection: nothing to announce
    async with connect(sim.url) as ws:
        assert_error(await call(ws, ACCOUNT, signed(sim)), 401, -2015)
        sim.accounts["main"].restore()
        assert (await call(ws, ACCOUNT, signed(sim), request_id=2))["status"] == 200


async def test_portfolio_margin_accounts_get_2015(sim: Simulator) -> None:
    sim.add_account("pm", api_key="P" * 64, api_secret="p", portfolio_margin=True)
    async with connect(sim.url) as ws:
        assert_error(await call(ws, ACCOUNT, signed(sim, "P" * 64, "p")), 401, -2015)
        assert (await call(ws, ACCOUNT, signed(sim), request_id=2))["status"] == 200


# ---------------------------------------------------------------- limits


async def test_weight_limit_answers_429_until_the_next_minute() -> None:
    async with Simulator(seed=1, lively=False, weight_limit=30) as sim:
        sim.add_account("main", api_key=KEY, api_secret=SECRET)
        sim.clock_offset_ms = minute_start_offset()
        minute = sim.server_time_ms() // 60_000 * 60_000
        async with connect(sim.url) as ws:
            for request_id in range(5):
                answer = await call(ws, ACCOUNT, signed(sim), request_id)
                assert answer["status"] == 200
            assert answer["rateLimits"][0]["count"] == 30
            answer = await call(ws, ACCOUNT, signed(sim), 5)
            assert_error(answer, 429, -1003)
            assert answer["error"]["msg"] == (  # the futures wording, not spot's
                "Too many requests; current limit is 30 requests per minute. "
                "Please use the websocket for live updates to avoid polling the API."
            )
            assert answer["error"]["data"]["retryAfter"] == minute + 60_000
            assert answer["rateLimits"][0]["count"] == 35
            assert sim.weight_used() == 35
            assert len(sim.requests) == 6
            sim.clock_offset_ms += 60_000
            assert sim.weight_used() == 0
            answer = await call(ws, ACCOUNT, signed(sim), 6)
            assert answer["status"] == 200
            assert answer["rateLimits"][0]["count"] == 5


async def test_ban_answers_418(sim: Simulator) -> None:
    until = sim.server_time_ms() + 120_000
    sim.ban(until)
    async with connect(sim.url) as ws:
        answer = await call(ws, ACCOUNT, signed(sim))
        assert_error(answer, 418, -1003)
        assert answer["error"]["msg"] == (
            f"Way too many requests; IP banned until {until}. "
            "Please use the websocket for live updates to avoid bans."
        )
        assert answer["error"]["data"]["retryAfter"] == until
        assert abs(answer["error"]["data"]["serverTime"] - sim.server_time_ms()) < 1000
        assert_error(await call(ws, "session.status"), 418, -1003)
        sim.ban(0)
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200


async def test_return_rate_limits_false_on_the_url(sim: Simulator) -> None:
    async with connect(sim.url + "?returnRateLimits=false") as ws:
        answer = await call(ws, "session.status")
        assert "rateLimits" not in answer
        assert answer["result"]["returnRateLimits"] is False
        answer = await call(ws, "session.status", {"returnRateLimits": True})
        assert "rateLimits" in answer


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("abrupt", [False, True])
async def test_drop(sim: Simulator, abrupt: bool) -> None:
    sim.inject(Drop(abrupt=abrupt))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 2)
    if abrupt:
        assert closed.value.rcvd is None
    else:
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200


async def test_delay_answers_late_with_the_original_id(sim: Simulator) -> None:
    sim.inject(Delay(0.2))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        assert (await call(ws, ACCOUNT, signed(sim), request_id=2))["id"] == 2
        late = await recv(ws)
    assert late["id"] == 1
    assert late["status"] == 200
    assert late["result"] == sim.accounts["main"].last_result


async def test_error_answer_replaces_the_answer(sim: Simulator) -> None:
    sim.inject(ErrorAnswer(500, -1001, "Internal error; unable to process your request."))
    sim.inject(ErrorAnswer(400, -1007, "Timeout.", {"detail": 1}))
    account = sim.accounts["main"]
    async with connect(sim.url) as ws:
        first = await call(ws, ACCOUNT, signed(sim), request_id=7)
        second = await call(ws, ACCOUNT, signed(sim))
        third = await call(ws, ACCOUNT, signed(sim))
    assert first == {
        "id": 7,
        "status": 500,
        "error": {"code": -1001, "msg": "Internal error; unable to process your request."},
        "rateLimits": first["rateLimits"],
    }
    assert second["error"] == {"code": -1007, "msg": "Timeout.", "data": {"detail": 1}}
    assert third["status"] == 200
    assert account.last_result == third["result"]


async def test_fault_count_and_method(sim: Simulator) -> None:
    sim.inject(ErrorAnswer(503, -1001, "busy", count=2))
    async with connect(sim.url) as ws:
        assert (await call(ws, "session.status"))["status"] == 200
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 503
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 503
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
        sim.inject(ErrorAnswer(503, -1001, "busy", method=None))
        assert (await call(ws, "session.status"))["status"] == 503
        sim.inject(ErrorAnswer(503, -1001, "busy", method="session.status"))
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
        assert (await call(ws, "session.status"))["status"] == 503
    with pytest.raises(ValueError):
        sim.inject(Drop(count=0))


async def test_raw_frame_before_and_instead_of_the_answer(sim: Simulator) -> None:
    sim.inject(RawFrame("not json"))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        assert await asyncio.wait_for(ws.recv(), 2) == "not json"
        assert (await recv(ws))["status"] == 200
        sim.inject(RawFrame(b"\x00\xff", replace=True))
        await ws.send(json.dumps({"id": 2, "method": ACCOUNT, "params": signed(sim)}))
        assert await asyncio.wait_for(ws.recv(), 2) == b"\x00\xff"
        assert (await call(ws, ACCOUNT, signed(sim), request_id=3))["id"] == 3


async def test_mutate_changes_what_is_sent_and_recorded(sim: Simulator) -> None:
    def break_totals(result: dict[str, Any]) -> None:
        del result["totalMaintMargin"]
        result["totalWalletBalance"] = "abc"
        result["positions"].append(dict(result["positions"][0]))

    sim.inject(Mutate(break_totals))
    async with connect(sim.url) as ws:
        answer = await call(ws, ACCOUNT, signed(sim))
        assert "totalMaintMargin" not in answer["result"]
        assert answer["result"]["totalWalletBalance"] == "abc"
        assert answer["result"] == sim.accounts["main"].last_result
        clean = await call(ws, ACCOUNT, signed(sim))
    assert "totalMaintMargin" in clean["result"]


async def test_unsolicited_frame_comes_first(sim: Simulator) -> None:
    frame = {"id": None, "status": 401, "error": {"code": -2015, "msg": "Invalid API-key."}}
    sim.inject(Unsolicited(frame))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        assert await recv(ws) == frame
        assert (await recv(ws))["status"] == 200


@pytest.mark.parametrize("code", [1000, 4001])
async def test_close_connection_after_answering(sim: Simulator, code: int) -> None:
    sim.inject(CloseConnection(code))
    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
        expected = ConnectionClosedOK if code == 1000 else ConnectionClosedError
        with pytest.raises(expected) as closed:
            await asyncio.wait_for(ws.recv(), 2)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def wait_until(condition: Any) -> None:
    """Let the event loop run (the simulator shares it) until ``condition()`` holds."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


async def test_mute_silences_that_connection_for_good_but_not_pings_or_others(
    sim: Simulator,
) -> None:
    sim.inject(Mute(method="session.status"))
    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
        await ws.send(json.dumps({"id": 2, "method": "session.status", "params": {}}))
        await ws.send(json.dumps({"id": 3, "method": ACCOUNT, "params": signed(sim)}))
        # Both were read and handled in order; any answer would precede this pong.
        await wait_until(lambda: len(sim.requests) == 3)
        await asyncio.wait_for(await ws.ping(), 2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.05)
        async with connect(sim.url) as other:
            assert (await call(other, ACCOUNT, signed(sim), request_id=4))["status"] == 200
        await ws.send(json.dumps({"id": 5, "method": ACCOUNT, "params": signed(sim)}))
        await wait_until(lambda: len(sim.requests) == 5)
        await asyncio.wait_for(await ws.ping(), 2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.05)
    assert [r.id for r in sim.requests] == [1, 2, 3, 4, 5]


async def test_stall_stops_reading_so_pings_are_answered_late(sim: Simulator) -> None:
    sim.inject(Stall(seconds=0.2))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        await wait_until(lambda: len(sim.requests) == 1)  # the stall has begun
        pong = await ws.ping()
        await ws.send(json.dumps({"id": 2, "method": "session.status", "params": {}}))
        await asyncio.wait_for(pong, 3)
        ponged = time.monotonic()
        assert [(await recv(ws))["id"] for _ in range(2)] == [1, 2]
    # A lower bound, not a race: the socket was not read, so no pong could be sent
    # before the stall (which began when request 1 was recorded) was over.
    assert ponged - sim.requests[0].monotonic >= 0.2
    assert [r.id for r in sim.requests] == [1, 2]
    async with connect(sim.url) as ws:
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200


async def test_stop_is_prompt_with_delayed_answers_pending(sim: Simulator) -> None:
    sim.inject(Delay(30))
    async with connect(sim.url) as ws:
        await ws.send(json.dumps({"id": 1, "method": ACCOUNT, "params": signed(sim)}))
        assert (await call(ws, "session.status", request_id=2))["id"] == 2
        started = time.monotonic()
        await asyncio.wait_for(sim.stop(), 3)
        assert time.monotonic() - started < 2
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 2)
    await sim.stop()  # stopping twice is harmless


async def test_refuse_connections_and_wrong_path(sim: Simulator) -> None:
    sim.refuse_connections = True
    with pytest.raises(InvalidStatus) as refused:
        async with connect(sim.url):
            pass
    assert refused.value.response.status_code == 503
    sim.refuse_connections = False
    with pytest.raises(InvalidStatus) as wrong:
        async with connect(sim.url.replace("/ws-fapi/v1", "/ws")):
            pass
    assert wrong.value.response.status_code == 404
    async with connect(sim.url) as ws:
        assert (await call(ws, "session.status"))["status"] == 200
        assert sim.open_connections == 1
    assert sim.connections_opened == 1
    await wait_until(lambda: sim.open_connections == 0)


# ---------------------------------------------------------------- robustness and bookkeeping

JUNK_FRAMES: list[str | bytes] = [
    "not json",
    "[1, 2]",
    "42",
    "null",
    "{}",
    '{"id": 1}',
    '{"id": {"a": 1}, "method": "session.status"}',
    '{"id": true, "method": "session.status"}',
    '{"id": 3, "method": 5}',
    '{"id": 4, "method": "session.status", "params": []}',
    '{"id": 5, "method": "order.place"}',
    '{"id": 6, "method": "v2/account.status", "params": {"apiKey": ["x"], "signature": 1}}',
    '{"id": 7, "method": "v2/account.status", "params": {"timestamp": NaN}}',
    '{"id": 8, "method": "session.logon", "params": {"apiKey": "k", "signature": "s"}}',
    "[" * 50_000,
    b"\x00binary",
]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 5)
    scalars = [None, True, rng.randint(-(2**70), 2**70), rng.random(), "", "ü\x00"]
    if kind < 5:
        return scalars[kind] if kind < 4 else rng.choice([*scalars, "v2/account.status"])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    names = ["id", "method", "params", "apiKey", "timestamp", "signature", "recvWindow"]
    return {rng.choice(names): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_junk_frames_get_error_answers_and_the_connection_survives(sim: Simulator) -> None:
    rng = random.Random(5)
    frames = JUNK_FRAMES + [json.dumps(_random_json(rng)) for _ in range(300)]
    async with connect(sim.url, max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
            answer = await recv(ws)
            assert answer["status"] in (200, 400, 401), (frame, answer)
            assert "rateLimits" in answer
        assert (await call(ws, ACCOUNT, signed(sim)))["status"] == 200
    assert len(sim.requests) == len(frames) + 1


async def test_malformed_frames_are_answered_with_id_null(sim: Simulator) -> None:
    async with connect(sim.url) as ws:
        for frame in ("not json", "[1]", '{"method": "session.status"}', b"\x01"):
            await ws.send(frame)
            answer = await recv(ws)
            assert answer["id"] is None
            assert_error(answer, 400, -1102)
        assert_error(await call(ws, "order.place", request_id=9), 400, -1102)


async def test_request_log_and_session_status(sim: Simulator) -> None:
    async with connect(sim.url) as ws:
        status = await call(ws, "session.status", request_id="a")
        await call(ws, ACCOUNT, signed(sim), request_id=2)
    async with connect(sim.url) as ws:
        await ws.send("junk")
        await recv(ws)
    assert status["result"] == {
        "apiKey": None,
        "authorizedSince": None,
        "connectedSince": status["result"]["connectedSince"],
        "returnRateLimits": True,
        "serverTime": status["result"]["serverTime"],
        "userDataStream": False,
    }
    assert status["result"]["connectedSince"] <= status["result"]["serverTime"]
    assert sim.connections_opened == 2
    summary = [(r.method, r.api_key, r.id, r.connection) for r in sim.requests]
    assert summary == [
        ("session.status", None, "a", 1),
        (ACCOUNT, KEY, 2, 1),
        (None, None, None, 2),
    ]
    monotonic, wall_ms, *_ = sim.requests[0]
    assert monotonic <= time.monotonic()
    assert abs(wall_ms - time.time() * 1000) < 5000


# ---------------------------------------------------------------- account contents


async def test_hedge_and_one_way_position_sides(sim: Simulator) -> None:
    sim.add_account("hedge", api_key="H" * 64, api_secret="h", hedge_mode=True, positions=6)
    async with connect(sim.url) as ws:
        one_way = (await call(ws, ACCOUNT, signed(sim)))["result"]["positions"]
        hedge = (await call(ws, ACCOUNT, signed(sim, "H" * 64, "h")))["result"]["positions"]
    assert len(one_way) == 3 and {p["positionSide"] for p in one_way} == {"BOTH"}
    assert len(hedge) == 6 and {p["positionSide"] for p in hedge} <= {"LONG", "SHORT"}
    for position in hedge:
        sign = Decimal(1).copy_sign(Decimal(position["positionAmt"]))
        assert sign == (1 if position["positionSide"] == "LONG" else -1)
    for position in one_way + hedge:
        assert set(position) == {
            "symbol",
            "positionSide",
            "positionAmt",
            "unrealizedProfit",
            "isolatedMargin",
            "notional",
            "isolatedWallet",
            "initialMargin",
            "maintMargin",
            "updateTime",
        }
        assert len(position["positionAmt"].split(".")[1]) == 3
        assert len(position["notional"].split(".")[1]) == 8


async def test_multi_assets_totals_in_usd_and_margin_available(sim: Simulator) -> None:
    multi = sim.add_account("multi", api_key="M" * 64, api_secret="m", multi_assets=True)
    multi.set_asset_field("BTC", "walletBalance", "0")
    multi.set_asset_field("BNB", "walletBalance", "0")
    async with connect(sim.url) as ws:
        single = (await call(ws, ACCOUNT, signed(sim)))["result"]
        multiple = (await call(ws, ACCOUNT, signed(sim, "M" * 64, "m")))["result"]
    assert all("marginAvailable" not in a for a in single["assets"])
    assert all(a["marginAvailable"] is True for a in multiple["assets"])
    assert {a["asset"] for a in multiple["assets"]} >= {"USDT", "USDC", "BTC", "BNB"}
    usdt = next(a for a in single["assets"] if a["asset"] == "USDT")
    assert single["totalMarginBalance"] == usdt["marginBalance"]
    assert single["totalMaintMargin"] == usdt["maintMargin"]
    stable = [a for a in multiple["assets"] if a["asset"] in ("USDT", "USDC")]
    for total, part in (
        ("totalWalletBalance", "walletBalance"),
        ("maxWithdrawAmount", "maxWithdrawAmount"),
    ):
        assert Decimal(multiple[total]) == sum(Decimal(a[part]) for a in stable)


async def test_edits_are_visible_in_the_next_answer(sim: Simulator) -> None:
    account = sim.add_account("edit", api_key="X" * 64, api_secret="x", positions=0)
    account.set_asset_field("USDT", "walletBalance", "1000")
    account.open_position("BTCUSDT", "BOTH", "0.010", "60000")
    account.open_position("ETHUSDT", "BOTH", "-1", str(BASE_PRICES["ETHUSDT"]), isolated=True)

    async def answer() -> dict[str, Any]:
        async with connect(sim.url) as ws:
            return (await call(ws, ACCOUNT, signed(sim, "X" * 64, "x")))["result"]

    result = await answer()
    btc, eth = result["positions"]
    assert btc == {
        "symbol": "BTCUSDT",
        "positionSide": "BOTH",
        "positionAmt": "0.010",
        "unrealizedProfit": "42.50100000",  # 0.01 * (64250.10 - 60000)
        "isolatedMargin": "0.00000000",
        "notional": "642.50100000",
        "isolatedWallet": "0",  # Binance's spelling of this zero
        "initialMargin": "64.25010000",  # leverage 10
        "maintMargin": "2.57000400",  # 0.4 %
        "updateTime": btc["updateTime"],
    }
    assert eth["positionAmt"] == "-1.000"
    assert eth["isolatedWallet"] == eth["isolatedMargin"] == "312.04500000"
    usdt = result["assets"][0]
    assert usdt["walletBalance"] == result["totalWalletBalance"] == "1000.00000000"
    assert usdt["marginBalance"] == result["totalMarginBalance"] == "1042.50100000"
    assert result["totalMaintMargin"] == "15.05180400"  # 2.570004 + 3120.45 * 0.004
    assert result["totalCrossWalletBalance"] == "687.95500000"  # 1000 - isolated 312.045
    assert result["totalCrossUnPnl"] == "42.50100000"

    account.close_position("BTCUSDT", "BOTH")
    account.set_asset_field("USDT", "unrealizedProfit", "-5")
    result = await answer()
    assert [p["symbol"] for p in result["positions"]] == ["ETHUSDT"]
    assert result["totalUnrealizedProfit"] == "-5.00000000"
    assert result["totalMarginBalance"] == "995.00000000"
    assert account.last_result == result


async def test_open_order_rows_are_listed_at_zero(sim: Simulator) -> None:
    account = sim.add_account("orders", api_key="Q" * 64, api_secret="q", positions=0)
    account.set_asset_field("USDT", "walletBalance", "1000")
    account.open_position("BTCUSDT", "BOTH", "0.010", "60000")

    async def answer() -> dict[str, Any]:
        async with connect(sim.url) as ws:
            return (await call(ws, ACCOUNT, signed(sim, "Q" * 64, "q")))["result"]

    before = await answer()
    account.place_open_order("ETHUSDT", "BOTH", "12.5")
    account.place_open_order("BTCUSDT", "BOTH", "7.25")
    result = await answer()
    btc, eth = result["positions"]
    assert eth == {
        "symbol": "ETHUSDT",
        "positionSide": "BOTH",
        "positionAmt": "0",
        "unrealizedProfit": "0.00000000",
        "isolatedMargin": "0.00000000",
        "notional": "0",
        "isolatedWallet": "0",
        "initialMargin": "12.50000000",  # of the open orders
        "maintMargin": "0",
        "updateTime": eth["updateTime"],
    }
    assert eth["updateTime"] > 0
    assert btc["positionAmt"] == "0.010"
    assert btc["initialMargin"] == "71.50010000"  # 64.2501 for the position + 7.25 of orders
    usdt = result["assets"][0]
    assert usdt["openOrderInitialMargin"] == result["totalOpenOrderInitialMargin"] == "19.75000000"
    assert usdt["positionInitialMargin"] == "64.25010000"
    assert usdt["initialMargin"] == result["totalInitialMargin"] == "84.00010000"
    assert Decimal(usdt["availableBalance"]) == Decimal(
        before["assets"][0]["availableBalance"]
    ) - Decimal("19.75")

    account.close_position("BTCUSDT", "BOTH")  # its orders keep the row, at zero
    account.cancel_open_orders("ETHUSDT", "BOTH")  # no position: the row goes
    result = await answer()
    (btc,) = result["positions"]
    assert (btc["symbol"], btc["positionAmt"]) == ("BTCUSDT", "0")
    assert btc["initialMargin"] == "7.25000000"
    assert btc["notional"] == btc["maintMargin"] == "0"
    account.cancel_open_orders("BTCUSDT", "BOTH")
    result = await answer()
    assert result["positions"] == []
    assert result["totalOpenOrderInitialMargin"] == "0.00000000"


def test_open_order_validation() -> None:
    sim = Simulator(seed=1)
    account = sim.add_account("v", api_key=KEY, api_secret=SECRET, hedge_mode=True, positions=0)
    with pytest.raises(ValueError):
        account.place_open_order("BTCUSDT", "BOTH", "10")  # hedge mode: LONG or SHORT
    for junk in ("0", "-1", "abc", "inf"):
        with pytest.raises(ValueError):
            account.place_open_order("BTCUSDT", "LONG", junk)
    with pytest.raises(ValueError):
        account.place_open_order("NOPEUSDT", "LONG", "10")  # no mark price for it
    with pytest.raises(KeyError):
        account.cancel_open_orders("BTCUSDT", "LONG")
    account.place_open_order("BTCUSDT", "SHORT", "10")
    with pytest.raises(KeyError):
        account.close_position("BTCUSDT", "SHORT")  # orders, but no position


async def test_margin_available_only_in_multi_assets_mode(sim: Simulator) -> None:
    sim.add_account("hedge", api_key="H" * 64, api_secret="h", hedge_mode=True)
    sim.add_account("multi", api_key="M" * 64, api_secret="m", multi_assets=True)
    async with connect(sim.url) as ws:
        for key, secret, multi in ((KEY, SECRET, False), ("H" * 64, "h", False),
                                   ("M" * 64, "m", True)):
            result = (await call(ws, ACCOUNT, signed(sim, key, secret)))["result"]
            assert result["assets"]
            for asset in result["assets"]:
                assert ("marginAvailable" in asset) is multi, (key, asset)
                if multi:
                    assert asset["marginAvailable"] is True


def test_edit_validation() -> None:
    sim = Simulator(seed=1)
    account = sim.add_account("v", api_key=KEY, api_secret=SECRET)
    with pytest.raises(KeyError):
        account.set_asset_field("USDT", "colour", "1")
    for junk in ("abc", "NaN", "inf", "1e12"):
        with pytest.raises(ValueError):
            account.set_asset_field("USDT", "walletBalance", junk)
    with pytest.raises(ValueError):
        account.open_position("BTCUSDT", "LONG", "1", "100")
    with pytest.raises(ValueError):
        account.open_position("BTCEUR", "BOTH", "1", "100")
    with pytest.raises(KeyError):
        account.close_position("NOPEUSDT", "BOTH")


async def test_lively_accounts_move_and_seeds_repeat() -> None:
    async with Simulator(seed=3) as sim, Simulator(seed=3) as twin:
        sim.add_account("main", api_key=KEY, api_secret=SECRET)
        twin.add_account("main", api_key=KEY, api_secret=SECRET)
        async with connect(sim.url) as ws:
            first = (await call(ws, ACCOUNT, signed(sim)))["result"]
            second = (await call(ws, ACCOUNT, signed(sim)))["result"]
        async with connect(twin.url) as ws:
            twin_first = (await call(ws, ACCOUNT, signed(twin)))["result"]
    assert first["totalUnrealizedProfit"] != second["totalUnrealizedProfit"]
    assert first["totalUnrealizedProfit"] == twin_first["totalUnrealizedProfit"]


def test_step_keeps_figures_consistent_over_time() -> None:
    sim = Simulator(seed=11)
    account = sim.add_account("m", api_key=KEY, api_secret=SECRET, hedge_mode=True)
    counts = set()
    for _ in range(400):
        account.step()
        result = account.result()
        counts.add(len(result["positions"]))
        usdt = result["assets"][0]
        assert Decimal(usdt["marginBalance"]) == Decimal(usdt["walletBalance"]) + Decimal(
            usdt["unrealizedProfit"]
        )
        assert Decimal(usdt["maxWithdrawAmount"]) >= 0
    assert len(counts) > 1  # positions opened and closed


# ---------------------------------------------------------------- demo accounts


async def test_demo_accounts() -> None:
    demos = Simulator.demo_accounts()
    assert demos == Simulator.demo_accounts()
    assert len({d.name for d in demos}) == len({d.api_key for d in demos}) == 3
    assert [d.key_type for d in demos] == ["hmac", "hmac", "ed25519"]
    async with Simulator() as sim:
        accounts = [demo.add_to(sim) for demo in demos]
        assert [a.multi_assets for a in accounts] == [False, True, False]
        assert [a.hedge_mode for a in accounts] == [False, True, False]
        hmac_demo, _, ed_demo = demos
        assert hmac_demo.api_secret is not None and ed_demo.private_key_pem is not None
        private = serialization.load_pem_private_key(ed_demo.private_key_pem, password=None)
        async with connect(sim.url) as ws:
            answer = await call(ws, ACCOUNT, signed(sim, hmac_demo.api_key, hmac_demo.api_secret))
            assert answer["status"] == 200
            params = {"apiKey": ed_demo.api_key, "timestamp": sim.server_time_ms()}
            assert (await call(ws, "session.logon", sign_with(params, private)))["status"] == 200
            answer = await call(ws, ACCOUNT, {"timestamp": sim.server_time_ms()})
            assert answer["status"] == 200
