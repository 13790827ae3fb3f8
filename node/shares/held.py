"""The studies a share can hold: complete received transfers, read through the transfers room.

:class:`TransferStudies` adapts :class:`~mftp.node.transfers.access.StudyAccess` to the
:class:`~.service.Studies` the share service asks for: a study is opened (the stored manifest
checked against the sender's signature) and each file is decrypted, decompressed and checked
against the manifest in memory, as a clinician's view reads it (nothing in clear on disk).
"""

from __future__ import annotations

import asyncio

from mftp.transfer.errors import TransferInputError

from ..errors import NodeInputError
from ..transfers.access import StudyAccess, restore_entry
from .service import HeldStudy


class TransferStudies:
    """Received studies of this node, as the share service reads them."""

    def __init__(self, access: StudyAccess) -> None:
        self.access = access

    async def open_study(self, transfer_id: str) -> HeldStudy:
        """The complete received study ``transfer_id``; :class:`NodeUsageError` otherwise."""
        state = self.access.received(transfer_id)
        manifest = await self.access.manifest(state)
        return HeldStudy(state.transfer_id, tuple(e.name for e in manifest.entries), manifest)

    async def read(self, study: HeldStudy, name: str) -> bytes:
        """One file of ``study``, restored and checked against its manifest, in memory."""
        manifest = study.handle
        entry = next((e for e in manifest.entries if e.name == name), None)
        if entry is None:
            raise NodeInputError(f"transfer {study.transfer_id} has no file of that name")
        context = self.access.service
        try:
            return await asyncio.to_thread(restore_entry, context.store, manifest, context.object_key, entry)
        except TransferInputError:
            # The message names the file: the caller hears only which transfer.
            raise NodeInputError(f"a file of transfer {study.transfer_id} did not verify") from None
