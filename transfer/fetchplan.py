"""Fetch plan: which chunks to fetch next, how to retry, and what survives a restart.

The recipient fetches every object of a manifest as fixed ciphertext chunks
(:attr:`ObjectInfo.chunk_bytes`, the last one short) with HTTP Range requests.

* :class:`ObjectProgress` is one object's bitmap of *verified* chunks (bit ``i`` of
  byte ``i // 8``, least significant bit first).  A chunk is marked only after its
  SHA-256 matched the manifest (:func:`verify_chunk`) and its bytes are on disk.
* Its persisted form (:meth:`ObjectProgress.encode`, written atomically by the
  blob store after each verified chunk) is canonical bytes::

      {"type": "mftp-fetch-state", "v": 1, "object": id, "size": ciphertext bytes,
       "chunk": chunk bytes, "verified": bitmap}

  A state that does not fit the manifest's object is refused on load, and the
  object starts over.
* :class:`FetchPlan` hands out chunks to a bounded number of workers
  (:meth:`FetchPlan.claim`), object by object so each object completes (and is
  checked against its id and moved into place) as early as possible, and never
  hands out a verified or in-flight chunk: a restart or a dropped connection
  costs at most the chunks that were in flight.
* :func:`backoff_ms` is exponential backoff with full jitter from a caller's random
  source, so a test can fix it.

Pure code: no disk, network or clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from .errors import TransferInputError, TransferUsageError
from .manifest import Manifest, ObjectInfo

STATE_TYPE: Final = "mftp-fetch-state"
STATE_VERSION: Final = 1
MAX_STATE_BYTES: Final = 1 << 20
DEFAULT_BACKOFF_BASE_MS: Final = 200
DEFAULT_BACKOFF_MAX_MS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One fetch chunk: object, index and its ``[start, end)`` ciphertext range."""

    object_id: bytes
    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        """Bytes in the chunk."""
        return self.end - self.start

    @property
    def range_header(self) -> str:
        """The HTTP ``Range`` value asking for exactly this chunk."""
        return f"bytes={self.start}-{self.end - 1}"


def chunk_ref(obj: ObjectInfo, index: int) -> ChunkRef:
    """The :class:`ChunkRef` of chunk ``index`` of ``obj``."""
    start, end = obj.chunk_span(index)
    return ChunkRef(obj.object_id, index, start, end)


def verify_chunk(obj: ObjectInfo, ref: ChunkRef, data: bytes) -> None:
    """Raise :class:`TransferInputError` unless ``data`` is exactly chunk ``ref`` of ``obj``."""
    if len(data) != ref.length:
        raise TransferInputError(
            f"object {obj.object_id.hex()[:16]} chunk {ref.index}: {len(data)} bytes, expected {ref.length}"
        )
    if hashlib.sha256(data).digest() != obj.chunk_hash(ref.index):
        raise TransferInputError(f"object {obj.object_id.hex()[:16]} chunk {ref.index}: hash mismatch")


class ObjectProgress:
    """The verified chunks of one object."""

    __slots__ = ("_bits", "_count", "obj")

    def __init__(self, obj: ObjectInfo, bits: bytes | None = None) -> None:
        self.obj = obj
        size = -(-obj.chunk_count // 8)
        self._bits = bytearray(bits) if bits is not None else bytearray(size)
        if len(self._bits) != size or self._stray_bits():
            raise TransferUsageError("bitmap does not fit the object")
        self._count = sum(bin(b).count("1") for b in self._bits)

    def _stray_bits(self) -> bool:
        # Bits past the last chunk would make a complete object look incomplete forever.
        extra = len(self._bits) * 8 - self.obj.chunk_count
        return bool(extra) and bool(self._bits[-1] >> (8 - extra))

    def copy(self) -> ObjectProgress:
        """An independent copy (the fetcher's plan and the store's file each keep one)."""
        return ObjectProgress(self.obj, bytes(self._bits))

    def has(self, index: int) -> bool:
        """``True`` if chunk ``index`` is verified."""
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def mark(self, index: int) -> None:
        """Record chunk ``index`` as verified (idempotent)."""
        if not 0 <= index < self.obj.chunk_count:
            raise TransferUsageError(f"chunk {index} outside the object")
        if not self.has(index):
            self._bits[index >> 3] |= 1 << (index & 7)
            self._count += 1

    def unmark(self, index: int) -> None:
        """Forget chunk ``index`` (its bytes on disk turned out wrong)."""
        if self.has(index):
            self._bits[index >> 3] &= ~(1 << (index & 7)) & 0xFF
            self._count -= 1

    @property
    def verified_count(self) -> int:
        """Number of verified chunks."""
        return self._count

    @property
    def verified_bytes(self) -> int:
        """Ciphertext bytes in verified chunks."""
        last = self.obj.chunk_count - 1
        full = self._count - (1 if self.has(last) else 0)
        return full * self.obj.chunk_bytes + (
            self.obj.size - last * self.obj.chunk_bytes if self.has(last) else 0
        )

    @property
    def complete(self) -> bool:
        """``True`` once every chunk is verified."""
        return self._count == self.obj.chunk_count

    def verified_indices(self) -> list[int]:
        """Indices of the verified chunks, ascending."""
        return [i for i in range(self.obj.chunk_count) if self.has(i)]

    def encode(self) -> bytes:
        """The persisted state (canonical bytes)."""
        return canonical.encode(
            {
                "type": STATE_TYPE,
                "v": STATE_VERSION,
                "object": self.obj.object_id,
                "size": self.obj.size,
                "chunk": self.obj.chunk_bytes,
                "verified": bytes(self._bits),
            }
        )

    @classmethod
    def decode(cls, obj: ObjectInfo, data: bytes) -> ObjectProgress:
        """Load a persisted state for ``obj``; :class:`TransferInputError` if it does not fit."""
        try:
            value = canonical.decode(data, max_bytes=MAX_STATE_BYTES, max_depth=1)
        except DecodeError as exc:
            raise TransferInputError(f"fetch state: {exc}") from None
        expected = {
            "type": STATE_TYPE,
            "v": STATE_VERSION,
            "object": obj.object_id,
            "size": obj.size,
            "chunk": obj.chunk_bytes,
        }
        if not isinstance(value, dict) or set(value) != {*expected, "verified"}:
            raise TransferInputError("fetch state: wrong fields")
        if any(value[k] != v for k, v in expected.items()) or not isinstance(value["verified"], bytes):
            raise TransferInputError("fetch state: belongs to another object or format")
        try:
            return cls(obj, value["verified"])
        except TransferUsageError:
            raise TransferInputError("fetch state: bitmap does not fit the object") from None


class FetchPlan:
    """What is left to fetch for a manifest, handed out to at most ``parallel`` workers at a time.

    ``complete`` names objects already whole in the store; ``progress`` holds the
    loaded state of partly fetched ones (others start empty).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        complete: Iterable[bytes] = (),
        progress: Iterable[ObjectProgress] = (),
    ) -> None:
        self.manifest = manifest
        self._complete: set[bytes] = set(complete)
        self._progress: dict[bytes, ObjectProgress] = {}
        for item in progress:
            if item.obj.object_id not in self._complete:
                self._progress[item.obj.object_id] = item
        self._in_flight: set[tuple[bytes, int]] = set()
        self._cursor = 0  # objects before it are complete (or fully in flight/verified)
        self.total_bytes = manifest.total_ciphertext_bytes
        self.done_bytes = sum(manifest.object(oid).size for oid in self._complete)
        self.done_bytes += sum(p.verified_bytes for p in self._progress.values())

    def progress_of(self, object_id: bytes) -> ObjectProgress:
        """The progress of one object (created empty on first use)."""
        item = self._progress.get(object_id)
        if item is None:
            item = self._progress[object_id] = ObjectProgress(self.manifest.object(object_id))
        return item

    def is_complete(self, object_id: bytes) -> bool:
        """``True`` once the object is whole (verified and moved into place)."""
        return object_id in self._complete

    @property
    def done(self) -> bool:
        """``True`` once every object is complete."""
        return len(self._complete) == len(self.manifest.objects)

    @property
    def in_flight(self) -> int:
        """Chunks handed out and neither verified nor released."""
        return len(self._in_flight)

    def claim(self, limit: int = 1) -> list[ChunkRef]:
        """Up to ``limit`` chunks that are neither verified, complete nor already claimed."""
        found: list[ChunkRef] = []
        objects = self.manifest.objects
        advance = True
        for position in range(self._cursor, len(objects)):
            if len(found) >= limit:
                break
            obj = objects[position]
            if obj.object_id in self._complete:
                if advance:
                    self._cursor = position + 1
                continue
            advance = False
            progress = self._progress.get(obj.object_id)
            for index in range(obj.chunk_count):
                if len(found) >= limit:
                    break
                key = (obj.object_id, index)
                if key in self._in_flight or (progress is not None and progress.has(index)):
                    continue
                self._in_flight.add(key)
                found.append(chunk_ref(obj, index))
        return found

    def release(self, ref: ChunkRef) -> None:
        """Give a claimed chunk back unfetched (it will be handed out again)."""
        self._in_flight.discard((ref.object_id, ref.index))

    def record_verified(self, ref: ChunkRef) -> bool:
        """Mark a claimed chunk verified and stored; returns ``True`` if its object has every chunk."""
        self._in_flight.discard((ref.object_id, ref.index))
        progress = self.progress_of(ref.object_id)
        if not progress.has(ref.index):
            progress.mark(ref.index)
            self.done_bytes += ref.length
        return progress.complete

    def mark_complete(self, object_id: bytes) -> None:
        """The object passed its whole-hash check and is in the store."""
        obj = self.manifest.object(object_id)
        if object_id in self._complete:
            return
        progress = self._progress.pop(object_id, None)
        self.done_bytes += obj.size - (progress.verified_bytes if progress else 0)
        self._complete.add(object_id)

    def restart_object(self, object_id: bytes) -> None:
        """Forget every chunk of an object whose whole hash failed (its chunks are refetched)."""
        progress = self._progress.pop(object_id, None)
        if progress is not None:
            self.done_bytes -= progress.verified_bytes


def backoff_ms(
    attempt: int,
    rng: Callable[[], float],
    *,
    base_ms: int = DEFAULT_BACKOFF_BASE_MS,
    max_ms: int = DEFAULT_BACKOFF_MAX_MS,
) -> int:
    """Delay before retry number ``attempt`` (1 = first retry): full jitter, ``rng()`` in [0, 1).

    ``uniform(0, min(max_ms, base_ms * 2**(attempt-1)))``, so retries spread out
    instead of hitting a recovering server in lockstep.
    """
    if attempt < 1:
        raise TransferUsageError("attempt counts from 1")
    ceiling = min(max_ms, base_ms * (1 << min(attempt - 1, 30)))
    return int(ceiling * min(max(rng(), 0.0), 1.0))
