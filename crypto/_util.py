"""Small helpers shared by the modules of ``mftp.crypto`` (not public API)."""

from __future__ import annotations

from typing import TypeAlias

from .errors import CryptoUsageError

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What the API accepts wherever it takes bytes; it always returns ``bytes``."""


def is_bytes_like(value: object) -> bool:
    """``True`` for bytes, bytearray and memoryview (never for str or int)."""
    return isinstance(value, bytes | bytearray | memoryview)


def require_bytes(name: str, value: object) -> bytes:
    """``value`` as immutable bytes, or :class:`CryptoUsageError` naming the argument."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise CryptoUsageError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)
