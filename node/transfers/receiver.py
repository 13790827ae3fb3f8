"""The recipient's side of a peer transfer: offers checked, studies fetched, verified and recorded.

``t.offer`` from a member (:meth:`Receiver.on_offer`): the offer is checked (capability signed by
the sender for us, the signed offer record carrying our own tags and escrow in our slots, within
``transfer.max_study_bytes`` and ``max_instances``), persisted, acknowledged on ``t.receipt``, and
fetched in the background (:meth:`Receiver.receive`).

The sender offers a study while it still prepares it (:mod:`.service`): the recipient fetches
each *partial* manifest the sender publishes, every chunk checked against it, and verifies the
files of the objects it holds (decrypt, decompress, SHA-256 against the manifest) while the rest
is still prepared and fetched; then the *final* manifest, which it keeps.  A failed fetch is
retried with backoff until the capability expires; a restarted node resumes every unfinished
fetch, fetching only missing chunks (files verified early are verified again after a restart).
A fetch given up for good (the sender's data cannot be used, or a day has passed) deletes the
objects it had fetched, complete or partial: nothing will ever read them.
The ``TRANSFER_RECEIVED`` record is signed once every file of the final manifest verified
(outcome ``complete``), or as ``refused`` if one does not.  The study stays encrypted at rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any, Final

from mftp.crypto.signing import PublicIdentity
from mftp.ledger.pseudonyms import CounterpartyMismatchError, Role
from mftp.ledger.records import Record, RecordType
from mftp.transfer.capability import Capability, covers_manifest, decode_capability
from mftp.transfer.errors import TransferError, TransferInputError
from mftp.transfer.manifest import Entry, Manifest, ObjectInfo, open_manifest

from ..dataplane.blobstore import BlobStore
from ..dataplane.server import CapabilityRefused, FetchFailed, fetch_manifest, fetch_transfer
from ..dataplane.tls import PeerKeyMismatch
from ..errors import NodeError, NodeInputError, NodeUsageError
from .context import MAX_TRANSFER_AGE_MS, TransferContext
from .messages import NO_RECORD, decode_offer, receipt_value
from .preparing import publish_interval_s, verify_entries
from .state import IN, Phase, TransferState

log = logging.getLogger("mftp.node.transfers.service")

MAX_UNFINISHED_OFFERS_PER_PEER: Final = 16  # bounds the disk and tasks one member can make us spend
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 60.0


class OfferRefused(NodeInputError):
    """The sender's manifest breaks our limits or its own capability: no retry can help."""


class _EarlyChecks:
    """Verification of the files of partial manifests while the rest is still fetched.

    One check runs at a time, in a worker thread, on the entries not yet verified; a file that
    does not verify ends the transfer as refused when :meth:`result` is awaited.
    """

    def __init__(
        self,
        store: BlobStore,
        key_for: Callable[[ObjectInfo], bytes],
        on_verified: Callable[[Manifest, list[Entry]], None] = lambda manifest, entries: None,
    ) -> None:
        self.store, self.key_for, self.on_verified = store, key_for, on_verified
        self.verified: set[Entry] = set()
        self.task: asyncio.Task[list[Entry]] | None = None

    def start(self, manifest: Manifest) -> None:
        """Check the new entries of ``manifest`` unless a check is still running."""
        if self.task is not None:
            if not self.task.done():
                return
            if self.task.exception() is not None:
                return  # keep the failure for result()
            self.verified.update(self.task.result())
        skip = frozenset(self.verified)
        work = asyncio.to_thread(verify_entries, self.store, manifest, self.key_for, skip=skip)
        self.task = asyncio.get_running_loop().create_task(work)
        self.task.add_done_callback(lambda task: self._tell(manifest, task))

    def _tell(self, manifest: Manifest, task: asyncio.Task[list[Entry]]) -> None:
        """Tell ``on_verified`` of the files a check just verified (a viewer may open them now)."""
        if not task.cancelled() and task.exception() is None and task.result():
            self.on_verified(manifest, task.result())

    async def result(self) -> frozenset[Entry]:
        """The entries verified early (raises the first verification failure)."""
        if self.task is not None:
            self.verified.update(await self.task)
        return frozenset(self.verified)

    def cancel(self) -> None:
        """Stop waiting for a running check (its thread finishes on its own)."""
        if self.task is None:
            return
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()  # retrieved: the transfer already ended another way


class Receiver:
    """The receiving side of the transfer service (a :class:`~.context.TransferContext`; see above)."""

    def __init__(self, service: TransferContext) -> None:
        self.service = service
        self.host = service.host
        self.store = service.store
        self.states = service.states
        self.audit = service.audit
        # Set by a re-sent offer: the sender offers again when its final manifest is ready,
        # so a recipient waiting between partial manifests asks at once.
        self._wake: dict[str, asyncio.Event] = {}
        # Told of each batch of verified files, while the study arrives and once complete (the
        # viewer, mftp.node.viewing, indexes them so a study opens before its last byte arrives).
        self.verified_listeners: list[Callable[[TransferState, Manifest, Collection[Entry]], None]] = []

    def on_offer(self, sender: bytes, value: Any) -> None:
        """An offer on ``t.offer`` from a member: check, persist, acknowledge and start fetching."""
        if not self.host.is_member(sender):
            raise NodeInputError("t.offer: sender is not a member")
        offer = decode_offer(value, sender=sender, recipient=self.host.identity.public.sign_key)
        transfer_id = offer.transfer_id.hex()
        known = self.states.get(transfer_id)
        if known is not None:  # a re-sent offer: answer again, the first answer may be lost
            if known.peer_key != sender.hex() or known.direction != IN:
                raise NodeInputError("t.offer: transfer id already used")
            self._renew(known, offer.capability)
            if (wake := self._wake.get(known.transfer_id)) is not None:
                wake.set()
            self._answer(known)
            return
        peer = next((p for p in self.host.known_peers() if p.sign_key == sender), None)
        if peer is None:
            # Without a configured peer we would fetch from whatever URL the offer names.
            raise NodeInputError("t.offer: sender is not a configured peer ([[p2p.peers]])")
        unfinished = [
            s
            for s in self.states.all()
            if s.direction == IN and s.peer_key == sender.hex() and s.state in ("fetching", "verifying")
        ]
        if len(unfinished) >= MAX_UNFINISHED_OFFERS_PER_PEER:
            raise NodeInputError("t.offer: too many unfinished transfers from this member")
        if offer.capability.not_after_ms <= self.service.host.clock.now_ms():
            raise NodeInputError("t.offer: capability already expired")
        try:
            self.audit.check_offer(offer.record, offer.to_user)
        except CounterpartyMismatchError as exc:
            # Not ours to countersign: tell the sender (its fault), keep nothing.
            log.warning("offer refused: our tag slots are wrong", extra={"fields": {"transfer": transfer_id}})
            with contextlib.suppress(NodeUsageError):
                self.host.send_peer(sender, "t.receipt", receipt_value(offer.transfer_id, "refused"))
            raise NodeInputError(f"t.offer: {exc}") from None
        configured = peer.data_url
        state = TransferState(
            transfer_id=transfer_id,
            direction=IN,
            peer=peer.name,
            peer_key=sender.hex(),
            purpose=offer.purpose,
            mode=offer.mode,
            state=Phase.FETCHING,
            created_ms=self.service.host.clock.now_ms(),
            capability=base64.b64encode(offer.capability.token).decode(),
            # Our own configuration's address wins: the offer's is the sender's word.
            data_url=configured or offer.data_url,
            offer_record=offer.offer_id.hex(),
            to_user=offer.to_user,
        )
        if offer.sealed:
            self.store.put_record(f"offer-{transfer_id}", offer.sealed)
        self.states.save(state)
        log.info("transfer offered to us", extra={"fields": {"transfer": transfer_id, "from": state.peer}})
        self._answer(state)
        self.service.spawn(transfer_id, self.receive(state))

    def _renew(self, state: TransferState, capability: Capability) -> None:
        """Keep the re-sent offer's capability if it outlives ours (checked by ``decode_offer``)."""
        ours = decode_capability(base64.b64decode(state.capability))
        if (
            state.state in ("fetching", "verifying")
            and capability.transfer_id == ours.transfer_id
            and capability.manifest_sha256 == ours.manifest_sha256
            and capability.not_after_ms > ours.not_after_ms
        ):
            state.capability = base64.b64encode(capability.token).decode()
            self.states.save(state)

    def answer(self, state: TransferState) -> None:
        """Tell the sender where ``state`` is (``t.receipt``): failed and cancelled are ``refused``."""
        self._answer(state)

    def _answer(self, state: TransferState) -> None:
        answer = {"complete": "complete", "failed": "refused", "cancelled": "refused"}.get(
            state.state, "accepted"
        )
        record = bytes.fromhex(state.received_record) if state.received_record else NO_RECORD
        value = receipt_value(bytes.fromhex(state.transfer_id), answer, record)
        with contextlib.suppress(NodeUsageError):  # the sender left the consortium: nothing to tell
            self.host.send_peer(bytes.fromhex(state.peer_key), "t.receipt", value)

    async def _manifest(self, state: TransferState, capability: Capability) -> Manifest:
        """The final manifest once we hold it, else the sender's latest (maybe partial) one."""
        sender = PublicIdentity.from_sign_key(bytes.fromhex(state.peer_key))
        sealed = self.store.get_record(f"offer-{state.transfer_id}")
        manifest = None
        if sealed is not None:
            manifest = await asyncio.to_thread(open_manifest, sealed, self.host.identity, sender=sender)
        if manifest is None or manifest.partial:  # only a final manifest is kept
            _, sealed = await fetch_manifest(
                state.data_url, self.host.identity, capability, sender=sender, clock_ms=self.host.clock.now_ms
            )
            manifest = await asyncio.to_thread(open_manifest, sealed, self.host.identity, sender=sender)
            if not manifest.partial:
                self.store.put_record(f"offer-{state.transfer_id}", sealed)
        if not covers_manifest(capability, manifest.sha256) or manifest.transfer_id != capability.transfer_id:
            raise OfferRefused("the sender's manifest is not the one its capability names")
        max_bytes = self.host.config.get("transfer", "max_study_bytes")
        if manifest.total_original_bytes > max_bytes:
            raise OfferRefused(f"study of {manifest.total_original_bytes} bytes exceeds {max_bytes}")
        if manifest.total_ciphertext_bytes > max_bytes + max_bytes // 8 + (1 << 20):
            # What we would fetch, not only what the sender says it restores to.
            raise OfferRefused(f"objects of {manifest.total_ciphertext_bytes} bytes exceed the study limit")
        if len(manifest.entries) > self.host.config.get("transfer", "max_instances"):
            raise OfferRefused("study has more instances than transfer.max_instances")
        return manifest

    async def receive(self, state: TransferState) -> None:
        """Fetch (each partial manifest as the sender publishes it, then the final), verify, record."""
        checker = _EarlyChecks(
            self.store,
            self.service.object_key,
            lambda manifest, entries: self._tell(state, manifest, entries),
        )
        delay_s = RETRY_MIN_S

        def elapsed() -> float:
            return self.service.host.clock.monotonic_s() - polled_at

        totals: Counter[str] = Counter()  # over the rounds of a streamed study, logged once
        wake = self._wake.setdefault(state.transfer_id, asyncio.Event())
        known: Manifest | None = None  # the latest manifest: what a failed fetch leaves on disk
        try:
            while True:
                # Re-read each round: a re-sent offer may have renewed it (``_renew``).
                capability = decode_capability(base64.b64decode(state.capability))
                polled_at = self.service.host.clock.monotonic_s()
                try:
                    manifest = known = await self._manifest(state, capability)
                    state.files = len(manifest.entries)
                    state.study_bytes = manifest.total_original_bytes
                    state.fetch_bytes = manifest.total_ciphertext_bytes
                    await self._fetch(state, manifest, capability, totals)
                    delay_s = RETRY_MIN_S
                    if not manifest.partial:
                        break
                    checker.start(manifest)
                    # The sender is still preparing, and publishes at this pace: asking sooner
                    # would only fetch and open the same manifest again (unless it re-offers).
                    pause_s = max(0.0, publish_interval_s(len(manifest.entries)) - elapsed())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), pause_s)
                    wake.clear()
                except asyncio.CancelledError:
                    raise
                except CapabilityRefused as exc:
                    if not (exc.reason == "expired" and self._may_wait_for_renewal(state)):
                        self._give_up(state, f"the sender's data cannot be used: {exc}", known)
                        self._answer(state)
                        return
                    state.detail = "waiting for the sender to renew the capability"
                    await asyncio.sleep(RETRY_MAX_S)
                except (PeerKeyMismatch, TransferInputError, OfferRefused) as exc:
                    self._give_up(state, f"the sender's data cannot be used: {exc}", known)
                    self._answer(state)
                    return
                except (FetchFailed, NodeInputError, OSError) as exc:
                    if not self._may_wait_for_renewal(state):
                        self._give_up(state, f"the study was not fetched within a day: {exc}", known)
                        return
                    state.detail = f"retrying in {delay_s:.0f} s: {exc}"
                    log.info(
                        "fetch interrupted",
                        extra={"fields": {"transfer": state.transfer_id, "reason": str(exc)}},
                    )
                    await asyncio.sleep(delay_s)
                    delay_s = min(RETRY_MAX_S, delay_s * 2)
            log.info("transfer fetched", extra={"fields": {"transfer": state.transfer_id, **totals}})
            try:
                await self._verify_and_record(state, manifest, checker)
            except (NodeError, OSError) as exc:  # e.g. our own mempool is full: say so in the inbox
                self.service.fail(state, f"could not record the receipt: {exc}")
        except asyncio.CancelledError:
            if state.state == Phase.CANCELLED and known is not None:  # cancelled by a person
                self._discard(known)
            raise
        finally:
            checker.cancel()
            self._wake.pop(state.transfer_id, None)

    def _tell(self, state: TransferState, manifest: Manifest, entries: Collection[Entry]) -> None:
        for listener in self.verified_listeners:
            try:
                listener(state, manifest, entries)
            except Exception as exc:  # a listener's bug must not fail the transfer
                log.error("verified listener failed", extra={"fields": {"error": type(exc).__name__}})

    def _give_up(self, state: TransferState, reason: str, manifest: Manifest | None) -> None:
        """Fail the transfer for good and delete what was fetched of it: nothing will read it."""
        self.service.fail(state, reason)
        if manifest is not None:
            self._discard(manifest)

    def _discard(self, manifest: Manifest) -> None:
        """Delete what was fetched of a transfer that ended without being received."""
        for obj in manifest.objects:
            self.store.delete(obj.object_id)
        self.store.discard_transfer(manifest)

    def _may_wait_for_renewal(self, state: TransferState) -> bool:
        """Whether the sender still renews capabilities of ``state`` (younger than a day)."""
        return self.service.host.clock.now_ms() - state.created_ms < MAX_TRANSFER_AGE_MS

    async def _fetch(
        self, state: TransferState, manifest: Manifest, capability: Capability, totals: Counter[str]
    ) -> None:
        def progress(done: int, total: int) -> None:
            state.fetched_bytes = done

        section = self.host.config.values["transfer"]
        result = await fetch_transfer(
            manifest,
            self.store,
            state.data_url,
            self.host.identity,
            capability,
            parallel=section["parallel_fetches"],
            timeout_ms=section["fetch_timeout_ms"],
            retries=section["fetch_retries"],
            progress=progress,
            clock_ms=self.host.clock.now_ms,
        )
        state.fetched_bytes = state.fetch_bytes
        if not totals["rounds"]:  # what a restart had already fetched
            totals["resumed_bytes"] = result.resumed_bytes
        totals["fetched_bytes"] += result.fetched_bytes
        max_bytes = self.host.config.get("transfer", "max_study_bytes")
        if totals["fetched_bytes"] > 2 * max_bytes:
            # Partial manifests that keep naming new objects would fill our disk: a study is
            # fetched about once (plus what resuming fetches again), never twice over.
            raise OfferRefused(f"the sender's manifests made us fetch over {2 * max_bytes} bytes")
        totals["retries"] += result.retries
        totals["rounds"] += 1

    async def _verify_and_record(
        self, state: TransferState, manifest: Manifest, checker: _EarlyChecks
    ) -> None:
        state.move(Phase.VERIFYING, "")
        self.states.save(state)
        stored = self.store.get_record(f"received-record-{state.transfer_id}")
        if stored is not None:
            # Signed before a crash that came before the state was saved: submit that record
            # again (the ledger keeps one per id), never a second receipt for one transfer.
            await self._recorded(state, Record.decode(stored))
            if state.state == Phase.COMPLETE and self.verified_listeners:
                self._tell(state, manifest, manifest.entries)
            return
        try:
            verified = await checker.result()
            await asyncio.to_thread(
                verify_entries, self.store, manifest, self.service.object_key, skip=verified
            )
            outcome = "complete"
        except TransferError as exc:
            outcome = "refused"
            state.detail = f"a file does not match the sender's manifest: {exc}"
        parties = {Role.RECEIVER_INSTITUTION: self.audit.institution}
        to_user = self.states.party(state.to_user)  # a vault reference on disk; "" once erased
        if to_user:
            parties[Role.RECEIVER_USER] = to_user
        record_id, time_ms = secrets.token_bytes(16), self.service.host.clock.now_ms()
        record = self.audit.author(
            RecordType.TRANSFER_RECEIVED,
            {
                "transfer_id": manifest.transfer_id,
                "offer_id": bytes.fromhex(state.offer_record),
                "manifest_hash": manifest.sha256,
                "outcome": outcome,
            },
            fills=self.audit.fills(record_id, time_ms, parties),
            details={
                "user": to_user,
                "sender": state.peer,
                "outcome": outcome,
                "purpose": state.purpose,
            },
            record_id=record_id,
            time_ms=time_ms,
        )
        self.store.put_record(f"received-record-{state.transfer_id}", record.to_bytes())
        await self._recorded(state, record)
        if state.state == Phase.COMPLETE and self.verified_listeners:
            self._tell(state, manifest, manifest.entries)

    async def _recorded(self, state: TransferState, record: Record) -> None:
        """Submit our ``TRANSFER_RECEIVED`` record, then end the transfer as its outcome says."""
        await self.service.submit(record)
        outcome = record.body["outcome"]
        state.received_record = record.record_id.hex()
        state.move(Phase.COMPLETE if outcome == "complete" else Phase.FAILED)
        if outcome != "complete" and not state.detail:
            state.detail = "a file does not match the sender's manifest"
        self.states.save(state)
        log.info("transfer received", extra={"fields": {"transfer": state.transfer_id, "outcome": outcome}})
        self._answer(state)
