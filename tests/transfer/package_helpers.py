"""Shared helpers for the packaging, manifest, capability and data-plane tests."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from mftp.crypto.signing import SigningIdentity
from mftp.transfer.manifest import EntryMeta
from mftp.transfer.package import Packager, PackageResult, storage_key_for

SENDER = SigningIdentity(bytes(range(32)))
RECIPIENT = SigningIdentity(bytes(range(32, 64)))
STRANGER = SigningIdentity(bytes(range(64, 96)))
TRANSFER_ID = bytes(range(16))
CREATED_MS = 1_750_000_000_000
MARKER = b"PLAINTEXT-MARKER-7f3a"
"""Planted in every test file: it must never appear in anything encrypted."""


class MemorySink:
    """An ObjectSink that keeps the ciphertext in a dict."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.parts: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def commit(self, object_id: bytes) -> None:
        data = b"".join(self.parts)
        assert hashlib.sha256(data).digest() == object_id
        self.store.blobs[object_id] = data

    def abort(self) -> None:
        self.aborted = True
        self.parts.clear()


class MemoryStore:
    """Objects by id, in memory."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.sinks: list[MemorySink] = []

    def sink(self) -> MemorySink:
        sink = MemorySink(self)
        self.sinks.append(sink)
        return sink

    def read_at(self, object_id: bytes) -> Any:
        blob = self.blobs[object_id]
        return lambda offset, length: blob[offset : offset + length]


def make_files(sizes: list[int], *, seed: int = 1, prefix: str = "f") -> list[tuple[EntryMeta, bytes]]:
    """Files of the given sizes (random-ish bytes with :data:`MARKER` planted when they fit)."""
    rng = random.Random(seed)
    files = []
    for index, size in enumerate(sizes):
        data = bytearray(rng.randbytes(size))
        if size >= len(MARKER):
            where = rng.randrange(0, size - len(MARKER) + 1)
            data[where : where + len(MARKER)] = MARKER
        blob = bytes(data)
        # The "original" is the stored bytes here (codec "identity"), so restored == stored.
        meta = EntryMeta(
            f"{prefix}/{index:04d}.dcm", "instance", size, hashlib.sha256(blob).digest(), "identity"
        )
        files.append((meta, blob))
    return files


def package_files(
    files: list[tuple[EntryMeta, bytes]], store: MemoryStore | None = None, **options: Any
) -> tuple[PackageResult, MemoryStore]:
    """Package ``files`` from :data:`SENDER` to :data:`RECIPIENT` into a memory store."""
    store = store or MemoryStore()
    packager = make_packager(store, **options)
    for meta, blob in files:
        packager.add(meta, blob)
    return packager.finish(), store


def make_packager(store: MemoryStore, **options: Any) -> Packager:
    """A packager from :data:`SENDER` to :data:`RECIPIENT` into ``store`` (``options`` override)."""
    settings: dict[str, Any] = {
        "sender": SENDER.public,
        "recipient": RECIPIENT.public,
        "transfer_id": TRANSFER_ID,
        "created_ms": CREATED_MS,
        "storage_key": storage_key_for(SENDER),
        "sink_factory": store.sink,
    }
    settings.update(options)
    return Packager(**settings)
