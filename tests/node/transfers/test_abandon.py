"""A transfer that fails for good leaves nothing behind: the sender's prepared study whose offer
failed, the recipient's fetched objects when it gives up.

In process: hospital-a's node from a devnet configuration, its transfer service with a real blob
store and data plane (not listening); the network steps are replaced (the recipient's tags and the
mempool for the sender, the manifest and the fetch for the recipient).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mftp.crypto.keyfile import load_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.genesis import Genesis
from mftp.node.clock import SYSTEM_CLOCK
from mftp.node.config import load_config
from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.dataplane.server import DataPlaneServer
from mftp.node.devnet.client import make_study
from mftp.node.devnet.consortium import create_devnet
from mftp.node.errors import NodeError
from mftp.node.pacs import FolderSource
from mftp.node.process import Node
from mftp.node.transfers.preparing import package_study
from mftp.node.transfers.service import TransferService
from mftp.node.transfers.sources import Allowed, parse_source
from mftp.node.transfers.state import IN, OUT, TransferState
from mftp.transfer.capability import issue_capability
from mftp.transfer.deid import Mode, Policy
from mftp.transfer.errors import TransferInputError
from mftp.transfer.manifest import Manifest
from mftp.transfer.package import Packager, storage_key_for
from mftp.transfer.study import ImportReport


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    member = create_devnet(tmp_path / "devnet", validators=2, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(load_config(member.config_path), identity, Genesis.load(member.directory / "genesis.json"))
    yield node
    node.chain.wal.close()
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
        created_ms=SYSTEM_CLOCK.now_ms(),
        data_url=peer.data_url,
        user="user:alice",
    )
    prepared: list[Manifest] = []
    package = service._package

    def package_and_keep(*args: Any) -> Manifest:
        prepared.append(package(*args))
        return prepared[-1]

    with (
        mock.patch.object(
            service.audit, "counterparty_fills", mock.AsyncMock(return_value=(SYSTEM_CLOCK.now_ms(), {}))
        ),
        mock.patch.object(service, "_offer"),  # no network: the offer message is not sent
        mock.patch.object(service, "_package", package_and_keep),
        mock.patch.object(service, "submit", mock.AsyncMock(side_effect=NodeError("the mempool refused"))),
    ):
        await service._prepare_and_offer(state, peer, source, "clean")
    assert state.state == "failed" and "mempool refused" in state.detail
    (manifest,) = prepared
    assert manifest.objects and not any(store.has(o.object_id) for o in manifest.objects)
    assert store.get_record(f"local-{state.transfer_id}") is None
    assert not [f for f in (tmp_path / "blobs" / "blobs").rglob("*") if f.is_file()]  # nor anything else


async def test_a_fetch_given_up_deletes_what_it_fetched(node: Node, tmp_path: Path) -> None:
    """The sender's data cannot be used (here: a chunk that does not decrypt): the transfer fails
    for good, and the objects already fetched (complete or partial) are deleted."""
    store = BlobStore(tmp_path / "blobs")
    service = TransferService(node, store, DataPlaneServer(store, node.identity, port=0), node.audit)
    sender = SigningIdentity.generate()
    transfer_id = secrets.token_bytes(16)
    # What a first round fetched: every object of the study, complete, in our store.
    make_study(tmp_path / "study")
    report = ImportReport()
    files = list(FolderSource(tmp_path / "study").scan(tmp_path, report))
    packager = Packager(
        sender=sender.public,
        recipient=node.identity.public,
        transfer_id=transfer_id,
        created_ms=SYSTEM_CLOCK.now_ms(),
        storage_key=storage_key_for(node.identity),
        sink_factory=store.object_writer,
    )
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    manifest = package_study(files, packager, store, policy, b"s" * 32, lambda n, _: None).manifest
    assert all(store.has(o.object_id) for o in manifest.objects)
    capability = issue_capability(
        sender,
        recipient=node.identity.public.sign_key,
        transfer_id=transfer_id,
        manifest_sha256=manifest.sha256,
        now_ms=SYSTEM_CLOCK.now_ms(),
    )
    state = TransferState(
        transfer_id=transfer_id.hex(),
        direction=IN,
        peer="hospital-b",
        peer_key=sender.public.sign_key.hex(),
        purpose="TREAT",
        mode="pseudonymised",
        state="fetching",
        created_ms=SYSTEM_CLOCK.now_ms(),
        data_url="https://127.0.0.1:1",
        capability=base64.b64encode(capability.token).decode(),
    )
    receiver = service.receiver
    with (
        mock.patch.object(receiver, "_manifest", mock.AsyncMock(return_value=manifest)),
        mock.patch.object(receiver, "_fetch", mock.AsyncMock(side_effect=TransferInputError("a bad chunk"))),
        mock.patch.object(receiver, "_answer"),  # no network: the refusal is not sent
    ):
        await receiver.receive(state)
    assert state.state == "failed" and "cannot be used" in state.detail
    assert not any(store.has(o.object_id) for o in manifest.objects)
