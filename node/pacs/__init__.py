"""Import studies from a PACS or a folder, deliver them into a PACS or a folder.

One interface for every kind of PACS:

* sources yield :class:`LocalFile` objects (a path on local disk and its
  :class:`~mftp.transfer.study.SourceFile` description), one per DICOM instance or attachment,
  and record every file that cannot travel in an :class:`~mftp.transfer.study.ImportReport`
  with a reason: :class:`FolderSource` (``scan``, synchronous), :class:`DicomWebSource` and
  :class:`DimseSource` (``find_studies`` and ``fetch_study``, asynchronous);
* sinks take those files and return a :class:`~mftp.transfer.study.DeliveryReport`:
  :class:`FolderSink`, :class:`DicomWebSink` (STOW-RS) and :class:`DimseSink` (C-STORE), all
  with ``async deliver(files, study_uid=...)``.

A study is never held in memory: instances are spilled to a caller-provided folder as they
stream in. Errors about one file are in the reports; :class:`PacsError` and
:class:`PacsUnavailableError` are about the PACS itself.

What a PACS does with the bytes (measured with Orthanc 1.10, ``tests/node/test_pacs_orthanc.py``):
WADO-RS with ``transfer-syntax=*`` and STOW-RS keep files byte for byte. By DIMSE (C-GET,
C-MOVE, C-STORE) the data set travels in its stored transfer syntax with the same element values
and the same pixel data bytes, but not the same file: the receiver writes its own File Meta
header, and DCMTK drops Data Set Trailing Padding (FFFC,FFFC) and may re-encode lengths. So a
file's SHA-256 survives DICOMweb, not DIMSE.

Process-wide side effect: the first DIMSE use sets pynetdicom to stream data sets to and from
disk (``STORE_SEND/RECV_CHUNKED_DATASET``), not to log query identifiers, and its logger to
WARNING. pynetdicom writes each received data set to the system temporary folder before it is
moved into the spill folder.
"""

from __future__ import annotations

from .common import LocalFile, PacsError, PacsUnavailableError, describe_path
from .dicomweb import DicomWebLimits, DicomWebSink, DicomWebSource
from .dimse import DEFAULT_TRANSFER_SYNTAXES, DimseLimits, DimsePeer, DimseSink, DimseSource
from .folder import FolderLimits, FolderSink, FolderSource

__all__ = [
    "DEFAULT_TRANSFER_SYNTAXES",
    "DicomWebLimits",
    "DicomWebSink",
    "DicomWebSource",
    "DimseLimits",
    "DimsePeer",
    "DimseSink",
    "DimseSource",
    "FolderLimits",
    "FolderSink",
    "FolderSource",
    "LocalFile",
    "PacsError",
    "PacsUnavailableError",
    "describe_path",
]
