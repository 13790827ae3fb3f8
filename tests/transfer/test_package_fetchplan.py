"""The fetch plan (mftp.transfer.fetchplan): claiming, verifying, resuming, backing off."""

from __future__ import annotations

import random

import pytest

from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.fetchplan import (
    FetchPlan,
    ObjectProgress,
    backoff_ms,
    chunk_ref,
    verify_chunk,
)
from mftp.transfer.manifest import Manifest
from tests.transfer.package_helpers import MemoryStore, make_files, package_files

KIB = 1024


@pytest.fixture(scope="module")
def packaged() -> tuple[Manifest, MemoryStore]:
    # Two large objects of 5 and 3 chunks, one bucket of 1 chunk (chunk = 16 KiB).
    files = make_files([70 * KIB, 40 * KIB, 1000, 2000])
    result, store = package_files(
        files,
        chunk_bytes=16 * KIB,
        aead_chunk_bytes=4096,
        bucket_target_bytes=64 * KIB,
        large_object_bytes=32 * KIB,
    )
    return result.manifest, store


def test_chunks_cover_each_object_exactly(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, store = packaged
    for obj in manifest.objects:
        blob = store.blobs[obj.object_id]
        refs = [chunk_ref(obj, i) for i in range(obj.chunk_count)]
        assert b"".join(blob[r.start : r.end] for r in refs) == blob
        for ref in refs:
            verify_chunk(obj, ref, blob[ref.start : ref.end])
        assert refs[0].range_header == f"bytes=0-{min(obj.size, 16 * KIB) - 1}"
    assert [o.chunk_count for o in manifest.objects] == [5, 3, 1]


def test_wrong_or_short_chunks_are_refused(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, store = packaged
    obj = manifest.objects[0]
    ref = chunk_ref(obj, 1)
    good = store.blobs[obj.object_id][ref.start : ref.end]
    with pytest.raises(TransferInputError, match="hash mismatch"):
        verify_chunk(obj, ref, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(TransferInputError, match="expected"):
        verify_chunk(obj, ref, good[:-1])
    with pytest.raises(TransferInputError, match="hash mismatch"):  # another chunk of the same size
        other = chunk_ref(obj, 2)
        verify_chunk(obj, ref, store.blobs[obj.object_id][other.start : other.end])


def test_claims_are_bounded_and_never_repeated(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, _ = packaged
    plan = FetchPlan(manifest)
    first = plan.claim(4)
    assert [(r.object_id, r.index) for r in first] == [(manifest.objects[0].object_id, i) for i in range(4)]
    second = plan.claim(4)
    assert [r.index for r in second] == [4, 0, 1, 2]  # object 0's last chunk, then object 1
    assert plan.in_flight == 8
    plan.release(first[0])
    assert plan.claim(1) == [first[0]]  # a released chunk comes back first
    for ref in first + second[:1]:
        plan.record_verified(ref)
    assert plan.progress_of(manifest.objects[0].object_id).complete
    plan.mark_complete(manifest.objects[0].object_id)
    rest = plan.claim(10)
    assert [r.index for r in rest] == [0]  # only the bucket is left unclaimed
    for ref in second[1:] + rest:
        if plan.record_verified(ref):
            plan.mark_complete(ref.object_id)
    assert plan.done
    assert plan.done_bytes == plan.total_bytes == manifest.total_ciphertext_bytes
    assert plan.claim(5) == []


def test_resume_skips_verified_chunks_and_complete_objects(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, _ = packaged
    first, second, bucket = manifest.objects
    progress = ObjectProgress(first)
    for index in (0, 2, 4):
        progress.mark(index)
    restored = ObjectProgress.decode(first, progress.encode())
    assert restored.verified_indices() == [0, 2, 4]
    plan = FetchPlan(manifest, complete=[second.object_id], progress=[restored])
    assert plan.done_bytes == restored.verified_bytes + second.size
    refs = plan.claim(10)
    assert [(r.object_id, r.index) for r in refs] == [
        (first.object_id, 1),
        (first.object_id, 3),
        (bucket.object_id, 0),
    ]


def test_verified_bytes_count_the_short_last_chunk(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, _ = packaged
    obj = manifest.objects[0]
    progress = ObjectProgress(obj)
    for index in range(obj.chunk_count):
        progress.mark(index)
    assert progress.verified_bytes == obj.size
    progress.unmark(obj.chunk_count - 1)
    assert progress.verified_bytes == (obj.chunk_count - 1) * obj.chunk_bytes
    assert not progress.complete


def test_state_from_another_object_or_damaged_is_refused(packaged: tuple[Manifest, MemoryStore]) -> None:
    manifest, _ = packaged
    first, second, _ = manifest.objects
    state = ObjectProgress(first).encode()
    with pytest.raises(TransferInputError, match="another object"):
        ObjectProgress.decode(second, state)
    with pytest.raises(TransferInputError):
        ObjectProgress.decode(first, state[:-1])
    stray = bytearray(state)
    stray[-1] = 0xFF  # bits past the last of the 5 chunks
    with pytest.raises(TransferInputError, match="bitmap"):
        ObjectProgress.decode(first, bytes(stray))


def test_backoff_is_exponential_with_full_jitter() -> None:
    assert [backoff_ms(n, lambda: 0.999999) for n in range(1, 8)] == [199, 399, 799, 1599, 3199, 6399, 9999]
    assert backoff_ms(3, lambda: 0.0) == 0
    rng = random.Random(7)
    delays = [backoff_ms(4, rng.random) for _ in range(200)]
    assert all(0 <= d < 1600 for d in delays) and len(set(delays)) > 100
    assert backoff_ms(100, lambda: 0.5, base_ms=10, max_ms=1000) == 500
    with pytest.raises(TransferUsageError):
        backoff_ms(0, lambda: 0.5)
