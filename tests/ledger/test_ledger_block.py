"""Blocks, votes, certificates and validator sets: round trips, checks and proposer weighting."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.block import (
    NIL,
    Block,
    BlockHeader,
    CommitCertificate,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
    sign_vote,
)
from mftp.ledger.errors import InvalidBlockError, LedgerInputError, LedgerUsageError
from mftp.ledger.genesis import Genesis, make_genesis
from mftp.ledger.records import Record
from tests.ledger.ledger_helpers import Chain

CHAIN_ID = "mftp-test"


def test_vote_round_trip_and_signature(validators: list[SigningIdentity]) -> None:
    for block_hash in (NIL, bytes(range(32))):
        vote = sign_vote(validators[0], CHAIN_ID, VoteType.PREVOTE, 7, 2, block_hash)
        again = Vote.from_bytes(vote.to_bytes())
        assert again == vote
        again.verify(CHAIN_ID)
        with pytest.raises(InvalidBlockError):
            again.verify("another-chain")
        with pytest.raises(InvalidBlockError):
            dataclasses.replace(again, round=3).verify(CHAIN_ID)
        with pytest.raises(InvalidBlockError):
            dataclasses.replace(again, type=VoteType.PRECOMMIT).verify(CHAIN_ID)


def test_vote_shape_is_checked() -> None:
    good = {"type": 1, "height": 1, "round": 0, "block": bytes(32), "validator": bytes(32), "sig": bytes(64)}
    for key, bad in [("type", 3), ("height", 0), ("block", bytes(5)), ("sig", bytes(63)), ("round", -1)]:
        with pytest.raises(InvalidBlockError):
            Vote.from_bytes(canonical.encode({**good, key: bad}))


def test_certificate_round_trip_and_verification(chain: Chain, genesis: Genesis) -> None:
    _, cert = chain[0]
    again = CommitCertificate.from_value(canonical.decode(canonical.encode(cert.to_value())))
    assert again == cert and again.hash == cert.hash
    again.verify(CHAIN_ID, genesis.validators)
    assert [key for key, _ in cert.signatures] == sorted(key for key, _ in cert.signatures)


def test_certificate_failures(chain: Chain, genesis: Genesis, validators: list[SigningIdentity]) -> None:
    block, cert = chain[0]
    outsider = sample.identities(1, "outsider")[0]
    sigs = list(cert.signatures)
    cases = {
        "nil block": dataclasses.replace(cert, block_hash=NIL),
        "unsorted": dataclasses.replace(cert, signatures=tuple(reversed(sigs))),
        "repeated": dataclasses.replace(cert, signatures=(sigs[0], *sigs)),
        "bad signature": dataclasses.replace(cert, signatures=((sigs[0][0], bytes(64)), *sigs[1:])),
        "another round": dataclasses.replace(cert, round=1),
        "2 of 4": sample.certify(block, validators[:2], CHAIN_ID),
        "outsider": sample.certify(block, [*validators[:2], outsider], CHAIN_ID),
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidBlockError):
            bad.verify(CHAIN_ID, genesis.validators)
            pytest.fail(name)
    sample.certify(block, validators[:3], CHAIN_ID).verify(CHAIN_ID, genesis.validators)  # 3 of 4 > 2/3


def test_certificate_from_votes_needs_one_block_and_round(validators: list[SigningIdentity]) -> None:
    votes = [sign_vote(v, CHAIN_ID, VoteType.PRECOMMIT, 1, 0, bytes(32)) for v in validators]
    assert len(CommitCertificate.from_votes(votes + votes).signatures) == 4  # duplicates collapse
    for bad in (
        [],
        [*votes, sign_vote(validators[0], CHAIN_ID, VoteType.PRECOMMIT, 1, 1, bytes(32))],
        [*votes, sign_vote(validators[0], CHAIN_ID, VoteType.PREVOTE, 1, 0, bytes(32))],
    ):
        with pytest.raises(LedgerUsageError):
            CommitCertificate.from_votes(bad)


def test_block_round_trip(chain: Chain) -> None:
    for block, _ in chain:
        data = block.to_bytes()
        again = Block.from_bytes(data)
        assert again == block and again.hash == block.hash and again.to_bytes() == data
        assert BlockHeader.from_value(block.header.to_value()) == block.header


def test_block_contents_are_checked(chain: Chain) -> None:
    block, _ = chain[3]
    other = chain[4][0]
    header = block.header
    bad_blocks = [
        Block(
            dataclasses.replace(header, record_count=header.record_count + 1),
            block.records,
            block.last_commit,
        ),
        Block(dataclasses.replace(header, records_root=bytes(32)), block.records, block.last_commit),
        Block(dataclasses.replace(header, last_commit_hash=bytes(32)), block.records, block.last_commit),
        Block(header, block.records[1:], block.last_commit),
        Block(header, block.records, None),
        Block(header, block.records, other.last_commit),
    ]
    for bad in bad_blocks:
        with pytest.raises(InvalidBlockError):
            Block.from_bytes(bad.to_bytes())


def test_a_record_that_is_not_bytes_makes_the_block_invalid(chain: Chain) -> None:
    block = chain[3][0]
    value = canonical.decode(block.to_bytes(), max_depth=8)
    value["records"] = [*value["records"], 7]
    with pytest.raises(InvalidBlockError, match="each record must be bytes"):
        Block.from_bytes(canonical.encode(value))


def test_our_own_bug_while_decoding_a_block_is_not_blamed_on_the_peer(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a peer's bad input becomes an invalid block; a bug of ours must surface as itself."""
    block = chain[3][0]
    assert block.records, "the sample chain's block 3 carries records"

    def broken(data: bytes) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(Record, "decode", staticmethod(broken))
    with pytest.raises(RuntimeError, match="a bug of ours"):
        Block.from_bytes(block.to_bytes())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_input_errors(data: bytes) -> None:
    for decode in (Block.from_bytes, Vote.from_bytes):
        with contextlib.suppress(LedgerInputError):
            decode(data)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_tampered_block_bytes_never_decode_to_the_same_block(chain: Chain, position: int, bit: int) -> None:
    block = chain[3][0]
    data = bytearray(block.to_bytes())
    data[position % len(data)] ^= 1 << bit
    try:
        again = Block.from_bytes(bytes(data))
    except LedgerInputError:
        return
    # Only a record's own bytes may change undetected here (its signature catches it), never the header.
    assert again.hash != block.hash or again.records != block.records


def _keys(count: int) -> list[bytes]:
    return [bytes([i + 1]) * 32 for i in range(count)]


def test_proposers_are_proportional_to_power() -> None:
    powers = [1, 2, 3, 4]
    vset = ValidatorSet(
        Validator(f"v{i}", key, p) for i, (key, p) in enumerate(zip(_keys(4), powers, strict=True))
    )
    period = sum(powers)
    for start in (1, 17):
        counts = Counter(vset.proposer(h, 0).power for h in range(start, start + period))
        assert counts == {p: p for p in powers}
    counts = Counter(vset.proposer(h, 0).power for h in range(1, 1 + 100 * period))
    assert counts == {p: 100 * p for p in powers}
    # Turns are spread out: the heaviest validator never proposes more than twice in a row.
    order = [vset.proposer(h, 0).power for h in range(period * 2)]
    assert max(len(list(g)) for g in _runs(order)) <= 2
    # A new round moves to the next proposer, so a silent proposer cannot stall a height.
    assert vset.proposer(5, 1) == vset.proposer(6, 0)


def _runs(values: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for value in values:
        if runs and runs[-1][0] == value:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def test_validator_set_rules() -> None:
    keys = _keys(3)
    vset = ValidatorSet([Validator("b", keys[1], 2), Validator("a", keys[0], 1)])
    assert [v.name for v in vset.validators] == ["a", "b"] and vset.total_power == 3
    assert keys[0] in vset and keys[2] not in vset and vset.power_of([keys[0], keys[0], keys[2]]) == 1
    assert (
        vset.has_quorum(3) and not vset.has_quorum(2) and vset.has_one_third(2) and not vset.has_one_third(1)
    )
    assert (
        ValidatorSet.from_value(vset.to_value()) == vset and vset.hash == ValidatorSet(vset.validators).hash
    )
    for bad in (
        [],
        [Validator("a", keys[0], 1), Validator("b", keys[0], 1)],
        [Validator("a", keys[0], 0)],
        [Validator("a", keys[0][:31], 1)],
        [Validator(f"v{i}", i.to_bytes(32, "big"), 1) for i in range(65)],
    ):
        with pytest.raises(LedgerUsageError):
            ValidatorSet(bad)


def test_genesis_json_round_trip_and_refusals(genesis: Genesis, tmp_path: object) -> None:
    again = Genesis.from_json(genesis.to_json())
    assert again == genesis and again.hash == genesis.hash
    keys = _keys(2)
    with pytest.raises(LedgerInputError):
        Genesis.from_json("{not json")
    with pytest.raises(LedgerInputError):
        Genesis.from_json(genesis.to_json().replace('"version": 1', '"version": 2'))
    with pytest.raises(LedgerInputError):
        make_genesis("c", "id", 0, [("a", keys[0], 1)], [("b", keys[0])])  # both roles
    with pytest.raises(LedgerUsageError):
        make_genesis("c", "id", 0, [("a", keys[0], 1001)])
