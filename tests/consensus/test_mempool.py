"""The mempool: bounded, refuses duplicates, bad signatures, replays, strangers and oversized records."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mftp.consensus.errors import ConsensusInputError, ConsensusUsageError
from mftp.consensus.mempool import Admission, Mempool
from mftp.ledger.chain import ChainState

from .helpers import genesis_for, identity, record


@pytest.fixture
def setting() -> tuple[ChainState, list, random.Random]:
    ids = [identity(f"v{i}") for i in range(4)]
    return ChainState.initial(genesis_for(ids, auditors=[identity("audit")])), ids, random.Random(2)


def _pool(**bounds: int) -> Mempool:
    return Mempool(**{"max_records": 100, "max_bytes": 1 << 20, "max_record_bytes": 16384, **bounds})


def test_admission_refuses_what_cannot_go_on_the_chain(setting) -> None:  # type: ignore[no-untyped-def]
    state, ids, rng = setting
    pool = _pool()
    on_chain = record(ids[0], rng)
    exists = {on_chain.record_id}.__contains__
    good = record(ids[1], rng)
    audit_author = record(identity("audit"), rng)
    assert pool.add(good, state=state, record_exists=exists) is Admission.ADDED
    assert pool.add(good, state=state, record_exists=exists) is Admission.DUPLICATE
    assert pool.add(on_chain, state=state, record_exists=exists) is Admission.REPLAY
    assert (
        pool.add(record(identity("stranger"), rng), state=state, record_exists=exists) is Admission.NOT_MEMBER
    )
    forged = replace(record(ids[2], rng), signature=bytes(64), encoded=b"")
    assert pool.add(forged, state=state, record_exists=exists) is Admission.BAD_SIGNATURE
    assert pool.add(audit_author, state=state, record_exists=exists) is Admission.ADDED

    def refuse(_record: object) -> None:
        raise ConsensusInputError("no")

    other = record(ids[3], rng)
    assert pool.add(other, state=state, record_exists=exists, extra_check=refuse) is Admission.INVALID
    assert len(pool) == 2


def test_bounds_by_count_bytes_and_record_size(setting) -> None:  # type: ignore[no-untyped-def]
    state, ids, rng = setting
    never = lambda _id: False  # noqa: E731
    sample = record(ids[0], rng)
    size = len(sample.to_bytes())
    by_count = _pool(max_records=2)
    by_bytes = _pool(max_bytes=2 * size + size // 2)
    tiny = _pool(max_record_bytes=size - 1)
    assert tiny.add(sample, state=state, record_exists=never) is Admission.OVERSIZED
    outcomes = [by_count.add(record(ids[0], rng), state=state, record_exists=never) for _ in range(3)]
    assert outcomes == [Admission.ADDED, Admission.ADDED, Admission.FULL]
    outcomes = [by_bytes.add(record(ids[0], rng), state=state, record_exists=never) for _ in range(3)]
    assert outcomes == [Admission.ADDED, Admission.ADDED, Admission.FULL]
    assert by_bytes.size_bytes <= by_bytes.max_bytes
    with pytest.raises(ConsensusUsageError):
        Mempool(max_records=0, max_bytes=1, max_record_bytes=1)


def test_fifo_batches_and_removal_of_committed_records(setting) -> None:  # type: ignore[no-untyped-def]
    state, ids, rng = setting
    pool = _pool()
    records = [record(ids[i % 4], rng) for i in range(10)]
    for r in records:
        pool.add(r, state=state, record_exists=lambda _id: False)
    assert pool.batch(4) == records[:4]
    assert pool.batch(4) == records[:4]  # batches do not remove
    assert pool.remove([r.record_id for r in records[:4]]) == 4
    assert pool.batch(100) == records[4:]
    assert pool.holds(records[5]) and not pool.holds(records[0])
    altered = replace(records[5], time_ms=records[5].time_ms + 1, encoded=b"")
    assert not pool.holds(altered)  # same id, other bytes: its signature was never checked
    assert pool.size_bytes == sum(len(r.to_bytes()) for r in records[4:])
