"""Import a study from files or folders; deliver one into a folder.

:class:`FolderSource` walks what the operator points at and yields one :class:`LocalFile` per
DICOM instance or allowed attachment, collecting a reason for every other file in the
:class:`~mftp.transfer.study.ImportReport` instead of stopping. Only descriptions are kept in
memory, so a study of any number of files costs the same per file.

:class:`FolderSink` writes each file under a temporary hidden name, flushes it to disk and only
then renames it into place, so a crash or a full disk never leaves a half-written file where a
PACS import folder would pick it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from mftp.transfer.errors import TransferInputError
from mftp.transfer.study import DEFAULT_ATTACHMENT_TYPES, DeliveryReport, FileKind, ImportReport
from mftp.transfer.study_probe import ProbeLimits

from ..private_files import dir_mode_for
from .common import (
    LINK_NOT_FOLLOWED,
    LocalFile,
    describe_file,
    is_safe_uid,
    open_dir_nofollow,
    open_file_nofollow,
    wrap_bare_dataset,
)

__all__ = ["FolderLimits", "FolderSink", "FolderSource"]

_COPY_CHUNK_BYTES = 1 << 20
SCAN_THREADS = 2  # files read and hashed at once by a scan without worker processes
SCAN_AHEAD = 8  # batches (or files, in threads) handed out ahead of the caller
SCAN_BATCH = 32  # files per task handed to a worker process
_PARTIAL_PREFIX = ".mftp-partial-"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _done(value: str) -> Future[list[LocalFile | str]]:
    """A future already holding ``[value]``."""
    future: Future[list[LocalFile | str]] = Future()
    future.set_result([value])
    return future


@dataclass(frozen=True)
class FolderLimits:
    """Bounds on what a folder import reads."""

    max_files: int = 100_000
    max_file_bytes: int = 8 << 30
    max_depth: int = 32


@dataclass(frozen=True)
class ReadOptions:
    """How :func:`describe_one` reads a file (what a worker process is handed with it)."""

    attachment_types: dict[str, str]
    probe_limits: ProbeLimits | None
    max_file_bytes: int


def describe_one(path: Path, name: str, spill_dir: Path, index: int, options: ReadOptions) -> LocalFile | str:
    """One file of a folder import, described (a bare data set wrapped into ``spill_dir``), or why not."""
    try:
        # Opened from "/" one component at a time without following a link: the file read
        # is the one the walk found, even if a folder on its way was swapped for a link.
        with os.fdopen(open_file_nofollow(path), "rb") as fp:
            info, probe = describe_file(
                fp,
                name,
                attachment_types=options.attachment_types,
                probe_limits=options.probe_limits,
                max_bytes=options.max_file_bytes,
            )
            if probe is not None and not probe.has_part10_header:
                return wrap_bare_dataset(path, info, probe, spill_dir, index=index, source=fp)
        return LocalFile(path, info)
    except TransferInputError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def describe_many(
    jobs: list[tuple[Path, str, int]], spill_dir: Path, options: ReadOptions
) -> list[LocalFile | str]:
    """:func:`describe_one` of each ``(path, name, index)``: one task for a worker process."""
    return [describe_one(path, name, spill_dir, index, options) for path, name, index in jobs]


class FolderSource:
    """DICOM files and attachments from files and folders on local disk.

    Files are recognised by content, not name: a DICOM file (with or without its Part 10
    header) is an instance wherever it lives; anything else is an attachment if its suffix is in
    ``attachment_types`` (and its first bytes agree), else a "not DICOM" failure. Hidden files
    and folders and ``DICOMDIR`` indexes are skipped. Files are named in reports by their path
    relative to the folder given (the operator's own naming).
    """

    def __init__(
        self,
        paths: Path | Sequence[Path],
        *,
        attachment_types: Mapping[str, str] = DEFAULT_ATTACHMENT_TYPES,
        limits: FolderLimits | None = None,
        probe_limits: ProbeLimits | None = None,
        processes: Executor | None = None,
    ) -> None:
        self._paths = [paths] if isinstance(paths, Path) else list(paths)
        self._attachment_types = dict(attachment_types)
        self._limits = limits or FolderLimits()
        self._probe_limits = probe_limits
        self._processes = processes

    def scan(self, spill_dir: Path, report: ImportReport) -> Iterator[LocalFile]:
        """Yield the files that can travel; record every other one in ``report``.

        ``spill_dir`` receives copies only of files that need a File Meta header added; all
        other files are yielded where they are.
        """
        seen: dict[str, tuple[str, str]] = {}  # SOP Instance UID -> (SHA-256, name)
        for name, item in self._described(spill_dir, report):
            if isinstance(item, str):
                report.add_failure(name, item)
                continue
            uid = item.info.sop_instance_uid
            if uid and uid in seen:
                digest, first = seen[uid]
                if digest == item.info.sha256:
                    report.notes.append(f"{name}: same file as {first}, skipped")
                else:
                    report.add_failure(name, f"same SOP Instance UID as {first} but different content")
                continue
            if uid:
                seen[uid] = (item.info.sha256, name)
            report.add_ok(name, item.info.size_bytes)
            yield item

    def _described(self, spill_dir: Path, report: ImportReport) -> Iterator[tuple[str, LocalFile | str]]:
        """``(name, file or why not)`` for each file, in walk order.

        Files are read, checked and hashed a few ahead of the caller (the first files of a study
        can be prepared while the rest are still read): in batches of :data:`SCAN_BATCH` by the
        worker processes given as ``processes`` (the node's preparing workers), else one by one
        by :data:`SCAN_THREADS` threads.  Processes, because the walk over each file's elements
        is Python that holds the GIL; batches, because one task per file cost more in passing
        it to a process than the parallel walk saved.  A process that dies leaves its files
        (and the rest) to the threads.
        """
        window: deque[tuple[list[tuple[Path, str, int]], Future[list[LocalFile | str]]]] = deque()
        processes, options = self._processes, self._options()
        batch: list[tuple[Path, str, int]] = []
        with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="scan") as threads:

            def submit() -> None:
                nonlocal processes
                jobs, future = list(batch), None
                batch.clear()
                if processes is not None:
                    try:
                        future = processes.submit(describe_many, jobs, spill_dir, options)
                    except (BrokenProcessPool, RuntimeError):  # died, or shutting down: threads go on
                        processes = None
                window.append((jobs, future or threads.submit(describe_many, jobs, spill_dir, options)))

            for count, (path, name) in enumerate(self._files(report), start=1):
                if count > self._limits.max_files:
                    if batch:
                        submit()
                    too_many = f"more than {self._limits.max_files} files: the rest were not read"
                    window.append(([(path, name, 0)], _done(too_many)))
                    break
                batch.append((path, name, count))
                if len(batch) >= (SCAN_BATCH if processes is not None else 1):
                    submit()
                while len(window) > SCAN_AHEAD:
                    yield from self._results(window.popleft(), spill_dir, options)
            if batch:
                submit()
            while window:
                yield from self._results(window.popleft(), spill_dir, options)

    def _options(self) -> ReadOptions:
        return ReadOptions(self._attachment_types, self._probe_limits, self._limits.max_file_bytes)

    @staticmethod
    def _results(
        item: tuple[list[tuple[Path, str, int]], Future[list[LocalFile | str]]],
        spill_dir: Path,
        options: ReadOptions,
    ) -> Iterator[tuple[str, LocalFile | str]]:
        jobs, future = item
        try:
            results = future.result()
        except BrokenProcessPool:  # its process died: read them here
            results = describe_many(jobs, spill_dir, options)
        yield from zip((name for _, name, _ in jobs), results, strict=True)

    def _files(self, report: ImportReport) -> Iterator[tuple[Path, str]]:
        for given in self._paths:
            # What the caller names is resolved once (the API checked it against
            # transfer.source_dirs); the last component is not followed, nor anything below.
            if given.name in ("", ".", ".."):
                root = Path(os.path.realpath(given))
            else:
                root = Path(os.path.realpath(given.parent)) / given.name
            try:
                info = os.lstat(root)
            except OSError:
                report.add_failure(given.name, "no such file or folder")
                continue
            if stat.S_ISLNK(info.st_mode):
                report.add_failure(given.name, LINK_NOT_FOLLOWED)
            elif stat.S_ISDIR(info.st_mode):
                yield from self._walk(root, report)
            elif stat.S_ISREG(info.st_mode):
                yield root, root.name
            else:
                report.add_failure(given.name, "not a regular file or folder")

    def _walk(self, root: Path, report: ImportReport) -> Iterator[tuple[Path, str]]:
        # Depth first and sorted, so a study is read in the same order every time. Each folder
        # is listed through a descriptor opened without following a link at any level, and a
        # link met in a folder is reported, never followed (to a file or a folder): a folder
        # in transfer.source_dirs holding links to files elsewhere sends none of them.
        stack: list[tuple[Path, str, int]] = [(root, "", 0)]
        while stack:
            folder, prefix, depth = stack.pop()
            try:
                fd = open_dir_nofollow(folder)
            except OSError as exc:
                report.add_failure(prefix or folder.name, f"cannot read: {exc.strerror or exc}")
                continue
            try:
                with os.scandir(fd) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            finally:
                os.close(fd)
            subfolders = []
            for entry in entries:
                name = prefix + entry.name
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    report.add_failure(name, LINK_NOT_FOLLOWED)
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append((folder / entry.name, name + "/", depth + 1))
                elif entry.name.upper() == "DICOMDIR":
                    report.notes.append(f"{name}: DICOMDIR index skipped (the files it lists are read)")
                elif entry.is_file(follow_symlinks=False):
                    yield folder / entry.name, name
                else:  # a fifo (reading it would block), a socket, a device
                    report.add_failure(name, "not a regular file or folder")
            if subfolders and depth + 1 > self._limits.max_depth:
                report.notes.append(f"{prefix or '.'}: folders deeper than {self._limits.max_depth} skipped")
                continue
            stack.extend(reversed(subfolders))


class FolderSink:
    """Delivers a study into a folder: ``<study>/<series>/<instance>.dcm``, attachments apart.

    Attachments go to ``<study>/attachments/`` keeping their relative path (made safe). Every
    file is written under a hidden temporary name, flushed, checked against its SHA-256 and
    renamed into place; a file of the same name is replaced, so delivering twice is harmless.

    The folder given is resolved once (the API checked it against ``transfer.export_dirs``);
    below it nothing is followed: every folder is created or opened through a descriptor
    without following a link, a link planted under a study's, series' or attachment folder's
    name makes its files fail, and a link under a file's name is replaced by the file (a
    rename replaces the link itself), never written through. Files get ``file_mode`` and the
    folders made for them :func:`~mftp.node.private_files.dir_mode_for` it, whatever the umask.
    """

    def __init__(self, root: Path, *, fsync: bool = True, file_mode: int = 0o640) -> None:
        self._root = root
        self._fsync = fsync
        self._file_mode = file_mode
        self._dir_mode = dir_mode_for(file_mode)

    async def deliver(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Write ``files``; attachments go to ``study_uid`` (default: the files' only study)."""
        return await asyncio.to_thread(self.deliver_sync, files, study_uid=study_uid)

    def deliver_sync(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Blocking form of :meth:`deliver`."""
        report = DeliveryReport()
        attach_to = study_uid or self._only_study(files)
        folders: dict[tuple[str, ...], int] = {}  # open descriptors of the folders written into
        try:
            root_fd: int | None = open_dir_nofollow(
                Path(os.path.realpath(self._root)), create_mode=self._dir_mode
            )
        except OSError as exc:
            root_fd, why = None, f"cannot write: {exc.strerror or exc}"
        try:
            for item in files:
                try:
                    if root_fd is None:
                        raise TransferInputError(why)
                    *parents, name = self._target(item, attach_to)
                    where = tuple(parents)
                    if where not in folders:
                        folders[where] = open_dir_nofollow(where, below=root_fd, create_mode=self._dir_mode)
                    self._write(item, folders[where], name)
                    report.add_ok(item.info.name, item.info.size_bytes)
                except TransferInputError as exc:
                    report.add_failure(item.info.name, exc)
                except OSError as exc:
                    report.add_failure(item.info.name, f"cannot write: {exc.strerror or exc}")
            if self._fsync:
                for fd in folders.values():
                    _fsync_dir(fd)
        finally:
            for fd in folders.values():
                os.close(fd)
            if root_fd is not None:
                os.close(root_fd)
        return report

    @staticmethod
    def _only_study(files: Sequence[LocalFile]) -> str | None:
        studies = {f.info.study_instance_uid for f in files if f.info.kind is FileKind.DICOM}
        return studies.pop() if len(studies) == 1 else None

    @staticmethod
    def _target(item: LocalFile, attach_to: str | None) -> list[str]:
        """Where ``item`` goes, as names of folders below the root and the file's name."""
        info = item.info
        if info.kind is FileKind.ATTACHMENT:
            study = attach_to if attach_to and is_safe_uid(attach_to) else "unassigned"
            parts = [_safe_component(p) for p in Path(info.name).parts if p not in ("", ".", "..", "/")]
            return [study, "attachments", *(parts or ["_"])]
        for uid in (info.study_instance_uid, info.series_instance_uid, info.sop_instance_uid):
            if not is_safe_uid(uid):
                raise TransferInputError(f"UID {uid[:70]!r} is not valid, cannot name a file", name=info.name)
        return [info.study_instance_uid, info.series_instance_uid, f"{info.sop_instance_uid}.dcm"]

    def _write(self, item: LocalFile, folder: int, name: str) -> None:
        tmp = f"{_PARTIAL_PREFIX}{secrets.token_hex(6)}-{name}"
        # O_EXCL and O_NOFOLLOW: the temporary name is never a file or a link someone planted.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            digest = hashlib.sha256()
            with (
                os.fdopen(os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as src,
                os.fdopen(os.open(tmp, flags, self._file_mode, dir_fd=folder), "wb") as dst,
            ):
                os.fchmod(dst.fileno(), self._file_mode)  # the operator's mode, not the umask's
                while chunk := src.read(_COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                if self._fsync:
                    os.fsync(dst.fileno())
            if digest.hexdigest() != item.info.sha256:
                raise TransferInputError(
                    "content changed since it was imported (SHA-256 differs)", name=item.info.name
                )
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)


def _safe_component(part: str) -> str:
    cleaned = _UNSAFE_CHARS.sub("_", part)[:120].lstrip(".")
    return cleaned or "_"


def _fsync_dir(fd: int) -> None:
    # The rename is durable only once the folder itself is flushed.
    with contextlib.suppress(OSError):
        os.fsync(fd)
