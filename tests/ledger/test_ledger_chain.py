"""The chain state machine: every kind of bad block is refused; membership changes take effect at H+2."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.block import ZERO_HASH, Block, CommitCertificate
from mftp.ledger.chain import MAX_RECORD_SKEW_MS, ChainState, apply_block, build_block, replay
from mftp.ledger.errors import InvalidBlockError
from mftp.ledger.genesis import Genesis
from mftp.ledger.records import Record, RecordType, make_record
from mftp.ledger.store_memory import MemoryStore
from mftp.ledger.verify import verify_chain
from tests.ledger.ledger_helpers import Chain

OUTSIDER = sample.identities(1, "outsider")[0]
NEWCOMER = sample.identities(1, "newcomer")[0]


def never(_: bytes) -> bool:
    return False


def state_before(genesis: Genesis, chain: Chain, height: int) -> ChainState:
    return replay(genesis, [block for block, _ in chain[: height - 1]])


def records_for(signers: list[SigningIdentity], count: int, seed: int, **kwargs: Any) -> list[Record]:
    rng = random.Random(seed)
    return [sample.sample_record(signers[i % len(signers)], rng, **kwargs) for i in range(count)]


def test_replay_of_a_good_chain(genesis: Genesis, chain: Chain) -> None:
    state = replay(genesis, [block for block, _ in chain])
    assert state.height == len(chain) and state.last_hash == chain[-1][0].hash
    assert state.ledger_size == sum(len(block.records) for block, _ in chain)
    assert state.ledger_root == chain[-1][0].header.ledger_root
    state.verify_commit(chain[-1][1])


def _header_change(**changes: Any) -> Callable[[Block, ChainState], Block]:
    def change(block: Block, _: ChainState) -> Block:
        return Block(dataclasses.replace(block.header, **changes), block.records, block.last_commit)

    return change


HEADER_CASES = {
    "wrong chain id": _header_change(chain_id="other-chain"),
    "expected height": _header_change(height=5),
    "does not link": _header_change(prev_hash=bytes(32)),
    "time does not advance": lambda b, s: _header_change(time_ms=s.last_time_ms)(b, s),
    "wrong validator set hash": _header_change(validators_hash=bytes(32)),
    "proposer is not a validator": _header_change(proposer=OUTSIDER.public.sign_key),
    "record count mismatch": lambda b, s: _header_change(record_count=b.header.record_count + 1)(b, s),
    "records root mismatch": _header_change(records_root=bytes(32)),
    "last commit hash mismatch": _header_change(last_commit_hash=bytes(32)),
    "ledger size or root mismatch": _header_change(ledger_root=bytes(32)),
    "last commit present iff": lambda b, s: Block(
        dataclasses.replace(b.header, last_commit_hash=ZERO_HASH), b.records, None
    ),
}


@pytest.mark.parametrize("reason", list(HEADER_CASES))
def test_bad_headers_are_refused(genesis: Genesis, chain: Chain, reason: str) -> None:
    height = 4
    state = state_before(genesis, chain, height)
    block = HEADER_CASES[reason](chain[height - 1][0], state)
    with pytest.raises(InvalidBlockError, match=reason):
        apply_block(state, block, record_exists=never)


def _rebuilt(
    state: ChainState, records: list[Record], last_commit: CommitCertificate | None, time_ms: int = 0
) -> Block:
    proposer = state.validators.proposer(state.height + 1, 0).sign_key
    time_ms = time_ms or state.last_time_ms + 1000
    return build_block(state, records, time_ms=time_ms, proposer=proposer, last_commit=last_commit)


def test_bad_records_and_commits_are_refused(
    genesis: Genesis, chain: Chain, validators: list[SigningIdentity]
) -> None:
    height = 4
    state = state_before(genesis, chain, height)
    good = chain[height - 1][0]
    records = list(good.records)
    last = good.last_commit
    prev_block = chain[height - 2][0]
    forged = dataclasses.replace(records[0], signature=records[1].signature, encoded=b"")
    block_time = state.last_time_ms + 1000
    late = records_for(validators, 1, 9, time_ms=block_time + MAX_RECORD_SKEW_MS + 1)
    cases: list[tuple[str, Block, Callable[[bytes], bool]]] = [
        ("duplicate record id", _rebuilt(state, [*records, records[0]], last), never),
        ("duplicate record id", _rebuilt(state, records, last), lambda rid: rid == records[5].record_id),
        ("author is not a member", _rebuilt(state, records_for([OUTSIDER], 1, 3), last), never),
        ("record time is in the block's future", _rebuilt(state, late, last, time_ms=block_time), never),
        ("invalid record signature", _rebuilt(state, [forged], last), never),
        (
            "no more than 2/3",
            _rebuilt(state, records, sample.certify(prev_block, validators[:2], "mftp-test")),
            never,
        ),
        ("bad precommit signature", _rebuilt(state, records, _bad_signature(last)), never),
        ("not for the previous block", _rebuilt(state, records, chain[0][1]), never),
    ]
    for reason, block, exists in cases:
        with pytest.raises(InvalidBlockError, match=reason):
            apply_block(state, block, record_exists=exists)
    # Without signature checks (the caller checks them in parallel) the forged record passes here.
    apply_block(state, _rebuilt(state, [forged], last), record_exists=never, check_signatures=False)


def _bad_signature(cert: CommitCertificate | None) -> CommitCertificate:
    assert cert is not None
    (key, sig), *rest = cert.signatures
    return dataclasses.replace(cert, signatures=((key, bytes([sig[0] ^ 1]) + sig[1:]), *rest))


# --- membership ---------------------------------------------------------------------------------


def _membership(
    builder: sample.ChainBuilder, approvers: list[SigningIdentity], seed: int = 5, **kw: Any
) -> Record:
    author = next(iter(builder.signers.values()))
    args: dict[str, Any] = {"action": "add", "member": NEWCOMER.public.sign_key, "role": "validator"}
    args.update(kw)
    chain_id = builder.genesis.chain_id
    return sample.membership_record(author, approvers, chain_id, rng=random.Random(seed), **args)


def test_membership_change_takes_effect_two_blocks_later(
    genesis: Genesis, validators: list[SigningIdentity]
) -> None:
    builder = sample.ChainBuilder(genesis, [*validators, NEWCOMER])
    blocks = [builder.next_block(records_for(validators, 2, 1))]
    change = _membership(builder, validators[:3])  # 3 of 4 > 2/3
    blocks.append(builder.next_block([change]))  # height H = 2
    assert len(builder.state.validators) == 4 and builder.state.pending
    blocks.append(builder.next_block(records_for(validators, 2, 2)))  # H + 1, still voted by the old set
    assert len(builder.state.validators) == 5 and not builder.state.pending  # votes on H + 2
    assert len(builder.state.last_validators or ()) == 4
    blocks.append(builder.next_block(records_for([NEWCOMER], 1, 3)))  # H + 2: the new member votes
    cert_h2 = blocks[-1][1]
    assert NEWCOMER.public.sign_key in {key for key, _ in cert_h2.signatures}
    assert builder.state.last_validators is not None
    assert blocks[-1][0].header.validators_hash == builder.state.last_validators.hash
    blocks.append(builder.next_block(records_for(validators, 1, 4)))  # carries the 5-member certificate
    # 3 of 4 certified H + 1, but 3 of 5 cannot certify H + 2.
    three = validators[:3]
    sample.certify(blocks[2][0], three, genesis.chain_id).verify(genesis.chain_id, genesis.validators)
    with pytest.raises(InvalidBlockError, match="2/3"):
        sample.certify(blocks[3][0], three, genesis.chain_id).verify(
            genesis.chain_id, builder.state.validators
        )
    store = MemoryStore()
    for block, cert in blocks:
        store.append(block, cert)
    state = verify_chain(store, genesis, workers=0)
    assert state == builder.state


def test_removals_and_audit_nodes(genesis: Genesis, validators: list[SigningIdentity]) -> None:
    builder = sample.ChainBuilder(genesis, validators)
    auditor = OUTSIDER
    builder.next_block(
        [_membership(builder, validators[:3], action="remove", member=validators[3].public.sign_key)]
    )
    builder.next_block(
        [_membership(builder, validators, seed=6, role="audit", member=auditor.public.sign_key)]
    )
    assert len(builder.state.validators) == 3 and not builder.state.auditors  # removal due now, audit next
    builder.next_block([])
    assert [a.sign_key for a in builder.state.auditors] == [auditor.public.sign_key]
    builder.next_block(records_for([auditor], 1, 7))  # an audit node may author records
    with pytest.raises(InvalidBlockError, match="author is not a member"):
        builder.next_block(records_for([validators[3]], 1, 8))  # the removed validator may not


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("no more than 2/3", lambda b, v: _membership(b, v[:2])),
        ("non-validator or repeated", lambda b, v: _membership(b, [*v[:3], OUTSIDER])),
        ("non-validator or repeated", lambda b, v: _membership(b, [v[0], *v[:3]])),
        ("already a member", lambda b, v: _membership(b, v, member=v[1].public.sign_key)),
        ("not a validator", lambda b, v: _membership(b, v, action="remove")),
        ("not an audit node", lambda b, v: _membership(b, v, action="remove", role="audit")),
        ("a validator needs power", lambda b, v: _membership(b, v, power=0)),
    ],
)
def test_bad_membership_changes_are_refused(
    genesis: Genesis, validators: list[SigningIdentity], reason: str, make: Callable[..., Record]
) -> None:
    builder = sample.ChainBuilder(genesis, validators)
    with pytest.raises(InvalidBlockError, match=reason):
        builder.next_block([make(builder, validators)])


def test_approvals_of_exactly_two_thirds_are_not_enough() -> None:
    three = sample.identities(3, "three")
    genesis = sample.sample_genesis(three)
    builder = sample.ChainBuilder(genesis, three)
    with pytest.raises(InvalidBlockError, match="no more than 2/3"):
        builder.next_block([_membership(builder, three[:2])])
    builder.next_block([_membership(builder, three)])


def test_approvals_cannot_be_replayed_in_another_record(
    genesis: Genesis, validators: list[SigningIdentity]
) -> None:
    builder = sample.ChainBuilder(genesis, validators)
    change = _membership(builder, validators)
    # The same body and approvals under a new record id: the approvals signed the old id.
    replayed = make_record(
        validators[0],
        RecordType.MEMBERSHIP_CHANGE,
        change.body,
        record_id=bytes(16),
        time_ms=change.time_ms,
        tags=change.tags,
    )
    with pytest.raises(InvalidBlockError, match="bad approval signature"):
        builder.next_block([replayed])
    builder.next_block([change])


def test_last_validator_cannot_leave() -> None:
    alone = sample.identities(1, "alone")
    genesis = sample.sample_genesis(alone)
    builder = sample.ChainBuilder(genesis, alone)
    with pytest.raises(InvalidBlockError, match="the last one"):
        builder.next_block([_membership(builder, alone, action="remove", member=alone[0].public.sign_key)])
