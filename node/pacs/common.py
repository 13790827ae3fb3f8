"""What every PACS source and sink shares: files on disk, spilling, errors.

A study is imported as :class:`LocalFile` objects: a path on local disk (the operator's own
file, or a copy spilled into a caller-provided folder as it streamed in) and its
:class:`~mftp.transfer.study.SourceFile` description. Nothing holds a whole study in memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from hashlib import sha256
from io import BufferedReader
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread

from mftp.transfer.errors import TransferInputError
from mftp.transfer.study import (
    DEFAULT_ATTACHMENT_TYPES,
    FileKind,
    FileReport,
    SourceFile,
    attachment_file,
    attachment_media_type,
    check_attachment,
    dicom_file,
)
from mftp.transfer.study_encapsulate import ENCAPSULATED_TYPES, MAX_DOCUMENT_BYTES, encapsulate_attachment
from mftp.transfer.study_probe import DicomProbe, NotDicomError, ProbeLimits, part10_prefix, probe_dicom

from ..clock import SYSTEM_CLOCK
from ..errors import NodeInputError

__all__ = [
    "LocalFile",
    "PacsError",
    "PacsUnavailableError",
    "SpillFile",
    "describe_file",
    "describe_path",
    "is_safe_uid",
    "open_dir_nofollow",
    "open_file_nofollow",
    "sha256_of",
    "spill_name",
    "wrap_attachments",
    "wrap_bare_dataset",
]

_READ_CHUNK_BYTES = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Folders on the way are opened for search only where the OS allows it (O_PATH), so a folder
# the node may cross but not list (mode 0711) does not stop the walk.
_SEARCH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | _NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a fifo must not block us
LINK_NOT_FOLLOWED = "a link, not followed"


class PacsError(NodeInputError):
    """A PACS refused a request or answered something invalid (the PACS's fault, not a file's)."""


class PacsUnavailableError(PacsError):
    """A PACS could not be reached, refused the association, or stopped answering."""


@dataclass(frozen=True)
class LocalFile:
    """One file of a study on local disk, with its description."""

    path: Path
    info: SourceFile


def is_safe_uid(uid: str) -> bool:
    """True for a syntactically valid UID (PS3.5 9.1), so it can name a file or a URL path segment."""
    if not 0 < len(uid) <= 64 or uid.startswith(".") or uid.endswith(".") or ".." in uid:
        return False
    return all(c in "0123456789." for c in uid)


def sha256_of(fp: BufferedReader) -> str:
    """SHA-256 (hex) of the rest of a file object, read in chunks."""
    return hashlib.file_digest(fp, "sha256").hexdigest()


class SpillFile:
    """A file being written into a spill folder: hashed as it is written, bounded in size.

    It lives under a temporary name until :meth:`commit`; :meth:`discard` (or leaving the
    ``with`` block without committing) removes it, so no half-written file remains.
    """

    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.folder = folder
        self._max_bytes = max_bytes
        self._tmp = folder / f".partial-{secrets.token_hex(8)}"
        # Private whatever the umask; O_EXCL and O_NOFOLLOW: never through a link planted there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC
        self._fp: BinaryIO | None = os.fdopen(os.open(self._tmp, flags, 0o600), "wb")
        self._digest = hashlib.sha256()
        self._committed = False
        self.size_bytes = 0

    def __enter__(self) -> SpillFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    @property
    def temp_path(self) -> Path:
        """Where the bytes are while being written."""
        return self._tmp

    def write(self, data: bytes) -> None:
        """Append bytes; raises :class:`TransferInputError` past the size limit."""
        if self._fp is None:
            raise ValueError("spill file already closed")
        self.size_bytes += len(data)
        if self.size_bytes > self._max_bytes:
            raise TransferInputError(f"file larger than {self._max_bytes} bytes")
        self._digest.update(data)
        self._fp.write(data)

    def close(self) -> str:
        """Finish writing; returns the SHA-256 (hex). The file stays under its temporary name."""
        if self._fp is not None:
            self._fp.close()
            self._fp = None
        return self._digest.hexdigest()

    def commit(self, name: str) -> Path:
        """Close and move to ``name`` in the spill folder (replacing a file of that name)."""
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"unsafe spill file name {name!r}")
        self.close()
        final = self.folder / name
        os.replace(self._tmp, final)
        self._tmp = final
        self._committed = True
        return final

    def discard(self) -> None:
        """Close and delete, unless committed."""
        self.close()
        if not self._committed:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()


def _refused(name: str, dir_fd: int, why: OSError) -> OSError:
    """The error for ``name`` (in ``dir_fd``) that could not be opened as asked: a link says so."""
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return OSError(errno.ELOOP, LINK_NOT_FOLLOWED)
    return why


def open_dir_nofollow(
    path: Path | Sequence[str],
    *,
    below: int | None = None,
    create_mode: int | None = None,
    listing: bool = True,
) -> int:
    """A descriptor of the folder ``path``, opened one component at a time, no link followed.

    ``path`` is absolute (walked from ``/``; pass a path already resolved, so the only links
    met are ones that appeared since) or a sequence of names below the folder descriptor
    ``below``.  With ``create_mode``, missing folders are made with exactly that mode (not
    narrowed by the umask).  A link at any level raises ``OSError(ELOOP, "a link, not
    followed")``; ``.``, ``..`` and empty names raise ``EINVAL``.  ``listing=False`` opens the
    last folder for search only (enough for ``dir_fd`` use, not for :func:`os.scandir`).
    """
    if below is None:
        if not isinstance(path, Path) or not path.is_absolute():
            raise OSError(errno.EINVAL, "not an absolute path")
        names: Sequence[str] = path.parts[1:]
        current = os.open("/", _SEARCH_FLAGS)
    else:
        names = path.parts if isinstance(path, Path) else path
        current = os.dup(below)
    try:
        for index, name in enumerate(names):
            if name in ("", ".", "..") or "/" in name:
                raise OSError(errno.EINVAL, f"unsafe path component {name[:40]!r}")
            flags = _LIST_FLAGS if listing and index == len(names) - 1 else _SEARCH_FLAGS
            try:
                child = os.open(name, flags, dir_fd=current)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                child = _make_dir(name, current, create_mode)
            except OSError as exc:
                raise _refused(name, current, exc) from None
            os.close(current)
            current = child
        if listing and not names:  # "/" itself, or ``below`` as it was opened
            reopened = os.open(".", _LIST_FLAGS, dir_fd=current)
            os.close(current)
            current = reopened
        return current
    except BaseException:
        os.close(current)
        raise


def _make_dir(name: str, parent: int, mode: int) -> int:
    """Make the folder ``name`` in ``parent`` with exactly ``mode``; its descriptor.

    The mode is set through the new folder's own descriptor (opened without following a
    link), so a link swapped in after ``mkdir`` cannot redirect the change elsewhere.
    """
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:  # made meanwhile by someone else: use it, keep its mode
        return os.open(name, _LIST_FLAGS, dir_fd=parent)
    child = os.open(name, _LIST_FLAGS, dir_fd=parent)
    os.fchmod(child, mode)
    return child


def open_file_nofollow(path: Path, *, dir_fd: int | None = None) -> int:
    """A read descriptor of the regular file ``path``, no link followed at any level.

    An absolute ``path`` is walked from ``/`` (see :func:`open_dir_nofollow`); with ``dir_fd``,
    ``path`` is relative to that folder.  Anything but a regular file (a fifo, a device, a
    folder) raises ``OSError``.
    """
    if dir_fd is None:
        parent = open_dir_nofollow(path.parent, listing=False)
    else:
        parent = open_dir_nofollow(path.parts[:-1], below=dir_fd, listing=False)
    try:
        try:
            fd = os.open(path.name, _READ_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _refused(path.name, parent, exc) from None
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def describe_path(
    path: Path,
    name: str,
    *,
    attachment_types: Mapping[str, str] = DEFAULT_ATTACHMENT_TYPES,
    probe_limits: ProbeLimits | None = None,
    max_bytes: int | None = None,
) -> tuple[SourceFile, DicomProbe | None]:
    """Describe one file on disk: a DICOM instance or an allowed attachment.

    Returns the description and, for DICOM, the probe (its ``has_part10_header`` tells whether
    the file needs a File Meta header before it can be stored). Raises
    :class:`TransferInputError` naming ``name`` for anything that cannot travel.
    """
    fd = os.open(path, _READ_FLAGS)  # a link in the file's place is not followed
    with os.fdopen(fd, "rb") as fp:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return describe_file(
            fp, name, attachment_types=attachment_types, probe_limits=probe_limits, max_bytes=max_bytes
        )


def describe_file(
    fp: BufferedReader,
    name: str,
    *,
    attachment_types: Mapping[str, str] = DEFAULT_ATTACHMENT_TYPES,
    probe_limits: ProbeLimits | None = None,
    max_bytes: int | None = None,
) -> tuple[SourceFile, DicomProbe | None]:
    """:func:`describe_path` of a file already open (read from its start)."""
    size = os.fstat(fp.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        raise TransferInputError(f"larger than {max_bytes} bytes", name=name)
    fp.seek(0)
    try:
        probe = probe_dicom(fp, size, name=name, limits=probe_limits)
    except NotDicomError:
        fp.seek(0)
        return _describe_attachment(fp, name, size, attachment_types), None
    fp.seek(0)
    return dicom_file(name, size, sha256_of(fp), probe), probe


def _describe_attachment(
    fp: BufferedReader, name: str, size: int, attachment_types: Mapping[str, str]
) -> SourceFile:
    media_type = attachment_media_type(name, attachment_types)
    if media_type is None:
        allowed = ", ".join(sorted(attachment_types))
        raise TransferInputError(f"not DICOM, and not an allowed attachment type ({allowed})", name=name)
    check_attachment(name, media_type, fp.read(1024), size)
    fp.seek(0)
    return attachment_file(name, size, sha256_of(fp), media_type)


def wrap_bare_dataset(
    path: Path,
    info: SourceFile,
    probe: DicomProbe,
    spill_dir: Path,
    *,
    index: int,
    source: BinaryIO | None = None,
) -> LocalFile:
    """Copy a data set without Part 10 header into ``spill_dir``, a File Meta header in front.

    The data set bytes are copied untouched; the description gets the new size and SHA-256.
    ``source``, when given, is ``path`` already open (read from its start): the bytes copied
    are those of the file that was described, whatever has been put at ``path`` since.
    """
    prefix = part10_prefix(probe)
    with contextlib.ExitStack() as stack:
        spill = stack.enter_context(SpillFile(spill_dir, max_bytes=info.size_bytes + len(prefix)))
        if source is None:
            source = stack.enter_context(os.fdopen(os.open(path, _READ_FLAGS & ~os.O_NONBLOCK), "rb"))
        src = source
        src.seek(0)
        spill.write(prefix)
        while chunk := src.read(_READ_CHUNK_BYTES):
            spill.write(chunk)
        digest = spill.close()
        final = spill.commit(f"bare-{index:06d}.dcm")  # unique: UIDs of bare files may repeat
    notes = (*info.notes, "File Meta Information added (the file had none)")
    return LocalFile(final, replace(info, size_bytes=spill.size_bytes, sha256=digest, notes=notes))


def spill_name(info: SourceFile, index: int) -> str:
    """A file name for a spilled instance: its SOP Instance UID when that is a safe name."""
    if is_safe_uid(info.sop_instance_uid):
        return f"{info.sop_instance_uid}.dcm"
    return f"instance-{index:06d}.dcm"


def wrap_attachments(
    files: Sequence[LocalFile], study_uid: str | None, work_dir: Path, report: FileReport
) -> list[LocalFile]:
    """The files to store in a PACS: DICOM files as they are, attachments in their DICOM form.

    PDF, STL, OBJ and MTL attachments become encapsulated-document instances of the study
    (``study_uid``, default the files' only study) written to ``work_dir``, taking patient and
    study attributes from one of its instances; they keep their names in reports. Attachments of
    other types, or without an instance of their study to copy from, are recorded as failures.
    """
    dicom = [f for f in files if f.info.kind is FileKind.DICOM]
    attachments = [f for f in files if f.info.kind is FileKind.ATTACHMENT]
    if not attachments:
        return dicom
    target = study_uid or _only_study(dicom)
    template = next((f for f in dicom if f.info.study_instance_uid == target), None)
    now = datetime.fromtimestamp(SYSTEM_CLOCK.now_ms() / 1000, UTC)
    out = list(dicom)
    for index, item in enumerate(attachments):
        try:
            if item.info.media_type not in ENCAPSULATED_TYPES:
                raise TransferInputError(
                    f"attachment of type {item.info.media_type}: no DICOM form, a PACS cannot store it"
                )
            if template is None:
                raise TransferInputError(
                    "attachment without an instance of its study to take patient data from"
                )
            out.append(_wrap_one(item, template, work_dir, index, now))
        except TransferInputError as exc:
            report.add_failure(item.info.name, exc)
        except OSError as exc:
            report.add_failure(item.info.name, f"cannot read: {exc.strerror or exc}")
    return out


def _only_study(dicom: Sequence[LocalFile]) -> str | None:
    studies = {f.info.study_instance_uid for f in dicom}
    return studies.pop() if len(studies) == 1 else None


def _wrap_one(item: LocalFile, template: LocalFile, work_dir: Path, index: int, now: datetime) -> LocalFile:
    if item.info.size_bytes > MAX_DOCUMENT_BYTES:
        raise TransferInputError(f"attachment larger than {MAX_DOCUMENT_BYTES} bytes cannot be wrapped")
    study = dcmread(template.path, stop_before_pixels=True)
    wrapped = encapsulate_attachment(
        item.path.read_bytes(),
        media_type=item.info.media_type,
        study=study,
        content_date=now.strftime("%Y%m%d"),
        content_time=now.strftime("%H%M%S"),
    )
    path = work_dir / f"attachment-{index:06d}.dcm"
    path.write_bytes(wrapped)
    with open(path, "rb") as fp:
        probe = probe_dicom(fp, len(wrapped), name=item.info.name)
    return LocalFile(path, dicom_file(item.info.name, len(wrapped), sha256(wrapped).hexdigest(), probe))
