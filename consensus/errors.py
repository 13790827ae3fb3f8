"""Exceptions of ``mftp.consensus``.

:class:`ConsensusUsageError` is our own misuse (a bad configuration, feeding an
event of the wrong type); :class:`ConsensusInputError` is a peer's bad message
(a forged signature, a proposal from the wrong proposer, an undecodable WAL
frame).  The core counts input errors and drops the message: a peer can never
crash it.
"""

from __future__ import annotations


class ConsensusError(Exception):
    """Base of every error raised by ``mftp.consensus``."""


class ConsensusUsageError(ConsensusError, ValueError):
    """The caller misused the API (our bug)."""


class ConsensusInputError(ConsensusError):
    """A message, record or WAL entry from outside is invalid."""
