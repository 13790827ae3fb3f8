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
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mftp.transfer.errors import TransferInputError
from mftp.transfer.study import DEFAULT_ATTACHMENT_TYPES, DeliveryReport, FileKind, ImportReport
from mftp.transfer.study_probe import ProbeLimits

from .common import LocalFile, describe_path, is_safe_uid, wrap_bare_dataset

__all__ = ["FolderLimits", "FolderSink", "FolderSource"]

_COPY_CHUNK_BYTES = 1 << 20
SCAN_THREADS = 2  # files read and hashed at once by a scan
_PARTIAL_PREFIX = ".mftp-partial-"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _done(value: str) -> Future[LocalFile | str]:
    """A future already holding ``value``."""
    future: Future[LocalFile | str] = Future()
    future.set_result(value)
    return future


@dataclass(frozen=True)
class FolderLimits:
    """Bounds on what a folder import reads."""

    max_files: int = 100_000
    max_file_bytes: int = 8 << 30
    max_depth: int = 32


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
    ) -> None:
        self._paths = [paths] if isinstance(paths, Path) else list(paths)
        self._attachment_types = attachment_types
        self._limits = limits or FolderLimits()
        self._probe_limits = probe_limits

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

        Files are read and hashed by :data:`SCAN_THREADS` threads (hashing and reading release
        the GIL), a few ahead of the caller: the first files of a study can be prepared while
        the rest are still read.
        """
        window: deque[tuple[str, Future[LocalFile | str]]] = deque()
        with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="scan") as pool:
            for count, (path, name) in enumerate(self._files(report), start=1):
                if count > self._limits.max_files:
                    too_many = f"more than {self._limits.max_files} files: the rest were not read"
                    window.append((name, _done(too_many)))
                    break
                window.append((name, pool.submit(self._one, path, name, spill_dir, count)))
                while len(window) > 4 * SCAN_THREADS:
                    name_done, future = window.popleft()
                    yield name_done, future.result()
            while window:
                name_done, future = window.popleft()
                yield name_done, future.result()

    def _one(self, path: Path, name: str, spill_dir: Path, index: int) -> LocalFile | str:
        try:
            info, probe = describe_path(
                path,
                name,
                attachment_types=self._attachment_types,
                probe_limits=self._probe_limits,
                max_bytes=self._limits.max_file_bytes,
            )
            if probe is not None and not probe.has_part10_header:
                return wrap_bare_dataset(path, info, probe, spill_dir, index=index)
            return LocalFile(path, info)
        except TransferInputError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"

    def _files(self, report: ImportReport) -> Iterator[tuple[Path, str]]:
        for root in self._paths:
            if root.is_dir():
                yield from self._walk(root, report)
            elif root.is_file():
                yield root, root.name
            else:
                report.add_failure(root.name, "no such file or folder")

    def _walk(self, root: Path, report: ImportReport) -> Iterator[tuple[Path, str]]:
        # Depth first and sorted, so a study is read in the same order every time. Links to
        # folders are not followed, so a loop of links cannot make the walk endless.
        stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
        while stack:
            folder, prefix, depth = stack.pop()
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
            subfolders = []
            for entry in entries:
                name = prefix + entry.name
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append((entry.path, name + "/", depth + 1))
                elif entry.name.upper() == "DICOMDIR":
                    report.notes.append(f"{name}: DICOMDIR index skipped (the files it lists are read)")
                elif entry.is_file():
                    yield Path(entry.path), name
            if subfolders and depth + 1 > self._limits.max_depth:
                report.notes.append(f"{prefix or '.'}: folders deeper than {self._limits.max_depth} skipped")
                continue
            stack.extend(reversed(subfolders))


class FolderSink:
    """Delivers a study into a folder: ``<study>/<series>/<instance>.dcm``, attachments apart.

    Attachments go to ``<study>/attachments/`` keeping their relative path (made safe). Every
    file is written under a hidden temporary name, flushed, checked against its SHA-256 and
    renamed into place; a file of the same name is replaced, so delivering twice is harmless.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self._root = root
        self._fsync = fsync

    async def deliver(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Write ``files``; attachments go to ``study_uid`` (default: the files' only study)."""
        return await asyncio.to_thread(self.deliver_sync, files, study_uid=study_uid)

    def deliver_sync(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Blocking form of :meth:`deliver`."""
        report = DeliveryReport()
        attach_to = study_uid or self._only_study(files)
        touched: set[Path] = set()
        for item in files:
            try:
                target = self._target(item, attach_to)
                target.parent.mkdir(parents=True, exist_ok=True)
                self._write(item, target)
                touched.add(target.parent)
                report.add_ok(item.info.name, item.info.size_bytes)
            except TransferInputError as exc:
                report.add_failure(item.info.name, exc)
            except OSError as exc:
                report.add_failure(item.info.name, f"cannot write: {exc.strerror or exc}")
        if self._fsync:
            for folder in touched:
                _fsync_dir(folder)
        return report

    @staticmethod
    def _only_study(files: Sequence[LocalFile]) -> str | None:
        studies = {f.info.study_instance_uid for f in files if f.info.kind is FileKind.DICOM}
        return studies.pop() if len(studies) == 1 else None

    def _target(self, item: LocalFile, attach_to: str | None) -> Path:
        info = item.info
        if info.kind is FileKind.ATTACHMENT:
            study = attach_to if attach_to and is_safe_uid(attach_to) else "unassigned"
            parts = [_safe_component(p) for p in Path(info.name).parts if p not in ("", ".", "..", "/")]
            return self._root.joinpath(study, "attachments", *parts)
        for uid in (info.study_instance_uid, info.series_instance_uid, info.sop_instance_uid):
            if not is_safe_uid(uid):
                raise TransferInputError(f"UID {uid[:70]!r} is not valid, cannot name a file", name=info.name)
        return (
            self._root / info.study_instance_uid / info.series_instance_uid / f"{info.sop_instance_uid}.dcm"
        )

    def _write(self, item: LocalFile, target: Path) -> None:
        tmp = target.with_name(f"{_PARTIAL_PREFIX}{secrets.token_hex(6)}-{target.name}")
        try:
            digest = hashlib.sha256()
            with open(item.path, "rb") as src, open(tmp, "xb") as dst:
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
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _safe_component(part: str) -> str:
    cleaned = _UNSAFE_CHARS.sub("_", part)[:120].lstrip(".")
    return cleaned or "_"


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder itself is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
