"""Evidence records: built by the detector, deduplicated by id, and checked so nobody can be framed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mftp.consensus.errors import ConsensusInputError, ConsensusUsageError
from mftp.consensus.evidence import (
    EvidencePool,
    check_evidence_record,
    evidence_key,
    evidence_record_id,
    make_evidence_record,
)
from mftp.ledger.block import NIL, VoteType, sign_vote
from mftp.ledger.chain import ChainState
from mftp.ledger.records import RecordType, make_record

from .helpers import CHAIN_ID, genesis_for, identity

IDS = [identity(f"v{i}") for i in range(4)]
STATE = ChainState.initial(genesis_for(IDS))
SETS = (STATE.validators,)


def _pair(offender: int = 2, round_: int = 3):  # type: ignore[no-untyped-def]
    a = sign_vote(IDS[offender], CHAIN_ID, VoteType.PREVOTE, 5, round_, NIL)
    b = sign_vote(IDS[offender], CHAIN_ID, VoteType.PREVOTE, 5, round_, bytes(32))
    return a, b


def test_two_detectors_write_records_with_one_id() -> None:
    a, b = _pair()
    first = make_evidence_record(IDS[0], a, b, time_ms=1)
    second = make_evidence_record(IDS[1], b, a, time_ms=2)
    assert first.type is RecordType.EVIDENCE and first.record_id == second.record_id
    assert first.record_id == evidence_record_id(evidence_key(a))
    assert first.body["vote_a"] == second.body["vote_a"]  # canonical order of the two votes
    check_evidence_record(first, CHAIN_ID, SETS)
    first.verify_signature()


def test_framing_attempts_are_refused() -> None:
    a, b = _pair()
    honest_vote = sign_vote(IDS[3], CHAIN_ID, VoteType.PREVOTE, 5, 3, NIL)
    with pytest.raises(ConsensusUsageError):
        make_evidence_record(IDS[0], a, a, time_ms=1)  # not a conflict
    forged = replace(b, validator=IDS[3].public.sign_key)  # claims IDS[3] signed it
    body = {
        "kind": "equivocation",
        "offender": IDS[3].public.sign_key,
        "vote_a": honest_vote.to_bytes(),
        "vote_b": forged.to_bytes(),
    }
    framed = make_record(
        IDS[0],
        RecordType.EVIDENCE,
        body,
        record_id=evidence_record_id(evidence_key(honest_vote)),
        time_ms=1,
        tags=tuple(bytes(16) for _ in range(8)),
    )
    with pytest.raises(ConsensusInputError):
        check_evidence_record(framed, CHAIN_ID, SETS)
    good = make_evidence_record(IDS[0], a, b, time_ms=1)
    wrong_id = make_record(
        IDS[0], RecordType.EVIDENCE, good.body, record_id=bytes(16), time_ms=1, tags=good.tags
    )
    with pytest.raises(ConsensusInputError):
        check_evidence_record(wrong_id, CHAIN_ID, SETS)
    stranger = identity("stranger")
    sa = sign_vote(stranger, CHAIN_ID, VoteType.PREVOTE, 5, 3, NIL)
    sb = sign_vote(stranger, CHAIN_ID, VoteType.PREVOTE, 5, 3, bytes(32))
    with pytest.raises(ConsensusInputError):
        check_evidence_record(make_evidence_record(IDS[0], sa, sb, time_ms=1), CHAIN_ID, SETS)
    with pytest.raises(ConsensusInputError):
        check_evidence_record(make_evidence_record(IDS[0], a, b, time_ms=1), "other-chain", SETS)


def test_the_pool_dedupes_and_is_bounded() -> None:
    pool = EvidencePool(max_items=3)
    a, b = _pair()
    assert pool.add(a, b) and not pool.add(b, a)
    for round_ in range(4, 8):
        pool.add(*_pair(round_=round_))
    assert len(pool) == 3 and pool.dropped == 2
    assert pool.offenders() == {IDS[2].public.sign_key}
