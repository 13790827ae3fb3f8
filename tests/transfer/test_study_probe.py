"""Recognising DICOM files, telling whole ones from damaged ones, and describing a study."""

from __future__ import annotations

import io
import struct
import warnings

import pydicom
import pytest

from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.study import (
    FileKind,
    ImportReport,
    attachment_file,
    attachment_media_type,
    check_attachment,
    dicom_file,
    group_studies,
    parse_qido_studies,
    parse_stow_response,
    qido_study_query,
    status_text,
)
from mftp.transfer.study_encapsulate import ENCAPSULATED_TYPES, encapsulate_attachment
from mftp.transfer.study_probe import DicomProbe, NotDicomError, ProbeLimits, part10_prefix, probe_dicom
from tests.samples import sample

# Real files from pydicom and pydicom-data, one per encoding the probe must walk.
WHOLE_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_RLE.dcm",  # encapsulated RLE
    "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS (pydicom-data)
    "JPEG2000.dcm",  # JPEG 2000, sequences
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_implicit.dcm",  # implicit VR
    "rtplan.dcm",  # no pixel data, nested sequences
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg.dcm",  # says explicit VR, is implicit
    "waveform_ecg.dcm",  # no pixel data (waveform)
]


def probe(data: bytes, name: str = "f", limits: ProbeLimits | None = None) -> DicomProbe:
    return probe_dicom(io.BytesIO(data), len(data), name=name, limits=limits)


def pydicom_read(data: bytes, force: bool = False) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=force)


@pytest.mark.parametrize("name", WHOLE_FILES)
def test_whole_real_files_are_recognised_with_their_uids(name: str) -> None:
    data = sample(name)
    found = probe(data)
    ds = pydicom_read(data)
    assert found.has_part10_header
    assert found.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert found.sop_instance_uid == ds.SOPInstanceUID
    assert found.study_instance_uid == ds.StudyInstanceUID
    assert found.series_instance_uid == ds.SeriesInstanceUID
    assert found.has_pixel_data == ("PixelData" in ds)
    assert ("no pixel data" in found.notes) == ("PixelData" not in ds)
    assert found.burned_in_annotation == str(ds.get("BurnedInAnnotation", ""))


def test_burned_in_annotation_is_read() -> None:
    ds = pydicom_read(sample("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    out = io.BytesIO()
    ds.save_as(out)
    assert probe(out.getvalue()).burned_in_annotation == "YES"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("CT_small.dcm", "truncated"),
        ("MR_small_RLE.dcm", "truncated"),
        ("MR_small_bigendian.dcm", "truncated"),
        # Half of this file ends exactly between two elements: structurally whole, so what
        # catches it is the missing Study Instance UID (a cut between elements after every UID
        # would pass as a file without pixel data: no format check can see that).
        ("JPEG2000.dcm", "without Study Instance UID"),
    ],
)
def test_a_file_cut_in_half_is_refused(name: str, message: str) -> None:
    data = sample(name)
    half = data[: len(data) // 2]
    with pytest.raises(TransferInputError, match=message) as info:
        dicom_file("cut.dcm", len(half), "", probe(half, name="cut.dcm"))
    assert info.value.name == "cut.dcm"
    assert str(info.value).startswith("cut.dcm: ")


def test_every_cut_inside_pixel_data_is_caught() -> None:
    """pydicom reads these without complaint; the walk must end exactly at the end of the file."""
    data = sample("CT_small.dcm")
    pixel_start = data.rfind(b"\xe0\x7f\x10\x00")
    assert pixel_start > 0
    for cut in range(pixel_start + 1, len(data), 997):
        with pytest.raises(TransferInputError, match="truncated"):
            probe(data[:cut])


def test_deflated_file_cut_short_is_caught() -> None:
    data = sample("image_dfl.dcm")
    with pytest.raises(TransferInputError, match=r"truncated|corrupt"):
        probe(data[:-200])


def test_shipped_truncated_samples_are_caught() -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"):
        with pytest.raises(TransferInputError, match="truncated"):
            probe(sample(name), name=name)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world\n" * 50, bytes(range(256)) * 20, b"%PDF-1.7\n" + b"x" * 300, b"\0" * 132],
)
def test_non_dicom_bytes_are_not_dicom(data: bytes) -> None:
    with pytest.raises(NotDicomError, match="not DICOM"):
        probe(data)


def test_unknown_transfer_syntax_is_accepted_with_a_note() -> None:
    ds = pydicom_read(sample("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    found = probe(out.getvalue())
    assert found.transfer_syntax_uid == "1.2.3.4.5.6.7"
    assert "unknown transfer syntax 1.2.3.4.5.6.7" in found.notes
    assert found.sop_instance_uid == ds.SOPInstanceUID


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "OT-PAL-8-face.dcm"])
def test_bare_data_sets_get_a_part10_header_and_keep_their_bytes(name: str) -> None:
    data = sample(name)
    found = probe(data)
    assert not found.has_part10_header
    wrapped = part10_prefix(found) + data
    again = probe(wrapped)
    assert again.has_part10_header
    assert again.sop_instance_uid == found.sop_instance_uid
    assert again.transfer_syntax_uid == found.transfer_syntax_uid
    assert wrapped.endswith(data)
    original = pydicom_read(data, force=True)
    assert pydicom_read(wrapped).SOPInstanceUID == original.SOPInstanceUID


def test_element_and_depth_limits() -> None:
    with pytest.raises(TransferInputError, match="more than 20 data elements"):
        probe(sample("CT_small.dcm"), limits=ProbeLimits(max_elements=20))
    # 40 nested sequences of undefined length, each holding one item of undefined length.
    meta = pydicom_read(sample("CT_small.dcm")).file_meta
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(out, meta)
    nested = b""
    for _ in range(40):
        nested += struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
        nested += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    with pytest.raises(TransferInputError, match="nested deeper"):
        probe(out.getvalue() + nested)


def test_source_file_needs_the_uids_a_pacs_files_it_by() -> None:
    found = probe(sample("CT_small.dcm"))
    info = dicom_file("ct.dcm", 10, "ab", found)
    assert info.kind is FileKind.DICOM and info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    bare = pydicom_read(sample("CT_small.dcm"))
    del bare.StudyInstanceUID
    out = io.BytesIO()
    bare.save_as(out)
    with pytest.raises(TransferInputError, match="without Study Instance UID"):
        dicom_file("x.dcm", 1, "ab", probe(out.getvalue()))


def test_attachments_are_checked_by_type() -> None:
    assert attachment_media_type("plan/Guide.STL") == "model/stl"
    assert attachment_media_type("notes.pdf") == "application/pdf"
    assert attachment_media_type("run.exe") is None
    assert attachment_media_type("noext") is None
    stl = b"solid-looking binary header".ljust(80, b" ") + struct.pack("<I", 2) + b"\1" * 100
    check_attachment("g.stl", "model/stl", stl[:1024], len(stl))
    check_attachment("a.stl", "model/stl", b"solid part\n facet normal 0 0 1\n", 40)
    with pytest.raises(TransferInputError, match="not a valid STL"):
        check_attachment("g.stl", "model/stl", b"\7" * 80 + struct.pack("<I", 2), len(stl) // 2)
    with pytest.raises(TransferInputError, match="not a PDF"):
        check_attachment("n.pdf", "application/pdf", b"hello", 5)
    with pytest.raises(TransferInputError, match="empty"):
        check_attachment("n.txt", "text/plain", b"", 0)
    check_attachment("n.pdf", "application/pdf", b"%PDF-1.4\n", 9)


def test_grouping_attaches_files_to_the_only_study() -> None:
    a = dicom_file("a", 1, "x", probe(sample("CT_small.dcm")))
    b = dicom_file("b", 1, "x", probe(sample("MR_small.dcm")))
    stl = attachment_file("guide.stl", 3, "y", "model/stl")
    studies, loose = group_studies([a, stl])
    assert loose == [] and studies[0].attachments == [stl] and studies[0].instances == [a]
    studies, loose = group_studies([a, b, stl])
    assert len(studies) == 2 and loose == [stl]
    studies, loose = group_studies([a, b, stl], attach_to=b.study_instance_uid)
    assert loose == [] and [
        s.attachments for s in studies if s.study_instance_uid == b.study_instance_uid
    ] == [[stl]]


def test_report_names_files_once_and_caps_failures() -> None:
    report = ImportReport(max_failures=2)
    report.add_ok("a.dcm", 10)
    report.add_failure("b.dcm", TransferInputError("truncated", name="b.dcm"))
    report.add_failure("c.dcm", "not DICOM")
    report.add_failure("d.dcm", "not DICOM")
    assert report.failures[0].reason == "truncated"
    assert report.failed_count == 3 and report.failures_dropped == 1
    assert report.summary() == {"ok": 1, "failed": 3, "ok_bytes": 10}
    assert not report.all_ok


def test_qido_query_and_answer() -> None:
    params = qido_study_query(patient_id="P1", limit=11)
    assert params["PatientID"] == "P1" and params["limit"] == "11"
    with pytest.raises(TransferInputError):
        qido_study_query(limit=1)
    with pytest.raises(TransferInputError):
        qido_study_query(patient_id="P*", limit=1)
    doc = [
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00201208": {"vr": "IS", "Value": [7]},
            "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        }
    ]
    (match,) = parse_qido_studies(doc, max_results=5)
    assert (
        match.study_instance_uid == "1.2.3" and match.instance_count == 7 and match.modalities == ("CT", "SR")
    )
    assert "Doe" not in repr(match)
    for bad in ({}, [1], [{"00201208": {"Value": [1]}}]):
        with pytest.raises(TransferInputError):
            parse_qido_studies(bad, max_results=5)
    with pytest.raises(TransferInputError, match="more than 0"):
        parse_qido_studies(doc, max_results=0)


def test_stow_response_and_status_words() -> None:
    doc = {
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.1"]}}]},
        "00081198": {
            "vr": "SQ",
            "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2"]}, "00081197": {"vr": "US", "Value": [0xA700]}}
            ],
        },
    }
    result = parse_stow_response(doc)
    assert result.stored == {"1.1"}
    assert result.failed == {"1.2": "out of resources (0xA700)"}
    assert status_text(0xC123) == "cannot understand (0xC123)"
    assert status_text(0x0122) == "SOP class not supported (0x0122)"
    with pytest.raises(TransferInputError):
        parse_stow_response([])


def test_attachments_wrap_as_encapsulated_documents_of_their_study() -> None:
    study = pydicom_read(sample("CT_small.dcm"))
    stl = b"solid x\nendsolid x\n!"  # odd length: DICOM pads, the length element says the truth
    wrapped = encapsulate_attachment(
        stl, media_type="model/stl", study=study, content_date="20250102", content_time="030405"
    )
    found = probe(wrapped)
    assert found.sop_class_uid == ENCAPSULATED_TYPES["model/stl"][0]
    assert found.study_instance_uid == study.StudyInstanceUID
    ds = pydicom_read(wrapped)
    assert ds.PatientID == study.PatientID and ds.Modality == "M3D"
    assert (
        ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == stl
        and len(ds.EncapsulatedDocument) % 2 == 0
    )
    assert ds.DocumentTitle == "MFTP attachment"
    # The same document in the same study is the same instance: delivering twice replaces it.
    again = encapsulate_attachment(
        stl, media_type="model/stl", study=study, content_date="20250103", content_time="000000"
    )
    assert probe(again).sop_instance_uid == found.sop_instance_uid
    pdf = encapsulate_attachment(
        b"%PDF-1.4\n", media_type="application/pdf", study=study, content_date="20250102", content_time="0304"
    )
    assert pydicom_read(pdf).MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert probe(pdf).series_instance_uid != found.series_instance_uid
    with pytest.raises(TransferUsageError):
        encapsulate_attachment(b"x", media_type="text/plain", study=study, content_date="", content_time="")
