"""The accounts of ``binance-futures-exporter --demo``: fixed credentials and a market to watch.

``--demo`` starts a lively :class:`~exporter.simulator.Simulator` on loopback,
adds these accounts to it, and configures the exporter with the same keys. The
credentials are derived from fixed labels, so they are the same on every run
and worthless anywhere but in the simulator.

Besides random positions whose marks drift: every account holds a position in
a symbol that is not ASCII, as Binance lists them; one account holds a
position that drifts toward liquidation and back (the liquidation cycle
below), so that a Prometheus with the shipped rules sees the
liquidation-distance warning fire and resolve within a few minutes; another
has open orders without a position.

On the user data stream the cycle brings a margin call when its position
comes within 5 % of liquidation, and a forced close: a second, small
isolated position (:data:`CYCLE_FORCED_SYMBOL`) whose mark crashes through
its liquidation price while the cycle is in danger, so that the liquidation
engine closes it. It is opened again (with the lost margin deposited back)
once the cycle is safe again.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .accounts import BASE_PRICES
from .positions import EIGHT_PLACES

if TYPE_CHECKING:
    from .accounts import SimAccount
    from .server import Simulator

__all__ = [
    "CYCLE_DANGER_DISTANCE",
    "CYCLE_DANGER_S",
    "CYCLE_FALL_S",
    "CYCLE_FORCED_SYMBOL",
    "CYCLE_PERIOD_S",
    "CYCLE_RISE_S",
    "CYCLE_SAFE_DISTANCE",
    "CYCLE_SAFE_S",
    "CYCLE_SYMBOL",
    "DemoAccount",
    "demo_accounts",
    "liquidation_cycle_distance",
    "liquidation_cycle_mark",
]

# The liquidation cycle. Its position's liquidation distance, (mark - liquidation
# price) / mark, falls from CYCLE_SAFE_DISTANCE to CYCLE_DANGER_DISTANCE in
# CYCLE_FALL_S seconds, stays there CYCLE_DANGER_S seconds, climbs back in
# CYCLE_RISE_S seconds and stays safe CYCLE_SAFE_S seconds; then again, every
# CYCLE_PERIOD_S seconds from the moment the demo account was set up. Against
# the shipped alerts (warning below 15 % for 1m, critical below 5 %): below 15 %
# for about 145 s from second 18 (the warning fires at about second 78 and
# resolves at about 162), below 5 % for about 74 s, above 15 % for 60 % of the
# cycle.

#: Liquidation distance while safe, well above the warning threshold (15 %).
CYCLE_SAFE_DISTANCE = Decimal("0.20")
#: Liquidation distance at its closest, below the critical threshold (5 %).
CYCLE_DANGER_DISTANCE = Decimal("0.03")
#: Seconds to fall from safe to danger (first, so the warning comes early).
CYCLE_FALL_S = 60
#: Seconds held at the danger distance.
CYCLE_DANGER_S = 60
#: Seconds to climb back from danger to safe.
CYCLE_RISE_S = 60
#: Seconds held at the safe distance before the next fall.
CYCLE_SAFE_S = 180
CYCLE_PERIOD_S = CYCLE_FALL_S + CYCLE_DANGER_S + CYCLE_RISE_S + CYCLE_SAFE_S
#: The cycle's position: isolated long in one-way mode, fixed liquidation price.
CYCLE_SYMBOL = "ETHUSDT"
_CYCLE_AMOUNT = "2"
_CYCLE_LEVERAGE = 5
#: The cycle's forced close: a small isolated long, liquidated in each danger phase.
CYCLE_FORCED_SYMBOL = "SOLUSDT"
_FORCED_AMOUNT = "0.5"
#: Its mark while the cycle is in danger, as a fraction of its entry price: below the
#: liquidation price of an isolated long at _CYCLE_LEVERAGE (about 0.80).
_FORCED_CRASH = Decimal("0.75")


def liquidation_cycle_distance(elapsed_ms: int) -> Decimal:
    """The cycle's liquidation distance ``elapsed_ms`` after its start (a fraction)."""
    t = Decimal(elapsed_ms % (CYCLE_PERIOD_S * 1000)) / 1000
    span = CYCLE_SAFE_DISTANCE - CYCLE_DANGER_DISTANCE
    if t < CYCLE_FALL_S:
        return CYCLE_SAFE_DISTANCE - span * t / CYCLE_FALL_S
    t -= CYCLE_FALL_S
    if t < CYCLE_DANGER_S:
        return CYCLE_DANGER_DISTANCE
    t -= CYCLE_DANGER_S
    if t < CYCLE_RISE_S:
        return CYCLE_DANGER_DISTANCE + span * t / CYCLE_RISE_S
    return CYCLE_SAFE_DISTANCE


def _in_danger(elapsed_ms: int) -> bool:
    t = elapsed_ms % (CYCLE_PERIOD_S * 1000) / 1000
    return CYCLE_FALL_S <= t < CYCLE_FALL_S + CYCLE_DANGER_S


def _safe_again(elapsed_ms: int) -> bool:
    t = elapsed_ms % (CYCLE_PERIOD_S * 1000) / 1000
    return t >= CYCLE_FALL_S + CYCLE_DANGER_S + CYCLE_RISE_S


def liquidation_cycle_mark(liquidation_price: Decimal, elapsed_ms: int) -> Decimal:
    """The cycle's mark price ``elapsed_ms`` after its start, for a long position.

    It is the price whose liquidation distance from ``liquidation_price`` is
    :func:`liquidation_cycle_distance` at that time.
    """
    distance = liquidation_cycle_distance(elapsed_ms)
    return (liquidation_price / (1 - distance)).quantize(EIGHT_PLACES)


def _demo_token(label: str) -> str:
    return hashlib.sha256(f"binance-futures-exporter demo {label}".encode()).hexdigest()


@dataclass(frozen=True)
class DemoAccount:
    """Fixed credentials for ``--demo``, and what the account holds besides random positions.

    The simulator and the exporter's config share the credentials.
    """

    name: str
    api_key: str
    api_secret: str | None = None
    private_key_pem: bytes | None = None  # Ed25519, PKCS#8, unencrypted
    multi_assets: bool = False
    hedge_mode: bool = False
    positions: int = 3
    #: (symbol, side, amount) of positions the market never closes, opened at the
    #: symbol's starting price.
    kept_positions: tuple[tuple[str, str, str], ...] = ()
    #: Hold the liquidation cycle's position (one-way mode).
    liquidation_cycle: bool = False
    #: (symbol, side, initial margin) of open orders in a symbol without a position.
    open_orders: tuple[str, str, str] | None = None

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
        account = simulator.add_account(
            self.name,
            api_key=self.api_key,
            api_secret=self.api_secret,
            ed25519_public_key=public_pem,
            multi_assets=self.multi_assets,
            hedge_mode=self.hedge_mode,
            positions=self.positions,
        )
        for symbol, side, amount in self.kept_positions:
            account.open_position(symbol, side, amount, str(BASE_PRICES[symbol]), kept=True)
        if self.open_orders is not None:
            symbol, side, margin = self.open_orders
            _clear(account, symbol, side)
            account.place_open_order(symbol, side, margin)
        if self.liquidation_cycle:
            _start_liquidation_cycle(account, simulator.server_time_ms())
        return account


def _clear(account: SimAccount, symbol: str, side: str) -> None:
    """Close a random position the account may hold in ``symbol`` and ``side``."""
    with contextlib.suppress(KeyError):
        account.close_position(symbol, side)


def _start_liquidation_cycle(account: SimAccount, start_ms: int) -> None:
    account.open_position(
        CYCLE_SYMBOL,
        "BOTH",
        _CYCLE_AMOUNT,
        str(BASE_PRICES[CYCLE_SYMBOL]),
        isolated=True,
        leverage=_CYCLE_LEVERAGE,
        kept=True,
    )
    liquidation = account.liquidation_price(CYCLE_SYMBOL, "BOTH")
    account.set_mark_path(
        CYCLE_SYMBOL, lambda now_ms: liquidation_cycle_mark(liquidation, now_ms - start_ms)
    )
    _start_forced_close(account, start_ms)


def _start_forced_close(account: SimAccount, start_ms: int) -> None:
    """The cycle's forced close: a position the market liquidates in every danger phase."""
    entry = BASE_PRICES[CYCLE_FORCED_SYMBOL]
    _clear(account, CYCLE_FORCED_SYMBOL, "BOTH")

    def open_it() -> None:
        account.open_position(CYCLE_FORCED_SYMBOL, "BOTH", _FORCED_AMOUNT, str(entry),
                              isolated=True, leverage=_CYCLE_LEVERAGE)

    open_it()
    margin = (Decimal(_FORCED_AMOUNT) * entry / _CYCLE_LEVERAGE).quantize(EIGHT_PLACES)
    account.set_mark_path(
        CYCLE_FORCED_SYMBOL,
        lambda now_ms: entry * _FORCED_CRASH if _in_danger(now_ms - start_ms) else entry)

    def reopen(now_ms: int) -> None:
        if _safe_again(now_ms - start_ms) and not account.holds(CYCLE_FORCED_SYMBOL, "BOTH"):
            account.deposit("USDT", margin)  # the margin the liquidation took
            open_it()

    account.on_step(reopen)


def _demo_ed25519_pem() -> bytes:
    seed = hashlib.sha256(b"binance-futures-exporter demo ed25519 seed").digest()
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def demo_accounts() -> list[DemoAccount]:
    """The demo accounts, each with a position in a symbol that is not ASCII.

    One-way HMAC with the liquidation cycle; hedge-mode multi-assets HMAC with
    a hedge pair and open orders; Ed25519 (session logon).
    """
    return [
        DemoAccount(
            "demo-oneway",
            _demo_token("oneway key"),
            _demo_token("oneway secret"),
            kept_positions=(("币安人生USDT", "BOTH", "15000"),),
            liquidation_cycle=True,
        ),
        DemoAccount(
            "demo-hedge",
            _demo_token("hedge key"),
            _demo_token("hedge secret"),
            multi_assets=True,
            hedge_mode=True,
            positions=4,
            kept_positions=(("龙虾USDT", "LONG", "40000"), ("龙虾USDT", "SHORT", "15000")),
            open_orders=("牛来USDT", "SHORT", "25.5"),
        ),
        DemoAccount(
            "demo-ed25519",
            _demo_token("ed25519 key"),
            private_key_pem=_demo_ed25519_pem(),
            positions=2,
            kept_positions=(("我踏马来了USDT", "BOTH", "-50000"),),
        ),
    ]
