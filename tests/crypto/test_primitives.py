"""Keyed tags, HKDF and randomness (mftp.crypto.primitives), against RFC test vectors."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.crypto.errors import CryptoUsageError
from mftp.crypto.primitives import (
    HKDF_MAX_BYTES,
    TAG_BYTES,
    _tag_any_key,
    constant_time_equal,
    hkdf,
    hkdf_expand,
    hkdf_extract,
    random_bytes,
    tag,
    verify_tag,
)

# RFC 4231 section 4: (key, data, full HMAC-SHA-256).  Case 2's key is 4 bytes,
# below tag()'s minimum, so it is checked through the policy-free core.
RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize(("key", "data", "full"), RFC4231)
def test_rfc4231_vectors_truncated(key: bytes, data: bytes, full: str) -> None:
    expected = bytes.fromhex(full)[:TAG_BYTES]
    assert _tag_any_key(key, data) == expected
    if len(key) >= 16:
        assert tag(key, data) == expected
        assert verify_tag(key, data, expected)
    else:
        with pytest.raises(CryptoUsageError):
            tag(key, data)


def test_rfc4231_case5_is_exactly_our_truncation() -> None:
    # Case 5 publishes HMAC-SHA-256 truncated to 128 bits, which is what tag() returns.
    assert tag(b"\x0c" * 20, b"Test With Truncation").hex() == "a3b6167473100ee06e0c796c2955552b"


def test_tag_properties() -> None:
    key = bytes(range(32))
    assert len(tag(key, b"")) == TAG_BYTES
    assert tag(key, b"a") != tag(key, b"b")
    assert tag(key, b"a") != tag(key[::-1], b"a")
    assert tag(bytearray(key), memoryview(b"a")) == tag(key, b"a")
    assert not verify_tag(key, b"a", tag(key, b"b"))
    assert not verify_tag(key, b"a", tag(key, b"a")[:15])


@pytest.mark.parametrize(("key", "data"), [(bytes(15), b"x"), ("k" * 32, b"x"), (bytes(32), "x")])
def test_tag_refuses_misuse(key: Any, data: Any) -> None:
    with pytest.raises(CryptoUsageError):
        tag(key, data)


# RFC 5869 appendix A, test cases 1-3 (SHA-256): (ikm, salt, info, length, prk, okm).
RFC5869 = [
    (
        b"\x0b" * 22,
        bytes(range(0x0D)),
        bytes(range(0xF0, 0xFA)),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
        "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_rfc5869_vectors(ikm: bytes, salt: bytes, info: bytes, length: int, prk: str, okm: str) -> None:
    assert hkdf_extract(salt, ikm).hex() == prk
    assert hkdf_expand(bytes.fromhex(prk), info=info, length=length).hex() == okm
    assert hkdf(ikm, salt=salt, info=info, length=length).hex() == okm


def test_empty_salt_equals_zero_salt() -> None:
    assert hkdf(b"k", salt=b"", info=b"i", length=32) == hkdf(b"k", salt=bytes(32), info=b"i", length=32)


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.integers(1, 300),
)
def test_hkdf_agrees_with_cryptography(ikm: bytes, salt: bytes, info: bytes, length: int) -> None:
    reference = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)
    assert hkdf(ikm, salt=salt, info=info, length=length) == reference


def test_hkdf_prefix_property_and_info_separation() -> None:
    long = hkdf(b"secret", salt=b"s", info=b"a", length=100)
    assert hkdf(b"secret", salt=b"s", info=b"a", length=10) == long[:10]
    assert hkdf(b"secret", salt=b"s", info=b"b", length=100) != long
    assert len(hkdf(b"secret", salt=b"s", info=b"a", length=HKDF_MAX_BYTES)) == HKDF_MAX_BYTES


@pytest.mark.parametrize("length", [0, -1, HKDF_MAX_BYTES + 1, True, 1.0, "32"])
def test_hkdf_refuses_bad_lengths(length: Any) -> None:
    with pytest.raises(CryptoUsageError):
        hkdf(b"k", salt=b"", info=b"", length=length)


def test_hkdf_refuses_non_bytes_and_short_prk() -> None:
    with pytest.raises(CryptoUsageError):
        hkdf("k", salt=b"", info=b"", length=32)  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        hkdf(b"k", salt=None, info=b"", length=32)  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        hkdf_expand(bytes(31), info=b"", length=32)


def test_random_bytes() -> None:
    assert random_bytes(0) == b""
    assert len(random_bytes(32)) == 32
    assert random_bytes(32) != random_bytes(32)
    for bad in (-1, 1.5, True, (1 << 20) + 1):
        with pytest.raises(CryptoUsageError):
            random_bytes(bad)  # type: ignore[arg-type]


def test_constant_time_equal() -> None:
    assert constant_time_equal(b"abc", b"abc")
    assert not constant_time_equal(b"abc", b"abd")
    assert not constant_time_equal(b"abc", b"ab")
    with pytest.raises(CryptoUsageError):
        constant_time_equal("abc", b"abc")  # type: ignore[arg-type]
