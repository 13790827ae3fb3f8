"""Catch-up rules (mftp.consensus.catchup): when a peer gets blocks pushed, when we fetch."""

from __future__ import annotations

from dataclasses import replace

from mftp.consensus.catchup import DECIDED_KEPT, CatchUp, height_shown_by_a_third
from mftp.consensus.events import Broadcast, FetchBlocks, SendBlocks, VoteReceived
from mftp.ledger.block import Validator, ValidatorSet, Vote, VoteType
from tests.consensus.helpers import FAST, Harness, Member

INTERVAL_MS = 1000
PEER = b"p" * 32


def _at_height(height: int, *, decided_every_ms: int = 70) -> CatchUp:
    """A catch-up that went through heights 1..height, one every ``decided_every_ms``."""
    catchup = CatchUp(INTERVAL_MS)
    for h in range(1, height + 1):
        catchup.new_height(h, h * decided_every_ms)
    return catchup


def test_a_peer_on_a_height_we_just_decided_is_not_lagging() -> None:
    """At 10-15 heights a second, a peer's votes (and the precommit of the height before its own
    that every Tick re-sends) are often for a height or two below ours when they arrive."""
    catchup = _at_height(20)
    now = 20 * 70 + 5
    for their_height in (19, 18, 17):
        assert catchup.peer_behind(PEER, their_height, height=20, known=True, now_ms=now) is None


def test_a_peer_still_on_a_height_decided_an_interval_ago_gets_blocks_once_per_interval() -> None:
    catchup = _at_height(20)
    decided_18 = 19 * 70  # height 18 was decided when height 19 began
    now = decided_18 + INTERVAL_MS
    assert catchup.peer_behind(PEER, 18, height=20, known=True, now_ms=now) == SendBlocks(PEER, 18)
    assert catchup.peer_behind(PEER, 18, height=20, known=True, now_ms=now + 10) is None  # rate limit
    again = now + INTERVAL_MS
    assert catchup.peer_behind(PEER, 18, height=20, known=True, now_ms=again) == SendBlocks(PEER, 18)


def test_a_long_decided_height_is_pushed_at_once_and_strangers_get_nothing() -> None:
    catchup = _at_height(DECIDED_KEPT + 10, decided_every_ms=1)  # height 2's time is forgotten
    now = DECIDED_KEPT + 11
    assert catchup.peer_behind(PEER, 2, height=DECIDED_KEPT + 10, known=True, now_ms=now) == SendBlocks(
        PEER, 2
    )
    assert catchup.peer_behind(b"s" * 32, 2, height=DECIDED_KEPT + 10, known=False, now_ms=now) is None


def test_we_fetch_when_more_than_a_third_of_the_power_is_ahead() -> None:
    keys = [bytes([i]) * 32 for i in range(4)]
    validators = ValidatorSet([Validator(f"v{i}", key, 1) for i, key in enumerate(keys)])
    catchup = _at_height(5)
    later = 5 * 70 + INTERVAL_MS
    assert catchup.peer_ahead(keys[0], 9, height=5, validators=validators, now_ms=later) is None  # 1 of 4
    fetch = catchup.peer_ahead(keys[1], 8, height=5, validators=validators, now_ms=later)
    assert fetch == FetchBlocks((keys[0], keys[1]), 5)
    assert (
        catchup.peer_ahead(keys[2], 8, height=5, validators=validators, now_ms=later + 1) is None
    )  # rate limit
    assert catchup.peer_ahead(b"s" * 32, 9, height=5, validators=validators, now_ms=later) is None


def test_the_height_shown_by_a_third_of_the_power_ignores_a_lying_minority() -> None:
    keys = [bytes([i]) * 32 for i in range(4)]
    validators = ValidatorSet([Validator(f"v{i}", key, 1) for i, key in enumerate(keys)])
    assert height_shown_by_a_third({}, validators) == 0
    claims = {keys[0]: 1_000_000, b"s" * 32: 2_000_000}  # one validator (1/4) and a stranger
    assert height_shown_by_a_third(claims, validators) == 0
    claims[keys[1]] = 7
    assert height_shown_by_a_third(claims, validators) == 7  # two of four: more than a third
    claims[keys[2]] = 9
    assert height_shown_by_a_third(claims, validators) == 9


def _old_prevotes() -> tuple[Harness, Member, Member, list[Vote]]:
    """A 4-validator net idle at height 2, and every prevote of height 1 that was sent."""
    net = Harness(4, config=replace(FAST, empty_block_interval_ms=60_000))
    net.start()
    net.run_until_height(1)
    net.fire_due(net.now + 3 * FAST.sync_interval_ms)
    me, peer = net.members[0], net.members[1]
    prevotes = [
        a.message
        for m in net.members
        for a in m.sent
        if isinstance(a, Broadcast) and isinstance(a.message, Vote) and a.message.type is VoteType.PREVOTE
    ]
    assert me.core.height == 2 and prevotes
    return net, me, peer, prevotes


def test_our_own_old_vote_replayed_by_a_peer_sends_no_blocks_anywhere() -> None:
    """A validator back from a pause re-broadcasts old prevotes, some signed by the receiver."""
    net, me, _peer, prevotes = _old_prevotes()
    own = next(v for v in prevotes if v.validator == me.core.key)
    actions = me.core.step(VoteReceived(own), net.now)
    assert not [a for a in actions if isinstance(a, SendBlocks)]
    assert me.core.counters["own_old_messages"] == 1


def test_an_old_vote_is_attributed_only_once_its_signature_is_checked() -> None:
    net, me, peer, prevotes = _old_prevotes()
    theirs = next(v for v in prevotes if v.validator == peer.core.key)
    forged = replace(theirs, signature=bytes(64))
    errors = me.core.counters["input_errors"]
    assert not [a for a in me.core.step(VoteReceived(forged), net.now) if isinstance(a, SendBlocks)]
    assert me.core.counters["input_errors"] == errors + 1  # dropped as the sender's bad input
    assert me.core.step(VoteReceived(theirs), net.now) == [SendBlocks(peer.core.key, 1)]
