"""mftp.transfer.codec_layout: the pixel offsets it finds agree with pydicom's reading."""

from __future__ import annotations

import glob
import io
import os
import struct
import warnings

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage

from mftp.transfer.codec_layout import DEFLATED, ENCAPSULATED, NOT_PART10, parse_layout


def _paths() -> list[str]:
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources

    paths = glob.glob(os.path.join(DATA_ROOT, "test_files", "**", "*.dcm"), recursive=True)
    store = external_data_sources().get("pydicom-data")
    if store is not None:
        paths += store.get_paths("**/*.dcm", 0)
    return sorted(set(paths))


def _pydicom_pixels(data: bytes) -> bytes | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
        except Exception:
            return None
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if "PixelData" not in dataset or syntax is None or syntax.is_compressed:
        return None
    return dataset["PixelData"].value


@pytest.mark.parametrize("path", _paths(), ids=os.path.basename)
def test_offsets_agree_with_pydicom(path: str) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    layout = parse_layout(data)
    pixels = _pydicom_pixels(data)
    little = layout.transfer_syntax != "1.2.840.10008.1.2.2"
    if layout.pixel_offset >= 0 and little:
        assert data[layout.pixel_offset : layout.pixel_offset + layout.pixel_length] == pixels
    elif pixels is not None and layout.problem:
        # pydicom repairs what we refuse (a truncated value, a missing syntax): fine, we fall back.
        assert layout.damaged or layout.problem in (ENCAPSULATED, DEFLATED)


def _write(dataset: Dataset, syntax: UID = ExplicitVRLittleEndian) -> bytes:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _image(rows: int = 4, columns: int = 6) -> Dataset:
    dataset = Dataset()
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = rows, columns, 1
    dataset.BitsAllocated, dataset.BitsStored, dataset.PixelRepresentation = 16, 12, 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = bytes(range(rows * columns * 2))
    dataset["PixelData"].VR = "OW"
    return dataset


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_nested_undefined_length_sequences_are_skipped(syntax: UID) -> None:
    dataset = _image()
    inner = Dataset()
    inner.CodeValue = "X"
    # An icon image inside a sequence has its own Pixel Data: only the top-level one counts.
    icon = _image(2, 2)
    icon.PixelData = b"\xee" * 8
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    middle.IconImageSequence = Sequence([icon])
    dataset.ContentSequence = Sequence([middle, Dataset()])
    for element in (dataset["ContentSequence"], middle["ConceptNameCodeSequence"]):
        element.is_undefined_length = True
    data = _write(dataset, syntax)
    layout = parse_layout(data)
    assert layout.problem == ""
    assert data[layout.pixel_offset : layout.pixel_offset + layout.pixel_length] == bytes(range(48))
    assert (layout.rows, layout.columns, layout.bits_allocated, layout.bits_stored) == (4, 6, 16, 12)
    assert (layout.pixel_representation, layout.modality, layout.frames) == (1, "CT", 1)


def test_explicit_file_written_as_implicit_is_sniffed() -> None:
    data = _write(_image(), ImplicitVRLittleEndian)
    # Claim explicit VR little endian in the meta group while the data set stays implicit.
    implicit = b"\x02\x00\x10\x00UI\x12\x001.2.840.10008.1.2\x00"
    explicit = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    assert implicit in data
    lying = data.replace(implicit, explicit)
    layout = parse_layout(lying)
    assert layout.transfer_syntax == ExplicitVRLittleEndian
    assert lying[layout.pixel_offset : layout.pixel_offset + layout.pixel_length] == bytes(range(48))


def test_not_dicom() -> None:
    layout = parse_layout(b"hello" * 100)
    assert (layout.problem, layout.damaged, layout.is_dicom) == (NOT_PART10, True, False)


def test_truncated_is_damaged() -> None:
    data = _write(_image())
    layout = parse_layout(data[:-5])
    assert layout.damaged and layout.pixel_offset == -1


def test_number_of_frames() -> None:
    dataset = _image()
    dataset.NumberOfFrames = 3
    data = _write(dataset)
    assert parse_layout(data).frames == 3
    garbage = data.replace(b"\x28\x00\x08\x00IS\x02\x003 ", b"\x28\x00\x08\x00IS\x02\x00x ")
    assert garbage != data
    assert parse_layout(garbage).frames == 0  # unknown: the codec will not trust the geometry


def test_deeply_nested_sequences_stop_cleanly() -> None:
    # 40 levels of undefined-length sequence items, by hand: over the depth limit.
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    seq_start = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    body = (seq_start + item_start) * 40
    prefix = _write(Dataset())
    layout = parse_layout(prefix + body)
    assert layout.damaged and "deeply" in layout.problem


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=1000))
def test_never_raises_on_garbage(noise: bytes, cut: int) -> None:
    base = _write(_image())
    parse_layout(noise)
    parse_layout(base[:cut] + noise)
    parse_layout(b"\0" * 128 + b"DICM" + noise)
