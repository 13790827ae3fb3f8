"""Streaming ``multipart/related`` (RFC 2046, RFC 2387) for DICOMweb.

WADO-RS answers a study as one multipart body with one DICOM file per part; STOW-RS takes one
in the same form. A study can be many gigabytes, so :class:`MultipartParser` is push-based and
incremental: feed it the body in chunks as they arrive and it returns events (a part's headers,
pieces of its content, its end) while holding at most one chunk plus a delimiter's length.
Every quantity that comes from the peer is bounded by :class:`MultipartLimits`.

The builder side is a handful of functions producing the delimiter and header bytes; the caller
streams each part's content between them, so a body is never built whole either.

Pure: bytes in, events out; no sockets, disk or clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .errors import TransferInputError, TransferUsageError

__all__ = [
    "MultipartLimits",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartEvent",
    "PartStart",
    "boundary_of",
    "closing_delimiter",
    "encode_multipart",
    "multipart_content_type",
    "new_boundary",
    "parse_content_type",
    "part_head",
]

_CRLF = b"\r\n"
# RFC 2046 allows 70 characters; Orthanc 1.10 sends 72, so a little slack is given.
_MAX_BOUNDARY_CHARS = 200
_BOUNDARY_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
_MAX_DELIMITER_LINE_BYTES = 1024


@dataclass(frozen=True)
class MultipartLimits:
    """Bounds on a multipart body received from outside."""

    max_parts: int = 100_000
    max_part_bytes: int = 4 << 30
    max_header_bytes: int = 16 << 10
    """Per part, all header lines together."""
    max_headers: int = 32
    max_preamble_bytes: int = 64 << 10
    max_epilogue_bytes: int = 64 << 10


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` maps lower-case names to values."""

    index: int
    headers: Mapping[str, str]

    @property
    def content_type(self) -> str:
        """The part's media type, lower case, without parameters ("" if absent)."""
        return parse_content_type(self.headers.get("content-type", ""))[0]


@dataclass(frozen=True)
class PartData:
    """The next piece of the current part's content."""

    index: int
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete."""

    index: int
    size_bytes: int


PartEvent = PartStart | PartData | PartEnd


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (media type in lower case, parameters by lower-case name).

    Parameter values may be quoted (RFC 2045 ``quoted-string``); malformed parameters raise
    :class:`TransferInputError`.
    """
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " \t;":
            i += 1
        if i >= len(rest):
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise TransferInputError(f"malformed Content-Type parameter: {rest[i:][:40]!r}")
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            val, i = _quoted(rest, i + 1)
        else:
            end = rest.find(";", i)
            end = len(rest) if end < 0 else end
            val, i = rest[i:end].strip(), end
        params[key] = val
    return media.strip().lower(), params


def _quoted(text: str, i: int) -> tuple[str, int]:
    out = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise TransferInputError("unterminated quoted string in Content-Type")


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/*`` Content-Type; raises :class:`TransferInputError` if none."""
    media, params = parse_content_type(content_type)
    if not media.startswith("multipart/"):
        raise TransferInputError(f"expected a multipart body, got {media or 'no Content-Type'!r}")
    boundary = params.get("boundary", "")
    _check_boundary(boundary, TransferInputError)
    return boundary


def _check_boundary(boundary: str, error: type[Exception]) -> None:
    raw = boundary.encode("latin-1", "replace")
    if not 1 <= len(raw) <= _MAX_BOUNDARY_CHARS or not set(raw) <= _BOUNDARY_CHARS or raw.endswith(b" "):
        raise error(f"invalid multipart boundary {boundary[:80]!r}")


class MultipartParser:
    """Incremental parser of one multipart body.

    Call :meth:`feed` with each chunk as it arrives and act on the returned events, then
    :meth:`close` when the body has ended. Any malformation or exceeded limit raises
    :class:`TransferInputError`; the parser is then unusable.
    """

    def __init__(self, boundary: str, limits: MultipartLimits | None = None) -> None:
        _check_boundary(boundary, TransferUsageError)
        self._limits = limits or MultipartLimits()
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        self._delimiter = _CRLF + self._dash_boundary
        self._buf = bytearray()
        self._state = "preamble"
        self._skipped = 0  # preamble or epilogue bytes dropped
        self._parts = 0
        self._part_bytes = 0

    @property
    def parts(self) -> int:
        """Parts started so far."""
        return self._parts

    @property
    def finished(self) -> bool:
        """True once the closing delimiter was seen."""
        return self._state == "epilogue"

    def feed(self, data: bytes) -> list[PartEvent]:
        """Consume the next chunk of the body; returns the events it completes."""
        self._buf += data
        events: list[PartEvent] = []
        progress = True
        while progress:
            progress = self._step(events)
        return events

    def close(self) -> None:
        """Declare the end of the body; raises if the closing delimiter was not seen."""
        if self._state != "epilogue":
            where = f"in part {self._parts}" if self._parts else "before the first part"
            raise TransferInputError(f"multipart body ends early ({where}, no closing delimiter)")

    def _step(self, events: list[PartEvent]) -> bool:
        if self._state == "preamble":
            return self._in_preamble()
        if self._state == "delimiter":
            return self._after_delimiter(events)
        if self._state == "headers":
            return self._in_headers(events)
        if self._state == "body":
            return self._in_body(events)
        self._skip(len(self._buf), self._limits.max_epilogue_bytes, "epilogue")
        return False

    def _skip(self, n: int, limit: int, what: str) -> None:
        self._skipped += n
        del self._buf[:n]
        if self._skipped > limit:
            raise TransferInputError(f"multipart {what} longer than {limit} bytes")

    def _in_preamble(self) -> bool:
        # The first delimiter may open the body without a preceding CRLF.
        if self._buf.startswith(self._dash_boundary):
            del self._buf[: len(self._dash_boundary)]
            self._state = "delimiter"
            return True
        at = self._buf.find(self._delimiter)
        if at >= 0:
            self._skip(
                at + len(self._delimiter), self._limits.max_preamble_bytes + len(self._delimiter), "preamble"
            )
            self._state = "delimiter"
            return True
        keep = len(self._delimiter) - 1
        if len(self._buf) > keep:
            self._skip(len(self._buf) - keep, self._limits.max_preamble_bytes, "preamble")
        return False

    def _after_delimiter(self, events: list[PartEvent]) -> bool:
        # After a delimiter: "--" closes the body; otherwise optional whitespace, then CRLF.
        if len(self._buf) < 2:
            return False
        if self._buf[:2] == b"--":
            del self._buf[:2]
            self._state = "epilogue"
            self._skipped = 0
            return True
        end = self._buf.find(_CRLF)
        if end < 0:
            if len(self._buf) > _MAX_DELIMITER_LINE_BYTES:
                raise TransferInputError("malformed multipart delimiter line")
            return False
        if self._buf[:end].strip(b" \t"):
            raise TransferInputError("malformed multipart delimiter line (boundary found inside content?)")
        del self._buf[: end + 2]
        self._parts += 1
        if self._parts > self._limits.max_parts:
            raise TransferInputError(f"multipart body has more than {self._limits.max_parts} parts")
        self._state = "headers"
        return True

    def _in_headers(self, events: list[PartEvent]) -> bool:
        if self._buf.startswith(_CRLF):
            end, header_bytes = 0, b""
        else:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._limits.max_header_bytes:
                    raise TransferInputError(
                        f"multipart part headers longer than {self._limits.max_header_bytes}"
                    )
                return False
            header_bytes = bytes(self._buf[:end])
            end += 2
        if len(header_bytes) > self._limits.max_header_bytes:
            raise TransferInputError(f"multipart part headers longer than {self._limits.max_header_bytes}")
        del self._buf[: end + 2]
        events.append(PartStart(self._parts, self._parse_headers(header_bytes)))
        self._part_bytes = 0
        self._state = "body"
        return True

    def _parse_headers(self, raw: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        lines = raw.split(_CRLF) if raw else []
        if len(lines) > self._limits.max_headers:
            raise TransferInputError(f"multipart part has more than {self._limits.max_headers} headers")
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in b" \t":
                raise TransferInputError(f"malformed multipart header line {line[:60]!r}")
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        return headers

    def _in_body(self, events: list[PartEvent]) -> bool:
        at = self._buf.find(self._delimiter)
        if at >= 0:
            self._emit(events, at)
            del self._buf[: len(self._delimiter)]
            events.append(PartEnd(self._parts, self._part_bytes))
            self._state = "delimiter"
            return True
        # Keep enough bytes to recognise a delimiter split across chunks.
        self._emit(events, len(self._buf) - (len(self._delimiter) - 1))
        return False

    def _emit(self, events: list[PartEvent], n: int) -> None:
        if n <= 0:
            return
        self._part_bytes += n
        if self._part_bytes > self._limits.max_part_bytes:
            raise TransferInputError(
                f"multipart part {self._parts} larger than {self._limits.max_part_bytes} bytes"
            )
        events.append(PartData(self._parts, bytes(self._buf[:n])))
        del self._buf[:n]


# ---- building ----


def new_boundary() -> str:
    """A fresh random boundary; 128 random bits make a collision with content negligible."""
    return "mftp-" + secrets.token_hex(16)


def multipart_content_type(boundary: str, part_type: str = "application/dicom") -> str:
    """The Content-Type of a ``multipart/related`` body whose parts are ``part_type``."""
    _check_boundary(boundary, TransferUsageError)
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, content_type: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The delimiter and header block that open a part; its content follows, then ``b"\\r\\n"``.

    The CRLF after each part's content belongs to the next delimiter (RFC 2046), so a part is
    ``part_head(...) + content + b"\\r\\n"`` and the body ends with :func:`closing_delimiter`.
    """
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    for name, value in (headers or {}).items():
        if any(c in name + value for c in "\r\n") or ":" in name:
            raise TransferUsageError(f"invalid multipart header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing_delimiter(boundary: str) -> bytes:
    """The bytes that end a multipart body."""
    return f"--{boundary}--\r\n".encode("latin-1")


def encode_multipart(boundary: str, parts: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """Stream a whole body: ``parts`` yields (content type, content chunks) per part."""
    for content_type, chunks in parts:
        yield part_head(boundary, content_type)
        yield from chunks
        yield _CRLF
    yield closing_delimiter(boundary)
