"""Packaging: compressed files in, encrypted content-addressed objects and a manifest out.

**Objects.**  A compressed file of at least ``large_object_bytes`` (1 MiB) becomes one
object; smaller ones are concatenated into *bucket* objects of about
``bucket_target_bytes`` (4 MiB), so a study of thousands of small files costs a few
hundred objects, not thousands of requests and key wraps.  The first buckets are smaller
(``first_bucket_bytes``, 256 KiB, doubling up to the target), so the first files of a
study are sealed, and can travel, long before the first 4 MiB are prepared.  Each object gets a
fresh 32-byte key and is encrypted with secretstream (XChaCha20-Poly1305) in fixed
plaintext chunks of ``aead_chunk_bytes`` (1 MiB), without length prefixes::

    header (24) || chunk 0 (aead_chunk + 17) || chunk 1 || ... || final chunk (rest + 17)

so every secretstream chunk sits at a known ciphertext offset.  All objects are
authenticated with the associated data ``MFTP-OBJECT-v1``.  The object id is the
SHA-256 of the whole ciphertext; the ciphertext is also cut into fetch chunks of
``chunk_bytes`` (4 MiB, ``transfer.chunk_bytes``) whose SHA-256s go into the
manifest, so a recipient verifies each chunk as it arrives, whatever cache or
connection delivered it.

**Keys.**  Each object key is sealed to the recipient's X25519 key (in the
manifest) and wrapped with the sender's local storage key
(:func:`storage_key_for`, AD ``MFTP-LOCAL-OBJECT-KEY-v1 || object id``), so the
sender's own disk never holds a clear key.  :func:`seal_local_record` keeps the
manifest and those wrapped keys encrypted under the storage key as well.

**Streaming.**  :class:`Packager` takes one compressed file at a time and writes
ciphertext to an :class:`ObjectSink` (the node's blob store writes a temporary
file and renames it to its id on :meth:`ObjectSink.commit`).  It holds at most one
bucket (< ``bucket_target_bytes + large_object_bytes``) plus the file being added,
never the study.

**Reading back** (:func:`iter_entry`, :func:`iter_object_entries`) works on any
``read_at(offset, length)`` over the ciphertext: secretstream chunks chain, so an
entry is reached by decrypting its object from the start up to the entry's end,
one chunk (1 MiB) in memory at a time.

Pure code: no disk, network or clock (``created_ms`` is passed in).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError, DecryptionError
from mftp.crypto.primitives import hkdf
from mftp.crypto.sealing import seal, unseal, unwrap_key, wrap_key
from mftp.crypto.signing import PublicIdentity, SigningIdentity
from mftp.crypto.stream import (
    HEADER_BYTES,
    KEY_BYTES,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_stream,
    encrypt_stream,
    generate_key,
)

from .errors import TransferInputError, TransferUsageError
from .manifest import (
    DEFAULT_LIMITS,
    HASH_BYTES,
    KINDS,
    MAX_AEAD_CHUNK_BYTES,
    MAX_FETCH_CHUNK_BYTES,
    MIN_AEAD_CHUNK_BYTES,
    MIN_FETCH_CHUNK_BYTES,
    TRANSFER_ID_BYTES,
    Entry,
    EntryMeta,
    Manifest,
    ManifestLimits,
    ObjectInfo,
    aead_chunk_span,
    decode_manifest,
    name_problem,
)

OBJECT_AD: Final = b"MFTP-OBJECT-v1\x00"
LOCAL_KEY_AD: Final = b"MFTP-LOCAL-OBJECT-KEY-v1\x00"
LOCAL_RECORD_AD: Final = b"MFTP-LOCAL-RECORD-v1\x00"
LOCAL_RECORD_TYPE: Final = "mftp-local-record"
STORAGE_KEY_INFO: Final = b"mftp storage key v1"

DEFAULT_AEAD_CHUNK_BYTES: Final = 1 << 20
DEFAULT_FETCH_CHUNK_BYTES: Final = 4 << 20
DEFAULT_BUCKET_TARGET_BYTES: Final = 4 << 20
DEFAULT_FIRST_BUCKET_BYTES: Final = 256 << 10
"""The first bucket of a study; each next one doubles up to ``bucket_target_bytes``."""
DEFAULT_LARGE_OBJECT_BYTES: Final = 1 << 20

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, length)``: ``length`` bytes of an object's ciphertext (fewer only at its end)."""


class ObjectSink(Protocol):
    """Where :class:`Packager` writes one object's ciphertext."""

    def write(self, data: bytes) -> None:
        """Append ciphertext."""

    def commit(self, object_id: bytes) -> None:
        """The object is complete and is named ``object_id`` (SHA-256 of all that was written)."""

    def abort(self) -> None:
        """Encryption failed: forget everything written (nothing half-written may remain)."""


@dataclass(frozen=True, slots=True)
class PackageResult:
    """The manifest and, per object id, its key wrapped under the local storage key."""

    manifest: Manifest
    local_keys: dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class SealedObject:
    """One encrypted object: its manifest description and its locally wrapped key."""

    info: ObjectInfo
    local_key: bytes


# --------------------------------------------------------------------------- keys


def storage_key_for(identity: SigningIdentity) -> bytes:
    """The node's local storage key, derived from its identity (nothing more to keep safe)."""
    return hkdf(identity.seed, salt=b"", info=STORAGE_KEY_INFO, length=KEY_BYTES)


def _local_key_ad(object_id: bytes) -> bytes:
    return LOCAL_KEY_AD + object_id


def recipient_object_key(identity: SigningIdentity, obj: ObjectInfo) -> bytes:
    """The key of ``obj`` unsealed by its recipient; :class:`TransferInputError` if not ours."""
    try:
        key = unseal(identity, obj.sealed_key)
    except DecryptionError:
        raise TransferInputError(
            f"object {obj.object_id.hex()[:16]}: key is not sealed to this node"
        ) from None
    if len(key) != KEY_BYTES:
        raise TransferInputError(f"object {obj.object_id.hex()[:16]}: sealed key has the wrong length")
    return key


def local_object_key(storage_key: bytes, object_id: bytes, wrapped: bytes) -> bytes:
    """The key of an object we packaged, from its locally wrapped form."""
    try:
        return unwrap_key(storage_key, wrapped, associated_data=_local_key_ad(object_id))
    except DecryptionError:
        raise TransferInputError(f"object {object_id.hex()[:16]}: local key does not unwrap") from None


# --------------------------------------------------------------------------- encryption


class _ChunkHasher:
    """SHA-256 of a ciphertext stream as a whole and per fetch chunk, fed in any pieces."""

    def __init__(self, chunk_bytes: int) -> None:
        self._chunk_bytes = chunk_bytes
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._chunk_fill = 0
        self._hashes: list[bytes] = []
        self.size = 0

    def update(self, data: bytes) -> None:
        self._whole.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self._chunk_bytes - self._chunk_fill)
            self._chunk.update(view[:take])
            self._chunk_fill += take
            view = view[take:]
            if self._chunk_fill == self._chunk_bytes:
                self._hashes.append(self._chunk.digest())
                self._chunk = hashlib.sha256()
                self._chunk_fill = 0

    def finish(self) -> tuple[bytes, bytes]:
        """``(object id, concatenated chunk hashes)``."""
        if self._chunk_fill:
            self._hashes.append(self._chunk.digest())
        return self._whole.digest(), b"".join(self._hashes)


def encrypt_object(
    plaintext: bytes,
    *,
    recipient: PublicIdentity,
    storage_key: bytes,
    sink: ObjectSink,
    chunk_bytes: int = DEFAULT_FETCH_CHUNK_BYTES,
    aead_chunk_bytes: int = DEFAULT_AEAD_CHUNK_BYTES,
) -> SealedObject:
    """Encrypt ``plaintext`` under a fresh key into ``sink``; returns its manifest description.

    The sink is committed under the object id on success and aborted on any error.
    """
    _check_sizes(chunk_bytes, aead_chunk_bytes)
    key = generate_key()
    try:
        encryptor = StreamEncryptor(key, associated_data=OBJECT_AD, max_chunk_bytes=aead_chunk_bytes)
        hasher = _ChunkHasher(chunk_bytes)
        hasher.update(encryptor.header)
        sink.write(encryptor.header)
        view = memoryview(plaintext)
        start = 0
        while True:
            piece = view[start : start + aead_chunk_bytes]
            start += len(piece)
            ciphertext = encryptor.push(piece, final=start >= len(view))
            hasher.update(ciphertext)
            sink.write(ciphertext)
            if encryptor.finished:
                break
        object_id, hashes = hasher.finish()
        sink.commit(object_id)
    except BaseException:
        sink.abort()
        raise
    info = ObjectInfo(
        object_id=object_id,
        size=hasher.size,
        plain_bytes=len(view),
        aead_chunk_bytes=aead_chunk_bytes,
        chunk_bytes=chunk_bytes,
        chunk_hashes=hashes,
        sealed_key=seal(recipient, key),
    )
    return SealedObject(info, wrap_key(storage_key, key, associated_data=_local_key_ad(object_id)))


def _check_sizes(chunk_bytes: int, aead_chunk_bytes: int) -> None:
    if not MIN_FETCH_CHUNK_BYTES <= chunk_bytes <= MAX_FETCH_CHUNK_BYTES:
        raise TransferUsageError(f"chunk_bytes must be {MIN_FETCH_CHUNK_BYTES}..{MAX_FETCH_CHUNK_BYTES}")
    if not MIN_AEAD_CHUNK_BYTES <= aead_chunk_bytes <= MAX_AEAD_CHUNK_BYTES:
        raise TransferUsageError(f"aead_chunk_bytes must be {MIN_AEAD_CHUNK_BYTES}..{MAX_AEAD_CHUNK_BYTES}")


# --------------------------------------------------------------------------- packager


@dataclass(slots=True)
class _Pending:
    """An entry whose object id is known only once its object is sealed."""

    meta: EntryMeta
    slot: int
    offset: int
    length: int


class Packager:
    """Turn a stream of ``(EntryMeta, compressed bytes)`` into objects and a manifest.

    Call :meth:`add` per file, then :meth:`finish`.  If packaging is abandoned,
    :attr:`committed` lists the objects already written so the caller can delete them.
    """

    def __init__(
        self,
        *,
        sender: PublicIdentity,
        recipient: PublicIdentity,
        transfer_id: bytes,
        created_ms: int,
        storage_key: bytes,
        sink_factory: Callable[[], ObjectSink],
        chunk_bytes: int = DEFAULT_FETCH_CHUNK_BYTES,
        aead_chunk_bytes: int = DEFAULT_AEAD_CHUNK_BYTES,
        bucket_target_bytes: int = DEFAULT_BUCKET_TARGET_BYTES,
        large_object_bytes: int = DEFAULT_LARGE_OBJECT_BYTES,
        limits: ManifestLimits = DEFAULT_LIMITS,
        first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
    ) -> None:
        _check_sizes(chunk_bytes, aead_chunk_bytes)
        if len(transfer_id) != TRANSFER_ID_BYTES:
            raise TransferUsageError(f"transfer_id must be {TRANSFER_ID_BYTES} bytes")
        if not 1 <= large_object_bytes <= bucket_target_bytes:
            raise TransferUsageError("need 1 <= large_object_bytes <= bucket_target_bytes")
        self._sender = sender
        self._recipient = recipient
        self._transfer_id = transfer_id
        self._created_ms = created_ms
        self._storage_key = storage_key
        self._sink_factory = sink_factory
        self._chunk_bytes = chunk_bytes
        self._aead_chunk_bytes = aead_chunk_bytes
        self._bucket_target = bucket_target_bytes
        # Small first buckets, doubling: the first files of a study are sealed (and can travel,
        # and be viewed at the recipient) after a few hundred KiB instead of the first 4 MiB.
        self._next_bucket_target = max(1, min(first_bucket_bytes, bucket_target_bytes))
        self._large = large_object_bytes
        self._limits = limits
        self._pending: list[_Pending] = []
        self._sealed: list[SealedObject | None] = []
        self._names: set[str] = set()
        self._bucket: list[bytes] = []
        self._bucket_bytes = 0
        self._bucket_slot: int | None = None
        self._total_bytes = 0
        self._finished = False

    @property
    def committed(self) -> list[bytes]:
        """Ids of the objects written so far."""
        return [s.info.object_id for s in self._sealed if s is not None]

    def add(self, meta: EntryMeta, compressed: bytes) -> None:
        """Add one file; a large one is encrypted at once, a small one joins the open bucket."""
        if self._finished:
            raise TransferUsageError("the packager is finished")
        self._check_meta(meta)
        self._total_bytes += len(compressed)
        if self._total_bytes > self._limits.max_total_bytes:
            raise TransferInputError(f"study exceeds {self._limits.max_total_bytes} bytes", name=meta.name)
        if len(compressed) >= self._large:
            slot = len(self._sealed)
            self._sealed.append(None)
            self._pending.append(_Pending(meta, slot, 0, len(compressed)))
            self._sealed[slot] = self._encrypt(compressed)
            return
        if self._bucket_bytes + len(compressed) > self._next_bucket_target:
            self._flush_bucket()
        if self._bucket_slot is None:
            self._bucket_slot = len(self._sealed)
            self._sealed.append(None)
        self._pending.append(_Pending(meta, self._bucket_slot, self._bucket_bytes, len(compressed)))
        self._bucket.append(bytes(compressed))
        self._bucket_bytes += len(compressed)

    @property
    def sealed_count(self) -> int:
        """How many objects are sealed so far (grows as files are added)."""
        return sum(1 for s in self._sealed if s is not None)

    def snapshot(self) -> Manifest | None:
        """A *partial* manifest of what is sealed so far (``None`` before the first object).

        It lists the sealed objects and the entries they hold; files still in the open bucket
        come in a later snapshot or in the final manifest of :meth:`finish`.
        """
        if self._finished or not any(s is not None for s in self._sealed):
            return None
        sealed = {slot: s for slot, s in enumerate(self._sealed) if s is not None}
        entries = [self._entry(p, sealed[p.slot].info.object_id) for p in self._pending if p.slot in sealed]
        return Manifest.build(
            transfer_id=self._transfer_id,
            sender=self._sender.sign_key,
            recipient=self._recipient.sign_key,
            created_ms=self._created_ms,
            entries=entries,
            objects=[s.info for s in sealed.values()],
            limits=self._limits,
            partial=True,
        )

    @staticmethod
    def _entry(pending: _Pending, object_id: bytes) -> Entry:
        meta = pending.meta
        return Entry(
            meta.name,
            meta.kind,
            meta.size,
            meta.sha256,
            meta.codec,
            object_id,
            pending.offset,
            pending.length,
        )

    def finish(self) -> PackageResult:
        """Seal the last bucket and build the manifest."""
        if self._finished:
            raise TransferUsageError("the packager is finished")
        self._flush_bucket()
        self._finished = True
        sealed = [s for s in self._sealed if s is not None]
        if len(sealed) != len(self._sealed):
            raise TransferUsageError("an object was left unsealed")
        ids = [s.info.object_id for s in sealed]
        entries = [self._entry(p, ids[p.slot]) for p in self._pending]
        manifest = Manifest.build(
            transfer_id=self._transfer_id,
            sender=self._sender.sign_key,
            recipient=self._recipient.sign_key,
            created_ms=self._created_ms,
            entries=entries,
            objects=[s.info for s in sealed],
            limits=self._limits,
        )
        return PackageResult(manifest, {s.info.object_id: s.local_key for s in sealed})

    def _check_meta(self, meta: EntryMeta) -> None:
        problem = name_problem(meta.name)
        if problem:
            raise TransferUsageError(f"entry name {meta.name!r}: {problem}")
        folded = meta.name.casefold()
        if folded in self._names:
            raise TransferUsageError(f"entry name {meta.name!r} is used twice")
        if meta.kind not in KINDS or len(meta.sha256) != HASH_BYTES or meta.size < 0:
            raise TransferUsageError(f"entry {meta.name!r}: bad kind, size or sha256")
        if len(self._pending) >= self._limits.max_entries:
            raise TransferInputError(f"study has more than {self._limits.max_entries} files", name=meta.name)
        self._names.add(folded)

    def _flush_bucket(self) -> None:
        if self._bucket_slot is None:
            return
        plaintext = b"".join(self._bucket)
        self._bucket.clear()
        self._sealed[self._bucket_slot] = self._encrypt(plaintext)
        self._bucket_slot = None
        self._bucket_bytes = 0
        self._next_bucket_target = min(self._bucket_target, 2 * self._next_bucket_target)

    def _encrypt(self, plaintext: bytes) -> SealedObject:
        if len(self._sealed) > self._limits.max_objects:
            raise TransferInputError(f"study needs more than {self._limits.max_objects} objects")
        return encrypt_object(
            plaintext,
            recipient=self._recipient,
            storage_key=self._storage_key,
            sink=self._sink_factory(),
            chunk_bytes=self._chunk_bytes,
            aead_chunk_bytes=self._aead_chunk_bytes,
        )


def package(items: Iterable[tuple[EntryMeta, bytes]], **options: Any) -> PackageResult:
    """Package every ``(meta, compressed)`` of ``items`` (see :class:`Packager` for ``options``)."""
    packager = Packager(**options)
    for meta, compressed in items:
        packager.add(meta, compressed)
    return packager.finish()


# --------------------------------------------------------------------------- reading back


def iter_plaintext(
    read_at: ReadAt, obj: ObjectInfo, key: bytes, *, end: int | None = None
) -> Iterator[bytes]:
    """Decrypt ``obj`` from its start, one secretstream chunk at a time, up to plaintext ``end``.

    Stopping early is safe: every chunk is authenticated on its own, and the whole
    ciphertext was checked against its id (a SHA-256 in the signed manifest).
    """
    name = obj.object_id.hex()[:16]
    count = max(1, -(-obj.plain_bytes // obj.aead_chunk_bytes))
    last = count - 1 if end is None or end >= obj.plain_bytes else max(0, end - 1) // obj.aead_chunk_bytes
    try:
        header = read_at(0, HEADER_BYTES)
        decryptor = StreamDecryptor(
            key, header, associated_data=OBJECT_AD, max_chunk_bytes=obj.aead_chunk_bytes
        )
        for index in range(last + 1):
            offset, length = aead_chunk_span(obj, index)
            ciphertext = read_at(offset, length)
            if len(ciphertext) != length:
                raise TransferInputError(f"object {name}: truncated at chunk {index}")
            plain, final = decryptor.pull(ciphertext)
            if final != (index == count - 1):
                raise TransferInputError(f"object {name}: final chunk at the wrong place")
            yield plain
        if last == count - 1:
            decryptor.finish()
    except DecryptionError as exc:
        raise TransferInputError(f"object {name}: {exc}") from None


def iter_entry(read_at: ReadAt, obj: ObjectInfo, key: bytes, entry: Entry) -> Iterator[bytes]:
    """The compressed bytes of ``entry`` in pieces of at most one secretstream chunk."""
    if entry.object_id != obj.object_id:
        raise TransferUsageError("entry and object do not match")
    start, stop = entry.offset, entry.offset + entry.length
    position = 0
    for plain in iter_plaintext(read_at, obj, key, end=stop):
        lo, hi = max(start - position, 0), min(stop - position, len(plain))
        if lo < hi:
            yield plain[lo:hi]
        position += len(plain)


def iter_object_entries(
    read_at: ReadAt, obj: ObjectInfo, key: bytes, entries: Iterable[Entry]
) -> Iterator[tuple[Entry, bytes]]:
    """Each of ``entries`` (all in ``obj``) with its compressed bytes, decrypting ``obj`` once.

    Entries come out in offset order; memory holds one entry plus one chunk.
    """
    todo = sorted((e for e in entries if e.object_id == obj.object_id), key=lambda e: e.offset)
    if not todo:
        return
    position = 0
    parts: list[bytes] = []
    index = 0
    for plain in iter_plaintext(read_at, obj, key, end=max(e.offset + e.length for e in todo)):
        chunk_end = position + len(plain)
        while index < len(todo):
            entry = todo[index]
            stop = entry.offset + entry.length
            lo, hi = max(entry.offset - position, 0), min(stop - position, len(plain))
            if lo < hi:
                parts.append(plain[lo:hi])
            if stop > chunk_end:
                break
            yield entry, b"".join(parts)
            parts = []
            index += 1
        position = chunk_end
    while index < len(todo):  # zero-length entries at the very end
        yield todo[index], b""
        index += 1


# --------------------------------------------------------------------------- local record


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """What a node keeps of a transfer it packaged: the manifest and the wrapped object keys."""

    manifest: Manifest
    local_keys: dict[bytes, bytes]


def seal_local_record(result: PackageResult, storage_key: bytes) -> bytes:
    """Encrypt the manifest and wrapped keys under a fresh key wrapped with ``storage_key``."""
    key = generate_key()
    inner = canonical.encode(
        {
            "manifest": result.manifest.encode(),
            "keys": [[oid, wrapped] for oid, wrapped in sorted(result.local_keys.items())],
        }
    )
    body = io.BytesIO()
    ad = LOCAL_RECORD_AD + result.manifest.transfer_id
    encrypt_stream(key, io.BytesIO(inner), body, associated_data=ad)
    return canonical.encode(
        {
            "type": LOCAL_RECORD_TYPE,
            "v": 1,
            "transfer_id": result.manifest.transfer_id,
            "key": wrap_key(storage_key, key, associated_data=ad),
            "body": body.getvalue(),
        }
    )


def open_local_record(
    data: bytes, storage_key: bytes, limits: ManifestLimits = DEFAULT_LIMITS
) -> LocalRecord:
    """Reverse :func:`seal_local_record`; :class:`TransferInputError` if corrupt or not ours."""
    try:
        outer = canonical.decode(data, max_bytes=2 * limits.max_encoded_bytes, max_depth=1)
        if not isinstance(outer, dict) or outer.get("type") != LOCAL_RECORD_TYPE or outer.get("v") != 1:
            raise TransferInputError("local record: not an mftp local record")
        ad = LOCAL_RECORD_AD + bytes(outer["transfer_id"])
        key = unwrap_key(storage_key, outer["key"], associated_data=ad)
        plain = io.BytesIO()
        decrypt_stream(key, io.BytesIO(outer["body"]), plain, associated_data=ad)
        inner = canonical.decode(
            plain.getvalue(),
            max_bytes=2 * limits.max_encoded_bytes,
            max_depth=3,
            max_containers=limits.max_objects + 2,
        )
        manifest = decode_manifest(inner["manifest"], limits)
        keys = {bytes(oid): bytes(wrapped) for oid, wrapped in inner["keys"]}
    except TransferInputError:
        raise
    except (DecodeError, DecryptionError, KeyError, TypeError, ValueError) as exc:
        raise TransferInputError(f"local record: {exc}") from None
    if set(keys) != {obj.object_id for obj in manifest.objects}:
        raise TransferInputError("local record: keys and objects disagree")
    return LocalRecord(manifest, keys)
