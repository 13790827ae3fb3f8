"""Records: every type, signatures and their domain, limits, tampering, and the fast decoder."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.crypto import canonical
from mftp.ledger import sample
from mftp.ledger.errors import InvalidRecordError, LedgerInputError, LedgerUsageError
from mftp.ledger.records import (
    BODY_SCHEMAS,
    MAX_ENVELOPE_BYTES,
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    TAG_SLOTS,
    Record,
    RecordType,
    make_record,
)
from mftp.ledger.schema import check as schema_check
from tests.ledger.ledger_helpers import PUBLIC_TYPES

AUTHOR = sample.identities(1, "records")[0]
OTHER = sample.identities(2, "records")[1]


def a_record(record_type: RecordType = RecordType.TRANSFER_OFFERED, seed: int = 0) -> Record:
    rng = random.Random(seed)
    if record_type is RecordType.MEMBERSHIP_CHANGE:
        approvers = [AUTHOR, OTHER]
        return sample.membership_record(AUTHOR, approvers, "chain", action="add", member=bytes(32), rng=rng)
    return sample.sample_record(AUTHOR, rng, record_type=record_type)


@pytest.mark.parametrize("record_type", list(RecordType))
def test_every_type_round_trips_and_verifies(record_type: RecordType) -> None:
    record = a_record(record_type)
    data = record.to_bytes()
    decoded = Record.decode(data)
    assert decoded == record and decoded.to_bytes() == data
    assert decoded == Record.decode_strict(data)
    assert decoded.type is record_type and decoded.version == SCHEMA_VERSION
    assert len(decoded.tags) == TAG_SLOTS and all(len(tag) == 16 for tag in decoded.tags)
    assert len(decoded.record_id) == 16 and decoded.author == AUTHOR.public.sign_key
    decoded.verify_signature()
    assert decoded.signing_bytes() == canonical.encode(decoded.unsigned())


def test_signature_is_bound_to_author_domain_and_content() -> None:
    record = a_record()
    message = record.signing_bytes()
    forged = [
        dataclasses.replace(record, signature=AUTHOR.sign("vote", message), encoded=b""),  # other domain
        dataclasses.replace(record, signature=OTHER.sign("record", message), encoded=b""),  # other key
        dataclasses.replace(record, time_ms=record.time_ms + 1, encoded=b""),
        dataclasses.replace(record, envelope=record.envelope + b"x", encoded=b""),
        dataclasses.replace(record, tags=(bytes(16), *record.tags[1:]), encoded=b""),
        dataclasses.replace(record, body={**record.body, "purpose": "HRESCH"}, encoded=b""),
        dataclasses.replace(record, author=OTHER.public.sign_key, encoded=b""),
    ]
    for bad in forged:
        with pytest.raises(InvalidRecordError):
            Record.decode(bad.to_bytes()).verify_signature()


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7), seed=st.integers(0, 5))
def test_any_flipped_bit_is_refused(position: int, bit: int, seed: int) -> None:
    data = bytearray(a_record(PUBLIC_TYPES[seed]).to_bytes())
    data[position % len(data)] ^= 1 << bit
    try:
        Record.decode(bytes(data)).verify_signature()
    except InvalidRecordError:
        return
    raise AssertionError("a tampered record verified")


def _build(**changes: Any) -> Record:
    rng = random.Random(3)
    args: dict[str, Any] = {
        "record_id": rng.randbytes(16),
        "time_ms": 5,
        "tags": tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
        "envelope": b"",
        "commitments": {},
    }
    body = changes.pop("body", sample.sample_body(RecordType.STUDY_ACCESSED, rng))
    args.update(changes)
    return make_record(AUTHOR, RecordType.STUDY_ACCESSED, body, **args)


@pytest.mark.parametrize(
    "changes",
    [
        {"envelope": bytes(MAX_ENVELOPE_BYTES + 1)},
        {"tags": (bytes(16),) * (TAG_SLOTS - 1)},
        {"tags": (bytes(16),) * (TAG_SLOTS + 1)},
        {"tags": (bytes(15),) + (bytes(16),) * (TAG_SLOTS - 1)},
        {"record_id": bytes(15)},
        {"time_ms": -1},
        {"time_ms": 2**63},
        {"commitments": {f"c{i}": bytes(32) for i in range(17)}},
        {"commitments": {"c": bytes(31)}},
        {"body": {"transfer_id": bytes(16), "action": "view"}},
        {"body": {"transfer_id": bytes(16), "action": "view", "purpose": "TREAT", "extra": 1}},
        {"body": {"transfer_id": bytes(16), "action": "print", "purpose": "TREAT"}},
        {"body": {"transfer_id": bytes(16), "action": "view", "purpose": "MARKETING"}},
        {"body": {"transfer_id": "x" * 16, "action": "view", "purpose": "TREAT"}},
    ],
)
def test_building_a_bad_record_is_our_error(changes: dict[str, object]) -> None:
    with pytest.raises(LedgerUsageError):
        _build(**changes)


def test_limits_at_the_edge_are_accepted() -> None:
    record = _build(envelope=bytes(MAX_ENVELOPE_BYTES), time_ms=2**63 - 1,
                    commitments={f"c{i:02}": bytes(32) for i in range(16)})  # fmt: skip
    assert Record.decode(record.to_bytes()) == record


def test_oversized_and_wrongly_typed_input_is_refused() -> None:
    with pytest.raises(InvalidRecordError):
        Record.decode(bytes(MAX_RECORD_BYTES + 1))
    with pytest.raises(InvalidRecordError):
        Record.decode("text")  # type: ignore[arg-type]
    value = msgpack.unpackb(a_record().to_bytes())
    for key, bad in [("v", 2), ("type", 99), ("type", True), ("time_ms", 1.5), ("sig", bytes(63))]:
        with pytest.raises(InvalidRecordError):
            Record.decode(msgpack.packb({**value, key: bad}, use_bin_type=True))


def _reencode_time(data: bytes, time_ms: int) -> bytes:
    """The same record with time_ms packed as a (non-minimal) uint64."""
    marker = b"\xa7time_ms"
    start = data.index(marker) + len(marker)
    rest = data[start:]
    minimal = msgpack.packb(time_ms)
    assert rest.startswith(minimal)
    return data[:start] + b"\xcf" + time_ms.to_bytes(8, "big") + rest[len(minimal) :]


def test_non_canonical_encodings_are_refused_by_both_decoders() -> None:
    record = _build(time_ms=1000)
    data = record.to_bytes()
    value = msgpack.unpackb(data, raw=False)
    reordered = msgpack.packb(dict(reversed(list(value.items()))), use_bin_type=True)
    body_reordered = msgpack.packb(
        {**value, "body": dict(reversed(list(value["body"].items())))}, use_bin_type=True
    )
    as_str = msgpack.packb(value, use_bin_type=False)  # bytes as str: another type
    duplicate = b"\x8b" + data[1:] + b"\xa1v\x01"  # "v" twice
    trailing = data + b"\x00"
    cases = [reordered, body_reordered, as_str, duplicate, trailing, _reencode_time(data, record.time_ms)]
    for bad in cases:
        assert bad != data
        for decode in (Record.decode, Record.decode_strict):
            with pytest.raises(InvalidRecordError):
                decode(bad)


def _outcome(decode: object, data: bytes) -> object:
    try:
        return decode(data)  # type: ignore[operator]
    except InvalidRecordError:
        return "refused"


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 7),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 5000),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fast_decoder_agrees_with_the_canonical_decoder(seed: int, edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(a_record(list(RecordType)[seed % len(RecordType)], seed).to_bytes())
    for kind, position, byte in edits:
        position %= len(data) + 1
        if kind == "flip" and position < len(data):
            data[position] ^= byte or 1
        elif kind == "insert":
            data.insert(position, byte)
        elif kind == "delete" and position < len(data):
            del data[position]
        elif kind == "truncate":
            del data[position:]
    fast, strict = _outcome(Record.decode, bytes(data)), _outcome(Record.decode_strict, bytes(data))
    assert fast == strict


@settings(max_examples=150, deadline=None)
@given(
    time_ms=st.one_of(
        st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]),
        st.integers(0, 2**63 - 1),
    ),
    envelope=st.integers(0, MAX_ENVELOPE_BYTES),
    commitments=st.dictionaries(st.text(max_size=8), st.binary(min_size=32, max_size=32), max_size=4),
    record_type=st.sampled_from(PUBLIC_TYPES),
)
def test_signing_bytes_cut_from_the_encoding_equal_the_canonical_ones(
    time_ms: int, envelope: int, commitments: dict[str, bytes], record_type: RecordType
) -> None:
    rng = random.Random(time_ms)
    record = make_record(
        AUTHOR,
        record_type,
        sample.sample_body(record_type, rng),
        record_id=rng.randbytes(16),
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
        envelope=rng.randbytes(envelope),
        commitments=commitments,
    )
    decoded = Record.decode(record.to_bytes())
    assert decoded.signing_bytes() == canonical.encode(decoded.unsigned())
    decoded.verify_signature()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_input_errors(data: bytes) -> None:
    with contextlib.suppress(LedgerInputError):  # anything else fails the test
        Record.decode(data)


def test_a_map_with_mixed_key_types_is_an_input_error_not_a_crash() -> None:
    """Found by the fuzzing test above (seed 4): sorting str and bytes keys for the message raised
    TypeError, which a peer's record must never cause."""
    schema = BODY_SCHEMAS[RecordType.AUDIT_GRANT]
    with pytest.raises(InvalidRecordError, match="unknown fields"):
        schema_check(schema, {"audito": 1, b"\x00" * 32: "x"}, "record.body(AUDIT_GRANT)")
