"""Importing a study from a folder and delivering one into a folder, bad files included."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
import tracemalloc
import warnings
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mftp.node.pacs import FolderSink, FolderSource, LocalFile, describe_path, folder
from mftp.node.transfers.preparing import PreparePool
from mftp.transfer.study import FileKind, ImportReport, group_studies
from tests.samples import sample


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_uids(data: bytes, **changes: str) -> bytes:
    """A real file with some attributes changed, re-saved in its own transfer syntax."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    syntax = changes.pop("TransferSyntaxUID", None)
    if syntax:  # relabel only: the data set keeps its encoding
        ds.file_meta.TransferSyntaxUID = syntax
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def bare_data_set(data: bytes, **changes: str) -> bytes:
    """A real file's data set without preamble or File Meta Information (as old systems write)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    whole = out.getvalue()
    (meta_length,) = struct.unpack("<I", whole[140:144])  # (0002,0000) opens the meta group
    return whole[144 + meta_length :]


def binary_stl(triangles: int) -> bytes:
    return b"MFTP test guide".ljust(80, b" ") + struct.pack("<I", triangles) + b"\0" * (50 * triangles)


def scan(paths: Path | list[Path], spill: Path) -> tuple[list[LocalFile], ImportReport]:
    report = ImportReport()
    files = list(FolderSource(paths).scan(spill, report))
    return files, report


@pytest.fixture
def case_folder(tmp_path: Path) -> Path:
    """A case as an operator might hand it over: a study, its attachments, and some junk."""
    root = tmp_path / "case"
    (root / "images" / "deep").mkdir(parents=True)
    (root / "design").mkdir()
    (root / ".hidden").mkdir()
    study = generate_uid()
    series = generate_uid()
    ct = with_uids(sample("CT_small.dcm"), StudyInstanceUID=study, SeriesInstanceUID=series)
    (root / "images" / "ct.dcm").write_bytes(ct)
    (root / "images" / "deep" / "mr_rle").write_bytes(  # no suffix: recognised by content
        with_uids(sample("MR_small_RLE.dcm"), StudyInstanceUID=study)
    )
    (root / "images" / "plan.dcm").write_bytes(with_uids(sample("rtplan.dcm"), StudyInstanceUID=study))
    (root / "images" / "odd_syntax.dcm").write_bytes(
        with_uids(
            sample("MR_small.dcm"),
            StudyInstanceUID=study,
            SOPInstanceUID=generate_uid(),  # pydicom's MR samples share one SOP Instance UID
            TransferSyntaxUID="1.2.3.4.5.6.7",
        )
    )
    (root / "images" / "bare.dcm").write_bytes(bare_data_set(sample("MR_small.dcm"), StudyInstanceUID=study))
    (root / "images" / "zz_copy_of_ct.dcm").write_bytes(ct)
    (root / "images" / "half.dcm").write_bytes(ct[: len(ct) // 2])
    (root / "images" / "same_uid_other_bytes.dcm").write_bytes(
        with_uids(ct, StudyInstanceUID=study, SeriesDescription="changed")
    )
    (root / "design" / "guide.stl").write_bytes(binary_stl(3))
    (root / "design" / "broken.stl").write_bytes(binary_stl(3)[:150])
    (root / "notes.pdf").write_bytes(b"%PDF-1.4\n% notes\n%%EOF\n")
    (root / "fake.pdf").write_bytes(b"this is not a PDF")
    (root / "report.docx").write_bytes(b"PK\x03\x04 word document")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / ".hidden" / "x.dcm").write_bytes(ct)
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    return root


def test_folder_import_keeps_going_past_bad_files(case_folder: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    files, report = scan(case_folder, spill)
    names = {f.info.name for f in files}
    assert names == {
        "design/guide.stl",
        "images/bare.dcm",
        "images/ct.dcm",
        "images/deep/mr_rle",
        "images/odd_syntax.dcm",
        "images/plan.dcm",
        "notes.pdf",
    }
    reasons = {f.name: f.reason for f in report.failures}
    assert reasons.keys() == {
        "design/broken.stl",
        "fake.pdf",
        "images/half.dcm",
        "images/same_uid_other_bytes.dcm",
        "report.docx",
    }
    assert reasons["images/half.dcm"].startswith("truncated: file ends inside element (7FE0,0010)")
    assert reasons["report.docx"].startswith("not DICOM, and not an allowed attachment type")
    assert "not a PDF" in reasons["fake.pdf"]
    assert "not a valid STL" in reasons["design/broken.stl"]
    assert "same SOP Instance UID as images/ct.dcm" in reasons["images/same_uid_other_bytes.dcm"]
    assert any("images/zz_copy_of_ct.dcm: same file as images/ct.dcm" in n for n in report.notes)
    assert any("DICOMDIR" in n for n in report.notes)
    # No patient data in what may be logged.
    assert "CompressedSamples" not in repr(report) and "CompressedSamples" not in repr(
        [f.info for f in files]
    )

    by_name = {f.info.name: f for f in files}
    plan = by_name["images/plan.dcm"].info
    assert not plan.has_pixel_data and "no pixel data" in plan.notes
    assert by_name["images/odd_syntax.dcm"].info.transfer_syntax_uid == "1.2.3.4.5.6.7"
    assert by_name["notes.pdf"].info.kind is FileKind.ATTACHMENT
    assert by_name["design/guide.stl"].info.media_type == "model/stl"
    # The bare data set was given a header in the spill folder; every other file stays in place.
    bare = by_name["images/bare.dcm"]
    assert bare.path.parent == spill and bare.path.read_bytes().endswith(
        (case_folder / "images/bare.dcm").read_bytes()
    )
    assert by_name["images/ct.dcm"].path == case_folder / "images" / "ct.dcm"
    for f in files:
        assert sha(f.path.read_bytes()) == f.info.sha256 and f.path.stat().st_size == f.info.size_bytes
    studies, loose = group_studies(f.info for f in files)
    assert len(studies) == 1 and loose == [] and len(studies[0].attachments) == 2


def test_single_files_and_missing_paths(tmp_path: Path) -> None:
    one = tmp_path / "one.dcm"
    one.write_bytes(sample("CT_small.dcm"))
    files, report = scan([one, tmp_path / "missing"], tmp_path)
    assert [f.info.name for f in files] == ["one.dcm"]
    assert [(f.name, f.reason) for f in report.failures] == [("missing", "no such file or folder")]


def test_folder_delivery_is_byte_identical_and_laid_out_by_uid(case_folder: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    files, _ = scan(case_folder, spill)
    out = tmp_path / "out"
    report = FolderSink(out).deliver_sync(files)
    assert report.all_ok and len(report.ok) == len(files)
    for f in files:
        if f.info.kind is FileKind.DICOM:
            target = (
                out
                / f.info.study_instance_uid
                / f.info.series_instance_uid
                / f"{f.info.sop_instance_uid}.dcm"
            )
        else:
            target = out / f.info.study_instance_uid / "attachments"
            target = next(out.glob(f"*/attachments/{f.info.name}"))
        assert target.read_bytes() == f.path.read_bytes()
    assert not list(out.rglob(".mftp-partial-*"))
    # Delivering again replaces the files: harmless.
    assert FolderSink(out).deliver_sync(files).all_ok


async def test_failed_writes_leave_nothing_half_written(
    case_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    files, _ = scan(case_folder, spill)
    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src: str | Path, dst: str | Path, **dir_fds: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst, **dir_fds)

    monkeypatch.setattr(folder.os, "replace", flaky_replace)
    out = tmp_path / "out"
    report = await FolderSink(out, fsync=False).deliver(files)
    assert len(report.ok) == len(files) - 1
    (failure,) = report.failures
    assert failure.reason == "cannot write: No space left on device"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) == len(files) - 1
    assert not any(p.name.startswith(".") for p in written)


def test_changed_or_unsafe_files_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "ct.dcm"
    src.write_bytes(sample("CT_small.dcm"))
    info, _ = describe_path(src, "ct.dcm")
    src.write_bytes(sample("CT_small.dcm")[:-2] + b"\1\1")  # changed after import
    hostile = LocalFile(src, info.__class__(**{**vars(info), "sop_instance_uid": "../../etc/passwd"}))
    report = FolderSink(tmp_path / "out").deliver_sync([LocalFile(src, info), hostile])
    reasons = [f.reason for f in report.failures]
    assert reasons[0] == "content changed since it was imported (SHA-256 differs)"
    assert reasons[1].startswith("UID '../../etc/passwd' is not valid")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def _tiny_image_template() -> tuple[bytes, bytes]:
    """A small valid CT image (32x64, 16-bit) whose SOP Instance UID is a fixed-width placeholder."""
    placeholder = "1.2.826.0.1.3680043.10.1234." + "9" * 30
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = placeholder
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = placeholder
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1234.2"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 32, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * 16
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), placeholder.encode()


def test_ten_thousand_instances_in_bounded_memory(tmp_path: Path) -> None:
    template, placeholder = _tiny_image_template()
    assert template.count(placeholder) == 2
    folder = tmp_path / "big"
    folder.mkdir()
    started = time.monotonic()
    for i in range(10_000):
        uid = placeholder[:-10] + b"%010d" % i
        (folder / f"{i:05d}.dcm").write_bytes(template.replace(placeholder, uid))
    study_bytes = 10_000 * len(template)

    spill = tmp_path / "spill"
    spill.mkdir()
    report = ImportReport()
    tracemalloc.start()
    try:
        count = 0
        for item in FolderSource(folder).scan(spill, report):
            count += 1
            assert item.info.kind is FileKind.DICOM
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 10_000 and report.all_ok and len(report.ok) == 10_000
    assert report.ok_bytes == study_bytes
    # The descriptions kept (names, UIDs seen) cost a few hundred bytes per file; the files'
    # bytes (~43 MB here) are never held.
    assert peak < study_bytes / 4, f"peak {peak} bytes for a {study_bytes}-byte study"
    assert time.monotonic() - started < 60


class _DyingPool(Executor):
    """A process pool whose worker died: the first task fails, then it refuses new ones."""

    def __init__(self) -> None:
        self.tasks = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.tasks += 1
        if self.tasks > 1:
            raise BrokenProcessPool("a worker died")
        future: Future[Any] = Future()
        future.set_exception(BrokenProcessPool("a worker died"))
        return future


def _outcome(files: list[LocalFile], report: ImportReport, spill: Path) -> tuple[Any, ...]:
    described = sorted((f.info.name, f.info.sha256, f.path.parent == spill) for f in files)
    return described, sorted((f.name, f.reason) for f in report.failures), sorted(report.notes)


def test_worker_processes_read_a_folder_as_threads_do(case_folder: Path, tmp_path: Path) -> None:
    # The node hands its preparing workers to a scan (the walk over elements holds the GIL);
    # the result is the threads' own, also when a worker dies on the way.
    outcomes = []
    pool = PreparePool(2)
    try:
        for processes in (None, pool.executor(), _DyingPool()):
            spill = tmp_path / f"spill-{len(outcomes)}"
            spill.mkdir()
            report = ImportReport()
            files = list(FolderSource(case_folder, processes=processes).scan(spill, report))
            outcomes.append(_outcome(files, report, spill))
    finally:
        pool.shutdown()
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert len(outcomes[0][0]) == 7 and len(outcomes[0][1]) == 5
