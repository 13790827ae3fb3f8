"""URLs in the one form an allow-list compares: normalised, dot segments and tricks refused.

Pure (no I/O).  Used where an outside URL meets ``transfer.dicomweb_urls``
(:mod:`mftp.node.transfers.sources`) and where the configuration's own entries are checked
(:mod:`mftp.node.config`), so both sides of every comparison are spelt the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .errors import NodeUsageError

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
MAX_URL_CHARS: Final = 2048


@dataclass(frozen=True)
class NormalURL:
    """A URL in the one form the allow-list compares (see :func:`normalise_url`)."""

    scheme: str
    host: str
    port: int | None  # as written; None when the URL names none
    path: str  # no trailing "/", escapes of unreserved characters decoded, others in upper case

    @property
    def effective_port(self) -> int:
        """The port a client connects to."""
        return self.port if self.port is not None else _DEFAULT_PORTS[self.scheme]

    @property
    def text(self) -> str:
        """The URL spelt out, the default port left out."""
        port = "" if self.effective_port == _DEFAULT_PORTS[self.scheme] else f":{self.effective_port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}{self.path}"


def _normal_segment(segment: str) -> str:
    """One path segment with escapes of unreserved characters decoded and the rest upper-cased."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _ESCAPE.sub(one, segment)


def normalise_url(url: str) -> NormalURL:
    """``url`` as a :class:`NormalURL`; :class:`NodeUsageError` naming what is wrong.

    Refused: another scheme than http(s), credentials (``user@``), a query or a fragment, a
    malformed port, characters outside RFC 3986 (spaces, backslashes, controls), an escaped
    ``/`` (``%2F``), and any dot segment (``.``/``..``, escaped or not) or empty segment, since a
    server or client would resolve them to a path outside the one checked.
    """
    if len(url) > MAX_URL_CHARS or not url.isascii() or not url.isprintable() or " " in url:
        raise NodeUsageError("a DICOMweb URL is a printable ASCII http(s) URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise NodeUsageError(f"{url} is not a valid URL (malformed host or port)") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host:
        raise NodeUsageError(f"{url} is not an http(s) URL with a host")
    if "@" in parts.netloc:
        raise NodeUsageError(f"{url} carries credentials; give the server's URL without user@")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise NodeUsageError(f"{url} has a query or fragment; give the server's base URL")
    if port == 0 or not _PATH_CHARS.fullmatch(parts.path) or "%" in _ESCAPE.sub("", parts.path):
        raise NodeUsageError(f"{url} has a bad port or characters a URL path may not hold")
    segments = [_normal_segment(s) for s in parts.path.rstrip("/").split("/")[1:]]
    for segment in segments:
        if segment in ("", ".", "..") or "%2F" in segment or "%5C" in segment:
            raise NodeUsageError(f"{url} has an empty, dot ('.', '..') or escaped-slash path segment")
    return NormalURL(scheme, host, port, "".join("/" + s for s in segments))


def is_http_url(text: str) -> bool:
    """Whether ``text`` is spelt as an http(s) URL (the scheme in any case, as RFC 3986 allows)."""
    return text[:8].lower().startswith(("http://", "https://"))
