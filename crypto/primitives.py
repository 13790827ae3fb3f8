"""Small symmetric primitives: keyed tags, HKDF and randomness.

* :func:`tag` is HMAC-SHA256 truncated to 16 bytes (RFC 2104, truncation as in
  RFC 4231 test case 5).  128 bits are plenty against forgery and halve the size
  of the tags stored on the ledger.
* :func:`hkdf` is HKDF-SHA256 (RFC 5869), written with :mod:`hmac` so it needs
  no object set-up per call and is easy to audit against the RFC.
* :func:`random_bytes` reads the operating system's CSPRNG.
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from ._util import BytesLike
from ._util import require_bytes as _require_bytes
from .errors import CryptoUsageError

TAG_BYTES: Final = 16
"""Length of a keyed tag (HMAC-SHA256 truncated)."""

MIN_TAG_KEY_BYTES: Final = 16
"""Shortest key :func:`tag` accepts: a shorter key is a bug, not a choice."""

HASH_BYTES: Final = 32
HKDF_MAX_BYTES: Final = 255 * HASH_BYTES
"""Longest output RFC 5869 allows for SHA-256."""

MAX_RANDOM_BYTES: Final = 1 << 20


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    # hmac.digest is the one-shot C implementation: no HMAC object, no Python loop.
    return hmac.digest(key, data, "sha256")


def _tag_any_key(key: bytes, data: bytes) -> bytes:
    """The tag without the key-length policy (for RFC test vectors with short keys)."""
    return _hmac_sha256(key, data)[:TAG_BYTES]


def tag(key: BytesLike, data: BytesLike) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``, truncated to :data:`TAG_BYTES` (16) bytes.

    ``key`` must be at least 16 bytes; :class:`CryptoUsageError` otherwise.
    """
    key = _require_bytes("key", key)
    data = _require_bytes("data", data)
    if len(key) < MIN_TAG_KEY_BYTES:
        raise CryptoUsageError(f"a tag key is at least {MIN_TAG_KEY_BYTES} bytes")
    return _tag_any_key(key, data)


def verify_tag(key: BytesLike, data: BytesLike, expected: BytesLike) -> bool:
    """``True`` if ``expected`` is the tag of ``data``; compares in constant time."""
    return hmac.compare_digest(tag(key, data), _require_bytes("expected", expected))


def constant_time_equal(a: BytesLike, b: BytesLike) -> bool:
    """Compare two byte strings without leaking where they differ through timing."""
    return hmac.compare_digest(_require_bytes("a", a), _require_bytes("b", b))


def hkdf_extract(salt: BytesLike, ikm: BytesLike) -> bytes:
    """RFC 5869 HKDF-Extract with SHA-256; an empty salt means 32 zero bytes."""
    salt = _require_bytes("salt", salt)
    ikm = _require_bytes("ikm", ikm)
    # HMAC pads short keys with zeros, so b"" and 32 zero bytes give the same PRK,
    # exactly as the RFC's "if not provided, set to HashLen zeros".
    return _hmac_sha256(salt, ikm)


def hkdf_expand(prk: BytesLike, *, info: BytesLike, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with SHA-256 (``length`` from 1 to 8160 bytes)."""
    prk = _require_bytes("prk", prk)
    info = _require_bytes("info", info)
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= HKDF_MAX_BYTES:
        raise CryptoUsageError(f"HKDF length must be an int from 1 to {HKDF_MAX_BYTES}")
    if len(prk) < HASH_BYTES:
        raise CryptoUsageError(f"a pseudorandom key is at least {HASH_BYTES} bytes")
    blocks: list[bytes] = []
    previous = b""
    for counter in range(1, -(-length // HASH_BYTES) + 1):
        previous = _hmac_sha256(prk, previous + info + bytes([counter]))
        blocks.append(previous)
    return b"".join(blocks)[:length]


def hkdf(ikm: BytesLike, *, salt: BytesLike, info: BytesLike, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256: derive ``length`` bytes from ``ikm``.

    ``info`` names the purpose (e.g. ``b"mftp storage key v1"``) so keys derived
    from the same secret for different purposes are independent.
    """
    return hkdf_expand(hkdf_extract(salt, ikm), info=info, length=length)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG (0 <= n <= 1 MiB)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_RANDOM_BYTES:
        raise CryptoUsageError(f"random_bytes wants an int from 0 to {MAX_RANDOM_BYTES}")
    return os.urandom(n)
