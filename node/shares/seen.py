""" "Who has seen my images": every ledger record about the shared studies, each proven.

The records about a study received here are the ones whose public body names its transfer id:
the sender's ``TRANSFER_OFFERED``, our ``TRANSFER_RECEIVED``, every ``STUDY_ACCESSED`` (views,
exports, deliveries, the patient's own openings and downloads) and the ``PATIENT_SHARE``
records.  :class:`SeenIndex` finds them through the store's index by record type, reading only
the blocks committed since it last looked, and keeps only the ids of watched transfers.

Each entry is shown with its institution (the record's author, a consortium member, by its
public name), the role it acted in (said by the record's type and action: a clinician's view,
the patient's own opening...), its purpose (an HL7 PurposeOfUse code) and date, and nothing
else: no tag, no commitment, no other patient's anything.  Every entry carries the result of
:func:`~mftp.ledger.proofs.verify_record_in_ledger`: the record's inclusion proof against the
head block's certified ledger root, checked against the validators that signed it, and the
record's own signature.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mftp.ledger.errors import LedgerError
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_record, verify_record_in_ledger
from mftp.ledger.records import Record, RecordType
from mftp.ledger.store import MAX_TYPE_QUERY

WATCHED_TYPES: Final = (
    RecordType.TRANSFER_OFFERED,
    RecordType.TRANSFER_RECEIVED,
    RecordType.STUDY_ACCESSED,
    RecordType.PATIENT_SHARE,
)
MAX_ENTRIES: Final = 500  # a page lists at most this many (the newest)

PURPOSE_WORDS: Final = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "BTG": "emergency access (break the glass)",
    "HPAYMT": "payment",
    "HOPERAT": "healthcare operations",
    "HRESCH": "research",
    "PUBHLTH": "public health",
    "PATRQT": "your own request",
    "HCOMPL": "compliance",
    "HLEGAL": "legal",
    "HQUALIMP": "quality improvement",
}


class Ledgered(Protocol):
    """What the index reads: the node's ledger."""

    ledger: Ledger


@dataclass(frozen=True)
class SeenEntry:
    """One access to a shared study, as the patient sees it."""

    record_id: str
    time_ms: int
    institution: str
    role: str
    action: str
    purpose: str
    verified: bool
    problem: str = ""  # why the proof did not verify (shown; never patient data)

    @property
    def date(self) -> str:
        """The record's date and time, UTC, to the minute."""
        moment = datetime.datetime.fromtimestamp(self.time_ms / 1000, tz=datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def purpose_words(self) -> str:
        """The purpose in plain words."""
        return PURPOSE_WORDS.get(self.purpose, self.purpose or "-")

    def view(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "record": self.record_id,
            "time_ms": self.time_ms,
            "date": self.date,
            "institution": self.institution,
            "role": self.role,
            "action": self.action,
            "purpose": self.purpose,
            "verified": self.verified,
            "problem": self.problem,
        }


def describe(record: Record) -> tuple[str, str, str]:
    """``(role, action, purpose)`` of a record about a study, in the patient's words."""
    body = record.body
    if record.type is RecordType.TRANSFER_OFFERED:
        return "sending hospital", "sent the study to another hospital", body["purpose"]
    if record.type is RecordType.TRANSFER_RECEIVED:
        return "receiving hospital", "received the study", ""
    if record.type is RecordType.PATIENT_SHARE:
        action = "shared it with you" if body["action"] == "create" else "ended your link"
        return "clinician", action, "PATRQT"
    action = body["action"]
    words = {
        "view": ("clinician", "viewed the images"),
        "export": ("clinician", "exported the images to a hospital system"),
        "deliver": ("hospital system", "delivered the images to a hospital system"),
        "share-view": ("patient (your link)", "opened your link"),
        "share-download": ("patient (your link)", "downloaded the files"),
    }
    role, what = words.get(action, ("hospital", action))
    return role, what, body["purpose"]


class SeenIndex:
    """Record ids about watched transfers, caught up with the chain on every read (thread-safe)."""

    def __init__(self, node: Ledgered) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._watched: dict[bytes, list[bytes]] = {}
        self._height = 0  # blocks up to here are indexed for every watched transfer

    def watch(self, transfer_ids: Iterable[str]) -> None:
        """Index these transfers too (from the first block: a new one is looked up in full)."""
        with self._lock:
            new = [bytes.fromhex(t) for t in transfer_ids if bytes.fromhex(t) not in self._watched]
            if not new:
                return
            found = self._scan(set(new), 1, self._height + 1)
            for transfer in new:
                self._watched[transfer] = found.get(transfer, [])

    def records_about(self, transfer_ids: Iterable[str]) -> list[bytes]:
        """Ids of every record naming one of ``transfer_ids``, oldest first (blocking)."""
        wanted = [bytes.fromhex(t) for t in transfer_ids]
        self.watch(t.hex() for t in wanted)
        with self._lock:
            head = self._node.ledger.store.head_height
            if head > self._height:
                found = self._scan(set(self._watched), self._height + 1, head + 1)
                for transfer, ids in found.items():
                    self._watched[transfer].extend(ids)
                self._height = head
            ids = [rid for t in wanted for rid in self._watched.get(t, [])]
        return list(dict.fromkeys(ids))  # one record may name two shared studies

    def _scan(self, transfers: set[bytes], start: int, end: int) -> dict[bytes, list[bytes]]:
        store = self._node.ledger.store
        found: dict[bytes, list[tuple[int, bytes]]] = {}
        if start >= end:
            return {}
        for record_type in WATCHED_TYPES:
            from_height = start
            while True:
                ids = store.record_ids_by_type(record_type, from_height, end)
                for record_id in ids:
                    stored = store.record(record_id)
                    if stored is None:
                        continue
                    for transfer in _transfers_of(stored.record) & transfers:
                        found.setdefault(transfer, []).append((stored.ledger_index, record_id))
                if len(ids) < MAX_TYPE_QUERY:
                    break
                last = store.record(ids[-1])
                # A full page spans many blocks (a block holds at most a tenth of a page): go on
                # from its last block, whose records found twice are counted once below.
                from_height = last.height if last is not None else end
        return {t: [rid for _, rid in sorted(set(pairs))] for t, pairs in found.items()}


def _transfers_of(record: Record) -> set[bytes]:
    body = record.body
    if record.type is RecordType.PATIENT_SHARE:
        return set(body["transfer_ids"])
    return {body["transfer_id"]}


def seen(
    node: Ledgered, index: SeenIndex, transfer_ids: Iterable[str], name_of: Callable[[bytes], str]
) -> list[SeenEntry]:
    """The entries about ``transfer_ids``, newest first, each with its proof checked (blocking).

    ``name_of`` gives a member's public name from its sign key (the node's ``member_name``).
    """
    ledger = node.ledger
    store = ledger.store
    head = store.head_height
    if head == 0:
        return []
    header, cert = store.header(head), store.certificate(head)
    # The set that signed the head block's certificate (the state's validators vote on head + 1).
    signers = ledger.state.last_validators or ledger.state.validators
    entries = []
    for record_id in index.records_about(transfer_ids)[-MAX_ENTRIES:]:
        try:
            stored, proof = prove_record(store, record_id, head)
        except LedgerError:
            continue  # beyond the head we read: it shows next time
        record = stored.record
        role, action, purpose = describe(record)
        problem = ""
        try:
            verify_record_in_ledger(record.to_bytes(), proof, header, cert, signers)
        except LedgerError as exc:
            problem = str(exc)[:200]
        entries.append(
            SeenEntry(
                record_id.hex(),
                record.time_ms,
                name_of(record.author),
                role,
                action,
                purpose,
                verified=not problem,
                problem=problem,
            )
        )
    # Newest first; records of one millisecond keep the ledger's order, newest first too.
    return sorted(entries[::-1], key=lambda e: e.time_ms, reverse=True)
