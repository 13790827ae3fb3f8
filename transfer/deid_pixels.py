"""Burned-in text in the pixels: which images may carry it, and cleaning them (Clean Pixel Data).

Table E.1-1 cleans attributes; a name written into the pixels by an ultrasound scanner or a
screen capture passes it untouched. :mod:`mftp.transfer.deid` calls :func:`examine` on every
image in the de-identifying modes: an image whose kind can carry burned-in text is cleaned
(``Policy.burned_in == "clean"``) or refused by name (``"refuse"``); an image that must be cleaned
but cannot be examined is refused by name with the reason, and the rest of the study goes on.

Which images are examined (:func:`text_risks`; each rule says where it comes from)
    * Burned In Annotation (0028,0301) YES and Recognizable Visual Features (0028,0302) YES: the
      modality's own statement (PS3.3 C.7.6.1, General Image Module).
    * Modality US, SC, OT, XC, ES, GM, OP, IO, DOC: ultrasound, secondary capture, "other",
      external-camera photography, endoscopy, microscopy, ophthalmic and intra-oral photography,
      document scans (PS3.3 C.7.3.1.1.1 defined terms). Their pixels are made by devices that
      write patient demographics on the screen they capture; PS3.15 E.3.1 (Clean Pixel Data
      Option) names ultrasound and secondary capture as typical, and RSNA CTP's pixel anonymizer
      library ("Burned-in Annotation Library") is mostly ultrasound and screen captures.
    * SOP Classes of the same kinds, whatever Modality says: Ultrasound (single and multi-frame,
      retired ones too), every Secondary Capture class, the VL (visible light) photographic,
      endoscopic, microscopic and video classes, ophthalmic photography (PS3.4 B.5 list).
    * Screen saves stored under another modality's SOP class ("secondary captures of any
      modality"): an Image Type value SCREEN SAVE, SCREENSHOT or SCREEN SHOT (GE and Siemens dose
      reports and workstation captures in CTP's library), or a Series Description naming a dose
      report or a screen capture. Image Type SECONDARY alone is not enough: reformats and maps
      are SECONDARY too (PS3.3 C.7.6.1.1.2) and carry no captured screen.
    * Multi-frame cine: X-ray angiography and fluoroscopy classes, and any other image with
      more than one frame and a Frame Time or Cine Rate (cine loops are recorded from a screen).
    * Vendors' private flags: Siemens ultrasound (private creator "SIEMENS MED SMS USG ANTARES"
      or "SIEMENS MED SMS USG S2000") element (0019,xx0C) "Burned in Graphics" non-zero (pydicom's
      private dictionary). This is the flag of the image reported in issue 14, which had no Burned
      In Annotation at all. A Burned In Annotation NO does not exempt the kinds above: a wrong NO
      would cost a disclosure, examining costs only time.

How an image is cleaned (:func:`clean`)
    Frames are decoded (native and RLE by pydicom, the JPEG family by imagecodecs), each frame
    examined with the model-free detector of :mod:`mftp.transfer.pixels_text` and, when the
    caller gives one, an OCR :class:`~mftp.transfer.pixels_text.TextFinder`; the union of their
    boxes, grown by a margin, is blanked, together with any fixed regions documented for the
    scanner (:data:`FIXED_REGIONS`). OCR reads at most :data:`OCR_MAX_FRAMES` frames of a cine
    loop, spread over it (the detector reads them all): a loop's annotation is fixed or changes
    slowly, and OCR costs about 0.3 s per frame. Blanked pixels take the darkest value of the
    image's colour model. The result is stored uncompressed (Explicit VR Little Endian), which is
    lossless; colour decoded from JPEG or from YBR_RCT/YBR_ICT JPEG 2000 becomes RGB, native
    YBR_FULL_422 becomes YBR_FULL (each chroma value is repeated, nothing is lost). A source that
    was lossy stays marked lossy (Lossy Image Compression 01, with method and ratio). Burned In
    Annotation becomes NO only here, when the node cleaned the pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pydicom.uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, convert_color_space

from .errors import TransferInputError
from .pixels_text import Box, TextFinder, detect_text, mask_of, text_view, to_8bit

BurnedInChoice = Literal["clean", "refuse"]
BURNED_IN_CHOICES: tuple[str, ...] = ("clean", "refuse")
OCR_MAX_FRAMES = 8
MAX_EXAMINED_PIXELS = 512 * 1024 * 1024
"""Images with more samples than this are refused rather than decoded whole into memory."""

# --------------------------------------------------------------------------- which images

_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "OP", "IO", "DOC"})
_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.2": "ultrasound",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.6": "ultrasound",  # retired
    "1.2.840.10008.5.1.4.1.1.3.1": "ultrasound cine",
    "1.2.840.10008.5.1.4.1.1.3": "ultrasound cine",  # retired
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "photograph",  # VL Endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.2": "photograph",  # VL Microscopic
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.3": "photograph",  # VL Slide-Coordinates Microscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4": "photograph",  # VL Photographic
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "photograph",  # Ophthalmic Photography 8 Bit
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "photograph",  # Ophthalmic Photography 16 Bit
    "1.2.840.10008.5.1.4.1.1.12.1": "cine",  # X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.12.1.1": "cine",  # Enhanced XA
    "1.2.840.10008.5.1.4.1.1.12.2": "cine",  # X-Ray Radiofluoroscopic
    "1.2.840.10008.5.1.4.1.1.12.2.1": "cine",  # Enhanced XRF
}
_SCREEN_TYPES = frozenset({"SCREEN SAVE", "SCREENSHOT", "SCREEN SHOT"})
_SCREEN_SERIES = ("DOSE REPORT", "SCREEN SAVE", "SCREEN CAPTURE", "SCREENSHOT")
# (private creator, element offset): vendors' own "burned in graphics" flags.
_PRIVATE_FLAGS = (
    (0x0019, "SIEMENS MED SMS USG ANTARES", 0x0C),
    (0x0019, "SIEMENS MED SMS USG S2000", 0x0C),
)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def _private_flag(ds: Dataset) -> str | None:
    for group, creator, offset in _PRIVATE_FLAGS:
        for block in range(0x10, 0x100):
            owner = ds.get((group, block))
            if owner is None or str(owner.value).strip().upper() != creator:
                continue
            flag = ds.get((group, (block << 8) | offset))
            value = flag.value if flag is not None else None
            if isinstance(value, bytes):  # read as UN, or implicit VR: the dictionary says US
                value = int.from_bytes(value[:2], "little") if len(value) >= 2 else 0
            try:
                if value is not None and int(value) != 0:
                    return f"{creator} Burned in Graphics"
            except (TypeError, ValueError):
                return f"{creator} Burned in Graphics (unreadable)"
    return None


def text_risks(ds: Dataset) -> tuple[str, ...]:
    """Why the pixels of ``ds`` may show who the patient is (empty: no known reason).

    Read before de-identification: the vendors' flags are private attributes, removed later.
    """
    reasons = []
    if _text(ds, "BurnedInAnnotation") == "YES":
        reasons.append("Burned In Annotation is YES")
    if _text(ds, "RecognizableVisualFeatures") == "YES":
        reasons.append("Recognizable Visual Features is YES")
    modality = _text(ds, "Modality")
    if modality in _MODALITIES:
        reasons.append(f"modality {modality}")
    sop_kind = _SOP_CLASSES.get(str(ds.get("SOPClassUID", "")).strip("\0 "))
    if sop_kind:
        reasons.append(f"{sop_kind} SOP class")
    image_type = {str(v).strip().upper() for v in _values(ds.get("ImageType"))}
    series = _text(ds, "SeriesDescription")
    if image_type & _SCREEN_TYPES or any(words in series for words in _SCREEN_SERIES):
        reasons.append("screen capture")
    frames = _int(ds.get("NumberOfFrames", 1))
    if frames > 1 and ("FrameTime" in ds or "CineRate" in ds or "FrameTimeVector" in ds):
        reasons.append("multi-frame cine")
    flag = _private_flag(ds)
    if flag:
        reasons.append(flag)
    return tuple(dict.fromkeys(reasons))


def _values(value: Any) -> list[Any]:
    """The values of a possibly multi-valued attribute (none for absent or empty)."""
    if value is None or isinstance(value, str | bytes):
        return [value] if value else []
    try:
        return list(value)
    except TypeError:
        return [value]


def _int(value: Any, default: int = 1) -> int:
    try:
        return int(str(value).strip() or default)
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------- fixed regions


@dataclass(frozen=True)
class FixedRegions:
    """Regions where a scanner model is documented to write identity: (left, top, width, height)."""

    manufacturer: str  # upper-case substring of Manufacturer, "" for any
    model: str  # upper-case substring of Manufacturer's Model Name
    rows: int | None
    columns: int | None
    regions: tuple[tuple[int, int, int, int], ...]

    def matches(self, ds: Dataset) -> bool:
        """Whether ``ds`` is an image of this scanner and size."""
        return (
            self.manufacturer in _text(ds, "Manufacturer")
            and self.model in _text(ds, "ManufacturerModelName")
            and self.rows in (None, _int(ds.get("Rows"), 0))
            and self.columns in (None, _int(ds.get("Columns"), 0))
        )


# Ultrasound entries of RSNA CTP's DicomPixelAnonymizer.script ("Burned-in Annotation Library",
# compiled from users' reports), as facts: scanner, image size, regions in pixels.
FIXED_REGIONS: tuple[FixedRegions, ...] = (
    FixedRegions("", "LOGIQ9", None, None, ((0, 0, 640, 40),)),
    FixedRegions("", "LOGIQE9", None, None, ((0, 0, 960, 70),)),
    FixedRegions("", "IU22", 480, None, ((0, 0, 640, 47),)),
    FixedRegions("", "IU22", 768, None, ((0, 0, 1024, 75),)),
    FixedRegions("", "IU22", 600, None, ((0, 0, 800, 59),)),
    FixedRegions("", "Z_ONE", None, None, ((0, 0, 800, 65),)),
    FixedRegions("ATL", "HDI 5000", 476, 640, ((40, 0, 200, 40), (240, 0, 190, 16))),
    FixedRegions("SIEMENS", "ANTARES", 768, 1024, ((0, 0, 1024, 60), (200, 60, 20, 20), (800, 65, 104, 14))),
    FixedRegions("SIEMENS", "ACUSON", 600, 800, ((0, 0, 800, 43), (128, 56, 16, 16))),
    FixedRegions("ACUSON", "SEQUOIA", 480, 640, ((0, 0, 640, 30),)),
    FixedRegions("TOSHIBA", "A500", 720, 960, ((0, 0, 960, 60),)),
    FixedRegions("SUPERSONIC IMAGINE", "AIXPLORER", 1050, 1400, ((0, 0, 1000, 89),)),
)


def fixed_boxes(ds: Dataset) -> list[Box]:
    """The documented regions of ``ds``'s scanner, as boxes."""
    return [
        Box(top, left, top + height, left + width)
        for entry in FIXED_REGIONS
        if entry.matches(ds)
        for left, top, width, height in entry.regions
    ]


# --------------------------------------------------------------------------- decoding

_LOSSY = {
    uids.JPEGBaseline8Bit: "ISO_10918_1",
    uids.JPEGExtended12Bit: "ISO_10918_1",
    uids.JPEGLSNearLossless: "ISO_14495_1",
    uids.JPEG2000: "ISO_15444_1",
    uids.HTJ2K: "ISO_15444_15",
}
_JPEG8 = frozenset({uids.JPEGBaseline8Bit, uids.JPEGExtended12Bit})
_LJPEG = frozenset({uids.JPEGLossless, uids.JPEGLosslessSV1})
_JPEGLS = frozenset({uids.JPEGLSLossless, uids.JPEGLSNearLossless})
_J2K = frozenset(
    {uids.JPEG2000Lossless, uids.JPEG2000, uids.HTJ2KLossless, uids.HTJ2KLosslessRPCL, uids.HTJ2K}
)


class NotExaminable(TransferInputError):
    """The pixels cannot be decoded or examined (the image is refused by name)."""


class PixelsRefused(TransferInputError):
    """An image whose pixels may show identity is not sent: the policy refuses such images, or
    they cannot be examined. ``reasons`` says why they may show identity, ``cause`` why refused."""

    def __init__(self, reasons: Sequence[str], cause: str, *, name: str | None = None) -> None:
        super().__init__(f"pixels may show identity ({'; '.join(reasons)}): {cause}", name=name)
        self.reasons = tuple(reasons)
        self.cause = cause

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled whole: the node prepares files in worker processes and reports this by name.
        return (_refused, (self.reasons, self.cause, self.name))


def _refused(reasons: tuple[str, ...], cause: str, name: str | None) -> PixelsRefused:
    return PixelsRefused(reasons, cause, name=name)


@dataclass
class _Pixels:
    frames: np.ndarray  # (frames, rows, columns[, samples]), native byte order
    photometric: str
    syntax: str


def _decode(ds: Dataset, name: str) -> _Pixels:
    meta = getattr(ds, "file_meta", None)
    syntax = uids.UID(
        str((meta.get("TransferSyntaxUID") if meta is not None else None) or uids.ExplicitVRLittleEndian)
    )
    if "PixelData" not in ds:
        kind = (
            "float pixel data"
            if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds)
            else "no pixel data"
        )
        raise NotExaminable(f"{kind} cannot be examined", name=name)
    bits = _int(ds.get("BitsAllocated"), 0)
    if bits not in (8, 16, 32):
        raise NotExaminable(f"{bits}-bit pixels cannot be examined", name=name)
    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    frames, samples = _int(ds.get("NumberOfFrames", 1)), _int(ds.get("SamplesPerPixel", 1))
    if rows * columns * frames * samples > MAX_EXAMINED_PIXELS:
        raise NotExaminable("too many pixels to examine", name=name)
    photometric = _text(ds, "PhotometricInterpretation")
    try:
        if not syntax.is_compressed or syntax == uids.RLELossless:
            ds.pixel_array_options(as_rgb=False)  # keep YBR as stored: converting would round
            array = np.asarray(ds.pixel_array)
            if photometric == "YBR_FULL_422":
                photometric = "YBR_FULL"  # pydicom gave every pixel its chroma
        else:
            array, photometric = _decode_compressed(ds, syntax, frames, photometric)
    except TransferInputError:
        raise
    except Exception as exc:  # a decoder's failure on bad input: which one is the codec's business
        raise NotExaminable(
            f"pixels could not be decoded ({syntax.name}, {type(exc).__name__})", name=name
        ) from exc
    shape = (frames, rows, columns) + ((samples,) if samples > 1 else ())
    if array.size != int(np.prod(shape)):
        raise NotExaminable(f"decoded pixels do not match Rows x Columns x frames ({syntax.name})", name=name)
    return _Pixels(array.reshape(shape), photometric, str(syntax))


def _decode_compressed(
    ds: Dataset, syntax: uids.UID, frames: int, photometric: str
) -> tuple[np.ndarray, str]:
    import imagecodecs  # only here: decoding the JPEG family

    decode: Callable[[bytes], Any]
    if syntax in _JPEG8:
        decode, photometric = (
            imagecodecs.jpeg8_decode,
            "RGB" if photometric.startswith(("YBR", "RGB")) else photometric,
        )
    elif syntax in _LJPEG:
        decode = imagecodecs.ljpeg_decode
    elif syntax in _JPEGLS:
        decode = imagecodecs.jpegls_decode
    elif syntax in _J2K:
        decode = imagecodecs.jpeg2k_decode
        if photometric in ("YBR_RCT", "YBR_ICT"):
            photometric = "RGB"  # the decoder undoes the component transform
    else:
        raise ValueError("no decoder")
    decoded = [np.asarray(decode(frame)) for frame in generate_frames(ds.PixelData, number_of_frames=frames)]
    if len(decoded) != frames:
        raise ValueError("frame count")
    return np.stack(decoded), photometric


# --------------------------------------------------------------------------- examining and blanking


@dataclass(frozen=True)
class PixelReport:
    """What was done to the pixels of one image, for the transfer's detail and the sender's report."""

    reasons: tuple[str, ...]  # why the image was examined (see text_risks)
    frames: int
    regions: int  # boxes blanked, over all frames (fixed regions included)
    blanked_share: float  # share of all pixels blanked
    ocr: bool  # whether an OCR engine read the frames as well as the detector

    @property
    def summary(self) -> str:
        """One line for an operator: what was found and blanked, and why the image was examined."""
        return (
            f"pixels cleaned: {self.regions} text region(s) blanked in {self.frames} frame(s), "
            f"{self.blanked_share:.1%} of the image ({'; '.join(self.reasons)})"
        )


def _view8(pixels: _Pixels, ds: Dataset, frame: np.ndarray) -> np.ndarray:
    bits_stored = _int(ds.get("BitsStored"), 8)
    if pixels.photometric == "PALETTE COLOR":
        return (np.asarray(apply_color_lut(frame, ds)) >> 8).astype(np.uint8)
    if pixels.photometric.startswith("YBR") and frame.ndim == 3 and frame.dtype == np.uint8:
        return np.asarray(convert_color_space(frame, "YBR_FULL", "RGB"))
    if frame.ndim == 3:
        return np.stack([to_8bit(frame[..., c], bits_stored) for c in range(frame.shape[-1])], axis=-1)
    return to_8bit(frame, bits_stored)


def _blank_value(pixels: _Pixels, ds: Dataset, frame: np.ndarray) -> Any:
    """The darkest value of the image's colour model."""
    if pixels.photometric == "PALETTE COLOR":
        present = np.unique(frame)
        rgb = np.asarray(apply_color_lut(present, ds)).reshape(len(present), -1).sum(axis=-1)
        return present[int(np.argmin(rgb))]
    if pixels.photometric.startswith("YBR") and frame.ndim == 3:
        middle = 1 << (8 * frame.dtype.itemsize - 1)
        return np.array([0, middle, middle], frame.dtype)
    if pixels.photometric == "MONOCHROME1":
        return frame.max()
    if frame.ndim == 3:
        return 0
    return frame.min()


def _ocr_frames(count: int) -> list[int]:
    if count <= OCR_MAX_FRAMES:
        return list(range(count))
    return sorted({round(i * (count - 1) / (OCR_MAX_FRAMES - 1)) for i in range(OCR_MAX_FRAMES)})


def unexaminable(ds: Dataset, name: str) -> str | None:
    """Why the pixels of ``ds`` cannot be examined, or ``None`` when they decode.

    The same decoding :func:`clean` does, run before a study is offered, so that an image the
    cleaning would refuse is named (and left out of the offer's description) up front.
    """
    try:
        _decode(ds, name)
    except NotExaminable as exc:
        return str(exc).removeprefix(f"{name}: ")
    return None


def clean(ds: Dataset, reasons: Sequence[str], finder: TextFinder | None, name: str) -> PixelReport:
    """Find and blank the text in ``ds``'s pixels, in place; store them uncompressed.

    Raises :class:`NotExaminable` (a :class:`TransferInputError` naming ``name``) when the pixels
    cannot be decoded or read.
    """
    pixels = _decode(ds, name)
    count, rows, columns = pixels.frames.shape[:3]
    views = [_view8(pixels, ds, frame) for frame in pixels.frames]
    boxes = [detect_text(view) + fixed_boxes(ds) for view in views]
    if finder is not None:
        chosen = _ocr_frames(count)
        found = finder(np.stack([text_view(views[index]) for index in chosen]))
        if len(found) != len(chosen):
            raise NotExaminable("OCR answered for the wrong number of frames", name=name)
        for index, words in zip(chosen, found, strict=True):
            boxes[index] += words
    out = pixels.frames.copy()
    blanked = 0
    for index in range(count):
        mask = mask_of(boxes[index], rows, columns)
        out[index][mask] = _blank_value(pixels, ds, pixels.frames[index])
        blanked += int(mask.sum())
    _store(ds, out, pixels)
    return PixelReport(
        tuple(reasons),
        count,
        sum(len(b) for b in boxes),
        blanked / max(1, count * rows * columns),
        finder is not None,
    )


def _store(ds: Dataset, frames: np.ndarray, pixels: _Pixels) -> None:
    """Write ``frames`` back as native little-endian pixel data, keeping any lossy mark."""
    source = uids.UID(pixels.syntax)
    if source in _LOSSY or _text(ds, "LossyImageCompression") == "01":
        original_bytes = len(ds.PixelData)
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and source in _LOSSY:
            ds.LossyImageCompressionMethod = _LOSSY[source]
        if "LossyImageCompressionRatio" not in ds and source in _LOSSY:
            ds.LossyImageCompressionRatio = f"{frames.nbytes / max(1, original_bytes):.2f}"[:16]
    data = frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if frames.dtype.itemsize == 1 else "OW"
    ds["PixelData"].is_undefined_length = False
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    ds.PhotometricInterpretation = pixels.photometric
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
