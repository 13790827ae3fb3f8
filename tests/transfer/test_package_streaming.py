"""Streaming a study while it is prepared: partial manifests, Packager.snapshot, streaming capabilities."""

from __future__ import annotations

from typing import Any

import pytest

from mftp.crypto import canonical
from mftp.transfer.capability import (
    STREAMING_MANIFEST,
    AuthError,
    check_object,
    check_transfer,
    covers_manifest,
    issue_capability,
)
from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.manifest import Manifest, decode_manifest, open_manifest, seal_manifest
from tests.transfer.package_helpers import (
    CREATED_MS,
    RECIPIENT,
    SENDER,
    TRANSFER_ID,
    MemoryStore,
    make_files,
    make_packager,
    package_files,
)

MIB = 1024 * 1024


def _empty(partial: bool) -> Manifest:
    return Manifest.build(
        transfer_id=TRANSFER_ID,
        sender=SENDER.public.sign_key,
        recipient=RECIPIENT.public.sign_key,
        created_ms=CREATED_MS,
        entries=(),
        objects=(),
        partial=partial,
    )


def test_snapshots_list_only_sealed_objects_and_grow_into_the_final_manifest() -> None:
    files = make_files([2 * MIB, 1000, 2000, 3 * MIB, 500])
    packager = make_packager(MemoryStore())
    assert packager.snapshot() is None  # nothing sealed yet
    snapshots = []
    for meta, blob in files:
        packager.add(meta, blob)
        snapshots.append(packager.snapshot())
    first = snapshots[0]
    assert first is not None and first.partial
    assert [e.name for e in first.entries] == [files[0][0].name]  # the large file, sealed at once
    # The small files wait in the open bucket: a snapshot never names an unsealed object.
    for snapshot in snapshots:
        assert snapshot is not None
        ids = {o.object_id for o in snapshot.objects}
        assert all(e.object_id in ids for e in snapshot.entries)
    last = snapshots[-1]
    assert last is not None
    result = packager.finish()
    final = result.manifest
    assert not final.partial
    assert set(last.entries) <= set(final.entries)
    assert set(last.objects) <= set(final.objects)
    assert len(final.entries) == len(files)
    with pytest.raises(TransferUsageError):
        packager.add(*make_files([10], prefix="late")[0])


def test_the_final_manifest_encodes_as_without_streaming() -> None:
    result, _ = package_files(make_files([1000, 2000]))
    value: Any = canonical.decode(result.manifest.encode(), max_depth=8)
    assert "partial" not in value  # older recipients and earlier hashes are unchanged
    assert decode_manifest(result.manifest.encode()) == result.manifest


def test_partial_manifests_round_trip_and_are_told_apart() -> None:
    partial = _empty(partial=True)
    again = decode_manifest(partial.encode())
    assert again.partial and again == partial
    sealed = seal_manifest(partial, SENDER)
    assert open_manifest(sealed, RECIPIENT, sender=SENDER.public).partial
    value: Any = canonical.decode(partial.encode(), max_depth=8)
    value["partial"] = False  # not canonical: a final manifest has no such key
    with pytest.raises(TransferInputError, match="partial"):
        decode_manifest(canonical.encode(value))
    del value["partial"]  # an empty final manifest is refused
    with pytest.raises(TransferInputError, match="entries"):
        decode_manifest(canonical.encode(value))
    with pytest.raises(TransferUsageError, match="entries"):
        _empty(partial=False)


def test_a_streaming_capability_covers_whatever_manifest_the_server_serves() -> None:
    def cap(manifest_sha256: bytes) -> Any:
        return issue_capability(
            SENDER,
            recipient=RECIPIENT.public.sign_key,
            transfer_id=TRANSFER_ID,
            manifest_sha256=manifest_sha256,
            now_ms=CREATED_MS,
        )

    served, other = b"\x05" * 32, b"\x06" * 32
    streaming, fixed = cap(STREAMING_MANIFEST), cap(served)
    assert covers_manifest(streaming, served) and covers_manifest(streaming, other)
    assert covers_manifest(fixed, served) and not covers_manifest(fixed, other)
    check_transfer(streaming, TRANSFER_ID, manifest_sha256=served)
    check_object(streaming, b"\x01" * 32, manifest_sha256=other, objects={b"\x01" * 32})
    with pytest.raises(AuthError, match="does not serve"):  # still only a transfer the server serves
        check_transfer(streaming, TRANSFER_ID, manifest_sha256=None)
    with pytest.raises(AuthError, match="another transfer"):
        check_transfer(streaming, b"\x07" * 16, manifest_sha256=served)
    with pytest.raises(AuthError, match="not part"):  # and only its objects
        check_object(streaming, b"\x02" * 32, manifest_sha256=served, objects={b"\x01" * 32})
