"""Import from and deliver into a real Orthanc, by DICOMweb and by DIMSE, with real images.

One Orthanc serves the whole module (it takes 3-4 s to stop). It holds a source study built
from pydicom-data images in several transfer syntaxes; delivery tests store other, new studies
into it and read them back through its REST API.

What Orthanc does with the bytes (measured here, asserted below):

* WADO-RS with ``transfer-syntax=*`` returns each file exactly as stored: byte-identical;
* STOW-RS stores the file as sent: ``/instances/{id}/file`` is byte-identical;
* C-GET / C-MOVE send the stored data set re-encoded by DCMTK: the same transfer syntax and
  the same element values, pixel data byte for byte, but not the same file (the receiver writes
  a new File Meta header, and sequence/item lengths may be encoded differently);
* C-STORE: Orthanc keeps the data set it received behind its own File Meta header.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tracemalloc
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pydicom
import pytest
from pydicom.uid import generate_uid

from mftp.node.pacs import (
    DEFAULT_TRANSFER_SYNTAXES,
    DicomWebLimits,
    DicomWebSink,
    DicomWebSource,
    DimseLimits,
    DimsePeer,
    DimseSink,
    DimseSource,
    FolderSource,
    LocalFile,
    PacsError,
    PacsUnavailableError,
)
from mftp.node.pacs import dimse as pacs_dimse
from mftp.transfer.study import FileKind, ImportReport
from tests.orthanc_server import OrthancServer, free_port, orthanc_available, run_orthanc
from tests.samples import sample

MOVE_AET = "MFTPTEST"

# Real images, one per transfer syntax worth covering; their UIDs are rewritten into one study
# (pydicom's samples share UIDs across syntaxes, which Orthanc would merge).
SOURCE_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_RLE.dcm",  # RLE lossless
    "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless SV1
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "rtplan.dcm",  # implicit VR, no pixel data
]
LARGE_FILE = "RG1_UNCR.dcm"  # 7.2 MB radiograph: shows the fetch streams


def read(data: bytes | Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


def rewritten(name: str, study_uid: str, *, syntax: str | None = None) -> bytes:
    """A real file moved into ``study_uid`` with fresh series and instance UIDs, one patient."""
    ds = read(sample(name))
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "MFTP-TEST-1"
    ds.PatientName = "Test^Patient"
    if syntax:  # relabel only: an unknown syntax whose data set is explicit VR little endian
        ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Pacs:
    server: OrthancServer
    move_port: int
    study_uid: str
    uploaded: dict[str, bytes]  # SOP Instance UID -> bytes stored
    large_study_uid: str

    def peer(self) -> DimsePeer:
        return DimsePeer("127.0.0.1", self.server.dicom_port, self.server.aet, MOVE_AET)

    def stored_file(self, sop_uid: str) -> bytes:
        request = urllib.request.Request(
            f"{self.server.url}/tools/lookup", data=sop_uid.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            (found,) = [r for r in json.loads(response.read()) if r["Type"] == "Instance"]
        with urllib.request.urlopen(
            f"{self.server.url}/instances/{found['ID']}/file", timeout=30
        ) as response:
            return bytes(response.read())


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make test`, which installs Debian's orthanc packages")
    move_port = free_port()
    workdir = tmp_path_factory.mktemp("orthanc")
    with run_orthanc(workdir, modalities={"mftp": (MOVE_AET, "127.0.0.1", move_port)}) as server:
        study_uid = generate_uid()
        uploaded = {}
        for name in SOURCE_FILES:
            data = rewritten(name, study_uid)
            assert server.upload(data)["Status"] == "Success", name
            uploaded[read(data).SOPInstanceUID] = data
        large_study_uid = generate_uid()
        server.upload(rewritten(LARGE_FILE, large_study_uid))
        yield Pacs(server, move_port, study_uid, uploaded, large_study_uid)


async def collect(
    source: DicomWebSource | DimseSource, study_uid: str, spill: Path
) -> tuple[list[LocalFile], ImportReport]:
    report = ImportReport()
    files = [f async for f in source.fetch_study(study_uid, spill, report)]
    return files, report


async def test_dicomweb_finds_and_fetches_byte_identical_files(pacs: Pacs, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        source = DicomWebSource(pacs.server.dicomweb_url, session)
        (match,) = await source.find_studies(study_uid=pacs.study_uid)
        assert match.instance_count == len(SOURCE_FILES)
        by_patient = await source.find_studies(patient_id="MFTP-TEST-1")
        assert {m.study_instance_uid for m in by_patient} == {pacs.study_uid, pacs.large_study_uid}
        assert await source.find_studies(accession="no-such-accession") == []
        files, report = await collect(source, pacs.study_uid, tmp_path)
    assert report.all_ok and not report.notes
    assert {f.info.sop_instance_uid: sha(f.path.read_bytes()) for f in files} == {
        uid: sha(data) for uid, data in pacs.uploaded.items()
    }
    for f in files:
        assert f.info.name == f.info.sop_instance_uid and f.path.parent == tmp_path
        assert f.info.sha256 == sha(f.path.read_bytes())
    assert not list(tmp_path.glob(".partial-*"))


async def test_dicomweb_fetch_streams_a_large_file(pacs: Pacs, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        source = DicomWebSource(pacs.server.dicomweb_url, session)
        tracemalloc.start()
        try:
            files, report = await collect(source, pacs.large_study_uid, tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (item,) = files
    assert report.all_ok and item.info.size_bytes > 7_000_000
    assert peak < 2_000_000, f"peak {peak} bytes while fetching a {item.info.size_bytes}-byte file"


async def test_dicomweb_errors_name_the_pacs(pacs: Pacs, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        source = DicomWebSource(pacs.server.dicomweb_url, session)
        with pytest.raises(PacsError, match="not found"):
            await collect(source, generate_uid(), tmp_path)
        with pytest.raises(PacsError, match="invalid Study Instance UID"):
            await collect(source, "../../system", tmp_path)
        with pytest.raises(PacsError, match="wildcards"):
            await source.find_studies(patient_id="MFTP*")
        closed = DicomWebSource(f"http://127.0.0.1:{free_port()}/dicom-web", session)
        with pytest.raises(PacsUnavailableError, match="unreachable"):
            await closed.find_studies(study_uid=pacs.study_uid)


TRAILING_PADDING = 0xFFFCFFFC  # DCMTK drops Data Set Trailing Padding when it sends


def values(ds: pydicom.Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.tag != TRAILING_PADDING}


def assert_same_data_sets(files: list[LocalFile], uploaded: dict[str, bytes]) -> None:
    """Same instances, syntaxes and element values (pixel data byte for byte) as uploaded."""
    assert {f.info.sop_instance_uid for f in files} == set(uploaded)
    for f in files:
        got, sent = read(f.path), read(uploaded[f.info.sop_instance_uid])
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert values(got) == values(sent), f.info.name
        if "PixelData" in sent:
            assert sha(got.PixelData) == sha(sent.PixelData)


@pytest.mark.parametrize("method", ["get", "move"])
async def test_dimse_finds_and_retrieves_every_instance(
    pacs: Pacs, tmp_path: Path, method: Literal["get", "move"]
) -> None:
    source = DimseSource(pacs.peer(), retrieve=method, move_listen=("127.0.0.1", pacs.move_port))
    (match,) = await source.find_studies(study_uid=pacs.study_uid)
    assert match.instance_count == len(SOURCE_FILES)
    assert {m.study_instance_uid for m in await source.find_studies(patient_id="MFTP-TEST-1")} == {
        pacs.study_uid,
        pacs.large_study_uid,
    }
    files, report = await collect(source, pacs.study_uid, tmp_path)
    assert report.all_ok, report.failures
    assert_same_data_sets(files, pacs.uploaded)
    # Byte identity holds for some files only: the File Meta header is the receiver's.
    identical = sum(f.path.read_bytes() == pacs.uploaded[f.info.sop_instance_uid] for f in files)
    assert identical < len(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{uid}.dcm" for uid in pacs.uploaded)


async def test_c_get_splits_sop_classes_over_associations(
    pacs: Pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More (SOP class, syntax) pairs than one association holds: several associations, by series."""
    associations = []
    real_associate = pacs_dimse._associate

    def counting(*args: Any, **kwargs: Any) -> Any:
        associations.append(kwargs.get("ext_neg"))
        return real_associate(*args, **kwargs)

    monkeypatch.setattr(pacs_dimse, "_associate", counting)
    extra = ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.101")
    extra += ("1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106")
    extra += ("1.2.840.10008.1.2.4.108",)
    limits = DimseLimits(transfer_syntaxes=DEFAULT_TRANSFER_SYNTAXES + extra)  # 4 SOP classes per association
    files, report = await collect(DimseSource(pacs.peer(), limits=limits), pacs.study_uid, tmp_path)
    assert report.all_ok, report.failures
    assert_same_data_sets(files, pacs.uploaded)
    assert [len(roles) for roles in associations if roles] == [4, 2]  # 6 SOP classes, 4 per association


async def test_dimse_errors_name_the_pacs(pacs: Pacs, tmp_path: Path) -> None:
    source = DimseSource(pacs.peer())
    with pytest.raises(PacsError, match="not found"):
        await collect(source, generate_uid(), tmp_path)
    closed = DimseSource(DimsePeer("127.0.0.1", free_port(), "ORTHANC"))
    with pytest.raises(PacsUnavailableError, match="association"):
        await closed.find_studies(study_uid=pacs.study_uid)
    with pytest.raises(ValueError, match="move_listen"):
        DimseSource(pacs.peer(), retrieve="move")


def delivery_folder(root: Path) -> tuple[str, Path]:
    """A new study to deliver: real images, one with an unknown transfer syntax, an attachment."""
    study_uid = generate_uid()
    root.mkdir()
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "rtplan.dcm"):
        (root / name).write_bytes(rewritten(name, study_uid))
    (root / "odd.dcm").write_bytes(rewritten("MR_small.dcm", study_uid, syntax="1.2.3.4.5.6.7"))
    (root / "guide.stl").write_bytes(STL)
    (root / "notes.txt").write_bytes(b"plain text has no DICOM form\n")
    return study_uid, root


STL = b"solid guide\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 1 0\n"
STL += b"  endloop\n endfacet\nendsolid guide\n"
TXT_FAILURE = ("notes.txt", "attachment of type text/plain: no DICOM form, a PACS cannot store it")


async def assert_attachment_stored(pacs: Pacs, study_uid: str, tmp_path: Path, instances: int) -> None:
    """The STL is in the study as an Encapsulated STL instance holding the same bytes."""
    tmp_path.mkdir()
    async with aiohttp.ClientSession() as session:
        files, report = await collect(DicomWebSource(pacs.server.dicomweb_url, session), study_uid, tmp_path)
    assert report.all_ok and len(files) == instances
    (stl,) = [f for f in files if f.info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.104.3"]
    ds = read(stl.path)
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == STL
    assert ds.PatientID == "MFTP-TEST-1" and ds.StudyInstanceUID == study_uid


def import_folder(root: Path, spill: Path) -> list[LocalFile]:
    report = ImportReport()
    files = list(FolderSource(root).scan(spill, report))
    assert report.all_ok
    return files


async def test_stow_rs_delivery_stores_files_as_sent(pacs: Pacs, tmp_path: Path) -> None:
    study_uid, root = delivery_folder(tmp_path / "in")
    files = import_folder(root, tmp_path)
    async with aiohttp.ClientSession() as session:
        sink = DicomWebSink(pacs.server.dicomweb_url, session)
        report = await sink.deliver(files, study_uid=study_uid)
        (match,) = await DicomWebSource(pacs.server.dicomweb_url, session).find_studies(study_uid=study_uid)
    assert [(f.name, f.reason) for f in report.failures] == [TXT_FAILURE]
    dicom = [f for f in files if f.info.kind is FileKind.DICOM]
    assert sorted(report.ok) == sorted([f.info.name for f in dicom] + ["guide.stl"])
    assert match.instance_count == len(dicom) + 1
    for f in dicom:
        assert pacs.stored_file(f.info.sop_instance_uid) == f.path.read_bytes(), f.info.name
    await assert_attachment_stored(pacs, study_uid, tmp_path / "check", len(dicom) + 1)


async def test_stow_rs_batches_and_unreachable_server(pacs: Pacs, tmp_path: Path) -> None:
    _, root = delivery_folder(tmp_path / "in")
    files = [f for f in import_folder(root, tmp_path) if f.info.kind is FileKind.DICOM]
    async with aiohttp.ClientSession() as session:
        sink = DicomWebSink(pacs.server.dicomweb_url, session, limits=DicomWebLimits(batch_files=2))
        assert (await sink.deliver(files)).all_ok
        closed = DicomWebSink(f"http://127.0.0.1:{free_port()}/dicom-web", session)
        report = await closed.deliver(files)
    assert report.failed_count == len(files) and not report.ok
    assert report.failures[0].reason.startswith("STOW-RS failed: ClientConnectorError")


async def test_c_store_delivery_reports_each_file(pacs: Pacs, tmp_path: Path) -> None:
    study_uid, root = delivery_folder(tmp_path / "in")
    files = import_folder(root, tmp_path)
    report = await DimseSink(pacs.peer()).deliver(files, study_uid=study_uid)
    reasons = {f.name: f.reason for f in report.failures}
    assert reasons == {
        TXT_FAILURE[0]: TXT_FAILURE[1],
        "odd.dcm": "the PACS refused transfer syntax 1.2.3.4.5.6.7 for this SOP class",
    }
    delivered = [f for f in files if f.info.name in report.ok and f.info.kind is FileKind.DICOM]
    assert len(delivered) == 4 and "guide.stl" in report.ok
    await assert_attachment_stored(pacs, study_uid, tmp_path / "check", 5)
    for f in delivered:
        stored = read(pacs.stored_file(f.info.sop_instance_uid))
        assert values(stored) == values(read(f.path))
        assert stored.file_meta.TransferSyntaxUID == f.info.transfer_syntax_uid


async def test_c_store_to_an_unreachable_pacs_fails_every_file(tmp_path: Path) -> None:
    _, root = delivery_folder(tmp_path / "in")
    files = [f for f in import_folder(root, tmp_path) if f.info.kind is FileKind.DICOM]
    report = await DimseSink(DimsePeer("127.0.0.1", free_port(), "NOBODY")).deliver(files)
    assert report.failed_count == len(files)
    assert all("association with NOBODY" in f.reason for f in report.failures)


async def test_fetch_can_be_abandoned_midway(pacs: Pacs, tmp_path: Path) -> None:
    """A consumer that stops early leaves no partial files and no stuck worker."""
    source = DimseSource(pacs.peer())
    report = ImportReport()
    stream = source.fetch_study(pacs.study_uid, tmp_path, report)
    first = await anext(stream)
    await stream.aclose()
    assert first.path.exists()
    await asyncio.sleep(0.5)
    assert not list(tmp_path.glob(".partial-*"))
