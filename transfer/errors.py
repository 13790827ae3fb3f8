"""Exceptions of ``mftp.transfer``.

:class:`TransferUsageError` is our own misuse; :class:`TransferInputError` means
input from outside (a DICOM file, a PACS, a peer) is bad. Errors about one file
carry its name so a study can report it and go on with the rest.
"""

from __future__ import annotations


class TransferError(Exception):
    """Base of every error raised by ``mftp.transfer``."""


class TransferUsageError(TransferError, ValueError):
    """The caller misused the API (our bug)."""


class TransferInputError(TransferError):
    """Input from outside (a file, a PACS, a peer) is malformed or refused."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(f"{name}: {message}" if name else message)
        self.name = name
