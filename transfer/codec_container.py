"""The versioned container that carries one compressed file.

Layout (all integers little endian)::

    offset  size  field
    0       4     magic b"MFTC"
    4       1     format version (1)
    5       1     method (0 stored, 1 zstd, 2 split)
    6       2     length of the method parameters P (<= 256)
    8       8     original size in bytes
    16      32    SHA-256 of the original bytes
    48      2     number of sections N (1..4096)
    50      4     CRC-32 of every byte of the container except these four
    54      P     method parameters
    54+P    8*N   length of each section
    ...           the sections, back to back; nothing may follow them

The CRC makes any accidental change (a flipped byte, a cut) fail before any decoder runs; the
SHA-256 of the restored bytes, checked on every decompress, is what guarantees exactness against
anything, including a blob crafted to pass the CRC. Every size is checked against the blob's own
length and the caller's output limit before anything is allocated.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from .errors import TransferInputError, TransferUsageError

MAGIC = b"MFTC"
FORMAT_VERSION = 1
MAX_PARAMS_BYTES = 256
MAX_SECTIONS = 4096
# Far above any DICOM file we expect (a few hundred MB); decompress takes a smaller limit.
MAX_ORIGINAL_BYTES = 1 << 40

_FIXED = struct.Struct("<4sBBHQ32sHI")
_CRC_OFFSET = 50
_SECTION_LENGTH = struct.Struct("<Q")


class Method(IntEnum):
    """How the whole file was encoded."""

    STORED = 0
    ZSTD = 1
    SPLIT = 2


@dataclass(frozen=True)
class Container:
    """A parsed (or to-be-written) container; sections are views into the blob when parsed."""

    method: Method
    original_size: int
    sha256: bytes
    params: bytes
    sections: tuple[bytes | memoryview, ...]


def pack(container: Container) -> bytes:
    """Serialise ``container``; raises TransferUsageError if it breaks the format's limits."""
    count = len(container.sections)
    if not 1 <= count <= MAX_SECTIONS:
        raise TransferUsageError(f"section count {count} out of range")
    if len(container.params) > MAX_PARAMS_BYTES or len(container.sha256) != 32:
        raise TransferUsageError("bad container parameters")
    if not 0 <= container.original_size <= MAX_ORIGINAL_BYTES:
        raise TransferUsageError("original size out of range")
    fields = (MAGIC, FORMAT_VERSION, int(container.method), len(container.params))
    fixed = _FIXED.pack(*fields, container.original_size, container.sha256, count, 0)
    table = b"".join(_SECTION_LENGTH.pack(len(section)) for section in container.sections)
    # CRC over the pieces as they will be laid out, so the blob is assembled in one copy.
    crc = zlib.crc32(fixed[:_CRC_OFFSET])
    for piece in (container.params, table, *container.sections):
        crc = zlib.crc32(piece, crc)
    fixed = fixed[:_CRC_OFFSET] + struct.pack("<I", crc)
    return b"".join([fixed, container.params, table, *container.sections])


def _crc(blob: bytes | bytearray | memoryview) -> int:
    view = memoryview(blob)
    return zlib.crc32(view[_CRC_OFFSET + 4 :], zlib.crc32(view[:_CRC_OFFSET]))


def unpack(blob: bytes | memoryview, *, max_output_bytes: int, name: str = "") -> Container:
    """Parse and validate a container; raises TransferInputError on anything malformed."""
    view = memoryview(blob).cast("B")
    if len(view) < _FIXED.size:
        raise TransferInputError("compressed blob too short", name=name)
    magic, version, method, params_len, size, sha, count, crc = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise TransferInputError("not an MFTP compressed blob (bad magic)", name=name)
    if version != FORMAT_VERSION:
        raise TransferInputError(f"unsupported container version {version}", name=name)
    if crc != _crc(view):
        raise TransferInputError("container checksum mismatch (corrupted blob)", name=name)
    if method not in Method.__members__.values():
        raise TransferInputError(f"unknown method {method}", name=name)
    if size > max_output_bytes or size > MAX_ORIGINAL_BYTES:
        raise TransferInputError(f"declared size {size} exceeds the limit {max_output_bytes}", name=name)
    if params_len > MAX_PARAMS_BYTES or not 1 <= count <= MAX_SECTIONS:
        raise TransferInputError("bad container header", name=name)
    pos = _FIXED.size + params_len + count * _SECTION_LENGTH.size
    if pos > len(view):
        raise TransferInputError("compressed blob truncated", name=name)
    params = bytes(view[_FIXED.size : _FIXED.size + params_len])
    sections = _cut_sections(view, pos - count * _SECTION_LENGTH.size, count, name)
    return Container(Method(method), size, sha, params, sections)


def _cut_sections(view: memoryview, table_at: int, count: int, name: str) -> tuple[memoryview, ...]:
    """Slice the sections listed in the length table; they must fill the blob exactly."""
    pos = table_at + count * _SECTION_LENGTH.size
    sections = []
    for index in range(count):
        (length,) = _SECTION_LENGTH.unpack_from(view, table_at + index * _SECTION_LENGTH.size)
        if length > len(view) - pos:
            raise TransferInputError("compressed blob truncated", name=name)
        sections.append(view[pos : pos + length])
        pos += length
    if pos != len(view):
        raise TransferInputError("trailing bytes after the last section", name=name)
    return tuple(sections)


def section_lengths(container: Container) -> Sequence[int]:
    """Lengths of the sections, for reports."""
    return [len(section) for section in container.sections]
