"""Round trips of mftp.transfer.codec on real and synthetic DICOM files.

Real files: every file of pydicom's own test data and of pydicom-data, listed from the installed
packages (pydicom's get_testdata_files would try to download missing ones; we never do).
Synthetic files are written with pydicom to hit one edge of the layout each.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import warnings

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from mftp.transfer.codec import compress, decompress, describe
from mftp.transfer.errors import TransferInputError


def _pydicom_test_paths() -> list[str]:
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources

    paths = glob.glob(os.path.join(DATA_ROOT, "test_files", "**", "*"), recursive=True)
    store = external_data_sources().get("pydicom-data")
    if store is not None:
        paths += store.get_paths("**/*", 0)
    return sorted({path for path in paths if os.path.isfile(path) and not path.endswith(".py")})


_REAL_FILES = _pydicom_test_paths()


def _kind(blob: bytes) -> str:
    info = describe(blob)
    return f"{info.method}-{info.pixel_codec}" if info.pixel_codec else info.method


def _round_trip(data: bytes) -> str:
    blob = compress(data, name="test.dcm")
    restored = decompress(blob)
    assert hashlib.sha256(restored).digest() == hashlib.sha256(data).digest()
    assert restored == data
    return _kind(blob)


# --- real files ----------------------------------------------------------------------------------


def test_real_file_set_is_there() -> None:
    names = {os.path.basename(path) for path in _REAL_FILES}
    # pydicom-data is a test dependency: without it most real images would silently be missing.
    assert {"RG1_UNCR.dcm", "693_UNCR.dcm", "US1_UNCR.dcm", "CT_small.dcm"} <= names


@pytest.mark.parametrize("path", _REAL_FILES, ids=os.path.basename)
def test_real_file_round_trip(path: str) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    _round_trip(data)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("693_UNCR.dcm", "split-jpegls"),  # CT, signed 16-bit, BitsStored 14
        ("MR2_UNCR.dcm", "split-jpegls"),  # MR 12-bit
        ("OBXXXX1A.dcm", "split-jpegls"),  # 8-bit palette, JPEG-LS still wins
        ("RG1_UNCR.dcm", "split-jpegxl"),  # noisy 15-bit CR: JPEG-XL effort 1, ~3x faster
        ("US1_UNCR.dcm", "split-jpegxl"),  # RGB ultrasound: JPEG-XL's colour transform wins
        ("vlut_04.dcm", "split-zstd"),  # synthetic ramps: LZ wins by far
        ("emri_small_big_endian.dcm", "zstd"),  # big endian
        ("RG1_J2KR.dcm", "zstd|stored"),  # encapsulated JPEG 2000: zstd barely shrinks it
        ("rtplan.dcm", "zstd"),  # no pixel data
    ],
)
def test_real_file_method(name: str, expected: str) -> None:
    path = next(path for path in _REAL_FILES if os.path.basename(path) == name)
    with open(path, "rb") as handle:
        blob = compress(handle.read())
    assert _kind(blob) in expected.split("|")


def test_ct_beats_zstd_clearly() -> None:
    path = next(path for path in _REAL_FILES if os.path.basename(path) == "693_UNCR.dcm")
    with open(path, "rb") as handle:
        data = handle.read()
    assert len(data) / len(compress(data)) > 5.0


# --- synthetic files -------------------------------------------------------------------------------


def _make_dicom(
    frames: np.ndarray | None,
    *,
    syntax: UID = ExplicitVRLittleEndian,
    bits_stored: int | None = None,
    signed: bool = False,
    planar: int = 0,
    trailer: bytes = b"",
    pixel_bytes: bytes | None = None,
) -> bytes:
    """A Part 10 file; ``frames`` is (frames, rows, columns[, 3]) of uint8/uint16/int16."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.PatientName = "Codec^Test"
    if frames is not None:
        count, rows, columns = frames.shape[:3]
        samples = frames.shape[3] if frames.ndim == 4 else 1
        bits = frames.dtype.itemsize * 8
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
        ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(signed)
        ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
        if samples == 3:
            ds.PlanarConfiguration = planar
        if count > 1:
            ds.NumberOfFrames = count
        ordered = frames.transpose(0, 3, 1, 2) if samples == 3 and planar else frames
        big = syntax == ExplicitVRBigEndian
        values = ordered.astype(ordered.dtype.newbyteorder(">" if big else "<"))
        ds.PixelData = pixel_bytes if pixel_bytes is not None else values.tobytes()
        ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    if trailer:
        ds.add_new(0xFFFCFFFC, "OB", trailer)  # Data Set Trailing Padding, after Pixel Data
    buffer = io.BytesIO()
    # A private (unknown) syntax needs the encoding spelled out; explicit VR LE as the standard says.
    encoding = {} if syntax.is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True, **encoding)
    return buffer.getvalue()


_RNG = np.random.default_rng(20240601)


def _smooth(shape: tuple[int, ...], high: int, dtype: type) -> np.ndarray:
    """A noisy gradient, like a real image: JPEG-LS territory."""
    ramp = np.add.outer(np.arange(shape[1]), np.arange(shape[2])) * (high // (shape[1] + shape[2]))
    noise = _RNG.integers(0, max(2, high // 64), size=shape)
    ramp = ramp.reshape((1, *ramp.shape) + (1,) * (len(shape) - 3))
    return np.clip(ramp + noise, 0, high).astype(dtype)


def test_signed_16_bit_with_negative_values() -> None:
    frames = (_smooth((1, 64, 64), 4000, np.int32) - 2000).astype(np.int16)
    assert frames.min() < 0
    data = _make_dicom(frames.view(np.uint16), signed=True)
    assert _round_trip(data) == "split-jpegls"


def test_bits_stored_12_with_garbage_high_bits() -> None:
    frames = _smooth((1, 64, 64), 4095, np.uint16)
    frames |= (_RNG.integers(0, 16, size=frames.shape).astype(np.uint16) << 12).astype(np.uint16)
    data = _make_dicom(frames, bits_stored=12)
    assert _round_trip(data).startswith("split-")


def test_signed_12_bit_not_sign_extended() -> None:
    # Two's complement in the low 12 bits only: the mapping must not assume sign extension.
    values = (_smooth((1, 32, 48), 4000, np.int32) - 2000) & 0x0FFF
    data = _make_dicom(values.astype(np.uint16), bits_stored=12, signed=True)
    assert _round_trip(data).startswith("split-")


def _noisy(frames: int) -> np.ndarray:
    """A large, noise-dominated 14-bit image like a raw CR plate: JPEG-XL effort 1 territory."""
    ramp = np.add.outer(np.arange(512), np.arange(512)) * 8
    noise = _RNG.normal(0, 400, size=(frames, 512, 512))
    return np.clip(ramp + noise + 4000, 0, (1 << 14) - 1).astype(np.uint16)


def test_large_noisy_grey_goes_to_jpegxl() -> None:
    data = _make_dicom(_noisy(2), bits_stored=14)
    assert _round_trip(data) == "split-jpegxl"


def test_jpegxl_tampered_stream_is_refused() -> None:
    blob = bytearray(compress(_make_dicom(_noisy(2), bits_stored=14)))
    assert describe(bytes(blob)).pixel_codec == "jpegxl"
    for position in range(len(blob) - 2000, len(blob), 97):
        tampered = bytearray(blob)
        tampered[position] ^= 0x10
        with pytest.raises(TransferInputError):
            decompress(bytes(tampered))


def test_8_bit_grey() -> None:
    assert _round_trip(_make_dicom(_smooth((1, 80, 60), 255, np.uint8))) == "split-jpegls"


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb(planar: int) -> None:
    frames = _smooth((2, 40, 50, 3), 255, np.uint8)
    assert _round_trip(_make_dicom(frames, planar=planar)).startswith("split-")


def test_rgb_16_bit() -> None:
    assert _round_trip(_make_dicom(_smooth((1, 20, 30, 3), 60000, np.uint16))).startswith("split-")


def test_multi_frame_smooth() -> None:
    assert _round_trip(_make_dicom(_smooth((6, 48, 40), 4095, np.uint16))) == "split-jpegls"


def test_multi_frame_cine_uses_frame_deltas() -> None:
    # Noise that only shifts from frame to frame: neither JPEG-LS nor plain LZ sees it, deltas do.
    base = _RNG.integers(0, 200, size=(1, 64, 64)).astype(np.uint8)
    frames = (base + np.arange(8, dtype=np.uint8).reshape(8, 1, 1)).astype(np.uint8)
    assert _round_trip(_make_dicom(frames)) == "split-frame-delta-zstd"


def test_odd_length_pixel_data_is_padded() -> None:
    data = _make_dicom(_smooth((1, 3, 5), 255, np.uint8))  # 15 bytes, written with a pad byte
    assert _round_trip(data).startswith("split-")


def test_trailing_elements_after_pixel_data() -> None:
    trailer = bytes(range(40))
    data = _make_dicom(_smooth((1, 32, 32), 4095, np.uint16), trailer=trailer)
    assert data.endswith(trailer)
    assert _round_trip(data) == "split-jpegls"


def test_implicit_vr() -> None:
    assert _round_trip(_make_dicom(_smooth((1, 32, 32), 4095, np.uint16), syntax=ImplicitVRLittleEndian)) == (
        "split-jpegls"
    )


def test_big_endian_falls_back_to_zstd() -> None:
    assert (
        _round_trip(_make_dicom(_smooth((1, 32, 32), 4095, np.uint16), syntax=ExplicitVRBigEndian)) == "zstd"
    )


def test_encapsulated_falls_back_to_zstd() -> None:
    frame = _smooth((1, 32, 32), 4095, np.uint16)
    stream = bytes(imagecodecs.jpegls_encode(frame[0]))
    data = _make_dicom(frame, syntax=JPEGLSLossless, pixel_bytes=encapsulate([stream]))
    assert _round_trip(data) == "zstd"


def test_unknown_transfer_syntax_falls_back() -> None:
    data = _make_dicom(_smooth((1, 32, 32), 4095, np.uint16), syntax=UID("1.2.3.4.5.6"))
    assert _round_trip(data) == "zstd"


def test_length_disagreeing_with_geometry_falls_back() -> None:
    frames = _smooth((1, 32, 32), 4095, np.uint16)
    data = _make_dicom(frames, pixel_bytes=frames.tobytes()[:-64])
    assert _round_trip(data) == "zstd"


def test_no_pixel_data() -> None:
    assert _round_trip(_make_dicom(None)) == "zstd"


def test_32_bit_pixels_fall_back() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _make_dicom(_smooth((1, 16, 16), 100000, np.uint32))
    assert _round_trip(data) == "zstd"


def test_noise_rgb_where_jpegls_refuses() -> None:
    # CharLS refuses to code pure noise in RGB (its output estimate is too small); must not crash.
    frames = _RNG.integers(0, 256, size=(1, 64, 64, 3)).astype(np.uint8)
    assert _round_trip(_make_dicom(frames)).startswith(("split-", "zstd", "stored"))


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\0", b"not a DICOM file at all\n" * 40, bytes(_RNG.integers(0, 256, 5000, dtype=np.uint8))],
    ids=["empty", "one-byte", "text", "random"],
)
def test_non_dicom_bytes_round_trip(data: bytes) -> None:
    assert _round_trip(data) in ("zstd", "stored")


def test_non_dicom_refused_when_dicom_required() -> None:
    with pytest.raises(TransferInputError, match=r"report\.pdf: .*DICM"):
        compress(b"%PDF-1.7 not dicom" * 20, name="report.pdf", require_dicom=True)


def test_truncated_file() -> None:
    data = _make_dicom(_smooth((1, 64, 64), 4095, np.uint16))
    truncated = data[: len(data) - 1000]
    assert _round_trip(truncated) == "zstd"
    with pytest.raises(TransferInputError, match=r"cut\.dcm: .*past the end"):
        compress(truncated, name="cut.dcm", require_dicom=True)


def test_every_truncation_of_a_small_file_round_trips() -> None:
    data = _make_dicom(_smooth((1, 8, 8), 4095, np.uint16), trailer=b"12")
    for end in range(0, len(data), 7):
        _round_trip(data[:end])


def test_a_broken_image_codec_never_ships_a_bad_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a JPEG-LS encoder bug: its output decodes, to the wrong pixels.
    from mftp.transfer import codec_pixels

    real_encode = codec_pixels.imagecodecs.jpegls_encode

    def broken_encode(image: np.ndarray) -> bytes:
        wrong = image.copy()
        wrong.flat[len(wrong.flat) // 2] ^= 1
        return bytes(real_encode(wrong))

    monkeypatch.setattr(codec_pixels.imagecodecs, "jpegls_encode", broken_encode)
    data = _make_dicom(_smooth((1, 64, 64), 4095, np.uint16))
    assert _round_trip(data) == "zstd"  # the self-check caught it and fell back
    unchecked = compress(data, verify=False)
    assert _kind(unchecked) == "split-jpegls"
    with pytest.raises(TransferInputError, match="SHA-256"):
        decompress(unchecked)  # and without the self-check, the receiver refuses it


def test_compress_without_verify_is_identical() -> None:
    data = _make_dicom(_smooth((2, 64, 64), 4095, np.uint16))
    assert compress(data, verify=False) == compress(data)


def test_decompress_names_the_file() -> None:
    with pytest.raises(TransferInputError, match=r"^scan\.dcm: "):
        decompress(b"garbage", name="scan.dcm")


# --- preferring speed: HTJ2K ------------------------------------------------------------------------


def _speed_round_trip(data: bytes) -> str:
    # Without the self-check, so a stream that did not restore could not hide behind a fallback.
    blob = compress(data, name="test.dcm", prefer_speed=True, verify=False)
    assert decompress(blob) == data
    return _kind(blob)


@pytest.mark.parametrize("path", _REAL_FILES, ids=os.path.basename)
def test_real_file_round_trip_preferring_speed(path: str) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    kind = _speed_round_trip(data)
    assert kind != "split-jpegls" or os.path.basename(path) not in {"CT_small.dcm", "MR_small.dcm"}


def test_speed_costs_little_ratio_on_ct() -> None:
    path = next(path for path in _REAL_FILES if os.path.basename(path) == "CT_small.dcm")
    with open(path, "rb") as handle:
        data = handle.read()
    fast, small = compress(data, prefer_speed=True), compress(data)
    assert describe(fast).pixel_codec == "htj2k" and describe(small).pixel_codec == "jpegls"
    assert len(small) < len(fast) < 1.3 * len(small)


@pytest.mark.parametrize(
    "frames",
    [
        (_smooth((1, 64, 64), 4000, np.int32) - 2000).astype(np.int16).view(np.uint16),
        _smooth((1, 80, 60), 255, np.uint8),
        _smooth((6, 48, 40), 4095, np.uint16),
        _RNG.integers(0, 1 << 16, size=(2, 33, 17)).astype(np.uint16),  # full-range noise, odd sizes
    ],
    ids=["signed-16", "8-bit", "multi-frame", "noise-16"],
)
def test_htj2k_is_exact(frames: np.ndarray) -> None:
    signed = frames.dtype == np.uint16 and frames.shape == (1, 64, 64)
    assert _speed_round_trip(_make_dicom(frames, signed=signed)).startswith("split-")


def test_htj2k_tampered_stream_is_refused() -> None:
    blob = compress(_make_dicom(_smooth((1, 64, 64), 4095, np.uint16)), prefer_speed=True)
    assert describe(blob).pixel_codec == "htj2k"
    for position in range(len(blob) - 300, len(blob), 29):
        tampered = bytearray(blob)
        tampered[position] ^= 0x10
        with pytest.raises(TransferInputError):
            decompress(bytes(tampered))
