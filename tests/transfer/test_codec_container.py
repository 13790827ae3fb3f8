"""The container of mftp.transfer.codec: fixed test vectors, tampering, fuzzing.

Every malformed blob must raise TransferInputError and nothing else; a blob either restores
the exact original or is refused.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mftp.transfer import codec_container as container
from mftp.transfer.codec import DEFAULT_MAX_OUTPUT_BYTES, compress, decompress, describe
from mftp.transfer.errors import TransferInputError


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" " if vr == b"CS" else b"\0"
    if vr in (b"OB", b"OW"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _us(group: int, elem: int, value: int) -> bytes:
    return _element(group, elem, b"US", struct.pack("<H", value))


def tiny_dicom() -> bytes:
    """A 32x32 12-bit MONOCHROME2 image in explicit VR little endian, written by hand so that
    no library version can change its bytes."""
    meta_body = (
        _element(2, 1, b"OB", b"\0\1")
        + _element(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.7")
        + _element(2, 3, b"UI", b"1.2.3.4")
        + _element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1")
    )
    meta = _element(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    pixels = b"".join(
        struct.pack("<H", (x * 37 + y * 101 + (x * y % 7) * 3) & 0xFFF) for y in range(32) for x in range(32)
    )
    dataset = (
        _element(8, 0x60, b"CS", b"OT")
        + _us(0x28, 2, 1)
        + _element(0x28, 4, b"CS", b"MONOCHROME2")
        + _us(0x28, 0x10, 32)
        + _us(0x28, 0x11, 32)
        + _us(0x28, 0x100, 16)
        + _us(0x28, 0x101, 12)
        + _us(0x28, 0x102, 11)
        + _us(0x28, 0x103, 0)
        + _element(0x7FE0, 0x10, b"OW", pixels)
    )
    return bytes(128) + b"DICM" + meta + dataset


TINY_SHA256 = "10cf0b4a24746f466f884678406689856906713ef324fb8c05e493bb3603cb25"
# compress(tiny_dicom()) as written by format version 1 (zstd 1.5, CharLS 2.4). Newer library
# versions may write other bytes; this blob must still decode, forever.
TINY_BLOB_V1 = bytes.fromhex(
    "4d465443010228005c0900000000000010cf0b4a24746f466f884678406689856906713ef324fb8c05e493bb3603cb250200"
    "335337725c010000000000000008000000000000010201000000000020000000200000000100000001000000a40000000000"
    "0000530300000000000028b52ffd605c00d5040022091d1fa0ab03fffffffffa5f2aa4e3e3f5c93d610ec7b7ff06f3d59e1b"
    "6e4facdc293ffc9fd947aefb01818717df89231e399288b296446d65a90f177d70e4ef7cddf311cc9e2ffaedf0b3a8f7f1fc"
    "a51558ef81f39bd94bcf66da9152ce968bd349cf1bf59ecfeffc3ff6effc5f7b30ddff4cd10a3d102050c36c078280733190"
    "d70116a17521c26d90abb8656bed8bb5c7004e60f0f40a01ffd8ffe800205350494646000200000100000020000000200a10"
    "06010000012c0000012cffe8000800000001ffd8fff7000b100020002001011100fff8000d01ffff0012004301140040ffda"
    "0008010100000000a24c4989311e4590e833f89311e4590e833f9ecee7337b5b3b1afadaba9a7a5a3a19f9d9951422749925"
    "5228d1aa15027d797571196965615d595503514d494541825debd1426562c5824e0c12ef5eb936e5c9b72d5a9f6ad51b562c"
    "51b1628d8b1152645cb936e4df2df3abfabfabfaeb1e31e31e38c78c78c78e22eb1bcb7cb7cb6df2df2df2fb7cbfcbfabefe"
    "afeafeafbfabe5cb110534a0a69c90ce486f3921bc90def2437b21bdededcdac2295ad6b5a94ad6b5ad4a56b5ad6a52b5ad6"
    "b52959d702108421084222222222222222222222227dbeeeeccc0deeeccc0deecccc0deecccc0deea16f14a50f5287a94a1e"
    "a50f52943d8a1ec5287b143d8aa36e8820490248124102481240920812409284944092049424a4241b85935935934d64d64d"
    "64d35935935934d64d64d64d3593cedb39deb9def5cef5cef7ae77ae77bd73bd7bbdebdda8da12bdef7bdc95ef7bdee4af7b"
    "defe157fff7e867d66ca666666666666666666666666666666c3619999981b9999981b9999981b9999981b9969ae52943d4a"
    "1ea5287a943d4a50f5287a94a1ea50f52ae35841024812409208124092049040920490248204902481241125aa38b38b3934"
    "d64d64d64d35935935934d64d64d64d3593c0d439deb9def5eef5cef7af77ae77bd7bbd73bdebdd9ad312bdef7bdc95ef7bd"
    "ee157bdfff615fff7ff0af9ed24cccccccccccccccccccccccccccccd168b3333303733333037b3333037b3333037b29b40a"
    "5287a943d4a50f5287b14a1ea50f62943d4a1ec5556788204902481241024812409208124092049040920490248221b38716"
    "716b269ac9ac9ac9a6b26b26b269ac9ac9ac9a6b27689a73bd73bdeb9deb9def5cef5cef7af77ae77bd7bb39304af7bdef72"
    "57bdef7b92bdef7bf855ff7ffe15f512d33333333333333333333333333333369299999981b9999981b9999981b9999981bd"
    "97924a5287a943d4a50f5287a94a1ea50f52943d4a1e0000000000023fe501a0324252525652565256525256525652565252"
    "565256525652525e50000000000004805a024059a11480ffd9"
)
# Magic, version 1, method split, 40 bytes of parameters, original size 2396.
TINY_FIXED_PREFIX = "4d46544301022800" + "5c09000000000000"
# Pixel value at byte 348, 2048 bytes, JPEG-LS, 2 bytes/sample, 1 sample, not planar, unsigned,
# 32 rows, 32 columns, 1 frame, 1 frame per chunk.
TINY_PARAMS = (
    "5c01000000000000" + "0008000000000000" + "0102010000000000" + "20000000200000000100000001000000"
)
# compress(b""): stored, size 0, SHA-256 of nothing, one empty section. No codec involved.
EMPTY_BLOB_V1 = bytes.fromhex(
    "4d465443010000000000000000000000e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    "01001be029ff0000000000000000"
)


def _fix_crc(blob: bytes | bytearray) -> bytes:
    """Recompute the container CRC so that a deliberate change reaches the deeper checks."""
    fixed = bytearray(blob)
    struct.pack_into("<I", fixed, 50, zlib.crc32(fixed[54:], zlib.crc32(fixed[:50])))
    return bytes(fixed)


# --- test vectors ----------------------------------------------------------------------------------


def test_tiny_input_is_stable() -> None:
    assert hashlib.sha256(tiny_dicom()).hexdigest() == TINY_SHA256


def test_committed_blob_still_decodes() -> None:
    assert decompress(TINY_BLOB_V1) == tiny_dicom()


def test_header_fields_of_a_fresh_blob() -> None:
    blob = compress(tiny_dicom())
    assert blob[:16].hex() == TINY_FIXED_PREFIX
    assert blob[16:48].hex() == TINY_SHA256
    assert blob[48:50] == b"\x02\x00"  # two sections: header, one JPEG-LS chunk
    assert blob[54:94].hex() == TINY_PARAMS
    info = describe(blob)
    assert (info.method, info.pixel_codec, info.original_size) == ("split", "jpegls", 2396)
    assert info.compressed_size == len(blob) < 1300
    assert sum(info.section_lengths) + 54 + 40 + 16 == len(blob)


def test_empty_input_vector() -> None:
    assert compress(b"") == EMPTY_BLOB_V1
    assert decompress(EMPTY_BLOB_V1) == b""


# --- tampering -------------------------------------------------------------------------------------


def test_every_flipped_byte_is_refused() -> None:
    for position in range(len(TINY_BLOB_V1)):
        for mask in (0x01, 0x80):
            tampered = bytearray(TINY_BLOB_V1)
            tampered[position] ^= mask
            with pytest.raises(TransferInputError):
                decompress(bytes(tampered))


def test_every_truncation_is_refused() -> None:
    for end in range(len(TINY_BLOB_V1)):
        with pytest.raises(TransferInputError):
            decompress(TINY_BLOB_V1[:end])


def test_appended_bytes_are_refused() -> None:
    with pytest.raises(TransferInputError, match=r"trailing|checksum"):
        decompress(TINY_BLOB_V1 + b"\0")
    with pytest.raises(TransferInputError, match="trailing"):
        decompress(_fix_crc(TINY_BLOB_V1 + b"\0"))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"XXXX", "magic"),
        (4, b"\x02", "version"),
        (5, b"\x07", "method"),
        (6, b"\xff\xff", "header"),
        (8, struct.pack("<Q", 1 << 39), "exceeds the limit"),
        (8, struct.pack("<Q", 2395), "size|parameters"),
        (16, b"\0" * 32, "SHA-256"),
        (48, b"\0\0", "header"),
        (48, b"\x03\x00", "truncated|trailing"),
        (54 + 16, b"\x02", "zstd"),  # pixel codec zstd, but the section is JPEG-LS
        (54 + 17, b"\x01", "parameters"),  # 1 byte per sample: length disagrees
        (54 + 24, b"\x21", "parameters"),  # 33 rows
        (54 + 36, b"\x02", "parameters"),  # 2 frames per chunk of 1 frame
    ],
)
def test_deliberate_changes_are_refused(offset: int, value: bytes, message: str) -> None:
    tampered = bytearray(TINY_BLOB_V1)
    tampered[offset : offset + len(value)] = value
    with pytest.raises(TransferInputError, match=message):
        decompress(_fix_crc(tampered))


def test_output_limit() -> None:
    with pytest.raises(TransferInputError, match="exceeds the limit"):
        decompress(TINY_BLOB_V1, max_output_bytes=2395)
    assert decompress(TINY_BLOB_V1, max_output_bytes=2396) == tiny_dicom()
    assert DEFAULT_MAX_OUTPUT_BYTES >= 512 << 20


def test_zstd_section_declaring_a_huge_size_is_refused_before_allocating() -> None:
    digest = hashlib.sha256(b"x" * 10).digest()
    # A hand-made frame: single segment, 8-byte content size of 1 TiB, one raw block of 10 bytes.
    bomb = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", 1 << 40) + b"\x51\x00\x00" + b"x" * 10
    assert zstandard.frame_content_size(bomb) == 1 << 40
    blob = container.pack(container.Container(container.Method.ZSTD, 10, digest, b"", (bomb,)))
    with pytest.raises(TransferInputError, match="unexpected size"):
        decompress(blob)
    # A frame without a content size is refused too: the decoder relies on it to bound memory.
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 10)
    blob = container.pack(container.Container(container.Method.ZSTD, 10, digest, b"", (unsized,)))
    with pytest.raises(TransferInputError, match="unexpected size"):
        decompress(blob)


def test_stored_blob_with_wrong_length_is_refused() -> None:
    blob = container.pack(
        container.Container(container.Method.STORED, 5, hashlib.sha256(b"abcd").digest(), b"", (b"abcd",))
    )
    with pytest.raises(TransferInputError):
        decompress(blob)


# --- fuzzing ---------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_input_errors(blob: bytes) -> None:
    with pytest.raises(TransferInputError):
        decompress(blob)


@_FUZZ
@given(st.binary(max_size=400))
def test_random_bodies_behind_a_valid_header_raise_only_input_errors(body: bytes) -> None:
    with pytest.raises(TransferInputError):
        decompress(_fix_crc(TINY_BLOB_V1[:54] + body))


@_FUZZ
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(TINY_BLOB_V1) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_mutations_with_a_valid_crc_never_restore_wrong_bytes(changes: list[tuple[int, int]]) -> None:
    tampered = bytearray(TINY_BLOB_V1)
    for position, mask in changes:
        tampered[position] ^= mask
    try:
        restored = decompress(_fix_crc(tampered))
    except TransferInputError:
        return
    assert restored == tiny_dicom()  # a harmless change (e.g. zstd window size) may still decode


@_FUZZ
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=6),
    st.integers(0, 2400),
)
def test_damaged_dicom_always_round_trips(changes: list[tuple[int, int]], cut: int) -> None:
    # Damage in the header (geometry, lengths, VRs) must only ever cost compression ratio.
    data = bytearray(tiny_dicom())
    for position, value in changes:
        data[position] = value
    damaged = bytes(data[: max(cut, 132)])
    assert decompress(compress(damaged)) == damaged
