"""Audit grants, audit scans and audit reports: the auditor is audited too.

1. The subject's home institution publishes an ``AUDIT_GRANT`` record
   (:func:`make_grant_body`, signed as the record's author): the auditor's key,
   the legal basis and purpose, a commitment to the subject
   ``SHA-256(salt || subject id)`` that reveals it to no one else, the epoch
   range, the expiry and the date before which the subject is not notified,
   and the subject's epoch keys for the range sealed to the auditor.
2. The auditor opens it (:func:`open_grant`) and :func:`scan` s the verified
   chain up to a certified ledger size: every record whose tag slots hold the
   subject's tags is listed with its inclusion proof and, where the institution
   disclosed them, its details checked against their commitments.  Completeness
   is stated relative to the certified size and root: every one of those
   records was examined.
3. The auditor publishes an ``AUDIT_REPORT`` record (:func:`make_report_body`):
   the ledger size and root it scanned, the Merkle root of the sorted matched
   record ids and their count.  Anyone shown the matched ids can check the root.

Grants and reports are records like any other, so every audit leaves a trace
on the ledger.  Grant and report records carry only decoy tags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError, DecryptionError
from mftp.crypto.primitives import constant_time_equal, random_bytes, tag
from mftp.crypto.sealing import seal, unseal
from mftp.crypto.signing import PublicIdentity, SigningIdentity

from . import merkle
from .audit_index import TagIndex, match_index
from .errors import LedgerInputError, LedgerUsageError, StoreError
from .proofs import InclusionProof, prove_record
from .pseudonyms import (
    KIND_ROLES,
    KINDS,
    MAX_PARTY_ID_CHARS,
    SALT_BYTES,
    Disclosure,
    PartyKeys,
    Role,
    check_disclosure,
    epoch_of,
)
from .records import PURPOSES, Record, RecordType
from .store import BlockStore

MAX_GRANT_EPOCHS: Final = 120  # ten years of monthly keys fit the 8 KiB sealed_keys field
GRANT_PAYLOAD_VERSION: Final = 1


class AuditUsageError(LedgerUsageError):
    """Our misuse of the audit API (a grant for someone else, an expired grant, a bad range)."""


class GrantError(LedgerInputError):
    """A grant record from the ledger does not open or contradicts its own body."""


# --- grants -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantKeys:
    """What an auditor learns from opening a grant: whom to look for, and the keys to do it."""

    grant_id: bytes
    institution: bytes  # the grant's author: the subject's home institution
    kind: str
    subject: str
    epoch_keys: Mapping[int, bytes]
    epoch_from: int
    epoch_to: int
    expires_ms: int
    notify_after_ms: int
    purpose: str
    legal_basis: str

    def __repr__(self) -> str:  # never print the subject or the keys
        return f"GrantKeys(grant={self.grant_id.hex()}, epochs={self.epoch_from}..{self.epoch_to})"

    def check_usable(self, now_ms: int) -> None:
        """Raise :class:`AuditUsageError` if the grant has expired at ``now_ms``."""
        if now_ms >= self.expires_ms:
            raise AuditUsageError(f"grant {self.grant_id.hex()} expired")


def subject_commitment(salt: bytes, subject: str) -> bytes:
    """``SHA-256(salt || subject id)``; the 32-byte random salt travels only inside the sealed keys."""
    return hashlib.sha256(salt + subject.encode("utf-8")).digest()


def make_grant_body(
    subject: PartyKeys,
    auditor: PublicIdentity,
    *,
    legal_basis: str,
    purpose: str,
    epoch_from: int,
    epoch_to: int,
    expires_ms: int,
    notify_after_ms: int,
) -> dict[str, Any]:
    """The ``AUDIT_GRANT`` body handing ``auditor`` the subject's keys for ``[epoch_from, epoch_to]``.

    The home institution signs it by authoring the record (``make_record``).
    Epochs before the party's first key are simply not granted (it had no tags).
    """
    if purpose not in PURPOSES:
        raise AuditUsageError(f"purpose is one of {sorted(PURPOSES)}")
    if not 0 <= epoch_from <= epoch_to or epoch_to - epoch_from >= MAX_GRANT_EPOCHS:
        raise AuditUsageError(f"a grant covers 1 to {MAX_GRANT_EPOCHS} epochs, in order")
    first_key_epoch = subject.masters[0][0]
    keys = [
        [epoch, subject.epoch_key(epoch)] for epoch in range(max(epoch_from, first_key_epoch), epoch_to + 1)
    ]
    salt = random_bytes(SALT_BYTES)
    payload = {
        "v": GRANT_PAYLOAD_VERSION,
        "kind": subject.kind,
        "subject": subject.party_id,
        "salt": salt,
        "epoch_from": epoch_from,
        "epoch_to": epoch_to,
        "keys": keys,
    }
    return {
        "auditor": auditor.sign_key,
        "legal_basis": legal_basis,
        "purpose": purpose,
        "subject_commitment": subject_commitment(salt, subject.party_id),
        "epoch_from": epoch_from,
        "epoch_to": epoch_to,
        "expires_ms": expires_ms,
        "notify_after_ms": notify_after_ms,
        "sealed_keys": seal(auditor.box_key, canonical.encode(payload)),
    }


def open_grant(record: Record, auditor: SigningIdentity) -> GrantKeys:
    """The subject and keys of a grant record addressed to ``auditor``.

    Asking to open a grant that names another auditor is our misuse
    (:class:`AuditUsageError`); a grant that does not open or whose sealed
    payload contradicts its body is a :class:`GrantError`.
    """
    if record.type is not RecordType.AUDIT_GRANT:
        raise AuditUsageError(f"record {record.record_id.hex()} is not an audit grant")
    body = record.body
    if not constant_time_equal(body["auditor"], auditor.public.sign_key):
        raise AuditUsageError(f"grant {record.record_id.hex()} is addressed to another auditor")
    try:
        record.verify_signature()
        payload = canonical.decode(unseal(auditor, body["sealed_keys"]), max_depth=4)
    except (LedgerInputError, DecryptionError, DecodeError) as exc:
        raise GrantError(f"grant {record.record_id.hex()} does not open: {exc}") from None
    keys = _check_payload(record, payload)
    return GrantKeys(
        grant_id=record.record_id,
        institution=record.author,
        kind=payload["kind"],
        subject=payload["subject"],
        epoch_keys=keys,
        epoch_from=body["epoch_from"],
        epoch_to=body["epoch_to"],
        expires_ms=body["expires_ms"],
        notify_after_ms=body["notify_after_ms"],
        purpose=body["purpose"],
        legal_basis=body["legal_basis"],
    )


def _check_payload(record: Record, payload: Any) -> dict[int, bytes]:
    """The epoch keys of a sealed grant payload, after checking it against the grant's body."""
    body = record.body
    where = f"grant {record.record_id.hex()}"
    if not isinstance(payload, dict) or set(payload) != {
        "v",
        "kind",
        "subject",
        "salt",
        "epoch_from",
        "epoch_to",
        "keys",
    }:
        raise GrantError(f"{where}: sealed payload has the wrong fields")
    subject, salt = payload["subject"], payload["salt"]
    if (
        payload["v"] != GRANT_PAYLOAD_VERSION
        or payload["kind"] not in KINDS
        or not isinstance(subject, str)
        or len(subject) > MAX_PARTY_ID_CHARS
        or not isinstance(salt, bytes)
        or len(salt) != SALT_BYTES
    ):
        raise GrantError(f"{where}: sealed payload is malformed")
    if not constant_time_equal(subject_commitment(salt, subject), body["subject_commitment"]):
        raise GrantError(f"{where}: sealed subject does not match the subject commitment")
    if (payload["epoch_from"], payload["epoch_to"]) != (body["epoch_from"], body["epoch_to"]):
        raise GrantError(f"{where}: sealed epoch range differs from the body's")
    keys: dict[int, bytes] = {}
    for item in payload["keys"] if isinstance(payload["keys"], list) else [None]:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or not body["epoch_from"] <= item[0] <= body["epoch_to"]
            or not isinstance(item[1], bytes)
            or len(item[1]) != 32
            or item[0] in keys
        ):
            raise GrantError(f"{where}: sealed epoch keys are malformed or out of range")
        keys[item[0]] = item[1]
    return keys


# --- reports ------------------------------------------------------------------------------------


def matches_root(record_ids: Iterable[bytes]) -> bytes:
    """Merkle root (RFC 6962) over the sorted matched record ids."""
    return merkle.root_of([merkle.leaf_hash(record_id) for record_id in sorted(record_ids)])


def make_report_body(
    grant_id: bytes, ledger_size: int, ledger_root: bytes, matched_ids: Iterable[bytes]
) -> dict[str, Any]:
    """The ``AUDIT_REPORT`` body: what was scanned (size, root) and what matched (root, count)."""
    ids = sorted(set(matched_ids))
    return {
        "grant_id": grant_id,
        "ledger_size": ledger_size,
        "ledger_root": ledger_root,
        "matches_root": matches_root(ids),
        "match_count": len(ids),
    }


# --- the scan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """One record of the subject: where it is, the roles it had, the proof and disclosed details."""

    ledger_index: int
    record: Record
    roles: tuple[Role, ...]
    proof: InclusionProof
    disclosed: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Every match in a ledger of ``ledger_size`` records with root ``ledger_root``.

    ``height`` is the block whose certified header states that size and root;
    ``statement`` says so in words, for the report.
    """

    grant_id: bytes
    matches: tuple[Match, ...]
    ledger_size: int
    ledger_root: bytes
    height: int
    statement: str

    @property
    def matched_ids(self) -> list[bytes]:
        """The matched record ids in ledger order."""
        return [match.record.record_id for match in self.matches]

    def report_body(self) -> dict[str, Any]:
        """The ``AUDIT_REPORT`` body of this scan."""
        return make_report_body(self.grant_id, self.ledger_size, self.ledger_root, self.matched_ids)


def height_of_size(store: BlockStore, size: int) -> int:
    """The lowest block whose header states ledger size ``size`` (binary search over headers)."""
    lo, hi = 1, store.head_height
    if size == 0 or hi == 0 or not 0 < size <= store.leaf_count:
        raise AuditUsageError(f"ledger size {size} is not that of a stored block")
    while lo < hi:
        middle = (lo + hi) // 2
        if store.header(middle).ledger_size < size:
            lo = middle + 1
        else:
            hi = middle
    if store.header(lo).ledger_size != size:
        raise AuditUsageError(f"ledger size {size} falls inside a block: only certified sizes can be stated")
    return lo


def scan(
    store: BlockStore,
    keys: GrantKeys,
    *,
    now_ms: int,
    up_to_size: int | None = None,
    index: TagIndex | None = None,
    disclosures: Mapping[bytes, Disclosure] | None = None,
    workers: int = 1,
) -> ScanResult:
    """Every record of the grant's subject in the first ``up_to_size`` records (default: all).

    ``store`` is a :class:`~mftp.ledger.store.BlockStore` of a verified chain
    (the node verifies blocks as they commit).  ``up_to_size`` must be the
    ledger size of a stored block, so completeness is stated against a
    certified header.  ``index`` is the node's :class:`TagIndex` (rebuilt from
    the store if None).  ``disclosures`` maps record ids to details disclosed by
    the institution; each is checked against the record's commitments
    (:class:`~mftp.ledger.pseudonyms.DisclosureError` if one does not match).
    """
    keys.check_usable(now_ms)
    size = store.leaf_count if up_to_size is None else up_to_size
    height = height_of_size(store, size)
    header = store.header(height)
    if index is None:
        index = TagIndex.from_store(store, size)
    elif len(index) < size or index.row(size - 1)[0] != store.record_at(size - 1).record_id:
        # A cheap guard against an index that is short or shifted; single rows are re-checked below.
        raise AuditUsageError(f"the tag index ({len(index)} rows) does not follow the store up to {size}")
    hits = match_index(index, keys.kind, keys.epoch_keys, stop=size, workers=workers)
    matches = tuple(_confirm(store, keys, row, height, disclosures or {}) for row, _ in hits)
    statement = (
        f"All {size} records of the ledger with root {header.ledger_root.hex()}, as certified in "
        f"block {height} ({header.hash.hex()}), were examined with the keys of epochs "
        f"{keys.epoch_from}..{keys.epoch_to}; {len(matches)} carry the subject's tags."
    )
    return ScanResult(keys.grant_id, matches, size, header.ledger_root, height, statement)


def _confirm(
    store: BlockStore,
    keys: GrantKeys,
    ledger_index: int,
    height: int,
    disclosures: Mapping[bytes, Disclosure],
) -> Match:
    """Re-check an index hit on the real record, prove it and check its disclosed details."""
    record = store.record_at(ledger_index)
    epoch_key = keys.epoch_keys.get(epoch_of(record.time_ms))
    roles = tuple(
        role
        for role in KIND_ROLES[keys.kind]
        if epoch_key is not None
        and constant_time_equal(record.tags[role], tag(epoch_key, record.record_id + bytes([role])))
    )
    if not roles:  # the index is ours, derived from the store: a disagreement is corruption
        raise StoreError(f"tag index row {ledger_index} disagrees with the stored record")
    found, proof = prove_record(store, record.record_id, height)
    if found.ledger_index != ledger_index:
        raise StoreError(f"record index disagrees about ledger index {ledger_index}")
    proof.verify(record.leaf_hash, store.header(height).ledger_root)
    disclosure = disclosures.get(record.record_id)
    disclosed = {} if disclosure is None else check_disclosure(record.commitments, disclosure)
    return Match(found.ledger_index, record, roles, proof, disclosed)
