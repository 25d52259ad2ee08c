"""Loopback stand-in for Binance's USDⓈ-M futures WebSocket API, never cleaner than Binance.

It serves ``v2/account.status``, ``v2/account.position`` and the ``session.*``
methods the way ``wss://ws-fapi.binance.com/ws-fapi/v1`` does (frames,
signatures over raw UTF-8 values, recvWindow, REQUEST_WEIGHT, bans, the
futures wording of errors, Unicode symbols, rows of open orders without a
position) for simulated accounts, and lets tests inject faults. It also
serves the user data stream: ``userDataStream.start``/``.ping``/``.stop`` and
the ``/private/ws`` connections of ``wss://fstream.binance.com``, which carry
every change of an account as Binance's events (``ACCOUNT_UPDATE``,
``ORDER_TRADE_UPDATE`` with forced closes, ``MARGIN_CALL``,
``listenKeyExpired``).
``binance-futures-exporter --demo`` runs it with :meth:`Simulator.demo_accounts`.
Where Binance's real behaviour is unknown, the simulator says so in a comment
and does the harsher thing.

Control API (everything a test or ``--demo`` uses):

- :class:`Simulator` (``async with Simulator(seed=..., lively=...) as sim``):
  ``sim.url``; ``sim.stream_url`` (``.../private/ws``); ``sim.add_account(name,
  api_key=..., api_secret= | ed25519_public_key= | rsa_public_key=,
  multi_assets=, hedge_mode=, positions=, portfolio_margin=)`` returns a
  :class:`SimAccount`; ``sim.inject(fault)``; ``sim.ban(until_ms)``;
  ``sim.refuse_connections = True`` (HTTP 503 on handshakes);
  ``sim.clock_offset_ms``; ``sim.weight_used()``; and what happened:
  ``sim.requests`` (:class:`RequestRecord` per frame),
  ``sim.connections_opened`` and ``sim.open_connections`` (WebSocket API
  connections only). ``Simulator(stream_lifetime=...)`` sets when stream
  connections are closed (24 h by default, on the ``wall`` clock).
- The user data stream, ``sim.user_streams`` (:class:`UserStreams`): faults
  ``drop(name, abrupt=False)``, ``silence(name)`` (the key is forgotten
  without an event: a silent socket, and -1125 to the next ping),
  ``expire(name)`` (``listenKeyExpired`` now), ``replay(name, event_type=None)``
  (the last event, of a type, again), ``raw(name, frame)`` (a frame as it is), ``burst(name,
  count)`` (``count`` funding fees in a row);
  ``check()`` (expire keys and end connections due now, else done every
  50 ms); and what happened: ``pushed`` (account name, event),
  ``key_of(name)``, ``connections_opened``, ``open_connections``.
- :class:`SimAccount`: ``revoke()`` / ``restore()`` (the API key; an id-less
  401/-2015 frame on the connections using it); ``set_asset_field``,
  ``open_position`` (``kept=True``: the market never closes it),
  ``close_position``, ``place_open_order`` / ``cancel_open_orders``,
  ``deposit``, ``funding_fee``, the forced closes ``liquidate``,
  ``auto_deleverage`` and ``settle``, ``holds``, ``set_mark``,
  ``set_mark_path``, ``on_step(hook)``, ``step`` (a mark within
  :data:`MARGIN_CALL_DISTANCE` of a position's liquidation price sends a
  margin call); the answers ``result()`` and ``position_result(symbol=None)``,
  and ``liquidation_price(symbol, side)``; ``last_result`` /
  ``last_positions`` are the results last sent for it.
- Faults (:mod:`.faults`): :class:`Drop`, :class:`Delay`,
  :class:`ErrorAnswer`, :class:`RawFrame`, :class:`Mutate`,
  :class:`Unsolicited`, :class:`CloseConnection`, :class:`Mute`,
  :class:`Stall`.
- The demo (:mod:`.demo`): :func:`demo_accounts`, and the liquidation cycle
  one of them follows (with its margin call and forced close on the user
  data stream), as pure functions of time:
  :func:`liquidation_cycle_distance`, :func:`liquidation_cycle_mark`.

Modules: :mod:`.protocol` (method names, weights, error texts),
:mod:`.signing`, :mod:`.faults`, :mod:`.positions` (a row's figures and
liquidation price), :mod:`.margins` (per-asset figures, margin pools),
:mod:`.events` (the stream's events, spelled), :mod:`.accounts`,
:mod:`.userstream` (listen keys and stream connections), :mod:`.demo`,
:mod:`.frames` (reading a request), :mod:`.server`.

The package deliberately imports nothing else from ``exporter``: signatures
are checked here with its own code (:mod:`.signing`), so tests of the
exporter's signing code against it are an independent check rather than the
same code agreeing with itself.
"""

from .accounts import BASE_PRICES, MARGIN_CALL_DISTANCE, TOTAL_FIELDS, SimAccount
from .demo import (
    CYCLE_DANGER_DISTANCE,
    CYCLE_DANGER_S,
    CYCLE_FALL_S,
    CYCLE_FORCED_SYMBOL,
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
from .events import ADL_CLIENT_ID, LIQUIDATION_PREFIX, SETTLEMENT_PREFIX
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
from .margins import ASSET_FIELDS
from .positions import MAINT_MARGIN_RATE
from .protocol import (
    ACCOUNT_METHOD,
    ACCOUNT_V1_METHOD,
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
    MSG_NO_LISTEN_KEY,
    MSG_RECV_WINDOW,
    MSG_TOO_MANY_REQUESTS,
    PATH,
    POSITION_METHOD,
    STREAM_PATH,
    USER_STREAM_METHODS,
    ApiError,
)
from .server import RequestRecord, Simulator, server_time_now
from .signing import Verifier, signature_payload
from .userstream import KEY_VALIDITY_MS, UserStreams

__all__ = [
    "ACCOUNT_METHOD",
    "ACCOUNT_V1_METHOD",
    "ADL_CLIENT_ID",
    "ASSET_FIELDS",
    "BASE_PRICES",
    "CONNECTION_WEIGHT",
    "CYCLE_DANGER_DISTANCE",
    "CYCLE_DANGER_S",
    "CYCLE_FALL_S",
    "CYCLE_FORCED_SYMBOL",
    "CYCLE_PERIOD_S",
    "CYCLE_RISE_S",
    "CYCLE_SAFE_DISTANCE",
    "CYCLE_SAFE_S",
    "CYCLE_SYMBOL",
    "DEFAULT_RECV_WINDOW",
    "INVALID_REQUEST_WEIGHT",
    "KEY_VALIDITY_MS",
    "LIQUIDATION_PREFIX",
    "MAINT_MARGIN_RATE",
    "MARGIN_CALL_DISTANCE",
    "MAX_RECV_WINDOW",
    "METHOD_WEIGHTS",
    "MSG_BAD_KEY",
    "MSG_BAD_SIGNATURE",
    "MSG_BAD_SYMBOL",
    "MSG_BANNED",
    "MSG_KEY_FORMAT",
    "MSG_KEY_TYPE",
    "MSG_MALFORMED_REQUEST",
    "MSG_NO_LISTEN_KEY",
    "MSG_RECV_WINDOW",
    "MSG_TOO_MANY_REQUESTS",
    "PATH",
    "POSITION_METHOD",
    "SETTLEMENT_PREFIX",
    "STREAM_PATH",
    "TOTAL_FIELDS",
    "USER_STREAM_METHODS",
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
    "UserStreams",
    "Verifier",
    "demo_accounts",
    "liquidation_cycle_distance",
    "liquidation_cycle_mark",
    "server_time_now",
    "signature_payload",
]
