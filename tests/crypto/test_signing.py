"""Node identity and domain-separated signatures (mftp.crypto.signing)."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.public
import nacl.signing
import pytest

from mftp.crypto.errors import BadSignatureError, CryptoInputError, CryptoUsageError
from mftp.crypto.signing import DOMAINS, PublicIdentity, SigningIdentity, is_valid, verify

SEED = bytes(range(32))
# Ed25519 is deterministic, so a fixed seed and message give a fixed signature.
KNOWN_PUBLIC = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KNOWN_SIGNATURE = (
    "f91d1249b975b48bfeca3c72be83bc0fad6522d12e615b238a4bf62a01d05da4"
    "d50e58db576f13d92c55f5b301142a8fe45448fab6703f149ce5fcca4b4d7b00"
)
# Order of the Ed25519 base point: adding it to S gives a second encoding of the signature.
L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return SigningIdentity(SEED)


def test_known_answer(identity: SigningIdentity) -> None:
    assert identity.public.sign_key.hex() == KNOWN_PUBLIC
    assert identity.sign("test", b"hello").hex() == KNOWN_SIGNATURE
    verify(bytes.fromhex(KNOWN_PUBLIC), "test", b"hello", bytes.fromhex(KNOWN_SIGNATURE))


def test_signed_bytes_follow_the_documented_layout(identity: SigningIdentity) -> None:
    signature = identity.sign("vote", b"msg")
    raw = b"MFTP-SIG-v1\x00" + bytes([4]) + b"vote" + b"msg"
    nacl.signing.VerifyKey(identity.public.sign_key).verify(raw, signature)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_round_trip_in_every_domain(identity: SigningIdentity, domain: str) -> None:
    signature = identity.sign(domain, b"payload")
    assert len(signature) == 64
    identity.public.verify(domain, b"payload", signature)
    assert is_valid(identity.public.sign_key, domain, b"payload", signature)


def test_vote_signature_never_passes_as_record(identity: SigningIdentity) -> None:
    signature = identity.sign("vote", b"block 7")
    with pytest.raises(BadSignatureError):
        verify(identity.public.sign_key, "record", b"block 7", signature)
    assert not is_valid(identity.public.sign_key, "record", b"block 7", signature)
    for other in DOMAINS - {"vote"}:
        assert not is_valid(identity.public.sign_key, other, b"block 7", signature)


def test_raw_signature_without_domain_does_not_verify(identity: SigningIdentity) -> None:
    raw = nacl.signing.SigningKey(SEED).sign(b"block 7").signature
    assert not is_valid(identity.public.sign_key, "vote", b"block 7", raw)


def test_tampered_message_fails(identity: SigningIdentity) -> None:
    signature = identity.sign("record", b"abc")
    for message in (b"abd", b"ab", b"abc\x00", b""):
        assert not is_valid(identity.public.sign_key, "record", message, signature)


def test_tampered_signature_fails(identity: SigningIdentity) -> None:
    signature = identity.sign("record", b"abc")
    for position in range(64):
        for bit in (0x01, 0x80):
            tampered = bytearray(signature)
            tampered[position] ^= bit
            assert not is_valid(identity.public.sign_key, "record", b"abc", bytes(tampered))


def test_malleated_signature_fails(identity: SigningIdentity) -> None:
    signature = identity.sign("record", b"abc")
    s_value = int.from_bytes(signature[32:], "little") + L
    assert s_value < 2**256
    malleated = signature[:32] + s_value.to_bytes(32, "little")
    assert not is_valid(identity.public.sign_key, "record", b"abc", malleated)


def test_wrong_key_fails(identity: SigningIdentity) -> None:
    other = SigningIdentity.generate()
    signature = identity.sign("record", b"abc")
    assert not is_valid(other.public.sign_key, "record", b"abc", signature)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (bytes(32), bytes(64)),
        (bytes.fromhex(KNOWN_PUBLIC), bytes(63)),
        (bytes.fromhex(KNOWN_PUBLIC), bytes(65)),
        (bytes(31), bytes.fromhex(KNOWN_SIGNATURE)),
        (bytes.fromhex(KNOWN_PUBLIC), None),
        ("not bytes", bytes.fromhex(KNOWN_SIGNATURE)),
        (b"\x01" + bytes(31), bytes(64)),  # identity point: small order
    ],
)
def test_malformed_keys_and_signatures_are_bad_signatures(public_key: Any, signature: Any) -> None:
    with pytest.raises(BadSignatureError):
        verify(public_key, "test", b"hello", signature)
    assert not is_valid(public_key, "test", b"hello", signature)


def test_bad_signature_is_an_input_error() -> None:
    assert issubclass(BadSignatureError, CryptoInputError)


def test_unknown_domain_is_a_usage_error(identity: SigningIdentity) -> None:
    with pytest.raises(CryptoUsageError):
        identity.sign("votes", b"x")
    with pytest.raises(CryptoUsageError):
        identity.sign("", b"x")
    signature = identity.sign("vote", b"x")
    with pytest.raises(CryptoUsageError):
        verify(identity.public.sign_key, "nope", b"x", signature)
    # The misuse is reported even when the signature is also malformed.
    with pytest.raises(CryptoUsageError):
        verify(identity.public.sign_key, "nope", b"x", b"short")
    with pytest.raises(CryptoUsageError):
        is_valid(identity.public.sign_key, "nope", b"x", signature)


@pytest.mark.parametrize("message", [5, "text", None, [1]])
def test_message_must_be_bytes(identity: SigningIdentity, message: Any) -> None:
    # bytes(5) is five zero bytes: an int must not be signed as such.
    with pytest.raises(CryptoUsageError):
        identity.sign("record", message)
    with pytest.raises(CryptoUsageError):
        verify(identity.public.sign_key, "record", message, bytes(64))


def test_bytes_like_messages_are_accepted(identity: SigningIdentity) -> None:
    signature = identity.sign("record", bytearray(b"abc"))
    identity.public.verify("record", memoryview(b"abc"), signature)


def test_x25519_derivation_matches_nacl(identity: SigningIdentity) -> None:
    signing_key = nacl.signing.SigningKey(SEED)
    assert identity.box_private_key == bytes(signing_key.to_curve25519_private_key())
    assert identity.public.box_key == bytes(signing_key.verify_key.to_curve25519_public_key())
    private = nacl.public.PrivateKey(identity.box_private_key)
    assert bytes(private.public_key) == identity.public.box_key


def test_public_identity_checks_its_fields(identity: SigningIdentity) -> None:
    public = identity.public
    assert PublicIdentity(public.sign_key, public.box_key) == public
    assert PublicIdentity.from_sign_key(bytearray(public.sign_key)) == public
    other = SigningIdentity.generate().public
    with pytest.raises(CryptoUsageError, match="derived"):
        PublicIdentity(public.sign_key, other.box_key)
    with pytest.raises(CryptoUsageError):
        PublicIdentity(public.sign_key[:31], public.box_key)
    with pytest.raises(CryptoUsageError):
        PublicIdentity.from_sign_key(public.sign_key + b"\x00")
    with pytest.raises(CryptoUsageError):
        PublicIdentity.from_sign_key(public.sign_key.hex())  # type: ignore[arg-type]
    with pytest.raises(BadSignatureError):
        PublicIdentity.from_sign_key(b"\x01" + bytes(31))


def test_public_identity_is_hashable_and_immutable(identity: SigningIdentity) -> None:
    public = identity.public
    assert {public: 1}[PublicIdentity.from_sign_key(public.sign_key)] == 1
    with pytest.raises(AttributeError):
        public.sign_key = bytes(32)  # type: ignore[misc]


def test_node_id(identity: SigningIdentity) -> None:
    assert identity.public.node_id == hashlib.sha256(identity.public.sign_key).digest()[:16]
    assert identity.public.node_id.hex() == "56475aa75463474c0285df5dbf2bcab7"


def test_seed_round_trip_and_repr(identity: SigningIdentity) -> None:
    assert identity.seed == SEED
    assert SigningIdentity(identity.seed).public == identity.public
    assert SEED.hex() not in repr(identity)
    assert identity.public.node_id.hex() in repr(identity)


@pytest.mark.parametrize("seed", [bytes(31), bytes(33), "x" * 32, None])
def test_seed_must_be_32_bytes(seed: Any) -> None:
    with pytest.raises(CryptoUsageError):
        SigningIdentity(seed)


def test_generate_gives_distinct_identities() -> None:
    assert SigningIdentity.generate().public != SigningIdentity.generate().public
