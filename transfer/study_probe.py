"""Recognise a DICOM file and check it is whole, without loading it.

:func:`probe_dicom` walks the element headers of a file-like object and seeks over the values,
so a 2 GB multi-frame costs a few hundred small reads and no memory. The walk must end exactly at
the end of the file: that is how a truncated file (cut anywhere, even inside Pixel Data) is told
from a whole one, which pydicom cannot do (it reads short values without complaint).

Three outcomes:

* a :class:`DicomProbe` describing a file we can transfer (its UIDs, transfer syntax, whether it
  has pixel data, and notes such as "unknown transfer syntax");
* :class:`NotDicomError`: the bytes are not DICOM at all (the caller may treat them as an
  attachment, a PDF or an STL);
* :class:`TransferInputError`: the bytes are DICOM but broken (truncated, malformed).

A file without the 128-byte preamble and ``DICM`` prefix is accepted when its bytes walk as a
strictly well-formed data set (tags ascending, known VRs, ending at the end of the file) that
holds a SOP Class and SOP Instance UID; :func:`part10_prefix` gives the bytes to put in front of it
to make a Part 10 file, its data set bytes left untouched.

Pure: reads only the file object it is given; no paths, network or clock.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydicom.uid import AllTransferSyntaxes

from .errors import TransferInputError

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "TS_DEFLATED_LE",
    "TS_EXPLICIT_BE",
    "TS_EXPLICIT_LE",
    "TS_IMPLICIT_LE",
    "DicomProbe",
    "NotDicomError",
    "ProbeLimits",
    "part10_prefix",
    "probe_dicom",
]

TS_IMPLICIT_LE = "1.2.840.10008.1.2"
TS_EXPLICIT_LE = "1.2.840.10008.1.2.1"
TS_EXPLICIT_BE = "1.2.840.10008.1.2.2"
TS_DEFLATED_LE = "1.2.840.10008.1.2.1.99"
_TS_JPIP_DEFLATE = "1.2.840.10008.1.2.4.95"
_KNOWN_SYNTAXES = frozenset(AllTransferSyntaxes) | {"1.2.840.10008.1.2.4.94", _TS_JPIP_DEFLATE}
_DEFLATED = frozenset({TS_DEFLATED_LE, _TS_JPIP_DEFLATE})

IMPLEMENTATION_CLASS_UID = "2.25.256054093700304536464152359344015446485"
"""Written in the File Meta Information of files MFTP wraps (a UUID-derived UID, PS3.5 B.2)."""
_IMPLEMENTATION_VERSION = b"MFTP_01 "

_PREAMBLE_BYTES = 128
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_WINDOW_BYTES = 64 << 10
_INFLATE_CHUNK_BYTES = 256 << 10

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
_ALL_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN"}
    | {b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)

# Top-level attributes the probe reads (all short strings).
_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00080060: "modality",
    0x00280301: "burned_in_annotation",
}
_META_WANTED = {0x00020002: "sop_class_uid", 0x00020003: "sop_instance_uid", 0x00020010: "ts"}
_MAX_WANTED_BYTES = 256


class NotDicomError(TransferInputError):
    """The bytes are not DICOM at all (as opposed to DICOM that is damaged)."""


@dataclass(frozen=True)
class ProbeLimits:
    """Bounds on the work a hostile file can cause."""

    max_elements: int = 500_000
    max_depth: int = 32
    max_meta_bytes: int = 64 << 10
    max_inflated_bytes: int = 4 << 30
    """A deflated data set is inflated (streaming, not kept) to check it is whole."""


@dataclass(frozen=True)
class DicomProbe:
    """What :func:`probe_dicom` learnt about one DICOM file. Empty strings mean "absent"."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    has_pixel_data: bool
    has_part10_header: bool
    """False for a bare data set: :func:`part10_prefix` makes it a Part 10 file."""
    has_meta_group: bool
    """True when File Meta Information (group 0002) is present, with or without the preamble."""
    notes: tuple[str, ...] = ()
    burned_in_annotation: str = ""
    """Burned In Annotation (0028,0301) as written: "YES" means the pixels may show identity."""


class _Broken(Exception):
    """The walk met bytes that are not a well-formed data set."""


class _Truncated(_Broken):
    """The walk ran past the end of the bytes."""


class _Encoding:
    """How a data set is encoded, with the structs that decode its element headers."""

    def __init__(self, *, explicit: bool, little: bool) -> None:
        self.explicit = explicit
        self.little = little
        order = "<" if little else ">"
        self.tag_length = struct.Struct(order + "HHI")  # implicit VR, items, delimiters
        self.tag_vr_length = struct.Struct(order + "HH2sH")  # explicit VR, short length
        self.long_length = struct.Struct(order + "I")


IMPLICIT_LE = _Encoding(explicit=False, little=True)
EXPLICIT_LE = _Encoding(explicit=True, little=True)
EXPLICIT_BE = _Encoding(explicit=True, little=False)


class _Window:
    """Random access to a file object through one cached window, so small reads stay cheap."""

    def __init__(self, fp: BinaryIO, size_bytes: int, base: int = 0) -> None:
        self._fp = fp
        self.size = size_bytes
        self._base = base
        self._start = 0
        self._data = b""

    def read(self, pos: int, n: int) -> bytes:
        end = pos + n
        if not (self._start <= pos and end <= self._start + len(self._data)):
            self._fp.seek(self._base + pos)
            self._data = self._fp.read(max(n, _WINDOW_BYTES))
            self._start = pos
        return self._data[pos - self._start : end - self._start]

    def unpack(self, fmt: struct.Struct, pos: int) -> tuple[Any, ...] | None:
        """``fmt`` decoded at ``pos`` without copying, or None if the bytes end first."""
        offset = pos - self._start
        if offset < 0 or offset + fmt.size > len(self._data):
            if len(self.read(pos, fmt.size)) < fmt.size:
                return None
            offset = 0
        return fmt.unpack_from(self._data, offset)


@dataclass
class _Walk:
    """State of one walk over a data set."""

    src: _Window
    limits: ProbeLimits
    strict: bool = False
    """Bare data sets: require ascending tags and known VRs, so random bytes rarely pass."""
    partial: bool = False
    """Stop quietly at the end of the bytes (a window on an inflated stream)."""
    elements: int = 0
    found: dict[str, str] = field(default_factory=dict)
    has_pixel_data: bool = False

    def header(self, fmt: struct.Struct, pos: int) -> tuple[Any, ...]:
        values = self.src.unpack(fmt, pos)
        if values is None:
            raise _Truncated(f"file ends inside an element header at byte {pos}")
        return values

    def count(self) -> None:
        self.elements += 1
        if self.elements > self.limits.max_elements:
            raise _Broken(f"more than {self.limits.max_elements} data elements")


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _walk_dataset(walk: _Walk, pos: int, end: int | None, enc: _Encoding, depth: int) -> int:
    """Walk elements from ``pos`` to ``end``, or up to an item delimiter when ``end`` is None."""
    if depth > walk.limits.max_depth:
        raise _Broken(f"sequences nested deeper than {walk.limits.max_depth}")
    previous = -1
    limit = walk.src.size if end is None else end
    while True:
        if end is not None and pos >= end:
            if pos > end:
                raise _Broken(f"element overruns its item at byte {pos}")
            return pos
        if walk.partial and pos + 8 > walk.src.size:
            return pos
        walk.count()
        group, elem, length = walk.header(enc.tag_length, pos)
        tag = group << 16 | elem
        if tag == _ITEM_END:
            if end is None:
                return pos + 8
            raise _Broken(f"unexpected item delimiter at byte {pos}")
        if walk.strict and tag <= previous:
            raise _Broken(f"tags out of order at byte {pos}")
        previous = tag
        vr, value_pos = b"", pos + 8
        if enc.explicit and group != 0xFFFE:
            vr, length, value_pos = _explicit_header(walk, pos, enc)
        if depth == 0 and tag == _PIXEL_DATA:
            walk.has_pixel_data = True
        if length == _UNDEFINED:
            inner = IMPLICIT_LE if vr == b"UN" else enc  # PS3.5 6.2.2: UN of undefined length
            pos = _walk_items(walk, value_pos, inner, depth + 1, tag)
            continue
        if value_pos + length > limit:
            if walk.partial:
                return pos
            raise _Truncated(f"file ends inside element {_tag_text(tag)} (value of {length} bytes)")
        if depth == 0 and tag in _WANTED and length <= _MAX_WANTED_BYTES:
            walk.found[_WANTED[tag]] = _text(walk.src.read(value_pos, length))
        pos = value_pos + length


def _explicit_header(walk: _Walk, pos: int, enc: _Encoding) -> tuple[bytes, int, int]:
    """(VR, value length, value position) of the explicit VR element at ``pos``."""
    _group, _elem, vr, length = walk.header(enc.tag_vr_length, pos)
    if vr in _LONG_VRS:
        return vr, walk.header(enc.long_length, pos + 8)[0], pos + 12
    # A VR newer than this code is tolerated in files with a header, not in bare data sets.
    if vr not in _ALL_VRS and (walk.strict or not (vr.isalpha() and vr.isupper())):
        raise _Broken(f"invalid VR {vr!r} at byte {pos}")
    return vr, length, pos + 8


def _walk_items(walk: _Walk, pos: int, enc: _Encoding, depth: int, owner: int) -> int:
    """Walk the items of an undefined-length sequence or encapsulated Pixel Data."""
    while True:
        if walk.partial and pos + 8 > walk.src.size:
            return walk.src.size
        walk.count()
        group, elem, length = walk.header(enc.tag_length, pos)
        tag = group << 16 | elem
        if tag == _SEQUENCE_END:
            return pos + 8
        if tag != _ITEM:
            raise _Broken(f"expected an item in {_tag_text(owner)} at byte {pos}, found {_tag_text(tag)}")
        if length == _UNDEFINED:
            pos = _walk_dataset(walk, pos + 8, None, enc, depth)
            continue
        if pos + 8 + length > walk.src.size:
            if walk.partial:
                return walk.src.size
            raise _Truncated(f"file ends inside an item of {_tag_text(owner)}")
        pos += 8 + length


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def _read_meta(src: _Window, pos: int, limits: ProbeLimits) -> tuple[dict[str, str], int]:
    """Walk the File Meta Information (explicit VR little endian, group 0002) from ``pos``."""
    found: dict[str, str] = {}
    start = pos
    enc = EXPLICIT_LE
    while pos + 8 <= src.size:
        group, elem, vr, length = src.unpack(enc.tag_vr_length, pos) or (0, 0, b"", 0)
        if group != 0x0002:
            break
        if pos - start > limits.max_meta_bytes:
            raise TransferInputError(f"File Meta Information larger than {limits.max_meta_bytes} bytes")
        if vr in _LONG_VRS:
            (length,) = src.unpack(enc.long_length, pos + 8) or (_UNDEFINED,)
            value_pos = pos + 12
        elif vr in _ALL_VRS:
            value_pos = pos + 8
        else:
            raise TransferInputError(f"invalid VR {vr!r} in File Meta Information")
        if length == _UNDEFINED or value_pos + length > src.size:
            raise TransferInputError("File Meta Information is truncated or malformed")
        tag = group << 16 | elem
        if tag in _META_WANTED and length <= _MAX_WANTED_BYTES:
            found[_META_WANTED[tag]] = _text(src.read(value_pos, length))
        pos = value_pos + length
    return found, pos


def _encoding_for(ts: str) -> _Encoding:
    if ts == TS_IMPLICIT_LE:
        return IMPLICIT_LE
    if ts == TS_EXPLICIT_BE:
        return EXPLICIT_BE
    return EXPLICIT_LE  # every other transfer syntax encodes the data set explicit VR little endian


def probe_dicom(fp: BinaryIO, size_bytes: int, *, name: str, limits: ProbeLimits | None = None) -> DicomProbe:
    """Recognise and check the DICOM file in ``fp`` (``size_bytes`` long, read from its start).

    Raises :class:`NotDicomError` when the bytes are not DICOM, :class:`TransferInputError`
    (naming ``name``) when they are DICOM but truncated or malformed.
    """
    limits = limits or ProbeLimits()
    src = _Window(fp, size_bytes)
    head = src.read(0, _PREAMBLE_BYTES + 4)
    if len(head) == _PREAMBLE_BYTES + 4 and head[_PREAMBLE_BYTES:] == b"DICM":
        try:
            return _probe_part10(src, limits)
        except TransferInputError as exc:
            raise TransferInputError(str(exc), name=name) from None
    try:
        return _probe_bare(src, limits)
    except _Broken:
        raise NotDicomError("not DICOM (no DICM prefix, and not a well-formed data set)", name=name) from None


def _probe_part10(src: _Window, limits: ProbeLimits) -> DicomProbe:
    meta, pos = _read_meta(src, _PREAMBLE_BYTES + 4, limits)
    ts = meta.get("ts", "")
    notes: list[str] = []
    if not ts:
        raise TransferInputError("File Meta Information has no Transfer Syntax UID")
    if ts in _DEFLATED:
        walk = _inflate_and_walk(src, pos, limits)
    else:
        if ts not in _KNOWN_SYNTAXES:
            notes.append(f"unknown transfer syntax {ts}")
        walk = _walk_part10_dataset(src, pos, ts, limits, notes)
    return _finish(walk, meta, ts, notes, part10=True, meta_group=True)


def _walk_part10_dataset(src: _Window, pos: int, ts: str, limits: ProbeLimits, notes: list[str]) -> _Walk:
    """Walk as the transfer syntax says; like pydicom, fall back to implicit VR if that fails."""
    walk = _Walk(src, limits)
    try:
        _walk_dataset(walk, pos, src.size, _encoding_for(ts), 0)
        return walk
    except _Truncated as exc:
        raise TransferInputError(f"truncated: {exc}") from None
    except _Broken as exc:
        first_error = exc
    if _encoding_for(ts) is EXPLICIT_LE:
        retry = _Walk(src, limits)
        try:
            _walk_dataset(retry, pos, src.size, IMPLICIT_LE, 0)
            notes.append("data set is implicit VR although its transfer syntax says explicit")
            return retry
        except _Broken:
            pass
    if ts not in _KNOWN_SYNTAXES and walk.found.get("study_instance_uid"):
        # Transferred untouched: the receiving PACS judges a syntax we do not know.
        notes.append(f"data set not verified: {first_error}")
        return walk
    raise TransferInputError(f"malformed data set: {first_error}")


def _inflate_and_walk(src: _Window, pos: int, limits: ProbeLimits) -> _Walk:
    """Inflate a deflated data set in chunks: walk its start for the UIDs, check the stream is whole."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = bytearray()
    total = 0
    try:
        while not inflater.eof:
            chunk = src.read(pos, _INFLATE_CHUNK_BYTES)
            if not chunk:
                raise TransferInputError("truncated: deflated data set ends early")
            pos += len(chunk)
            out = inflater.decompress(chunk, _INFLATE_CHUNK_BYTES)
            while True:
                total += len(out)
                if total > limits.max_inflated_bytes:
                    raise TransferInputError(
                        f"deflated data set inflates past {limits.max_inflated_bytes} bytes"
                    )
                if len(head) < _WINDOW_BYTES:
                    head += out[: _WINDOW_BYTES - len(head)]
                if inflater.eof or not inflater.unconsumed_tail:
                    break
                out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK_BYTES)
    except zlib.error as exc:
        raise TransferInputError(f"deflated data set is corrupt: {exc}") from None
    # Only the first window is walked (for the UIDs) unless the whole data set fits in it.
    walk = _Walk(_Window(io.BytesIO(head), len(head)), limits, partial=total > len(head))
    try:
        _walk_dataset(walk, 0, len(head), EXPLICIT_LE, 0)
    except _Broken as exc:
        raise TransferInputError(f"malformed deflated data set: {exc}") from None
    return walk


def _probe_bare(src: _Window, limits: ProbeLimits) -> DicomProbe:
    """A data set without preamble: accept only a strict, complete walk with the SOP UIDs."""
    head = src.read(0, 8)
    if len(head) < 8:
        raise _Broken("too short")
    meta: dict[str, str] = {}
    pos = 0
    has_meta = head[:2] == b"\x02\x00"
    if has_meta:
        try:
            meta, pos = _read_meta(src, 0, limits)
        except TransferInputError as exc:
            raise _Broken(str(exc)) from None
        encodings = [_encoding_for(meta.get("ts", TS_IMPLICIT_LE))]
    elif head[:2] == b"\x00\x08":
        encodings = [EXPLICIT_BE]
    else:
        encodings = [EXPLICIT_LE, IMPLICIT_LE] if head[4:6] in _ALL_VRS else [IMPLICIT_LE]
    for enc in encodings:
        walk = _Walk(src, limits, strict=True)
        try:
            _walk_dataset(walk, pos, src.size, enc, 0)
        except _Broken:
            continue
        if walk.found.get("sop_class_uid") and walk.found.get("sop_instance_uid"):
            ts = meta.get("ts") or _syntax_of(enc)
            return _finish(walk, meta, ts, [], part10=False, meta_group=has_meta)
    raise _Broken("no encoding walks the whole file")


def _syntax_of(enc: _Encoding) -> str:
    if not enc.explicit:
        return TS_IMPLICIT_LE
    return TS_EXPLICIT_LE if enc.little else TS_EXPLICIT_BE


def _finish(
    walk: _Walk, meta: dict[str, str], ts: str, notes: list[str], *, part10: bool, meta_group: bool
) -> DicomProbe:
    found = walk.found
    sop_class = found.get("sop_class_uid") or meta.get("sop_class_uid", "")
    sop_instance = found.get("sop_instance_uid") or meta.get("sop_instance_uid", "")
    meta_instance = meta.get("sop_instance_uid", "")
    if meta_instance and found.get("sop_instance_uid", meta_instance) != meta_instance:
        notes.append("SOP Instance UID differs between File Meta Information and data set")
    if not walk.has_pixel_data:
        notes.append("no pixel data")
    return DicomProbe(
        transfer_syntax_uid=ts,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=found.get("study_instance_uid", ""),
        series_instance_uid=found.get("series_instance_uid", ""),
        modality=found.get("modality", ""),
        has_pixel_data=walk.has_pixel_data,
        has_part10_header=part10,
        has_meta_group=meta_group,
        notes=tuple(notes),
        burned_in_annotation=found.get("burned_in_annotation", ""),
    )


def _meta_element(tag_elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    head = struct.pack("<HH", 0x0002, tag_elem) + vr
    if vr in _LONG_VRS:
        return head + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def part10_prefix(probe: DicomProbe) -> bytes:
    """Bytes to write before a bare data set so that it becomes a Part 10 file.

    When the data set already starts with File Meta Information, only the preamble and ``DICM``
    are added; otherwise a File Meta Information group is built from the probed UIDs.
    """
    preamble = b"\x00" * _PREAMBLE_BYTES + b"DICM"
    if probe.has_part10_header:
        return b""
    if probe.has_meta_group:
        return preamble
    body = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", probe.sop_class_uid.encode("ascii")),
            _meta_element(0x0003, b"UI", probe.sop_instance_uid.encode("ascii")),
            _meta_element(0x0010, b"UI", probe.transfer_syntax_uid.encode("ascii")),
            _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _meta_element(0x0013, b"SH", _IMPLEMENTATION_VERSION),
        ]
    )
    return preamble + _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body
