"""A study prepared whose offer then fails leaves nothing behind on the sender's disk.

In process: hospital-a's node from a devnet configuration, its transfer service with a real blob
store and data plane (not listening), the recipient's tags and the mempool replaced.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mftp.crypto.keyfile import load_identity
from mftp.ledger.genesis import Genesis
from mftp.node.blobstore import BlobStore
from mftp.node.config import load_config
from mftp.node.dataplane import DataPlaneServer
from mftp.node.devnet import create_devnet
from mftp.node.errors import NodeError
from mftp.node.runtime import Node
from mftp.node.transfer_io import Allowed, parse_source
from mftp.node.transfer_state import OUT, TransferState
from mftp.node.transfers import TransferService, now_ms
from mftp.transfer.manifest import Manifest
from tests.node.devnet_helpers import make_study


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    member = create_devnet(tmp_path / "devnet", validators=2, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(load_config(member.config_path), identity, Genesis.load(member.directory / "genesis.json"))
    yield node
    node.wal.close()
    node.ledger.close()


async def test_a_prepared_study_whose_offer_fails_is_deleted(node: Node, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    service = TransferService(node, store, DataPlaneServer(store, node.identity, port=0), node.audit)
    peer = node.config.peers[0]
    make_study(tmp_path / "study")
    source = parse_source(str(tmp_path / "study"), Allowed((tmp_path.resolve(),), (), ()))
    state = TransferState(
        transfer_id=secrets.token_hex(16),
        direction=OUT,
        peer=peer.name,
        peer_key=peer.sign_key.hex(),
        purpose="TREAT",
        mode="pseudonymised",
        state="preparing",
        created_ms=now_ms(),
        data_url=peer.data_url,
        user="user:alice",
    )
    prepared: list[Manifest] = []
    package = service._package

    def package_and_keep(*args: Any) -> Manifest:
        prepared.append(package(*args))
        return prepared[-1]

    with (
        mock.patch.object(service.audit, "counterparty_fills", mock.AsyncMock(return_value=(now_ms(), {}))),
        mock.patch.object(service, "_offer"),  # no network: the offer message is not sent
        mock.patch.object(service, "_package", package_and_keep),
        mock.patch.object(service, "submit", mock.AsyncMock(side_effect=NodeError("the mempool refused"))),
    ):
        await service._prepare_and_offer(state, peer, source)
    assert state.state == "failed" and "mempool refused" in state.detail
    (manifest,) = prepared
    assert manifest.objects and not any(store.has(o.object_id) for o in manifest.objects)
    assert store.get_record(f"local-{state.transfer_id}") is None
    assert not [f for f in (tmp_path / "blobs" / "blobs").rglob("*") if f.is_file()]  # nor anything else
