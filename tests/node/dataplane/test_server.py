"""The HTTPS data plane (node.dataplane.server): a real transfer on loopback, HTTP semantics, refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.dataplane.server import (
    CapabilityRefused,
    DataPlaneServer,
    FetchFailed,
    RangeNotSatisfiable,
    fetch_manifest,
    fetch_transfer,
    parse_range,
)
from mftp.node.dataplane.tls import KeyPin
from mftp.transfer.capability import STREAMING_MANIFEST, Capability, authorization_header, issue_capability
from mftp.transfer.manifest import ObjectInfo, seal_manifest
from tests.node.dataplane.helpers import MIB, Transfer, check_received, make_transfer, now_ms, verified_chunks
from tests.transfer.package_helpers import RECIPIENT, SENDER


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[tuple[Transfer, DataPlaneServer]]:
    transfer = make_transfer(tmp_path, large=2, large_bytes=600_000, small=3, chunk_bytes=256 * 1024)
    server = DataPlaneServer(transfer.sender_store, SENDER, record_requests=True)
    await server.start()
    server.register_transfer(transfer.manifest)
    yield transfer, server
    await server.stop()


async def _get(
    server: DataPlaneServer,
    cap: Capability,
    obj: ObjectInfo | None,
    *,
    range_header: str | None = "bytes=0-99",
    method: str = "GET",
    authorization: str | None = "proof",
    object_hex: str | None = None,
) -> tuple[int, CIMultiDict[str], bytes]:
    path = f"/v1/objects/{object_hex or (obj.object_id.hex() if obj else '')}"
    headers = {}
    if range_header is not None:
        headers["Range"] = range_header
    if authorization == "proof":
        authorization = authorization_header(
            RECIPIENT, cap, method=method, path=path, range_header=range_header or "", now_ms=now_ms()
        )
    if authorization is not None:
        headers["Authorization"] = authorization
    async with aiohttp.ClientSession() as session:
        pin = KeyPin(SENDER.public.sign_key)
        async with session.request(method, server.url + path, headers=headers, ssl=pin) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_a_48_mb_transfer_end_to_end(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=10, large_bytes=4_500_000, small=100, small_bytes=30_000)
    total = transfer.manifest.total_ciphertext_bytes
    assert 45 * MIB < total < 60 * MIB
    seen: list[tuple[int, int]] = []
    async with DataPlaneServer(transfer.sender_store, SENDER, record_requests=True) as server:
        server.register_transfer(transfer.manifest)
        result = await fetch_transfer(
            transfer.manifest,
            transfer.receiver_store,
            server.url,
            RECIPIENT,
            transfer.capability,
            parallel=4,
            progress=lambda done, whole: seen.append((done, whole)),
        )
    print(f"\ndata plane loopback: {total / 1e6:.1f} MB in {result.seconds:.2f} s = "
          f"{total / 1e6 / result.seconds:.1f} MB/s")  # fmt: skip
    assert result.fetched_bytes == total and result.retries == 0 and result.resumed_bytes == 0
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(count == 1 for count in server.range_requests.values())
    assert server.stats["refused"] == 0
    check_received(transfer)
    # Nothing left over: every object is complete, no partial download or temporary file remains.
    assert not list((tmp_path / "receiver" / "partial").iterdir())
    assert not list((tmp_path / "receiver" / "tmp").iterdir())
    again = await fetch_transfer(
        transfer.manifest, transfer.receiver_store, "https://127.0.0.1:9", RECIPIENT, transfer.capability
    )
    assert again.fetched_bytes == 0 and again.resumed_bytes == total  # nothing to fetch, no connection


async def test_ranges_and_cache_headers(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    obj = transfer.manifest.objects[0]
    blob = transfer.sender_store.path_of(obj.object_id).read_bytes()
    status, headers, body = await _get(server, transfer.capability, obj, range_header="bytes=10-19")
    assert (status, body) == (206, blob[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{obj.size}"
    assert headers["ETag"] == f'"{obj.object_id.hex()}"'
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    status, headers, body = await _get(server, transfer.capability, obj, range_header="bytes=-5")
    assert (status, body) == (206, blob[-5:])
    status, headers, body = await _get(
        server, transfer.capability, obj, range_header=f"bytes={obj.size - 3}-"
    )
    assert (status, body) == (206, blob[-3:])
    status, headers, body = await _get(server, transfer.capability, obj, range_header=None)
    assert (status, body) == (200, blob)
    status, headers, body = await _get(server, transfer.capability, obj, method="HEAD")
    assert (status, body, headers["Content-Length"]) == (206, b"", "100")


@pytest.mark.parametrize("bad", ["bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=99999999-"])
async def test_bad_ranges_are_416(small: tuple[Transfer, DataPlaneServer], bad: str) -> None:
    transfer, server = small
    obj = transfer.manifest.objects[0]
    status, headers, body = await _get(server, transfer.capability, obj, range_header=bad)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{obj.size}"
    assert json.loads(body)["error"] == "bad-range"


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-99", 100) == (0, 100)
    assert parse_range("bytes=0-1000", 100) == (0, 100)  # clipped, as RFC 9110 says
    assert parse_range("bytes=-1000", 100) == (0, 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-", 100)


async def test_refusals_are_json_and_counted(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    obj = transfer.manifest.objects[0]
    status, _, body = await _get(server, transfer.capability, obj, authorization=None)
    assert (status, json.loads(body)["error"]) == (401, "missing")
    expired = issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=transfer.manifest.transfer_id,
        manifest_sha256=transfer.manifest.sha256,
        now_ms=now_ms() - 10_000,
        ttl_ms=1000,
    )
    status, _, body = await _get(server, expired, obj)
    assert (status, json.loads(body)["error"]) == (403, "expired")
    other = issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=bytes(16),
        manifest_sha256=bytes(32),
        now_ms=now_ms(),
    )
    status, _, body = await _get(server, other, obj)
    assert (status, json.loads(body)["error"]) == (403, "unknown-transfer")
    status, _, body = await _get(server, transfer.capability, None, object_hex="ab" * 32)
    assert (status, json.loads(body)["error"]) == (403, "not-covered")
    status, _, body = await _get(server, transfer.capability, None, object_hex="XY")
    assert (status, json.loads(body)["error"]) == (400, "bad-object-id")
    assert server.stats["refused"] == 4
    assert server.stats["refused_expired"] == 1


async def test_oversized_headers_are_refused(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    obj = transfer.manifest.objects[0]
    status, _, _ = await _get(server, transfer.capability, obj, authorization="MFTP-Cap " + "A" * 10_000)
    assert status in (400, 431)


async def test_health(small: tuple[Transfer, DataPlaneServer]) -> None:
    _, server = small
    pin = KeyPin(SENDER.public.sign_key)
    async with aiohttp.ClientSession() as session, session.get(server.url + "/v1/health", ssl=pin) as resp:
        assert await resp.json() == {"ok": True}


async def test_a_tampered_chunk_is_never_written(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    obj = transfer.manifest.objects[0]
    path = transfer.sender_store.path_of(obj.object_id)
    blob = bytearray(path.read_bytes())
    start = obj.chunk_bytes  # chunk 1 of the first object goes bad on the sender's disk
    blob[start + 100 : start + 104] = b"EVIL"
    path.write_bytes(bytes(blob))
    with pytest.raises(FetchFailed, match=r"chunk 1.*hash mismatch"):
        await fetch_transfer(
            transfer.manifest,
            transfer.receiver_store,
            server.url,
            RECIPIENT,
            transfer.capability,
            parallel=1,
            retries=2,
            rng=lambda: 0.0,
        )
    assert server.range_requests[(obj.object_id, start)] == 3  # first try and two retries
    receiver = transfer.receiver_store
    assert not receiver.has(obj.object_id)
    assert (obj.object_id, start) not in verified_chunks(receiver, transfer.manifest)
    partial_file = receiver.root / "partial" / obj.object_id.hex()
    assert b"EVIL" not in partial_file.read_bytes()


async def test_a_refused_capability_is_not_retried(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    with pytest.raises(CapabilityRefused) as info:
        await fetch_transfer(
            transfer.manifest,
            transfer.receiver_store,
            server.url,
            RECIPIENT,
            transfer.capability,
            parallel=1,
            clock_ms=lambda: now_ms() + 10 * 60_000,  # our clock is 10 minutes off
        )
    assert info.value.reason == "stale"
    assert server.stats["requests"] == 1


async def test_fetch_checks_its_arguments(small: tuple[Transfer, DataPlaneServer]) -> None:
    transfer, server = small
    other: Any = issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=bytes(16),
        manifest_sha256=bytes(32),
        now_ms=0,
    )
    with pytest.raises(ValueError, match="another manifest"):
        await fetch_transfer(transfer.manifest, transfer.receiver_store, server.url, RECIPIENT, other)
    with pytest.raises(ValueError, match="this node"):
        await fetch_transfer(
            transfer.manifest, transfer.receiver_store, server.url, SENDER, transfer.capability
        )


async def test_the_manifest_can_be_fetched_from_the_data_plane(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=1, large_bytes=300_000, small=5, chunk_bytes=64 * 1024)
    sealed = seal_manifest(transfer.manifest, SENDER)
    async with DataPlaneServer(transfer.sender_store, SENDER) as server:
        with pytest.raises(ValueError, match="not a sealed manifest"):
            server.register_transfer(transfer.manifest, sealed[:10])
        with pytest.raises(ValueError, match="not this manifest"):
            wrong = make_transfer(tmp_path / "other", large=1, large_bytes=1000)
            server.register_transfer(transfer.manifest, seal_manifest(wrong.manifest, SENDER))
        server.register_transfer(transfer.manifest, sealed)
        manifest, got = await fetch_manifest(server.url, RECIPIENT, transfer.capability, sender=SENDER.public)
        assert manifest == transfer.manifest and got == sealed
        other = issue_capability(
            SENDER,
            recipient=RECIPIENT.public.sign_key,
            transfer_id=transfer.manifest.transfer_id,
            manifest_sha256=b"\x01" * 32,  # names another manifest of the same transfer
            now_ms=now_ms(),
        )
        with pytest.raises(CapabilityRefused, match="unknown-transfer"):
            await fetch_manifest(server.url, RECIPIENT, other, sender=SENDER.public)
    # A restarted sender still serves it (the sealed manifest is a record in its store).
    async with DataPlaneServer(BlobStore(tmp_path / "sender"), SENDER) as server:
        manifest, _ = await fetch_manifest(server.url, RECIPIENT, transfer.capability, sender=SENDER.public)
        assert manifest == transfer.manifest
        await fetch_transfer(manifest, transfer.receiver_store, server.url, RECIPIENT, transfer.capability)
    check_received(transfer)


async def test_a_streaming_capability_follows_the_served_manifest_until_abandoned(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=2, large_bytes=300_000, small=2, chunk_bytes=64 * 1024)
    streaming = issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=transfer.manifest.transfer_id,
        manifest_sha256=STREAMING_MANIFEST,
        now_ms=now_ms(),
    )
    async with DataPlaneServer(transfer.sender_store, SENDER) as server:
        with pytest.raises(CapabilityRefused, match="unknown-transfer"):  # nothing served yet
            await fetch_manifest(server.url, RECIPIENT, streaming, sender=SENDER.public)
        server.register_transfer(transfer.manifest, seal_manifest(transfer.manifest, SENDER))
        manifest, _ = await fetch_manifest(server.url, RECIPIENT, streaming, sender=SENDER.public)
        assert manifest == transfer.manifest
        await fetch_transfer(manifest, transfer.receiver_store, server.url, RECIPIENT, streaming)
        check_received(transfer)
        server.abandon_transfer(transfer.manifest.transfer_id)
        for cap in (streaming, transfer.capability):
            with pytest.raises(CapabilityRefused, match="abandoned") as info:
                await fetch_manifest(server.url, RECIPIENT, cap, sender=SENDER.public)
            assert info.value.status == 410
        status, _, _ = await _get(server, streaming, transfer.manifest.objects[0])
        assert status == 410


async def test_a_lookup_keeps_a_transfer_registered_while_it_read_the_disk(tmp_path: Path) -> None:
    """A fetch that finds nothing on disk must not cache "unknown" over a registration made meanwhile.

    The sender registers each growing manifest of a streaming send from a worker thread while the
    handlers look transfers up; a stale "not served" answer, cached last, refused every later
    fetch of that transfer with 403 unknown-transfer (seen as 1 send in 4 over a slow link).
    """
    transfer = make_transfer(tmp_path, large=1, large_bytes=300_000, small=1, chunk_bytes=256 * 1024)
    server = DataPlaneServer(transfer.sender_store, SENDER)
    store = transfer.sender_store
    reading = store.load_served

    def slow_read(transfer_id: bytes) -> Any:
        found = reading(transfer_id)  # nothing yet...
        server.register_transfer(transfer.manifest)  # ...and the sender registers it now
        return found

    store.load_served = slow_read  # type: ignore[method-assign]
    served = await server._lookup(transfer.manifest.transfer_id)
    assert served is not None and served[0] == transfer.manifest.sha256
    store.load_served = reading  # type: ignore[method-assign]
    assert await server._lookup(transfer.manifest.transfer_id) == served


def test_a_streaming_manifest_is_published_after_its_objects_are_servable(tmp_path: Path) -> None:
    """A recipient that reads the sealed manifest finds every object it names already servable."""
    transfer = make_transfer(tmp_path, large=1, large_bytes=300_000, small=1, chunk_bytes=256 * 1024)
    server = DataPlaneServer(transfer.sender_store, SENDER)
    order: list[str] = []
    store = transfer.sender_store
    put, save = store.put_record, store.save_served
    store.put_record = lambda key, value: (order.append(key.split("-")[0]), put(key, value))[1]  # type: ignore[method-assign]
    store.save_served = lambda manifest: (order.append("served"), save(manifest))[1]  # type: ignore[method-assign]
    server.register_transfer(transfer.manifest, seal_manifest(transfer.manifest, SENDER))
    assert order.index("served") < max(i for i, k in enumerate(order) if k != "served")
