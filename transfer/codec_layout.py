"""Find where Pixel Data (7FE0,0010) sits in the raw bytes of a DICOM Part 10 file.

The codec needs the exact byte offset and length of the pixel value in the original bytes, plus
the few attributes that describe the pixel matrix. pydicom could give them, but a walk over the
top-level elements is a few dozen lines, allocates nothing, and never "repairs" what it reads.

This module never raises on bad input: whatever stops the walk (not DICOM, truncated, a
transfer syntax we do not know, encapsulated pixels, ...) is recorded in :attr:`Layout.problem`,
and the codec then falls back to whole-file compression, which is right for any bytes.
A mistake here can cost compression ratio but never exactness: the codec cuts and splices the
bytes at whatever offsets this returns and checks the SHA-256 of the result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TS_IMPLICIT_LE = "1.2.840.10008.1.2"
TS_EXPLICIT_LE = "1.2.840.10008.1.2.1"
TS_EXPLICIT_BE = "1.2.840.10008.1.2.2"
TS_DEFLATED_LE = "1.2.840.10008.1.2.1.99"
NATIVE_LE_SYNTAXES = frozenset({TS_IMPLICIT_LE, TS_EXPLICIT_LE})

ENCAPSULATED = "encapsulated (compressed) pixel data"
NOT_PART10 = "not a DICOM Part 10 file (no DICM prefix)"
DEFLATED = "deflated data set"

_PREAMBLE_BYTES = 128
_UNDEFINED_LENGTH = 0xFFFFFFFF
_MAX_DEPTH = 32
# Every element costs at least 8 bytes, so the walk ends anyway; this only keeps a hostile
# header of millions of empty elements from taking minutes of Python.
_MAX_ELEMENTS = 200_000

_TAG_PIXEL_DATA = 0x7FE00010
_TAG_ITEM = 0xFFFEE000
_TAG_ITEM_END = 0xFFFEE00D
_TAG_SEQUENCE_END = 0xFFFEE0DD
_TAG_TRANSFER_SYNTAX = 0x00020010

# Explicit VR encodings whose length field is 4 bytes (after 2 reserved bytes).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)

_ALL_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH"}
    | {b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)

# Top-level attributes the codec reads: tag -> field name. Unsigned shorts unless noted.
_US_TAGS = {
    0x00280002: "samples_per_pixel",
    0x00280006: "planar_configuration",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280101: "bits_stored",
    0x00280103: "pixel_representation",
}
_TEXT_TAGS = {0x00080060: "modality", 0x00280004: "photometric", 0x00280008: "frames"}


@dataclass(frozen=True)
class Layout:
    """What the walk found; ``problem`` is empty when Pixel Data was located with a defined length.

    ``damaged`` is set when the bytes are not a well-formed Part 10 file (no prefix, truncated,
    malformed), as opposed to a sound file the image codec does not handle.

    Integer attributes are 0 and text attributes "" when absent; ``pixel_offset`` is -1 when no
    top-level Pixel Data element was reached.
    """

    transfer_syntax: str = ""
    pixel_offset: int = -1
    pixel_length: int = 0
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    planar_configuration: int = 0
    photometric: str = ""
    modality: str = ""
    problem: str = ""
    damaged: bool = False

    @property
    def is_dicom(self) -> bool:
        """True when the file has the Part 10 prefix and a readable file meta group."""
        return bool(self.transfer_syntax)


class _Stop(Exception):
    """Internal: the walk cannot go on; the message becomes ``Layout.problem``.

    ``damaged`` tells a broken file (truncated, malformed) from a sound one the image codec
    just does not handle (deflated, encapsulated, no pixels).
    """

    def __init__(self, message: str, *, damaged: bool = True) -> None:
        super().__init__(message)
        self.damaged = damaged


@dataclass
class _Walk:
    data: memoryview
    little: bool
    explicit: bool
    elements: int = 0

    def header(self, pos: int, explicit: bool, little: bool) -> tuple[int, bytes, int, int]:
        """Read one element header at ``pos``: (tag, vr, value length, value offset)."""
        self.elements += 1
        if self.elements > _MAX_ELEMENTS:
            raise _Stop("too many elements")
        end = len(self.data)
        if pos + 8 > end:
            raise _Stop(f"truncated element header at byte {pos}")
        order = "<" if little else ">"
        group, elem = struct.unpack_from(order + "HH", self.data, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE or not explicit:
            (length,) = struct.unpack_from(order + "I", self.data, pos + 4)
            return tag, b"", length, pos + 8
        vr = bytes(self.data[pos + 4 : pos + 6])
        if not (vr.isalpha() and vr.isupper()):
            raise _Stop(f"invalid VR at byte {pos}")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _Stop(f"truncated element header at byte {pos}")
            (length,) = struct.unpack_from(order + "I", self.data, pos + 8)
            return tag, vr, length, pos + 12
        (length,) = struct.unpack_from(order + "H", self.data, pos + 6)
        return tag, vr, length, pos + 8

    def skip_value(self, start: int, length: int) -> int:
        """Return the offset after a defined-length value, refusing one past the end."""
        if start + length > len(self.data):
            raise _Stop(f"value at byte {start} runs past the end of the file")
        return start + length

    def skip_undefined(self, pos: int, explicit: bool, little: bool, depth: int) -> int:
        """Skip the items of an undefined-length value; return the offset after its delimiter."""
        if depth > _MAX_DEPTH:
            raise _Stop("sequences nested too deeply")
        while True:
            tag, _vr, length, start = self.header(pos, explicit, little)
            if tag == _TAG_SEQUENCE_END:
                return start
            if tag != _TAG_ITEM:
                raise _Stop(f"unexpected tag {tag:08X} in a sequence at byte {pos}")
            if length != _UNDEFINED_LENGTH:
                pos = self.skip_value(start, length)
            else:
                pos = self.skip_item(start, explicit, little, depth + 1)

    def skip_item(self, pos: int, explicit: bool, little: bool, depth: int) -> int:
        """Skip the elements of an undefined-length item; return the offset after its delimiter."""
        while True:
            tag, vr, length, start = self.header(pos, explicit, little)
            if tag == _TAG_ITEM_END:
                return start
            pos = self.skip_element(tag, vr, length, start, explicit, little, depth)

    def skip_element(
        self, tag: int, vr: bytes, length: int, start: int, explicit: bool, little: bool, depth: int
    ) -> int:
        """Return the offset after one element whose header has been read."""
        if length != _UNDEFINED_LENGTH:
            return self.skip_value(start, length)
        # An undefined-length UN holds implicit VR little endian data (PS3.5 6.2.2).
        if vr == b"UN":
            explicit, little = False, True
        return self.skip_undefined(start, explicit, little, depth + 1)


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").strip(" \x00")


def _read_meta(walk: _Walk) -> tuple[str, int]:
    """Parse the file meta group (explicit VR little endian); return (transfer syntax, end)."""
    pos = _PREAMBLE_BYTES + 4
    syntax = ""
    while pos + 8 <= len(walk.data):
        (group,) = struct.unpack_from("<H", walk.data, pos)
        if group != 0x0002:
            break
        tag, _vr, length, start = walk.header(pos, True, True)
        if length == _UNDEFINED_LENGTH:
            raise _Stop("undefined length in the file meta group")
        pos = walk.skip_value(start, length)
        if tag == _TAG_TRANSFER_SYNTAX:
            syntax = _text(bytes(walk.data[start:pos]))
    if not syntax:
        raise _Stop("no transfer syntax in the file meta group")
    return syntax, pos


def _encoding(syntax: str) -> tuple[bool, bool]:
    """(explicit, little) for the data set; unknown syntaxes are explicit LE by the standard."""
    if syntax == TS_IMPLICIT_LE:
        return False, True
    if syntax == TS_EXPLICIT_BE:
        return True, False
    return True, True


def _sniff_explicit(walk: _Walk, pos: int, explicit: bool) -> bool:
    """Some writers encode the data set in the other VR mode than the syntax says; look at the
    first element the way pydicom does, so such files still get the image codec."""
    vr = bytes(walk.data[pos + 4 : pos + 6])
    if len(vr) < 2:
        return explicit
    return vr in _ALL_VRS


def _walk_dataset(walk: _Walk, pos: int, ints: dict[str, int], texts: dict[str, str]) -> None:
    """Walk the top-level elements up to Pixel Data, filling ``ints`` and ``texts``."""
    order = "<" if walk.little else ">"
    while pos < len(walk.data):
        tag, vr, length, start = walk.header(pos, walk.explicit, walk.little)
        if tag == _TAG_PIXEL_DATA:
            if length == _UNDEFINED_LENGTH:
                raise _Stop(ENCAPSULATED, damaged=False)
            walk.skip_value(start, length)
            ints["pixel_offset"] = start
            ints["pixel_length"] = length
            return
        if tag >> 16 == 0xFFFE:
            raise _Stop(f"item tag at top level at byte {pos}")
        pos = walk.skip_element(tag, vr, length, start, walk.explicit, walk.little, 0)
        if tag in _US_TAGS and length >= 2:
            ints[_US_TAGS[tag]] = struct.unpack_from(order + "H", walk.data, start)[0]
        elif tag in _TEXT_TAGS and length != _UNDEFINED_LENGTH:
            texts[_TEXT_TAGS[tag]] = _text(bytes(walk.data[start:pos]))
    raise _Stop("no Pixel Data element", damaged=False)


def _frames(text: str) -> int:
    """NumberOfFrames is an IS string; absent means one frame, unreadable means unknown (0)."""
    if not text:
        return 1
    first = text.split("\\")[0].strip()
    return int(first) if first.isdigit() and len(first) < 10 else 0


def parse_layout(data: bytes | memoryview) -> Layout:
    """Walk ``data`` as a DICOM Part 10 file and report where its pixel value is.

    Never raises for malformed input; see :attr:`Layout.problem`.
    """
    view = memoryview(data).cast("B")
    if len(view) < _PREAMBLE_BYTES + 4 or bytes(view[_PREAMBLE_BYTES : _PREAMBLE_BYTES + 4]) != b"DICM":
        return Layout(problem=NOT_PART10, damaged=True)
    walk = _Walk(view, little=True, explicit=True)
    ints: dict[str, int] = {}
    texts: dict[str, str] = {}
    problem = ""
    damaged = False
    try:
        syntax, pos = _read_meta(walk)
        texts["transfer_syntax"] = syntax
        if syntax == TS_DEFLATED_LE:
            raise _Stop(DEFLATED, damaged=False)
        walk.explicit, walk.little = _encoding(syntax)
        walk.explicit = _sniff_explicit(walk, pos, walk.explicit)
        _walk_dataset(walk, pos, ints, texts)
    except _Stop as stop:
        problem, damaged = str(stop), stop.damaged
    return Layout(
        transfer_syntax=texts.get("transfer_syntax", ""),
        pixel_offset=-1 if problem else ints.get("pixel_offset", -1),
        pixel_length=0 if problem else ints.get("pixel_length", 0),
        rows=ints.get("rows", 0),
        columns=ints.get("columns", 0),
        frames=_frames(texts.get("frames", "")),
        samples_per_pixel=ints.get("samples_per_pixel", 1),
        bits_allocated=ints.get("bits_allocated", 0),
        bits_stored=ints.get("bits_stored", 0),
        pixel_representation=ints.get("pixel_representation", 0),
        planar_configuration=ints.get("planar_configuration", 0),
        photometric=texts.get("photometric", ""),
        modality=texts.get("modality", ""),
        problem=problem,
        damaged=damaged,
    )
