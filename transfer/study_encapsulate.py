"""Wrap an attachment (PDF, STL, OBJ, MTL) as a DICOM instance of its study.

A PACS stores DICOM only; DICOM has encapsulated-document SOP classes for exactly these files
(PS3.3 A.45 Encapsulated PDF, A.85 Encapsulated STL, A.86 OBJ, A.87 MTL). The instance takes the
patient and study attributes of one instance of the study, so the PACS files it with the images,
and the document's bytes unchanged. Its UIDs derive from the study and the document's SHA-256, so
delivering the same attachment twice replaces the same instance instead of adding another.

The document title is fixed ("MFTP attachment"): file names often carry patient names.

Pure: bytes and a data set in, bytes out; the time is passed in.
"""

from __future__ import annotations

import hashlib
import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from .errors import TransferInputError, TransferUsageError
from .study_probe import IMPLEMENTATION_CLASS_UID

__all__ = ["ENCAPSULATED_TYPES", "MAX_DOCUMENT_BYTES", "encapsulate_attachment"]

ENCAPSULATED_TYPES: dict[str, tuple[str, str]] = {
    "application/pdf": ("1.2.840.10008.5.1.4.1.1.104.1", "DOC"),
    "model/stl": ("1.2.840.10008.5.1.4.1.1.104.3", "M3D"),
    "model/obj": ("1.2.840.10008.5.1.4.1.1.104.4", "M3D"),
    "model/mtl": ("1.2.840.10008.5.1.4.1.1.104.5", "M3D"),
}
"""Media type -> (SOP Class UID, Modality) of the DICOM form of an attachment."""

MAX_DOCUMENT_BYTES = 1 << 30
"""An encapsulated document is held in memory while wrapped; larger attachments stay files."""

# Patient and General Study modules: what makes the PACS file the document with the images.
_COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_SERIES_NUMBER = 9901
_TITLE = "MFTP attachment"


def _uid(*parts: bytes) -> str:
    """A UID under the UUID root 2.25 (PS3.5 B.2) derived from ``parts``."""
    digest = hashlib.sha256(b"\0".join(parts)).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def encapsulate_attachment(
    document: bytes, *, media_type: str, study: Dataset, content_date: str, content_time: str
) -> bytes:
    """A Part 10 file holding ``document`` as an encapsulated document of ``study``'s study.

    ``study`` is any instance of the study (its patient and study attributes are copied);
    ``content_date``/``content_time`` are DA/TM strings of when the document is stored.
    """
    if media_type not in ENCAPSULATED_TYPES:
        raise TransferUsageError(f"no DICOM form for {media_type!r}")
    if len(document) > MAX_DOCUMENT_BYTES:
        raise TransferInputError(f"attachment larger than {MAX_DOCUMENT_BYTES} bytes cannot be wrapped")
    study_uid = str(study.get("StudyInstanceUID", ""))
    if not study_uid:
        raise TransferInputError("the study instance has no Study Instance UID")
    sop_class, modality = ENCAPSULATED_TYPES[media_type]
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)  # type: ignore[union-attr]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
        if keyword not in ds:
            setattr(ds, keyword, "")  # type 2: present, possibly empty
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(b"instance", study_uid.encode(), hashlib.sha256(document).digest())
    ds.SeriesInstanceUID = _uid(b"series", study_uid.encode(), media_type.encode())
    ds.Modality = modality
    ds.SeriesNumber = _SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.Manufacturer = "MFTP"
    ds.ConversionType = "WSD"
    ds.ContentDate = content_date
    ds.ContentTime = content_time
    ds.AcquisitionDateTime = content_date + content_time
    ds.BurnedInAnnotation = "YES"  # a document may show anything, names included
    ds.DocumentTitle = _TITLE
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = media_type
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    if media_type != "application/pdf":
        ds.EncapsulatedDocumentLength = len(document)  # the padding byte is not the model's
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
