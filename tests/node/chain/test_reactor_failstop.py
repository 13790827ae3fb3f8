"""A validator that cannot store what it decided stops, instead of voting on without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from mftp.consensus.events import Commit
from mftp.crypto.keyfile import load_identity
from mftp.ledger.errors import StoreError
from mftp.ledger.genesis import Genesis
from mftp.ledger.sample import ChainBuilder
from mftp.node.chain.reactor import ChainReactor
from mftp.node.config import load_config
from mftp.node.devnet.consortium import create_devnet
from mftp.node.process import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ChainReactor]:
    member = create_devnet(tmp_path / "devnet", validators=1, audit=0)[0]
    config = load_config(member.config_path)
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(config, identity, Genesis.load(member.directory / "genesis.json")).chain
    node.replica = mock.Mock()
    node.replica.core.round, node.replica.core.mempool, node.replica.core.counters = 0, [], {}
    yield node
    node.wal.close()
    node.ledger.close()


def _commits(node: ChainReactor, count: int) -> list[Commit]:
    builder = ChainBuilder(node.ledger.genesis, [node.identity])
    out = []
    for _ in range(count):
        block, cert = builder.next_block([])
        out.append(Commit(block, cert, builder.state))
    return out


def test_a_gap_in_the_store_stops_the_node(node: ChainReactor) -> None:
    replica = node.replica
    first, second = _commits(node, 2)
    node._carry_out([second])  # block 2 while the store ends at 0
    assert node.failed.is_set() and node.replica is None
    replica.committed.assert_not_called()  # type: ignore[union-attr]
    assert node.ledger.height == 0
    del first


def test_a_store_error_stops_the_node_and_keeps_the_wal(node: ChainReactor) -> None:
    replica = node.replica
    (commit,) = _commits(node, 1)
    with mock.patch.object(node.ledger, "append", side_effect=StoreError("disk full")):
        node._carry_out([commit])
    assert node.failed.is_set() and isinstance(node.failure, StoreError)
    replica.committed.assert_not_called()  # type: ignore[union-attr]


def test_a_block_stored_before_a_crash_is_skipped(node: ChainReactor) -> None:
    (commit,) = _commits(node, 1)
    node._carry_out([commit])
    assert node.ledger.height == 1 and not node.failed.is_set()
    node._carry_out([commit])  # decided again by the WAL replay
    assert node.ledger.height == 1 and not node.failed.is_set()
