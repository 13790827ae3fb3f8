"""A bounded mempool of records waiting for a block. Pure: no I/O, no clock.

Admission refuses, cheapest check first: oversized records, duplicates (same
id already pooled), replays (id already on the chain, asked through the
``record_exists`` callback the shell wires to its store), authors that are not
members, records failing an extra check the caller supplies (the core checks
evidence contents), bad signatures, and anything beyond the count and byte
bounds.  Batches for proposals are FIFO, so every record is eventually proposed
by a correct proposer; committed records are removed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from enum import Enum

from mftp.ledger.chain import ChainState, RecordExists
from mftp.ledger.errors import InvalidRecordError
from mftp.ledger.records import Record

from .errors import ConsensusInputError, ConsensusUsageError


class Admission(Enum):
    """The outcome of :meth:`Mempool.add`."""

    ADDED = "added"
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    NOT_MEMBER = "not_member"
    BAD_SIGNATURE = "bad_signature"
    INVALID = "invalid"
    OVERSIZED = "oversized"
    FULL = "full"


class Mempool:
    """Pending records, bounded by count and bytes, in arrival order."""

    def __init__(self, *, max_records: int, max_bytes: int, max_record_bytes: int) -> None:
        if max_records < 1 or max_bytes < 1 or max_record_bytes < 1:
            raise ConsensusUsageError("mempool bounds must be positive")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_record_bytes = max_record_bytes
        self._records: OrderedDict[bytes, Record] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    def add(
        self,
        record: Record,
        *,
        state: ChainState,
        record_exists: RecordExists,
        extra_check: Callable[[Record], None] | None = None,
        verified: bool = False,
    ) -> Admission:
        """Admit ``record`` if it could go into the next block; ``verified`` skips the signature check."""
        size = len(record.to_bytes())
        if size > self.max_record_bytes:
            return Admission.OVERSIZED
        if record.record_id in self._records:
            return Admission.DUPLICATE
        if record_exists(record.record_id):
            return Admission.REPLAY
        if not state.is_member(record.author):
            return Admission.NOT_MEMBER
        # Cheap refusals before the signature check: a full pool must not cost an Ed25519
        # verification per retry (submitters retry exactly when the pool is full).
        if len(self._records) >= self.max_records or self.size_bytes + size > self.max_bytes:
            return Admission.FULL
        if extra_check is not None:
            try:
                extra_check(record)
            except ConsensusInputError:
                return Admission.INVALID
        if not verified:
            try:
                record.verify_signature()
            except InvalidRecordError:
                return Admission.BAD_SIGNATURE
        self._records[record.record_id] = record
        self.size_bytes += size
        return Admission.ADDED

    def get(self, record_id: bytes) -> Record | None:
        """The pooled record with this id, if any."""
        return self._records.get(record_id)

    def holds(self, record: Record) -> bool:
        """A byte-identical copy of ``record`` is pooled (so its signature was checked on admission)."""
        pooled = self._records.get(record.record_id)
        return pooled is not None and pooled.to_bytes() == record.to_bytes()

    def batch(self, max_records: int) -> list[Record]:
        """The oldest ``max_records`` records (they stay pooled until committed)."""
        out: list[Record] = []
        for record in self._records.values():
            if len(out) >= max_records:
                break
            out.append(record)
        return out

    def remove(self, record_ids: Iterable[bytes]) -> int:
        """Drop records (committed, or found unfit); returns how many were pooled."""
        removed = 0
        for record_id in record_ids:
            record = self._records.pop(record_id, None)
            if record is not None:
                self.size_bytes -= len(record.to_bytes())
                removed += 1
        return removed

    def records(self) -> list[Record]:
        """Every pooled record, oldest first."""
        return list(self._records.values())
