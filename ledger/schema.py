"""A tiny schema language for the public fields of ledger records.

Values from peers are decoded with the canonical decoder, then checked against a
schema so every field has the expected type and stays within its limits.  The
error raised names the kind of thing checked (record, block, proof ...).  A
schema maps field names to :class:`Field` specs; unknown and missing fields are
refused, because a record must mean exactly one thing to every member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRecordError, LedgerInputError

INT64_MAX = 2**63 - 1

Checker = Callable[[Any], "str | None"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field spec: ``kind`` is bytes, str, int, bool, list or map.

    ``problem(value)`` returns None if the value matches, else the error text
    (a path suffix, then the reason); it is compiled once per spec because
    chain verification checks every field of every record.
    """

    kind: str
    min_len: int = 0
    max_len: int = 0
    min_value: int = 0
    max_value: int = INT64_MAX
    item: Field | None = None
    choices: frozenset[str] | None = None
    problem: Checker = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise AssertionError(f"unknown field kind {self.kind}")  # a schema bug, not input
        object.__setattr__(self, "problem", _compile(self))


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


def check(schema: Schema, value: Any, where: str, error: type[LedgerInputError] = InvalidRecordError) -> None:
    """Raise ``error`` (default :class:`InvalidRecordError`) unless ``value`` matches ``schema`` exactly."""
    if not isinstance(value, dict):
        raise error(f"{where}: expected a map")
    keys, checks = _compiled_schema(schema)
    if value.keys() != keys:
        missing = keys - value.keys()
        extra = value.keys() - keys
        # A peer's map may mix key types (str and bytes): sort by repr, never compare them.
        unknown = sorted(map(repr, extra))[:8]
        raise error(f"{where}: missing fields {sorted(missing, key=repr)}, unknown fields {unknown}")
    for name, problem_of in checks:
        # The error path is only formatted on failure.
        problem = problem_of(value[name])
        if problem is not None:
            raise error(f"{where}.{name}{problem}")


# Schemas are module constants; their (keys, checkers) are computed once.  The schema
# itself is kept in the entry so its id cannot be reused while the entry exists.
_SCHEMA_CACHE: dict[int, tuple[Schema, frozenset[str], tuple[tuple[str, Checker], ...]]] = {}


def _compiled_schema(schema: Schema) -> tuple[frozenset[str], tuple[tuple[str, Checker], ...]]:
    entry = _SCHEMA_CACHE.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, frozenset(schema), tuple((name, spec.problem) for name, spec in schema.items()))
        if len(_SCHEMA_CACHE) < 1024:  # schemas built on the fly (rare) are not cached forever
            _SCHEMA_CACHE[id(schema)] = entry
    return entry[1], entry[2]


def check_field(
    spec: Field, value: Any, where: str, error: type[LedgerInputError] = InvalidRecordError
) -> None:
    """Check one value against one field spec; raise ``error`` if it does not match."""
    problem = spec.problem(value)
    if problem is not None:
        raise error(f"{where}{problem}")


def _compile(spec: Field) -> Checker:
    return _COMPILERS[spec.kind](spec)


def _compile_bytes(spec: Field) -> Checker:
    low, high = spec.min_len, spec.max_len

    def check_bytes(value: Any) -> str | None:
        if value.__class__ is bytes and low <= len(value) <= high:
            return None
        return _length_problem(isinstance(value, bytes), value, spec, "bytes")

    return check_bytes


def _compile_str(spec: Field) -> Checker:
    choices = spec.choices

    def check_str(value: Any) -> str | None:
        problem = _length_problem(isinstance(value, str), value, spec, "a string")
        if problem is None and choices is not None and value not in choices:
            return f": {value!r} is not one of {sorted(choices)}"
        return problem

    return check_str


def _compile_int(spec: Field) -> Checker:
    low, high = spec.min_value, spec.max_value

    def check_int(value: Any) -> str | None:
        # bool is an int subclass and is refused, as are floats; exact ints skip the slow test.
        if value.__class__ is not int and (not isinstance(value, int) or isinstance(value, bool)):
            return ": expected an integer"
        if not low <= value <= high:
            return f": {value} outside [{low}, {high}]"
        return None

    return check_int


def _compile_bool(spec: Field) -> Checker:
    def check_bool(value: Any) -> str | None:
        return None if isinstance(value, bool) else ": expected a boolean"

    return check_bool


def _compile_list(spec: Field) -> Checker:
    assert spec.item is not None
    item = spec.item
    item_problem = item.problem
    # Lists of fixed-size byte strings (tags, approvals, hashes) are the common case: test
    # them in one pass and only look for the culprit when something is wrong.
    plain_bytes = item.kind == "bytes"
    low, high = item.min_len, item.max_len

    def check_list(value: Any) -> str | None:
        problem = _length_problem(isinstance(value, list), value, spec, "a list")
        if problem is not None:
            return problem
        if plain_bytes and all(x.__class__ is bytes and low <= len(x) <= high for x in value):
            return None
        for index, element in enumerate(value):
            problem = item_problem(element)
            if problem is not None:
                return f"[{index}]{problem}"
        return None

    return check_list


def _compile_map(spec: Field) -> Checker:
    item_problem = None if spec.item is None else spec.item.problem

    def check_map(value: Any) -> str | None:
        problem = _length_problem(isinstance(value, dict), value, spec, "a map")
        if problem is not None:
            return problem
        for key, item in value.items():
            if len(key) > 64:
                return ": key longer than 64 characters"
            if item_problem is not None:  # None: the values are checked by a schema of their own
                problem = item_problem(item)
                if problem is not None:
                    return f".{key}{problem}"
        return None

    return check_map


def _length_problem(ok_type: bool, value: Any, spec: Field, what: str) -> str | None:
    if not ok_type:
        return f": expected {what}"
    if not spec.min_len <= len(value) <= spec.max_len:
        return f": length {len(value)} outside [{spec.min_len}, {spec.max_len}]"
    return None


_COMPILERS: dict[str, Callable[[Field], Checker]] = {
    "bytes": _compile_bytes,
    "str": _compile_str,
    "int": _compile_int,
    "bool": _compile_bool,
    "list": _compile_list,
    "map": _compile_map,
}
_KINDS = frozenset(_COMPILERS)
