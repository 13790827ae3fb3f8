"""Access to received studies: export to a folder or PACS, each access recorded on the ledger.

**Export** (:meth:`StudyAccess.export`): each file is decrypted and verified again, written to
a private spill folder (mode 0700, under data_dir), delivered to a folder or a DICOMweb server
(:mod:`.transfer_io`), and the spill is removed; then a ``STUDY_ACCESSED`` record (action
``export``) is signed.  An access has no receiver: slots 0 and 1 of the record hold the acting
user and our institution.

Logs name transfers by id; never a patient, a UID or a file path of the study.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from typing import TYPE_CHECKING, Any

from mftp.crypto.signing import PublicIdentity
from mftp.ledger.pseudonyms import Role
from mftp.ledger.records import PURPOSES, RecordType
from mftp.transfer.manifest import Manifest, open_manifest

from .audit_service import user_party
from .errors import NodeInputError, NodeUsageError
from .transfer_io import check_destination, deliver, restore_files
from .transfer_state import IN, TransferState, check_transfer_id

if TYPE_CHECKING:
    from .transfers import TransferService

log = logging.getLogger("mftp.node.transfers")


def _now_ms() -> int:
    from .transfers import now_ms  # one clock for the whole transfer service

    return now_ms()


class StudyAccess:
    """Exports (and later views) of the studies a :class:`~.transfers.TransferService` received."""

    def __init__(self, service: TransferService) -> None:
        self.service = service

    def received(self, transfer_id: str) -> TransferState:
        """The complete received transfer ``transfer_id``; :class:`NodeUsageError` otherwise."""
        state = self.service.states.get(check_transfer_id(transfer_id))
        if state is None or state.direction != IN:
            raise NodeUsageError(f"no received transfer {transfer_id}")
        if state.state != "complete":
            raise NodeUsageError(f"transfer {transfer_id} is {state.state}, not complete")
        return state

    def check_purpose(self, purpose: str | None, state: TransferState) -> str:
        """``purpose`` (default: the transfer's), which must be an HL7 PurposeOfUse code."""
        purpose = purpose or state.purpose
        if purpose not in PURPOSES:
            raise NodeUsageError(f"purpose must be an HL7 PurposeOfUse code: {', '.join(sorted(PURPOSES))}")
        return purpose

    async def manifest(self, state: TransferState) -> Manifest:
        """The stored manifest of a received transfer, opened and checked."""
        sealed = self.service.store.get_record(f"offer-{state.transfer_id}")
        if sealed is None:
            raise NodeInputError(f"transfer {state.transfer_id} has no stored manifest")
        sender = PublicIdentity.from_sign_key(bytes.fromhex(state.peer_key))
        return await asyncio.to_thread(open_manifest, sealed, self.service.host.identity, sender=sender)

    async def export(
        self, transfer_id: str, destination: str, purpose: str | None = None, user: str = ""
    ) -> dict[str, Any]:
        """Deliver a complete received study to ``destination`` (folder or DICOMweb URL) for ``user``."""
        user = user_party(user)
        state = self.received(transfer_id)
        destination = check_destination(destination, self.service.allowed)
        purpose = self.check_purpose(purpose, state)
        manifest = await self.manifest(state)
        spill = self.service.host.data_dir / "spill" / f"export-{secrets.token_hex(8)}"
        spill.mkdir(mode=0o700, parents=True)
        try:
            files = await asyncio.to_thread(
                restore_files, self.service.store, manifest, self.service.object_key, spill
            )
            report = await deliver(files, destination)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        if report.failed_count:
            raise NodeInputError(f"export failed for {report.failed_count} file(s): {report.summary()}")
        record_id = await self.record_access(state, manifest, user, purpose, "export")
        log.info("study exported", extra={"fields": {"transfer": transfer_id, "files": len(files)}})
        return {"transfer_id": transfer_id, "files": len(files), "record": record_id}

    async def record_access(
        self, state: TransferState, manifest: Manifest, user: str, purpose: str, action: str
    ) -> str:
        """Sign and submit a ``STUDY_ACCESSED`` record of ``action`` by ``user``; returns its id."""
        audit = self.service.audit
        record_id, time_ms = secrets.token_bytes(16), _now_ms()
        parties = {Role.SENDER_USER: user, Role.SENDER_INSTITUTION: audit.institution}
        record = audit.author(
            RecordType.STUDY_ACCESSED,
            {"transfer_id": manifest.transfer_id, "action": action, "purpose": purpose},
            fills=audit.fills(record_id, time_ms, parties),
            details={"user": user, "sender": state.peer, "purpose": purpose, "action": action},
            record_id=record_id,
            time_ms=time_ms,
        )
        await self.service.submit(record)
        state.access_records.append(record.record_id.hex())
        self.service.states.save(state)
        return record.record_id.hex()
