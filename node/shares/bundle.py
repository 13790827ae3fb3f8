"""The patient's download: a ZIP of the study's DICOM files and a DICOMDIR, built in memory.

IHE PDI style: ``DICOMDIR`` at the root, the files under ``DICOM/`` with PS3.10 file ids (upper
case, at most 8 characters a component, no extension).  Each file is the stored instance
restored byte for byte (or de-identified, when the share says so); the DICOMDIR's records are
made by pydicom's :class:`~pydicom.fileset.FileSet` from each file's header.

Nothing is written to disk in clear: :class:`ZipBundle` takes one file at a time and hands
back the ZIP bytes it produced so far, which the caller streams to the browser; the ZIP is
written without seeking (data descriptors), so it can be sent as it is made.  pydicom's own
``FileSet.add`` copies every instance to a staging folder on disk, so :class:`_MemoryFileSet`
adds the directory records alone, and the DICOMDIR is encoded into memory.

An instance whose header cannot make the records DICOMDIR asks for (a de-identified file
without a Study Date, say) still travels in the ZIP; it is listed in ``README.TXT`` as not
indexed, so the download never fails for the index alone.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any, Final

import pydicom
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.fileset import FileInstance, FileSet, RecordNode

FILE_PREFIX: Final = "DICOM"
ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)  # no date in the ZIP's own headers: the DICOM has its own


class _Sink(io.RawIOBase):
    """A write-only, unseekable buffer: what the ZIP writer produced since the last :meth:`take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def tell(self) -> int:  # zipfile then counts positions itself and writes data descriptors
        raise OSError("unseekable")

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class _MemoryFileSet(FileSet):
    """A FileSet whose instances are directory records only: no staging copy on disk."""

    def add_header(self, ds: pydicom.Dataset, file_id: list[str]) -> None:
        """Add the records of one instance (from its header) pointing at ``file_id``."""
        # The first half of FileSet.add, without ds.save_as into the staging folder.
        records = self._recordify(ds)
        parent = RecordNode(next(records))
        node = parent
        for record in records:
            node = RecordNode(record)
            node.parent = parent
            parent = node
        instance = FileInstance(node)
        node.instance = instance
        self._tree.add(node)
        self._instances.append(instance)
        node._record.ReferencedFileID = file_id

    def dicomdir(self) -> bytes:
        """The encoded DICOMDIR of the records added so far."""
        buffer = DicomBytesIO()
        self._write_dicomdir(DicomFileLike(buffer))
        return buffer.getvalue()


class ZipBundle:
    """Builds the ZIP one instance at a time; each call returns the bytes to send next."""

    def __init__(self, label: str = "MFTP") -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._fileset = _MemoryFileSet()
        self._fileset.ID = label[:16].upper() or "MFTP"
        self._count = 0
        self._not_indexed: list[str] = []
        self.names: list[str] = []

    def add(self, data: bytes) -> bytes:
        """Put one DICOM file in the ZIP (and its records in the DICOMDIR); the bytes made."""
        self._count += 1
        name = f"I{self._count:07d}"
        path = f"{FILE_PREFIX}/{name}"
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            self._fileset.add_header(header, [FILE_PREFIX, name])
        except Exception:  # pydicom raises many types for a header it cannot index
            self._not_indexed.append(path)
        info = zipfile.ZipInfo(path, ZIP_TIME)
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, data)
        self.names.append(path)
        return self._sink.take()

    def finish(self) -> bytes:
        """The DICOMDIR, a README if some files are not indexed, and the ZIP's directory."""
        if len(self._fileset):
            self._zip.writestr(zipfile.ZipInfo("DICOMDIR", ZIP_TIME), self._fileset.dicomdir())
        if self._not_indexed:
            text = "These files are in the ZIP but not in DICOMDIR (their headers lack what it needs):\r\n"
            text += "".join(f"{path}\r\n" for path in self._not_indexed)
            self._zip.writestr(zipfile.ZipInfo("README.TXT", ZIP_TIME), text.encode("ascii"))
        self._zip.close()
        return self._sink.take()

    @property
    def not_indexed(self) -> list[str]:
        """Paths in the ZIP of files the DICOMDIR does not list."""
        return list(self._not_indexed)


def zip_files(files: Iterator[bytes]) -> bytes:
    """The whole ZIP of ``files`` at once (for tests and small studies)."""
    bundle = ZipBundle()
    parts = [bundle.add(data) for data in files]
    parts.append(bundle.finish())
    return b"".join(parts)
