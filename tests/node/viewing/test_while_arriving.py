"""Viewing while the study travels (issue 17, point 3), and the index stored encrypted.

The receiver tells the catalog of each batch of files it verified from a partial manifest; the
study opens as soon as the first batch is indexed, series and instances that arrive later show
on the next query, and once the transfer is complete the index is sealed into the blob store (no
patient name in clear) and a restarted node answers from it without restoring any file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.node.devnet.studies import make_ct_series
from mftp.node.transfers.preparing import PreparePool
from mftp.node.transfers.state import IN, Phase, TransferState
from mftp.node.viewing.catalog import Catalog, Scope
from mftp.transfer.codec import compress
from mftp.transfer.manifest import EntryMeta, open_manifest, seal_manifest
from mftp.transfer.package import Packager, storage_key_for
from tests.node.viewing.helpers import Node, viewing_app

pytestmark = pytest.mark.timeout(120)
USER = {"X-Test-User": "dr.b"}


@pytest.fixture(scope="module")
def workers() -> Iterator[PreparePool]:
    """The node's worker processes, as a running node has them."""
    pool = PreparePool(2)
    yield pool
    pool.shutdown()


@pytest.mark.parametrize("in_workers", [False, True], ids=["threads", "worker-processes"])
async def test_a_study_opens_before_it_has_arrived_and_grows(
    tmp_path: Path, in_workers: bool, workers: PreparePool
) -> None:
    node = Node(tmp_path)
    if in_workers:
        node.catalog.workers = workers
    study = pydicom.uid.generate_uid()
    first = make_ct_series(tmp_path / "s1", 6, study_uid=study)
    second = make_ct_series(tmp_path / "s2", 4, study_uid=study)
    tid = os.urandom(16)
    packager = Packager(
        sender=node.peer.public, recipient=node.identity.public, transfer_id=tid, created_ms=1,
        storage_key=storage_key_for(node.peer), sink_factory=node.store.object_writer,
        bucket_target_bytes=1 << 16, large_object_bytes=1 << 16,
    )  # fmt: skip
    state = TransferState(
        transfer_id=tid.hex(), direction=IN, peer="hospital-a", peer_key=node.peer.public.sign_key.hex(),
        purpose="TREAT", mode="identified", state=Phase.FETCHING, created_ms=1, to_user="user:dr.b",
    )  # fmt: skip
    node.states.save(state)

    def add(paths: list[Path]) -> None:
        for path in paths:
            data = path.read_bytes()
            name = f"{path.parent.name}/{path.name}"
            meta = EntryMeta(name, "instance", len(data), hashlib.sha256(data).digest(), "mftp-dcm")
            packager.add(meta, compress(data, name=name))

    async with TestClient(TestServer(viewing_app(node))) as client:
        # Nothing verified yet: the study does not exist for the viewer.
        assert await (await client.get("/dicom-web/studies", headers=USER)).json() == []
        add(first)
        partial = packager.snapshot()
        assert partial is not None and partial.partial and partial.entries
        node.catalog.on_verified(state, partial, partial.entries)
        await node.catalog.settle(state.transfer_id)
        # Described in the worker processes, only descriptions came back: nothing restored here yet.
        assert (node.catalog.cache.size == 0) is in_workers
        studies = await (await client.get("/dicom-web/studies", headers=USER)).json()
        assert studies[0]["0020000D"]["Value"] == [study]
        shown = studies[0]["00201208"]["Value"][0]
        assert 0 < shown <= 6
        # The first images open while the rest still travels: metadata and a frame.
        series = await (await client.get(f"/dicom-web/studies/{study}/series", headers=USER)).json()
        se = series[0]["0020000E"]["Value"][0]
        metadata = await (
            await client.get(f"/dicom-web/studies/{study}/series/{se}/metadata", headers=USER)
        ).json()
        sop = metadata[0]["00080018"]["Value"][0]
        accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
        frame = await client.get(
            f"/dicom-web/studies/{study}/series/{se}/instances/{sop}/frames/1", headers={**USER, **accept}
        )
        assert frame.status == 200
        assert node.records == [(state.transfer_id, "user:dr.b", "view")]  # recorded while arriving
        # The rest arrives; the final manifest is verified; the next query shows everything.
        add(second)
        final = packager.finish().manifest
        node.store.put_record(f"offer-{state.transfer_id}", seal_manifest(final, node.peer))
        state.move(Phase.VERIFYING)
        state.move(Phase.COMPLETE)
        node.states.save(state)
        node.catalog.on_verified(state, final, final.entries)
        await node.catalog.settle(state.transfer_id)
        studies = await (await client.get("/dicom-web/studies", headers=USER)).json()
        assert studies[0]["00201208"]["Value"] == [10]
        assert studies[0]["00201206"]["Value"] == [2]
    # Sealed into the blob store, no patient data in clear; a fresh catalog reads it back.
    for _ in range(100):
        if node.store.get_record(f"viewing-{state.transfer_id}") is not None:
            break
        await node.catalog.settle(state.transfer_id)
        await asyncio.sleep(0.05)
    sealed = node.store.get_record(f"viewing-{state.transfer_id}")
    assert sealed is not None
    assert b"Nordmann" not in sealed and study.encode() not in sealed
    fresh = Catalog(
        store=node.store, states=node.states, identity=node.identity, record_access=node.record_access
    )
    index = (await fresh.indexes(Scope.clinician("user:dr.b")))[0]
    assert len(index.instances) == 10 and index.complete
    assert fresh.cache.size == 0  # answered from the stored index: no file was restored


class _BrokenPool(ProcessPoolExecutor):
    """A pool whose worker died: every submit raises, as a real one's does."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise BrokenProcessPool("a worker died")


class _Workers:
    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = _BrokenPool(1)
        self.discarded: list[ProcessPoolExecutor] = []

    def executor(self) -> ProcessPoolExecutor | None:
        return self.pool

    def discard(self, broken: ProcessPoolExecutor) -> None:
        self.discarded.append(broken)
        self.pool = None


async def test_a_dead_worker_pool_falls_back_to_a_thread(tmp_path: Path) -> None:
    node = Node(tmp_path)
    dead = _Workers()
    node.catalog.workers = dead
    originals = [p.read_bytes() for p in make_ct_series(tmp_path / "s", 3)]
    tid = node.receive({f"{i:05d}.dcm": data for i, data in enumerate(originals)}, to_user="user:dr.b")
    index = (await node.catalog.indexes(Scope.clinician("user:dr.b")))[0]
    assert index.transfer_id == tid and len(index.instances) == 3
    assert len(dead.discarded) == 1 and dead.pool is None  # the next call starts fresh workers


def test_sealed_index_refuses_another_transfer_id(tmp_path: Path) -> None:
    from mftp.node.errors import StorageDamaged
    from mftp.node.viewing.index import TransferIndex, describe, index_key, open_index, seal_index

    data = make_ct_series(tmp_path / "one", 1)[0].read_bytes()
    info = describe("a.dcm", data)
    assert info is not None
    index = TransferIndex("00" * 16, complete=True)
    index.add([info])
    key = index_key(os.urandom(32))
    sealed = seal_index(index, key)
    assert open_index(sealed, key, "00" * 16).instances.keys() == index.instances.keys()
    with pytest.raises(StorageDamaged):
        open_index(sealed, key, "11" * 16)  # bound to its transfer: not swappable on disk
    with pytest.raises(StorageDamaged):
        open_index(sealed[:-5] + b"xxxxx", key, "00" * 16)
    assert describe("junk", b"not dicom at all") is None
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == info.sop


async def test_a_complete_transfer_is_answered_whole_while_its_last_batch_is_described(
    tmp_path: Path,
) -> None:
    # The receiver marks the transfer complete and hands over its last batch in one step; a
    # query right after must wait for that batch, not answer with what was indexed before it.
    node = Node(tmp_path)
    originals = [p.read_bytes() for p in make_ct_series(tmp_path / "s", 4)]
    tid = node.receive({f"{i:05d}.dcm": data for i, data in enumerate(originals)}, to_user="user:dr.b")
    state = node.states.get(tid)
    assert state is not None and state.state == Phase.COMPLETE
    sealed = node.store.get_record(f"offer-{tid}")
    assert sealed is not None
    manifest = open_manifest(sealed, node.identity, sender=node.peer.public)
    node.catalog.on_verified(state, manifest, manifest.entries)
    await asyncio.sleep(0)  # the batch has begun (its index exists, still empty)
    index = (await node.catalog.indexes(Scope.clinician("user:dr.b")))[0]
    assert len(index.instances) == 4
