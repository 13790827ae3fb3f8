"""Exceptions of ``mftp.ledger``.

:class:`LedgerUsageError` is our own misuse (appending a block that does not
follow the head, an unknown height); :class:`LedgerInputError` means bytes that
came from outside (a peer, a file) do not form a valid record, block, proof or
chain.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error raised by ``mftp.ledger``."""


class LedgerUsageError(LedgerError, ValueError):
    """The caller misused the API (our bug)."""


class LedgerInputError(LedgerError):
    """A record, block, certificate or proof from outside is invalid."""


class InvalidRecordError(LedgerInputError):
    """A record is malformed, of an unknown type or schema, or badly signed."""


class InvalidBlockError(LedgerInputError):
    """A block or its commit certificate does not follow from the chain state."""


class InvalidProofError(LedgerInputError):
    """An inclusion or consistency proof does not verify against the trusted root."""


class ChainVerificationError(LedgerInputError):
    """Chain verification failed; names the first bad height and the reason."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"chain invalid at height {height}: {reason}")
        self.height = height
        self.reason = reason


class StoreError(LedgerError):
    """The block store on disk is unreadable or inconsistent."""
