"""The studies a caller may view, their indexes, and their instances restored in memory.

**Scope.**  A :class:`Scope` says what one caller sees.  A clinician (:meth:`Scope.clinician`)
sees the transfers received for them (the sender named them as ``to_user``), those received
for the institution (no ``to_user``), and those they sent (the prepared copy the sender keeps).
A patient share (:meth:`Scope.share`, issue 19) sees an explicit set of studies, optionally of
explicit transfers.  Everything else does not exist for that caller (the routes answer 404).

**Indexes.**  Each visible transfer has a :class:`~.index.TransferIndex`: while a study
still arrives, the receiver tells the catalog (:meth:`Catalog.on_verified`, registered on
:attr:`~mftp.node.transfers.receiver.Receiver.verified_listeners`) of each batch of files it
verified, and the catalog restores and describes them in the node's worker processes (those
that prepare studies; a thread where the node has one), so the first series can be opened
before the last byte arrives and later ones appear on the next query.  Once the transfer is
complete the index is sealed into the blob store (``viewing-<id>``).  A transfer received
before this existed, or one we sent, is indexed on first use.

**Instances** are decrypted, decompressed and checked against the manifest in memory, never
written to disk.  Files share encrypted objects (buckets of small files), and the cipher cannot
seek, so reading one file restores every indexed file of its object; all of them go into a
bounded in-memory cache (:data:`CACHE_BYTES`), which a viewer loading a series then hits.

**Access records.**  :meth:`Catalog.opened` signs one ``STUDY_ACCESSED`` record (action
``view``) per (session or token, transfer) the first time a caller reads a study's metadata or
pixels, before anything is served, through the transfer service's access-record path.

Logs name transfers by id only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from mftp.crypto.signing import PublicIdentity, SigningIdentity
from mftp.transfer.codec import decompress
from mftp.transfer.errors import TransferError
from mftp.transfer.manifest import Entry, Manifest, ObjectInfo, check_restored, open_manifest
from mftp.transfer.package import (
    iter_object_entries,
    local_object_key,
    open_local_record,
    recipient_object_key,
    storage_key_for,
)

from ..errors import NodeInputError, NodeUsageError, StorageDamaged
from ..transfers.state import IN, OUT, TransferState, TransferStates
from .index import InstanceInfo, TransferIndex, describe, index_key, open_index, seal_index

log = logging.getLogger("mftp.node.viewing")

CACHE_BYTES: Final = 256 << 20
"""Restored instances kept in memory (least recently used first out)."""
MAX_RECORDED_OPENINGS: Final = 100_000
"""(credential, transfer) pairs remembered as recorded; beyond, the oldest may be recorded again."""
_VIEWABLE_IN: Final = frozenset({"fetching", "verifying", "complete"})
_VIEWABLE_OUT: Final = frozenset({"offered", "accepted", "delivered"})

RecordAccess = Callable[[TransferState, Manifest, str, str, str], Awaitable[str]]
"""``record_access(state, manifest, user, purpose, action)``: the transfer service's access record."""
KeyFor = Callable[[ObjectInfo], bytes]


class NotFound(NodeUsageError):
    """No such study, series, instance or frame for this caller (HTTP 404, whoever holds it)."""


class Objects(Protocol):
    """Complete objects to read (the blob store, or one of its files in a worker process)."""

    def reader(self, object_id: bytes) -> contextlib.AbstractContextManager[Callable[[int, int], bytes]]:
        """``read_at(offset, length)`` over a complete object."""


class Store(Objects, Protocol):
    """What the catalog needs of the node's blob store (:class:`~mftp.node.dataplane.blobstore.BlobStore`)."""

    def get_record(self, name: str, *, max_bytes: int = ...) -> bytes | None:
        """A stored record, or ``None``."""

    def put_record(self, name: str, data: bytes) -> None:
        """Store a record atomically."""

    def path_of(self, object_id: bytes) -> Path:
        """Where a complete object is (read-only use, by a worker process)."""


class Workers(Protocol):
    """The node's worker processes (:class:`~mftp.node.transfers.preparing.PreparePool`)."""

    def executor(self) -> ProcessPoolExecutor | None:
        """The running pool, or ``None`` (a node configured with one worker: use threads)."""

    def discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget a pool whose worker died."""


@dataclass(frozen=True)
class Scope:
    """What one caller may view (see the module docstring)."""

    party: str = ""  # "user:<name>": the clinician; "" for a share
    institution: bool = False  # also what was received for the institution (no recipient user)
    studies: frozenset[str] | None = None  # only these Study Instance UIDs (a share)
    transfers: frozenset[str] | None = None  # only these transfers (a share, if it says)

    @classmethod
    def clinician(cls, party: str) -> Scope:
        """A clinician of this institution, ``party`` = ``user:<name>``."""
        if not party.startswith("user:") or len(party) <= 5:
            raise NodeUsageError("a clinician's scope needs a user id")
        return cls(party=party, institution=True)

    @classmethod
    def share(cls, studies: Iterable[str], transfers: Iterable[str] | None = None) -> Scope:
        """A patient share: these studies (of these transfers, if given), nothing else."""
        return cls(studies=frozenset(studies), transfers=None if transfers is None else frozenset(transfers))

    def sees(self, state: TransferState, party_of: Callable[[str], str]) -> bool:
        """Whether a transfer is visible (``party_of`` resolves the state's user references)."""
        if self.transfers is not None:
            return state.transfer_id in self.transfers
        if self.studies is not None:  # a share without transfers: any transfer, its studies only
            return True
        if state.direction == IN:
            to_user = party_of(state.to_user) if state.to_user else ""
            return (to_user == self.party and bool(self.party)) or (not state.to_user and self.institution)
        return bool(self.party) and party_of(state.user) == self.party

    def sees_study(self, study: str) -> bool:
        """Whether a study of a visible transfer is visible."""
        return self.studies is None or study in self.studies


@dataclass
class _Source:
    """How to read one transfer's files: its (latest) manifest, entries and object keys."""

    manifest: Manifest
    key_for: KeyFor
    entries: dict[str, Entry] = field(default_factory=dict)
    objects: dict[bytes, ObjectInfo] = field(default_factory=dict)

    def learn(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.entries.update((e.name, e) for e in manifest.entries)
        self.objects.update((o.object_id, o) for o in manifest.objects)


def restore_object(store: Objects, obj: ObjectInfo, key: bytes, entries: list[Entry]) -> dict[str, bytes]:
    """The original bytes of ``entries`` (all in ``obj``), each checked; blocking, in memory only."""
    out: dict[str, bytes] = {}
    with store.reader(obj.object_id) as read_at:
        for entry, compressed in iter_object_entries(read_at, obj, key, entries):
            original = decompress(compressed, max_output_bytes=entry.size, name=entry.name)
            check_restored(entry, original)
            out[entry.name] = original
    return out


class _StoredFile:
    """One complete object's file, read as the blob store reads it (a worker process must not
    open the store itself: opening it clears the node's temporary files)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def reader(self, object_id: bytes) -> Iterator[Callable[[int, int], bytes]]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            yield lambda offset, length: os.pread(fd, length, offset)
        finally:
            os.close(fd)


def describe_object(path: str, obj: ObjectInfo, key: bytes, entries: list[Entry]) -> list[InstanceInfo]:
    """The descriptions of ``entries``, all in the complete object stored at ``path`` (blocking).

    Run in the node's worker processes: reading DICOM is Python work that holds the
    interpreter lock, about 9 ms per instance, and in a thread of the node it slowed the
    transfer being received (bench_transfer's loopback: ~24 MB/s, 33 MB/s with the work here).
    The object's key reaches our own worker over its pipe, as the de-identification secret
    does.  Only the descriptions go back, a few kilobytes each; the restored bytes are
    restored again if a viewer asks for them.
    """
    out = []
    for name, data in restore_object(_StoredFile(path), obj, key, entries).items():
        info = describe(name, data)
        if info is not None:
            out.append(info)
    return out


class _Cache:
    """Restored instances by (transfer, entry name), bounded in bytes, least recently used out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, key: tuple[str, str]) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.max_bytes // 4 or key in self._items:
            return
        self._items[key] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)


class Catalog:
    """The viewable studies of one node (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        states: TransferStates,
        identity: SigningIdentity,
        record_access: RecordAccess,
        cache_bytes: int = CACHE_BYTES,
        workers: Workers | None = None,
    ) -> None:
        self.store, self.states, self.identity = store, states, identity
        self.record_access, self.workers = record_access, workers
        self._storage_key = storage_key_for(identity)
        self._index_key = index_key(self._storage_key)
        self._indexes: dict[str, TransferIndex] = {}
        self._sources: dict[str, _Source] = {}
        self._building: dict[str, asyncio.Future[TransferIndex]] = {}
        self._inflight: dict[tuple[str, bytes], asyncio.Future[dict[str, bytes]]] = {}
        self._live: dict[str, asyncio.Future[None]] = {}
        self._recorded: OrderedDict[tuple[str, str], asyncio.Future[str]] = OrderedDict()
        self.cache = _Cache(cache_bytes)

    # ------------------------------------------------------------ what a scope sees

    def visible(self, scope: Scope) -> list[TransferState]:
        """The transfers ``scope`` may view, newest first."""
        out = []
        for state in self.states.all():
            viewable = _VIEWABLE_IN if state.direction == IN else _VIEWABLE_OUT
            if state.state in viewable and scope.sees(state, self.states.party):
                out.append(state)
        return out

    async def indexes(self, scope: Scope) -> list[TransferIndex]:
        """The indexes of every visible transfer (built on first use; those that fail are skipped)."""
        found = []
        for state in self.visible(scope):
            index = await self._index(state)
            if index is not None:
                found.append(index)
        return found

    def index_of(self, transfer_id: str) -> TransferIndex | None:
        """The index of a transfer already loaded by :meth:`indexes` (no scope check: callers did it)."""
        return self._indexes.get(transfer_id)

    async def instances(self, scope: Scope, study: str) -> list[tuple[str, InstanceInfo]]:
        """``(transfer id, instance)`` of every visible instance of ``study``; NotFound if none."""
        if not scope.sees_study(study):
            raise NotFound("no such study")
        found: dict[str, tuple[str, InstanceInfo]] = {}
        for index in await self.indexes(scope):
            for info in index.instances.values():
                if info.study == study and info.sop not in found:
                    found[info.sop] = (index.transfer_id, info)
        if not found:
            raise NotFound("no such study")
        return list(found.values())

    # ------------------------------------------------------------ indexes

    async def _index(self, state: TransferState) -> TransferIndex | None:
        tid = state.transfer_id
        index = self._indexes.get(tid)
        if state.direction == IN and state.state != "complete":
            return index  # arriving: what on_verified added so far (None before the first batch)
        if index is not None and index.complete:
            return index
        building = self._building.get(tid)
        if building is None:
            building = self._build(state)
        if index is not None:
            # Arrived while we watched: answer from what was indexed on the way (the build
            # completes this same index in place) rather than wait for the sealing, but not
            # before the last batches are in: a complete transfer is answered whole.
            await self.settle(tid)
            return index
        try:
            index = await asyncio.shield(building)
        except (NodeInputError, StorageDamaged, TransferError, OSError) as exc:
            # The study is left out of answers (and logged), it does not break the others.
            log.warning(
                "study not viewable", extra={"fields": {"transfer": tid, "error": type(exc).__name__}}
            )
            return None
        self._indexes[tid] = index
        return index

    async def _load_or_build(self, state: TransferState) -> TransferIndex:
        tid = state.transfer_id
        sealed = self.store.get_record(f"viewing-{tid}", max_bytes=256 << 20)
        if sealed is not None:
            stored = await asyncio.to_thread(open_index, sealed, self._index_key, tid)
            if stored.complete:
                return stored
        source = await self._source(state)
        await self.settle(tid)  # the batches of files that arrived last
        index = self._indexes.get(tid) or TransferIndex(tid)
        known = {i.name for i in index.instances.values()}
        todo = [e for e in source.manifest.entries if e.name not in known]
        await self._describe_into(index, source, todo)
        index.complete = True
        sealed = await asyncio.to_thread(seal_index, index, self._index_key)
        self.store.put_record(f"viewing-{tid}", sealed)
        log.info(
            "study indexed for viewing",
            extra={"fields": {"transfer": tid, "instances": len(index.instances)}},
        )
        return index

    async def _describe_into(self, index: TransferIndex, source: _Source, entries: Collection[Entry]) -> None:
        """Restore and describe ``entries``; add them to ``index`` (and, described here, to the cache).

        In the node's worker processes, one task per object, when it has them; else in a thread.
        The index and the cache change on the event loop only (the workers return their results).
        """
        by_object: dict[bytes, list[Entry]] = {}
        for entry in entries:
            by_object.setdefault(entry.object_id, []).append(entry)
        executor = self.workers.executor() if self.workers is not None and by_object else None
        if executor is not None:
            try:
                index.add(await self._describe_elsewhere(executor, source, by_object))
                return
            except BrokenProcessPool:  # a worker died (out of memory?): the next call starts new ones
                assert self.workers is not None
                self.workers.discard(executor)
        described = await asyncio.to_thread(self._describe, source, by_object)
        for info, data in described:
            self.cache.put((index.transfer_id, info.name), data)
        index.add(info for info, _ in described)

    async def _describe_elsewhere(
        self, executor: ProcessPoolExecutor, source: _Source, by_object: dict[bytes, list[Entry]]
    ) -> list[InstanceInfo]:
        objects = [source.objects[object_id] for object_id in by_object]
        # Unsealing each object's key is public-key work (0.1 ms): not on the event loop.
        keys = await asyncio.to_thread(lambda: [source.key_for(obj) for obj in objects])
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(
                executor,
                describe_object,
                str(self.store.path_of(obj.object_id)),
                obj,
                key,
                by_object[obj.object_id],
            )
            for obj, key in zip(objects, keys, strict=True)
        ]
        return [info for infos in await asyncio.gather(*jobs) for info in infos]

    def _describe(
        self, source: _Source, by_object: dict[bytes, list[Entry]]
    ) -> list[tuple[InstanceInfo, bytes]]:
        """Each entry that is DICOM, described, with its bytes (blocking)."""
        out = []
        for object_id, group in by_object.items():
            obj = source.objects[object_id]
            for name, data in restore_object(self.store, obj, source.key_for(obj), group).items():
                info = describe(name, data)
                if info is not None:
                    out.append((info, data))
        return out

    async def _source(self, state: TransferState) -> _Source:
        tid = state.transfer_id
        source = self._sources.get(tid)
        if source is not None and (
            state.direction != IN or state.state != "complete" or not source.manifest.partial
        ):
            return source  # an arriving study reads from the latest manifest the receiver gave
        if state.direction == OUT:
            sealed = self.store.get_record(f"local-{tid}", max_bytes=256 << 20)
            if sealed is None:
                raise NodeInputError(f"transfer {tid} has no local record")
            local = await asyncio.to_thread(open_local_record, sealed, self._storage_key)
            keys = local.local_keys

            def key_for(obj: ObjectInfo) -> bytes:
                return local_object_key(self._storage_key, obj.object_id, keys[obj.object_id])

            source = _Source(local.manifest, key_for)
            source.learn(local.manifest)
        else:
            sealed = self.store.get_record(f"offer-{tid}", max_bytes=256 << 20)
            if sealed is None:
                raise NodeInputError(f"transfer {tid} has no stored manifest")
            sender = PublicIdentity.from_sign_key(bytes.fromhex(state.peer_key))
            manifest = await asyncio.to_thread(open_manifest, sealed, self.identity, sender=sender)
            source = self._sources.get(tid) or _Source(manifest, self._recipient_key)
            source.learn(manifest)
        self._sources[tid] = source
        return source

    def _recipient_key(self, obj: ObjectInfo) -> bytes:
        return recipient_object_key(self.identity, obj)

    # ------------------------------------------------------------ while the study arrives

    def on_verified(self, state: TransferState, manifest: Manifest, entries: Collection[Entry]) -> None:
        """The receiver verified ``entries`` of ``manifest`` (maybe partial): index them soon.

        Called on the event loop; the work runs in the worker processes (:func:`describe_object`),
        one batch per transfer at a time, so the first images are viewable while the rest still
        arrives.  Once the transfer is complete, the whole index is sealed into the blob store.
        """
        tid = state.transfer_id
        source = self._sources.get(tid)
        if source is None:
            source = self._sources[tid] = _Source(manifest, self._recipient_key)
        source.learn(manifest)
        previous = self._live.get(tid)
        task = asyncio.ensure_future(self._index_batch(state, list(entries), previous))
        self._live[tid] = task
        task.add_done_callback(lambda t: self._live.pop(tid, None) if self._live.get(tid) is t else None)

    async def _index_batch(
        self, state: TransferState, entries: list[Entry], previous: asyncio.Future[None] | None
    ) -> None:
        tid = state.transfer_id
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        index = self._indexes.setdefault(tid, TransferIndex(tid))
        known = {i.name for i in index.instances.values()}
        try:
            await self._describe_into(index, self._sources[tid], [e for e in entries if e.name not in known])
        except (TransferError, NodeUsageError, OSError) as exc:
            log.warning(
                "arriving files not indexed", extra={"fields": {"transfer": tid, "error": type(exc).__name__}}
            )
        if state.state == "complete" and not index.complete and tid not in self._building:
            self._build(state)

    def _build(self, state: TransferState) -> asyncio.Future[TransferIndex]:
        """Start loading or building (and sealing) a transfer's whole index; one at a time per transfer."""
        tid = state.transfer_id
        building = asyncio.ensure_future(self._load_or_build(state))
        self._building[tid] = building

        def done(task: asyncio.Future[TransferIndex]) -> None:
            self._building.pop(tid, None)
            error = None if task.cancelled() else task.exception()
            if error is not None:  # also raised to whoever awaited it; logged for the builds nobody awaits
                fields = {"transfer": tid, "error": type(error).__name__}
                log.warning("study not indexed", extra={"fields": fields})
            elif not task.cancelled():
                self._indexes[tid] = task.result()  # the live index completed, or the sealed one

        building.add_done_callback(done)
        return building

    async def settle(self, transfer_id: str) -> None:
        """Wait for the indexing of arrived files to catch up."""
        while (task := self._live.get(transfer_id)) is not None and task is not asyncio.current_task():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            if self._live.get(transfer_id) is task:
                break

    # ------------------------------------------------------------ reading

    async def read(self, transfer_id: str, info: InstanceInfo) -> bytes:
        """The original bytes of an indexed instance, restored and checked in memory."""
        data = self.cache.get((transfer_id, info.name))
        if data is not None:
            return data
        state = self.states.get(transfer_id)
        if state is None:
            raise NotFound("no such instance")
        source = await self._source(state)
        entry = source.entries.get(info.name)
        if entry is None:
            raise NotFound("no such instance")
        key = (transfer_id, entry.object_id)
        task = self._inflight.get(key)
        if task is None:
            index = self._indexes.get(transfer_id)
            wanted = {i.name for i in index.instances.values()} if index else set()
            wanted.add(info.name)
            group = [
                e for e in source.entries.values() if e.object_id == entry.object_id and e.name in wanted
            ]
            task = asyncio.ensure_future(
                self._restore(transfer_id, source, source.objects[entry.object_id], group)
            )
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        restored = await asyncio.shield(task)
        return restored[info.name]

    async def _restore(
        self, transfer_id: str, source: _Source, obj: ObjectInfo, group: list[Entry]
    ) -> dict[str, bytes]:
        try:
            restored = await asyncio.to_thread(restore_object, self.store, obj, source.key_for(obj), group)
        except TransferError:
            log.warning("stored instance did not verify", extra={"fields": {"transfer": transfer_id}})
            raise NodeInputError(f"an instance of transfer {transfer_id} did not verify") from None
        for name, blob in restored.items():
            self.cache.put((transfer_id, name), blob)
        return restored

    # ------------------------------------------------------------ access records

    async def opened(self, credential: str, party: str, transfer_ids: Iterable[str]) -> None:
        """Record one ``view`` access per (credential, transfer) not yet recorded; before serving.

        ``credential`` identifies the session or token (a hash, never the secret); concurrent
        first requests of one opening wait for the same record.  A record that could not be
        submitted is tried again by the next request.
        """
        for tid in sorted(set(transfer_ids)):
            key = (credential, tid)
            task = self._recorded.get(key)
            if task is None:
                task = asyncio.ensure_future(self._record(tid, party))
                self._recorded[key] = task
                task.add_done_callback(functools.partial(self._forget_failed, key))
                while len(self._recorded) > MAX_RECORDED_OPENINGS:
                    self._recorded.popitem(last=False)
            await asyncio.shield(task)

    def _forget_failed(self, key: tuple[str, str], task: asyncio.Future[str]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._recorded.get(key) is task:
            del self._recorded[key]

    async def _record(self, tid: str, party: str) -> str:
        state = self.states.get(tid)
        if state is None:
            raise NotFound("no such study")
        source = await self._source(state)
        record_id = await self.record_access(state, source.manifest, party, state.purpose, "view")
        log.info("study opened in the viewer", extra={"fields": {"transfer": tid}})
        return record_id


def credential_key(request_headers: Any, cookies: Any) -> str:
    """A stable, non-secret id of the request's session or token (SHA-256 of the credential)."""
    import hashlib

    secret = cookies.get("mftp_session") or request_headers.get("Authorization", "")
    return hashlib.sha256(b"mftp viewing credential\0" + secret.encode()).hexdigest()
