"""Signature checks for signed requests, written independently of :mod:`exporter.signing`.

Binance signs every param but ``signature``, sorted by name and joined as
``name=value&…``, with the key the API key was registered with: HMAC-SHA256
(hex digest), Ed25519 or RSA PKCS#1 v1.5 with SHA-256 (both base64).
:class:`Verifier` checks one key's signatures; :func:`signature_payload` is
the text it checks them over.

The WebSocket API verifies the signature over the values as they are, not
percent-encoded: a non-ASCII value (a symbol such as ``币安人生USDT``) is
signed as its UTF-8 bytes. A signature over the percent-encoded text is
answered -1022, as Binance does (reported against Binance's own Rust
connector, which encoded the values).

Nothing here is shared with the exporter's own signing code, so a test of the
exporter against the simulator is a check by a second implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = ["Verifier", "signature_payload"]


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signature_payload(params: dict[str, Any]) -> str:
    """What Binance signs: every param but ``signature``, sorted by name, as ``k=v&…``.

    Values are the raw text, never percent-encoded; the signer signs the UTF-8
    encoding of this string.
    """
    return "&".join(
        f"{name}={_param_text(params[name])}" for name in sorted(params) if name != "signature"
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
