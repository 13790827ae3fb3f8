"""Records between the network and the mempool: what is dropped before the WAL, where they go."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from mftp.consensus.events import Broadcast, ProposalReceived, RecordsSubmitted, SendBlocks, VoteReceived
from mftp.consensus.messages import ProposalMessage, sign_proposal
from mftp.consensus.wal import FileWal, NoWal
from mftp.crypto.keyfile import load_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import VoteType, sign_vote
from mftp.ledger.genesis import Genesis
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.node.chain.compact_proposals import compact_value
from mftp.node.chain.reactor import COMPACT_RETRY_MS, ChainReactor
from mftp.node.config import load_config
from mftp.node.devnet.consortium import create_devnet
from mftp.node.process import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ChainReactor]:
    member = create_devnet(tmp_path / "devnet", validators=1, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    genesis = Genesis.load(member.directory / "genesis.json")
    node = Node(load_config(member.config_path), identity, genesis).chain
    node.replica = mock.Mock()
    node.replica.core.mempool = set()
    node.replica.handle.return_value = []
    yield node
    node.wal.close()
    node.ledger.close()


def test_known_and_strangers_records_are_dropped_before_the_wal(node: ChainReactor) -> None:
    rng = random.Random(5)
    ours = [sample_record(node.identity, rng) for _ in range(3)]
    stranger = sample_record(SigningIdentity.generate(), rng)
    node.replica.core.mempool = {ours[0].record_id}  # type: ignore[union-attr]
    node._on_records([r.to_bytes() for r in [*ours, stranger]])
    (call,) = node.replica.handle.call_args_list  # type: ignore[union-attr]
    event = call.args[0]
    assert isinstance(event, RecordsSubmitted) and event.records == tuple(ours[1:])
    node.replica.handle.reset_mock()  # type: ignore[union-attr]
    node._on_records([ours[0].to_bytes(), stranger.to_bytes()])
    node.replica.handle.assert_not_called()  # type: ignore[union-attr]


Trio = tuple[ChainReactor, bytes, bytes]


@pytest.fixture
def trio_node(tmp_path: Path) -> Iterator[Trio]:
    """Validator 0 of two, with an audit node; its network is a mock.  Yields it and the
    keys of the other validator and of the audit node."""
    members = create_devnet(tmp_path / "devnet", validators=2, audit=1)
    me, other, audit = members
    identity = load_identity(me.directory / "keys" / "node.key")
    node = Node(load_config(me.config_path), identity, Genesis.load(me.directory / "genesis.json")).chain
    keys = [load_identity(m.directory / "keys" / "node.key").public.sign_key for m in members]
    node.network = mock.Mock()
    node.network.members.return_value = {keys[1]: other.name, keys[2]: audit.name}
    yield node, keys[1], keys[2]
    node.wal.close()
    node.ledger.close()


def test_records_are_gossiped_to_the_validators_only(trio_node: Trio) -> None:
    """Audit nodes propose nothing: they get records in proposals, not in every validator's gossip."""
    node, validator, _audit = trio_node
    blob = sample_record(node.identity, random.Random(6)).to_bytes()
    node._outbox = [blob]
    node._flush_records()
    (call,) = node.network.broadcast.call_args_list  # type: ignore[union-attr]
    assert call.args == ("records", [blob]) and call.kwargs == {"to": [validator]}


def test_prevotes_go_to_validators_and_precommits_to_all(trio_node: Trio) -> None:
    """An audit node decides on precommits alone (line 49), so prevotes are not sent to it."""
    node, validator, _audit = trio_node
    for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        vote = sign_vote(node.identity, "chain", vote_type, 1, 0, bytes(32))
        node._carry_out([Broadcast(vote)])
    prevote, precommit = node.network.broadcast.call_args_list  # type: ignore[union-attr]
    assert prevote.args[0] == "c.vote" and prevote.kwargs == {"to": [validator]}
    assert precommit.args[0] == "c.vote" and precommit.kwargs == {"to": None}


def test_status_reports_catching_up_only_on_heights_a_third_of_the_validators_show(
    trio_node: Trio,
) -> None:
    """Votes are noted before the core checks them, so one member (here the audit node,
    with no voting power) claiming a far height must not make the node say it lags."""
    node, validator, audit = trio_node
    node.network.peers.return_value = frozenset()  # type: ignore[union-attr]
    far = sign_vote(node.identity, "chain", VoteType.PRECOMMIT, 1_000, 0, bytes(32))
    node._note_height(audit, VoteReceived(far))
    assert node.status()["sync"] == {"state": "synced", "highest_seen": 0}
    node._note_height(validator, VoteReceived(far))  # one of two validators: over a third
    assert node.status()["sync"] == {"state": "catching_up", "highest_seen": 1_000}


def test_an_audit_node_keeps_no_consensus_wal(tmp_path: Path) -> None:
    validator, audit = create_devnet(tmp_path / "devnet", validators=1, audit=1)
    nodes = [
        Node(
            load_config(m.config_path),
            load_identity(m.directory / "keys" / "node.key"),
            Genesis.load(m.directory / "genesis.json"),
        )
        for m in (validator, audit)
    ]
    try:
        assert isinstance(nodes[0].chain.wal, FileWal) and isinstance(nodes[1].chain.wal, NoWal)
        assert any(validator.directory.rglob("consensus.wal"))
        assert not any(audit.directory.rglob("consensus.wal"))
    finally:
        for node in nodes:
            node.chain.wal.close()
            node.ledger.close()


def _proposal(records: int = 3) -> ProposalMessage:
    signers = identities(4)
    genesis = sample_genesis(signers)
    rng = random.Random(8)
    block, _ = ChainBuilder(genesis, signers).next_block(
        [sample_record(signers[0], rng) for _ in range(records)]
    )
    return ProposalMessage(sign_proposal(signers[0], genesis.chain_id, 1, 0, -1, block.hash), block)


def test_proposals_go_by_ids_to_validators_and_whole_to_audit_nodes(
    trio_node: Trio,
) -> None:
    node, validator, audit = trio_node
    message = _proposal()
    node._broadcast_proposal(message)
    calls = {c.args[0]: c for c in node.network.broadcast.call_args_list}  # type: ignore[union-attr]
    assert calls["c.proposal_ids"].kwargs == {"to": [validator]}
    assert calls["c.proposal_ids"].args[1]["ids"] == [r.record_id for r in message.block.records]
    assert calls["c.proposal"].kwargs == {"to": [audit]}
    # A validator that could not rebuild it asks; it is answered once, with the whole proposal.
    node._answer_proposal(validator, {"h": 1, "r": 0})
    node._answer_proposal(validator, {"h": 1, "r": 0})
    (sent,) = node.network.send.call_args_list  # type: ignore[union-attr]
    assert sent.args[:2] == (validator, "c.proposal") and sent.args[2]["b"] == message.block.to_bytes()


def test_a_proposal_with_records_we_lack_is_fetched_whole(trio_node: Trio) -> None:
    node, validator, _audit = trio_node
    message = _proposal()
    pool = {r.record_id: r for r in message.block.records}
    node.replica = mock.Mock()
    node.replica.core.mempool.get = pool.get
    node.replica.core.height = 1
    node.replica.handle.return_value = []
    node._on_compact_proposal(validator, compact_value(message))
    (call,) = node.replica.handle.call_args_list  # rebuilt from the pool
    assert call.args[0] == ProposalReceived(message.proposal, message.block)
    late = pool.pop(message.block.records[1].record_id)

    async def gossip_arrives_meanwhile() -> None:
        node._on_compact_proposal(validator, compact_value(message))  # waits a moment first
        pool[late.record_id] = late
        await asyncio.sleep(COMPACT_RETRY_MS / 1000 * 3)

    asyncio.run(gossip_arrives_meanwhile())
    assert node.replica.handle.call_count == 2 and not node.network.send.called  # type: ignore[union-attr]
    del pool[late.record_id]
    node._on_compact_proposal(validator, compact_value(message), retry=False)  # still missing after it
    node.network.send.assert_called_once_with(validator, "c.proposal?", {"h": 1, "r": 0})  # type: ignore[union-attr]
    node.replica.core.height = 2  # decided meanwhile: a late re-send is not fetched
    node._on_compact_proposal(validator, compact_value(message), retry=False)
    assert node.network.send.call_count == 1  # type: ignore[union-attr]


def test_an_action_that_fails_never_skips_the_next(trio_node: Trio) -> None:
    """A peer's replayed old vote once made catch-up target this node: ``send`` to our own key
    raised, and the rest of that step's actions were skipped."""
    node, _validator, _audit = trio_node
    own = node.identity.public.sign_key
    first, second = (sign_vote(node.identity, "chain", VoteType.PRECOMMIT, h, 0, bytes(32)) for h in (1, 2))
    node.network.broadcast.side_effect = [RuntimeError("a bug of ours"), None]  # type: ignore[union-attr]
    node._carry_out([SendBlocks(own, 1), Broadcast(first), Broadcast(second)])
    node.network.send.assert_not_called()  # type: ignore[union-attr]  # never to ourselves
    assert node.network.broadcast.call_count == 2  # type: ignore[union-attr]  # the second went out
    assert node.metrics.action_errors.labels(action="Broadcast")._value.get() == 1
