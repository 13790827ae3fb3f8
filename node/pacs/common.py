"""What every PACS source and sink shares: files on disk, spilling, errors.

A study is imported as :class:`LocalFile` objects: a path on local disk (the operator's own
file, or a copy spilled into a caller-provided folder as it streamed in) and its
:class:`~mftp.transfer.study.SourceFile` description. Nothing holds a whole study in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
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
    "describe_path",
    "is_safe_uid",
    "sha256_of",
    "spill_name",
    "wrap_attachments",
    "wrap_bare_dataset",
]

_READ_CHUNK_BYTES = 1 << 20


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
        self._fp: BinaryIO | None = open(self._tmp, "xb")  # noqa: SIM115 - closed by commit/discard
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
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise TransferInputError(f"larger than {max_bytes} bytes", name=name)
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
    path: Path, info: SourceFile, probe: DicomProbe, spill_dir: Path, *, index: int
) -> LocalFile:
    """Copy a data set without Part 10 header into ``spill_dir``, a File Meta header in front.

    The data set bytes are copied untouched; the description gets the new size and SHA-256.
    """
    prefix = part10_prefix(probe)
    with SpillFile(spill_dir, max_bytes=info.size_bytes + len(prefix)) as spill, open(path, "rb") as src:
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
