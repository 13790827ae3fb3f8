"""Canonical encoding: property tests and refusals (mftp.crypto.canonical)."""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mftp.crypto import canonical
from mftp.crypto.canonical import MAX_DEPTH, decode, digest, encode
from mftp.crypto.errors import CryptoUsageError, DecodeError, EncodeError

# Text without surrogates: lone surrogates are not valid UTF-8 and encode refuses them.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | _text
)
# Arrays decode as list, so only lists are generated for the round trip.
values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(_text, children, max_size=6),
    max_leaves=40,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (True == 1 and b"" != "" matter here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def reorder(value: Any, rng: random.Random) -> Any:
    """An equal value whose dicts were built in other insertion orders."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: reorder(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [reorder(item, rng) for item in value]
    return value


def as_tuples(value: Any) -> Any:
    """The same structure with every list turned into a tuple (also encodes as array)."""
    if isinstance(value, dict):
        return {key: as_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(as_tuples(item) for item in value)
    return value


# ----------------------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_decode_of_encode_gives_the_value_back(value: Any) -> None:
    data = encode(value)
    assert same(decode(data), value)


@settings(max_examples=300, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_equal_values_give_equal_bytes(value: Any, rng: random.Random) -> None:
    again = reorder(value, rng)
    assert again == value
    assert encode(again) == encode(value)
    assert encode(as_tuples(again)) == encode(value)
    assert digest(again) == digest(value) == hashlib.sha256(encode(value)).digest()


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_proper_prefix_and_any_suffix_is_refused(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])
    with pytest.raises(DecodeError):
        decode(data + b"\xc0")
    with pytest.raises(DecodeError, match="exceeds"):
        decode(data, max_bytes=len(data) - 1)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except DecodeError:
        return
    # Anything accepted must be exactly the canonical encoding of what it decoded to.
    assert encode(value) == data


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_mutated_encodings_raise_only_decode_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    position = data.draw(st.integers(0, len(encoded) - 1))
    action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if action == "flip":
        encoded[position] ^= data.draw(st.integers(1, 255))
    elif action == "insert":
        encoded.insert(position, data.draw(st.integers(0, 255)))
    else:
        del encoded[position]
    try:
        decoded = decode(bytes(encoded))
    except DecodeError:
        return
    assert encode(decoded) == bytes(encoded)


# Values msgpack can pack but the canonical encoding refuses: a float or an extension
# type somewhere inside (maps packed in insertion order, so they may also be unsorted).
_refused_leaf = st.floats(width=32) | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
_poisoned = st.recursive(
    _refused_leaf,
    lambda inner: (
        st.builds(
            lambda before, bad, after: [*before, bad, *after],
            st.lists(_scalars, max_size=3),
            inner,
            st.lists(_scalars, max_size=3),
        )
        | st.builds(
            lambda others, key, bad: {**others, key: bad},
            st.dictionaries(_text, _scalars, max_size=3),
            _text,
            inner,
        )
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(_poisoned, st.booleans())
def test_floats_and_ext_types_anywhere_are_refused(value: Any, single_float: bool) -> None:
    data = msgpack.packb(value, use_bin_type=True, use_single_float=single_float)
    with pytest.raises(DecodeError):
        decode(data)


# ----------------------------------------------------------------------------- format


def test_known_encoding_is_stable() -> None:
    value = {"b": [True, None, b"\x00", -1, 2**64 - 1], "a": "h\u00e9", "": {}}
    expected = "83a080a161a368c3a9a16295c3c0c40100ffcfffffffffffffffff"
    assert encode(value).hex() == expected
    assert decode(bytes.fromhex(expected)) == value


def test_keys_sort_by_utf8_bytes() -> None:
    value = {"\u00e9": 1, "z": 2, "a": 3, "aa": 4}
    decoded = decode(encode(value))
    assert list(decoded) == ["a", "aa", "z", "\u00e9"]


def test_bytes_are_bin_and_str_is_str() -> None:
    assert encode(b"ab") == b"\xc4\x02ab"
    assert encode("ab") == b"\xa2ab"
    assert decode(b"\xc4\x02ab") == b"ab"


def test_tuples_encode_as_lists() -> None:
    assert encode((1, (2,))) == encode([1, [2]])
    assert decode(encode((1, 2))) == [1, 2]


def test_accepts_bytearray_and_memoryview_input() -> None:
    data = encode({"k": [1, 2]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"k": [1, 2]}


# ----------------------------------------------------------------------------- encode refusals


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        float("nan"),
        {1: "int key"},
        {b"k": "bytes key"},
        {"s"},
        frozenset(),
        bytearray(b"x"),
        2**64,
        -(2**63) - 1,
        "\ud800",
        {"\ud800": 1},
        object(),
        [1, [2, 3.0]],
    ],
)
def test_encode_refuses_types_outside_the_set(value: Any) -> None:
    with pytest.raises(EncodeError):
        encode(value)


def test_encode_error_is_a_usage_error() -> None:
    with pytest.raises(CryptoUsageError):
        encode(1.0)


def test_integer_bounds() -> None:
    for value in (-(2**63), 2**64 - 1, 0, -1, 127, 128, -32, -33):
        assert decode(encode(value)) == value


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit_on_both_sides() -> None:
    assert decode(encode(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(EncodeError):
        encode(nested(MAX_DEPTH + 1))
    with pytest.raises(DecodeError):
        decode(b"\x91" * (MAX_DEPTH + 1) + b"\xc0")
    with pytest.raises(DecodeError):
        decode(encode(nested(5)), max_depth=4)
    assert decode(encode(nested(4)), max_depth=4) == nested(4)


def test_self_referencing_value_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        encode(loop)


# ----------------------------------------------------------------------------- decode refusals


def _unsorted_map() -> bytes:
    return msgpack.packb({"b": 1, "a": 2})


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("float32", b"\xca" + struct.pack(">f", 1.5)),
        ("float64", msgpack.packb(1.5)),
        ("float in list", msgpack.packb([1, 2.0])),
        ("float in map", msgpack.packb({"a": 0.0})),
        ("ext type", msgpack.packb(msgpack.ExtType(1, b"x"))),
        ("timestamp ext", b"\xd6\xff\x00\x00\x00\x01"),
        ("unsorted keys", _unsorted_map()),
        ("duplicate keys", b"\x82\xa1a\x01\xa1a\x02"),
        ("bytes map key", b"\x81\xc4\x01a\x01"),
        ("int map key", b"\x81\x01\x01"),
        ("nil map key", b"\x81\xc0\x01"),
        ("uint8 for fixint", b"\xcc\x01"),
        ("int8 for positive", b"\xd0\x01"),
        ("uint16 for uint8", b"\xcd\x00\x10"),
        ("int16 for -1", b"\xd1\xff\xff"),
        ("int64 for 0", b"\xd3" + bytes(8)),
        ("str8 for fixstr", b"\xd9\x01a"),
        ("bin16 for bin8", b"\xc5\x00\x01a"),
        ("array16 for fixarray", b"\xdc\x00\x01\xc0"),
        ("map16 for fixmap", b"\xde\x00\x00"),
        ("invalid utf-8", b"\xa1\xff"),
        ("utf-8 surrogate", b"\xa3\xed\xa0\x80"),
        ("reserved byte", b"\xc1"),
        ("trailing data", b"\xc0\xc0"),
        ("huge array header", b"\xdd\xff\xff\xff\xff"),
        ("huge bin header", b"\xc6\xff\xff\xff\xff"),
        ("huge map header", b"\xdf\xff\xff\xff\xff"),
        ("deep nesting past msgpack's stack", b"\x91" * 5000 + b"\xc0"),
    ],
)
def test_decode_refuses_malformed_input(name: str, data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("value", ["text", 5, None, [b"x"], bytearray])
def test_decode_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(DecodeError):
        decode(value)


def test_size_limit_is_checked() -> None:
    data = encode(b"x" * 100)
    assert decode(data, max_bytes=len(data)) == b"x" * 100
    with pytest.raises(DecodeError, match="exceeds"):
        decode(data, max_bytes=len(data) - 1)
    with pytest.raises(DecodeError, match="exceeds"):
        decode(memoryview(data), max_bytes=10)


def test_default_size_limit() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        decode(b"\xc0" * (canonical.MAX_ENCODED_BYTES + 1))


def test_many_tiny_containers_are_refused_early() -> None:
    # One byte per empty array would cost ~60 bytes of Python objects each.
    count = 4 * canonical.MAX_CONTAINERS
    data = b"\xdd" + struct.pack(">I", count) + b"\x90" * count
    with pytest.raises(DecodeError, match="arrays and maps"):
        decode(data)
    with pytest.raises(DecodeError, match="arrays and maps"):
        decode(encode([{}, {}, [], []]), max_containers=4)
    assert decode(encode([{}, {}, []]), max_containers=4) == [{}, {}, []]


def test_sha256_and_digest() -> None:
    assert canonical.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert digest([1]) == hashlib.sha256(b"\x91\x01").digest()
