"""Signing against Binance's published vectors and with real Ed25519/RSA keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from exporter.signing import (
    HmacSigner,
    PrivateKeyError,
    load_private_key,
    payload,
    signed,
)

VECTOR_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
VECTOR_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
# Binance's published Ed25519 test key (protocol-notes.md).
ED25519_TEST_PEM = (b"-----BEGIN PRIVATE KEY-----\n"
                    b"MC4CAQAwBQYDK2VwBCIEIIJEYWtGBrhACmb9Dvy+qa8WEf0lQOl1s4CLIAB9m89u\n"
                    b"-----END PRIVATE KEY-----\n")


def test_hmac_vector_account_request() -> None:
    params = signed({"apiKey": VECTOR_KEY, "timestamp": 1649729878532}, HmacSigner(VECTOR_SECRET))
    assert params["signature"] == (
        "1cf54395b336b0a9727ef27d5d98987962bc47aca6e13fe978612d0adee066ed")


def test_hmac_vector_sorted_order_params() -> None:
    # Given out of order: the payload sorts them by name as Binance does.
    params = {"timestamp": 1645423376532, "type": "LIMIT", "symbol": "BTCUSDT", "side": "SELL",
              "timeInForce": "GTC", "quantity": "0.01000000", "price": "52000.00",
              "recvWindow": 100, "apiKey": VECTOR_KEY}
    assert payload(params) == (
        f"apiKey={VECTOR_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL"
        "&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT").encode()
    assert signed(params, HmacSigner(VECTOR_SECRET))["signature"] == (
        "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24")


def test_unicode_values_are_signed_raw_not_percent_encoded() -> None:
    # The WebSocket API verifies the unencoded text; a percent-encoded 币 would get -1022.
    params = {"apiKey": VECTOR_KEY, "symbol": "币安人生USDT", "timestamp": 1764201600000,
              "recvWindow": 5000}
    assert payload(params) == (f"apiKey={VECTOR_KEY}&recvWindow=5000&symbol=币安人生USDT"
                               "&timestamp=1764201600000").encode()
    # Computed once with `openssl dgst -sha256 -hmac <secret>` over that UTF-8 text.
    assert signed(params, HmacSigner(VECTOR_SECRET))["signature"] == (
        "97105b57f91597eb26789cbbc5c483f873b5b668b89ec719ec9d479d685e6ce5")


def test_booleans_are_signed_as_json_writes_them() -> None:
    assert payload({"returnRateLimits": True, "b": False}) == b"b=false&returnRateLimits=true"


def test_signature_is_not_part_of_the_payload() -> None:
    signer = HmacSigner(VECTOR_SECRET)
    once = signed({"apiKey": VECTOR_KEY, "timestamp": 1}, signer)
    assert signed(once, signer) == once


def test_ed25519_fixed_vector_and_verification() -> None:
    signer = load_private_key(ED25519_TEST_PEM)
    assert signer.key_type == "ed25519"
    data = b"apiKey=abc&timestamp=1"
    signature = signer.sign(data)
    # Ed25519 is deterministic: this value was computed once with this key.
    assert signature == ("ns1QFUBxiLLCHuhDZS+M7wQ4uoYKP/lLorQlLUC9i9/o8cDsYtn53Ia7iu3zYZuc7mlJ"
                         "Z66aeP5A4loea/CPBA==")
    private = serialization.load_pem_private_key(ED25519_TEST_PEM, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    private.public_key().verify(base64.b64decode(signature), data)


def test_rsa_signature_verifies_with_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"pass phrase"))
    signer = load_private_key(pem, b"pass phrase")
    assert signer.key_type == "rsa"
    data = payload({"apiKey": "k", "timestamp": 5})
    key.public_key().verify(base64.b64decode(signer.sign(data)), data, padding.PKCS1v15(),
                            hashes.SHA256())


@pytest.mark.parametrize(("pem", "passphrase", "problem"), [
    (b"not a key", None, "not a valid PEM"),
    (ED25519_TEST_PEM, b"unneeded", "passphrase"),
])
def test_bad_keys_are_named_without_key_material(pem: bytes, passphrase: bytes | None,
                                                 problem: str) -> None:
    with pytest.raises(PrivateKeyError, match=problem) as caught:
        load_private_key(pem, passphrase)
    assert "MC4CAQAw" not in str(caught.value)


def test_encrypted_key_needs_its_passphrase() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"right"))
    with pytest.raises(PrivateKeyError, match="passphrase"):
        load_private_key(pem)
    with pytest.raises(PrivateKeyError, match="passphrase is wrong"):
        load_private_key(pem, b"wrong")
    assert load_private_key(pem, b"right").key_type == "ed25519"


def test_signers_hide_their_keys() -> None:
    assert VECTOR_SECRET not in repr(HmacSigner(VECTOR_SECRET))
    assert "MC4CAQAw" not in repr(load_private_key(ED25519_TEST_PEM))
