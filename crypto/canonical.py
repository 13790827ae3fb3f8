"""Canonical encoding: one value, one byte string.

Everything that is hashed or signed in MFTP goes through :func:`encode`, so two
nodes that hold equal values always produce equal bytes and equal hashes.

The encoding is MessagePack restricted to a small set of types:

* ``None``, ``bool``, ``int`` (from -2**63 to 2**64-1), ``bytes`` (as *bin*),
  ``str`` (UTF-8, as *str*), ``list``/``tuple`` (as array) and ``dict`` with
  ``str`` keys (as map, keys sorted by their UTF-8 bytes).
* No floats (their encodings are ambiguous across platforms), no extension types.

:func:`decode` accepts only bytes that :func:`encode` would have produced for
the decoded value (it re-encodes and compares), so malleated encodings such as
unsorted or duplicate keys, non-minimal integers or floats are refused.  Arrays
decode as ``list``.  Every failure on decode raises :class:`DecodeError` and
nothing else, because decode input comes from peers.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgpack

from ._util import BytesLike
from .errors import DecodeError, EncodeError

MAX_ENCODED_BYTES = 16 * 1024 * 1024
"""Default upper bound of an encoded value accepted by :func:`decode`."""

MAX_DEPTH = 32
"""Default maximum nesting of arrays and maps (the top level counts as 1)."""

MAX_CONTAINERS = 1 << 18
"""Default maximum number of arrays and maps in one decoded value.

A one-byte empty array becomes a ~60-byte Python list, so without this bound a
16 MiB input could cost about 1 GiB of memory and seconds of CPU.
"""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

Value = None | bool | int | bytes | str | list[Any] | tuple[Any, ...] | dict[str, Any]


def _normalize(value: Any, depth: int) -> Any:
    """Check types and sort maps; returns a structure msgpack packs canonically."""
    if value is None or isinstance(value, bool | bytes | str):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodeError(f"integer out of the 64-bit range: {value}")
        return value
    if depth >= MAX_DEPTH:
        raise EncodeError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [_normalize(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise EncodeError(f"map keys must be str, not {type(key).__name__}")
        return {key: _normalize(value[key], depth + 1) for key in sorted(value, key=_key_bytes)}
    raise EncodeError(f"type not allowed in canonical encoding: {type(value).__name__}")


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically; raises :class:`EncodeError` for anything not allowed."""
    normalized = _normalize(value, 0)
    try:
        return msgpack.packb(normalized, use_bin_type=True, strict_types=False)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. lone surrogates in str
        raise EncodeError(f"cannot encode value: {exc}") from exc


def decode(
    data: BytesLike,
    *,
    max_bytes: int = MAX_ENCODED_BYTES,
    max_depth: int = MAX_DEPTH,
    max_containers: int = MAX_CONTAINERS,
) -> Any:
    """Decode canonical bytes; raises :class:`DecodeError` for anything malformed or oversized.

    ``max_bytes`` bounds the input, ``max_depth`` the nesting and ``max_containers``
    the number of arrays and maps (each costs far more memory than its one byte).
    """
    if isinstance(data, memoryview):
        size = data.nbytes
    elif isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    # Check the size before copying, so an oversized input costs nothing.
    if size > max_bytes:
        raise DecodeError(f"encoded value of {size} bytes exceeds the limit of {max_bytes}")
    data = bytes(data)
    containers = 0

    def count(container: Any) -> Any:
        # msgpack calls this for each array and map as soon as it is built, so an
        # input made of many tiny containers is stopped early.
        nonlocal containers
        containers += 1
        if containers > max_containers:
            raise DecodeError(f"more than {max_containers} arrays and maps")
        return container

    try:
        # max_*_len default to len(data), so no header can make msgpack preallocate
        # more elements than there are input bytes.
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=count,
            object_hook=count,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types; peers must only ever see DecodeError
        raise DecodeError(f"malformed encoding: {type(exc).__name__}: {exc}") from None
    _check_decoded(value, max_depth)
    # Maps keep their wire order, so re-packing the decoded value reproduces the input
    # exactly when every length, integer and string was encoded minimally and the types
    # are the allowed ones; _check_decoded has already refused floats and unsorted keys.
    try:
        again = msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"value not allowed: {exc}") from None
    if again != data:
        raise DecodeError("non-canonical encoding")
    return value


_LEAF_TYPES: Final = (type(None), bool, int, bytes, str)


def _check_decoded(value: Any, max_depth: int) -> None:
    """One iterative pass: nesting, allowed types, and map keys strictly ascending by UTF-8 bytes.

    Iterative, so hostile input cannot exhaust the Python stack.  Anything but the
    allowed types (floats, extension types, bytes keys) is refused here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            if depth > max_depth:
                raise DecodeError(f"value nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                _check_keys(item)
                children: Any = item.values()
            else:
                children = item
            for child in children:
                if isinstance(child, list | dict):
                    stack.append((child, depth + 1))
                elif not isinstance(child, _LEAF_TYPES):
                    raise DecodeError(f"value not allowed: {type(child).__name__}")
        elif not isinstance(item, _LEAF_TYPES):
            raise DecodeError(f"value not allowed: {type(item).__name__}")


def _check_keys(item: dict[Any, Any]) -> None:
    previous = b""
    for index, key in enumerate(item):
        if not isinstance(key, str):
            raise DecodeError(f"value not allowed: map key of type {type(key).__name__}")
        encoded = _key_bytes(key)
        if index and encoded <= previous:
            raise DecodeError("non-canonical encoding: map keys not in ascending order")
        previous = encoded


def digest(value: Any) -> bytes:
    """SHA-256 of the canonical encoding of ``value``."""
    return hashlib.sha256(encode(value)).digest()


def sha256(data: bytes) -> bytes:
    """SHA-256 of raw bytes (the one hash function of MFTP)."""
    return hashlib.sha256(data).digest()
