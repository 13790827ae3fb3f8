"""Compact proposals: rebuilt byte for byte from the mempool, or fetched whole when a record is missing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import ProposalReceived
from mftp.consensus.messages import ProposalMessage, sign_proposal
from mftp.crypto import canonical
from mftp.ledger.records import Record
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.node.chain.compact_proposals import (
    ANSWER_INTERVAL_MS,
    KEPT_PROPOSALS,
    OwnProposals,
    compact_value,
    rebuild,
)

SIGNERS = identities(4)
GENESIS = sample_genesis(SIGNERS)


def _message(records: int = 5, seed: int = 1, height: int = 2) -> ProposalMessage:
    """A signed proposal of block ``height`` (a chain is built up to it)."""
    rng = random.Random(seed)
    builder = ChainBuilder(GENESIS, SIGNERS)
    for _ in range(height):
        block, _cert = builder.next_block([sample_record(SIGNERS[0], rng) for _ in range(records)])
    proposal = sign_proposal(SIGNERS[1], GENESIS.chain_id, block.height, 0, -1, block.hash)
    return ProposalMessage(proposal, block)


def _pool(records: tuple[Record, ...]) -> dict[bytes, Record]:
    return {r.record_id: r for r in records}


def test_a_compact_proposal_is_rebuilt_byte_for_byte() -> None:
    message = _message(records=50)
    value = compact_value(message)
    wire = canonical.decode(canonical.encode(value))  # what the peer gets
    rebuilt = rebuild(wire, _pool(message.block.records).get)
    assert isinstance(rebuilt, ProposalReceived)
    assert rebuilt.proposal == message.proposal and rebuilt.block.to_bytes() == message.block.to_bytes()
    assert len(canonical.encode(value)) < len(message.block.to_bytes()) / 5  # ids, not records


def test_missing_records_are_named_for_a_fetch() -> None:
    message = _message()
    pool = _pool(message.block.records)
    gone = message.block.records[2].record_id
    del pool[gone]
    assert rebuild(compact_value(message), pool.get) == [gone]


def test_a_wrong_record_makes_the_block_invalid_not_different() -> None:
    message = _message()
    other = sample_record(SIGNERS[0], random.Random(99))
    pool = _pool(message.block.records)
    pool[message.block.records[0].record_id] = other  # a pooled record with the id but other bytes
    with pytest.raises(ConsensusInputError, match="records root"):
        rebuild(compact_value(message), pool.get)


@pytest.mark.parametrize(
    "change",
    [
        lambda v: v.pop("ids"),
        lambda v: v.update(ids=b"x"),
        lambda v: v.update(ids=[b"short"]),
        lambda v: v.update(ids=[bytes(16)] * 10_001),
        lambda v: v.update(h={"height": 1}),
        lambda v: v.update(p=[]),
        lambda v: v.update(c="nope"),
    ],
)
def test_malformed_values_are_input_errors(change: Any) -> None:
    message = _message()
    value = compact_value(message)
    change(value)
    with pytest.raises(ConsensusInputError):
        rebuild(value, _pool(message.block.records).get)


def test_own_proposals_answer_each_peer_at_most_once_a_second() -> None:
    own = OwnProposals()
    message = _message()
    own.keep(message)
    ask = {"h": message.proposal.height, "r": 0}
    peer, other = b"p" * 32, b"q" * 32
    assert own.answer(peer, ask, 0) is message
    assert own.answer(peer, ask, ANSWER_INTERVAL_MS - 1) is None  # asked again too soon
    assert own.answer(other, ask, 1) is message
    assert own.answer(peer, ask, ANSWER_INTERVAL_MS) is message
    assert own.answer(peer, {"h": 99, "r": 0}, 0) is None  # not ours, or forgotten
    with pytest.raises(ConsensusInputError):
        own.answer(peer, {"h": "2", "r": 0}, 0)
    newer = _message(records=1)
    for height in range(3, 3 + KEPT_PROPOSALS):
        own.keep(
            ProposalMessage(
                sign_proposal(SIGNERS[1], GENESIS.chain_id, height, 0, -1, newer.block.hash), newer.block
            )
        )
    assert own.answer(other, ask, 10**6) is None  # only the last few are kept
