"""Packaging (mftp.transfer.package): objects, buckets, keys, reading entries back."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from mftp.crypto.stream import CHUNK_OVERHEAD_BYTES, HEADER_BYTES
from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.manifest import EntryMeta, check_restored, seal_manifest
from mftp.transfer.package import (
    Packager,
    encrypt_object,
    iter_entry,
    iter_object_entries,
    local_object_key,
    open_local_record,
    recipient_object_key,
    seal_local_record,
    storage_key_for,
)
from tests.transfer.package_helpers import (
    CREATED_MS,
    MARKER,
    RECIPIENT,
    SENDER,
    STRANGER,
    TRANSFER_ID,
    MemoryStore,
    make_files,
    make_packager,
    package_files,
)

KIB = 1024
MIB = 1024 * 1024


def test_large_files_get_their_own_object_and_small_ones_share_buckets() -> None:
    files = make_files([3 * MIB, 10 * KIB, 20 * KIB, 2 * MIB, 30 * KIB])
    result, store = package_files(files, bucket_target_bytes=4 * MIB, large_object_bytes=1 * MIB)
    manifest = result.manifest
    assert len(manifest.objects) == 3  # two large ones and one bucket of three small ones
    by_name = {e.name: e for e in manifest.entries}
    small = [by_name[m.name] for m, _ in files if m.size < MIB]
    assert len({e.object_id for e in small}) == 1
    assert [e.offset for e in small] == [0, 10 * KIB, 30 * KIB]
    assert [e.name for e in manifest.entries] == [m.name for m, _ in files]  # input order kept
    assert set(store.blobs) == {o.object_id for o in manifest.objects}


def test_buckets_close_near_their_target() -> None:
    files = make_files([300 * KIB] * 20)
    result, _ = package_files(
        files, bucket_target_bytes=1 * MIB, large_object_bytes=512 * KIB, first_bucket_bytes=1 * MIB
    )
    sizes = [o.plain_bytes for o in result.manifest.objects]
    assert all(size <= MIB for size in sizes)
    assert sum(sizes) == 20 * 300 * KIB
    assert len(sizes) == 7  # three files per 1 MiB bucket


def test_first_buckets_are_small_and_double_up_to_the_target() -> None:
    # The first file of a study is sealed alone, so it can travel before the next MiB is ready.
    files = make_files([100 * KIB] * 40)
    result, _ = package_files(
        files, bucket_target_bytes=1 * MIB, large_object_bytes=512 * KIB, first_bucket_bytes=128 * KIB
    )
    files_per_object = [o.plain_bytes // (100 * KIB) for o in result.manifest.objects]
    assert files_per_object[:5] == [1, 2, 5, 10, 10]  # targets 128, 256, 512 KiB, then 1 MiB
    assert sum(files_per_object) == 40


def test_object_layout_matches_the_secretstream_chunking() -> None:
    files = make_files([5 * MIB + 123])
    result, store = package_files(files, chunk_bytes=MIB, aead_chunk_bytes=MIB)
    obj = result.manifest.objects[0]
    assert obj.size == HEADER_BYTES + obj.plain_bytes + 6 * CHUNK_OVERHEAD_BYTES
    assert len(store.blobs[obj.object_id]) == obj.size
    assert obj.chunk_count == -(-obj.size // MIB)
    assert len(obj.chunk_hashes) == 32 * obj.chunk_count


def test_every_entry_reads_back_exactly() -> None:
    sizes = [0, 1, 4095, 4096, 4097, 70_000, 9000, 300_000, 17, 64 * KIB]
    files = make_files(sizes)
    # Tiny AEAD chunks and fetch chunks so entries straddle every kind of boundary.
    result, store = package_files(
        files,
        chunk_bytes=4096,
        aead_chunk_bytes=4096,
        bucket_target_bytes=200_000,
        large_object_bytes=100_000,
    )
    manifest = result.manifest
    for entry, (meta, blob) in zip(manifest.entries, files, strict=True):
        obj = manifest.object(entry.object_id)
        key = recipient_object_key(RECIPIENT, obj)
        got = b"".join(iter_entry(store.read_at(obj.object_id), obj, key, entry))
        assert got == blob, meta.name
        check_restored(entry, got)


def test_object_entries_come_out_in_one_pass() -> None:
    files = make_files([0, 5000, 1, 12_000, 0, 7000, 0])
    result, store = package_files(files, aead_chunk_bytes=4096, bucket_target_bytes=MIB)
    manifest = result.manifest
    (obj,) = manifest.objects
    key = recipient_object_key(RECIPIENT, obj)
    got = dict(
        (entry.name, data)
        for entry, data in iter_object_entries(store.read_at(obj.object_id), obj, key, manifest.entries)
    )
    assert got == {meta.name: blob for meta, blob in files}


def test_no_plaintext_in_objects_manifest_or_local_record() -> None:
    files = make_files([2 * MIB, 50 * KIB, 60 * KIB, MIB + 7])
    result, store = package_files(files)
    assert all(MARKER in blob for _, blob in files)
    for blob in store.blobs.values():
        assert MARKER not in blob
    sealed = seal_manifest(result.manifest, SENDER)
    record = seal_local_record(result, storage_key_for(SENDER))
    for meta, _ in files:
        assert meta.name.encode() not in sealed
        assert meta.name.encode() not in record
        assert meta.sha256 not in sealed


def test_keys_open_only_for_the_recipient_and_locally_for_the_sender() -> None:
    result, _ = package_files(make_files([10 * KIB]))
    obj = result.manifest.objects[0]
    key = recipient_object_key(RECIPIENT, obj)
    with pytest.raises(TransferInputError, match="not sealed to this node"):
        recipient_object_key(STRANGER, obj)
    with pytest.raises(TransferInputError, match="not sealed to this node"):
        recipient_object_key(SENDER, obj)
    wrapped = result.local_keys[obj.object_id]
    assert local_object_key(storage_key_for(SENDER), obj.object_id, wrapped) == key
    with pytest.raises(TransferInputError):
        local_object_key(storage_key_for(STRANGER), obj.object_id, wrapped)
    with pytest.raises(TransferInputError):  # bound to its object id
        local_object_key(storage_key_for(SENDER), bytes(32), wrapped)


def test_a_tampered_object_does_not_decrypt() -> None:
    files = make_files([30 * KIB])
    result, store = package_files(files, aead_chunk_bytes=4096)
    obj = result.manifest.objects[0]
    blob = bytearray(store.blobs[obj.object_id])
    blob[HEADER_BYTES + 5000] ^= 1
    key = recipient_object_key(RECIPIENT, obj)
    entry = result.manifest.entries[0]
    with pytest.raises(TransferInputError, match="failed authentication"):
        b"".join(iter_entry(lambda o, n: bytes(blob[o : o + n]), obj, key, entry))


def test_local_record_round_trip_and_wrong_key() -> None:
    result, _ = package_files(make_files([10 * KIB, 2 * MIB]))
    record = seal_local_record(result, storage_key_for(SENDER))
    opened = open_local_record(record, storage_key_for(SENDER))
    assert opened.manifest == result.manifest
    assert opened.local_keys == result.local_keys
    with pytest.raises(TransferInputError):
        open_local_record(record, storage_key_for(STRANGER))
    with pytest.raises(TransferInputError):
        open_local_record(record[:-10], storage_key_for(SENDER))


def test_a_failing_sink_is_aborted() -> None:
    class Broken(Exception):
        pass

    store = MemoryStore()
    sink = store.sink()

    def fail(data: bytes) -> None:
        raise Broken

    sink.write = fail  # type: ignore[method-assign]
    with pytest.raises(Broken):
        encrypt_object(b"x" * 100, recipient=RECIPIENT.public, storage_key=storage_key_for(SENDER), sink=sink)
    assert sink.aborted and not store.blobs


def test_packager_refuses_bad_entries() -> None:
    packager = make_packager(MemoryStore())
    ok = EntryMeta("a/b.dcm", "instance", 3, bytes(32), "identity")
    packager.add(ok, b"abc")
    for bad in (
        EntryMeta("../etc/passwd", "instance", 3, bytes(32), "identity"),
        EntryMeta("A/B.DCM", "instance", 3, bytes(32), "identity"),  # same name, other case
        EntryMeta("x.dcm", "patient", 3, bytes(32), "identity"),
        EntryMeta("y.dcm", "instance", 3, bytes(31), "identity"),
    ):
        with pytest.raises(TransferUsageError):
            packager.add(bad, b"abc")
    packager.finish()
    with pytest.raises(TransferUsageError, match="finished"):
        packager.add(EntryMeta("c.dcm", "instance", 3, bytes(32), "identity"), b"abc")


def test_packaging_streams_one_object_at_a_time() -> None:
    """Packaging 48 MiB of files keeps only about one object in memory."""
    count, size = 24, 2 * MIB

    def files() -> Iterator[tuple[EntryMeta, bytes]]:
        for index in range(count):
            # Built lazily, so the study is never in memory as a whole.
            blob = index.to_bytes(4, "big") * (size // 4)
            yield EntryMeta(f"s/{index}.dcm", "instance", size, bytes(32), "identity"), blob

    class CountingSink:
        written = 0

        def write(self, data: bytes) -> None:
            CountingSink.written += len(data)

        def commit(self, object_id: bytes) -> None:
            pass

        def abort(self) -> None:
            pass

    packager = Packager(
        sender=SENDER.public,
        recipient=RECIPIENT.public,
        transfer_id=TRANSFER_ID,
        created_ms=CREATED_MS,
        storage_key=storage_key_for(SENDER),
        sink_factory=CountingSink,
    )
    tracemalloc.start()
    try:
        for meta, blob in files():
            packager.add(meta, blob)
            del blob
        result = packager.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert CountingSink.written == result.manifest.total_ciphertext_bytes
    assert peak < 4 * size, f"peak {peak} bytes for {count * size} bytes of files"
