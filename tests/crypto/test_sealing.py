"""Sealed boxes and key wrapping (mftp.crypto.sealing)."""

from __future__ import annotations

from typing import Any

import nacl.bindings
import pytest

from mftp.crypto.errors import CryptoUsageError, DecryptionError
from mftp.crypto.sealing import (
    SEAL_OVERHEAD_BYTES,
    _wrap_key_with_nonce,
    seal,
    unseal,
    unwrap_key,
    wrap_key,
)
from mftp.crypto.signing import SigningIdentity

# Produced once by seal(SigningIdentity(bytes(range(32))).public, ...); sealed boxes
# are randomised, so the check is that the committed box still opens.
KNOWN_SEALED = (
    "a299f5c1731279a088cc68ac2fccc48fde804b954b046d21350fe7cf7c298439"
    "1447fbee9abde912df62948d69e0708c3d600b12ab76a205baebe886611062aa6733499570a286"
)
KNOWN_WRAPPED = (
    "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "1d0d4ee32a1b160d34c618d930b24d106ca1b390dfe250ca5f930870633f1cbb"
    "6cd5896e301899c8129f15f7e0e19917"
)


@pytest.fixture(scope="module")
def alice() -> SigningIdentity:
    return SigningIdentity(bytes(range(32)))


@pytest.fixture(scope="module")
def bob() -> SigningIdentity:
    return SigningIdentity(bytes(range(32, 64)))


def test_known_sealed_box_opens(alice: SigningIdentity) -> None:
    assert unseal(alice, bytes.fromhex(KNOWN_SEALED)) == b"sealed box known answer"


@pytest.mark.parametrize("size", [0, 1, 32, 1000])
def test_round_trip(alice: SigningIdentity, size: int) -> None:
    plaintext = bytes(range(256)) * 4
    plaintext = plaintext[:size]
    box = seal(alice.public.box_key, plaintext)
    assert len(box) == size + SEAL_OVERHEAD_BYTES
    assert unseal(alice, box) == plaintext
    assert unseal(alice.box_private_key, box) == plaintext
    assert unseal(alice, bytearray(box)) == plaintext


def test_seal_to_public_identity_and_randomised(alice: SigningIdentity) -> None:
    first, second = seal(alice.public, b"key"), seal(alice.public, b"key")
    assert first != second
    assert unseal(alice, first) == unseal(alice, second) == b"key"


def test_wrong_recipient(alice: SigningIdentity, bob: SigningIdentity) -> None:
    box = seal(alice.public, b"for alice")
    with pytest.raises(DecryptionError):
        unseal(bob, box)


def test_every_tampered_byte_is_detected(alice: SigningIdentity) -> None:
    box = seal(alice.public, b"0123456789")
    for position in range(len(box)):
        tampered = bytearray(box)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            unseal(alice, bytes(tampered))


def test_truncated_and_extended(alice: SigningIdentity) -> None:
    box = seal(alice.public, b"0123456789")
    for cut in range(len(box)):
        with pytest.raises(DecryptionError):
            unseal(alice, box[:cut])
    with pytest.raises(DecryptionError):
        unseal(alice, box + b"\x00")


@pytest.mark.parametrize("ciphertext", [None, "text", 5])
def test_non_bytes_ciphertext(alice: SigningIdentity, ciphertext: Any) -> None:
    with pytest.raises(DecryptionError):
        unseal(alice, ciphertext)


def test_seal_misuse() -> None:
    with pytest.raises(CryptoUsageError):
        seal(bytes(31), b"x")
    with pytest.raises(CryptoUsageError):
        seal(bytes(32), b"x")  # low-order point: the shared secret would be known
    with pytest.raises(CryptoUsageError):
        seal(bytes(range(32)), "text")  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        unseal(bytes(31), bytes(60))


# ----------------------------------------------------------------------------- key wrapping

KEK = bytes(range(32))
STORAGE_KEY = bytes(range(100, 132))


def test_wrap_known_answer() -> None:
    wrapped = _wrap_key_with_nonce(KEK, STORAGE_KEY, bytes(range(200, 224)), b"storage")
    assert wrapped.hex() == KNOWN_WRAPPED
    assert unwrap_key(KEK, bytes.fromhex(KNOWN_WRAPPED), associated_data=b"storage") == STORAGE_KEY


def test_wrap_layout_is_nonce_then_aead() -> None:
    nonce = bytes(range(200, 224))
    wrapped = _wrap_key_with_nonce(KEK, STORAGE_KEY, nonce, b"")
    raw = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        STORAGE_KEY, b"MFTP-WRAP-v1\x00", nonce, KEK
    )
    assert wrapped == nonce + raw


def test_wrap_round_trip_and_random_nonce() -> None:
    first = wrap_key(KEK, STORAGE_KEY)
    second = wrap_key(KEK, STORAGE_KEY)
    assert first != second
    assert len(first) == 24 + 32 + 16
    assert unwrap_key(KEK, first) == unwrap_key(KEK, second) == STORAGE_KEY


def test_unwrap_failures() -> None:
    wrapped = wrap_key(KEK, STORAGE_KEY, associated_data=b"name")
    with pytest.raises(DecryptionError):
        unwrap_key(bytes(32), wrapped, associated_data=b"name")
    with pytest.raises(DecryptionError):
        unwrap_key(KEK, wrapped, associated_data=b"other")
    with pytest.raises(DecryptionError):
        unwrap_key(KEK, wrapped)
    for position in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x80
        with pytest.raises(DecryptionError):
            unwrap_key(KEK, bytes(tampered), associated_data=b"name")
    for cut in range(len(wrapped)):
        with pytest.raises(DecryptionError):
            unwrap_key(KEK, wrapped[:cut], associated_data=b"name")
    with pytest.raises(DecryptionError):
        unwrap_key(KEK, None)  # type: ignore[arg-type]


def test_wrap_misuse() -> None:
    with pytest.raises(CryptoUsageError):
        wrap_key(bytes(16), STORAGE_KEY)
    with pytest.raises(CryptoUsageError):
        wrap_key(KEK, b"")
    with pytest.raises(CryptoUsageError):
        wrap_key(KEK, bytes(1025))
    with pytest.raises(CryptoUsageError):
        _wrap_key_with_nonce(KEK, STORAGE_KEY, bytes(12))
    with pytest.raises(CryptoUsageError):
        unwrap_key(bytes(31), bytes(80))
