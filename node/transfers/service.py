"""Peer transfers of studies: the node's sender and recipient sides, wired to disk, p2p and ledger.

**Sending** (:meth:`TransferService.send`, from ``POST /transfers``):

1. Residency first: the recipient (a ``[[p2p.peers]]`` entry, by name) must be a member with a
   known ``country`` equal to ``node.country`` or listed in ``transfer.allowed_countries``;
   otherwise :class:`ResidencyRefused` (HTTP 403), logged, and nothing is read or sent.
2. Import the source (a folder or file, ``dicomweb:URL#STUDYUID`` or a DIMSE PACS:
   :mod:`.sources`, :mod:`.preparing`), and read the study's parties.
3. Sign the ``TRANSFER_OFFERED`` record (purpose, mode, ``size_bucket`` = floor(log2(bytes of
   the study as read from the source)), ``study_commitment`` = HMAC-SHA256(institution secret,
   transfer id || original Study Instance UID), so two sends of one study do not link on the
   ledger).  Its tag slots hold the sending user, our institution and the patient (Patient ID
   of the original), and the recipient's institution and named user, whose tags the recipient
   contributes on request (:mod:`mftp.node.audit.service`; a send waits for a recipient that is down);
   its details (user, patient, study, recipient, purpose...) are committed and their openings
   kept in the encrypted audit vault.
4. Issue a *streaming* capability (valid :data:`CAPABILITY_TTL_MS`; it names no manifest yet),
   serve an empty partial manifest, and send the offer on p2p channel ``t.offer`` (messages:
   :mod:`.messages`) at once, so the recipient fetches while we prepare.
5. In a worker thread de-identify each instance per the mode's
   :class:`~mftp.transfer.deid.Policy` with the institution secret (``keys/institution.secret``,
   32 random bytes made on first use, mode 0600), compress it
   (:func:`mftp.transfer.codec.compress`), and package it encrypted into the blob store,
   publishing a signed partial manifest of the sealed objects every few hundred milliseconds.
   Entries are named ``00000.dcm``, ``00001.dcm``...: names never carry patient data.
6. Seal the final manifest, submit the offer record to the ledger, serve the final manifest.
   A study that fails to prepare (or that the recipient refuses meanwhile) is abandoned: the
   data plane answers ``410`` for it, and no offer reaches the ledger.
7. The offer is sent again every :data:`REOFFER_INTERVAL_S` until the recipient answers on
   ``t.receipt`` (inline with the final sealed manifest up to :data:`MAX_INLINE_MANIFEST_BYTES`),
   so an offer made while the recipient is down arrives when it is back; an accepted one now
   and then, so a final receipt lost while we were down comes again.

**Receiving** (``t.offer`` from a member): :mod:`.receiver`.

**Export** and other accesses of a received study: :mod:`.access`.

Logs name transfers by id and peers by member name; never a patient, a UID or a file path
of the study.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import math
import multiprocessing.util
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from mftp.crypto.signing import PublicIdentity
from mftp.ledger.pseudonyms import Role
from mftp.ledger.records import MODES, PURPOSES, Record, RecordType
from mftp.transfer.capability import (
    STREAMING_MANIFEST,
    Capability,
    decode_capability,
    issue_capability,
)
from mftp.transfer.deid import Mode, Policy
from mftp.transfer.deid_pixels import BURNED_IN_CHOICES, BurnedInChoice
from mftp.transfer.errors import TransferError
from mftp.transfer.manifest import (
    Manifest,
    ObjectInfo,
    seal_manifest,
)
from mftp.transfer.package import Packager, recipient_object_key, seal_local_record, storage_key_for
from mftp.transfer.study import FileReport

from ..audit.service import AuditService, patient_party, user_party
from ..config import Peer
from ..dataplane.blobstore import BlobStore
from ..dataplane.server import DataPlaneServer
from ..errors import NodeError, NodeInputError, NodeUsageError, ResidencyRefused
from ..pacs import LocalFile
from ..private_files import parse_file_mode, private_dir
from .access import StudyAccess
from .cancelling import cancel, check_source, open_source, resend_request, seal_source
from .context import CAPABILITY_TTL_MS, MAX_TRANSFER_AGE_MS, TransferHost
from .dimse_and_attachments import transfer_detail
from .jobs import fault_of
from .messages import NO_RECORD, Offer, decode_receipt
from .preparing import PreparePool, package_study, prefers_speed
from .receiver import Receiver
from .sources import Allowed, Source, import_study, one_study, parse_source, study_parties
from .state import IN, OUT, Phase, TransferState, TransferStates, check_transfer_id

log = logging.getLogger("mftp.node.transfers.service")


MAX_INLINE_MANIFEST_BYTES: Final = 1 << 20
REOFFER_INTERVAL_S: Final = 5.0
SECRET_BYTES: Final = 32


def size_bucket(size_bytes: int) -> int:
    """floor(log2(bytes)), 0 for an empty study: the exact size could identify a study."""
    return max(0, min(63, math.floor(math.log2(size_bytes)))) if size_bytes > 0 else 0


def load_institution_secret(keys_dir: Path) -> bytes:
    """The institution's de-identification key, created (32 random bytes, mode 0600) on first use."""
    path = keys_dir / "institution.secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) != SECRET_BYTES:
            raise NodeUsageError(f"{path} must hold {SECRET_BYTES} bytes; restore it from backup") from None
        return secret
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(SECRET_BYTES))
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_bytes()


class TransferService:
    """Sends and receives studies for one node (see the module docstring)."""

    def __init__(
        self, host: TransferHost, store: BlobStore, server: DataPlaneServer, audit: AuditService
    ) -> None:
        self.host = host
        self.audit = audit
        self.store = store
        self.server = server
        # Users live in the audit vault; the state files hold its references.
        self.states = TransferStates(host.data_dir / "transfers", names=audit.vault)
        audit.erasure_listeners.append(self.states.forget)
        self.country: str = host.config.get("node", "country")
        config = host.config
        self.allowed = Allowed(
            tuple(config.path.parent.joinpath(d).resolve() for d in config.get("transfer", "source_dirs")),
            tuple(config.path.parent.joinpath(d).resolve() for d in config.get("transfer", "export_dirs")),
            tuple(config.get("transfer", "dicomweb_urls")),
            tuple(config.get("transfer", "dimse_peers")),
            config.get("transfer", "dimse_aet"),
            parse_file_mode(config.get("transfer", "export_file_mode")),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reoffer_task: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self._secret: bytes | None = None
        self.access = StudyAccess(self)
        self.pool = PreparePool(config.get("transfer", "prepare_workers") or os.cpu_count() or 1)
        self.receiver = Receiver(self)

    def channels(self) -> dict[str, Callable[[bytes, Any], None]]:
        """The peer channels this service handles (``t.*``), for the node's dispatcher."""
        return {"t.offer": self.on_offer, "t.receipt": self.on_receipt}

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Resume what a restart interrupted: fetches, and offers not yet answered."""
        # A crash can leave clear files in the spill folder (an import or an export in
        # progress); nothing there is ever resumed, and nothing clear may stay at rest.
        shutil.rmtree(self.host.data_dir / "spill", ignore_errors=True)
        # Libraries' temporary files too (pynetdicom spools each received instance to one
        # before we move it into a spill folder): inside data_dir, private, cleaned here.
        private_tmp = private_dir(self.host.data_dir / "spill" / "tmp")
        # multiprocessing keeps its sockets (the preparing pool's forkserver) in a folder of its
        # own (0700) fixed on first use; AF_UNIX paths hold at most 107 bytes, so it must not
        # move under a deep data_dir with ours: fix it in the system's temporary folder first.
        multiprocessing.util.get_temp_dir()
        tempfile.tempdir = str(private_tmp)
        for state in self.states.all():
            if state.direction == IN and state.state in ("fetching", "verifying"):
                self.spawn(state.transfer_id, self.receiver.receive(state))
            elif state.direction == OUT and state.state == "preparing":
                self.fail(state, "the node stopped while preparing the study; send it again")
                self.server.abandon_transfer(bytes.fromhex(state.transfer_id))
        self._reoffer_task = asyncio.get_running_loop().create_task(self._reoffer_loop())
        # Start the preparing workers now, not when the first study waits for them.
        self._warm_task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.pool.warm))

    async def stop(self) -> None:
        """Cancel background work (its progress is on disk)."""
        tasks = list(self._tasks.values()) + ([self._reoffer_task] if self._reoffer_task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._warm_task is not None:
            await asyncio.gather(self._warm_task, return_exceptions=True)
        await asyncio.to_thread(self.pool.shutdown)

    def spawn(self, transfer_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[transfer_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(transfer_id, None))

    @property
    def secret(self) -> bytes:
        """The institution secret (loaded on first use)."""
        if self._secret is None:
            self._secret = load_institution_secret(self.host.config.path.parent / "keys")
        return self._secret

    # ----------------------------------------------------------------- sending

    def recipient(self, to_name: str) -> Peer:
        """The configured member ``to_name``, after the residency check; raises otherwise."""
        peer = next((p for p in self.host.known_peers() if p.name == to_name), None)
        if peer is None or not self.host.is_member(peer.sign_key):
            raise NodeUsageError(
                f"{to_name!r} is not a member this node knows ([[p2p.peers]] and the ledger)"
            )
        allowed = {self.country, *self.host.config.get("transfer", "allowed_countries")}
        if not peer.country or peer.country not in allowed:
            where = peer.country or "an unknown country (no country in its [[p2p.peers]] entry)"
            log.warning(
                "transfer refused: data residency",
                extra={"fields": {"to": peer.name, "to_country": peer.country or "?", "ours": self.country}},
            )
            raise ResidencyRefused(
                f"data residency: {peer.name} is in {where}; this node ({self.country}) may send only "
                f"to {', '.join(sorted(allowed))} (transfer.allowed_countries)"
            )
        return peer

    async def send(
        self,
        source: str,
        to_name: str,
        purpose: str,
        mode: str,
        user: str,
        to_user: str = "",
        burned_in: str | None = None,
    ) -> str:
        """Check the request, then prepare and offer the study in the background; returns its id.

        ``user`` is who sends (``user:<id>`` or a bare name); ``to_user`` optionally names the
        recipient user, who must be known at the recipient institution.  ``burned_in`` ("clean" or
        "refuse", default ``transfer.burned_in``) says what happens to images whose pixels may
        show identity in the de-identifying modes.
        """
        choice = burned_in or self.host.config.get("transfer", "burned_in")
        if choice not in BURNED_IN_CHOICES:
            raise NodeUsageError(f"burned_in must be one of {', '.join(BURNED_IN_CHOICES)}")
        pixels: BurnedInChoice = "refuse" if choice == "refuse" else "clean"
        if purpose not in PURPOSES:
            raise NodeUsageError(f"purpose must be an HL7 PurposeOfUse code: {', '.join(sorted(PURPOSES))}")
        if mode not in MODES:
            raise NodeUsageError(f"mode must be one of {', '.join(sorted(MODES))}")
        user = user_party(user)
        to_user = user_party(to_user) if to_user else ""
        peer = self.recipient(to_name)
        parsed = parse_source(source, self.allowed)
        state = TransferState(
            transfer_id=secrets.token_hex(16),
            direction=OUT,
            peer=peer.name,
            peer_key=peer.sign_key.hex(),
            purpose=purpose,
            mode=mode,
            state=Phase.PREPARING,
            created_ms=self.host.clock.now_ms(),
            data_url=peer.data_url,
            user=user,
            to_user=to_user,
            source_sealed=seal_source(self.host.identity.public, source),  # to send it again
        )
        self.states.save(state)
        log.info("transfer preparing", extra={"fields": {"transfer": state.transfer_id, "to": peer.name}})
        self.spawn(state.transfer_id, self._prepare_and_offer(state, peer, parsed, pixels))
        return state.transfer_id

    async def _prepare_and_offer(
        self, state: TransferState, peer: Peer, source: Source, burned_in: BurnedInChoice
    ) -> None:
        """Import, sign the offer and send it, then prepare the study while the recipient fetches.

        The offer goes out as soon as the study's parties are known, with a streaming capability
        (:data:`~mftp.transfer.capability.STREAMING_MANIFEST`); partial manifests follow as objects
        are sealed, so fetching and verifying overlap preparing.  The offer record reaches the
        ledger only once the study is fully prepared: a study that fails to prepare is abandoned
        (the recipient is told by ``410``) and leaves no offer on the ledger.
        """
        spill = self.host.data_dir / "spill" / state.transfer_id
        manifest: Manifest | None = None
        try:
            private_dir(spill)  # 0700 whatever the umask; a link in its place is refused
            files, report = await import_study(
                source,
                spill,
                attachments=state.mode == "identified",
                max_instances=self.host.config.get("transfer", "max_instances"),
                burned_in=burned_in if state.mode != "identified" else "clean",
                processes=self.pool.executor(),
            )
            study_uid = one_study(files, report, self.host.config.get("transfer", "max_instances"))
            patient, issuer, description = await asyncio.to_thread(study_parties, files)
            state.files = len(files)
            # The source's size: known before preparing, and within a few bytes of the prepared one.
            source_bytes = sum(item.info.size_bytes for item in files)
            record = await self._offer_record(
                state, peer, self._offer_body(state, peer, study_uid, source_bytes),
                self._offer_details(state, peer, study_uid, patient, issuer, description),
            )  # fmt: skip
            self.store.put_record(f"offer-record-{state.transfer_id}", record.to_bytes())
            capability = issue_capability(
                self.host.identity,
                recipient=peer.sign_key,
                transfer_id=bytes.fromhex(state.transfer_id),
                manifest_sha256=STREAMING_MANIFEST,
                now_ms=self.host.clock.now_ms(),
                ttl_ms=CAPABILITY_TTL_MS,
            )
            state.capability = base64.b64encode(capability.token).decode()
            state.offer_record = record.record_id.hex()
            state.detail = transfer_detail(report)  # files of the source that do not travel
            self.states.save(state)
            # An empty partial manifest first, so the recipient's first request finds the transfer.
            await asyncio.to_thread(self._publish, self._empty_manifest(state, peer))
            self._offer(state)
            not_sent = report.failed_count
            cleaned: list[tuple[str, str]] = []
            manifest = await asyncio.to_thread(
                self._package, state, peer, files, report, burned_in, cleaned.append
            )
            state.detail = transfer_detail(report, cleaned)
            if report.failed_count > not_sent:  # files that could not be prepared: named, not sent
                left_out = report.failed_count - not_sent
                log.warning(
                    "files of a study left out while preparing",
                    extra={"fields": {"transfer": state.transfer_id, "files": left_out}},
                )
            sealed = await asyncio.to_thread(seal_manifest, manifest, self.host.identity)
            await self.submit(record)
            self.store.put_record(f"offer-{state.transfer_id}", sealed)
            state.move(Phase.OFFERED)
            self.states.save(state)
            await asyncio.to_thread(self.server.register_transfer, manifest, sealed)
            self._offer(state)
            log.info(
                "transfer offered",
                extra={"fields": {"transfer": state.transfer_id, "to": peer.name, "files": state.files}},
            )
        except asyncio.CancelledError:
            raise
        except (NodeError, TransferError, OSError) as exc:
            state.fault = fault_of(exc)  # "caller": the node refused the study (exit 5 at the CLI)
            self.fail(state, str(exc))
            self.server.abandon_transfer(bytes.fromhex(state.transfer_id))
            if manifest is not None:  # prepared, then the offer failed: nobody will fetch or read it
                self._delete_prepared(state, manifest)
        finally:
            shutil.rmtree(spill, ignore_errors=True)

    def _delete_prepared(self, state: TransferState, manifest: Manifest) -> None:
        for obj in manifest.objects:
            self.store.delete(obj.object_id)
        self.store.delete_record(f"local-{state.transfer_id}")

    def _offer_body(
        self, state: TransferState, peer: Peer, study_uid: str, study_bytes: int
    ) -> dict[str, Any]:
        transfer_id = bytes.fromhex(state.transfer_id)
        # Keyed and bound to the transfer: nobody without the secret can confirm a guessed
        # study, and two sends of one study do not show on the ledger as the same study.
        commitment = hmac.new(self.secret, b"study\0" + transfer_id + study_uid.encode(), hashlib.sha256)
        return {
            "transfer_id": transfer_id,
            "recipient": peer.sign_key,
            "purpose": state.purpose,
            "mode": state.mode,
            "size_bucket": size_bucket(study_bytes),
            "study_commitment": commitment.digest(),
        }

    def _offer_details(
        self, state: TransferState, peer: Peer, study_uid: str, patient: str, issuer: str, description: str
    ) -> dict[str, Any]:
        user = self.states.party(state.user)
        if not user or (state.to_user and not self.states.party(state.to_user)):
            raise NodeUsageError("a user of this transfer was erased meanwhile; the study is not sent")
        return {
            "user": user,
            "patient": patient_party(patient, issuer) if patient else "",
            "study": study_uid,
            "description": description,
            "recipient": peer.name,
            "recipient_user": self.states.party(state.to_user),
            "purpose": state.purpose,
            "mode": state.mode,
        }

    async def _offer_record(
        self, state: TransferState, peer: Peer, body: dict[str, Any], details: dict[str, Any]
    ) -> Record:
        """The signed offer: our side's slots, the recipient's (asked for now), committed details."""
        record_id = secrets.token_bytes(16)
        state.detail = "waiting for the recipient's tags"
        to_user = details["recipient_user"]
        time_ms, theirs = await self.audit.counterparty_fills(peer.sign_key, record_id, to_user)
        state.detail = ""
        if (self.states.party(state.user), self.states.party(state.to_user)) != (details["user"], to_user):
            # Erased while we waited: no record, and no details naming the user, may follow.
            raise NodeUsageError("a user of this transfer was erased meanwhile; the study is not sent")
        ours = {Role.SENDER_USER: details["user"], Role.SENDER_INSTITUTION: self.audit.institution}
        if details["patient"]:
            ours[Role.PATIENT] = details["patient"]
        fills = {**self.audit.fills(record_id, time_ms, ours), **theirs}
        return self.audit.author(
            RecordType.TRANSFER_OFFERED,
            body,
            fills=fills,
            details=details,
            record_id=record_id,
            time_ms=time_ms,
        )

    def _package(
        self,
        state: TransferState,
        peer: Peer,
        files: list[LocalFile],
        report: FileReport,
        burned_in: BurnedInChoice,
        cleaned: Callable[[tuple[str, str]], None],
    ) -> Manifest:
        """De-identify, compress and encrypt the study into the blob store (blocking)."""
        mode = Mode(state.mode)
        salt = secrets.token_bytes(16) if mode is Mode.ANONYMOUS else None  # ANONYMOUS: unlinkable sends
        packager = Packager(
            sender=self.host.identity.public,
            recipient=PublicIdentity.from_sign_key(peer.sign_key),
            transfer_id=bytes.fromhex(state.transfer_id),
            created_ms=self.host.clock.now_ms(),
            storage_key=storage_key_for(self.host.identity),
            sink_factory=self.store.object_writer,
            chunk_bytes=self.host.config.get("transfer", "chunk_bytes"),
        )

        def progress(files_done: int, study_bytes: int) -> None:
            if state.state != "preparing":  # refused meanwhile: stop, and delete what was written
                raise NodeUsageError(f"transfer {state.transfer_id} is {state.state}; not preparing it")
            state.files_done, state.study_bytes = files_done, study_bytes

        policy = dataclasses.replace(Policy.for_mode(mode, transfer_salt=salt), burned_in=burned_in)

        result = package_study(
            files,
            packager,
            self.store,
            policy,
            self.secret,
            progress,
            pool=self.pool,
            publish=self._publish,
            prefer_speed=prefers_speed(self.host.config.get("transfer", "compression")),
            report=report,
            cleaned=lambda name, what: cleaned((name, what)),
        )
        self.store.put_record(
            f"local-{state.transfer_id}", seal_local_record(result, storage_key_for(self.host.identity))
        )
        state.fetch_bytes = result.manifest.total_ciphertext_bytes
        return result.manifest

    def _publish(self, manifest: Manifest) -> None:
        """Serve a partial manifest to the recipient (blocking: signs and stores it)."""
        self.server.register_transfer(manifest, seal_manifest(manifest, self.host.identity))

    def _empty_manifest(self, state: TransferState, peer: Peer) -> Manifest:
        return Manifest.build(
            transfer_id=bytes.fromhex(state.transfer_id),
            sender=self.host.identity.public.sign_key,
            recipient=peer.sign_key,
            created_ms=self.host.clock.now_ms(),
            entries=(),
            objects=(),
            partial=True,
        )

    def _offer(self, state: TransferState, *, inline: bool = True) -> None:
        sealed = (self.store.get_record(f"offer-{state.transfer_id}") or b"") if inline else b""
        record = self.store.get_record(f"offer-record-{state.transfer_id}")
        if record is None:
            return  # offered by an older version without the record; the recipient cannot check it
        message = Offer(
            transfer_id=bytes.fromhex(state.transfer_id),
            offer_id=bytes.fromhex(state.offer_record),
            purpose=state.purpose,
            mode=state.mode,
            capability=self._fresh_capability(state),
            data_url=self._own_data_url(),
            sealed=sealed if len(sealed) <= MAX_INLINE_MANIFEST_BYTES else b"",
            record=Record.decode(record),
            to_user=self.states.party(state.to_user),
        ).to_value()
        try:
            self.host.send_peer(bytes.fromhex(state.peer_key), "t.offer", message)
        except NodeUsageError as exc:  # no longer a member: keep trying, membership may return
            log.info("offer not sent", extra={"fields": {"transfer": state.transfer_id, "reason": str(exc)}})

    def _fresh_capability(self, state: TransferState) -> Capability:
        """The transfer's capability, renewed once less than half its lifetime is left.

        Capabilities are short-lived (:data:`CAPABILITY_TTL_MS`); a recipient still fetching gets
        a renewed one with the next re-offer (every 30 s once it accepted), for as long as the
        transfer is younger than :data:`MAX_TRANSFER_AGE_MS`.
        """
        capability = decode_capability(base64.b64decode(state.capability))
        now = self.host.clock.now_ms()
        young = now - state.created_ms < MAX_TRANSFER_AGE_MS
        if young and capability.not_after_ms - now < CAPABILITY_TTL_MS // 2:
            capability = issue_capability(
                self.host.identity,
                recipient=capability.recipient,
                transfer_id=capability.transfer_id,
                manifest_sha256=capability.manifest_sha256,
                now_ms=now,
                ttl_ms=CAPABILITY_TTL_MS,
            )
            state.capability = base64.b64encode(capability.token).decode()
            self.states.save(state)
        return capability

    def _own_data_url(self) -> str:
        return f"https://{self.host.config.get('transfer', 'data_listen')}"

    async def _reoffer_loop(self) -> None:
        # An unanswered offer is repeated often; an accepted one now and then, so the
        # recipient's final receipt, lost while we were down, is sent to us again.
        rounds = 0
        while True:
            await asyncio.sleep(REOFFER_INTERVAL_S)
            rounds += 1
            for state in self.states.all():
                if state.direction != OUT:
                    continue
                preparing = state.state == "preparing" and bool(state.offer_record)  # offered early
                if state.state == "offered" or preparing or (state.state == "accepted" and rounds % 6 == 0):
                    self._offer(state, inline=state.state == "offered")

    def on_receipt(self, sender: bytes, value: Any) -> None:
        """A recipient's answer on ``t.receipt``: it accepted, completed or refused our offer."""
        transfer_id, answer, record = decode_receipt(value)
        state = self.states.get(transfer_id.hex())
        if state is None or state.direction != OUT or state.peer_key != sender.hex():
            raise NodeInputError("t.receipt: not for a transfer we offered to this member")
        if answer == "refused" and state.state == "preparing":
            # Refused while we still prepare it (its limits, or its tags): stop spending on it.
            task = self._tasks.get(state.transfer_id)
            if task is not None:
                task.cancel()
            state.move(Phase.REFUSED, "the recipient refused the offer")
            self.states.save(state)
            self.server.abandon_transfer(transfer_id)
            log.info("transfer refused", extra={"fields": {"transfer": state.transfer_id, "to": state.peer}})
            return
        if state.state == Phase.CANCELLED:  # we cancelled it; the recipient may have had it all
            if answer == "complete" and not state.received_record:
                state.received_record = record.hex()
                state.detail = "cancelled here, but the recipient had already received all of it"
                self.states.save(state)
            return
        if answer == "accepted":
            if state.state == "offered":  # stop re-offering; the recipient is fetching
                state.move(Phase.ACCEPTED)
                self.states.save(state)
            return
        if state.state in ("offered", "accepted"):
            refused = answer != "complete"
            state.move(Phase.REFUSED if refused else Phase.DELIVERED)
            if refused and record == NO_RECORD:  # no receipt record: it stopped before verifying
                state.detail = "the recipient refused or cancelled it before it was received"
            state.received_record = record.hex()
            self.states.save(state)
            log.info(
                "transfer " + state.state, extra={"fields": {"transfer": state.transfer_id, "to": state.peer}}
            )

    # ----------------------------------------------------------------- receiving

    def on_offer(self, sender: bytes, value: Any) -> None:
        """An offer on ``t.offer`` from a member (:mod:`.receiver`)."""
        self.receiver.on_offer(sender, value)

    def object_key(self, obj: ObjectInfo) -> bytes:
        return recipient_object_key(self.host.identity, obj)

    # ----------------------------------------------------------------- export

    async def export(
        self, transfer_id: str, destination: str, purpose: str | None = None, user: str = ""
    ) -> dict[str, Any]:
        """Deliver a complete received study to ``destination`` for ``user`` (:mod:`.access`)."""
        return await self.access.export(transfer_id, destination, purpose, user)

    # ----------------------------------------------------------------- cancel and resend

    def cancel(self, transfer_id: str) -> dict[str, Any]:
        """Cancel a sent transfer not yet delivered, or a received one still fetching (:mod:`.cancelling`)."""
        state = cancel(self, self.states.get(check_transfer_id(transfer_id)))
        return self.states.view(state)

    async def resend(self, transfer_id: str, user: str) -> str:
        """Send a sent transfer's source again, to the same recipient, for ``user``; the new id."""
        state = resend_request(self.states.get(check_transfer_id(transfer_id)))
        source = open_source(self.host.identity, state.source_sealed)
        await check_source(source, self.allowed)
        to_user = self.states.party(state.to_user)
        if state.to_user and not to_user:
            raise NodeUsageError("the recipient user of this transfer was erased here; send it anew")
        return await self.send(source, state.peer, state.purpose, state.mode, user, to_user)

    def stop_work(self, transfer_id: str) -> None:
        task = self._tasks.get(transfer_id)
        if task is not None:
            task.cancel()

    def withdraw(self, state: TransferState) -> None:
        transfer_id = bytes.fromhex(state.transfer_id)
        served = self.store.load_served(transfer_id)
        self.server.abandon_transfer(transfer_id)  # 410 first, then nothing left to serve
        for object_id in served[1] if served is not None else ():
            self.store.delete(object_id)
        self.store.delete_record(f"local-{state.transfer_id}")

    def tell_sender(self, state: TransferState) -> None:
        self.receiver.answer(state)

    def save(self, state: TransferState) -> None:
        self.states.save(state)

    # ----------------------------------------------------------------- views and records

    def list(self) -> list[dict[str, Any]]:
        """Every transfer, sent and received, newest first (users named while the vault holds them)."""
        return [self.states.view(s) for s in self.states.all()]

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        """One transfer's view, or ``None``."""
        state = self.states.get(check_transfer_id(transfer_id))
        return self.states.view(state) if state is not None else None

    def fail(self, state: TransferState, reason: str) -> None:
        # The reason goes to the operator through the API only: it may quote a source path, and
        # folder names often carry patient names, which must never reach the logs.
        if state.final:  # refused meanwhile, say: that outcome stands
            log.info("transfer already ended", extra={"fields": {"transfer": state.transfer_id}})
            return
        state.move(Phase.FAILED, reason)
        self.states.save(state)
        log.warning("transfer failed", extra={"fields": {"transfer": state.transfer_id}})

    async def submit(self, record: Record) -> None:
        result = (await self.host.submit_records([record]))[0]
        if result not in ("accepted", "duplicate", "replay"):  # replay: already on the ledger
            raise NodeError(f"the mempool refused our {record.type.name} record: {result}")
