"""Sharing received studies with their patient: create, open with the code, download, revoke.

:class:`ShareService` holds the node's shares (:class:`~.store.ShareStore`), the patients'
open sessions (in memory only) and the ledger records:

- **create** (a clinician, through the API or ``mftp-node share create``): each study must be a
  complete received transfer; the first instance of each is restored in memory to read the
  patient (Patient ID and issuer, the vault's party id for the ledger's patient tag) and the
  Study Instance UID; every study must be the same patient's.  The ``PATIENT_SHARE`` record
  (action ``create``) is submitted before the share is stored, so no link works unrecorded.
  The answer holds the link's token and the code, once: only their keyed hashes are kept.
- **open** (the patient, no account): the token finds the share, the code is checked in
  constant time; a wrong one counts toward the lock.  A right one submits one
  ``STUDY_ACCESSED`` record (action ``share-view``, purpose ``PATRQT``) per study first, then
  counts the open and starts a session (a random id in an HttpOnly cookie, kept hashed).
- **scope** (the seam to the viewing room): for a request carrying a valid share session,
  :meth:`ShareService.scope` gives the studies it may see and a :class:`SharePrincipal`.
- **download**: one ``share-download`` record per study first, then the ZIP is streamed
  (:mod:`.bundle`); each file is restored in memory, and de-identified if the share says so.
- **revoke**: saved and every session of the share ended before anything else, so it takes
  effect at once on this node; then the ``PATIENT_SHARE`` record (action ``revoke``) whose
  ``effective_ms`` is when it did.

A share that cannot be used (unknown, not yet started, expired, exhausted, locked or revoked)
raises :class:`ShareUnavailable` with one message for all: a stranger learns nothing.

Logs name shares by id only; never a patient, a study, a token or a code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

import pydicom

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.ledger import Ledger
from mftp.ledger.pseudonyms import Role as Slot
from mftp.ledger.records import Record, RecordType
from mftp.transfer.deid import Mode, Policy, deidentify_file
from mftp.transfer.errors import TransferInputError

from ..audit.service import patient_party
from ..clock import Clock
from ..errors import NodeUsageError
from ..people.abuse import FailureWindow, address_key
from ..people.errors import RateLimited
from ..people.sessions import Principal
from ..transfers.state import check_transfer_id
from . import core
from .bundle import ZipBundle
from .core import Share, ShareState, Terms
from .seen import SeenEntry, SeenIndex, seen
from .store import ShareStore

log = logging.getLogger("mftp.node.shares")

PURPOSE: Final = "PATRQT"  # HL7 PurposeOfUse: the patient's own request
SESSION_IDLE_MS: Final = 30 * 60 * 1000
SESSION_ABSOLUTE_MS: Final = 4 * 3600 * 1000
MAX_SESSIONS: Final = 10_000
ADDRESS_FAILURES: Final = 30  # wrong codes from one address, over every share, per window
ADDRESS_WINDOW_MS: Final = 15 * 60 * 1000
DEFAULT_VIEWER_URL: Final = "/viewer?StudyInstanceUIDs={study}"
COOKIE_NAME: Final = "mftp_share"


class ShareUnavailable(NodeUsageError):
    """This link cannot be used now; the same words whatever the reason (404 to anyone)."""

    status: ClassVar[int] = 404
    MESSAGE: ClassVar[str] = "this link cannot be used"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class CodeRefused(NodeUsageError):
    """A wrong code for a usable share (it counted toward the lock)."""

    status: ClassVar[int] = 401


class ShareSessionRefused(NodeUsageError):
    """No valid share session for this request (absent, over, or of another share)."""

    status: ClassVar[int] = 401


@dataclass(frozen=True)
class HeldStudy:
    """A complete received study, checked: its transfer id, its file names, and how to read them."""

    transfer_id: str
    names: tuple[str, ...]
    handle: Any = field(repr=False)  # the checked manifest, for :meth:`Studies.read`


class Studies(Protocol):
    """The studies this node holds (:class:`~.access_adapter.TransferStudies` over the transfers)."""

    async def open_study(self, transfer_id: str) -> HeldStudy:
        """The complete received study ``transfer_id``; :class:`NodeUsageError` otherwise."""
        ...

    async def read(self, study: HeldStudy, name: str) -> bytes:
        """One file of the study, restored and checked, in memory."""
        ...


class Author(Protocol):
    """What records need (:class:`~mftp.node.audit.service.AuditService`)."""

    @property
    def institution(self) -> str:
        """Our institution's party id."""
        ...

    def fills(self, record_id: bytes, time_ms: int, parties: Mapping[Slot, str]) -> Any:
        """Tag and escrow of our parties in a record."""
        ...

    def author(
        self,
        record_type: RecordType,
        body: dict[str, Any],
        *,
        fills: Any,
        details: Mapping[str, Any],
        record_id: bytes | None = None,
        time_ms: int | None = None,
    ) -> Record:
        """Sign a record; keep its details' openings."""
        ...

    async def submit(self, record: Record) -> None:
        """Submit one of our records; :class:`NodeUsageError` if the mempool refuses it."""
        ...


class ShareHost(Protocol):
    """What the service needs of the node."""

    identity: SigningIdentity
    data_dir: Path
    clock: Clock
    ledger: Ledger

    def member_name(self, sign_key: bytes) -> str:
        """A member's public name."""
        ...


@dataclass(frozen=True)
class SharePrincipal(Principal):
    """A patient acting through a share: no roles, and the patient's party id as its own.

    ``name`` holds the patient's party id (``patient:<issuer>/<id>``), the id the vault tags
    them by on the ledger; :attr:`party_id` returns it as it is.
    """

    via: str = "share"

    @property
    def party_id(self) -> str:
        """The patient's party id (not a ``user:`` id: a patient has no account)."""
        return self.name


@dataclass(frozen=True)
class ShareScope:
    """What a request of a share session may see: exactly the shared studies (the viewing seam)."""

    share_id: str
    transfer_ids: frozenset[str]
    study_uids: frozenset[str] = field(repr=False)
    principal: SharePrincipal = field(repr=False)
    mode: str = "identified"
    download: bool = False

    def allows(self, *, transfer_id: str | None = None, study_uid: str | None = None) -> bool:
        """Whether a transfer or a study (by its Study Instance UID) is in the scope."""
        if transfer_id is not None and transfer_id not in self.transfer_ids:
            return False
        return study_uid is None or study_uid in self.study_uids


@dataclass
class _Session:
    share_id: str
    created_s: float
    last_s: float


@dataclass(frozen=True)
class Created:
    """A new share and its two secrets (shown once, never stored)."""

    share: Share
    token: str = field(repr=False)
    code: str = field(repr=False)


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _study_keys(data: bytes) -> tuple[str, str, str]:
    """``(Patient ID, Issuer of Patient ID, Study Instance UID)`` of one DICOM file's header."""
    ds = pydicom.dcmread(
        io.BytesIO(data), stop_before_pixels=True, specific_tags=[0x00100020, 0x00100021, 0x0020000D]
    )
    return (
        str(ds.get("PatientID", "") or "").strip()[:64],
        str(ds.get("IssuerOfPatientID", "") or "").strip()[:64],
        str(ds.get("StudyInstanceUID", "") or "").strip()[:64],
    )


class ShareService:
    """The node's patient shares (see the module docstring)."""

    def __init__(
        self,
        host: ShareHost,
        studies: Studies,
        audit: Author,
        *,
        secret: bytes = b"",
        viewer_url: str = DEFAULT_VIEWER_URL,
    ) -> None:
        self.host = host
        self.studies = studies
        self.audit = audit
        self.store = ShareStore(host.data_dir / "shares", host.identity, host.clock)
        self.secret = secret  # the institution's de-identification key (shares in another mode)
        self.viewer_url = viewer_url
        self.index = SeenIndex(host)
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._addresses = FailureWindow(host.clock, ADDRESS_FAILURES, ADDRESS_WINDOW_MS)
        self._opening = asyncio.Lock()  # one code check at a time: opens and failures count exactly

    # ------------------------------------------------------------------ the clinician's side

    async def create(
        self, principal: Principal, transfer_ids: list[str], terms: Terms, label: str = ""
    ) -> Created:
        """Share ``transfer_ids`` (received studies of one patient) under ``terms``."""
        if not 1 <= len(transfer_ids) <= core.MAX_STUDIES:
            raise NodeUsageError(f"a share holds 1 to {core.MAX_STUDIES} studies")
        ids = [check_transfer_id(t) for t in transfer_ids]
        if len(set(ids)) != len(ids):
            raise NodeUsageError("a study is named twice")
        if len(label) > core.MAX_LABEL_CHARS:
            raise NodeUsageError(f"a label has at most {core.MAX_LABEL_CHARS} characters")
        now = self.host.clock.now_ms()
        if terms.valid_until_ms <= now:
            raise NodeUsageError("the end date has passed already")
        if terms.mode != "identified" and not self.secret:
            raise NodeUsageError("this node cannot de-identify for a share (no institution secret)")
        patients, studies = set(), []
        for transfer_id in ids:
            held = await self.studies.open_study(transfer_id)
            if not held.names:
                raise NodeUsageError(f"transfer {transfer_id} holds no file")
            first = await self.studies.read(held, held.names[0])
            try:
                patient, issuer, study_uid = await asyncio.to_thread(_study_keys, first)
            except (pydicom.errors.InvalidDicomError, ValueError, OSError):
                raise NodeUsageError(f"the first file of transfer {transfer_id} is not DICOM") from None
            if not patient:
                raise NodeUsageError(f"transfer {transfer_id} names no patient: it cannot be shared with one")
            patients.add(patient_party(patient, issuer))
            studies.append(study_uid)
        if len(patients) != 1:
            raise NodeUsageError("these studies are not all of one patient; share each patient's apart")
        token, code, share_id = core.new_token(), core.new_code(), core.new_share_id()
        key = self.store.hash_key
        share = Share(
            share_id=share_id,
            token_hash=core.token_hash(key, token),
            code_hash=core.code_hash(key, share_id, code),
            transfer_ids=tuple(ids),
            studies=tuple(studies),
            patient=patients.pop(),
            created_by=principal.party_id,
            created_ms=now,
            terms=terms,
            label=label,
        )
        record = await self._share_record(share, "create", principal.party_id, max(now, terms.valid_from_ms))
        self.store.add(replace(share, records=(record,)))
        log.info("patient share created", extra={"fields": {"share": share_id, "studies": len(ids)}})
        return Created(self.store.get(share_id) or share, token, code)

    def shares(self) -> list[Share]:
        """Every share of this node, newest first."""
        return self.store.shares()

    def get(self, share_id: str) -> Share:
        """One share; :class:`NodeUsageError` if there is none of that id."""
        share = self.store.get(share_id) if isinstance(share_id, str) else None
        if share is None:
            raise NodeUsageError("no share of that id")
        return share

    async def revoke(self, principal: Principal, share_id: str) -> Share:
        """End a share at once (saved, sessions ended), then record when it took effect.

        Revoking a revoked share whose record did not reach the ledger submits it again.
        """
        now = self.host.clock.now_ms()
        current = self.get(share_id)
        if current.state is ShareState.REVOKED and current.revoke_record:
            raise NodeUsageError("this share is revoked already")
        if current.state is not ShareState.REVOKED:
            current = self.store.update(share_id, lambda s: core.revoked(s, now, principal.party_id))
        ended = self._end_sessions(share_id)
        record = await self._share_record(current, "revoke", principal.party_id, current.revoked_ms)
        done = self.store.update(
            share_id, lambda s: replace(s, records=(*s.records, record), revoke_record=record)
        )
        log.info("patient share revoked", extra={"fields": {"share": share_id, "sessions_ended": ended}})
        return done

    # ------------------------------------------------------------------ the patient's side

    def find(self, token: str) -> Share:
        """The usable share of a link's token; :class:`ShareUnavailable` for anything else."""
        if not isinstance(token, str) or not core.looks_like_token(token):
            raise ShareUnavailable()
        share = self.store.by_token_hash(core.token_hash(self.store.hash_key, token))
        if share is None or not share.usable(self.host.clock.now_ms()):
            raise ShareUnavailable()
        return share

    async def open(self, token: str, code: str, address: str) -> tuple[str, Share]:
        """Check the code; on success record the opening and start a session: ``(session id, share)``."""
        key = address_key(address)
        wait = self._addresses.retry_after_s(key)
        if wait is not None:
            raise RateLimited(wait)
        async with self._opening:
            share = self.find(token)
            if not core.code_matches(self.store.hash_key, share, code):
                self._addresses.add(key)
                after = self.store.update(share.share_id, core.after_failure)
                if after.state is ShareState.LOCKED:
                    self._end_sessions(share.share_id)
                    log.warning(
                        "patient share locked after wrong codes", extra={"fields": {"share": share.share_id}}
                    )
                    raise ShareUnavailable()
                raise CodeRefused("that code is not right; after a few wrong codes the link stops working")
            # Recorded before the session exists: no opening is ever served unrecorded.
            records = [await self._access_record(share, t, "share-view") for t in share.transfer_ids]
            opened = self.store.update(
                share.share_id, lambda s: replace(core.after_open(s), records=(*s.records, *records))
            )
        session_id = self._start_session(opened.share_id)
        log.info("patient share opened", extra={"fields": {"share": opened.share_id, "opens": opened.opens}})
        return session_id, opened

    def session(self, session_id: str | None, token: str | None = None) -> Share:
        """The share of a live session (of ``token``'s share, if given); refused otherwise."""
        if not session_id or len(session_id) > 100:
            raise ShareSessionRefused("no share session; enter your code")
        digest = _sha256(session_id)
        held = self._sessions.get(digest)
        now_s = self.host.clock.monotonic_s()
        if held is None or self._over(held, now_s):
            self._sessions.pop(digest, None)
            raise ShareSessionRefused("no share session; enter your code")
        share = self.store.get(held.share_id)
        if share is None or not share.session_allowed(self.host.clock.now_ms()):
            self._sessions.pop(digest, None)
            raise ShareUnavailable()
        if token is not None and not hmac.compare_digest(
            core.token_hash(self.store.hash_key, token if core.looks_like_token(token) else ""),
            share.token_hash,
        ):
            raise ShareSessionRefused("this session is for another link")
        held.last_s = now_s
        return share

    def end_session(self, session_id: str | None) -> None:
        """The patient leaves: the session is forgotten (unknown ids are ignored)."""
        if session_id:
            self._sessions.pop(_sha256(session_id[:100]), None)

    def scope(self, session_id: str | None) -> ShareScope:
        """The viewing seam: what a request with this share session may see.

        Raises :class:`ShareSessionRefused` or :class:`ShareUnavailable` (the caller answers
        401 or 404); a share revoked a moment ago is refused here at once.
        """
        share = self.session(session_id)
        principal = SharePrincipal(share.patient, "share", frozenset())
        return ShareScope(
            share.share_id,
            frozenset(share.transfer_ids),
            frozenset(s for s in share.studies if s),
            principal,
            share.terms.mode,
            share.terms.download,
        )

    def viewer_links(self, share: Share) -> list[str]:
        """The viewer's URL of each shared study (the viewing room serves them)."""
        return [self.viewer_url.replace("{study}", study) for study in share.studies if study]

    async def download(self, share: Share) -> AsyncIterator[bytes]:
        """The ZIP of the shared studies, chunk by chunk; the downloads are recorded first."""
        if not share.terms.download:
            raise NodeUsageError("this link allows viewing only")
        records = [await self._access_record(share, t, "share-download") for t in share.transfer_ids]
        self.store.update(share.share_id, lambda s: replace(s, records=(*s.records, *records)))
        log.info("patient share downloaded", extra={"fields": {"share": share.share_id}})
        return self._zip(share)

    async def _zip(self, share: Share) -> AsyncIterator[bytes]:
        bundle = ZipBundle("MFTP")
        render = self._renderer(share)
        for transfer_id in share.transfer_ids:
            held = await self.studies.open_study(transfer_id)
            for name in held.names:
                data = await self.studies.read(held, name)
                rendered = await asyncio.to_thread(render, data, name)
                if rendered is not None:
                    yield await asyncio.to_thread(bundle.add, rendered)
        yield await asyncio.to_thread(bundle.finish)

    def _renderer(self, share: Share) -> Callable[[bytes, str], bytes | None]:
        """What the patient gets of each file: the stored bytes, or de-identified per the share."""
        mode = Mode(share.terms.mode)
        if mode is Mode.IDENTIFIED:
            return lambda data, name: data
        salt = hmac.new(self.store.hash_key, b"anonymous\0" + share.share_id.encode(), "sha256").digest()
        policy = replace(
            Policy.for_mode(mode, transfer_salt=salt if mode is Mode.ANONYMOUS else None), burned_in="refuse"
        )

        def render(data: bytes, name: str) -> bytes | None:
            try:
                return deidentify_file(data, policy, self.secret, name=name).data
            except TransferInputError:  # an image that may show identity in its pixels: left out
                return None

        return render

    async def seen(self, share: Share) -> list[SeenEntry]:
        """Every recorded access to the shared studies, newest first, each proof checked."""
        return await asyncio.to_thread(seen, self.host, self.index, share.transfer_ids, self.host.member_name)

    # ------------------------------------------------------------------ sessions

    def _start_session(self, share_id: str) -> str:
        now = self.host.clock.monotonic_s()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)  # the oldest goes: the patient enters the code again
        session_id = secrets.token_urlsafe(32)
        self._sessions[_sha256(session_id)] = _Session(share_id, now, now)
        return session_id

    def _over(self, held: _Session, now_s: float) -> bool:
        return (
            now_s - held.last_s > SESSION_IDLE_MS / 1000
            or now_s - held.created_s > SESSION_ABSOLUTE_MS / 1000
        )

    def _end_sessions(self, share_id: str) -> int:
        ended = [h for h, s in self._sessions.items() if s.share_id == share_id]
        for digest in ended:
            del self._sessions[digest]
        return len(ended)

    # ------------------------------------------------------------------ records

    async def _share_record(self, share: Share, action: str, user: str, effective_ms: int) -> str:
        """Sign and submit the ``PATIENT_SHARE`` record of ``action``; its id."""
        audit, now = self.audit, self.host.clock.now_ms()
        record_id = secrets.token_bytes(16)
        parties = {
            Slot.SENDER_USER: user,
            Slot.SENDER_INSTITUTION: audit.institution,
            Slot.PATIENT: share.patient,
        }
        terms = share.terms
        record = audit.author(
            RecordType.PATIENT_SHARE,
            {
                "share_id": bytes.fromhex(share.share_id),
                "action": action,
                "transfer_ids": [bytes.fromhex(t) for t in share.transfer_ids],
                "mode": terms.mode,
                "download": terms.download,
                "effective_ms": effective_ms,
            },
            fills=audit.fills(record_id, now, parties),
            details={
                "user": user,
                "patient": share.patient,
                "studies": list(share.studies),
                "share": share.share_id,
                "action": action,
                "valid_from_ms": terms.valid_from_ms,
                "valid_until_ms": terms.valid_until_ms,
                "max_opens": terms.max_opens,
                "purpose": PURPOSE,
            },
            record_id=record_id,
            time_ms=now,
        )
        await audit.submit(record)
        return record.record_id.hex()

    async def _access_record(self, share: Share, transfer_id: str, action: str) -> str:
        """Sign and submit a ``STUDY_ACCESSED`` record of the patient's ``action``; its id."""
        audit, now = self.audit, self.host.clock.now_ms()
        record_id = secrets.token_bytes(16)
        parties = {Slot.SENDER_INSTITUTION: audit.institution, Slot.PATIENT: share.patient}
        record = audit.author(
            RecordType.STUDY_ACCESSED,
            {"transfer_id": bytes.fromhex(transfer_id), "action": action, "purpose": PURPOSE},
            fills=audit.fills(record_id, now, parties),
            details={"patient": share.patient, "share": share.share_id, "action": action, "purpose": PURPOSE},
            record_id=record_id,
            time_ms=now,
        )
        await audit.submit(record)
        return record.record_id.hex()
