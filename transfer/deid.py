"""De-identification of DICOM instances for MFTP transfers (DICOM PS3.15 Annex E).

Each transfer chooses a :class:`Mode`; :class:`Policy` carries the mode and the Annex E options.
Everything here is pure: bytes or a :class:`pydicom.Dataset` in, bytes or a new Dataset out, no
disk, clock or randomness (the per-transfer salt of ANONYMOUS mode is passed in).

Modes (decided with a hospital's privacy officer and the receiving radiologist in mind)
    IDENTIFIED
        Bytes untouched. For care of the patient by the recipient (referral, second opinion
        within a treatment relationship), where the recipient must know who the patient is.
    PSEUDONYMISED
        Basic Application Level Confidentiality Profile plus Retain Longitudinal Temporal
        Information with Modified Dates (every date of a patient shifted by one per-patient
        offset), Retain Patient Characteristics and Clean Descriptors. Patient ID and Patient's
        Name become a keyed pseudonym of the Patient ID, so the recipient can link the studies of
        one patient (follow-up, longitudinal research) but cannot tell who the patient is; the
        sending institution, holding the key, can re-identify. A file without a Patient ID gets the
        per-study pseudonym of DEIDENTIFIED.
    DEIDENTIFIED
        The same attributes as PSEUDONYMISED, but no linkage beyond the study: Patient ID and
        Patient's Name become a keyed pseudonym of the Study Instance UID, and the dates of each
        study are shifted by an offset of their own (one per patient would link the studies of a
        patient by the same shift). They are not left
        empty, because a PACS receiving several studies with an empty Patient ID may merge them
        into one "patient", a clinical hazard for the radiologist.
    ANONYMOUS
        Basic Profile only, dates removed. UIDs and the per-study patient pseudonym are keyed
        with a key derived from the institution's secret and a per-transfer salt, so two sends
        of the same study cannot be linked, not even by the sender once the salt is dropped.
        (With the plain institution key a study sent twice gets the same UIDs, which is wanted
        for the other modes but is linkage.) Retain UIDs and retained dates are refused here.
    :meth:`Policy.for_mode` gives these defaults; options may be changed with
    :func:`dataclasses.replace` within the limits checked by :class:`Policy`. In every mode the
    images stay usable: pixel data, geometry and acquisition parameters are not in Table E.1-1
    and are kept.

Table, options and actions
    :mod:`mftp.transfer.deid_table` is Table E.1-1 (edition in ``deid_table.EDITION``);
    :mod:`mftp.transfer.deid_actions` applies it and documents how each action code, compound
    codes included, is carried out. Options offered: Retain Longitudinal Temporal Information
    (:class:`Dates` FULL = Full Dates, SHIFTED = Modified Dates, REMOVED = neither), Retain Patient
    Characteristics, Retain Device Identity, Retain UIDs and Clean Descriptors. New UIDs are
    ``2.25.`` + the decimal of a keyed HMAC of the old UID (:func:`derive_uid`); Media Storage SOP
    Instance UID is set to the new SOP Instance UID.

Patient identity and dates
    Pseudonyms use the same construction as UIDs with the labels b"patient\\0" and
    b"study-patient\\0". The date offset, unless given, is derived from HMAC(secret,
    b"date-offset\\0" + Patient ID) in PSEUDONYMISED mode, and from the Study Instance UID in the
    other modes and when there is no Patient ID; it lies 1 to 10 years back: deterministic, so a
    patient's studies sent at different times keep their intervals in PSEUDONYMISED mode (how
    dates are shifted: :mod:`mftp.transfer.deid_actions`). Patient's Birth Date is emptied in
    every mode (the table has no option for it); Patient's Age, kept with Retain Patient
    Characteristics, is capped at 090Y (HIPAA Safe Harbor: ages over 89 identify).

Marking
    Patient Identity Removed (0012,0062) = YES; De-identification Method (0012,0063) names the
    standard, edition and MFTP mode; De-identification Method Code Sequence (0012,0064) lists the
    CID 7050 codes of the profile and options applied; Longitudinal Temporal Information Modified
    (0028,0303) = UNMODIFIED, MODIFIED or REMOVED. The File Meta Information is rebuilt with only
    the SOP Class, SOP Instance and Transfer Syntax UIDs of the instance (the source AE title and
    private meta information go).

What the table does not cover: the pixels
    An image whose kind can carry burned-in text (ultrasound, screen captures, photographs, cine,
    Burned In Annotation YES, vendors' flags: :func:`mftp.transfer.deid_pixels.text_risks`) is
    cleaned when ``Policy.burned_in`` is "clean" (the default): text found in its pixels is
    blanked frame by frame, the pixels are stored uncompressed, Burned In Annotation becomes NO
    and the Clean Pixel Data Option (DCM 113101) is added to (0012,0064). With "refuse", such an
    image is refused by name. Either way an image that cannot be examined (undecodable, float or
    1-bit pixels) is refused by name with :class:`~mftp.transfer.deid_pixels.PixelsRefused`.
    :func:`deidentify_file` returns a :class:`~mftp.transfer.deid_pixels.PixelReport` for each
    cleaned image, so the sender can say what was cleaned and why. Text is found by a model-free
    detector and, when the caller passes one (``text_finder``), an OCR engine such as
    :class:`mftp.transfer.ocr_tesseract.Tesseract`; the union of both is blanked.

Errors and limits
    Non-DICOM, truncated or malformed files raise :class:`TransferInputError` with the file's
    name; :func:`deidentify_study` reports such files one by one and goes on with the rest.
    pydicom reads short files without complaint, so truncation is detected here: a partial
    element header, a value shorter than its length, a missing sequence delimiter, no SOP Class or
    SOP Instance UID, or an image (by SOP Class or Image Pixel attributes) without pixel data. A
    cut exactly between two elements of a non-image object (RT Plan, SR) cannot be seen by any
    parser: such a file is de-identified as the shorter object it is. Damage that would pass
    through unread is refused too (while walking, see :mod:`mftp.transfer.deid_actions`): a VR
    that is not the standard's, a binary value of the wrong length, control characters in text
    (a damaged length swallowing the elements after it). Files over
    :data:`MAX_FILE_SIZE_BYTES` and sequences nested deeper than :data:`MAX_SEQUENCE_DEPTH` are
    refused. Messages never carry attribute values; pydicom's own warnings about invalid values
    can quote them, so a production process should silence them (logger ``pydicom`` and
    ``pydicom.config.settings.reading_validation_mode = IGNORE``): global settings, not ours to
    change from a pure function.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import re
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from .deid_actions import (
    MAX_SEQUENCE_DEPTH,
    Context,
    Dates,
    derive_uid,
    keyed_number,
    map_uids,
    process,
    rules_for,
)
from .deid_iod import family
from .deid_pixels import (
    BURNED_IN_CHOICES,
    BurnedInChoice,
    NotExaminable,
    PixelReport,
    PixelsRefused,
    clean,
    text_risks,
)
from .deid_table import PROFILE_CODES, STANDARD, Action, Code, Column
from .errors import TransferError, TransferInputError, TransferUsageError
from .pixels_text import TextFinder

__all__ = [
    "MAX_FILE_SIZE_BYTES",
    "MAX_SEQUENCE_DEPTH",
    "Dates",
    "Deidentified",
    "FileResult",
    "Mode",
    "PixelReport",
    "PixelsRefused",
    "Policy",
    "deidentify",
    "deidentify_bytes",
    "deidentify_file",
    "deidentify_study",
    "derive_offset_days",
    "derive_uid",
]

MIN_SECRET_BYTES = 16
MIN_SALT_BYTES = 16
MAX_FILE_SIZE_BYTES = 2 * 1024**3
MAX_OFFSET_DAYS = 36_525  # a given offset beyond a century is a caller's mistake
DATE_SHIFT_MIN_DAYS = 365
DATE_SHIFT_MAX_DAYS = 3_652
AGE_CAP = "090Y"
IMPLEMENTATION_VERSION_NAME = "MFTP_DEID_1"


class Mode(Enum):
    """How much identity a transfer keeps (see the module docstring)."""

    IDENTIFIED = "identified"
    PSEUDONYMISED = "pseudonymised"
    DEIDENTIFIED = "deidentified"
    ANONYMOUS = "anonymous"


CLEAN_PIXEL_DATA = Code("113101", "Clean Pixel Data Option")
_TEMPORAL_MARK = {Dates.FULL: "UNMODIFIED", Dates.SHIFTED: "MODIFIED", Dates.REMOVED: "REMOVED"}


@dataclass(frozen=True)
class Policy:
    """What a transfer does to identity: the mode and the Annex E options.

    ``transfer_salt`` is required in ANONYMOUS mode (random, at least 16 bytes, new for every
    transfer) and refused in the others, where repeated sends must give the same UIDs.
    ``burned_in`` says what happens to images whose pixels may show identity: "clean" (blank the
    text found in them) or "refuse" (leave them out, by name). IDENTIFIED mode ignores it.
    """

    mode: Mode
    dates: Dates = Dates.REMOVED
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_uids: bool = False
    clean_descriptors: bool = False
    burned_in: BurnedInChoice = "clean"
    transfer_salt: bytes | None = None

    def __post_init__(self) -> None:
        if self.burned_in not in BURNED_IN_CHOICES:
            raise TransferUsageError(f"burned_in must be one of {', '.join(BURNED_IN_CHOICES)}")
        if self.mode is Mode.ANONYMOUS:
            if self.transfer_salt is None or len(self.transfer_salt) < MIN_SALT_BYTES:
                raise TransferUsageError(f"ANONYMOUS needs a transfer_salt of {MIN_SALT_BYTES}+ bytes")
            if self.dates is not Dates.REMOVED or self.retain_uids:
                raise TransferUsageError("ANONYMOUS cannot retain dates or UIDs")
        elif self.transfer_salt is not None:
            raise TransferUsageError("transfer_salt is only for ANONYMOUS")

    @classmethod
    def for_mode(cls, mode: Mode, *, transfer_salt: bytes | None = None) -> Policy:
        """The MFTP defaults for ``mode``."""
        if mode in (Mode.PSEUDONYMISED, Mode.DEIDENTIFIED):
            return cls(
                mode,
                dates=Dates.SHIFTED,
                retain_patient_characteristics=True,
                clean_descriptors=True,
            )
        return cls(mode, transfer_salt=transfer_salt)

    @property
    def columns(self) -> frozenset[Column]:
        """The option columns of Table E.1-1 this policy applies (the Basic Profile always)."""
        chosen = {
            Column.RETAIN_LONG_FULL_DATES: self.dates is Dates.FULL,
            Column.RETAIN_LONG_MODIFIED_DATES: self.dates is Dates.SHIFTED,
            Column.RETAIN_PATIENT_CHARACTERISTICS: self.retain_patient_characteristics,
            Column.RETAIN_DEVICE_IDENTITY: self.retain_device_identity,
            Column.RETAIN_UIDS: self.retain_uids,
            Column.CLEAN_DESCRIPTORS: self.clean_descriptors,
        }
        return frozenset(column for column, on in chosen.items() if on)

    @property
    def codes(self) -> list[Code]:
        """CID 7050 codes of the profile and options, for (0012,0064)."""
        columns = self.columns
        return [code for column, code in PROFILE_CODES.items() if column is Column.BASIC or column in columns]


@dataclass(frozen=True)
class Deidentified:
    """One de-identified file: its bytes, and what was done to its pixels (None: not touched)."""

    data: bytes
    pixels: PixelReport | None = None


@dataclass(frozen=True)
class FileResult:
    """Outcome for one file of a study: de-identified bytes, or the error naming the file.

    ``pixels`` reports a cleaned image; a refused one carries a :class:`PixelsRefused` error.
    """

    name: str
    data: bytes | None
    error: TransferInputError | None = None
    pixels: PixelReport | None = None

    @property
    def ok(self) -> bool:
        """True when the file was de-identified."""
        return self.error is None


# ----------------------------------------------------------------------------- keyed derivations


def derive_offset_days(secret: bytes, patient_id: str) -> int:
    """The per-patient date shift (negative: 1 to 10 years back), stable for a patient."""
    digest = hmac.new(secret, b"date-offset\0" + patient_id.encode("utf-8"), hashlib.sha256).digest()
    span = DATE_SHIFT_MAX_DAYS - DATE_SHIFT_MIN_DAYS + 1
    return -(DATE_SHIFT_MIN_DAYS + int.from_bytes(digest[:8], "big") % span)


def _offset_subject(policy: Policy, original: _Originals) -> str:
    """What one date offset is kept for: the patient when the mode links a patient's studies
    (PSEUDONYMISED), else the study alone, so no two studies of a patient share a shift.

    A study without a Patient ID is its own subject in every mode (as it always was).
    """
    if policy.mode is Mode.PSEUDONYMISED and original.patient_id:
        return original.patient_id
    return original.study_uid


def _uid_key(policy: Policy, secret: bytes) -> bytes:
    if policy.mode is Mode.ANONYMOUS and policy.transfer_salt is not None:
        return hmac.new(secret, b"anonymous-transfer\0" + policy.transfer_salt, hashlib.sha256).digest()
    return secret


# ----------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class _Originals:
    patient_id: str
    study_uid: str
    identifiers: frozenset[str]

    @classmethod
    def of(cls, ds: Dataset) -> _Originals:
        patient_id = " ".join(_strings(ds.get("PatientID"))).strip()
        names = re.split(r"[\^=\s,]+", " ".join(_strings(ds.get("PatientName"))))
        others = [s for k in ("AccessionNumber", "StudyID", "OtherPatientIDs") for s in _strings(ds.get(k))]
        # Short fragments would reject harmless words; 3+ characters is still strict.
        found = {s.strip().upper() for s in (patient_id, *names, *others)}
        return cls(
            patient_id,
            str(ds.get("StudyInstanceUID", "") or "").strip(),
            frozenset(s for s in found if len(s) >= 3),
        )


def _strings(value: Any) -> list[str]:
    """The values of an attribute as strings (none for an absent or empty one)."""
    if value is None:
        return []
    values = value if isinstance(value, MultiValue | list) else [value]
    return [str(v) for v in values if v is not None and str(v) != ""]


def _check_secret(secret: bytes, patient_offset_days: int | None) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise TransferUsageError(f"secret must be {MIN_SECRET_BYTES}+ bytes")
    if patient_offset_days is not None and abs(patient_offset_days) > MAX_OFFSET_DAYS:
        raise TransferUsageError("patient_offset_days out of range")


def burned_in(value: object) -> bool:
    """Whether a Burned In Annotation (0028,0301) value says the pixels may show identity."""
    return str(value).strip().upper() == "YES"


def _deidentify_in_place(
    ds: Dataset,
    policy: Policy,
    secret: bytes,
    offset_days: int | None,
    name: str,
    finder: TextFinder | None = None,
) -> PixelReport | None:
    # Decided before the walk: the vendors' flags are private attributes, which it removes.
    risks = text_risks(ds) if any(k in ds for k in _PIXEL_KEYWORDS) else ()
    if risks and policy.burned_in == "refuse":
        raise PixelsRefused(risks, 'the policy refuses such images (burned_in = "refuse")', name=name)
    original = _Originals.of(ds)
    if offset_days is None:
        offset_days = derive_offset_days(secret, _offset_subject(policy, original))
    ctx = Context(
        policy.dates,
        rules_for(policy.columns),
        _uid_key(policy, secret),
        offset_days,
        name,
        original.identifiers,
        iod=family(ds),
    )
    process(ds, ctx)
    pixels = None
    if risks:
        try:
            pixels = clean(ds, risks, finder, name)
        except NotExaminable as exc:
            raise PixelsRefused(risks, f"cannot be examined: {_reason(exc, name)}", name=name) from exc
    _set_patient_identity(ds, policy, secret, ctx, original)
    _cap_age(ds)
    _mark(ds, policy, pixels)
    _rebuild_file_meta(ds, ctx)
    return pixels


def _reason(exc: TransferInputError, name: str) -> str:
    return str(exc).removeprefix(f"{name}: ")


def _set_patient_identity(
    ds: Dataset, policy: Policy, secret: bytes, ctx: Context, original: _Originals
) -> None:
    if policy.mode is Mode.PSEUDONYMISED and original.patient_id:
        pseudonym = keyed_number(secret, b"patient\0", original.patient_id)
    else:  # one study, no linkage; also PSEUDONYMISED files that have no Patient ID to link by
        pseudonym = keyed_number(ctx.uid_key, b"study-patient\0", original.study_uid)
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym


def _cap_age(ds: Dataset) -> None:
    age = str(ds.get("PatientAge", "") or "")
    match = re.fullmatch(r"(\d{3})Y", age.strip())
    if match is not None and int(match.group(1)) >= int(AGE_CAP[:3]):
        ds.PatientAge = AGE_CAP


def _mark(ds: Dataset, policy: Policy, pixels: PixelReport | None) -> None:
    ds.PatientIdentityRemoved = "YES"
    methods = _strings(ds.get("DeidentificationMethod"))  # an earlier de-identification stays on record
    mine = [f"{STANDARD} Table E.1-1", f"MFTP {policy.mode.value}"]
    if pixels is not None:
        mine.append(f"MFTP pixels: {pixels.regions} text region(s) blanked")
    ds.DeidentificationMethod = [*methods, *mine]
    items = Sequence(list(ds.get("DeidentificationMethodCodeSequence") or []))
    for code in policy.codes + ([CLEAN_PIXEL_DATA] if pixels is not None else []):
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme
        item.CodeMeaning = code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = _TEMPORAL_MARK[policy.dates]


def _rebuild_file_meta(ds: Dataset, ctx: Context) -> None:
    old = getattr(ds, "file_meta", None)
    if old is None:
        return
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or old.get("MediaStorageSOPClassUID")
    instance = ds.get("SOPInstanceUID") or old.get("MediaStorageSOPInstanceUID")
    if "SOPInstanceUID" not in ds and ctx.rules[0x00020003].action is not Action.K:
        instance = map_uids(instance, ctx)
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = UID(old.get("TransferSyntaxUID") or _syntax_of(ds, ctx.name))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def _syntax_of(ds: Dataset, name: str) -> str:
    implicit, little = ds.original_encoding
    if implicit and little:
        return str(ImplicitVRLittleEndian)
    if implicit is False:
        return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    raise TransferInputError("no Transfer Syntax UID and unknown encoding", name=name)


# ----------------------------------------------------------------------------- parsing and writing

# What pydicom raises on malformed input (TypeError: it decodes bad text or values with it). KeyError,
# AttributeError etc. are left alone: they would be our bugs.
_MALFORMED = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    OSError,
    struct.error,
    ValueError,
    OverflowError,
    NotImplementedError,
    TypeError,
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IMAGE_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")


@contextmanager
def _input_errors(name: str) -> Iterator[None]:
    try:
        yield
    except TransferError:
        raise
    except _MALFORMED as exc:
        raise TransferInputError(f"malformed DICOM ({type(exc).__name__})", name=name) from exc


class _StrictReader(io.BytesIO):
    """Notes partial element headers, which pydicom takes silently for the end of the data."""

    short_read = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if size is not None and 0 < len(data) < size <= 12:
            self.short_read = True
        return data


def _parse(data: bytes, name: str) -> Dataset:
    if len(data) > MAX_FILE_SIZE_BYTES:
        raise TransferInputError(f"larger than {MAX_FILE_SIZE_BYTES} bytes", name=name)
    reader = _StrictReader(data)
    with _input_errors(name):
        ds = pydicom.dcmread(reader)
        if reader.short_read or _malformed_elements(ds):
            raise TransferInputError("truncated DICOM file", name=name)
        # pydicom answers a missing sequence delimiter at the end of the file with a warning and
        # an empty dataset, which this catches too.
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise TransferInputError("no SOP Class or Instance UID (truncated?)", name=name)
        if _is_image(ds) and not any(k in ds for k in _PIXEL_KEYWORDS):
            raise TransferInputError("image without pixel data (truncated?)", name=name)
    return ds


def _is_image(ds: Dataset) -> bool:
    """An image storage instance (by SOP Class), or one with the Image Pixel attributes."""
    sop_class = UID(str(ds.get("SOPClassUID", "") or "").strip("\0 "))
    return "Image Storage" in sop_class.name or all(k in ds for k in _IMAGE_KEYWORDS)


def _malformed_elements(ds: Dataset) -> bool:
    """Top-level elements cut short (pydicom keeps what it got) or without a value at all."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)  # raw as read: nothing is deferred here
        if not isinstance(elem, RawDataElement) or elem.length in (0, 0xFFFFFFFF):
            continue
        if elem.value is None or len(elem.value) != elem.length:
            return True
    return False


def _write(ds: Dataset, name: str) -> bytes:
    out = io.BytesIO()
    with _input_errors(name):
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ----------------------------------------------------------------------------- public API


def deidentify(
    ds: Dataset,
    policy: Policy,
    secret: bytes,
    *,
    patient_offset_days: int | None = None,
    name: str = "<dataset>",
    text_finder: TextFinder | None = None,
) -> Dataset:
    """A de-identified copy of ``ds`` (``ds`` itself is not changed).

    ``secret`` is the institution's key (16+ bytes) for UIDs, pseudonyms and date offsets;
    ``patient_offset_days`` overrides the derived per-patient date shift; ``text_finder`` is an
    OCR engine used, with the model-free detector, on images whose pixels may show identity.
    Raises :class:`TransferInputError` naming ``name`` for refused or malformed input.
    """
    _check_secret(secret, patient_offset_days)
    result = copy.deepcopy(ds)
    if policy.mode is not Mode.IDENTIFIED:
        with _input_errors(name):
            _deidentify_in_place(result, policy, secret, patient_offset_days, name, text_finder)
    return result


def deidentify_file(
    data: bytes,
    policy: Policy,
    secret: bytes,
    *,
    name: str,
    patient_offset_days: int | None = None,
    text_finder: TextFinder | None = None,
) -> Deidentified:
    """De-identify one DICOM Part 10 file, saying what was done to its pixels.

    IDENTIFIED mode returns ``data`` itself, unread. An image whose pixels may show identity is
    cleaned (``Deidentified.pixels`` says how and why) or refused with :class:`PixelsRefused`
    naming the file, as ``policy.burned_in`` says; other bad input raises
    :class:`TransferInputError` naming the file.
    """
    _check_secret(secret, patient_offset_days)
    if policy.mode is Mode.IDENTIFIED:
        return Deidentified(data)
    ds = _parse(data, name)
    with _input_errors(name):
        pixels = _deidentify_in_place(ds, policy, secret, patient_offset_days, name, text_finder)
    return Deidentified(_write(ds, name), pixels)


def deidentify_bytes(
    data: bytes,
    policy: Policy,
    secret: bytes,
    *,
    name: str,
    patient_offset_days: int | None = None,
    text_finder: TextFinder | None = None,
) -> bytes:
    """De-identify one DICOM Part 10 file (:func:`deidentify_file` without the pixel report)."""
    return deidentify_file(
        data, policy, secret, name=name, patient_offset_days=patient_offset_days, text_finder=text_finder
    ).data


def deidentify_study(
    files: Iterable[tuple[str, bytes]],
    policy: Policy,
    secret: bytes,
    *,
    patient_offset_days: int | None = None,
    text_finder: TextFinder | None = None,
) -> Iterator[FileResult]:
    """De-identify ``(name, bytes)`` pairs lazily, one :class:`FileResult` per file.

    A bad or refused file yields a result carrying its :class:`TransferInputError`; a cleaned
    image carries its :class:`PixelReport`; the rest go on. Usage errors (a short secret) are
    raised at once, before any file is read.
    """
    _check_secret(secret, patient_offset_days)
    return _study(files, policy, secret, patient_offset_days, text_finder)


def _study(
    files: Iterable[tuple[str, bytes]],
    policy: Policy,
    secret: bytes,
    offset: int | None,
    finder: TextFinder | None,
) -> Iterator[FileResult]:
    for name, data in files:
        try:
            out = deidentify_file(
                data, policy, secret, name=name, patient_offset_days=offset, text_finder=finder
            )
        except TransferInputError as exc:
            yield FileResult(name, None, exc)
        else:
            yield FileResult(name, out.data, pixels=out.pixels)
