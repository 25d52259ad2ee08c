"""The accounts of ``binance-futures-exporter --demo``: fixed credentials, shared by both sides.

``--demo`` starts a :class:`~exporter.simulator.Simulator` on loopback, adds
these accounts to it, and configures the exporter with the same keys. The
credentials are derived from fixed labels, so they are the same on every run
and worthless anywhere but in the simulator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

if TYPE_CHECKING:
    from .accounts import SimAccount
    from .server import Simulator

__all__ = ["DemoAccount", "demo_accounts"]


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


def demo_accounts() -> list[DemoAccount]:
    """The demo accounts: one-way HMAC, hedge-mode multi-assets HMAC, and Ed25519."""
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
