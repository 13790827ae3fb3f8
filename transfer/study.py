"""The in-memory description of a study being imported or delivered.

A study travels as files: DICOM instances and *attachments* (non-DICOM files of the case, such
as a surgical design in STL or notes in PDF). Each file is described by a :class:`SourceFile`
(what it is, its size and SHA-256, its UIDs), files are grouped into :class:`Study` objects, and
what happened to each file is kept in an :class:`ImportReport` or :class:`DeliveryReport`: the
files that went through, and for every other one a reason, so one bad file never stops a study.

Files are named by a *safe name*: a path relative to the folder the operator chose, or a SOP
Instance UID, never anything read from the data set (a patient name must not reach a log).

Also here, because they are pure: parsing QIDO-RS answers and STOW-RS responses, and the meaning
of DICOM storage status codes. The network side is ``mftp.node.pacs``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .deid import burned_in
from .errors import TransferInputError
from .study_probe import DicomProbe

__all__ = [
    "DEFAULT_ATTACHMENT_TYPES",
    "DeliveryReport",
    "FileFailure",
    "FileKind",
    "FileReport",
    "ImportReport",
    "SourceFile",
    "StowResult",
    "Study",
    "StudyMatch",
    "attachment_file",
    "attachment_media_type",
    "check_attachment",
    "dicom_file",
    "group_studies",
    "parse_qido_studies",
    "parse_stow_response",
    "qido_study_query",
    "status_text",
]

DEFAULT_ATTACHMENT_TYPES: Mapping[str, str] = {
    ".stl": "model/stl",
    ".obj": "model/obj",
    ".mtl": "model/mtl",
    ".3mf": "model/3mf",
    ".ply": "application/octet-stream",
    ".pdf": "application/pdf",
    ".txt": "text/plain",
}
"""File name suffixes accepted as attachments, with their media types."""


class FileKind(enum.Enum):
    """What a file of a study is."""

    DICOM = "dicom"
    ATTACHMENT = "attachment"


@dataclass(frozen=True)
class SourceFile:
    """One file of a study: a DICOM instance or an attachment.

    ``name`` is a safe name (relative path or SOP Instance UID). UID fields are empty for
    attachments; ``media_type`` is empty for DICOM files. ``notes`` are remarks that do not stop
    the transfer ("no pixel data", "unknown transfer syntax ...").
    """

    name: str
    size_bytes: int
    sha256: str
    kind: FileKind
    transfer_syntax_uid: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    modality: str = ""
    media_type: str = ""
    has_pixel_data: bool = False
    notes: tuple[str, ...] = ()
    burned_in: bool = False
    """Burned In Annotation is YES: only an identified send may carry it (de-identification refuses it)."""


def dicom_file(name: str, size_bytes: int, sha256: str, probe: DicomProbe) -> SourceFile:
    """Describe a probed DICOM file; raises :class:`TransferInputError` if a required UID is missing.

    A PACS files instances by Study, Series and SOP Instance UID and needs the SOP Class UID to
    store one, so a file without them cannot be transferred.
    """
    missing = [
        label
        for label, value in (
            ("SOP Class UID", probe.sop_class_uid),
            ("SOP Instance UID", probe.sop_instance_uid),
            ("Study Instance UID", probe.study_instance_uid),
            ("Series Instance UID", probe.series_instance_uid),
        )
        if not value
    ]
    if missing:
        raise TransferInputError(f"DICOM file without {', '.join(missing)}", name=name)
    return SourceFile(
        name=name,
        size_bytes=size_bytes,
        sha256=sha256,
        kind=FileKind.DICOM,
        transfer_syntax_uid=probe.transfer_syntax_uid,
        sop_class_uid=probe.sop_class_uid,
        sop_instance_uid=probe.sop_instance_uid,
        study_instance_uid=probe.study_instance_uid,
        series_instance_uid=probe.series_instance_uid,
        modality=probe.modality,
        has_pixel_data=probe.has_pixel_data,
        notes=probe.notes,
        burned_in=burned_in(probe.burned_in_annotation),
    )


def attachment_media_type(name: str, allowed: Mapping[str, str] = DEFAULT_ATTACHMENT_TYPES) -> str | None:
    """The media type of an attachment named ``name``, or None if its suffix is not allowed."""
    dot = name.rfind(".")
    if dot < 0 or "/" in name[dot:]:
        return None
    return allowed.get(name[dot:].lower())


def check_attachment(name: str, media_type: str, head: bytes, size_bytes: int) -> None:
    """Check that an attachment's first bytes match its type; raise :class:`TransferInputError` if not.

    ``head`` is the first bytes of the file (at least 84 when the file is that long). The checks
    catch a mislabelled or truncated file early, at the sender, where someone can fix it.
    """
    if size_bytes == 0:
        raise TransferInputError("empty file", name=name)
    if media_type == "application/pdf" and b"%PDF-" not in head[:1024]:
        raise TransferInputError("named .pdf but is not a PDF (no %PDF- header)", name=name)
    if media_type == "model/3mf" and not head.startswith(b"PK\x03\x04"):
        raise TransferInputError("named .3mf but is not a 3MF package (not a ZIP file)", name=name)
    if media_type == "model/stl":
        _check_stl(name, head, size_bytes)


def _check_stl(name: str, head: bytes, size_bytes: int) -> None:
    # A binary STL is an 80-byte header, a triangle count and 50 bytes per triangle, so its size
    # is known; an ASCII STL starts with "solid" (which a binary header may also do).
    if size_bytes >= 84 and size_bytes == 84 + 50 * int.from_bytes(head[80:84], "little"):
        return
    if head.lstrip().startswith(b"solid"):
        return
    raise TransferInputError("not a valid STL: truncated, or not an STL file", name=name)


def attachment_file(name: str, size_bytes: int, sha256: str, media_type: str) -> SourceFile:
    """Describe an attachment."""
    return SourceFile(
        name=name, size_bytes=size_bytes, sha256=sha256, kind=FileKind.ATTACHMENT, media_type=media_type
    )


@dataclass
class Study:
    """The files of one study: its DICOM instances and the attachments that travel with it."""

    study_instance_uid: str
    instances: list[SourceFile] = field(default_factory=list)
    attachments: list[SourceFile] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        """Total size of every file of the study."""
        return sum(f.size_bytes for f in self.instances) + sum(f.size_bytes for f in self.attachments)


def group_studies(
    files: Iterable[SourceFile], attach_to: str | None = None
) -> tuple[list[Study], list[SourceFile]]:
    """Group files by Study Instance UID; returns (studies, attachments left unassigned).

    Attachments carry no UID, so they go to ``attach_to`` if given (a study UID, created if no
    instance has it), else to the only study when there is exactly one; otherwise they are
    returned unassigned for the caller to decide.
    """
    studies: dict[str, Study] = {}
    loose: list[SourceFile] = []
    for f in files:
        if f.kind is FileKind.ATTACHMENT:
            loose.append(f)
            continue
        studies.setdefault(f.study_instance_uid, Study(f.study_instance_uid)).instances.append(f)
    target = attach_to
    if target is None and len(studies) == 1:
        target = next(iter(studies))
    if target is not None and loose:
        studies.setdefault(target, Study(target)).attachments.extend(loose)
        loose = []
    return list(studies.values()), loose


@dataclass(frozen=True)
class FileFailure:
    """A file that did not go through, and why (the reason never holds patient data)."""

    name: str
    reason: str


@dataclass
class FileReport:
    """Which files went through and which did not, with reasons.

    Failures beyond ``max_failures`` are counted but not kept, so a folder of a million bad
    files cannot exhaust memory.
    """

    ok: list[str] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Remarks about the whole study or run (not about one file)."""
    ok_bytes: int = 0
    failures_dropped: int = 0
    max_failures: int = 10_000

    def add_ok(self, name: str, size_bytes: int = 0) -> None:
        """Record a file that went through."""
        self.ok.append(name)
        self.ok_bytes += size_bytes

    def add_failure(self, name: str, reason: str | BaseException) -> None:
        """Record a file that did not go through."""
        if len(self.failures) >= self.max_failures:
            self.failures_dropped += 1
            return
        text = str(reason)
        # TransferInputError already starts with the name; do not repeat it.
        prefix = f"{name}: "
        self.failures.append(FileFailure(name, text.removeprefix(prefix)))

    @property
    def failed_count(self) -> int:
        """Number of files that did not go through."""
        return len(self.failures) + self.failures_dropped

    @property
    def all_ok(self) -> bool:
        """True when no file failed."""
        return self.failed_count == 0

    def summary(self) -> dict[str, int]:
        """Counts for a log line (no names, no reasons)."""
        return {"ok": len(self.ok), "failed": self.failed_count, "ok_bytes": self.ok_bytes}


class ImportReport(FileReport):
    """The result of importing a study from files, a folder or a PACS."""


class DeliveryReport(FileReport):
    """The result of delivering a study into a folder or a PACS."""


# ---- DICOMweb: QIDO-RS answers and STOW-RS responses (PS3.18, JSON model of PS3.18 F) ----

_TAG_STUDY_UID = "0020000D"
_TAG_ACCESSION = "00080050"
_TAG_STUDY_DATE = "00080020"
_TAG_MODALITIES = "00080061"
_TAG_INSTANCES = "00201208"
_TAG_REFERENCED_SOP = "00081199"
_TAG_FAILED_SOP = "00081198"
_TAG_SOP_INSTANCE = "00081155"
_TAG_FAILURE_REASON = "00081197"


@dataclass(frozen=True)
class StudyMatch:
    """One study found by a query. No patient name: it is not needed to transfer a study."""

    study_instance_uid: str
    accession_number: str = ""
    study_date: str = ""
    modalities: tuple[str, ...] = ()
    instance_count: int | None = None


def qido_study_query(
    *, patient_id: str | None = None, accession: str | None = None, study_uid: str | None = None, limit: int
) -> dict[str, str]:
    """Query parameters of a QIDO-RS ``/studies`` search (at least one key is required)."""
    params = {
        key: value
        for key, value in (
            ("PatientID", patient_id),
            ("AccessionNumber", accession),
            ("StudyInstanceUID", study_uid),
        )
        if value
    }
    if not params:
        raise TransferInputError("a study query needs a patient ID, an accession number or a study UID")
    for value in params.values():
        if any(c in value for c in "*?\\") or len(value) > 64:
            raise TransferInputError("query values must be exact (no wildcards) and at most 64 characters")
    params["limit"] = str(limit)
    params["includefield"] = f"{_TAG_INSTANCES},{_TAG_MODALITIES}"
    return params


def _first_value(attrs: Mapping[str, object], tag: str) -> object:
    element = attrs.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    return values[0]


def _string(attrs: Mapping[str, object], tag: str, max_chars: int = 64) -> str:
    value = _first_value(attrs, tag)
    return value[:max_chars] if isinstance(value, str) else ""


def parse_qido_studies(doc: object, *, max_results: int) -> list[StudyMatch]:
    """Parse a QIDO-RS study search answer (``application/dicom+json``) from a PACS."""
    if not isinstance(doc, list):
        raise TransferInputError("QIDO-RS answer is not a JSON array")
    if len(doc) > max_results:
        raise TransferInputError(f"QIDO-RS answer has more than {max_results} studies")
    matches = []
    for attrs in doc:
        if not isinstance(attrs, dict):
            raise TransferInputError("QIDO-RS answer holds a non-object entry")
        uid = _string(attrs, _TAG_STUDY_UID)
        if not uid:
            raise TransferInputError("QIDO-RS answer holds a study without Study Instance UID")
        count = _first_value(attrs, _TAG_INSTANCES)
        element = attrs.get(_TAG_MODALITIES)
        raw_modalities = element.get("Value", []) if isinstance(element, dict) else []
        modalities = [m[:16] for m in raw_modalities if isinstance(m, str)][:32]
        matches.append(
            StudyMatch(
                study_instance_uid=uid,
                accession_number=_string(attrs, _TAG_ACCESSION),
                study_date=_string(attrs, _TAG_STUDY_DATE, 16),
                modalities=tuple(modalities),
                instance_count=count if isinstance(count, int) and count >= 0 else None,
            )
        )
    return matches


@dataclass(frozen=True)
class StowResult:
    """What a STOW-RS response says: instances stored, and failed ones with a reason."""

    stored: frozenset[str]
    failed: Mapping[str, str]


def _sequence(doc: Mapping[str, object], tag: str) -> list[Mapping[str, object]]:
    element = doc.get(tag)
    values = element.get("Value", []) if isinstance(element, dict) else []
    return [item for item in values if isinstance(item, dict)] if isinstance(values, list) else []


def parse_stow_response(doc: object) -> StowResult:
    """Parse the JSON body of a STOW-RS response (PS3.18 10.5.3)."""
    if not isinstance(doc, dict):
        raise TransferInputError("STOW-RS response is not a JSON object")
    stored = frozenset(
        uid for item in _sequence(doc, _TAG_REFERENCED_SOP) if (uid := _string(item, _TAG_SOP_INSTANCE))
    )
    failed: dict[str, str] = {}
    for item in _sequence(doc, _TAG_FAILED_SOP):
        uid = _string(item, _TAG_SOP_INSTANCE)
        code = _first_value(item, _TAG_FAILURE_REASON)
        if uid:
            failed[uid] = status_text(code) if isinstance(code, int) else "refused (no reason given)"
    return StowResult(stored, failed)


_STATUS_TEXT = {
    0x0000: "success",
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0x0211: "unrecognized operation",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class (stored anyway)",
    0xC000: "cannot understand",
    0xC122: "SOP class not supported",
}


def status_text(code: int) -> str:
    """A DICOM storage status code as words, e.g. ``0xA700`` -> "out of resources (0xA700)"."""
    base = _STATUS_TEXT.get(code)
    if base is None and 0xA700 <= code <= 0xA7FF:
        base = "out of resources"
    elif base is None and 0xA900 <= code <= 0xA9FF:
        base = "data set does not match SOP class"
    elif base is None and 0xC000 <= code <= 0xCFFF:
        base = "cannot understand"
    return f"{base or 'failure'} (0x{code:04X})"
