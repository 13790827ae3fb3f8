"""The pure core of a share: lifecycle table, secrets and their hashes, limits, with vectors."""

from __future__ import annotations

import hmac
import math
from dataclasses import replace

import pytest

from mftp.ledger.errors import InvalidRecordError
from mftp.ledger.records import RecordType
from mftp.node.errors import NodeUsageError
from mftp.node.shares import core
from mftp.node.shares.core import SHARE_LIFECYCLE, Share, ShareState, Terms

KEY = bytes(range(32))
DAY = core.DAY_MS


def a_share(**changes: object) -> Share:
    share = Share(
        share_id="ab" * 16,
        token_hash=core.token_hash(KEY, "t" * 43),
        code_hash=core.code_hash(KEY, "ab" * 16, "ABCD2345"),
        transfer_ids=("cd" * 16,),
        studies=("1.2.3",),
        patient="patient:PAT-1",
        created_by="user:dr.a",
        created_ms=0,
        terms=Terms(1000, 1000 + 7 * DAY, max_opens=3, max_failures=5),
    )
    return replace(share, **changes)  # type: ignore[arg-type]


def test_keyed_hash_vectors() -> None:
    # HMAC-SHA256(key, purpose || 0 || secret): fixed vectors, so a change of the stored form shows.
    assert core.keyed_hash(KEY, b"token", "abc").hex() == hmac.new(KEY, b"token\0abc", "sha256").hexdigest()
    assert core.token_hash(KEY, "x" * 43) != core.token_hash(bytes(32), "x" * 43)  # keyed
    # The code's hash is bound to its share: one share's code opens no other.
    assert core.code_hash(KEY, "aa" * 16, "ABCD2345") != core.code_hash(KEY, "bb" * 16, "ABCD2345")
    assert (
        core.code_hash(KEY, "ab" * 16, "ABCD2345").hex()
        == hmac.new(KEY, b"code:" + b"ab" * 16 + b"\0ABCD2345", "sha256").hexdigest()
    )


def test_token_and_code_strength() -> None:
    tokens = {core.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(core.looks_like_token(t) for t in tokens)
    assert core.TOKEN_BYTES * 8 >= 128  # the floor; ours is 256 bits
    codes = [core.new_code() for _ in range(500)]
    assert all(len(c) == core.CODE_CHARS and set(c) <= set(core.CODE_ALPHABET) for c in codes)
    assert not set("0O1IL") & set(core.CODE_ALPHABET)  # unambiguous on paper
    bits = core.CODE_CHARS * math.log2(len(core.CODE_ALPHABET))
    assert bits > 39  # with the lock after 5 failures: 5 in 8.5e11 for a guesser
    assert len(set("".join(codes))) == len(core.CODE_ALPHABET)  # every symbol is used


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("abcd-2345", "ABCD2345"), (" ABCD 2345 ", "ABCD2345"), ("ABCD2345", "ABCD2345"),
     ("ABCD-234O", ""), ("ABC", ""), ("A" * 10_000, ""), ("ÄBCD2345", ""), ("", "")],
)  # fmt: skip
def test_typed_codes_are_normalised_or_refused(typed: str, stored: str) -> None:
    assert core.normalize_code(typed) == stored


def test_code_matches_in_constant_time_on_hashes() -> None:
    share = a_share()
    assert core.code_matches(KEY, share, "abcd-2345")
    assert not core.code_matches(KEY, share, "ABCD2346")
    assert not core.code_matches(KEY, share, "")
    assert not core.code_matches(bytes(32), share, "ABCD2345")  # another node's key


def test_looks_like_token() -> None:
    assert core.looks_like_token("A" * 43) and core.looks_like_token("-_" * 21 + "x")
    for bad in ("A" * 42, "A" * 44, "A" * 42 + "/", "A" * 42 + "é", "../" * 15, ""):
        assert not core.looks_like_token(bad)


def test_the_lifecycle_table() -> None:
    A, E, X, L, R = (ShareState.ACTIVE, ShareState.EXPIRED, ShareState.EXHAUSTED, ShareState.LOCKED,
                     ShareState.REVOKED)  # fmt: skip
    assert SHARE_LIFECYCLE.final(E) and SHARE_LIFECYCLE.final(R)
    for current, target in [(A, E), (A, X), (A, L), (A, R), (X, R), (L, R), (X, E), (L, E)]:
        assert SHARE_LIFECYCLE.allows(current, target)
    for current, target in [(R, A), (E, A), (L, A), (X, A), (R, E), (E, R), (L, X)]:
        with pytest.raises(NodeUsageError):
            SHARE_LIFECYCLE.move(current, target)


def test_opens_exhaust_and_failures_lock() -> None:
    share = a_share()
    for _ in range(2):
        share = core.after_open(share)
    assert share.state is ShareState.ACTIVE and share.opens == 2
    share = core.after_open(share)
    assert share.state is ShareState.EXHAUSTED and not share.usable(2000) and share.session_allowed(2000)
    fresh = a_share()
    for count in range(1, 5):
        fresh = core.after_failure(fresh)
        assert fresh.state is ShareState.ACTIVE and fresh.failures == count
    assert core.after_open(fresh).failures == 0  # a right code forgets the failures
    locked = core.after_failure(fresh)
    assert locked.state is ShareState.LOCKED and not locked.usable(2000) and not locked.session_allowed(2000)


def test_dates_and_revocation() -> None:
    share = a_share()
    assert not share.usable(999)  # not started
    assert share.usable(1000) and share.usable(1000 + 7 * DAY - 1)
    assert core.state_at(share, 1000 + 7 * DAY) is ShareState.EXPIRED
    assert core.settle(share, 1000 + 7 * DAY).state is ShareState.EXPIRED
    revoked = core.revoked(share, 5000, "user:dr.b")
    assert revoked.state is ShareState.REVOKED and revoked.revoked_ms == 5000
    assert core.state_at(revoked, 10**15) is ShareState.REVOKED  # final states stay
    with pytest.raises(NodeUsageError):
        core.revoked(revoked, 6000, "user:dr.b")
    with pytest.raises(NodeUsageError):
        core.revoked(core.settle(share, 10**13), 6000, "user:dr.b")
    assert core.revoked(core.after_failure(a_share(failures=4)), 7000, "user:x").state is ShareState.REVOKED


@pytest.mark.parametrize(
    "terms",
    [
        dict(valid_from_ms=10, valid_until_ms=10),
        dict(valid_from_ms=-1, valid_until_ms=10),
        dict(valid_from_ms=0, valid_until_ms=367 * DAY),
        dict(valid_from_ms=0, valid_until_ms=DAY, max_opens=0),
        dict(valid_from_ms=0, valid_until_ms=DAY, max_opens=1001),
        dict(valid_from_ms=0, valid_until_ms=DAY, max_opens=True),
        dict(valid_from_ms=0, valid_until_ms=DAY, max_opens="3"),
        dict(valid_from_ms=0, valid_until_ms=DAY, max_failures=0),
        dict(valid_from_ms=0, valid_until_ms=DAY, download="yes"),
        dict(valid_from_ms=0, valid_until_ms=DAY, mode="nude"),
        dict(valid_from_ms=0.5, valid_until_ms=DAY),
    ],
)
def test_bad_terms_are_usage_errors(terms: dict[str, object]) -> None:
    with pytest.raises(NodeUsageError):
        Terms(**terms)  # type: ignore[arg-type]


def test_the_ledger_knows_the_share_type_and_refuses_reserved_numbers() -> None:
    import msgpack

    from mftp.ledger.records import Record
    from mftp.ledger.sample import identities, sample_record

    assert RecordType.PATIENT_SHARE == 13
    import random

    record = sample_record(identities(1)[0], random.Random(1), record_type=RecordType.PATIENT_SHARE)
    assert Record.decode(record.to_bytes()) == record
    value = msgpack.unpackb(record.to_bytes(), raw=False)
    for reserved in (9, 10, 11, 12):  # membership's (issue 20): inside the range, not yet a type
        value["type"] = reserved
        with pytest.raises(InvalidRecordError):
            Record.decode(msgpack.packb(value, use_bin_type=True))
