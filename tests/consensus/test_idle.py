"""Idle chains: with nothing to record, a height waits for a record or a heartbeat.

CometBFT's ``create_empty_blocks_interval``: a hospital consortium is idle most
of the night, and a ledger that commits an empty block after every commit wait
grows by hundreds of thousands of blocks a day.
"""

from __future__ import annotations

import random
from dataclasses import replace

from mftp.consensus.events import Broadcast, RecordsSubmitted, SendBlocks, VoteReceived
from mftp.ledger.block import Vote, VoteType
from tests.consensus.helpers import FAST, Harness, record

HEARTBEAT_MS = 10_000
IDLE = replace(FAST, empty_block_interval_ms=HEARTBEAT_MS)


def heights(net: Harness) -> list[int]:
    return [len(m.commits) for m in net.members]


def test_idle_chain_waits_for_the_heartbeat() -> None:
    net = Harness(4, config=IDLE)
    net.start()
    net.run_until_height(1)  # the first height starts at once
    first = net.members[0].commits[0].block.header.time_ms
    net.fire_due(first + HEARTBEAT_MS // 2)
    assert heights(net) == [1, 1, 1, 1]  # no empty blocks while idle
    net.run_until_height(2, limit_ms=first + 3 * HEARTBEAT_MS)
    second = net.members[0].commits[1].block
    assert second.records == () and second.header.time_ms >= first + HEARTBEAT_MS  # the heartbeat


def test_a_record_wakes_an_idle_height_at_once() -> None:
    net = Harness(4, config=IDLE)
    net.start()
    net.run_until_height(1)
    net.fire_due(net.now + 1000)
    assert heights(net) == [1, 1, 1, 1]
    rng = random.Random(3)
    submitted = record(net.identities[0], rng, time_ms=net.now)
    woke_at = net.now
    for index in range(len(net.members)):  # the node broadcasts records to every mempool
        net.feed(index, RecordsSubmitted((submitted,)))
    net.run_until_height(2, limit_ms=woke_at + HEARTBEAT_MS // 2)
    assert all(len(m.commits) >= 2 for m in net.members)
    assert net.members[0].commits[1].block.records == (submitted,)
    assert net.now < woke_at + HEARTBEAT_MS // 2
    assert net.members[0].core.counters["idle_wakeups"] >= 1


def test_a_peers_proposal_wakes_a_node_whose_mempool_is_empty() -> None:
    net = Harness(4, config=IDLE)
    net.start()
    net.run_until_height(1)
    net.fire_due(net.now + 1000)
    proposer = net.members[0].core.validators.proposer(2, 0).sign_key
    index = next(i for i, ident in enumerate(net.identities) if ident.public.sign_key == proposer)
    rng = random.Random(4)
    net.feed(index, RecordsSubmitted((record(net.identities[index], rng, time_ms=net.now),)))
    net.run_until_height(2, limit_ms=net.now + HEARTBEAT_MS // 2)
    assert all(len(m.commits[1].block.records) == 1 for m in net.members)


def test_a_height_decided_during_our_commit_wait_is_not_left_idle() -> None:
    """The proposal and the precommits of the next height can all arrive while a node still
    waits out its commit timeout (its peers' ended first).  With an empty mempool (an audit
    node: it proposes nothing), it must not then idle until the heartbeat: nothing else comes
    to wake it.  Seen on a loaded devnet as the audit node's commits stalling for ~300 ms."""
    net = Harness(4, observers=1, config=IDLE)
    net.start()
    net.run_until_height(1)
    observer = net.members[4]
    assert observer.core.current_step.name == "COMMIT" and observer.timeouts  # still in its commit wait
    rng = random.Random(5)
    submitted = record(net.identities[0], rng, time_ms=net.now)
    for index in range(4):  # the validators' mempools only
        net.feed(index, RecordsSubmitted((submitted,)))
    net.run_until_height(2, limit_ms=net.now + HEARTBEAT_MS // 2)
    assert len(observer.commits) == 2 and observer.commits[1].block.records == (submitted,)


def test_default_makes_a_block_after_every_commit_wait() -> None:
    net = Harness(4)
    net.start()
    net.run_until_height(4, limit_ms=2000)
    assert min(heights(net)) >= 4


def test_simulator_finds_no_violation_with_idle_heights() -> None:
    """Safety and liveness under faults and Byzantine members hold with idle waits too."""
    from mftp.consensus.sim import SCENARIOS, Simulator, make_spec, sim_config

    config = replace(sim_config(), empty_block_interval_ms=400)
    failures = []
    for seed in range(150):
        scenario = SCENARIOS[seed % len(SCENARIOS)]
        result = Simulator(make_spec(scenario, seed), config=config).run()
        if result.violations:
            failures.append(f"{scenario}:{seed}: {result.violations[:1]}")
    assert not failures, failures


def test_an_idle_peers_re_sent_precommit_pushes_no_blocks() -> None:
    """Every Tick re-sends a validator's precommit of the height before its own, for laggards.
    On an idle chain that precommit is over a sync interval old: it must not read as the sender
    lagging (each node pushed its last block to every peer once a second), while a prevote of
    that height does show a peer still on it."""
    net = Harness(4, config=IDLE)
    net.start()
    net.run_until_height(1)
    net.fire_due(net.now + 3 * FAST.sync_interval_ms)  # idle at height 2, long after deciding 1
    me, peer = net.members[0], net.members[1]
    (precommit,) = [
        a.message
        for a in peer.sent
        if isinstance(a, Broadcast) and isinstance(a.message, Vote) and a.message.type is VoteType.PRECOMMIT
    ][-1:]
    assert precommit.height == 1 and me.core.height == 2
    assert not [a for a in me.core.step(VoteReceived(precommit), net.now) if isinstance(a, SendBlocks)]
    prevote = next(
        a.message
        for a in peer.sent
        if isinstance(a, Broadcast) and isinstance(a.message, Vote) and a.message.type is VoteType.PREVOTE
    )
    assert me.core.step(VoteReceived(prevote), net.now) == [SendBlocks(peer.core.key, 1)]
