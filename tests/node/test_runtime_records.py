"""Records between the network and the mempool: what is dropped before the WAL, where they go."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from mftp.consensus.events import RecordsSubmitted
from mftp.crypto.keyfile import load_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.genesis import Genesis
from mftp.ledger.sample import sample_record
from mftp.node.config import load_config
from mftp.node.devnet import create_devnet
from mftp.node.runtime import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    member = create_devnet(tmp_path / "devnet", validators=1, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(load_config(member.config_path), identity, Genesis.load(member.directory / "genesis.json"))
    node.replica = mock.Mock()
    node.replica.core.mempool = set()
    node.replica.handle.return_value = []
    yield node
    node.wal.close()
    node.ledger.close()


def test_known_and_strangers_records_are_dropped_before_the_wal(node: Node) -> None:
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


def test_records_are_gossiped_to_the_validators_only(tmp_path: Path) -> None:
    """Audit nodes propose nothing: they get records in proposals, not in every validator's gossip."""
    members = create_devnet(tmp_path / "devnet", validators=2, audit=1)
    me, other, audit = members
    identity = load_identity(me.directory / "keys" / "node.key")
    node = Node(load_config(me.config_path), identity, Genesis.load(me.directory / "genesis.json"))
    try:
        keys = {m.name: load_identity(m.directory / "keys" / "node.key").public.sign_key for m in members}
        node.network = mock.Mock()
        node.network.members.return_value = {keys[other.name]: other.name, keys[audit.name]: audit.name}
        blob = sample_record(identity, random.Random(6)).to_bytes()
        node._outbox = [blob]
        node._flush_records()
        (call,) = node.network.broadcast.call_args_list
        assert call.args == ("records", [blob]) and call.kwargs == {"to": [keys[other.name]]}
    finally:
        node.wal.close()
        node.ledger.close()
