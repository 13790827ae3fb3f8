"""Pixel streams of the split method: geometry, JPEG-LS, JPEG-XL, HTJ2K, zstd and frame deltas.

Exactness by construction: JPEG-LS is run in lossless mode (NEAR = 0), JPEG-XL in lossless
modular mode and HTJ2K with the reversible wavelet, all with the sample precision equal to the
container width (8 bits for 1-byte samples, 16 for 2-byte ones; imagecodecs declares
``itemsize * 8``), so every stored bit pattern,
including garbage above BitsStored and overlay bits, is a legal sample and comes back unchanged.
The signed mapping ``x ^ 0x8000`` and the frame delta (modular subtraction) are bijections. The
compressor still decompresses every blob before returning it (see ``codec.compress``), and every
decompress checks the SHA-256.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import imagecodecs
import numpy as np
import zstandard

from .codec_layout import NATIVE_LE_SYNTAXES, Layout
from .errors import TransferInputError

# JPEG-LS frame headers carry 16-bit dimensions; CharLS needs an extension beyond that.
_MAX_JPEGLS_ROWS = 0xFFFF
# Frames are coded in chunks of at most this many bytes, so the temporary copies (signed
# mapping, decoder check) stay small however big the file is.
CHUNK_BYTES = 32 << 20

# Split parameters (40 bytes, little endian): pixel offset u64, pixel length u64, pixel codec u8,
# bytes per sample u8, samples per pixel u8, planar u8, signed u8, 3 pad bytes, rows u32,
# columns u32, frames u32, frames per image-codec chunk u32. Sections: zstd of the file minus the
# pixel value, then one section per JPEG-LS / JPEG-XL chunk, or one zstd section for the pixels.
_PARAMS = struct.Struct("<QQBBBBBxxxIIII")


class PixelCodec(IntEnum):
    """How the pixel stream of a split container is coded."""

    JPEGLS = 1
    ZSTD = 2
    FRAME_DELTA_ZSTD = 3
    JPEGXL = 4
    HTJ2K = 5


@dataclass(frozen=True)
class PixelSpec:
    """Geometry of a plain pixel value: native little endian, 1 or 2 bytes per sample."""

    offset: int
    rows: int
    columns: int
    frames: int
    samples: int
    planar: int
    bytes_per_sample: int
    signed: bool

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame."""
        return self.rows * self.columns * self.samples * self.bytes_per_sample

    @property
    def length(self) -> int:
        """Bytes of all frames (the cut; a pad byte after an odd length stays in the header)."""
        return self.frame_bytes * self.frames

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """Sample type as stored in the file."""
        return np.dtype("<u2") if self.bytes_per_sample == 2 else np.dtype("u1")

    @property
    def image_rows(self) -> int:
        """Rows of one frame as an image for JPEG-LS (planes stacked when planar)."""
        return self.rows * self.samples if self.planar else self.rows

    def image_shape(self, frames: int) -> tuple[int, ...]:
        """Array shape of ``frames`` consecutive frames stacked vertically."""
        if self.samples == 3 and not self.planar:
            return (frames * self.rows, self.columns, 3)
        return (frames * self.image_rows, self.columns)

    def sign_mask(self) -> int:
        """XOR that turns two's complement into offset binary, so neighbours stay close."""
        return 0x8000 if self.bytes_per_sample == 2 else 0x80


def spec_from_layout(layout: Layout, file_size: int) -> tuple[PixelSpec | None, str]:
    """The plain pixel geometry of a parsed file, or None and why the image codec cannot apply."""
    if layout.problem:
        return None, layout.problem
    if layout.transfer_syntax not in NATIVE_LE_SYNTAXES:
        return None, f"transfer syntax {layout.transfer_syntax} is not native little endian"
    if layout.bits_allocated not in (8, 16) or layout.samples_per_pixel not in (1, 3):
        return None, "not 8/16-bit grey or 3-sample pixels"
    if layout.rows < 1 or layout.columns < 1 or layout.frames < 1 or layout.planar_configuration > 1:
        return None, "missing or bad pixel geometry"
    spec = PixelSpec(
        offset=layout.pixel_offset,
        rows=layout.rows,
        columns=layout.columns,
        frames=layout.frames,
        samples=layout.samples_per_pixel,
        planar=layout.planar_configuration if layout.samples_per_pixel == 3 else 0,
        bytes_per_sample=layout.bits_allocated // 8,
        signed=layout.pixel_representation == 1,
    )
    padded = layout.pixel_length == spec.length + 1 and spec.length % 2 == 1
    if layout.pixel_length != spec.length and not padded:
        return None, f"pixel length {layout.pixel_length} is not rows*columns*frames*samples*bytes"
    if spec.offset + spec.length > file_size:
        return None, "pixel data runs past the end of the file"
    return spec, ""


def pack_params(spec: PixelSpec, codec: PixelCodec, frames_per_chunk: int) -> bytes:
    """Method parameters of a split container."""
    return _PARAMS.pack(
        spec.offset,
        spec.length,
        int(codec),
        spec.bytes_per_sample,
        spec.samples,
        spec.planar,
        int(spec.signed),
        spec.rows,
        spec.columns,
        spec.frames,
        frames_per_chunk,
    )


def unpack_params(params: bytes, original_size: int, name: str) -> tuple[PixelSpec, PixelCodec, int]:
    """Parse and validate split parameters against the container's declared size."""
    if len(params) != _PARAMS.size:
        raise TransferInputError("bad split parameters", name=name)
    offset, length, codec, bps, samples, planar, signed, rows, cols, frames, per_chunk = _PARAMS.unpack(
        params
    )
    valid = (
        codec in PixelCodec.__members__.values()
        and bps in (1, 2)
        and samples in (1, 3)
        and planar in (0, 1)
        and signed in (0, 1)
        and 1 <= rows <= 0xFFFF
        and 1 <= cols <= 0xFFFF
        and 1 <= per_chunk <= frames
    )
    if not valid:
        raise TransferInputError("bad split parameters", name=name)
    spec = PixelSpec(offset, rows, cols, frames, samples, planar, bps, bool(signed))
    if spec.length != length or offset + length > original_size:
        raise TransferInputError("split parameters disagree with the declared size", name=name)
    return spec, PixelCodec(codec), per_chunk


def frames_per_chunk(spec: PixelSpec) -> int:
    """Frames per image-codec chunk: bounded by CHUNK_BYTES and by the 16-bit JPEG-LS height."""
    by_bytes = max(1, CHUNK_BYTES // max(1, spec.frame_bytes))
    by_rows = max(1, _MAX_JPEGLS_ROWS // spec.image_rows)
    return min(spec.frames, by_bytes, by_rows)


def _chunks(spec: PixelSpec, per_chunk: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of each chunk."""
    return [(first, min(per_chunk, spec.frames - first)) for first in range(0, spec.frames, per_chunk)]


def _frames_array(
    buffer: bytes | bytearray | memoryview, spec: PixelSpec, first: int, count: int
) -> np.ndarray:
    """View (no copy) of ``count`` frames from ``first``, shaped for JPEG-LS."""
    samples = count * spec.frame_bytes // spec.bytes_per_sample
    offset = spec.offset + first * spec.frame_bytes
    flat = np.frombuffer(buffer, dtype=spec.dtype, count=samples, offset=offset)
    return flat.reshape(spec.image_shape(count))


def _jpegls_encode(image: np.ndarray) -> bytes:
    return bytes(imagecodecs.jpegls_encode(image))


def _jpegxl_encode(image: np.ndarray) -> bytes:
    # Lossless modular mode; effort 1 is the fast end (several times faster than CharLS here).
    # One thread: the caller parallelises over files, and output must not depend on threading.
    return bytes(imagecodecs.jpegxl_encode(image, lossless=True, effort=1, numthreads=1, usecontainer=False))


def _htj2k_encode(image: np.ndarray) -> bytes:
    # High-throughput JPEG 2000 (OpenJPH), reversible 5/3 wavelet: level 0 is lossless. About
    # 2x CharLS's speed coding and 3x decoding here, for ~11 % more bytes on CT and MR.
    return bytes(imagecodecs.htj2k_encode(image, level=0))


def _htj2k_decode(section: bytes | memoryview, target: np.ndarray) -> None:
    imagecodecs.htj2k_decode(cast(bytes, section), out=target)


def _jpegls_decode(section: bytes | memoryview, target: np.ndarray) -> None:
    imagecodecs.jpegls_decode(cast(bytes, section), out=target)  # any buffer works


def _jpegxl_decode(section: bytes | memoryview, target: np.ndarray) -> None:
    imagecodecs.jpegxl_decode(cast(bytes, section), numthreads=1, out=target)


_IMAGE_ENCODERS = {
    PixelCodec.JPEGLS: _jpegls_encode,
    PixelCodec.JPEGXL: _jpegxl_encode,
    PixelCodec.HTJ2K: _htj2k_encode,
}
_IMAGE_DECODERS = {
    PixelCodec.JPEGLS: _jpegls_decode,
    PixelCodec.JPEGXL: _jpegxl_decode,
    PixelCodec.HTJ2K: _htj2k_decode,
}


def encode_image(
    data: bytes | memoryview, spec: PixelSpec, codec: PixelCodec
) -> tuple[list[bytes], int] | None:
    """Image-codec sections and frames per chunk, or None when the codec cannot code this image."""
    if spec.image_rows > _MAX_JPEGLS_ROWS:
        return None
    encode = _IMAGE_ENCODERS[codec]
    per_chunk = frames_per_chunk(spec)
    sections = []
    for first, count in _chunks(spec, per_chunk):
        image = _frames_array(data, spec, first, count)
        if spec.signed:
            image = image ^ image.dtype.type(spec.sign_mask())
        try:
            sections.append(encode(image))
        except Exception:
            # CharLS refuses when its output estimate is too small (noise); LZ will do.
            return None
    return sections, per_chunk


def trial_size(image: np.ndarray, codec: PixelCodec) -> int | None:
    """Coded size of a sample image (already mapped), or None when the codec refuses it."""
    try:
        return len(_IMAGE_ENCODERS[codec](image))
    except Exception:
        return None


def encode_jpegls(data: bytes | memoryview, spec: PixelSpec) -> tuple[list[bytes], int] | None:
    """JPEG-LS sections and frames per chunk (see :func:`encode_image`)."""
    return encode_image(data, spec, PixelCodec.JPEGLS)


def decode_image(
    codec: PixelCodec,
    sections: Sequence[bytes | memoryview],
    spec: PixelSpec,
    per_chunk: int,
    out: bytearray,
    name: str,
) -> None:
    """Decode image-codec chunks straight into ``out`` at the pixel offset."""
    decode = _IMAGE_DECODERS[codec]
    chunks = _chunks(spec, per_chunk)
    if len(sections) != len(chunks):
        raise TransferInputError("wrong number of pixel sections", name=name)
    for (first, count), section in zip(chunks, sections, strict=True):
        target = _frames_array(out, spec, first, count)
        try:
            # A preallocated ``out`` makes imagecodecs refuse any codestream whose declared size
            # or sample type differs, so a hostile blob cannot make it allocate.
            decode(section, target)
        except Exception as error:
            raise TransferInputError(f"bad {codec.name} pixel stream: {error}", name=name) from None
        if spec.signed:
            target ^= target.dtype.type(spec.sign_mask())


def zstd_compress(data: bytes | bytearray | memoryview, level: int) -> bytes:
    """One zstd frame with its content size recorded (the decoder relies on it)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def zstd_decompress(section: bytes | memoryview, expected: int, name: str) -> bytes:
    """Decode one zstd frame that must hold exactly ``expected`` bytes."""
    try:
        declared = zstandard.frame_content_size(section)
        if declared != expected:
            raise TransferInputError("zstd section of unexpected size", name=name)
        out = zstandard.ZstdDecompressor().decompress(section, max_output_size=expected)
    except zstandard.ZstdError as error:
        raise TransferInputError(f"bad zstd section: {error}", name=name) from None
    if len(out) != expected:
        raise TransferInputError("zstd section of unexpected size", name=name)
    return out


def pixel_view(data: bytes | memoryview, spec: PixelSpec) -> memoryview:
    """The pixel bytes of ``data`` without copying."""
    return memoryview(data)[spec.offset : spec.offset + spec.length]


def frame_delta(data: bytes | memoryview, spec: PixelSpec) -> np.ndarray:
    """Each frame minus the one before, modulo the sample width; the first frame as it is."""
    frames = np.frombuffer(pixel_view(data, spec), dtype=spec.dtype).reshape(spec.frames, -1)
    delta = np.empty_like(frames)
    delta[0] = frames[0]
    np.subtract(frames[1:], frames[:-1], out=delta[1:])
    return delta


def undo_frame_delta(out: bytearray, spec: PixelSpec) -> None:
    """Invert :func:`frame_delta` in place inside ``out``."""
    view = np.frombuffer(
        out, dtype=spec.dtype, count=spec.length // spec.bytes_per_sample, offset=spec.offset
    )
    frames = view.reshape(spec.frames, -1)
    np.cumsum(frames, axis=0, dtype=frames.dtype, out=frames)


def decode_pixels(
    codec: PixelCodec,
    spec: PixelSpec,
    per_chunk: int,
    sections: Sequence[bytes | memoryview],
    out: bytearray,
    name: str,
) -> None:
    """Write the decoded pixel stream into ``out`` (already sized to the original file)."""
    if codec in _IMAGE_DECODERS:
        decode_image(codec, sections, spec, per_chunk, out, name)
        return
    if len(sections) != 1:
        raise TransferInputError("wrong number of pixel sections", name=name)
    out[spec.offset : spec.offset + spec.length] = zstd_decompress(sections[0], spec.length, name)
    if codec == PixelCodec.FRAME_DELTA_ZSTD:
        undo_frame_delta(out, spec)
