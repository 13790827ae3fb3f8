"""Exceptions of ``mftp.crypto``.

Every error says whose fault it is: :class:`CryptoUsageError` is our own misuse
(a caller passed a wrong type, a key of the wrong length), while
:class:`CryptoInputError` and its subclasses mean that bytes which came from
outside (a peer, a file on disk) are malformed, forged or tampered with.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by ``mftp.crypto``."""


class CryptoUsageError(CryptoError, ValueError):
    """The caller misused the API (our bug, not a peer's)."""


class CryptoInputError(CryptoError):
    """Input from outside is malformed, forged or tampered with."""


class DecodeError(CryptoInputError):
    """Bytes are not a valid canonical encoding (malformed, oversized, too deep, non-canonical)."""


class EncodeError(CryptoUsageError):
    """A value holds a type or size that the canonical encoding refuses."""


class BadSignatureError(CryptoInputError):
    """A signature does not verify for the given key, domain and message."""


class KeyFileError(CryptoError):
    """A key file is missing, unsafe (world-readable), truncated, corrupt or wrongly sealed."""


class DecryptionError(CryptoInputError):
    """Ciphertext failed authentication, or is truncated or reordered."""


class WrongPassphraseError(KeyFileError):
    """A sealed key file is intact, but the passphrase given does not open it."""
