"""Loopback stand-in for Binance's USDⓈ-M futures WebSocket API.

It serves ``v2/account.status`` and the ``session.*`` methods the way
``wss://ws-fapi.binance.com/ws-fapi/v1`` does (frames, signatures, recvWindow,
REQUEST_WEIGHT, bans) for simulated accounts, and lets tests inject faults.
``binance-futures-exporter --demo`` runs it with :meth:`Simulator.demo_accounts`.

It deliberately imports nothing else from ``exporter``: signatures are checked
here with its own code, so tests of the exporter's signing code against it are
an independent check rather than the same code agreeing with itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

PATH = "/ws-fapi/v1"
ACCOUNT_METHOD = "v2/account.status"
CONNECTION_WEIGHT = 5
METHOD_WEIGHTS = {
    ACCOUNT_METHOD: 5,
    "session.status": 2,
    "session.logon": 2,
    "session.logout": 2,
}
#: Weight charged for frames that are not a request for a known method.
INVALID_REQUEST_WEIGHT = 1
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
MAINT_MARGIN_RATE = Decimal("0.004")

_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{64}")
_EIGHT_PLACES = Decimal("1e-8")
_THREE_PLACES = Decimal("1e-3")
_MARK_TICK = Decimal("1e-4")
#: Bound on amounts a test may set, so that figures stay within Decimal's 28 digits.
_LARGEST = Decimal("1e12")

#: Starting mark prices; symbols quoted in USDT or USDC margin in that asset.
BASE_PRICES = {
    "BTCUSDT": Decimal("64250.10"),
    "ETHUSDT": Decimal("3120.45"),
    "SOLUSDT": Decimal("148.320"),
    "BNBUSDT": Decimal("585.60"),
    "XRPUSDT": Decimal("0.5234"),
    "DOGEUSDT": Decimal("0.15321"),
    "BTCUSDC": Decimal("64248.30"),
    "ETHUSDC": Decimal("3119.90"),
}
_LEVERAGES = (5, 10, 20)

#: Per-asset decimal fields in the order Binance sends them.
ASSET_FIELDS = (
    "walletBalance",
    "unrealizedProfit",
    "marginBalance",
    "maintMargin",
    "initialMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "crossWalletBalance",
    "crossUnPnl",
    "availableBalance",
    "maxWithdrawAmount",
)
#: The 11 account totals and the per-asset field each one adds up.
TOTAL_FIELDS = {
    "totalInitialMargin": "initialMargin",
    "totalMaintMargin": "maintMargin",
    "totalWalletBalance": "walletBalance",
    "totalUnrealizedProfit": "unrealizedProfit",
    "totalMarginBalance": "marginBalance",
    "totalPositionInitialMargin": "positionInitialMargin",
    "totalOpenOrderInitialMargin": "openOrderInitialMargin",
    "totalCrossWalletBalance": "crossWalletBalance",
    "totalCrossUnPnl": "crossUnPnl",
    "availableBalance": "availableBalance",
    "maxWithdrawAmount": "maxWithdrawAmount",
}

MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_BAD_KEY = "Invalid API-key, IP, or permissions for action."
MSG_KEY_FORMAT = "API-key format invalid."
MSG_RECV_WINDOW = "Timestamp for this request is outside of the recvWindow."


def server_time_now(offset_ms: int = 0) -> int:
    """Epoch milliseconds of a clock that runs ``offset_ms`` ahead of this host's."""
    return time.time_ns() // 1_000_000 + offset_ms


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answer: HTTP-like ``status`` plus Binance's ``{code, msg[, data]}``."""

    def __init__(self, status: int, code: int, msg: str, data: dict[str, Any] | None = None):
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.data = data

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            body["data"] = self.data
        return body


def _malformed(name: str) -> ApiError:
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


# --------------------------------------------------------------------------- signing


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signature_payload(params: dict[str, Any]) -> str:
    """What Binance signs: every param but ``signature``, sorted by name, as ``k=v&…``."""
    return "&".join(
        f"{name}={quote(_param_text(params[name]), safe='')}"
        for name in sorted(params)
        if name != "signature"
    )


@dataclass(frozen=True)
class Verifier:
    """Checks request signatures for one API key of a given type."""

    kind: str  # "HMAC_SHA256", "ED25519" or "RSA"
    check: Callable[[bytes, str], bool]

    @classmethod
    def hmac_sha256(cls, secret: str) -> Verifier:
        key = secret.encode()

        def check(payload: bytes, signature: str) -> bool:
            expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected.encode(), signature.encode())

        return cls("HMAC_SHA256", check)

    @classmethod
    def ed25519(cls, public_key_pem: bytes) -> Verifier:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")

        def check(payload: bytes, signature: str) -> bool:
            key.verify(base64.b64decode(signature, validate=True), payload)
            return True

        return cls("ED25519", _false_on_failure(check))

    @classmethod
    def rsa(cls, public_key_pem: bytes) -> Verifier:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("not an RSA public key")

        def check(payload: bytes, signature: str) -> bool:
            raw = base64.b64decode(signature, validate=True)
            key.verify(raw, payload, padding.PKCS1v15(), hashes.SHA256())
            return True

        return cls("RSA", _false_on_failure(check))

    def verify(self, params: dict[str, Any]) -> bool:
        signature = params.get("signature")
        if not isinstance(signature, str):
            return False
        return self.check(signature_payload(params).encode(), signature)


def _false_on_failure(check: Callable[[bytes, str], bool]) -> Callable[[bytes, str], bool]:
    """Turn the exceptions of base64 decoding and key verification into ``False``."""

    def guarded(payload: bytes, signature: str) -> bool:
        try:
            return check(payload, signature)
        except (ValueError, InvalidSignature):
            return False

    return guarded


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """Base of the injectable faults: applies to the next ``count`` matching requests.

    ``method`` None matches every request, including frames that are not one;
    ``api_key`` None matches every account, else only requests for that key.
    """

    count: int = field(default=1, kw_only=True)
    method: str | None = field(default=ACCOUNT_METHOD, kw_only=True)
    api_key: str | None = field(default=None, kw_only=True)


@dataclass
class Drop(Fault):
    """Close the connection without answering: code 1011, or abort the TCP stream."""

    abrupt: bool = False


@dataclass
class Delay(Fault):
    """Send the (unchanged) answer after ``seconds``; later requests are not held up."""

    seconds: float


@dataclass
class ErrorAnswer(Fault):
    """Answer with this error instead of the real answer."""

    status: int
    code: int
    msg: str
    data: dict[str, Any] | None = None


@dataclass
class RawFrame(Fault):
    """Send ``frame`` (bytes: a binary frame) before the answer, or instead of it."""

    frame: str | bytes
    replace: bool = False


@dataclass
class Mutate(Fault):
    """Let ``fn`` change a deep copy of a successful answer's ``result`` before sending.

    An error answer is sent unchanged (the fault is still used up).
    """

    fn: Callable[[dict[str, Any]], None]


@dataclass
class Unsolicited(Fault):
    """Send ``frame`` as JSON on the requesting connection first, then answer normally."""

    frame: dict[str, Any]


@dataclass
class CloseConnection(Fault):
    """Answer, then close the connection cleanly with ``code``."""

    code: int = CloseCode.NORMAL_CLOSURE


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int


# --------------------------------------------------------------------------- accounts


def _decimal(value: str | Decimal) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not number.is_finite() or abs(number) >= _LARGEST:
        raise ValueError(f"not a finite number below {_LARGEST}: {value!r}")
    return number


def _fmt(number: Decimal, places: Decimal = _EIGHT_PLACES) -> str:
    text = f"{number.quantize(places):f}"
    return text.removeprefix("-") if Decimal(text) == 0 else text


def _margin_asset(symbol: str) -> str:
    for asset in ("USDT", "USDC"):
        if symbol.endswith(asset) and len(symbol) > len(asset):
            return asset
    raise ValueError(f"symbol {symbol!r} is not quoted in USDT or USDC")


@dataclass
class _Position:
    symbol: str
    side: str
    amount: Decimal  # signed: shorts are negative, as Binance reports them
    entry_price: Decimal
    leverage: int
    isolated: bool
    update_time: int

    def figures(self, mark: Decimal) -> dict[str, Decimal]:
        notional = self.amount * mark
        pnl = self.amount * (mark - self.entry_price)
        isolated_wallet = (
            abs(self.amount * self.entry_price) / self.leverage if self.isolated else Decimal(0)
        )
        return {
            "unrealizedProfit": pnl,
            "isolatedMargin": isolated_wallet + pnl if self.isolated else Decimal(0),
            "notional": notional,
            "isolatedWallet": isolated_wallet,
            "initialMargin": abs(notional) / self.leverage,
            "maintMargin": abs(notional) * MAINT_MARGIN_RATE,
        }


@dataclass
class _Asset:
    wallet: Decimal
    update_time: int
    open_order_margin: Decimal = Decimal(0)
    #: Fields a test pinned with set_asset_field; they win over computed values.
    overrides: dict[str, Decimal] = field(default_factory=dict)


class SimAccount:
    """One simulated futures account with its balances and positions.

    Figures are derived from state on every answer: per asset the wallet
    balance and open-order margin, per position amount, entry price, leverage
    and margin type, and one mark price per symbol. Fields pinned with
    :meth:`set_asset_field` replace the computed value, and everything derived
    from that field (and the totals) follows it.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        verifier: Verifier,
        multi_assets: bool,
        hedge_mode: bool,
        lively: bool,
        rng: random.Random,
        clock: Callable[[], int],
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.verifier = verifier
        self.multi_assets = multi_assets
        self.hedge_mode = hedge_mode
        self.lively = lively
        self.last_result: dict[str, Any] | None = None
        self._rng = rng
        self._clock = clock
        self._marks = dict(BASE_PRICES)
        self._assets: dict[str, _Asset] = {}
        self._positions: dict[tuple[str, str], _Position] = {}

    # ---- changes a test (or the market) makes

    def set_asset_field(self, asset: str, field: str, value: str) -> None:
        """Set one per-asset figure, e.g. ``("USDT", "walletBalance", "123.45")``.

        ``walletBalance`` and ``openOrderInitialMargin`` are state; any other
        field of :data:`ASSET_FIELDS` is pinned to ``value``. A new asset is added.
        """
        if field not in ASSET_FIELDS:
            raise KeyError(f"unknown asset field {field!r}")
        number = _decimal(value)
        now = self._clock()
        state = self._assets.setdefault(asset, _Asset(wallet=Decimal(0), update_time=now))
        if field == "walletBalance":
            state.wallet = number
        elif field == "openOrderInitialMargin":
            state.open_order_margin = number
        else:
            state.overrides[field] = number
        state.update_time = now

    def open_position(
        self,
        symbol: str,
        side: str,
        amount: str,
        entry_price: str,
        *,
        isolated: bool = False,
        leverage: int = 10,
    ) -> None:
        """Open (or replace) a position; the mark price starts at ``entry_price`` if new.

        ``side`` is BOTH in one-way mode (sign of ``amount`` = direction) and
        LONG or SHORT in hedge mode (the sign of ``amount`` is then ignored).
        """
        expected = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        if side not in expected:
            raise ValueError(f"side must be one of {expected} for account {self.name!r}")
        quantity, entry = _decimal(amount), _decimal(entry_price)
        if side == "LONG":
            quantity = abs(quantity)
        elif side == "SHORT":
            quantity = -abs(quantity)
        self._assets.setdefault(
            _margin_asset(symbol), _Asset(wallet=Decimal(0), update_time=self._clock())
        )
        self._marks.setdefault(symbol, entry)
        self._positions[(symbol, side)] = _Position(
            symbol, side, quantity, entry, leverage, isolated, self._clock()
        )

    def close_position(self, symbol: str, side: str) -> None:
        """Remove a position without touching the wallet (KeyError if there is none)."""
        del self._positions[(symbol, side)]

    def step(self) -> None:
        """Advance the market once: mark prices drift; when lively, maybe open or close."""
        for symbol, mark in self._marks.items():
            drift = Decimal(repr(self._rng.gauss(0, 0.002)))
            self._marks[symbol] = max(_MARK_TICK, (mark * (1 + drift)).quantize(_MARK_TICK))
        if not self.lively or self._rng.random() >= 0.08:
            return
        if self._positions and (len(self._positions) >= 5 or self._rng.random() < 0.5):
            self._realise(self._rng.choice(sorted(self._positions)))
        else:
            self._open_random()

    def populate(self, positions: int) -> None:
        """Give the account random but plausible balances and ``positions`` positions."""
        now = self._clock()
        rng = self._rng
        balances = {"USDT": rng.uniform(2_000, 50_000), "USDC": rng.uniform(0, 800), "BTC": 0.0}
        if self.multi_assets:
            balances |= {"BTC": rng.uniform(0.01, 0.5), "BNB": rng.uniform(1, 20)}
        for asset, amount in balances.items():
            self._assets[asset] = _Asset(wallet=Decimal(f"{amount:.8f}"), update_time=now)
        for _ in range(positions):
            self._open_random()

    def _open_random(self) -> None:
        rng = self._rng
        symbols = [s for s in BASE_PRICES if self.multi_assets or s.endswith("USDT")]
        sides = ("LONG", "SHORT") if self.hedge_mode else ("BOTH",)
        free = [(s, side) for s in symbols for side in sides if (s, side) not in self._positions]
        if not free:
            return
        symbol, side = rng.choice(free)
        mark = self._marks[symbol]
        wallet = self._assets[_margin_asset(symbol)].wallet
        notional = wallet * Decimal(f"{rng.uniform(0.2, 1.0):.4f}")
        quantity = max(_THREE_PLACES, (notional / mark).quantize(_THREE_PLACES))
        if side == "SHORT" or (side == "BOTH" and rng.random() < 0.4):
            quantity = -quantity
        entry = (mark * Decimal(f"{1 + rng.gauss(0, 0.01):.6f}")).quantize(_MARK_TICK)
        self.open_position(
            symbol,
            side,
            str(quantity),
            str(entry),
            isolated=rng.random() < 0.25,
            leverage=rng.choice(_LEVERAGES),
        )

    def _realise(self, key: tuple[str, str]) -> None:
        """Close a position as the market would: its PnL moves into the wallet."""
        position = self._positions.pop(key)
        asset = self._assets[_margin_asset(position.symbol)]
        asset.wallet += position.figures(self._marks[position.symbol])["unrealizedProfit"]
        asset.update_time = self._clock()

    # ---- the answer

    def _usd(self, amount: Decimal, asset: str) -> Decimal:
        return amount * self._marks.get(f"{asset}USDT", Decimal(1))

    def _asset_figures(self, asset: str, state: _Asset) -> dict[str, Decimal]:
        mine = [p for p in self._positions.values() if _margin_asset(p.symbol) == asset]
        figures = [(p, p.figures(self._marks[p.symbol])) for p in mine]
        cross = [f for p, f in figures if not p.isolated]
        values: dict[str, Decimal] = {}

        def pick(name: str, computed: Decimal) -> Decimal:
            values[name] = state.overrides.get(name, computed)
            return values[name]

        def total(name: str, of: list[dict[str, Decimal]]) -> Decimal:
            return sum((f[name] for f in of), Decimal(0))

        wallet = pick("walletBalance", state.wallet)
        pnl = pick("unrealizedProfit", total("unrealizedProfit", [f for _, f in figures]))
        pick("marginBalance", wallet + pnl)
        pick("maintMargin", total("maintMargin", [f for _, f in figures]))
        position_margin = pick(
            "positionInitialMargin", total("initialMargin", [f for _, f in figures])
        )
        order_margin = pick("openOrderInitialMargin", state.open_order_margin)
        pick("initialMargin", position_margin + order_margin)
        cross_wallet = pick(
            "crossWalletBalance", wallet - total("isolatedWallet", [f for _, f in figures])
        )
        cross_pnl = pick("crossUnPnl", total("unrealizedProfit", cross))
        available = pick(
            "availableBalance",
            cross_wallet + cross_pnl - total("initialMargin", cross) - order_margin,
        )
        pick("maxWithdrawAmount", max(Decimal(0), min(cross_wallet, available)))
        return values

    def result(self) -> dict[str, Any]:
        """The ``result`` object of a v2/account.status answer for the current state."""
        per_asset = {name: self._asset_figures(name, s) for name, s in self._assets.items()}
        if self.multi_assets:
            totals = {
                total: sum((self._usd(v[part], a) for a, v in per_asset.items()), Decimal(0))
                for total, part in TOTAL_FIELDS.items()
            }
        else:
            usdt = per_asset.get("USDT", {})
            totals = {total: usdt.get(part, Decimal(0)) for total, part in TOTAL_FIELDS.items()}
        result: dict[str, Any] = {name: _fmt(value) for name, value in totals.items()}
        result["assets"] = [
            self._asset_entry(name, values, self._assets[name].update_time)
            for name, values in per_asset.items()
        ]
        result["positions"] = [self._position_entry(p) for p in self._positions.values()]
        return result

    def _asset_entry(self, name: str, values: dict[str, Decimal], updated: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"asset": name}
        entry |= {f: _fmt(values[f]) for f in ASSET_FIELDS}
        if self.multi_assets:
            entry["marginAvailable"] = True
        entry["updateTime"] = updated
        return entry

    def _position_entry(self, position: _Position) -> dict[str, Any]:
        figures = position.figures(self._marks[position.symbol])
        return {
            "symbol": position.symbol,
            "positionSide": position.side,
            "positionAmt": _fmt(position.amount, _THREE_PLACES),
            **{name: _fmt(value) for name, value in figures.items()},
            "updateTime": position.update_time,
        }


# --------------------------------------------------------------------------- demo accounts


def _demo_token(label: str) -> str:
    return hashlib.sha256(f"binance-futures-exporter demo {label}".encode()).hexdigest()


@dataclass(frozen=True)
class DemoAccount:
    """Fixed credentials for ``--demo``: the simulator and the exporter config share them."""

    name: str
    api_key: str
    api_secret: str | None = None
    private_key_pem: bytes | None = None  # Ed25519, PKCS#8, unencrypted
    multi_assets: bool = False
    hedge_mode: bool = False
    positions: int = 3

    @property
    def key_type(self) -> str:
        """``"hmac"`` or ``"ed25519"``."""
        return "hmac" if self.api_secret is not None else "ed25519"

    def add_to(self, simulator: Simulator) -> SimAccount:
        public_pem = None
        if self.private_key_pem is not None:
            private = serialization.load_pem_private_key(self.private_key_pem, password=None)
            public_pem = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return simulator.add_account(
            self.name,
            api_key=self.api_key,
            api_secret=self.api_secret,
            ed25519_public_key=public_pem,
            multi_assets=self.multi_assets,
            hedge_mode=self.hedge_mode,
            positions=self.positions,
        )


def _demo_ed25519_pem() -> bytes:
    seed = hashlib.sha256(b"binance-futures-exporter demo ed25519 seed").digest()
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------- server


class RequestRecord(NamedTuple):
    """One request frame as the simulator received it.

    ``api_key`` is the ``apiKey`` param, else the key the connection is logged
    on with, else None.
    """

    monotonic: float
    wall_ms: int
    method: str | None
    api_key: str | None
    id: Any
    connection: int


@dataclass
class _Request:
    id: Any
    method: str | None
    params: dict[str, Any]
    error: ApiError | None = None


@dataclass
class _Connection:
    number: int
    connected_since: int
    return_rate_limits: bool
    account: SimAccount | None = None
    authorized_since: int | None = None


@dataclass
class _Reply:
    payload: dict[str, Any]
    used_weight: int
    with_rate_limits: bool
    account: SimAccount | None = None  # set on successful v2/account.status answers


def _parse_frame(frame: str | bytes) -> _Request:
    """Read a request frame; anything unusable becomes a request carrying an error."""
    invalid = _Request(None, None, {}, ApiError(400, -1102, "Malformed request."))
    if isinstance(frame, bytes):
        return invalid
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return invalid
    if not isinstance(message, dict):
        return invalid
    request_id = message.get("id")
    if "id" not in message or not (
        request_id is None
        or isinstance(request_id, str)
        or (isinstance(request_id, int) and not isinstance(request_id, bool))
    ):
        return _Request(None, None, {}, _malformed("id"))
    method = message.get("method")
    if not isinstance(method, str):
        return _Request(request_id, None, {}, _malformed("method"))
    params = message.get("params", {})
    if not isinstance(params, dict):
        return _Request(request_id, method, {}, _malformed("params"))
    return _Request(request_id, method, params)


def _wants_rate_limits(conn: _Connection, params: dict[str, Any]) -> bool:
    """``returnRateLimits``: the request's param, else the connection URL's, else true."""
    return params.get("returnRateLimits", conn.return_rate_limits) is not False


def _time_params(params: dict[str, Any]) -> tuple[int, float]:
    timestamp = params.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise _malformed("timestamp")
    window = params.get("recvWindow", DEFAULT_RECV_WINDOW)
    if (
        not isinstance(window, int | float)
        or isinstance(window, bool)
        or not 0 < window <= MAX_RECV_WINDOW
    ):
        raise ApiError(
            400, -1102, f"Param 'recvWindow' must be greater than 0 and at most {MAX_RECV_WINDOW}."
        )
    return timestamp, window


class Simulator:
    """A WebSocket server on loopback that behaves like Binance's futures WebSocket API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        weight_limit: int = 2400,
        clock_offset_ms: int = 0,
        lively: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.weight_limit = weight_limit
        self.clock_offset_ms = clock_offset_ms
        self.lively = lively
        #: While True, WebSocket handshakes are refused with HTTP 503.
        self.refuse_connections = False
        self.requests: list[RequestRecord] = []
        self.connections_opened = 0
        self.accounts: dict[str, SimAccount] = {}
        self._by_key: dict[str, SimAccount] = {}
        self._faults: list[_QueuedFault] = []
        self._banned_until = 0
        self._weight_minute = 0
        self._weight = 0
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_handshake,
            ping_interval=180,
            ping_timeout=600,
            close_timeout=1,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the server and every connection; pending delayed answers are dropped."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            self._cancel_delayed()
            await server.wait_closed()
        # Frames still being handled while connections closed may have queued more.
        self._cancel_delayed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _cancel_delayed(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return f"ws://{self.host}:{self.port}{PATH}"

    # ---- set-up and control

    def server_time_ms(self) -> int:
        return server_time_now(self.clock_offset_ms)

    def add_account(
        self,
        name: str,
        *,
        api_key: str,
        api_secret: str | None = None,
        ed25519_public_key: bytes | None = None,
        rsa_public_key: bytes | None = None,
        multi_assets: bool = False,
        hedge_mode: bool = False,
        positions: int = 3,
    ) -> SimAccount:
        """Add an account whose key is checked with exactly one of the three credentials."""
        if sum(c is not None for c in (api_secret, ed25519_public_key, rsa_public_key)) != 1:
            raise ValueError("give exactly one of api_secret, ed25519_public_key, rsa_public_key")
        if name in self.accounts or api_key in self._by_key:
            raise ValueError(f"account name {name!r} or its API key is already in use")
        if api_secret is not None:
            verifier = Verifier.hmac_sha256(api_secret)
        elif ed25519_public_key is not None:
            verifier = Verifier.ed25519(ed25519_public_key)
        else:
            assert rsa_public_key is not None
            verifier = Verifier.rsa(rsa_public_key)
        account = SimAccount(
            name,
            api_key=api_key,
            verifier=verifier,
            multi_assets=multi_assets,
            hedge_mode=hedge_mode,
            lively=self.lively,
            rng=random.Random(f"{self.seed}/{name}") if self.seed is not None else random.Random(),
            clock=self.server_time_ms,
        )
        account.populate(positions)
        self.accounts[name] = account
        self._by_key[api_key] = account
        return account

    def inject(self, fault: Fault) -> None:
        """Queue a fault. Each request takes the first queued fault matching its method."""
        if fault.count < 1:
            raise ValueError("a fault must apply to at least one request")
        self._faults.append(_QueuedFault(fault, fault.count))

    def ban(self, until_ms: int) -> None:
        """Answer every request with 418 until server time ``until_ms``."""
        self._banned_until = until_ms

    def weight_used(self) -> int:
        """REQUEST_WEIGHT used in the current (server clock) minute."""
        return self._weight if self.server_time_ms() // 60_000 == self._weight_minute else 0

    @staticmethod
    def demo_accounts() -> list[DemoAccount]:
        return [
            DemoAccount("demo-oneway", _demo_token("oneway key"), _demo_token("oneway secret")),
            DemoAccount(
                "demo-hedge",
                _demo_token("hedge key"),
                _demo_token("hedge secret"),
                multi_assets=True,
                hedge_mode=True,
                positions=4,
            ),
            DemoAccount(
                "demo-ed25519",
                _demo_token("ed25519 key"),
                private_key_pem=_demo_ed25519_pem(),
                positions=2,
            ),
        ]

    # ---- connections

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        if urlsplit(request.path).path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections_opened += 1
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
        conn = _Connection(
            number=self.connections_opened,
            connected_since=self.server_time_ms(),
            return_rate_limits=query.get("returnRateLimits", ["true"])[-1].lower() != "false",
        )
        self._charge(CONNECTION_WEIGHT)
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                if not await self._serve_frame(ws, conn, frame):
                    return

    async def _serve_frame(
        self, ws: ServerConnection, conn: _Connection, frame: str | bytes
    ) -> bool:
        """Answer one frame, applying a queued fault; False once the connection is done."""
        request = _parse_frame(frame)
        api_key = request.params.get("apiKey")
        if not isinstance(api_key, str):
            api_key = conn.account.api_key if conn.account else None
        self.requests.append(
            RequestRecord(
                time.monotonic(),
                server_time_now(),
                request.method,
                api_key,
                request.id,
                conn.number,
            )
        )
        fault = self._take_fault(request.method, api_key)
        reply = self._reply(conn, request)
        return await self._deliver(ws, reply, fault)

    def _take_fault(self, method: str | None, api_key: str | None) -> Fault | None:
        for queued in self._faults:
            if queued.fault.method in (None, method) and queued.fault.api_key in (None, api_key):
                queued.remaining -= 1
                if queued.remaining == 0:
                    self._faults.remove(queued)
                return queued.fault
        return None

    async def _deliver(self, ws: ServerConnection, reply: _Reply, fault: Fault | None) -> bool:
        match fault:
            case Drop(abrupt=True):
                ws.transport.abort()
                return False
            case Drop():
                await ws.close(CloseCode.INTERNAL_ERROR, "simulated drop")
                return False
            case Delay(seconds=seconds):
                task = asyncio.create_task(self._send_later(ws, reply, seconds))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return True
            case ErrorAnswer():
                error = ApiError(fault.status, fault.code, fault.msg, fault.data)
                reply = self._error_reply(reply.payload["id"], error, reply)
            case Mutate(fn=fn) if "result" in reply.payload:
                result = copy.deepcopy(reply.payload["result"])
                fn(result)
                reply.payload["result"] = result
            case RawFrame(frame=raw, replace=replace):
                await ws.send(raw)
                if replace:
                    return True
            case Unsolicited(frame=unsolicited):
                await ws.send(json.dumps(unsolicited))
        await self._send(ws, reply)
        if isinstance(fault, CloseConnection):
            await ws.close(fault.code)
            return False
        return True

    async def _send(self, ws: ServerConnection, reply: _Reply) -> None:
        if reply.account is not None:
            reply.account.last_result = reply.payload["result"]
        await ws.send(json.dumps(reply.payload))

    async def _send_later(self, ws: ServerConnection, reply: _Reply, seconds: float) -> None:
        await asyncio.sleep(seconds)
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, reply)

    # ---- answers

    def _reply(self, conn: _Connection, request: _Request) -> _Reply:
        valid = request.error is None and request.method in METHOD_WEIGHTS
        used = self._charge(METHOD_WEIGHTS[request.method] if valid else INVALID_REQUEST_WEIGHT)
        reply = _Reply({"id": request.id}, used, _wants_rate_limits(conn, request.params))
        try:
            self._check_limits(used)
            if request.error is not None:
                raise request.error
            result, reply.account = self._dispatch(conn, request)
        except ApiError as error:
            return self._error_reply(request.id, error, reply)
        reply.payload |= {"status": 200, "result": result}
        self._add_rate_limits(reply)
        return reply

    def _error_reply(self, request_id: Any, error: ApiError, template: _Reply) -> _Reply:
        reply = _Reply(
            {"id": request_id, "status": error.status, "error": error.body()},
            template.used_weight,
            template.with_rate_limits,
        )
        self._add_rate_limits(reply)
        return reply

    def _add_rate_limits(self, reply: _Reply) -> None:
        if reply.with_rate_limits:
            reply.payload["rateLimits"] = [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                    "count": reply.used_weight,
                }
            ]

    def _charge(self, weight: int) -> int:
        """Add weight to the current calendar minute's count and return the new count."""
        minute = self.server_time_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight = minute, 0
        self._weight += weight
        return self._weight

    def _check_limits(self, used: int) -> None:
        now = self.server_time_ms()
        if now < self._banned_until:
            raise ApiError(
                418,
                -1003,
                f"Way too much request weight used; IP banned until {self._banned_until}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                {"retryAfter": self._banned_until, "serverTime": now},
            )
        if used > self.weight_limit:
            raise ApiError(
                429,
                -1003,
                f"Too many requests; current limit is {self.weight_limit} request weight per "
                "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                {"retryAfter": (now // 60_000 + 1) * 60_000, "serverTime": now},
            )

    def _dispatch(
        self, conn: _Connection, request: _Request
    ) -> tuple[dict[str, Any], SimAccount | None]:
        params = request.params
        if request.method == ACCOUNT_METHOD:
            account = self._authenticate(conn, params)
            if account.lively:
                account.step()
            return account.result(), account
        if request.method == "session.logon":
            account = self._verify_signed(params)
            if account.verifier.kind != "ED25519":
                raise ApiError(400, -4056, f"{account.verifier.kind} API key is not supported.")
            conn.account, conn.authorized_since = account, self.server_time_ms()
        elif request.method == "session.logout":
            conn.account, conn.authorized_since = None, None
        elif request.method != "session.status":
            raise ApiError(400, -1102, f"Unknown method '{request.method}'.")
        return self._session_status(conn, params), None

    def _session_status(self, conn: _Connection, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiKey": conn.account.api_key if conn.account else None,
            "authorizedSince": conn.authorized_since,
            "connectedSince": conn.connected_since,
            "returnRateLimits": _wants_rate_limits(conn, params),
            "serverTime": self.server_time_ms(),
            "userDataStream": False,
        }

    def _authenticate(self, conn: _Connection, params: dict[str, Any]) -> SimAccount:
        """The account a request acts for: its signature's, else the session's."""
        if "signature" not in params and conn.account is not None:
            self._check_timestamp(*_time_params(params))
            return conn.account
        return self._verify_signed(params)

    def _verify_signed(self, params: dict[str, Any]) -> SimAccount:
        api_key = params.get("apiKey")
        if not isinstance(api_key, str) or not api_key:
            raise _malformed("apiKey")
        if not isinstance(params.get("signature"), str):
            raise _malformed("signature")
        timestamp, window = _time_params(params)
        account = self._by_key.get(api_key)
        if account is None:
            if _KEY_FORMAT.fullmatch(api_key):
                raise ApiError(401, -2015, MSG_BAD_KEY)
            raise ApiError(401, -2014, MSG_KEY_FORMAT)
        if not account.verifier.verify(params):
            raise ApiError(400, -1022, MSG_BAD_SIGNATURE)
        self._check_timestamp(timestamp, window)
        return account

    def _check_timestamp(self, timestamp: int, window: float) -> None:
        now = self.server_time_ms()
        if not (timestamp < now + 1000 and now - timestamp <= window):
            raise ApiError(400, -1021, MSG_RECV_WINDOW)
