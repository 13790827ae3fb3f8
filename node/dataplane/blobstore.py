"""The node's blob store: encrypted objects on disk, by content, and resumable downloads.

Layout under ``data_dir`` (directories mode 0700, files 0600)::

    blobs/ab/cdef...        complete objects, named by the hex SHA-256 of their ciphertext
    partial/<id>            an object being fetched, written at chunk offsets (sparse)
    partial/<id>.state      its verified-chunk bitmap (:mod:`mftp.transfer.fetchplan` format)
    tmp/                    objects being written by the packager
    records/<name>          small named records (sealed manifests, local records, served index)

Only ciphertext and encrypted records are ever written: packaging encrypts before
:class:`ObjectWriter` sees a byte, fetched chunks are ciphertext, and entries are
decrypted in memory (:meth:`BlobStore.open_entry`) straight to the caller's export.

**Atomicity.**  A complete object appears under its id only after its SHA-256 was
checked and the file fsynced (write to ``tmp/`` or ``partial/``, fsync, rename,
fsync the directory).  A fetched chunk is written at its offset and fdatasynced
*before* the state file claiming it is replaced (temporary file, fsync, rename),
so the state never claims bytes that are not on disk.  The directory is not
fsynced per chunk: after a crash an older state may come back, which only costs
refetching a chunk.  On load, every chunk a state claims is re-hashed from disk
(local reads only) and dropped if it does not match, so even a damaged partial
file never yields a wrong object.  Leftover temporary files are removed at start,
so an interrupted packaging leaves nothing half-written.

All methods block (disk I/O): async callers run them with ``asyncio.to_thread``.
:class:`PartialObject` may be written from several threads at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError
from mftp.crypto.signing import SigningIdentity
from mftp.transfer.errors import TransferInputError
from mftp.transfer.fetchplan import ChunkRef, ObjectProgress, chunk_ref
from mftp.transfer.manifest import HASH_BYTES, Entry, Manifest, ObjectInfo
from mftp.transfer.package import iter_entry, iter_object_entries, recipient_object_key

from ..errors import NodeInputError, NodeUsageError, StorageDamaged

READ_PIECE_BYTES: Final = 1 << 20
MAX_RECORD_BYTES: Final = 256 << 20
SERVED_TYPE: Final = "mftp-served-transfer"
_RECORD_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,119}")
_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")
_O_BINARY: Final = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_datasync: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, sync_dir: bool) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        _fsync_dir(path.parent)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _hash_file(fd: int, size: int) -> bytes:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        piece = os.pread(fd, min(READ_PIECE_BYTES, size - offset), offset)
        if not piece:
            break
        digest.update(piece)
        offset += len(piece)
    return digest.digest()


class ObjectWriter:
    """An :class:`~mftp.transfer.package.ObjectSink` writing one object to ``tmp/``."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._path = store.root / "tmp" / f"{secrets.token_hex(16)}.obj"
        self._fd: int | None = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Append ciphertext."""
        if self._fd is None:
            raise NodeUsageError("object writer is closed")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def commit(self, object_id: bytes) -> None:
        """Check the id, make the bytes durable and move them to ``blobs/``."""
        if self._fd is None:
            raise NodeUsageError("object writer is closed")
        if self._hash.digest() != object_id:
            self.abort()
            raise NodeUsageError("object id is not the SHA-256 of what was written")
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        self._store._install(self._path, object_id)

    def abort(self) -> None:
        """Delete what was written."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._path.unlink(missing_ok=True)


class PartialObject:
    """An object being fetched: chunk writes at their offsets, and its persisted progress."""

    def __init__(self, store: BlobStore, obj: ObjectInfo, progress: ObjectProgress, fd: int) -> None:
        self._store = store
        self.obj = obj
        self.progress = progress
        self._fd: int | None = fd
        self._lock = threading.Lock()
        name = obj.object_id.hex()
        self._data_path = store.root / "partial" / name
        self._state_path = store.root / "partial" / f"{name}.state"

    def write_chunk(self, ref: ChunkRef, data: bytes) -> bool:
        """Store a *verified* chunk durably and record it; returns ``True`` once all chunks are in."""
        if ref.object_id != self.obj.object_id or len(data) != ref.length:
            raise NodeUsageError("chunk does not belong to this object")
        fd = self._require_fd()
        _pwrite_all(fd, data, ref.start)
        # The bytes must be durable before any state file claims them.
        _datasync(fd)
        with self._lock:
            self.progress.mark(ref.index)
            _write_atomic(self._state_path, self.progress.encode(), sync_dir=False)
            return self.progress.complete

    def finalize(self) -> None:
        """Check the whole object against its id and move it into ``blobs/``.

        Raises :class:`NodeInputError` (and forgets the partial download) if the
        chunks, each matching the manifest, do not add up to the object id: the
        sender's manifest is inconsistent and no refetch can fix it.
        """
        fd = self._require_fd()
        if not self.progress.complete:
            raise NodeUsageError("object is not complete")
        if _hash_file(fd, self.obj.size) != self.obj.object_id:
            self.discard()
            raise NodeInputError(f"object {self.obj.object_id.hex()[:16]}: chunks do not add up to its id")
        os.fsync(fd)
        self.close()
        self._store._install(self._data_path, self.obj.object_id)
        self._state_path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget the partial download."""
        self.close()
        self._data_path.unlink(missing_ok=True)
        self._state_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the file (the download stays resumable)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise NodeUsageError("partial object is closed")
        return self._fd


class BlobStore:
    """Content-addressed encrypted objects under ``data_dir`` (see the module docstring).

    Make one per node at start: construction removes temporary files left by a
    crash, which would include those of a packaging still running elsewhere.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir)
        for sub in ("blobs", "partial", "tmp", "records"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        # An interrupted packaging or state update leaves temporary files; none is ever resumed.
        for path in (self.root / "tmp").iterdir():
            path.unlink(missing_ok=True)
        for sub in ("partial", "records"):
            for path in (self.root / sub).glob(".*.tmp"):
                path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- complete objects

    def path_of(self, object_id: bytes) -> Path:
        """Where object ``object_id`` lives (whether or not it is there)."""
        if len(object_id) != HASH_BYTES:
            raise NodeUsageError("an object id is 32 bytes")
        name = object_id.hex()
        return self.root / "blobs" / name[:2] / name[2:]

    def has(self, object_id: bytes) -> bool:
        """``True`` if the complete object is in the store."""
        return self.path_of(object_id).is_file()

    def size_of(self, object_id: bytes) -> int | None:
        """The object's size, or ``None`` if it is not in the store."""
        try:
            return self.path_of(object_id).stat().st_size
        except FileNotFoundError:
            return None

    def object_writer(self) -> ObjectWriter:
        """A sink for :class:`~mftp.transfer.package.Packager` (pass the method as ``sink_factory``)."""
        return ObjectWriter(self)

    def delete(self, object_id: bytes) -> None:
        """Remove a complete object (no error if absent)."""
        self.path_of(object_id).unlink(missing_ok=True)

    def _install(self, source: Path, object_id: bytes) -> None:
        target = self.path_of(object_id)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(source, target)  # same id means same bytes, so replacing a twin is harmless
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)

    @contextlib.contextmanager
    def reader(self, object_id: bytes) -> Iterator[Callable[[int, int], bytes]]:
        """``read_at(offset, length)`` over a complete object, for the ``with`` block."""
        try:
            fd = os.open(self.path_of(object_id), os.O_RDONLY | _O_BINARY)
        except FileNotFoundError:
            raise NodeUsageError(f"object {object_id.hex()[:16]} is not in the store") from None
        try:
            yield lambda offset, length: os.pread(fd, length, offset)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- partial downloads

    def has_partial(self, object_id: bytes) -> bool:
        """``True`` if a download of the object was started."""
        return (self.root / "partial" / f"{object_id.hex()}.state").is_file()

    def open_partial(self, obj: ObjectInfo) -> PartialObject:
        """Open (or start) the download of ``obj``, keeping every chunk still verified on disk."""
        name = obj.object_id.hex()
        data_path = self.root / "partial" / name
        state_path = self.root / "partial" / f"{name}.state"
        fd = os.open(data_path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
        try:
            if os.fstat(fd).st_size != obj.size:
                os.ftruncate(fd, obj.size)
            progress = self._load_progress(obj, state_path, fd)
        except BaseException:
            os.close(fd)
            raise
        return PartialObject(self, obj, progress, fd)

    def _load_progress(self, obj: ObjectInfo, state_path: Path, fd: int) -> ObjectProgress:
        try:
            data = state_path.read_bytes()
        except FileNotFoundError:
            return ObjectProgress(obj)
        try:
            progress = ObjectProgress.decode(obj, data)
        except TransferInputError:
            return ObjectProgress(obj)  # damaged or foreign state: start this object over
        for index in progress.verified_indices():
            ref = chunk_ref(obj, index)
            piece = os.pread(fd, ref.length, ref.start)
            if hashlib.sha256(piece).digest() != obj.chunk_hash(index):
                progress.unmark(index)
        return progress

    def discard_partial(self, object_id: bytes) -> None:
        """Forget a partial download (no error if there is none)."""
        name = object_id.hex()
        (self.root / "partial" / name).unlink(missing_ok=True)
        (self.root / "partial" / f"{name}.state").unlink(missing_ok=True)

    def discard_transfer(self, manifest: Manifest) -> None:
        """Forget every partial download of a cancelled transfer."""
        for obj in manifest.objects:
            self.discard_partial(obj.object_id)

    # ----------------------------------------------------------------- records

    def record_path(self, name: str) -> Path:
        """Where record ``name`` lives (to stream a large one)."""
        if not _RECORD_NAME.fullmatch(name):
            raise NodeUsageError(f"bad record name {name!r}")
        return self.root / "records" / name

    def put_record(self, name: str, data: bytes) -> None:
        """Store ``data`` (already encrypted, or free of anything secret) under ``name``, atomically."""
        if len(data) > MAX_RECORD_BYTES:
            raise NodeUsageError(f"a record is at most {MAX_RECORD_BYTES} bytes")
        _write_atomic(self.record_path(name), data, sync_dir=True)

    def get_record(self, name: str, *, max_bytes: int = MAX_RECORD_BYTES) -> bytes | None:
        """The record ``name``, or ``None``; :class:`NodeInputError` if larger than ``max_bytes``."""
        path = self.record_path(name)
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            raise NodeInputError(f"record {name} exceeds {max_bytes} bytes")
        return data

    def delete_record(self, name: str) -> None:
        """Remove a record (no error if absent)."""
        self.record_path(name).unlink(missing_ok=True)

    def save_served(self, manifest: Manifest) -> None:
        """Record that the data plane may serve ``manifest``'s objects (under its capabilities)."""
        value = {
            "type": SERVED_TYPE,
            "v": 1,
            "manifest_sha256": manifest.sha256,
            "objects": b"".join(obj.object_id for obj in manifest.objects),
        }
        self.put_record(f"served-{manifest.transfer_id.hex()}", canonical.encode(value))

    def load_served(self, transfer_id: bytes) -> tuple[bytes, frozenset[bytes]] | None:
        """``(manifest_sha256, object ids)`` of a served transfer, or ``None``."""
        data = self.get_record(f"served-{transfer_id.hex()}")
        if data is None:
            return None
        try:
            value: Any = canonical.decode(data, max_depth=1)
            ids: bytes = value["objects"]
            if value["type"] != SERVED_TYPE or len(ids) % HASH_BYTES:
                raise ValueError("not a served-transfer record")
            return value["manifest_sha256"], frozenset(
                ids[i : i + HASH_BYTES] for i in range(0, len(ids), HASH_BYTES)
            )
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            raise StorageDamaged(f"served record of transfer {transfer_id.hex()} is corrupt: {exc}") from None

    # ----------------------------------------------------------------- reading entries

    def open_entry(
        self,
        manifest: Manifest,
        entry: Entry,
        *,
        identity: SigningIdentity | None = None,
        key: bytes | None = None,
    ) -> Iterator[bytes]:
        """The compressed bytes of ``entry``, decrypted in pieces of at most one AEAD chunk.

        The object key is unsealed with ``identity`` (the recipient) or given as
        ``key`` (the sender, from its local record).  Nothing is written to disk.
        """
        obj = manifest.object(entry.object_id)
        object_key = self._key(obj, identity, key)
        with self.reader(obj.object_id) as read_at:
            yield from iter_entry(read_at, obj, object_key, entry)

    def read_entry(
        self,
        manifest: Manifest,
        entry: Entry,
        *,
        identity: SigningIdentity | None = None,
        key: bytes | None = None,
    ) -> bytes:
        """:meth:`open_entry` joined: the entry's compressed bytes, ready for the codec."""
        return b"".join(self.open_entry(manifest, entry, identity=identity, key=key))

    def iter_entries(
        self, manifest: Manifest, key_for: Callable[[ObjectInfo], bytes]
    ) -> Iterator[tuple[Entry, bytes]]:
        """Every entry with its compressed bytes, decrypting each object once (in manifest order).

        ``key_for(obj)`` returns the object key (e.g. ``functools.partial(recipient_object_key,
        identity)``).  Memory holds one entry plus one AEAD chunk.
        """
        by_object: dict[bytes, list[Entry]] = {}
        for entry in manifest.entries:
            by_object.setdefault(entry.object_id, []).append(entry)
        for obj in manifest.objects:
            with self.reader(obj.object_id) as read_at:
                yield from iter_object_entries(read_at, obj, key_for(obj), by_object.get(obj.object_id, []))

    @staticmethod
    def _key(obj: ObjectInfo, identity: SigningIdentity | None, key: bytes | None) -> bytes:
        if (identity is None) == (key is None):
            raise NodeUsageError("give exactly one of identity and key")
        if key is not None:
            return key
        assert identity is not None
        return recipient_object_key(identity, obj)
