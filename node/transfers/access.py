"""Access to received studies: export to a folder or PACS, each access recorded on the ledger.

**Export** (:meth:`StudyAccess.export`): a job (:mod:`.jobs`), answered at once and repeated
harmlessly; in it each file is decrypted and verified again, written to a private spill folder
(mode 0700, under data_dir), delivered to a folder, a DICOMweb server or a DIMSE peer
(:mod:`.sources`), and the spill is removed; then one ``STUDY_ACCESSED`` record (action
``export``) is signed.  An access has no receiver: slots 0 and 1 of the record hold the acting
user and our institution.

**View** (:meth:`StudyAccess.open_view`): a user opens the study in a viewer.  One
``STUDY_ACCESSED`` record (action ``view``) is signed and submitted *before* the view is handed
out, so no instance can be read without the access being on its way to the ledger.  The view is
an unguessable id, valid for :data:`VIEW_TTL_S` and kept in memory only (at most
:data:`MAX_VIEWS`; opening one more forgets the oldest).  Each :meth:`StudyAccess.read_instance`
decrypts, decompresses and checks one file in memory: nothing is written to disk in clear, and
reading the instances of an open view records nothing more (one record per opening, as the
issue asks: "each time a user opens it").

Logs name transfers by id; never a patient, a UID or a file path of the study.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto.signing import PublicIdentity
from mftp.ledger.pseudonyms import Role
from mftp.ledger.records import PURPOSES, RecordType
from mftp.transfer.codec import decompress
from mftp.transfer.errors import TransferError, TransferInputError
from mftp.transfer.manifest import Entry, Manifest, ObjectInfo, check_restored, open_manifest

from ..audit.service import user_party
from ..clock import SYSTEM_CLOCK, Clock
from ..dataplane.blobstore import BlobStore
from ..errors import NodeError, NodeInputError, NodeUsageError
from ..private_files import private_dir
from .context import TransferContext
from .jobs import ExportJob, ExportJobs, JobState, job_key
from .preparing import restore_files
from .sources import check_destination, deliver
from .state import IN, TransferState, check_transfer_id

log = logging.getLogger("mftp.node.transfers.service")

VIEW_TTL_S: Final = 3600
"""How long an opened view serves instances (then the user opens it again: a new record)."""
MAX_VIEWS: Final = 64
"""Open views kept in memory; opening one more forgets the oldest."""


@dataclass(frozen=True)
class OpenView:
    """One opened view: which transfer, its checked manifest (entries by name), until when."""

    transfer_id: str
    manifest: Manifest
    entries: dict[str, Entry]
    expires_at: float  # on the monotonic clock: a wall-clock jump neither shortens nor extends it


class OpenViews:
    """The open views of a node, in memory only, bounded and expiring (see the module docstring)."""

    def __init__(
        self,
        *,
        ttl_s: float = VIEW_TTL_S,
        limit: int = MAX_VIEWS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.clock = clock
        self._views: OrderedDict[str, OpenView] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        self._prune()
        return len(self._views)

    def add(self, transfer_id: str, manifest: Manifest) -> tuple[str, OpenView]:
        """Register a view of ``manifest``; returns its new random id and the view."""
        self._prune()
        while len(self._views) >= self.limit:
            self._views.popitem(last=False)
        view_id = secrets.token_hex(16)
        view = OpenView(
            transfer_id,
            manifest,
            {e.name: e for e in manifest.entries},
            self.clock.monotonic_s() + self.ttl_s,
        )
        self._views[view_id] = view
        return view_id, view

    def get(self, transfer_id: str, view_id: str) -> OpenView:
        """The live view ``view_id`` of ``transfer_id``; :class:`NodeUsageError` if unknown or expired."""
        self._prune()
        view = self._views.get(view_id)
        # A view of another transfer is refused like an unknown one: the id opens one study only.
        if view is None or view.transfer_id != transfer_id:
            raise NodeUsageError(
                f"no open view of transfer {transfer_id} with that id (expired?); open a new one"
            )
        return view

    def _prune(self) -> None:
        now = self.clock.monotonic_s()
        for view_id in [v for v, view in self._views.items() if view.expires_at <= now]:
            del self._views[view_id]


def restore_entry(
    store: BlobStore, manifest: Manifest, key_for: Callable[[ObjectInfo], bytes], entry: Entry
) -> bytes:
    """Decrypt, decompress and check one file against the manifest, in memory (blocking).

    The one-entry counterpart of :func:`~.preparing.verify_all`: the object is decrypted from
    its start up to the entry (the stream cipher cannot seek), nothing is written to disk.
    """
    compressed = store.read_entry(manifest, entry, key=key_for(manifest.object(entry.object_id)))
    original = decompress(compressed, max_output_bytes=entry.size, name=entry.name)
    check_restored(entry, original)
    return original


class StudyAccess:
    """Exports and views of the studies the transfer service (a :class:`~.context.TransferContext`) got."""

    def __init__(self, service: TransferContext) -> None:
        self.service = service
        self.views = OpenViews(clock=service.host.clock)
        self.jobs = ExportJobs(clock=service.host.clock)

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
        """Start delivering a complete received study to ``destination`` for ``user``; the job's view.

        The request is checked at once (a :class:`NodeUsageError` for an unknown or incomplete
        transfer, a destination off the allow-lists, a bad purpose); then the export runs as a job
        (:mod:`.jobs`), or the job of the same request, still running or recently done, is returned.
        """
        user = user_party(user)
        state = self.received(transfer_id)
        destination = check_destination(destination, self.service.allowed)
        purpose = self.check_purpose(purpose, state)
        key = job_key(state.transfer_id, destination, purpose, user)
        job = self.jobs.find(key)
        if job is None:
            job = self.jobs.add(key, state.transfer_id)
            self.service.spawn(f"export-{job.job_id}", self._export(job, state, destination, purpose, user))
            log.info("export job started", extra={"fields": {"transfer": transfer_id, "job": job.job_id}})
        return job.view()

    async def export_job(self, transfer_id: str, job_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The view of export job ``job_id`` of ``transfer_id`` (``None`` if unknown).

        With ``wait_s``, waits up to that long for the job to end first.
        """
        job = self.jobs.get(transfer_id, job_id)
        if job is None:
            return None
        if wait_s > 0 and not job.final:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(job.ended.wait()), wait_s)
        return job.view()

    async def _export(
        self, job: ExportJob, state: TransferState, destination: str, purpose: str, user: str
    ) -> None:
        """The body of an export job: restore, deliver, then record the access once."""
        try:
            async with self.jobs.slots:
                job.move(JobState.RUNNING)
                manifest = await self.manifest(state)
                job.files, job.phase = len(manifest.entries), "restoring"
                spill = self.service.host.data_dir / "spill" / f"export-{secrets.token_hex(8)}"
                private_dir(spill)  # 0700 whatever the umask; a link in its place is refused
                try:
                    files = await asyncio.to_thread(
                        restore_files,
                        self.service.store,
                        manifest,
                        self.service.object_key,
                        spill,
                        lambda done: setattr(job, "files_done", done),
                    )
                    job.phase = "delivering"
                    file_mode = self.service.allowed.export_file_mode
                    report = await deliver(files, destination, file_mode=file_mode)
                finally:
                    shutil.rmtree(spill, ignore_errors=True)
                if report.failed_count:
                    raise NodeInputError(
                        f"export failed for {report.failed_count} file(s): {report.summary()}"
                    )
                job.phase = "recording"
                job.record = await self.record_access(state, manifest, user, purpose, "export")
        except asyncio.CancelledError:
            self.jobs.finish(job, NodeInputError("the node stopped before the export ended"))
            raise
        except (NodeError, TransferError, OSError) as exc:
            # The reason goes to the caller through the API only: it may name a destination path.
            self.jobs.finish(job, exc)
            log.warning(
                "export job failed", extra={"fields": {"transfer": state.transfer_id, "job": job.job_id}}
            )
            return
        except Exception as exc:  # our own bug: the job still ends, failed, and says so (a 500)
            self.jobs.finish(job, exc)
            log.error(
                "export job failed",
                extra={
                    "fields": {"transfer": state.transfer_id, "job": job.job_id, "error": type(exc).__name__}
                },
            )
            return
        self.jobs.finish(job)
        log.info(
            "study exported",
            extra={"fields": {"transfer": state.transfer_id, "job": job.job_id, "files": len(files)}},
        )

    async def open_view(self, transfer_id: str, user: str, purpose: str | None = None) -> dict[str, Any]:
        """Open a complete received study for ``user`` to view; records one ``view`` access.

        Returns ``view_id``, ``transfer_id``, ``expires_ms`` (wall clock) and ``expires_in_s``,
        ``record`` (the ``STUDY_ACCESSED`` record id) and ``instances`` (``name`` and ``size`` of
        each file, in manifest order), to be read with :meth:`read_instance`.
        """
        user = user_party(user)
        state = self.received(transfer_id)
        purpose = self.check_purpose(purpose, state)
        manifest = await self.manifest(state)
        # The record is submitted before the view exists: an access is never served unrecorded.
        record_id = await self.record_access(state, manifest, user, purpose, "view")
        view_id, view = self.views.add(state.transfer_id, manifest)
        log.info(
            "study view opened", extra={"fields": {"transfer": state.transfer_id, "files": len(view.entries)}}
        )
        return {
            "view_id": view_id,
            "transfer_id": state.transfer_id,
            "expires_ms": self.service.host.clock.now_ms() + int(self.views.ttl_s * 1000),
            "expires_in_s": int(self.views.ttl_s),
            "record": record_id,
            "instances": [{"name": e.name, "size": e.size} for e in manifest.entries],
        }

    async def read_instance(self, transfer_id: str, view_id: str, name: str) -> bytes:
        """The original bytes of file ``name`` of an open view, checked against the manifest.

        :class:`NodeUsageError` for an unknown or expired view, a view of another transfer, or a
        name not in the study; :class:`NodeInputError` if the stored file does not verify.
        """
        state = self.received(transfer_id)  # still there and complete (not removed since)
        view = self.views.get(state.transfer_id, view_id)
        entry = view.entries.get(name)
        if entry is None:
            raise NodeUsageError(f"transfer {state.transfer_id} has no instance of that name")
        try:
            return await asyncio.to_thread(
                restore_entry, self.service.store, view.manifest, self.service.object_key, entry
            )
        except TransferInputError:
            # Logged by id only: the message names the file.
            log.warning("stored instance did not verify", extra={"fields": {"transfer": state.transfer_id}})
            raise NodeInputError(f"an instance of transfer {state.transfer_id} did not verify") from None

    async def record_access(
        self, state: TransferState, manifest: Manifest, user: str, purpose: str, action: str
    ) -> str:
        """Sign and submit a ``STUDY_ACCESSED`` record of ``action`` by ``user``; returns its id."""
        audit = self.service.audit
        record_id, time_ms = secrets.token_bytes(16), self.service.host.clock.now_ms()
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
