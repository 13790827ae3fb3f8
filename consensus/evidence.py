"""Equivocation evidence: two signed votes from one validator for one (height, round, type).

Detection happens in the core as votes arrive.  Each new piece of evidence is
kept (bounded, oldest dropped first) and turned into a ledger
``RecordType.EVIDENCE`` record authored and signed by the detecting node, so it
lands on the chain through the ordinary mempool.

The record id is derived from (offender, height, round, type) alone, so when
several validators detect the same equivocation their records share one id and
the chain's replay protection keeps exactly one of them: dedupe for free.
Tags carry no party (there is none): they are derived decoys.

Validators check an evidence record's *contents* (both votes really conflict
and verify) before prevoting for a block holding it, so a member cannot frame
an honest validator; :func:`check_evidence_record` is that check.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import ValidatorSet, Vote
from mftp.ledger.errors import LedgerInputError
from mftp.ledger.records import RECORD_ID_BYTES, TAG_BYTES, TAG_SLOTS, Record, RecordType, make_record

from .errors import ConsensusInputError, ConsensusUsageError
from .messages import decode_vote

EVIDENCE_KIND: Final = "equivocation"

EvidenceKey = tuple[bytes, int, int, int]  # offender, height, round, vote type


def evidence_key(vote: Vote) -> EvidenceKey:
    """What two conflicting votes have in common."""
    return (vote.validator, vote.height, vote.round, int(vote.type))


def conflicting(vote_a: Vote, vote_b: Vote) -> bool:
    """Same signer, height, round and type, different block."""
    return evidence_key(vote_a) == evidence_key(vote_b) and vote_a.block_hash != vote_b.block_hash


def evidence_record_id(key: EvidenceKey) -> bytes:
    """The record id every detector uses for this equivocation (so the chain keeps one)."""
    offender, height, round_, vote_type = key
    material = canonical.encode(["mftp-evidence-v1", offender, height, round_, vote_type])
    return hashlib.sha256(material).digest()[:RECORD_ID_BYTES]


def _decoy_tags(record_id: bytes) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(record_id + bytes([i])).digest()[:TAG_BYTES] for i in range(TAG_SLOTS))


def make_evidence_record(identity: SigningIdentity, vote_a: Vote, vote_b: Vote, *, time_ms: int) -> Record:
    """The EVIDENCE record for two conflicting votes, signed by the detecting node."""
    if not conflicting(vote_a, vote_b):
        raise ConsensusUsageError("evidence needs two different votes for one height, round and type")
    first, second = sorted((vote_a.to_bytes(), vote_b.to_bytes()))  # canonical order
    record_id = evidence_record_id(evidence_key(vote_a))
    body = {"kind": EVIDENCE_KIND, "offender": vote_a.validator, "vote_a": first, "vote_b": second}
    return make_record(
        identity,
        RecordType.EVIDENCE,
        body,
        record_id=record_id,
        time_ms=time_ms,
        tags=_decoy_tags(record_id),
    )


def check_evidence_record(record: Record, chain_id: str, validator_sets: tuple[ValidatorSet, ...]) -> None:
    """Raise :class:`ConsensusInputError` unless an EVIDENCE record proves an equivocation.

    The offender must be in one of ``validator_sets`` (the sets of the current
    and previous height): evidence against a stranger proves nothing we care about.
    """
    if record.type is not RecordType.EVIDENCE:
        return
    body = record.body
    try:
        vote_a = decode_vote(canonical.decode(body["vote_a"], max_bytes=1024, max_depth=2))
        vote_b = decode_vote(canonical.decode(body["vote_b"], max_bytes=1024, max_depth=2))
    except DecodeError as exc:
        raise ConsensusInputError(f"evidence {record.record_id.hex()}: {exc}") from None
    if not conflicting(vote_a, vote_b) or vote_a.validator != body["offender"]:
        raise ConsensusInputError(f"evidence {record.record_id.hex()}: votes do not conflict")
    if record.record_id != evidence_record_id(evidence_key(vote_a)):
        raise ConsensusInputError(f"evidence {record.record_id.hex()}: id does not match its votes")
    if not any(vote_a.validator in vs for vs in validator_sets):
        raise ConsensusInputError(f"evidence {record.record_id.hex()}: offender is not a validator")
    try:
        vote_a.verify(chain_id)
        vote_b.verify(chain_id)
    except LedgerInputError as exc:
        raise ConsensusInputError(f"evidence {record.record_id.hex()}: {exc}") from None


class EvidencePool:
    """Detected equivocations, one per (offender, height, round, type), bounded."""

    def __init__(self, max_items: int = 256) -> None:
        if max_items < 1:
            raise ConsensusUsageError("the evidence pool must hold at least one item")
        self.max_items = max_items
        self._items: OrderedDict[EvidenceKey, tuple[Vote, Vote]] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, vote_a: Vote, vote_b: Vote) -> bool:
        """Keep new evidence; False if this equivocation is already known."""
        if not conflicting(vote_a, vote_b):
            raise ConsensusUsageError("not an equivocation")
        key = evidence_key(vote_a)
        if key in self._items:
            return False
        self._items[key] = (vote_a, vote_b)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
            self.dropped += 1
        return True

    def items(self) -> list[tuple[Vote, Vote]]:
        """Every kept pair, oldest first."""
        return list(self._items.values())

    def offenders(self) -> set[bytes]:
        """Keys with evidence against them."""
        return {key[0] for key in self._items}
