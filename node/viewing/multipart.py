"""Accept headers and ``multipart/related`` answers of WADO-RS (PS3.18 8.7).

:func:`parse_accept` reads an ``Accept`` header into media ranges with their parameters, quoted
or not (``multipart/related; type="application/octet-stream"; transfer-syntax=*`` and the
same without quotes both occur: OHIF omits them, dicomweb-client writes them), ordered by
``q``.  :func:`encode_multipart` builds a ``multipart/related`` body and its content type.

Pure code: no disk, network or clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ..errors import NodeUsageError

MAX_ACCEPT_CHARS: Final = 4096
MAX_RANGES: Final = 32


class NotAcceptable(NodeUsageError):
    """No media type the client accepts can be served for this resource (HTTP 406)."""


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header: ``type/subtype`` (lower case), parameters, quality."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def param(self, name: str) -> str | None:
        """A parameter's value (names are case-insensitive), unquoted; ``None`` if absent."""
        return self.params.get(name.lower())

    def matches(self, media_type: str) -> bool:
        """Whether this range covers ``media_type`` (``*/*`` and ``type/*`` wildcards)."""
        if self.media_type == "*/*":
            return True
        kind, _, sub = self.media_type.partition("/")
        other_kind, _, other_sub = media_type.lower().partition("/")
        return kind == other_kind and sub in ("*", other_sub)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (a quoted value may hold commas and semicolons)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of ``header`` by decreasing ``q`` (stable); ``[*/*]`` if absent or empty.

    A range with ``q=0`` is left out (the client refuses it); malformed headers are a
    :class:`~mftp.node.errors.NodeUsageError`.
    """
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    if len(header) > MAX_ACCEPT_CHARS:
        raise NodeUsageError("the Accept header is too long")
    ranges: list[MediaRange] = []
    for item in _split(header, ","):
        if not item.strip():
            continue
        head, *raw_params = _split(item, ";")
        media_type = head.strip().lower()
        kind, slash, sub = media_type.partition("/")
        if not slash or not kind or not sub or " " in media_type:
            raise NodeUsageError(f"malformed media range in Accept: {head.strip()[:64]!r}")
        params: dict[str, str] = {}
        q = 1.0
        for raw in raw_params:
            name, eq, value = raw.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            if not eq:
                raise NodeUsageError(f"malformed parameter in Accept: {raw.strip()[:64]!r}")
            if name == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    raise NodeUsageError("a q value in Accept is not a number") from None
                if not 0 <= q <= 1:
                    raise NodeUsageError("a q value in Accept is outside 0..1")
            else:
                params[name] = _unquote(value)
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
        if len(ranges) > MAX_RANGES:
            raise NodeUsageError("the Accept header has too many media ranges")
    ranges.sort(key=lambda r: -r.q)
    return ranges


def multipart_parts(ranges: Iterable[MediaRange]) -> list[tuple[MediaRange, str | None]]:
    """Each range that can be answered with a multipart body, with the part type it asks for.

    ``multipart/related; type=X`` asks for parts of type ``X``; ``*/*`` and ``multipart/*``
    leave the part type to the server (``None``).
    """
    out: list[tuple[MediaRange, str | None]] = []
    for media in ranges:
        if media.media_type == "multipart/related":
            part = media.param("type")
            out.append((media, part.lower() if part else None))
        elif media.media_type in ("*/*", "multipart/*"):
            out.append((media, None))
    return out


@dataclass(frozen=True)
class Part:
    """One part of a multipart answer."""

    body: bytes
    content_type: str
    location: str | None = None


def encode_multipart(parts: Iterable[Part], part_type: str) -> tuple[bytes, str]:
    """The ``multipart/related`` body of ``parts`` and its Content-Type (``type`` quoted, as RFC 2387)."""
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for part in parts:
        headers = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            headers += f"Content-Location: {part.location}\r\n"
        chunks += [headers.encode(), b"\r\n", part.body, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'
