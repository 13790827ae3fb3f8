"""The blob store (mftp.node.dataplane.blobstore): atomic objects, resumable partials, records, entries."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import pytest

from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.errors import NodeInputError, NodeUsageError, StorageDamaged
from mftp.transfer.fetchplan import chunk_ref
from mftp.transfer.manifest import Manifest
from mftp.transfer.package import local_object_key, recipient_object_key, storage_key_for
from tests.transfer.package_helpers import MARKER, RECIPIENT, SENDER, make_files, package_files

KIB = 1024


def _package_into(store: BlobStore, sizes: list[int]) -> tuple[Manifest, dict[bytes, bytes], list[bytes]]:
    files = make_files(sizes)
    result, _ = package_files(
        files,
        chunk_bytes=16 * KIB,
        aead_chunk_bytes=4096,
        bucket_target_bytes=64 * KIB,
        large_object_bytes=32 * KIB,
        sink_factory=store.object_writer,
    )
    return result.manifest, result.local_keys, [blob for _, blob in files]


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_packaging_into_the_store_writes_only_ciphertext(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    manifest, _, _ = _package_into(store, [100 * KIB, 5 * KIB, 6 * KIB])
    for obj in manifest.objects:
        path = store.path_of(obj.object_id)
        assert path.parent.name == obj.object_id.hex()[:2]
        assert store.size_of(obj.object_id) == obj.size
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list((tmp_path / "tmp").iterdir())
    for path in _all_files(tmp_path):
        assert MARKER not in path.read_bytes(), path


def test_sender_and_recipient_read_entries_back(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    manifest, local_keys, blobs = _package_into(store, [100 * KIB, 5 * KIB, 0, 6 * KIB])
    storage_key = storage_key_for(SENDER)
    for entry, blob in zip(manifest.entries, blobs, strict=True):
        assert store.read_entry(manifest, entry, identity=RECIPIENT) == blob
        key = local_object_key(storage_key, entry.object_id, local_keys[entry.object_id])
        assert b"".join(store.open_entry(manifest, entry, key=key)) == blob
    got = list(store.iter_entries(manifest, functools.partial(recipient_object_key, RECIPIENT)))
    assert sorted(data for _, data in got) == sorted(blobs)
    with pytest.raises(NodeUsageError):
        store.read_entry(manifest, manifest.entries[0])


def test_an_aborted_writer_leaves_nothing_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.object_writer()
    writer.write(b"half an object")
    writer.abort()
    assert not list((tmp_path / "tmp").iterdir())
    crashed = store.object_writer()
    crashed.write(b"a crash before commit")
    (tmp_path / "partial" / ".x.state.123.tmp").write_bytes(b"torn")
    BlobStore(tmp_path)  # restart
    assert not list((tmp_path / "tmp").iterdir())
    assert not list((tmp_path / "partial").iterdir())
    wrong = store.object_writer()
    wrong.write(b"abc")
    with pytest.raises(NodeUsageError, match="SHA-256"):
        wrong.commit(bytes(32))
    assert not list((tmp_path / "tmp").iterdir())


def test_partial_download_resumes_with_only_verified_chunks(tmp_path: Path) -> None:
    sender = BlobStore(tmp_path / "a")
    manifest, _, _ = _package_into(sender, [100 * KIB])
    obj = manifest.objects[0]
    blob = sender.path_of(obj.object_id).read_bytes()
    receiver = BlobStore(tmp_path / "b")
    partial = receiver.open_partial(obj)
    refs = [chunk_ref(obj, i) for i in range(obj.chunk_count)]
    for ref in refs[:3]:
        assert not partial.write_chunk(ref, blob[ref.start : ref.end])
    partial.close()
    # Damage chunk 1 on disk behind the store's back: it must be dropped on reload.
    with open(tmp_path / "b" / "partial" / obj.object_id.hex(), "r+b") as handle:
        handle.seek(refs[1].start + 10)
        handle.write(b"\x00\x01")
    assert receiver.has_partial(obj.object_id)
    again = BlobStore(tmp_path / "b").open_partial(obj)
    assert again.progress.verified_indices() == [0, 2]
    for ref in refs[1:2] + refs[3:]:
        done = again.write_chunk(ref, blob[ref.start : ref.end])
    assert done
    again.finalize()
    assert receiver.path_of(obj.object_id).read_bytes() == blob
    assert not receiver.has_partial(obj.object_id)
    assert not list((tmp_path / "b" / "partial").iterdir())


def test_a_damaged_state_file_restarts_the_object(tmp_path: Path) -> None:
    sender = BlobStore(tmp_path / "a")
    manifest, _, _ = _package_into(sender, [100 * KIB])
    obj = manifest.objects[0]
    blob = sender.path_of(obj.object_id).read_bytes()
    receiver = BlobStore(tmp_path / "b")
    partial = receiver.open_partial(obj)
    ref = chunk_ref(obj, 0)
    partial.write_chunk(ref, blob[ref.start : ref.end])
    partial.close()
    (tmp_path / "b" / "partial" / f"{obj.object_id.hex()}.state").write_bytes(b"garbage")
    assert receiver.open_partial(obj).progress.verified_count == 0


def test_chunks_that_do_not_add_up_to_the_id_are_discarded(tmp_path: Path) -> None:
    sender = BlobStore(tmp_path / "a")
    manifest, _, _ = _package_into(sender, [40 * KIB])
    obj = manifest.objects[0]
    receiver = BlobStore(tmp_path / "b")
    partial = receiver.open_partial(obj)
    for index in range(obj.chunk_count):
        ref = chunk_ref(obj, index)
        partial.write_chunk(ref, bytes(ref.length))  # "verified" by a buggy caller
    with pytest.raises(NodeInputError, match="do not add up"):
        partial.finalize()
    assert not receiver.has(obj.object_id)
    assert not list((tmp_path / "b" / "partial").iterdir())


def test_records_and_served_index(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.put_record("manifest-abc", b"sealed bytes")
    assert store.get_record("manifest-abc") == b"sealed bytes"
    assert store.get_record("missing") is None
    with pytest.raises(NodeInputError):
        store.get_record("manifest-abc", max_bytes=3)
    with pytest.raises(NodeUsageError):
        store.put_record("../escape", b"x")
    store.delete_record("manifest-abc")
    assert store.get_record("manifest-abc") is None
    manifest, _, _ = _package_into(store, [100 * KIB, 1000])
    store.save_served(manifest)
    assert BlobStore(tmp_path).load_served(manifest.transfer_id) == (
        manifest.sha256,
        frozenset(o.object_id for o in manifest.objects),
    )
    assert store.load_served(bytes(16)) is None
    store.put_record(f"served-{bytes(16).hex()}", b"\x01")
    with pytest.raises(StorageDamaged, match="corrupt"):
        store.load_served(bytes(16))


def test_directories_are_private(tmp_path: Path) -> None:
    BlobStore(tmp_path / "store")
    for sub in ("blobs", "partial", "tmp", "records"):
        assert stat.S_IMODE(os.stat(tmp_path / "store" / sub).st_mode) == 0o700
