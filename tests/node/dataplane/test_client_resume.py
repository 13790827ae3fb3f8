"""Resuming transfers: dropped connections, a restarted sender, a restarted recipient, bounded memory.

The server counts requests per chunk (``record_requests``), which shows that a
resumed fetch never asks again for a chunk it had verified.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import pytest

from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.dataplane.server import DataPlaneServer, FetchFailed, fetch_transfer
from mftp.node.devnet.throttle import ThrottleProxy
from mftp.transfer.fetchplan import chunk_ref
from tests.node.dataplane.helpers import MIB, all_chunks, check_received, make_transfer, verified_chunks
from tests.transfer.package_helpers import RECIPIENT, SENDER

CHUNK = 256 * 1024


async def test_a_dropped_connection_resumes_without_refetching(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=4, large_bytes=4 * MIB, chunk_bytes=CHUNK)
    total = transfer.manifest.total_ciphertext_bytes
    async with DataPlaneServer(transfer.sender_store, SENDER, record_requests=True) as server:
        server.register_transfer(transfer.manifest)
        async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", server.port, rate_mbit_per_s=0) as proxy:
            proxy.drop_after(total // 3)  # every connection is cut a third of the way in
            result = await fetch_transfer(
                transfer.manifest,
                transfer.receiver_store,
                f"https://127.0.0.1:{proxy.port}",
                RECIPIENT,
                transfer.capability,
                parallel=4,
                retries=3,
                rng=lambda: 0.1,
            )
    assert proxy.drops == 1 and result.retries >= 1
    counts = server.range_requests
    assert set(counts) == all_chunks(transfer.manifest)
    again = [chunk for chunk, count in counts.items() if count > 1]
    # Only the chunks in flight when the link dropped were asked for twice.
    assert 1 <= len(again) <= 4 and max(counts.values()) == 2
    check_received(transfer)


async def test_a_restarted_sender_and_recipient_resume(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=3, large_bytes=4 * MIB, small=20, chunk_bytes=CHUNK)
    total = transfer.manifest.total_ciphertext_bytes
    server = DataPlaneServer(transfer.sender_store, SENDER, record_requests=True)
    await server.start()
    server.register_transfer(transfer.manifest)
    port = server.port
    stopping: list[asyncio.Task[None]] = []

    def stop_sender_midway(done: int, whole: int) -> None:
        if done > whole // 3 and not stopping:
            stopping.append(asyncio.ensure_future(server.stop()))  # the sender goes down

    with pytest.raises(FetchFailed):
        await fetch_transfer(
            transfer.manifest,
            transfer.receiver_store,
            server.url,
            RECIPIENT,
            transfer.capability,
            retries=2,
            timeout_ms=2000,
            rng=lambda: 0.0,
            progress=stop_sender_midway,
        )
    await asyncio.gather(*stopping)
    first = server.range_requests
    have = verified_chunks(BlobStore(tmp_path / "receiver"), transfer.manifest)
    assert total // 3 < len(have) * CHUNK < total

    # Both nodes restart: new store objects from the same directories, same port.
    sender = DataPlaneServer(BlobStore(tmp_path / "sender"), SENDER, port=port, record_requests=True)
    await sender.start()  # no register_transfer: the served index was persisted
    try:
        receiver_store = BlobStore(tmp_path / "receiver")
        result = await fetch_transfer(
            transfer.manifest, receiver_store, sender.url, RECIPIENT, transfer.capability
        )
    finally:
        await sender.stop()
    assert result.resumed_bytes >= len(have) * CHUNK - CHUNK  # the short last chunks count less
    second = sender.range_requests
    assert not set(second) & have, "a verified chunk was fetched again"
    assert set(first) | set(second) == all_chunks(transfer.manifest)
    assert all(count == 1 for count in second.values())
    check_received(transfer)


async def test_a_cancelled_recipient_resumes_from_its_disk(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=2, large_bytes=6 * MIB, chunk_bytes=CHUNK)
    async with DataPlaneServer(transfer.sender_store, SENDER, record_requests=True) as server:
        server.register_transfer(transfer.manifest)
        reached = asyncio.Event()

        def note(done: int, whole: int) -> None:
            if done > whole // 2:
                reached.set()

        task = asyncio.ensure_future(
            fetch_transfer(
                transfer.manifest,
                transfer.receiver_store,
                server.url,
                RECIPIENT,
                transfer.capability,
                progress=note,
            )
        )
        await reached.wait()
        task.cancel()  # as a crash would, mid-write
        with pytest.raises(asyncio.CancelledError):
            await task
        have = verified_chunks(BlobStore(tmp_path / "receiver"), transfer.manifest)
        before = dict(server.range_requests)
        await fetch_transfer(
            transfer.manifest, BlobStore(tmp_path / "receiver"), server.url, RECIPIENT, transfer.capability
        )
    for chunk in have:
        assert server.range_requests[chunk] == before[chunk] == 1
    assert sum(server.range_requests.values()) <= len(all_chunks(transfer.manifest)) + 4
    check_received(transfer)


async def test_memory_stays_bounded(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=8, large_bytes=4 * MIB, small=40, chunk_bytes=1 * MIB)
    total = transfer.manifest.total_ciphertext_bytes
    transfer.files.clear()  # the test's own copy of the study is not the node's memory
    async with DataPlaneServer(transfer.sender_store, SENDER) as server:
        server.register_transfer(transfer.manifest)
        tracemalloc.start()
        try:
            await fetch_transfer(
                transfer.manifest,
                transfer.receiver_store,
                server.url,
                RECIPIENT,
                transfer.capability,
                parallel=4,
            )
            for entry in transfer.manifest.entries:
                pieces = transfer.receiver_store.open_entry(transfer.manifest, entry, identity=RECIPIENT)
                for _ in pieces:
                    pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    print(f"\npeak traced memory {peak / MIB:.1f} MiB for a {total / MIB:.1f} MiB transfer")
    assert peak < total / 3


async def test_an_object_stopped_before_its_final_check_completes_on_resume(tmp_path: Path) -> None:
    """All chunks verified on disk, but the node stopped before checking and moving the object."""
    transfer = make_transfer(tmp_path, large=1, large_bytes=1 * MIB, chunk_bytes=CHUNK)
    (obj,) = transfer.manifest.objects
    blob = transfer.sender_store.path_of(obj.object_id).read_bytes()
    partial = transfer.receiver_store.open_partial(obj)
    for index in range(obj.chunk_count):
        ref = chunk_ref(obj, index)
        partial.write_chunk(ref, blob[ref.start : ref.end])
    partial.close()
    result = await fetch_transfer(
        transfer.manifest,
        BlobStore(tmp_path / "receiver"),
        "https://127.0.0.1:9",  # nothing listens there: no request may be needed
        RECIPIENT,
        transfer.capability,
    )
    assert result.fetched_bytes == 0 and result.resumed_bytes == obj.size
    check_received(transfer)
