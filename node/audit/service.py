"""The node's side of pseudonymous auditing: tags and escrow on our records, grants, scans, reports.

Every node runs an :class:`AuditService` over its :class:`~.vault.AuditVault`.

*Authoring.*  :meth:`AuditService.author` signs a record whose tag slots hold the parties of
our side (tag + escrow box, :func:`~mftp.ledger.pseudonyms.fill_slot`), random decoys in every
other slot, and one salted commitment per detail; the openings go to the vault (synced)
before the record is returned, so every record of ours can later be disclosed.

*Counterparty slots.*  A sender cannot compute the receiver's tags.  Before it signs a
``TRANSFER_OFFERED`` record it asks the recipient (``a.slots?``: record id, time, optional
recipient user) for the fills of the receiver institution and user slots, and puts them in the
record.  The recipient fills only its own parties, and only users it already knows (a sender
cannot make it create keys).  When the offer arrives the recipient checks the signed record
(:meth:`check_offer`): a tag or escrow box of its side that is not its own is the sender's
fault, and the transfer is refused, never countersigned.

*Grants.*  The subject's home institution signs an ``AUDIT_GRANT`` (:meth:`grant`) with the
subject's epoch keys sealed to the auditor, and commits to the subject's id in the record's
details, so it can later answer the auditor's ``a.disclose?`` with the details of every record
of its own that carries the subject's tags (nothing else, only while the grant is unexpired).

*Scans and reports* run on the auditor's node: :mod:`.scan`.

Party ids are never logged; logs name records and grants by id.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from mftp.crypto.signing import PublicIdentity, SigningIdentity
from mftp.ledger.audit import AuditUsageError, make_grant_body
from mftp.ledger.ledger import Ledger
from mftp.ledger.pseudonyms import (
    KIND_ROLES,
    CounterpartyMismatchError,
    Disclosure,
    KeyErasedError,
    PartyKeys,
    PseudonymUsageError,
    Role,
    SlotFill,
    build_slots,
    check_counterparty,
    commit_details,
    epoch_of,
    fill_slot,
    make_rotation_body,
    tagged_roles,
)
from mftp.ledger.records import PURPOSES, Record, RecordType, make_record
from mftp.ledger.store import BlockStore

from ..clock import Clock
from ..config import Config
from ..errors import NodeInputError, NodeUsageError
from ..ratelimit import PeerRate
from .messages import (
    MAX_DISCLOSED_RECORDS,
    MAX_DISCLOSURE_WALK,
    DisclosurePage,
    SlotRequest,
    decode_disclose_answer,
    decode_disclose_request,
    decode_slot_answer,
    decode_slot_request,
    disclose_answer,
    disclose_request,
    slot_answer,
)
from .vault import AuditVault

log = logging.getLogger("mftp.node.audit")

MAX_CLOCK_SKEW_MS: Final = 10 * 60 * 1000
"""A slot request for a record dated further from our clock is refused (bounds replays)."""
SLOT_RETRY_S: Final = 5.0
SLOT_WAIT_S: Final = 24 * 3600.0
"""As long as a capability lives: a prepared study waits that long for a recipient that is down."""
SLOT_REQUESTS_PER_S: Final = 20.0  # per member: one per study it sends us
SLOT_REQUEST_BURST: Final = 200  # a PACS pushing a batch of studies at once
DISCLOSE_WAIT_S: Final = 15.0  # per page
MAX_DISCLOSURE_PAGES: Final = 500  # one scan asks for at most 500 pages (2.5 million places walked)
MAX_PENDING: Final = 256


class AuditHost(Protocol):
    """What the service needs from the running node."""

    config: Config
    identity: SigningIdentity
    data_dir: Path
    ledger: Ledger
    clock: Clock

    def is_member(self, sign_key: bytes) -> bool:
        """Whether ``sign_key`` is a member now."""

    def send_peer(self, sign_key: bytes, channel: str, value: Any) -> None:
        """Queue a p2p message to a member."""

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer signed records to the mempool."""

    def member_name(self, sign_key: bytes) -> str:
        """The name of a member (or a short hex of its key)."""


def user_party(name: str) -> str:
    """``user:<name>`` for a user name (or an id that already has the prefix)."""
    name = name.strip()
    if not name or name == "user:":
        raise NodeUsageError("a user is required: who does this (user name or user:<id>)")
    return name if name.startswith("user:") else f"user:{name}"


def patient_party(patient_id: str, issuer: str = "") -> str:
    """``patient:<issuer>/<Patient ID>``: the patient as its home institution knows it."""
    return f"patient:{issuer}/{patient_id}" if issuer else f"patient:{patient_id}"


def parse_month(text: str) -> int:
    """The epoch of ``YYYY-MM`` (a calendar month, UTC)."""
    try:
        day = datetime.date.fromisoformat(text.strip() + "-01")
    except ValueError:
        raise NodeUsageError(f"expected a month as YYYY-MM, not {text!r}") from None
    return (day.year - 1970) * 12 + day.month - 1


def parse_day_ms(text: str) -> int:
    """Milliseconds at 00:00 UTC of ``YYYY-MM-DD``."""
    try:
        day = datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise NodeUsageError(f"expected a date as YYYY-MM-DD, not {text!r}") from None
    return (day - datetime.date(1970, 1, 1)).days * 86_400_000


class AuditService:
    """Tags, escrow, details, the slot exchange and grants of one node (see the module doc)."""

    def __init__(self, host: AuditHost) -> None:
        self.host = host
        institution = "institution:" + host.config.get("node", "name")
        self.vault = AuditVault(host.data_dir / "audit", host.identity, institution)
        if self.vault.torn_bytes:
            log.warning("audit details log had a torn tail", extra={"fields": {"cut": self.vault.torn_bytes}})
        self._slot_waiters: dict[bytes, tuple[bytes, asyncio.Future[dict[Role, SlotFill]]]] = {}
        # (grant id, page start) -> (institution, its answer)
        self._disclose_waiters: dict[tuple[bytes, int], tuple[bytes, asyncio.Future[DisclosurePage]]] = {}
        self._disclosing = asyncio.Lock()
        self.refused_counterparty = 0
        self._slot_rate = PeerRate(SLOT_REQUESTS_PER_S, SLOT_REQUEST_BURST, host.clock)
        self.refused_slot_requests = 0
        self.erasure_listeners: list[Callable[[str], None]] = []
        """Called with an erased party's former vault reference, so other stores forget it too."""

    def channels(self) -> dict[str, Callable[[bytes, Any], None]]:
        """The peer channels this service handles (``a.*``), for the node's dispatcher."""
        return {
            "a.slots?": self.on_slot_request,
            "a.slots": self.on_slot_answer,
            "a.disclose?": self.on_disclose_request,
            "a.disclose": self.on_disclose_answer,
        }

    @property
    def institution(self) -> str:
        """Our institution's party id."""
        return self.vault.institution_id

    def member_key(self, name_or_key: str) -> bytes:
        """The sign key of a member named ``name_or_key`` (or given as 64 hex digits)."""
        state = self.host.ledger.state
        members = {v.name: v.sign_key for v in state.validators.validators}
        members.update({a.name: a.sign_key for a in state.auditors})
        if name_or_key in members:
            return members[name_or_key]
        try:
            key = bytes.fromhex(name_or_key)
        except ValueError:
            key = b""
        if key not in members.values():
            raise NodeUsageError(f"{name_or_key!r} is not a member of the consortium")
        return key

    # ------------------------------------------------------------------ authoring

    def fills(self, record_id: bytes, time_ms: int, parties: Mapping[Role, str]) -> dict[Role, SlotFill]:
        """Tag and escrow of our parties (``{slot: party id}``; made on first use) in a record."""
        fills = {}
        for role, party_id in parties.items():
            kind = next(k for k, roles in KIND_ROLES.items() if role in roles)
            try:
                keys = self.vault.party(party_id, kind, time_ms=time_ms)
            except KeyErasedError:
                raise NodeUsageError("a party of this record was erased at this institution") from None
            fills[role] = fill_slot(keys, record_id, time_ms, role)
        return fills

    def author(
        self,
        record_type: RecordType,
        body: dict[str, Any],
        *,
        fills: Mapping[Role, SlotFill],
        details: Mapping[str, Any],
        record_id: bytes | None = None,
        time_ms: int | None = None,
    ) -> Record:
        """Sign a record with these slots and committed details; keep the openings first."""
        tags, envelope = build_slots(fills)
        try:
            commitments, openings = commit_details(details)
        except PseudonymUsageError as exc:
            raise NodeUsageError(str(exc)) from None
        record = make_record(
            self.host.identity,
            record_type,
            body,
            record_id=record_id or secrets.token_bytes(16),
            time_ms=self.host.clock.now_ms() if time_ms is None else time_ms,
            tags=tags,
            envelope=envelope,
            commitments=commitments,
        )
        self.vault.add_details(record.record_id, openings)
        return record

    # ------------------------------------------------------------------ slot exchange: sender

    async def counterparty_fills(
        self, peer_key: bytes, record_id: bytes, to_user: str, *, wait_s: float = SLOT_WAIT_S
    ) -> tuple[int, dict[Role, SlotFill]]:
        """``(time_ms, fills)`` of the recipient's side for our record ``record_id``.

        Asks again every :data:`SLOT_RETRY_S` (the recipient may be down) for up to ``wait_s``;
        then :class:`NodeInputError`.  The record must carry the returned ``time_ms``.
        """
        if len(self._slot_waiters) >= MAX_PENDING:
            raise NodeUsageError("too many transfers waiting for their recipients' tags")
        deadline = self.host.clock.monotonic_s() + wait_s
        loop = asyncio.get_running_loop()
        try:
            while True:
                time_ms = self.host.clock.now_ms()
                future: asyncio.Future[dict[Role, SlotFill]] = loop.create_future()
                self._slot_waiters[record_id] = (peer_key, future)
                self.host.send_peer(peer_key, "a.slots?", SlotRequest(record_id, time_ms, to_user).to_value())
                try:
                    fills = await asyncio.wait_for(
                        future, min(SLOT_RETRY_S, max(0.1, deadline - self.host.clock.monotonic_s()))
                    )
                except TimeoutError:
                    if self.host.clock.monotonic_s() >= deadline:
                        raise NodeInputError("the recipient did not contribute its tags in time") from None
                    continue
                wanted = {Role.RECEIVER_INSTITUTION} | ({Role.RECEIVER_USER} if to_user else set())
                if set(fills) != wanted:
                    raise NodeInputError("the recipient's tags do not cover the slots asked for")
                return time_ms, fills
        finally:
            self._slot_waiters.pop(record_id, None)

    def on_slot_answer(self, sender: bytes, value: Any) -> None:
        """An ``a.slots`` answer to one of our requests."""
        record_id, fills, error = decode_slot_answer(value)
        waiter = self._slot_waiters.get(record_id)
        if waiter is None or waiter[0] != sender:
            raise NodeInputError("a.slots: not an answer to a request of ours to this member")
        if not waiter[1].done():
            if error:
                waiter[1].set_exception(NodeUsageError(f"the recipient refused to tag the record: {error}"))
            else:
                waiter[1].set_result(fills)

    # ------------------------------------------------------------------ slot exchange: recipient

    def on_slot_request(self, sender: bytes, value: Any) -> None:
        """Answer a member's ``a.slots?`` with our institution's (and a known user's) fills."""
        if not self.host.is_member(sender):
            raise NodeInputError("a.slots?: sender is not a member")
        request = decode_slot_request(value)
        if abs(request.time_ms - self.host.clock.now_ms()) > MAX_CLOCK_SKEW_MS:
            raise NodeInputError("a.slots?: record time too far from our clock")
        parties = {Role.RECEIVER_INSTITUTION: self.institution}
        error = ""
        if not self._slot_rate.allow(sender):  # each answer costs key work, and would probe user names
            self.refused_slot_requests += 1
            error = "too many slot requests from your node; send again shortly"
        elif request.user:
            if self.vault.has_party(request.user):
                parties[Role.RECEIVER_USER] = request.user
            else:
                error = "unknown recipient user at this institution"
        fills = {} if error else self.fills(request.record_id, request.time_ms, parties)
        self.host.send_peer(sender, "a.slots", slot_answer(request.record_id, fills, error))

    def check_offer(self, record: Record, to_user: str) -> None:
        """Check our side's slots of a sender's offer record; refuse it if they are not ours.

        Raises :class:`~mftp.ledger.pseudonyms.CounterpartyMismatchError` (the sender's fault).
        """
        expected = {Role.RECEIVER_INSTITUTION: self.institution}
        if to_user:
            if not self.vault.has_party(to_user):
                raise CounterpartyMismatchError("the offer names a recipient user we do not know")
            expected[Role.RECEIVER_USER] = to_user
        try:
            check_counterparty(self.vault.keyring, record, expected)
        except CounterpartyMismatchError:
            self.refused_counterparty += 1
            raise

    # ------------------------------------------------------------------ grants

    async def grant(
        self,
        *,
        subject: str,
        auditor: bytes,
        legal_basis: str,
        purpose: str,
        epoch_from: int,
        epoch_to: int,
        expires_ms: int,
        notify_after_ms: int,
    ) -> Record:
        """Sign and submit an ``AUDIT_GRANT`` for one of our parties to the auditor ``auditor``."""
        if purpose not in PURPOSES:
            raise NodeUsageError(f"purpose must be one of {', '.join(sorted(PURPOSES))}")
        if not self.host.is_member(auditor):
            raise NodeUsageError("the auditor is not a member of the consortium")
        if expires_ms <= self.host.clock.now_ms():
            raise NodeUsageError("the grant would already be expired")
        kind = subject.partition(":")[0]
        try:
            party = self.vault.party(subject, kind, create=False)
        except (PseudonymUsageError, KeyErasedError) as exc:
            raise NodeUsageError(f"no such party at this institution: {exc}") from None
        try:
            body = make_grant_body(
                party,
                PublicIdentity.from_sign_key(auditor),
                legal_basis=legal_basis,
                purpose=purpose,
                epoch_from=epoch_from,
                epoch_to=epoch_to,
                expires_ms=expires_ms,
                notify_after_ms=notify_after_ms,
            )
        except AuditUsageError as exc:
            raise NodeUsageError(str(exc)) from None
        record = self.author(RecordType.AUDIT_GRANT, body, fills={}, details={"subject": subject})
        await self.submit(record)
        log.info("audit grant made", extra={"fields": {"grant": record.record_id.hex()}})
        return record

    async def rotate(self, party_id: str, reason: str) -> Record:
        """Rotate a party's master key from next month on, or erase it; publish ``KEY_ROTATION``.

        ``reason`` ``"erasure"`` destroys the party's masters and escrow key (crypto-shredding,
        after the retention period): its tags can no longer be linked, its boxes not opened.
        It also forgets the party's name and every detail naming it
        (:meth:`~.vault.AuditVault.erase`), and tells :attr:`erasure_listeners`, so that nothing
        on the node names the party any more.  A party the vault knows only by name (a user
        who never signed a record, another institution's recipient user) can be erased too.
        The record commits to the party and the new key without revealing either; its opening
        stays in the vault.
        """
        if not isinstance(party_id, str):
            raise NodeUsageError("party is a party id such as user:<name>")
        kind = party_id.partition(":")[0]
        try:
            if reason == "erasure":
                if not self.vault.knows(party_id):
                    self.vault.party(party_id, kind, create=False)  # says why: unknown, or erased
                body, opening = make_rotation_body(party_id, None, epoch_of(self.host.clock.now_ms()), reason)
                reference = self.vault.erase(party_id)
                for forget in self.erasure_listeners:
                    forget(reference)
            else:
                self.vault.party(party_id, kind, create=False)
                body, opening = self.vault.rotate(party_id, epoch_of(self.host.clock.now_ms()) + 1, reason)
        except (PseudonymUsageError, KeyErasedError) as exc:
            raise NodeUsageError(str(exc)) from None
        # An erasure keeps nothing that names the party, not even in our own vault.
        details = {} if reason == "erasure" else {"party": party_id, "key": opening.key_fingerprint.hex()}
        record = self.author(RecordType.KEY_ROTATION, body, fills={}, details=details)
        await self.submit(record)
        log.info("party key rotated", extra={"fields": {"record": record.record_id.hex(), "reason": reason}})
        return record

    def on_disclose_request(self, sender: bytes, value: Any) -> None:
        """An auditor asks for a page of the details of our records of a grant's subject."""
        grant_id, after = decode_disclose_request(value)
        disclosures, next_after, error = self._disclosures_for(sender, grant_id, after)
        answer = disclose_answer(grant_id, after, disclosures, next_after=next_after, error=error)
        self.host.send_peer(sender, "a.disclose", answer)
        log.info(
            "audit details disclosed",
            extra={"fields": {"grant": grant_id.hex(), "records": len(disclosures), "refused": error}},
        )

    def _disclosures_for(
        self, auditor: bytes, grant_id: bytes, after: int
    ) -> tuple[list[Disclosure], int, str]:
        """``(disclosures, next page's start or -1, refusal)`` of the page of ``grant_id`` from ``after``."""
        granted, error = self._granted(auditor, grant_id)
        if granted is None:
            return [], -1, error
        party, grant = granted
        store = self.host.ledger.store
        held, next_after = self.vault.details.positioned_ids(after, MAX_DISCLOSURE_WALK)
        disclosures: list[Disclosure] = []
        for position, record_id in held:
            disclosure = self._disclosure_of(store, party, record_id, grant_id, grant)
            if disclosure is None:
                continue
            disclosures.append(disclosure)
            if len(disclosures) == MAX_DISCLOSED_RECORDS:  # full: the next page starts after this record
                if position != held[-1][0] or next_after != -1:
                    next_after = position + 1
                break
        return disclosures, next_after, ""

    def _granted(
        self, auditor: bytes, grant_id: bytes
    ) -> tuple[tuple[PartyKeys, Mapping[str, Any]] | None, str]:
        """The subject's keys and our grant's body, if ``grant_id`` is ours to ``auditor``; else a refusal."""
        found = self.host.ledger.store.record(grant_id)
        me = self.host.identity.public.sign_key
        if found is None or found.record.type is not RecordType.AUDIT_GRANT or found.record.author != me:
            return None, "no grant of ours with this id on the chain"
        body = found.record.body
        if body["auditor"] != auditor:
            return None, "the grant names another auditor"
        if self.host.clock.now_ms() >= body["expires_ms"]:
            return None, "the grant has expired"
        opened = self.vault.disclose(grant_id)  # the subject is gone if it was erased
        subject = opened.fields["subject"][1] if opened is not None and "subject" in opened.fields else ""
        if not subject or subject not in self.vault.keyring.parties:
            return None, "the grant's subject is no longer held here (erased?)"
        return (self.vault.keyring.parties[subject], body), ""

    def _disclosure_of(
        self, store: BlockStore, party: PartyKeys, record_id: bytes, grant_id: bytes, grant: Mapping[str, Any]
    ) -> Disclosure | None:
        """The details of our record ``record_id`` if it is stored, in the grant's epochs and the party's."""
        stored = store.record(record_id)
        if stored is None or record_id == grant_id:
            return None
        record = stored.record
        if not grant["epoch_from"] <= epoch_of(record.time_ms) <= grant["epoch_to"]:
            return None
        try:
            mine = bool(tagged_roles(party, record))
        except KeyErasedError:
            return None
        return self.vault.disclose(record_id) if mine else None

    async def request_disclosures(self, institution: bytes, grant_id: bytes) -> tuple[list[Disclosure], str]:
        """Every page of ``institution``'s details of grant ``grant_id``'s records; ``(found, note)``.

        A refusal, or an institution that stops answering, becomes the note, with what
        it disclosed before that (the note says how much).
        """
        async with self._disclosing:  # two scans of one grant would wait for the same pages
            return await self._all_pages(institution, grant_id)

    async def _all_pages(self, institution: bytes, grant_id: bytes) -> tuple[list[Disclosure], str]:
        found: dict[bytes, Disclosure] = {}  # a record re-added at a later position counts once
        after = 0
        for _ in range(MAX_DISCLOSURE_PAGES):
            try:
                page = await self._disclosure_page(institution, grant_id, after)
            except TimeoutError:
                return list(found.values()), _partial("the institution did not answer", found)
            except NodeUsageError as exc:
                if not found:
                    return [], str(exc)
                return list(found.values()), _partial(str(exc), found)
            for disclosure in page.disclosures:
                found.setdefault(disclosure.record_id, disclosure)
            if page.next_after == -1:
                return list(found.values()), ""
            after = page.next_after
        return list(found.values()), _partial(f"more than {MAX_DISCLOSURE_PAGES} pages", found)

    async def _disclosure_page(self, institution: bytes, grant_id: bytes, after: int) -> DisclosurePage:
        future: asyncio.Future[DisclosurePage] = asyncio.get_running_loop().create_future()
        key = (grant_id, after)
        self._disclose_waiters[key] = (institution, future)
        try:
            self.host.send_peer(institution, "a.disclose?", disclose_request(grant_id, after))
            return await asyncio.wait_for(future, DISCLOSE_WAIT_S)
        finally:
            self._disclose_waiters.pop(key, None)

    def on_disclose_answer(self, sender: bytes, value: Any) -> None:
        """An institution's ``a.disclose`` answer to our request for one page."""
        page = decode_disclose_answer(value)
        waiter = self._disclose_waiters.get((page.grant_id, page.after))
        if waiter is None or waiter[0] != sender:
            raise NodeInputError("a.disclose: not an answer to a request of ours to this member")
        if waiter[1].done():
            return
        if page.error:
            waiter[1].set_exception(NodeUsageError(f"the institution refused to disclose: {page.error}"))
        else:
            waiter[1].set_result(page)

    # ------------------------------------------------------------------ records

    async def submit(self, record: Record) -> None:
        """Submit one of our records; :class:`NodeUsageError` if the mempool refuses it."""
        result = (await self.host.submit_records([record]))[0]
        if result not in ("accepted", "duplicate"):
            raise NodeUsageError(f"the mempool refused our {record.type.name} record: {result}")


def _partial(reason: str, found: Mapping[bytes, Disclosure]) -> str:
    """The scan's note when the institution's disclosure stopped part way."""
    if not found:
        return f"{reason}: details are not disclosed"
    return f"{reason} after disclosing the details of {len(found)} records: the other matches have none"
