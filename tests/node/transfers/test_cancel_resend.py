"""Cancel and resend (the console's buttons): the lifecycle's new move, what each side is told,
what is deleted, and every way a cancel or a resend must be refused.

In process, like test_abandon: hospital-a's node from a devnet configuration, its transfer service
with a real blob store and data plane (not listening); the network steps are replaced.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
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
from mftp.node.errors import NodeUsageError, StorageDamaged
from mftp.node.pacs import FolderSource
from mftp.node.process import Node
from mftp.node.transfers.cancelling import open_source, seal_source
from mftp.node.transfers.messages import NO_RECORD, receipt_value
from mftp.node.transfers.preparing import package_study
from mftp.node.transfers.service import TransferService
from mftp.node.transfers.sources import Allowed
from mftp.node.transfers.state import IN, OUT, TRANSFER_LIFECYCLE, Phase, TransferState
from mftp.transfer.capability import issue_capability
from mftp.transfer.deid import Mode, Policy
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


@pytest.fixture
def service(node: Node, tmp_path: Path) -> TransferService:
    store = BlobStore(tmp_path / "blobs")
    made = TransferService(node, store, DataPlaneServer(store, node.identity, port=0), node.audit)
    made.allowed = Allowed((tmp_path.resolve(),), (), ())
    return made


def _sent(
    service: TransferService, state: str, source: str = "", mode: str = "pseudonymised"
) -> TransferState:
    peer = service.host.config.peers[0]
    made = TransferState(
        transfer_id=secrets.token_hex(16),
        direction=OUT,
        peer=peer.name,
        peer_key=peer.sign_key.hex(),
        purpose="TREAT",
        mode=mode,
        state=Phase(state),
        created_ms=SYSTEM_CLOCK.now_ms(),
        user="user:alice",
        source_sealed=seal_source(service.host.identity.public, source) if source else "",
    )
    service.states.save(made)
    return made


def _received(service: TransferService, state: str, sender: SigningIdentity) -> TransferState:
    made = TransferState(
        transfer_id=secrets.token_hex(16),
        direction=IN,
        peer="hospital-b",
        peer_key=sender.public.sign_key.hex(),
        purpose="TREAT",
        mode="pseudonymised",
        state=Phase(state),
        created_ms=SYSTEM_CLOCK.now_ms(),
    )
    service.states.save(made)
    return made


def test_the_lifecycle_allows_cancel_only_before_the_end() -> None:
    for phase in (Phase.PREPARING, Phase.OFFERED, Phase.ACCEPTED, Phase.FETCHING):
        assert TRANSFER_LIFECYCLE.allows(phase, Phase.CANCELLED)
    for phase in (Phase.DELIVERED, Phase.REFUSED, Phase.VERIFYING, Phase.COMPLETE, Phase.FAILED):
        assert not TRANSFER_LIFECYCLE.allows(phase, Phase.CANCELLED)
    assert TRANSFER_LIFECYCLE.final(Phase.CANCELLED)


@pytest.mark.parametrize("phase", ["delivered", "refused", "failed", "cancelled"])
def test_a_sent_transfer_that_ended_is_not_cancelled(service: TransferService, phase: str) -> None:
    state = _sent(service, phase)
    with pytest.raises(NodeUsageError, match=f"is {phase}: only a transfer not yet delivered"):
        service.cancel(state.transfer_id)
    assert service.states.get(state.transfer_id).state == phase  # type: ignore[union-attr]


@pytest.mark.parametrize("phase", ["verifying", "complete", "failed", "cancelled"])
def test_a_received_transfer_not_fetching_is_not_cancelled(service: TransferService, phase: str) -> None:
    state = _received(service, phase, SigningIdentity.generate())
    with pytest.raises(NodeUsageError, match="only a transfer still fetching"):
        service.cancel(state.transfer_id)


def test_unknown_and_malformed_ids_are_refused(service: TransferService) -> None:
    with pytest.raises(NodeUsageError, match="no such transfer"):
        service.cancel(secrets.token_hex(16))
    for bad in ("../../etc", "A" * 32, "", "0" * 31, "0" * 33):
        with pytest.raises(NodeUsageError, match="32 lowercase hex"):
            service.cancel(bad)


async def test_cancelling_a_sent_transfer_stops_serving_it_and_deletes_its_objects(
    service: TransferService, tmp_path: Path
) -> None:
    state = _sent(service, "accepted")
    store = service.store
    writer = store.object_writer()
    writer.write(b"ciphertext")
    object_id = hashlib.sha256(b"ciphertext").digest()
    writer.commit(object_id)
    assert store.has(object_id)
    served = mock.Mock(return_value=(b"m" * 32, frozenset({object_id})))
    with mock.patch.object(store, "load_served", served):
        view = service.cancel(state.transfer_id)
    assert view["state"] == "cancelled" and "can no longer fetch" in view["detail"]
    assert "source_sealed" not in view and "capability" not in view
    assert not store.has(object_id)
    assert service.server._gone(bytes.fromhex(state.transfer_id)) is not None  # 410 to the recipient
    on_disk = json.loads((service.states.directory / f"{state.transfer_id}.json").read_text())
    assert on_disk["state"] == "cancelled"  # a restart does not offer it again
    # The recipient's late receipts: a refusal changes nothing; "complete" is noted, state stays.
    service.on_receipt(
        bytes.fromhex(state.peer_key), receipt_value(bytes.fromhex(state.transfer_id), "refused")
    )
    assert state.state == "cancelled"
    record = secrets.token_bytes(16)
    service.on_receipt(
        bytes.fromhex(state.peer_key), receipt_value(bytes.fromhex(state.transfer_id), "complete", record)
    )
    assert state.state == "cancelled" and state.received_record == record.hex()
    assert "had already received" in state.detail


async def test_cancelling_while_preparing_stops_the_work(service: TransferService) -> None:
    state = _sent(service, "preparing")
    started = asyncio.Event()

    async def preparing_forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    service.spawn(state.transfer_id, preparing_forever())
    await started.wait()
    task = service._tasks[state.transfer_id]
    service.cancel(state.transfer_id)
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and state.state == "cancelled" and "nothing was sent" in state.detail


async def test_cancelling_a_fetch_deletes_what_was_fetched_and_tells_the_sender(
    service: TransferService, tmp_path: Path
) -> None:
    node = service.host
    store = service.store
    sender = SigningIdentity.generate()
    transfer_id = secrets.token_bytes(16)
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
    manifest = package_study(
        files, packager, store, Policy.for_mode(Mode.PSEUDONYMISED), b"s" * 32, lambda n, _: None
    ).manifest
    capability = issue_capability(
        sender, recipient=node.identity.public.sign_key, transfer_id=transfer_id,
        manifest_sha256=manifest.sha256, now_ms=SYSTEM_CLOCK.now_ms(),
    )  # fmt: skip
    state = _received(service, "fetching", sender)
    state.transfer_id = transfer_id.hex()
    state.capability = base64.b64encode(capability.token).decode()
    service.states.save(state)
    fetching = asyncio.Event()

    async def slow_fetch(*args: Any) -> None:
        fetching.set()
        await asyncio.sleep(3600)

    receiver = service.receiver
    sent: list[tuple[bytes, str, Any]] = []
    with (
        mock.patch.object(receiver, "_manifest", mock.AsyncMock(return_value=manifest)),
        mock.patch.object(receiver, "_fetch", slow_fetch),
        mock.patch.object(node, "send_peer", lambda key, channel, value: sent.append((key, channel, value))),
    ):
        service.spawn(state.transfer_id, receiver.receive(state))
        await fetching.wait()
        task = service._tasks[state.transfer_id]
        view = service.cancel(state.transfer_id)
        await asyncio.gather(task, return_exceptions=True)
    assert view["state"] == "cancelled" and "sender was told" in view["detail"]
    assert not any(store.has(o.object_id) for o in manifest.objects)
    ((key, channel, value),) = sent
    assert key == sender.public.sign_key and channel == "t.receipt"
    assert value["state"] == "refused" and value["record"] == NO_RECORD
    # The sender's re-offer is answered the same way, never with "accepted".
    assert receiver._answer is not None
    with mock.patch.object(node, "send_peer", lambda key, channel, value: sent.append((key, channel, value))):
        receiver.answer(state)
    assert sent[-1][2]["state"] == "refused"


def test_a_sent_transfer_refused_without_a_receipt_says_so(service: TransferService) -> None:
    state = _sent(service, "accepted")
    service.on_receipt(
        bytes.fromhex(state.peer_key), receipt_value(bytes.fromhex(state.transfer_id), "refused")
    )
    assert state.state == "refused" and "refused or cancelled" in state.detail


def test_the_source_is_kept_sealed_not_in_clear(service: TransferService, tmp_path: Path) -> None:
    folder = tmp_path / "Nordmann^Kari 1957"  # folder names may well name the patient
    state = _sent(service, "delivered", str(folder))
    text = (service.states.directory / f"{state.transfer_id}.json").read_text()
    assert "Nordmann" not in text and "Kari" not in text
    assert open_source(service.host.identity, state.source_sealed) == str(folder)
    with pytest.raises(StorageDamaged):  # another node's key does not open it
        open_source(SigningIdentity.generate(), state.source_sealed)
    tampered = base64.b64decode(state.source_sealed)
    tampered = base64.b64encode(tampered[:-1] + bytes([tampered[-1] ^ 1])).decode()
    with pytest.raises(StorageDamaged):
        open_source(service.host.identity, tampered)
    with pytest.raises(StorageDamaged):
        open_source(service.host.identity, "not base64!")


async def test_resend_sends_the_same_source_to_the_same_recipient(
    service: TransferService, tmp_path: Path
) -> None:
    make_study(tmp_path / "study")
    state = _sent(service, "delivered", str(tmp_path / "study"), mode="deidentified")
    send = mock.AsyncMock(return_value="ab" * 16)
    with mock.patch.object(service, "send", send):
        new_id = await service.resend(state.transfer_id, "user:bob")
    assert new_id == "ab" * 16
    send.assert_awaited_once_with(
        str(tmp_path / "study"), state.peer, "TREAT", "deidentified", "user:bob", ""
    )


async def test_resend_is_refused_with_reasons(service: TransferService, tmp_path: Path) -> None:
    make_study(tmp_path / "study")
    send = mock.AsyncMock(return_value="cd" * 16)
    with mock.patch.object(service, "send", send):
        for phase in ("preparing", "offered", "accepted"):
            active = _sent(service, phase, str(tmp_path / "study"))
            with pytest.raises(NodeUsageError, match=f"still {phase}: cancel it first"):
                await service.resend(active.transfer_id, "user:bob")
        received = _received(service, "complete", SigningIdentity.generate())
        with pytest.raises(NodeUsageError, match="only a study this node sent"):
            await service.resend(received.transfer_id, "user:bob")
        old = _sent(service, "failed")  # from before sources were kept
        with pytest.raises(NodeUsageError, match="before its source was kept"):
            await service.resend(old.transfer_id, "user:bob")
        with pytest.raises(NodeUsageError, match="no such transfer"):
            await service.resend(secrets.token_hex(16), "user:bob")
        gone = _sent(service, "delivered", str(tmp_path / "study"))
        shutil.rmtree(tmp_path / "study")
        with pytest.raises(NodeUsageError, match="source of this transfer is gone"):
            await service.resend(gone.transfer_id, "user:bob")
        outside = _sent(service, "delivered", "/etc")  # a source no longer (or never) allowed
        with pytest.raises(NodeUsageError, match="gone or no longer allowed"):
            await service.resend(outside.transfer_id, "user:bob")
    send.assert_not_awaited()


async def test_resend_of_a_study_the_pacs_no_longer_holds_is_refused(service: TransferService) -> None:
    service.allowed = Allowed((), (), ("http://pacs.example:8042/dicom-web",))
    state = _sent(service, "delivered", "dicomweb:http://pacs.example:8042/dicom-web#1.2.3.4")
    with (
        mock.patch(
            "mftp.node.transfers.cancelling.DicomWebSource.find_studies", mock.AsyncMock(return_value=[])
        ),
        mock.patch.object(service, "send", mock.AsyncMock()) as send,
        pytest.raises(NodeUsageError, match="the PACS no longer holds the study"),
    ):
        await service.resend(state.transfer_id, "user:bob")
    send.assert_not_awaited()
