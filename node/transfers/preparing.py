"""Preparing a study's objects and checking them: de-identify, compress, encrypt, verify, restore.

Used by :mod:`.service` and :mod:`.receiver`.  DICOM instances travel; attachments of the case
(PDF, STL...) only in identified mode, wrapped as encapsulated-document instances of the study
(in the other modes their content cannot be de-identified: they are reported as not sent, see
:mod:`.dimse_and_attachments`).  Files are packaged as ``00000.dcm``, ``00001.dcm``...: names
never carry patient data.  Everything here blocks or streams; callers run it in a worker thread
or await it.

De-identifying and compressing is CPU work (pydicom is pure Python): a study of at least
:data:`PARALLEL_MIN_FILES` files is prepared by ``transfer.prepare_workers`` processes
(``forkserver``, so no thread of the node is forked; a :class:`PreparePool` started with the
node and shared by its sends), at most two files per worker in flight,
and packaged in order in the calling thread.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Final

from mftp.transfer.codec import compress, decompress, describe
from mftp.transfer.deid import Policy, deidentify_file
from mftp.transfer.errors import TransferInputError
from mftp.transfer.manifest import Entry, EntryMeta, Manifest, ObjectInfo, check_restored
from mftp.transfer.ocr_tesseract import Tesseract
from mftp.transfer.package import Packager, PackageResult, iter_object_entries
from mftp.transfer.study import FileReport

from ..clock import SYSTEM_CLOCK
from ..dataplane.blobstore import BlobStore
from ..errors import NodeError
from ..pacs import LocalFile, describe_path
from ..pacs.common import open_file_nofollow

ENTRY_CODEC: Final = "mftp-dcm"
PARALLEL_MIN_FILES: Final = 16
AUTO_SPEED_MAX_CPUS: Final = 4
WORKER_WATCH_S: Final = 2.0
WORKER_NICENESS: Final = 5
VERIFY_THREADS: Final = 2
PUBLISH_INTERVAL_S: Final = 0.25
PUBLISH_S_PER_ENTRY: Final = 0.001


def publish_interval_s(entries: int) -> float:
    """How long between two partial manifests of a study prepared so far up to ``entries`` files.

    Each partial manifest lists everything sealed so far, and building, signing and opening
    one costs about 45 us per entry on both sides: an interval growing with the entries keeps
    that under ~5 % of the preparing time, and the recipient at most ~1 ms per file behind.
    """
    return max(PUBLISH_INTERVAL_S, PUBLISH_S_PER_ENTRY * entries)


def prefers_speed(compression: str, cpus: int | None = None) -> bool:
    """Whether ``transfer.compression`` asks for the faster image codec on this host."""
    if compression == "auto":
        return (cpus or os.cpu_count() or 1) <= AUTO_SPEED_MAX_CPUS
    return compression == "speed"


TEXT_FINDER: Final = Tesseract() if Tesseract.available() else None
"""OCR beside the model-free text detector when ``tesseract`` is installed (``make`` installs it)."""

Prepared = tuple[EntryMeta, bytes, str]
"""A prepared file: its entry, its compressed bytes, and what was done to its pixels ("" if nothing)."""


def prepare_file(path: str, name: str, policy: Policy, secret: bytes, prefer_speed: bool = False) -> Prepared:
    """De-identify and compress one file (a module function, so a worker process can run it)."""
    result = deidentify_file(_read_nofollow(path, name), policy, secret, name=name, text_finder=TEXT_FINDER)
    data = result.data
    blob = compress(data, name=name, prefer_speed=prefer_speed)
    # The blob records the SHA-256 of ``data`` (compress hashed it): no second pass over the file.
    digest = bytes.fromhex(describe(blob, name=name).sha256)
    cleaned = result.pixels.summary if result.pixels is not None else ""
    return EntryMeta(name, "instance", len(data), digest, ENTRY_CODEC), blob, cleaned


def _read_nofollow(path: str, name: str) -> bytes:
    """The bytes of the file the scan found, read again without following a link at any level.

    Between the scan and this read a link could be swapped in for the file or a folder above
    it (by anyone who can write into a source folder): that file is then refused by name.
    """
    try:
        fd = open_file_nofollow(Path(os.path.abspath(path)))
    except OSError as exc:
        raise TransferInputError(f"cannot be read: {exc.strerror or exc}", name=name) from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _warm() -> None:
    """Nothing: run once in each worker so it is started (and has imported us) before a send."""


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the pid was reused by another user's process
            return False
        return True


def _exit_with(node_pid: int) -> None:
    """Worker initializer: end this worker when the node that started it is gone.

    A pool worker holds both ends of its own call queue, so a node killed outright (SIGKILL,
    the OOM killer) would leave it, and the forkserver it keeps alive, waiting forever.
    """

    def watch() -> None:
        while _process_alive(node_pid):
            time.sleep(WORKER_WATCH_S)
        os._exit(0)

    threading.Thread(target=watch, name="watch-node", daemon=True).start()
    # Preparing a study is batch work: the node's consensus votes and API answers, which
    # others wait for, must win the CPU when a big study is being prepared beside them.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


_TRACKER_WARNING: Final = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker() -> None:
    """Keep the node's log JSON when it was killed outright.

    multiprocessing's resource tracker (a process of its own, started with the pool) then
    cleans the pool's semaphores and says so with a plain-text warning on the node's stderr,
    the log.  It starts with the node's ``-W`` options, so one placed here silences it.
    """
    if _TRACKER_WARNING not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_WARNING)


class PreparePool:
    """The worker processes that de-identify and compress, started once and kept by the node.

    Starting ``forkserver`` workers that import pydicom and the codecs takes a second or two;
    paid once per node instead of once per study.  The forkserver preloads this module, so a
    worker that dies is replaced by a cheap fork.  Thread-safe: concurrent sends share it.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> ProcessPoolExecutor | None:
        """The running executor (started on first use), or ``None`` with fewer than 2 workers."""
        if self.workers <= 1:
            return None
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__])
                _quiet_resource_tracker()
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
                )
            return self._executor

    def warm(self) -> None:
        """Start every worker now (blocking), so the first study does not wait for them."""
        executor = self.executor()
        if executor is not None:
            for future in [executor.submit(_warm) for _ in range(self.workers)]:
                future.result()

    def discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget an executor whose worker died; the next study starts a new one."""
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Stop the workers (blocking)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


Dropped = Callable[[str, str], None]
"""``dropped(source name, reason)``: a file of the study that does not travel."""
Cleaned = Callable[[str, str], None]
"""``cleaned(source name, what was done)``: a file whose pixels were cleaned before it travels."""

MAX_WORKER_DEATHS: Final = 3
"""Files whose preparing process died that a study survives (each costs a fresh pool)."""
WORKER_DIED: Final = "its preparing process died (a codec crash or out of memory)"

_Job = tuple[str, str, str]  # (path, entry name, source name)


def _prepared(
    files: list[LocalFile],
    policy: Policy,
    secret: bytes,
    pool: PreparePool,
    prefer_speed: bool,
    dropped: Dropped,
) -> Iterator[tuple[_Job, Prepared]]:
    """Each file prepared, in order; by the pool's processes for a big enough study.

    A file refused as input (:class:`TransferInputError`: not de-identifiable, malformed)
    is reported to ``dropped`` by its source name and the study goes on.  So is a file
    whose worker process dies, found by retrying the files that were in flight one at a
    time in fresh workers; past :data:`MAX_WORKER_DEATHS` such files the study fails.
    """
    jobs = [(str(item.path), f"{index:05d}.dcm", item.info.name) for index, item in enumerate(files)]
    executor = pool.executor() if len(jobs) >= PARALLEL_MIN_FILES else None
    if executor is None:
        for job in jobs:
            result = _prepare_here(job, policy, secret, prefer_speed, dropped)
            if result is not None:
                yield job, result
        return
    yield from _prepared_by_pool(jobs, policy, secret, pool, prefer_speed, dropped)


def _prepare_here(
    job: _Job, policy: Policy, secret: bytes, prefer_speed: bool, dropped: Dropped
) -> Prepared | None:
    path, name, source = job
    try:
        return prepare_file(path, name, policy, secret, prefer_speed)
    except TransferInputError as exc:
        dropped(source, _reason(exc, name))
        return None


def _reason(exc: TransferInputError, name: str) -> str:
    return str(exc).removeprefix(f"{name}: ")


_Submit = Callable[[ProcessPoolExecutor, _Job], "Future[Prepared]"]


def _prepared_by_pool(
    jobs: list[_Job], policy: Policy, secret: bytes, pool: PreparePool, prefer_speed: bool, dropped: Dropped
) -> Iterator[tuple[_Job, Prepared]]:
    pending = iter(jobs)
    window: deque[tuple[_Job, Future[Prepared]]] = deque()
    deaths = 0

    def submit(executor: ProcessPoolExecutor, job: _Job) -> Future[Prepared]:
        try:
            return executor.submit(prepare_file, job[0], job[1], policy, secret, prefer_speed)
        except BrokenProcessPool as exc:  # it died before this job: handled with the ones in flight
            failed: Future[Prepared] = Future()
            failed.set_exception(exc)
            return failed

    try:
        while True:
            executor = pool.executor()
            assert executor is not None
            while len(window) < 2 * pool.workers and (job := next(pending, None)) is not None:
                window.append((job, submit(executor, job)))
            if not window:
                return
            job, future = window.popleft()
            try:
                yield job, future.result()
            except TransferInputError as exc:
                dropped(job[2], _reason(exc, job[1]))
            except BrokenProcessPool:
                pool.discard(executor)
                suspects = [job] + [queued for queued, _ in window]
                window.clear()
                deaths += yield from _one_by_one(suspects, submit, pool, dropped, MAX_WORKER_DEATHS - deaths)
    finally:
        for _, queued in window:  # abandoned (failed or cancelled send): leave the pool to others
            queued.cancel()


def _one_by_one(
    suspects: list[_Job], submit: _Submit, pool: PreparePool, dropped: Dropped, deaths_allowed: int
) -> Generator[tuple[_Job, Prepared], None, int]:
    """Prepare the files that were in flight when a worker died one at a time, in fresh workers:
    a file that kills its worker again is left out.  Returns how many did."""
    deaths = 0
    for job in suspects:
        executor = pool.executor()
        assert executor is not None
        try:
            yield job, submit(executor, job).result()
        except TransferInputError as exc:
            dropped(job[2], _reason(exc, job[1]))
        except BrokenProcessPool:
            pool.discard(executor)
            deaths += 1
            if deaths > deaths_allowed:
                too_many = MAX_WORKER_DEATHS + 1
                raise NodeError(f"worker processes died on {too_many} files: the study is not sent") from None
            dropped(job[2], WORKER_DIED)
    return deaths


def package_study(
    files: list[LocalFile],
    packager: Packager,
    store: BlobStore,
    policy: Policy,
    secret: bytes,
    progress: Callable[[int, int], None],
    *,
    pool: PreparePool | None = None,
    publish: Callable[[Manifest], None] | None = None,
    prefer_speed: bool = False,
    report: FileReport | None = None,
    cleaned: Cleaned | None = None,
) -> PackageResult:
    """De-identify, compress and encrypt each file into ``store`` (blocking).

    ``progress(files_done, study_bytes)`` after each file; ``publish(partial manifest)`` when
    new objects are sealed, at most every :data:`PUBLISH_INTERVAL_S`, so the recipient can fetch
    while the rest is prepared.  A file that cannot be prepared is added to ``report`` (by its
    source name, with the reason) and left out; the study fails only if no file is left.  A file
    whose pixels were cleaned is told to ``cleaned`` by its source name, with what was done.  On
    failure the objects already written are deleted, so nothing of an abandoned study stays on disk.
    """
    study_bytes, published, published_s = 0, 0, 0.0
    added = left_out = 0

    def dropped(name: str, reason: str) -> None:
        nonlocal left_out
        left_out += 1
        if report is not None:
            report.add_failure(name, reason)
        progress(added + left_out, study_bytes)  # the file is done with, if not sent

    try:
        prepared = _prepared(files, policy, secret, pool or PreparePool(1), prefer_speed, dropped)
        for job, (meta, compressed, pixels) in prepared:
            if pixels and cleaned is not None:
                cleaned(job[2], pixels)
            packager.add(meta, compressed)
            study_bytes += meta.size
            added += 1
            progress(added + left_out, study_bytes)
            if publish is not None and SYSTEM_CLOCK.monotonic_s() - published_s >= publish_interval_s(added):
                sealed = packager.sealed_count
                snapshot = packager.snapshot() if sealed > published else None
                if snapshot is not None:
                    publish(snapshot)
                    published, published_s = sealed, SYSTEM_CLOCK.monotonic_s()
        if files and not added:
            raise NodeError(f"none of the study's {len(files)} files could be prepared")
        return packager.finish()
    except BaseException:
        for object_id in packager.committed:
            store.delete(object_id)
        raise


def verify_all(store: BlobStore, manifest: Manifest, key_for: Callable[[ObjectInfo], bytes]) -> None:
    """Decrypt, decompress and check every file against the manifest, writing nothing (blocking)."""
    verify_entries(store, manifest, key_for)


def _check_entry(entry: Entry, compressed: bytes) -> Entry:
    # The blob carries the SHA-256 of its original and decompress checks the restored bytes
    # against it; requiring it to be the manifest's saves hashing every file twice.
    restored = decompress(
        compressed, max_output_bytes=entry.size, name=entry.name, expect_sha256=entry.sha256
    )
    if len(restored) != entry.size:
        raise TransferInputError("restored file differs from the manifest", name=entry.name)
    return entry


def verify_entries(
    store: BlobStore,
    manifest: Manifest,
    key_for: Callable[[ObjectInfo], bytes],
    *,
    skip: Collection[Entry] = (),
    threads: int = VERIFY_THREADS,
) -> list[Entry]:
    """Check each entry of ``manifest`` not in ``skip``, writing nothing (blocking); returns them.

    Objects are decrypted in this thread; the files are decompressed and hashed by ``threads``
    threads (the codecs and SHA-256 release the GIL), at most two files per thread in flight.
    Raises :class:`~mftp.transfer.errors.TransferInputError` at the first file that does not
    restore to its manifest hash.
    """
    by_object: dict[bytes, list[Entry]] = {}
    for entry in manifest.entries:
        if entry not in skip:
            by_object.setdefault(entry.object_id, []).append(entry)
    checked: list[Entry] = []
    window: deque[Future[Entry]] = deque()
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="verify") as pool:
        for object_id, entries in by_object.items():
            obj = manifest.object(object_id)
            with store.reader(object_id) as read_at:
                for entry, compressed in iter_object_entries(read_at, obj, key_for(obj), entries):
                    window.append(pool.submit(_check_entry, entry, compressed))
                    while len(window) > 2 * threads:
                        checked.append(window.popleft().result())
        checked.extend(future.result() for future in window)
    return checked


def restore_files(
    store: BlobStore,
    manifest: Manifest,
    key_for: Callable[[ObjectInfo], bytes],
    spill: Path,
    progress: Callable[[int], None] | None = None,
) -> list[LocalFile]:
    """Decrypt, decompress and verify each file into ``spill`` (mode 0600; blocking).

    ``progress`` is called with the number of files restored so far, after each one.
    """
    files = []
    for entry, compressed in store.iter_entries(manifest, key_for):
        original = decompress(compressed, max_output_bytes=entry.size, name=entry.name)
        check_restored(entry, original)
        path = spill / entry.name.replace("/", "_")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(original)
        info, _ = describe_path(path, entry.name)
        files.append(LocalFile(path, info))
        if progress is not None:
            progress(len(files))
    return files
