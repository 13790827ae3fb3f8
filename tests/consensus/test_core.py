"""The state machine against the paper's rules, driven by hand or in lock step."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mftp.consensus.config import ConsensusConfig
from mftp.consensus.core import Consensus
from mftp.consensus.errors import ConsensusUsageError
from mftp.consensus.events import (
    Broadcast,
    Evidence,
    ProposalReceived,
    ScheduleTimeout,
    Start,
    Step,
    TimeoutFired,
    VoteReceived,
    WalAppend,
)
from mftp.consensus.messages import ProposalMessage, sign_proposal
from mftp.ledger.block import NIL, Vote, VoteType, sign_vote
from mftp.ledger.chain import ChainState, build_block, replay
from mftp.ledger.records import RecordType

from .helpers import CHAIN_ID, FAST, Harness, genesis_for, identity, record


def _votes(actions: list[object], vote_type: VoteType | None = None) -> list[Vote]:
    out = [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Vote)]
    return [v for v in out if vote_type is None or v.type is vote_type]


class Solo:
    """One validator of four; the test plays the other three."""

    def __init__(self, index: int = 0, config: ConsensusConfig = FAST) -> None:
        self.ids = [identity(f"v{i}") for i in range(4)]
        self.genesis = genesis_for(self.ids)
        self.state = ChainState.initial(self.genesis)
        self.core = Consensus(
            config,
            state=self.state,
            last_commit=None,
            record_exists=lambda _id: False,
            identity=self.ids[index],
        )
        self.me = self.ids[index]
        self.now = 0

    def step(self, event: object) -> list[object]:
        return list(self.core.step(event, self.now))  # type: ignore[arg-type]

    def vote(self, who: int, vote_type: VoteType, round_: int, block_hash: bytes, height: int = 1) -> Vote:
        return sign_vote(self.ids[who], CHAIN_ID, vote_type, height, round_, block_hash)

    def others(self) -> list[int]:
        return [i for i, v in enumerate(self.ids) if v is not self.me]

    def proposer_index(self, round_: int) -> int:
        key = self.state.validators.proposer(1, round_).sign_key
        return next(i for i, v in enumerate(self.ids) if v.public.sign_key == key)

    def proposal(self, round_: int, records: tuple = (), pol_round: int = -1, block=None) -> ProposalReceived:
        proposer = self.ids[self.proposer_index(round_)]
        if block is None:
            block = build_block(
                self.state, records, time_ms=10 + round_, proposer=proposer.public.sign_key, last_commit=None
            )
        proposal = sign_proposal(proposer, CHAIN_ID, 1, round_, pol_round, block.hash)
        return ProposalReceived(proposal, block)


def _solo_not_proposer(round_: int = 0) -> Solo:
    for index in range(4):
        solo = Solo(index)
        if solo.proposer_index(round_) != index:
            return solo
    raise AssertionError("unreachable")


def test_four_validators_commit_one_chain_that_an_observer_verifies() -> None:
    net = Harness(4, observers=1)
    net.start()
    net.run_until_height(3)
    chains = [[c.block.hash for c in m.commits[:3]] for m in net.members]
    assert all(chain == chains[0] for chain in chains)
    commits = net.members[0].commits[:3]
    state = replay(net.genesis, [c.block for c in commits])  # every last_commit verified on the way
    state.verify_commit(commits[-1].certificate)


def test_observer_follows_but_never_proposes_or_votes() -> None:
    net = Harness(4, observers=1)
    net.start()
    net.run_until_height(2)
    observer = net.members[-1]
    assert len(observer.commits) >= 2
    assert not [a for a in observer.sent if isinstance(a, Broadcast | WalAppend)]


def test_votes_from_non_validators_are_ignored_and_counted() -> None:
    solo = Solo()
    solo.step(Start())
    stranger = identity("stranger")
    vote = sign_vote(stranger, CHAIN_ID, VoteType.PREVOTE, 1, 0, NIL)
    assert solo.step(VoteReceived(vote)) == []
    assert solo.core.counters["votes_from_non_validators"] == 1


def test_bad_messages_are_counted_and_dropped_never_raised() -> None:
    solo = _solo_not_proposer()
    solo.step(Start())
    good = solo.vote(solo.others()[0], VoteType.PREVOTE, 0, NIL)
    forged = replace(good, signature=bytes(64))
    solo.step(VoteReceived(forged))
    wrong_proposer = solo.proposal(0)
    impostor = sign_proposal(
        solo.ids[(solo.proposer_index(0) + 1) % 4], CHAIN_ID, 1, 0, -1, wrong_proposer.block.hash
    )
    solo.step(ProposalReceived(impostor, wrong_proposer.block))
    other_block = solo.proposal(1).block
    solo.step(ProposalReceived(wrong_proposer.proposal, other_block))  # block does not match the hash
    assert solo.core.counters["input_errors"] == 3
    assert solo.core.votes.get(0, VoteType.PREVOTE).power == 0
    with pytest.raises(ConsensusUsageError):
        solo.core.step("not an event", 0)  # type: ignore[arg-type]


def test_every_record_is_checked_before_prevoting() -> None:
    solo = _solo_not_proposer()
    solo.step(Start())
    rng = random.Random(3)
    good = record(solo.ids[1], rng)
    bad = replace(record(solo.ids[1], rng), signature=bytes(64), encoded=b"")
    prevotes = _votes(solo.step(solo.proposal(0, (good, bad))), VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [NIL]
    assert solo.core.counters["invalid_blocks"] == 1

    solo = _solo_not_proposer()
    solo.step(Start())
    event = solo.proposal(0, (good,))
    prevotes = _votes(solo.step(event), VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [event.block.hash]


def test_a_replayed_record_is_refused() -> None:
    ids = [identity(f"v{i}") for i in range(4)]
    state = ChainState.initial(genesis_for(ids))
    rng = random.Random(4)
    old = record(ids[1], rng)
    solo = _solo_not_proposer()
    solo.core._record_exists = lambda rid: rid == old.record_id  # already on the chain
    solo.step(Start())
    assert state.validators == solo.state.validators
    prevotes = _votes(solo.step(solo.proposal(0, (old,))), VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [NIL]


def _drive_round(solo: Solo, round_: int) -> list[object]:
    """Nil prevotes and precommits from the three others, then the precommit timeout."""
    actions: list[object] = []
    for who in solo.others():
        actions += solo.step(VoteReceived(solo.vote(who, VoteType.PREVOTE, round_, NIL)))
    for who in solo.others():
        actions += solo.step(VoteReceived(solo.vote(who, VoteType.PRECOMMIT, round_, NIL)))
    timeouts = [a for a in actions if isinstance(a, ScheduleTimeout) and a.step is Step.PRECOMMIT]
    assert timeouts, "2f+1 precommits schedule the precommit timeout (line 47)"
    solo.now = timeouts[-1].at_ms
    return actions + solo.step(TimeoutFired(1, round_, Step.PRECOMMIT))


def test_rounds_advance_on_timeouts_that_grow_with_the_round() -> None:
    solo = Solo(0)
    solo.step(Start())
    waits = []
    for round_ in range(4):
        actions = _drive_round(solo, round_)
        assert solo.core.round == round_ + 1
        proposes = [a for a in actions if isinstance(a, ScheduleTimeout) and a.step is Step.PROPOSE]
        if proposes:
            waits.append(proposes[-1].at_ms - solo.now)
    assert waits == sorted(waits) and len(set(waits)) == len(waits)
    assert FAST.timeout_ms(Step.PREVOTE, 3) == FAST.timeout_prevote_ms + 3 * FAST.timeout_prevote_delta_ms


def test_f_plus_one_messages_from_a_higher_round_make_us_skip_to_it() -> None:
    solo = Solo(0)
    solo.step(Start())
    a, b = solo.others()[:2]
    solo.step(VoteReceived(solo.vote(a, VoteType.PREVOTE, 5, NIL)))
    assert solo.core.round == 0  # power 1 of 4 is not more than a third
    solo.step(VoteReceived(solo.vote(b, VoteType.PRECOMMIT, 5, NIL)))
    assert solo.core.round == 5  # line 55
    assert solo.core.counters["round_skips"] == 1


def test_lock_on_a_polka_then_refuse_other_values_until_a_newer_polka() -> None:
    solo = _solo_not_proposer(0)
    solo.step(Start())
    first = solo.proposal(0, ())
    solo.step(first)
    precommits = []
    for who in solo.others():
        precommits += _votes(
            solo.step(VoteReceived(solo.vote(who, VoteType.PREVOTE, 0, first.block.hash))), VoteType.PRECOMMIT
        )
    assert [v.block_hash for v in precommits] == [first.block.hash]  # line 40
    assert solo.core.locked_round == 0 and solo.core.valid_round == 0  # lines 38-43
    for who in solo.others():
        solo.step(VoteReceived(solo.vote(who, VoteType.PRECOMMIT, 0, NIL)))
    solo.now += 1000
    solo.step(TimeoutFired(1, 0, Step.PRECOMMIT))
    assert solo.core.round == 1
    if solo.proposer_index(1) == solo.ids.index(solo.me):
        return  # we would re-propose our valid value ourselves (line 16)
    other = solo.proposal(1, ())  # a different block (another time): we are locked
    assert other.block.hash != first.block.hash
    prevotes = _votes(solo.step(other), VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [NIL]  # line 26


def test_line_28_re_proposal_with_a_proof_of_lock_is_accepted_by_a_locked_validator() -> None:
    solo = _solo_not_proposer(0)
    solo.step(Start())
    first = solo.proposal(0, ())
    solo.step(first)
    for who in solo.others():
        solo.step(VoteReceived(solo.vote(who, VoteType.PREVOTE, 0, first.block.hash)))
    for who in solo.others():
        solo.step(VoteReceived(solo.vote(who, VoteType.PRECOMMIT, 0, NIL)))
    solo.now += 1000
    solo.step(TimeoutFired(1, 0, Step.PRECOMMIT))
    if solo.proposer_index(1) == solo.ids.index(solo.me):
        return
    again = solo.proposal(1, (), pol_round=0, block=first.block)
    prevotes = _votes(solo.step(again), VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [first.block.hash]  # line 30


def test_equivocation_becomes_evidence_and_an_evidence_record() -> None:
    solo = Solo(0)
    solo.step(Start())
    offender = solo.others()[0]
    a = solo.vote(offender, VoteType.PREVOTE, 0, NIL)
    b = solo.vote(offender, VoteType.PREVOTE, 0, bytes(32))
    solo.step(VoteReceived(a))
    actions = solo.step(VoteReceived(b))
    evidence = [x for x in actions if isinstance(x, Evidence)]
    assert len(evidence) == 1 and evidence[0].offender == solo.ids[offender].public.sign_key
    pooled = [r for r in solo.core.mempool.records() if r.type is RecordType.EVIDENCE]
    assert len(pooled) == 1 and pooled[0].body["offender"] == evidence[0].offender
    solo.step(VoteReceived(b))  # seen again: no new evidence
    assert solo.core.counters["equivocations"] == 1


def test_evidence_reaches_the_chain_in_lock_step() -> None:
    net = Harness(4)
    offender = net.identities[3]
    net.start()
    height = net.members[0].core.height
    a = sign_vote(offender, CHAIN_ID, VoteType.PRECOMMIT, height, 7, NIL)
    b = sign_vote(offender, CHAIN_ID, VoteType.PRECOMMIT, height, 7, bytes(32))
    net.feed(0, VoteReceived(a))
    net.feed(0, VoteReceived(b))
    net.run_until_height(6)
    on_chain = [r for c in net.members[1].commits for r in c.block.records if r.type is RecordType.EVIDENCE]
    assert len(on_chain) == 1 and on_chain[0].body["offender"] == offender.public.sign_key


def test_the_guard_never_signs_a_second_different_vote_for_a_slot() -> None:
    solo = _solo_not_proposer(0)
    prior = sign_vote(solo.me, CHAIN_ID, VoteType.PREVOTE, 1, 0, bytes(32))  # what we sent before a crash
    solo.core.restore_own([prior], [])
    solo.step(Start())
    solo.now = 10_000
    actions = solo.step(TimeoutFired(1, 0, Step.PROPOSE))  # would prevote nil (line 59)
    assert _votes(actions) == [prior]
    assert not [a for a in actions if isinstance(a, WalAppend)]
    assert solo.core.counters["guard_kept_prior_vote"] == 1


def test_last_commit_requires_certificate_iff_blocks_exist() -> None:
    solo = Solo()
    with pytest.raises(ConsensusUsageError):
        Consensus(FAST, state=solo.state, last_commit=None, record_exists=bool, identity=None).step(
            Start(), 0
        )
        Consensus(
            FAST,
            state=replace(solo.state, height=1),
            last_commit=None,
            record_exists=lambda _i: False,
        )


def test_proposals_carry_mempool_records_in_fifo_batches() -> None:
    config = replace(FAST, batch_records=3)
    net = Harness(4, config=config)
    rng = random.Random(9)
    records = [record(net.identities[i % 4], rng) for i in range(7)]
    from mftp.consensus.events import RecordsSubmitted

    for i in range(4):
        net.feed(i, RecordsSubmitted(tuple(records)))
    net.start()
    net.run_until_height(3)
    blocks = [c.block for c in net.members[0].commits[:3]]
    assert [len(b.records) for b in blocks] == [3, 3, 1]
    assert [r.record_id for b in blocks for r in b.records] == [r.record_id for r in records]
    assert all(len(m.core.mempool) == 0 for m in net.members)


def test_proposal_message_is_what_the_proposer_broadcasts() -> None:
    net = Harness(4)
    net.start()
    proposals = [
        a.message
        for m in net.members
        for a in m.sent
        if isinstance(a, Broadcast) and isinstance(a.message, ProposalMessage)
    ]
    assert proposals and all(p.block.hash == p.proposal.block_hash for p in proposals)
    for p in proposals:
        p.proposal.verify(CHAIN_ID)
