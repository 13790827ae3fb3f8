"""Membership changes: approved by more than 2/3 of the power, effective at H+2, verifiable by an observer."""

from __future__ import annotations

import random

from mftp.consensus.events import Broadcast, RecordsSubmitted
from mftp.consensus.sim import run_seed
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import Vote
from mftp.ledger.chain import MEMBERSHIP_DELAY_BLOCKS, replay
from mftp.ledger.records import Record
from mftp.ledger.sample import membership_record

from .helpers import CHAIN_ID, Harness


def _change(
    author: SigningIdentity,
    approvers: list[SigningIdentity],
    action: str,
    role: str,
    member: bytes,
    seed: int,
) -> Record:
    return membership_record(
        author,
        approvers,
        CHAIN_ID,
        action=action,
        member=member,
        role=role,
        rng=random.Random(seed),
        time_ms=1,
    )


def _height_of(net: Harness, record_id: bytes) -> int:
    return next(
        c.block.height for c in net.members[0].commits for r in c.block.records if r.record_id == record_id
    )


def test_an_added_validator_votes_from_h_plus_2_and_an_observer_verifies_across_the_change() -> None:
    net = Harness(4, observers=1, joiners=1)
    joiner = net.joiner_ids[0]
    joiner_index = len(net.members) - 1
    net.start()
    net.run_until_height(1)
    change = _change(net.identities[0], net.identities[:3], "add", "validator", joiner.public.sign_key, 1)
    for i in range(4):
        net.feed(i, RecordsSubmitted((change,)))
    net.run_until_height(_height_of_when_committed(net, change) + MEMBERSHIP_DELAY_BLOCKS + 3)
    h = _height_of(net, change.record_id)

    votes = [a.message for a in net.members[joiner_index].sent if isinstance(a, Broadcast)]
    vote_heights = {v.height for v in votes if isinstance(v, Vote)}
    assert vote_heights and min(vote_heights) == h + MEMBERSHIP_DELAY_BLOCKS  # silent before, votes at H+2

    commits = net.members[joiner_index].commits  # the joiner followed the chain as an observer first
    blocks = [c.block for c in commits]
    state = replay(net.genesis, blocks)  # genesis + chain only: every last_commit verified
    state.verify_commit(commits[-1].certificate)
    assert joiner.public.sign_key in state.validators
    signed = {
        c.block.height - 1
        for c in commits
        if c.block.last_commit and joiner.public.sign_key in dict(c.block.last_commit.signatures)
    }
    assert signed and min(signed) >= h + MEMBERSHIP_DELAY_BLOCKS  # certificates across the change


def _height_of_when_committed(net: Harness, change: Record, limit: int = 20) -> int:
    for _ in range(limit):
        found = [
            c.block.height
            for c in net.members[0].commits
            for r in c.block.records
            if r.record_id == change.record_id
        ]
        if found:
            return found[0]
        net.run_until_height(len(net.members[0].commits) + 1)
    raise AssertionError("the membership change was never committed")


def test_a_removed_validator_is_ignored_from_h_plus_2() -> None:
    net = Harness(5)
    leaving = net.identities[4]
    net.start()
    change = _change(net.identities[0], net.identities[:4], "remove", "validator", leaving.public.sign_key, 2)
    for i in range(5):
        net.feed(i, RecordsSubmitted((change,)))
    h = _height_of_when_committed(net, change)
    net.run_until_height(h + MEMBERSHIP_DELAY_BLOCKS + 2)
    member = net.members[0]
    assert leaving.public.sign_key not in member.core.validators
    assert member.core.counters["votes_from_non_validators"] == 0  # it knows it left and stays silent
    late = [c for c in member.commits if c.block.height >= h + MEMBERSHIP_DELAY_BLOCKS]
    assert late and all(leaving.public.sign_key not in dict(c.certificate.signatures) for c in late)


def test_an_audit_node_can_be_added_and_never_votes() -> None:
    net = Harness(4, joiners=1)
    auditor = net.joiner_ids[0]
    net.start()
    change = _change(net.identities[1], net.identities, "add", "audit", auditor.public.sign_key, 3)
    for i in range(4):
        net.feed(i, RecordsSubmitted((change,)))
    h = _height_of_when_committed(net, change)
    net.run_until_height(h + MEMBERSHIP_DELAY_BLOCKS + 1)
    assert any(a.sign_key == auditor.public.sign_key for a in net.members[0].core.state.auditors)
    assert not [a for a in net.members[-1].sent if isinstance(a, Broadcast)]


def test_too_few_approvals_are_refused() -> None:
    net = Harness(4, joiners=1)
    net.start()
    weak = _change(
        net.identities[0], net.identities[:2], "add", "validator", net.joiner_ids[0].public.sign_key, 4
    )
    for i in range(4):
        net.feed(i, RecordsSubmitted((weak,)))
    net.run_until_height(4)
    on_chain = [r for c in net.members[0].commits for r in c.block.records]
    assert weak.record_id not in {
        r.record_id for r in on_chain
    }  # the proposer evicts it (2 of 4 is not > 2/3)
    assert all(len(m.core.mempool) == 0 for m in net.members[:4])


def test_membership_scenario_seeds_switch_sets_and_verify() -> None:
    results = [run_seed("membership", seed) for seed in range(8, 200, 10)[:8]]
    assert all(not r.violations for r in results), [r.describe() for r in results]
    assert all(r.stats.get("membership_height") for r in results)
    assert sum(bool(r.stats.get("joiner_signed")) for r in results) >= 4
