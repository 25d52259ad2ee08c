"""Request signing for Binance's SIGNED / USER_DATA WebSocket API methods.

The payload is every request parameter except ``signature``, sorted by name
and joined as ``k=v`` with ``&``, values as they are (UTF-8, not
percent-encoded: the WebSocket API verifies the unencoded text, and a
percent-encoded non-ASCII value such as a ``币安人生USDT`` symbol gets -1022).
HMAC-SHA256 keys sign it as lower-case hex; Ed25519 and RSA (PKCS#1 v1.5,
SHA-256) keys sign it as base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "Ed25519Signer",
    "HmacSigner",
    "PrivateKeyError",
    "RsaSigner",
    "Signer",
    "load_private_key",
    "payload",
    "signed",
]


class PrivateKeyError(ValueError):
    """A private key that cannot be loaded; the message never contains key material."""


class Signer(Protocol):
    """Signs a payload; ``key_type`` is ``hmac``, ``ed25519`` or ``rsa``."""

    key_type: str

    def sign(self, payload: bytes) -> str: ...


class HmacSigner:
    key_type = "hmac"

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "HmacSigner(<secret>)"


class Ed25519Signer:
    key_type = "ed25519"

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self._key.sign(payload)).decode()

    def __repr__(self) -> str:
        return "Ed25519Signer(<private key>)"


class RsaSigner:
    key_type = "rsa"

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def sign(self, payload: bytes) -> str:
        signature = self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()

    def __repr__(self) -> str:
        return "RsaSigner(<private key>)"


def load_private_key(pem: bytes, passphrase: bytes | None = None) -> Ed25519Signer | RsaSigner:
    """Load a PEM private key (Ed25519 or RSA, optionally encrypted) into a signer.

    Errors name what is wrong without echoing any part of the key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:  # passphrase missing for an encrypted key, or given for a plain one
        raise PrivateKeyError(f"private key passphrase problem: {exc}") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " or the passphrase is wrong" if passphrase else ""
        raise PrivateKeyError(f"private key is not a valid PEM Ed25519/RSA key{hint}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519Signer(key)
    if isinstance(key, rsa.RSAPrivateKey):
        return RsaSigner(key)
    raise PrivateKeyError(
        f"private key type {type(key).__name__} is not supported (use Ed25519 or RSA)"
    )


def payload(params: Mapping[str, object]) -> bytes:
    """The bytes Binance signs: params sorted by name, raw ``k=v`` joined with ``&``, UTF-8."""
    return "&".join(f"{name}={_text(value)}" for name, value in sorted(params.items())).encode()


def _text(value: object) -> str:
    """A parameter as the JSON request carries it: booleans are ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signed(params: Mapping[str, object], signer: Signer) -> dict[str, object]:
    """Return a copy of ``params`` with its ``signature`` added."""
    unsigned = {name: value for name, value in params.items() if name != "signature"}
    return {**unsigned, "signature": signer.sign(payload(unsigned))}
