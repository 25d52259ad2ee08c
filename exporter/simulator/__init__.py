"""Loopback stand-in for Binance's USDⓈ-M futures WebSocket API.

It serves ``v2/account.status`` and the ``session.*`` methods the way
``wss://ws-fapi.binance.com/ws-fapi/v1`` does (frames, signatures, recvWindow,
REQUEST_WEIGHT, bans) for simulated accounts, and lets tests inject faults.
``binance-futures-exporter --demo`` runs it with :meth:`Simulator.demo_accounts`.

Control API (everything a test or ``--demo`` uses):

- :class:`Simulator` (``async with Simulator(seed=..., lively=...) as sim``):
  ``sim.url``; ``sim.add_account(name, api_key=..., api_secret= |
  ed25519_public_key= | rsa_public_key=, multi_assets=, hedge_mode=,
  positions=)`` returns a :class:`SimAccount`; ``sim.inject(fault)``;
  ``sim.ban(until_ms)``; ``sim.refuse_connections = True`` (HTTP 503 on
  handshakes); ``sim.clock_offset_ms``; ``sim.weight_used()``; and what
  happened: ``sim.requests`` (:class:`RequestRecord` per frame) and
  ``sim.connections_opened``.
- :class:`SimAccount`: ``set_asset_field``, ``open_position``,
  ``close_position``, ``step`` and ``result()``; ``last_result`` is the
  ``result`` last sent for it.
- Faults (:mod:`.faults`): :class:`Drop`, :class:`Delay`,
  :class:`ErrorAnswer`, :class:`RawFrame`, :class:`Mutate`,
  :class:`Unsolicited`, :class:`CloseConnection`.

The package deliberately imports nothing else from ``exporter``: signatures
are checked here with its own code (:mod:`.signing`), so tests of the
exporter's signing code against it are an independent check rather than the
same code agreeing with itself.
"""

from .accounts import ASSET_FIELDS, BASE_PRICES, TOTAL_FIELDS, SimAccount
from .demo import (
    CYCLE_DANGER_DISTANCE,
    CYCLE_DANGER_S,
    CYCLE_FALL_S,
    CYCLE_PERIOD_S,
    CYCLE_RISE_S,
    CYCLE_SAFE_DISTANCE,
    CYCLE_SAFE_S,
    CYCLE_SYMBOL,
    DemoAccount,
    demo_accounts,
    liquidation_cycle_distance,
    liquidation_cycle_mark,
)
from .faults import (
    CloseConnection,
    Delay,
    Drop,
    ErrorAnswer,
    Fault,
    Mutate,
    Mute,
    RawFrame,
    Stall,
    Unsolicited,
)
from .positions import MAINT_MARGIN_RATE
from .protocol import (
    ACCOUNT_METHOD,
    CONNECTION_WEIGHT,
    DEFAULT_RECV_WINDOW,
    INVALID_REQUEST_WEIGHT,
    MAX_RECV_WINDOW,
    METHOD_WEIGHTS,
    MSG_BAD_KEY,
    MSG_BAD_SIGNATURE,
    MSG_BAD_SYMBOL,
    MSG_BANNED,
    MSG_KEY_FORMAT,
    MSG_KEY_TYPE,
    MSG_MALFORMED_REQUEST,
    MSG_RECV_WINDOW,
    MSG_TOO_MANY_REQUESTS,
    PATH,
    POSITION_METHOD,
    ApiError,
)
from .server import RequestRecord, Simulator, server_time_now
from .signing import Verifier, signature_payload

__all__ = [
    "ACCOUNT_METHOD",
    "ASSET_FIELDS",
    "BASE_PRICES",
    "CONNECTION_WEIGHT",
    "CYCLE_DANGER_DISTANCE",
    "CYCLE_DANGER_S",
    "CYCLE_FALL_S",
    "CYCLE_PERIOD_S",
    "CYCLE_RISE_S",
    "CYCLE_SAFE_DISTANCE",
    "CYCLE_SAFE_S",
    "CYCLE_SYMBOL",
    "DEFAULT_RECV_WINDOW",
    "INVALID_REQUEST_WEIGHT",
    "MAINT_MARGIN_RATE",
    "MAX_RECV_WINDOW",
    "METHOD_WEIGHTS",
    "MSG_BAD_KEY",
    "MSG_BAD_SIGNATURE",
    "MSG_BAD_SYMBOL",
    "MSG_BANNED",
    "MSG_KEY_FORMAT",
    "MSG_KEY_TYPE",
    "MSG_MALFORMED_REQUEST",
    "MSG_RECV_WINDOW",
    "MSG_TOO_MANY_REQUESTS",
    "PATH",
    "POSITION_METHOD",
    "TOTAL_FIELDS",
    "ApiError",
    "CloseConnection",
    "Delay",
    "DemoAccount",
    "Drop",
    "ErrorAnswer",
    "Fault",
    "Mutate",
    "Mute",
    "RawFrame",
    "RequestRecord",
    "SimAccount",
    "Simulator",
    "Stall",
    "Unsolicited",
    "Verifier",
    "demo_accounts",
    "liquidation_cycle_distance",
    "liquidation_cycle_mark",
    "server_time_now",
    "signature_payload",
]
