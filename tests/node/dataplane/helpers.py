"""Shared set-up for the data-plane tests: a packaged transfer between two blob stores."""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from mftp.node.dataplane.blobstore import BlobStore
from mftp.transfer.capability import Capability, issue_capability
from mftp.transfer.manifest import EntryMeta, Manifest
from mftp.transfer.package import Packager, storage_key_for
from tests.transfer.package_helpers import RECIPIENT, SENDER

MIB = 1024 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Transfer:
    """One packaged transfer: the sender's store, the recipient's store, manifest and capability."""

    sender_store: BlobStore
    receiver_store: BlobStore
    manifest: Manifest
    capability: Capability
    files: list[bytes]


def random_ish(size: int, seed: int) -> bytes:
    """Incompressible-looking bytes, quickly (a block of randomness repeated with a counter)."""
    block = random.Random(seed).randbytes(64 * 1024)
    parts = [block[:-4] + i.to_bytes(4, "big") for i in range(-(-size // len(block)))]
    return b"".join(parts)[:size]


def make_transfer(
    tmp_path: Path,
    *,
    large: int,
    large_bytes: int,
    small: int = 0,
    small_bytes: int = 30_000,
    chunk_bytes: int = 4 * MIB,
    seed: int = 1,
) -> Transfer:
    """Package ``large`` files of ``large_bytes`` and ``small`` of ``small_bytes`` into a sender store."""
    sender_store = BlobStore(tmp_path / "sender")
    receiver_store = BlobStore(tmp_path / "receiver")
    packager = Packager(
        sender=SENDER.public,
        recipient=RECIPIENT.public,
        transfer_id=os.urandom(16),
        created_ms=now_ms(),
        storage_key=storage_key_for(SENDER),
        sink_factory=sender_store.object_writer,
        chunk_bytes=chunk_bytes,
    )
    files = []
    sizes = [large_bytes] * large + [small_bytes] * small
    for index, size in enumerate(sizes):
        data = random_ish(size, seed * 10_000 + index)
        files.append(data)
        meta = EntryMeta(
            f"series/{index:05d}.dcm", "instance", size, hashlib.sha256(data).digest(), "identity"
        )
        packager.add(meta, data)
    manifest = packager.finish().manifest
    capability = issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=manifest.transfer_id,
        manifest_sha256=manifest.sha256,
        now_ms=now_ms(),
    )
    return Transfer(sender_store, receiver_store, manifest, capability, files)


def verified_chunks(store: BlobStore, manifest: Manifest) -> set[tuple[bytes, int]]:
    """``(object id, chunk start)`` of every chunk the store holds verified (complete or partial)."""
    found: set[tuple[bytes, int]] = set()
    for obj in manifest.objects:
        if store.has(obj.object_id):
            indices = list(range(obj.chunk_count))
        elif store.has_partial(obj.object_id):
            partial = store.open_partial(obj)
            indices = partial.progress.verified_indices()
            partial.close()
        else:
            indices = []
        found.update((obj.object_id, i * obj.chunk_bytes) for i in indices)
    return found


def all_chunks(manifest: Manifest) -> set[tuple[bytes, int]]:
    return {(o.object_id, i * o.chunk_bytes) for o in manifest.objects for i in range(o.chunk_count)}


def check_received(transfer: Transfer) -> None:
    """Every entry decrypts from the recipient's store to the original bytes."""
    store, manifest = transfer.receiver_store, transfer.manifest
    for entry, data in zip(manifest.entries, transfer.files, strict=True):
        assert store.read_entry(manifest, entry, identity=RECIPIENT) == data, entry.name
