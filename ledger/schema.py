"""A tiny schema language for the public fields of ledger records.

Values from peers are decoded with the canonical decoder, then checked against a
schema so every field has the expected type and stays within its limits.  A
schema maps field names to :class:`Field` specs; unknown and missing fields are
refused, because a record must mean exactly one thing to every member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRecordError

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Field:
    """One field spec: ``kind`` is bytes, str, int, bool, list or map."""

    kind: str
    min_len: int = 0
    max_len: int = 0
    min_value: int = 0
    max_value: int = INT64_MAX
    item: Field | None = None
    choices: frozenset[str] | None = None


def exact_bytes(length: int) -> Field:
    """Bytes of exactly ``length``."""
    return Field("bytes", min_len=length, max_len=length)


def some_bytes(max_len: int) -> Field:
    """Bytes of at most ``max_len``."""
    return Field("bytes", max_len=max_len)


def text(max_len: int, *, min_len: int = 0, choices: frozenset[str] | None = None) -> Field:
    """A string of at most ``max_len`` characters, optionally one of ``choices``."""
    return Field("str", min_len=min_len, max_len=max_len, choices=choices)


def integer(min_value: int = 0, max_value: int = INT64_MAX) -> Field:
    """An integer within [min_value, max_value]."""
    return Field("int", min_value=min_value, max_value=max_value)


def boolean() -> Field:
    """True or False."""
    return Field("bool")


def list_of(item: Field, max_len: int, *, min_len: int = 0) -> Field:
    """A list of at most ``max_len`` items each matching ``item``."""
    return Field("list", min_len=min_len, max_len=max_len, item=item)


def map_of(item: Field | None, max_len: int) -> Field:
    """A map from short strings to values matching ``item`` (None: any values, checked elsewhere)."""
    return Field("map", max_len=max_len, item=item)


Schema = Mapping[str, Field]


def check(schema: Schema, value: Any, where: str) -> None:
    """Raise :class:`InvalidRecordError` unless ``value`` matches ``schema`` exactly."""
    if not isinstance(value, dict):
        raise InvalidRecordError(f"{where}: expected a map")
    missing = schema.keys() - value.keys()
    extra = value.keys() - schema.keys()
    if missing or extra:
        raise InvalidRecordError(f"{where}: missing fields {sorted(missing)}, unknown fields {sorted(extra)}")
    for name, spec in schema.items():
        check_field(spec, value[name], f"{where}.{name}")


def check_field(spec: Field, value: Any, where: str) -> None:
    """Check one value against one field spec."""
    kind = spec.kind
    if kind == "bytes":
        _check_len(isinstance(value, bytes), value, spec, where, "bytes")
    elif kind == "str":
        _check_len(isinstance(value, str), value, spec, where, "a string")
        if spec.choices is not None and value not in spec.choices:
            raise InvalidRecordError(f"{where}: {value!r} is not one of {sorted(spec.choices)}")
    elif kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRecordError(f"{where}: expected an integer")
        if not spec.min_value <= value <= spec.max_value:
            raise InvalidRecordError(f"{where}: {value} outside [{spec.min_value}, {spec.max_value}]")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRecordError(f"{where}: expected a boolean")
    elif kind == "list":
        _check_len(isinstance(value, list), value, spec, where, "a list")
        assert spec.item is not None
        for index, item in enumerate(value):
            check_field(spec.item, item, f"{where}[{index}]")
    elif kind == "map":
        _check_len(isinstance(value, dict), value, spec, where, "a map")
        for key, item in value.items():
            if len(key) > 64:
                raise InvalidRecordError(f"{where}: key longer than 64 characters")
            if spec.item is not None:  # None: the values are checked by a schema of their own
                check_field(spec.item, item, f"{where}.{key}")
    else:  # pragma: no cover - a schema bug, not input
        raise AssertionError(f"unknown field kind {kind}")


def _check_len(ok_type: bool, value: Any, spec: Field, where: str, what: str) -> None:
    if not ok_type:
        raise InvalidRecordError(f"{where}: expected {what}")
    if not spec.min_len <= len(value) <= spec.max_len:
        raise InvalidRecordError(f"{where}: length {len(value)} outside [{spec.min_len}, {spec.max_len}]")
