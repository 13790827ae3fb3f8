"""Frames of an instance (WADO-RS ``/frames/{list}``) and rendered images (``/rendered``, ``/thumbnail``).

:func:`stored_frame` returns frame *n* (1-based) as stored: a slice of native Pixel Data, or
the fragments of one encapsulated frame (JPEG-LS, JPEG 2000...), with the transfer syntax it is
in.  :func:`decoded_frame` returns it uncompressed (little endian) for a client that asked for
``transfer-syntax=1.2.840.10008.1.2.1``; :func:`render` makes a JPEG or PNG for previews (the
modality LUT, then the window the dataset states or the frame's range, MONOCHROME1 inverted,
palette colour applied).  Decoding uses pydicom's decoders, then imagecodecs (installed with the
project) for the compressed syntaxes pydicom has no plug-in for here.

Pure code: no disk, network or clock.
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
from pydicom import Dataset
from pydicom.encaps import get_frame
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..errors import NodeUsageError

MAX_FRAMES_PER_REQUEST: Final = 10_000
MAX_VIEWPORT: Final = 4096
DEFAULT_THUMBNAIL: Final = 128


class CannotDecode(NodeUsageError):
    """This frame's compression cannot be decoded here (answered 406: ask for it as stored)."""


def frame_count(ds: Dataset) -> int:
    """Frames in ``ds`` (1 unless Number of Frames says more); 0 without Pixel Data."""
    if "PixelData" not in ds:
        return 0
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def parse_frame_list(text: str, count: int) -> list[int]:
    """Frame numbers ``1,3,5`` (1-based, each within ``count``); NodeUsageError otherwise."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or len(part) > 9:
            raise NodeUsageError("frame numbers are positive integers separated by commas")
        numbers.append(int(part))
        if len(numbers) > MAX_FRAMES_PER_REQUEST:
            raise NodeUsageError("too many frames in one request")
    if not numbers or any(not 1 <= n <= count for n in numbers):
        raise NodeUsageError(f"frame numbers run from 1 to {count}")
    return numbers


def transfer_syntax(ds: Dataset) -> UID:
    """The instance's transfer syntax (Explicit VR Little Endian if the file meta lacks one)."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else ExplicitVRLittleEndian


def _native_frame(ds: Dataset, number: int, count: int) -> bytes:
    data: bytes = ds.PixelData
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    if bits % 8 == 0:
        size = bits // 8
        return data[(number - 1) * size : number * size]
    # Bit-packed frames (Bits Allocated 1) need not start on a byte: unpack, slice, pack again.
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return np.packbits(flat[(number - 1) * bits : number * bits], bitorder="little").tobytes()


def stored_frame(ds: Dataset, number: int) -> tuple[bytes, UID]:
    """Frame ``number`` (1-based) as stored, and the transfer syntax of those bytes."""
    count = frame_count(ds)
    if not 1 <= number <= count:
        raise NodeUsageError(f"frame numbers run from 1 to {count}")
    syntax = transfer_syntax(ds)
    if syntax.is_encapsulated:
        return get_frame(ds.PixelData, number - 1, number_of_frames=count), syntax
    # Native pixels are served as Explicit VR Little Endian whatever the file's VR encoding;
    # big endian files are rare enough to be decoded instead.
    if not syntax.is_little_endian:
        return decoded_frame(ds, number), ExplicitVRLittleEndian
    return _native_frame(ds, number, count), ExplicitVRLittleEndian


def _imagecodecs_decode(syntax: UID, data: bytes) -> np.ndarray:
    import imagecodecs

    decoders = {
        "1.2.840.10008.1.2.4.80": imagecodecs.jpegls_decode,
        "1.2.840.10008.1.2.4.81": imagecodecs.jpegls_decode,
        "1.2.840.10008.1.2.4.90": imagecodecs.jpeg2k_decode,
        "1.2.840.10008.1.2.4.91": imagecodecs.jpeg2k_decode,
        "1.2.840.10008.1.2.4.201": imagecodecs.jpeg2k_decode,
        "1.2.840.10008.1.2.4.202": imagecodecs.jpeg2k_decode,
        "1.2.840.10008.1.2.4.203": imagecodecs.jpeg2k_decode,
        "1.2.840.10008.1.2.4.57": imagecodecs.ljpeg_decode,
        "1.2.840.10008.1.2.4.70": imagecodecs.ljpeg_decode,
        "1.2.840.10008.1.2.4.50": imagecodecs.jpeg8_decode,
        "1.2.840.10008.1.2.4.51": imagecodecs.jpeg8_decode,
    }
    decode = decoders.get(str(syntax))
    if decode is None:
        raise CannotDecode(
            f"frames in transfer syntax {syntax} cannot be decoded here; ask for them as stored"
        )
    try:
        return np.asarray(decode(data))
    except Exception as exc:  # a codec error names nothing of the patient
        raise CannotDecode(f"this frame does not decode ({type(exc).__name__})") from None


def frame_array(ds: Dataset, number: int) -> np.ndarray:
    """Frame ``number`` decoded to an array (rows, columns[, samples])."""
    count = frame_count(ds)
    if not 1 <= number <= count:
        raise NodeUsageError(f"frame numbers run from 1 to {count}")
    try:
        return np.asarray(pixel_array(ds, index=number - 1 if count > 1 else None))
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError):
        syntax = transfer_syntax(ds)
        if not syntax.is_encapsulated:
            raise CannotDecode("this frame's pixel description is inconsistent") from None
        data, _ = stored_frame(ds, number)
        return _imagecodecs_decode(syntax, data)


def decoded_frame(ds: Dataset, number: int) -> bytes:
    """Frame ``number`` uncompressed, little endian, as Explicit VR Little Endian would hold it."""
    array = frame_array(ds, number)
    bits = int(ds.get("BitsAllocated", 8))
    dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation', 0)) else 'u'}{max(1, bits // 8)}")
    return np.ascontiguousarray(array.astype(dtype, copy=False)).tobytes()


def _first_number(value: object) -> float | None:
    """The first of a possibly multi-valued number (Window Center may list several windows)."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _to_8bit(ds: Dataset, array: np.ndarray) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        colour = apply_color_lut(array, ds)
        return (colour >> 8).astype(np.uint8) if colour.dtype.itemsize > 1 else colour.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 3:  # RGB (YBR is converted by the decoder)
        return np.clip(array, 0, 255).astype(np.uint8) if array.dtype != np.uint8 else array
    values = apply_modality_lut(array, ds).astype(np.float64)
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is None or not width or width <= 0:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = center - width / 2, center + width / 2
    scaled = (values - low) / max(high - low, 1e-9) * 255.0
    image = np.clip(scaled, 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        image = 255 - image
    return image


def parse_viewport(text: str | None, default: int | None) -> tuple[int, int] | None:
    """``viewport=w,h`` (each 1..4096), or ``(default, default)``, or ``None`` (full size)."""
    if not text:
        return (default, default) if default else None
    parts = text.split(",")
    if len(parts) not in (2, 4) or not all(p.strip().isdigit() and len(p.strip()) <= 5 for p in parts[:2]):
        raise NodeUsageError("viewport is width,height in pixels")
    width, height = int(parts[0]), int(parts[1])
    if not (1 <= width <= MAX_VIEWPORT and 1 <= height <= MAX_VIEWPORT):
        raise NodeUsageError(f"viewport sides run from 1 to {MAX_VIEWPORT}")
    return width, height


def render(
    ds: Dataset, number: int, media_type: str, viewport: tuple[int, int] | None, quality: int = 90
) -> bytes:
    """Frame ``number`` as ``image/jpeg`` or ``image/png``, fitted into ``viewport`` if given."""
    from PIL import Image

    image = Image.fromarray(_to_8bit(ds, frame_array(ds, number)))
    if viewport is not None:
        image.thumbnail(viewport)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            out, format="JPEG", quality=quality
        )
    return out.getvalue()
