"""Lossless compression of DICOM files, restored byte for byte.

``compress`` picks per file the smallest of a few cheap encodings:

* **split** (plain pixels: native little-endian, 8/16-bit, 1 or 3 samples, defined length): the
  file minus its pixel value goes to zstd, the pixel value to an image codec (JPEG-LS; JPEG-XL at
  its fastest effort for colour and for noise-dominated images; HTJ2K for grey images when the
  caller prefers speed to size), or to zstd (raw or as
  frame-to-frame deltas) when a quick zstd probe on a sample says LZ can beat the image codec
  (palette, ultrasound, synthetic images, cine loops);
* **zstd** of the whole file for everything else (compressed transfer syntaxes, big endian,
  deflated, no pixel data, not DICOM at all, truncated);
* **stored** when nothing shrinks the bytes.

Every blob carries the SHA-256 of the original, and every ``decompress`` checks it, so a blob
either restores the exact original or raises :class:`TransferInputError`. ``compress`` by
default also decompresses its own blob before returning it and falls back to a simpler method if
that ever failed, so exactness does not rest on any codec being bug-free.

Pure functions: bytes in, bytes out; no disk, clock or logging.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import codec_container as container
from .codec_container import Container, Method
from .codec_layout import ENCAPSULATED, Layout, parse_layout
from .codec_pixels import (
    PixelCodec,
    PixelSpec,
    decode_pixels,
    encode_image,
    frame_delta,
    pack_params,
    pixel_view,
    spec_from_layout,
    trial_size,
    unpack_params,
    zstd_compress,
    zstd_decompress,
)
from .errors import TransferInputError, TransferUsageError

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "BlobInfo", "compress", "decompress", "describe"]

DEFAULT_MAX_OUTPUT_BYTES = 1 << 30
"""Largest file ``decompress`` restores unless told otherwise (DICOM files reach a few hundred MB)."""

# zstd levels, chosen from measurements on pydicom-data (scripts/bench_codec.py, 2-core machine).
# Headers: level 19 saves 5 % of their bytes (0.05 % of the output) for 30x the time, as zstd's
# strong levels have a high fixed cost per call. Pixels and whole files: a level that keeps
# ~100 MB/s. Already-compressed data: the fastest useful level.
_HEADER_LEVEL = 9
_PIXEL_LZ_LEVEL = 6
_WHOLE_LEVEL = 6
_ENCAPSULATED_LEVEL = 3
# The probe compresses about 1/8 of the pixels at a fast level; LZ is tried in full when its
# estimate comes within this factor of the image codec's size (the full, slower level gains
# ~10-20 %); frame deltas when the probe says they shrink the pixels by this gain.
_PROBE_LEVEL = 3
_PROBE_BANDS = 4
_PROBE_FRACTION = 8
_PROBE_WHOLE_MAX_BYTES = 256 << 10
_LZ_TRY_FACTOR = 1.25
_DELTA_TRY_GAIN = 0.9
# Image-codec trial: only for grey pixel values of at least this size; JPEG-XL is taken when
# its sample comes within this factor of JPEG-LS's.
_TRIAL_MIN_BYTES = 1 << 20
_JPEGXL_SLACK = 1.05


@dataclass(frozen=True)
class BlobInfo:
    """What a compressed blob declares (read without decompressing)."""

    method: str
    pixel_codec: str
    original_size: int
    compressed_size: int
    sha256: str
    section_lengths: tuple[int, ...]


def compress(
    data: bytes,
    *,
    name: str = "",
    verify: bool = True,
    require_dicom: bool = False,
    prefer_speed: bool = False,
) -> bytes:
    """Compress one file losslessly; ``decompress`` restores it byte for byte.

    Any bytes are accepted: what is not a plain DICOM image is compressed as a whole. With
    ``require_dicom`` a file that is not a well-formed DICOM Part 10 file (no DICM prefix,
    truncated, malformed) raises :class:`TransferInputError` naming ``name`` instead.
    With ``verify`` (default) the blob is decompressed and checked before it is returned.
    With ``prefer_speed`` grey images go to HTJ2K instead of JPEG-LS / JPEG-XL: about twice as
    fast to code and three times to decode, for ~11 % more bytes (for CPU-bound transfers).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TransferUsageError("compress takes bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    if len(data) > container.MAX_ORIGINAL_BYTES:
        raise TransferUsageError("file too large for the container format")
    digest = hashlib.sha256(data).digest()
    layout = parse_layout(data)
    if require_dicom and layout.damaged:
        raise TransferInputError(f"not a usable DICOM file: {layout.problem}", name=name)
    builders = (partial(_split_blob, prefer_speed=prefer_speed), _whole_blob)
    for build in builders:
        blob = build(data, digest, layout)
        if blob is not None and (not verify or _restores(blob, data)):
            return blob
    # Stored is exact by construction: it is the original bytes behind a header.
    return container.pack(Container(Method.STORED, len(data), digest, b"", (data,)))


def decompress(
    blob: bytes,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    name: str = "",
    expect_sha256: bytes | None = None,
) -> bytes:
    """Restore the original bytes of a blob made by :func:`compress`.

    Raises :class:`TransferInputError` (naming ``name``) for a malformed, tampered or
    truncated blob, for one declaring more than ``max_output_bytes``, and whenever the
    SHA-256 of the restored bytes differs from the one in the blob, or from
    ``expect_sha256`` when given (one hash of the restored bytes serves both checks).
    """
    if expect_sha256 is not None:
        parsed = container.unpack(blob, max_output_bytes=max_output_bytes, name=name)
        if parsed.sha256 != expect_sha256:
            raise TransferInputError("the blob is not of the expected file (SHA-256 differs)", name=name)
    restored = _restore(blob, max_output_bytes, name)
    return restored if isinstance(restored, bytes) else bytes(restored)


def describe(blob: bytes, *, name: str = "") -> BlobInfo:
    """Read a blob's header fields without decompressing (raises TransferInputError if malformed)."""
    parsed = container.unpack(blob, max_output_bytes=container.MAX_ORIGINAL_BYTES, name=name)
    pixel_codec = ""
    if parsed.method == Method.SPLIT:
        _spec, codec, _per_chunk = unpack_params(parsed.params, parsed.original_size, name)
        pixel_codec = codec.name.lower().replace("_", "-")
    return BlobInfo(
        method=parsed.method.name.lower(),
        pixel_codec=pixel_codec,
        original_size=parsed.original_size,
        compressed_size=len(blob),
        sha256=parsed.sha256.hex(),
        section_lengths=tuple(container.section_lengths(parsed)),
    )


# --- decompression ---------------------------------------------------------------------------


def _restore(
    blob: bytes, max_output_bytes: int, name: str, original: bytes | None = None
) -> bytes | bytearray:
    """Decode and check ``blob``: against its SHA-256, or against ``original`` when the caller
    has it (the self-check in ``compress``; a plain comparison is several times faster)."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TransferUsageError("decompress takes bytes")
    parsed = container.unpack(blob, max_output_bytes=max_output_bytes, name=name)
    restored: bytes | bytearray
    if parsed.method == Method.STORED:
        if parsed.params or len(parsed.sections) != 1 or len(parsed.sections[0]) != parsed.original_size:
            raise TransferInputError("bad stored blob", name=name)
        restored = bytes(parsed.sections[0])
    elif parsed.method == Method.ZSTD:
        if parsed.params or len(parsed.sections) != 1:
            raise TransferInputError("bad zstd blob", name=name)
        restored = zstd_decompress(parsed.sections[0], parsed.original_size, name)
    else:
        restored = _restore_split(parsed, name)
    if original is not None:
        if restored != original:
            raise TransferInputError("restored bytes differ from the original", name=name)
    elif hashlib.sha256(restored).digest() != parsed.sha256:
        raise TransferInputError("SHA-256 of the restored file does not match; refusing it", name=name)
    return restored


def _restore_split(parsed: Container, name: str) -> bytearray:
    spec, codec, per_chunk = unpack_params(parsed.params, parsed.original_size, name)
    header = zstd_decompress(parsed.sections[0], parsed.original_size - spec.length, name)
    out = bytearray(parsed.original_size)
    end = spec.offset + spec.length
    out[: spec.offset] = header[: spec.offset]
    out[end:] = header[spec.offset :]
    decode_pixels(codec, spec, per_chunk, parsed.sections[1:], out, name)
    return out


def _restores(blob: bytes, original: bytes) -> bool:
    """True when ``blob`` decompresses to exactly ``original``."""
    try:
        _restore(blob, len(original), "", original)
    except TransferInputError:
        return False
    return True


# --- compression -----------------------------------------------------------------------------


def _whole_blob(data: bytes, digest: bytes, layout: Layout) -> bytes | None:
    """Whole-file zstd, or None when it does not shrink the bytes (stored follows)."""
    level = _ENCAPSULATED_LEVEL if layout.problem == ENCAPSULATED else _WHOLE_LEVEL
    packed = zstd_compress(data, level)
    if len(packed) >= len(data):
        return None
    return container.pack(Container(Method.ZSTD, len(data), digest, b"", (packed,)))


def _split_blob(data: bytes, digest: bytes, layout: Layout, *, prefer_speed: bool = False) -> bytes | None:
    """The split encoding, or None when the pixels are not plain."""
    spec, _why = spec_from_layout(layout, len(data))
    if spec is None:
        return None
    try:
        return _split_plain(data, digest, spec, prefer_speed)
    except Exception:
        # An image the codecs reject in a way we did not foresee: whole-file zstd is always
        # right, and a transfer must not fail for the sake of a better ratio.
        return None


def _split_plain(data: bytes, digest: bytes, spec: PixelSpec, prefer_speed: bool) -> bytes:
    view = memoryview(data)
    end = spec.offset + spec.length
    header = b"".join((view[: spec.offset], view[end:]))
    header_packed = zstd_compress(header, _HEADER_LEVEL)
    codec, per_chunk, sections = _best_pixels(data, spec, prefer_speed)
    params = pack_params(spec, codec, per_chunk)
    return container.pack(Container(Method.SPLIT, len(data), digest, params, (header_packed, *sections)))


def _best_pixels(data: bytes, spec: PixelSpec, prefer_speed: bool) -> tuple[PixelCodec, int, list[bytes]]:
    """Smallest pixel encoding among an image codec and the LZ candidates the probes call
    promising. Only the best candidate so far is kept, so memory stays near one extra copy of
    the pixels."""
    pixels = pixel_view(data, spec)
    sample = _sample_bands(pixels, _row_bytes(spec))
    lz_estimate = len(zstd_compress(sample, _PROBE_LEVEL)) * len(pixels) / max(1, len(sample))
    best: tuple[PixelCodec, int, list[bytes]] | None = None
    best_size = spec.length * _LZ_TRY_FACTOR  # LZ is tried when nothing else is known
    image_codec = PixelCodec.HTJ2K if prefer_speed and spec.samples == 1 else _image_codec(spec, sample)
    encoded = encode_image(data, spec, image_codec)
    if encoded is None and image_codec in (PixelCodec.JPEGXL, PixelCodec.HTJ2K):
        # libjxl or OpenJPH refused (or this imagecodecs build lacks it): JPEG-LS may still do.
        image_codec = PixelCodec.JPEGLS
        encoded = encode_image(data, spec, image_codec)
    if encoded is not None:
        best, best_size = (image_codec, encoded[1], encoded[0]), sum(map(len, encoded[0]))
    if best is None or lz_estimate < best_size * _LZ_TRY_FACTOR:
        packed = zstd_compress(pixels, _PIXEL_LZ_LEVEL)
        if best is None or len(packed) < best_size:
            best, best_size = (PixelCodec.ZSTD, spec.frames, [packed]), len(packed)
    if spec.frames > 1:
        gain = _delta_gain(data, spec)
        if gain < _DELTA_TRY_GAIN and lz_estimate * gain < best_size * _LZ_TRY_FACTOR:
            packed = zstd_compress(frame_delta(data, spec).data, _PIXEL_LZ_LEVEL)
            if len(packed) < best_size:
                best = (PixelCodec.FRAME_DELTA_ZSTD, spec.frames, [packed])
    return best


def _image_codec(spec: PixelSpec, sample: bytes) -> PixelCodec:
    """JPEG-LS, or JPEG-XL at effort 1 where it costs little ratio and saves much time.

    Colour goes to JPEG-XL: its colour transform wins clearly (US1: 8.6:1 vs 3.5:1; imagecodecs
    gives CharLS no colour transform). Large grey images get a trial of both on the probe's
    sample: JPEG-XL effort 1 is ~3x faster than CharLS both ways, worth a few percent of size
    (noisy CR RG1: 1.68 vs 1.72, 28 vs 110 ms), but on smooth images JPEG-LS is 7-20 % smaller
    (CT 693: 5.2 vs 4.4) and on small ones JPEG-XL's fixed overhead shows.
    """
    if spec.samples == 3:
        return PixelCodec.JPEGXL
    if spec.length < _TRIAL_MIN_BYTES:
        return PixelCodec.JPEGLS
    image = np.frombuffer(sample, dtype=spec.dtype).reshape(-1, spec.columns)
    if spec.signed:
        image = image ^ image.dtype.type(spec.sign_mask())
    jpegls = trial_size(image, PixelCodec.JPEGLS)
    jpegxl = trial_size(image, PixelCodec.JPEGXL)
    if jpegxl is not None and (jpegls is None or jpegxl <= jpegls * _JPEGXL_SLACK):
        return PixelCodec.JPEGXL
    return PixelCodec.JPEGLS


def _row_bytes(spec: PixelSpec) -> int:
    return spec.columns * spec.bytes_per_sample * (1 if spec.planar else spec.samples)


def _sample_bands(buffer: memoryview, row_bytes: int) -> bytes:
    """About 1/_PROBE_FRACTION of ``buffer`` in _PROBE_BANDS row-aligned bands spread over it."""
    total = len(buffer)
    if total <= _PROBE_WHOLE_MAX_BYTES:
        return bytes(buffer)
    band = max(row_bytes, total // (_PROBE_FRACTION * _PROBE_BANDS) // row_bytes * row_bytes)
    starts = ((2 * i + 1) * total // (2 * _PROBE_BANDS) // row_bytes * row_bytes for i in range(_PROBE_BANDS))
    return b"".join(buffer[start : start + band] for start in starts)


def _delta_gain(data: bytes, spec: PixelSpec) -> float:
    """Estimated size ratio of frame deltas to raw frames, on bands of a few frame pairs."""
    count = min(_PROBE_BANDS, spec.frames - 1)
    picks = sorted({1 + (spec.frames - 1) * i // count for i in range(count)})
    band = max(1, spec.frame_bytes // _PROBE_FRACTION // spec.bytes_per_sample)
    first = (spec.frame_bytes // spec.bytes_per_sample - band) // 2
    pixels = np.frombuffer(pixel_view(data, spec), dtype=spec.dtype).reshape(spec.frames, -1)
    current = np.concatenate([pixels[k, first : first + band] for k in picks])
    previous = np.concatenate([pixels[k - 1, first : first + band] for k in picks])
    raw = len(zstd_compress(current.tobytes(), _PROBE_LEVEL))
    delta = len(zstd_compress((current - previous).tobytes(), _PROBE_LEVEL))
    return delta / max(1, raw)
