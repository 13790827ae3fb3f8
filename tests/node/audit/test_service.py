"""The node's audit pieces without processes: the vault on disk, the wire, the slot exchange."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.pseudonyms import (
    AuditStore,
    CounterpartyMismatchError,
    KeyErasedError,
    PseudonymUsageError,
    Role,
    SlotFill,
    attribute,
    commit_details,
    epoch_of,
)
from mftp.ledger.records import Record, RecordType
from mftp.node.audit import service as audit_service
from mftp.node.audit.messages import (
    decode_disclose_answer,
    decode_disclose_request,
    decode_slot_answer,
    decode_slot_request,
    disclose_answer,
    slot_answer,
)
from mftp.node.audit.service import AuditService, parse_day_ms, parse_month, patient_party, user_party
from mftp.node.audit.vault import AuditVault, VaultCorrupt
from mftp.node.clock import SYSTEM_CLOCK, FakeClock
from mftp.node.errors import NodeInputError, NodeUsageError
from mftp.node.ratelimit import PeerRate


def test_the_vault_survives_a_restart_encrypted_and_private(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path / "audit", identity, "institution:hospital-a")
    alice = vault.party("user:alice", "user")
    _, openings = commit_details({"user": "user:alice", "patient": "patient:PAT-77"})
    vault.add_details(b"r" * 16, openings)

    again = AuditVault(tmp_path / "audit", identity, "institution:hospital-a")
    assert again.keyring.party("user:alice") == alice and again.torn_bytes == 0
    disclosure = again.disclose(b"r" * 16)
    assert disclosure is not None and disclosure.fields["patient"][1] == "patient:PAT-77"
    assert (tmp_path / "audit").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "audit").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
        assert b"alice" not in path.read_bytes() and b"PAT-77" not in path.read_bytes()
    with pytest.raises(VaultCorrupt):
        AuditVault(tmp_path / "audit", SigningIdentity.generate(), "institution:hospital-a")


def test_a_torn_detail_log_is_cut_and_nothing_before_it_lost(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    for index in range(3):
        vault.add_details(bytes([index]) * 16, commit_details({"n": index})[1])
    log = tmp_path / "details.log"
    whole = log.stat().st_size
    with log.open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00partial")  # a frame header promising 256 bytes, then a crash
    again = AuditVault(tmp_path, identity, "institution:a")
    assert again.torn_bytes == 11 and log.stat().st_size == whole
    assert [again.disclose(bytes([i]) * 16) is not None for i in range(3)] == [True] * 3


def test_erasing_a_party_is_kept_across_restarts(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    vault.party("patient:P1", "patient")
    vault.erase("patient:P1")
    again = AuditVault(tmp_path, identity, "institution:a")
    with pytest.raises(KeyErasedError):
        again.party("patient:P1", "patient")  # never silently re-created
    assert "patient:P1" not in again.keyring.parties


def test_names_and_dates() -> None:
    assert user_party("alice") == user_party("user:alice") == "user:alice"
    assert patient_party("42", "HOSP-A") == "patient:HOSP-A/42" and patient_party("42") == "patient:42"
    assert parse_month("1970-02") == 1 and parse_day_ms("1970-01-02") == 86_400_000
    for bad in (lambda: user_party(" "), lambda: parse_month("2026-13"), lambda: parse_day_ms("tomorrow")):
        with pytest.raises(NodeUsageError):
            bad()


@pytest.mark.parametrize(
    ("decode", "value"),
    [
        (decode_slot_request, {"record_id": b"r" * 16, "time_ms": -1, "user": ""}),
        (decode_slot_request, {"record_id": b"r" * 15, "time_ms": 1, "user": ""}),
        (decode_slot_request, {"record_id": b"r" * 16, "time_ms": 1, "user": "patient:x"}),
        (decode_slot_request, {"record_id": b"r" * 16, "time_ms": True, "user": ""}),
        (decode_slot_answer, slot_answer(b"r" * 16, {Role.SENDER_USER: SlotFill(b"t" * 16, b"b" * 176)})),
        (decode_slot_answer, {**slot_answer(b"r" * 16, {}), "fills": [[3, b"t" * 16, b"short"]]}),
        (decode_slot_answer, {**slot_answer(b"r" * 16, {}), "error": "x" * 500}),
        (decode_disclose_request, {"grant_id": "nope", "after": 0}),
        (decode_disclose_request, {"grant_id": b"g" * 16}),
        (decode_disclose_request, {"grant_id": b"g" * 16, "after": -1}),
        (decode_disclose_request, {"grant_id": b"g" * 16, "after": True}),
        (
            decode_disclose_answer,
            {**disclose_answer(b"g" * 16, 0, []), "items": [[b"r" * 16, [["n", b"s", 1]]]]},
        ),
        (
            decode_disclose_answer,
            {**disclose_answer(b"g" * 16, 0, []), "items": [[b"r" * 16, [["n", b"s" * 32, 1.5]]]]},
        ),
        (decode_disclose_answer, {**disclose_answer(b"g" * 16, 0, []), "next": "no"}),
        (decode_disclose_answer, {**disclose_answer(b"g" * 16, 0, []), "next": -2}),
        (decode_disclose_answer, disclose_answer(b"g" * 16, 5, [], next_after=5)),  # no progress: a loop
        (decode_disclose_answer, disclose_answer(b"g" * 16, 5, [], next_after=3)),
        (decode_disclose_answer, {**disclose_answer(b"g" * 16, 0, []), "truncated": False}),
        (decode_disclose_answer, [1]),
    ],
)
def test_malformed_audit_messages_are_the_peers_fault(decode: Any, value: Any) -> None:
    with pytest.raises(NodeInputError):
        decode(value)


# --- the slot exchange between two services, with the p2p replaced by direct calls -------------


class FakeConfig:
    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, section: str, key: str) -> Any:
        assert (section, key) == ("node", "name")
        return self.name


class FakeHost:
    def __init__(self, name: str, directory: Path) -> None:
        self.config = cast(Any, FakeConfig(name))
        self.identity = SigningIdentity.generate()
        self.data_dir = directory
        self.clock = SYSTEM_CLOCK  # the slot waits run on the event loop's real time
        self.ledger = cast(Any, None)
        self.peers: dict[bytes, AuditService] = {}
        self.sent: list[tuple[str, Any]] = []

    def is_member(self, sign_key: bytes) -> bool:
        return sign_key in self.peers

    def send_peer(self, sign_key: bytes, channel: str, value: Any) -> None:
        self.sent.append((channel, value))
        handler = {
            "a.slots?": "on_slot_request",
            "a.slots": "on_slot_answer",
            "a.disclose?": "on_disclose_request",
            "a.disclose": "on_disclose_answer",
        }[channel]
        me = self.identity.public.sign_key
        asyncio.get_running_loop().call_soon(getattr(self.peers[sign_key], handler), me, value)

    async def submit_records(self, records: list[Record]) -> list[str]:
        return ["accepted"] * len(records)

    def member_name(self, sign_key: bytes) -> str:
        return sign_key.hex()[:8]


def pair(tmp_path: Path) -> tuple[AuditService, AuditService]:
    host_a, host_b = FakeHost("hospital-a", tmp_path / "a"), FakeHost("hospital-b", tmp_path / "b")
    a, b = AuditService(host_a), AuditService(host_b)
    host_a.peers[host_b.identity.public.sign_key] = b
    host_b.peers[host_a.identity.public.sign_key] = a
    return a, b


async def offer_with_their_slots(a: AuditService, b: AuditService, to_user: str = "") -> Record:
    record_id = os.urandom(16)
    b_key = cast(FakeHost, b.host).identity.public.sign_key
    time_ms, theirs = await a.counterparty_fills(b_key, record_id, to_user, wait_s=5)
    ours = a.fills(
        record_id, time_ms, {Role.SENDER_USER: "user:alice", Role.SENDER_INSTITUTION: a.institution}
    )
    body = {
        "transfer_id": os.urandom(16),
        "recipient": b_key,
        "purpose": "TREAT",
        "mode": "pseudonymised",
        "size_bucket": 20,
        "study_commitment": os.urandom(32),
    }
    return a.author(
        RecordType.TRANSFER_OFFERED,
        body,
        fills={**ours, **theirs},
        details={"user": "user:alice"},
        record_id=record_id,
        time_ms=time_ms,
    )


async def test_the_recipient_contributes_and_then_checks_its_slots(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    b.vault.party("user:dr.bea", "user")
    record = await offer_with_their_slots(a, b, "user:dr.bea")
    b.check_offer(record, "user:dr.bea")  # its own tags and escrow: accepted
    assert attribute(b.vault.keyring, record) == {
        Role.RECEIVER_INSTITUTION: "institution:hospital-b",
        Role.RECEIVER_USER: "user:dr.bea",
    }
    assert attribute(a.vault.keyring, record) == {
        Role.SENDER_USER: "user:alice",
        Role.SENDER_INSTITUTION: "institution:hospital-a",
    }
    assert a.vault.disclose(record.record_id) is not None  # the details were kept before signing


async def test_a_record_with_foreign_slots_is_refused(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    good = await offer_with_their_slots(a, b)
    other = await offer_with_their_slots(a, b)
    slot = Role.RECEIVER_INSTITUTION

    def with_tag(tag: bytes) -> tuple[bytes, ...]:
        return tuple(tag if index == slot else t for index, t in enumerate(good.tags))

    forgeries = [
        dataclasses.replace(good, tags=with_tag(os.urandom(16))),  # a decoy where our tag should be
        dataclasses.replace(good, tags=with_tag(other.tags[slot])),  # our tag, but of another record
        dataclasses.replace(good, envelope=other.envelope),  # right tag, boxes bound to another record
    ]
    for forged in forgeries:
        with pytest.raises(CounterpartyMismatchError):
            b.check_offer(forged, "")
    with pytest.raises(CounterpartyMismatchError):
        b.check_offer(good, "user:nobody")  # names a user b does not know
    assert b.refused_counterparty == 3


async def test_slot_requests_are_bounded(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    a_key = cast(FakeHost, a.host).identity.public.sign_key
    stale = {"record_id": b"r" * 16, "time_ms": int(time.time() * 1000) - 3_600_000, "user": ""}
    with pytest.raises(NodeInputError):
        b.on_slot_request(a_key, stale)  # a record dated an hour ago: refused
    with pytest.raises(NodeInputError):
        b.on_slot_request(b"x" * 32, {**stale, "time_ms": int(time.time() * 1000)})  # not a member
    with pytest.raises(NodeUsageError, match="unknown recipient user"):
        await offer_with_their_slots(a, b, "user:dr.nobody")  # b never makes keys on a sender's word
    assert not b.vault.has_party("user:dr.nobody")


def test_peer_rate_allows_bursts_then_the_rate() -> None:
    clock = FakeClock()
    rate = PeerRate(2.0, 3, clock=clock)
    assert [rate.allow(b"a") for _ in range(4)] == [True, True, True, False]
    assert rate.allow(b"b")  # each peer has its own bucket
    clock.advance(500)  # one token back at 2 per second
    assert [rate.allow(b"a") for _ in range(2)] == [True, False]
    clock.advance(99_500)  # never more than the burst
    assert [rate.allow(b"a") for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError):
        PeerRate(0, 1)


async def test_a_member_flooding_slot_requests_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    a, b = pair(tmp_path)
    monkeypatch.setattr(b, "_slot_rate", PeerRate(0.001, 2))
    await offer_with_their_slots(a, b)
    await offer_with_their_slots(a, b)
    with pytest.raises(NodeUsageError, match="too many slot requests"):
        await offer_with_their_slots(a, b)
    assert b.refused_slot_requests == 1


async def test_rotation_and_erasure_are_records_and_erasure_unlinks(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    earlier = await offer_with_their_slots(a, b)  # alice's tags are in it
    rotation = await a.rotate("user:alice", "scheduled")
    assert rotation.type is RecordType.KEY_ROTATION and rotation.body["reason"] == "scheduled"
    assert len(a.vault.keyring.party("user:alice").masters) == 2
    assert attribute(a.vault.keyring, earlier)[Role.SENDER_USER] == "user:alice"  # old months still link

    erasure = await a.rotate("user:alice", "erasure")
    assert erasure.body["reason"] == "erasure" and a.vault.disclose(erasure.record_id) is not None
    reopened = AuditVault(tmp_path / "a" / "audit", cast(FakeHost, a.host).identity, a.institution)
    assert Role.SENDER_USER not in attribute(reopened.keyring, earlier)  # crypto-shredded
    with pytest.raises(NodeUsageError):
        await a.rotate("user:alice", "scheduled")


# --- disclosure in pages, with a chain that is a dict --------------------------------------------


class FakeStore:
    """What disclosure reads of the block store: records by id."""

    def __init__(self) -> None:
        self.records: dict[bytes, Any] = {}

    def record(self, record_id: bytes) -> Any:
        return self.records.get(record_id)

    def put(self, record: Record) -> None:
        self.records[record.record_id] = SimpleNamespace(record=record, ledger_index=len(self.records))


def test_detail_positions_never_shift() -> None:
    details = AuditStore()
    ids = [bytes([i]) * 16 for i in range(5)]
    for record_id in ids:
        details.add(record_id, {})
    assert details.positioned_ids(0, 2) == ([(0, ids[0]), (1, ids[1])], 2)
    details.erase(ids[1])
    details.erase(ids[2])
    assert details.positioned_ids(2, 2) == ([(3, ids[3])], 4)  # erased ones keep their places
    assert details.positioned_ids(4, 10) == ([(4, ids[4])], -1)
    assert details.positioned_ids(9, 1) == ([], -1)
    with pytest.raises(PseudonymUsageError):
        details.positioned_ids(-1, 1)


async def _granted_history(
    tmp_path: Path, users: list[str]
) -> tuple[AuditService, AuditService, Record, set[bytes]]:
    """Institution ``a`` with a record per user on a fake chain, and its grant of alice to auditor ``r``."""
    a, r = pair(tmp_path)
    store = FakeStore()
    cast(FakeHost, a.host).ledger = SimpleNamespace(store=store)
    a.vault.party("user:alice", "user")
    a.vault.party("user:bob", "user")
    alice: set[bytes] = set()
    for user in users:
        record_id, time_ms = os.urandom(16), int(time.time() * 1000)
        fills = a.fills(record_id, time_ms, {Role.SENDER_USER: user, Role.SENDER_INSTITUTION: a.institution})
        body = {
            "transfer_id": os.urandom(16),
            "recipient": os.urandom(32),
            "purpose": "TREAT",
            "mode": "pseudonymised",
            "size_bucket": 20,
            "study_commitment": os.urandom(32),
        }
        record = a.author(
            RecordType.TRANSFER_OFFERED,
            body,
            fills=fills,
            details={"user": user},
            record_id=record_id,
            time_ms=time_ms,
        )
        store.put(record)
        if user == "user:alice":
            alice.add(record_id)
    epoch = epoch_of(int(time.time() * 1000))
    grant = await a.grant(
        subject="user:alice",
        auditor=cast(FakeHost, r.host).identity.public.sign_key,
        legal_basis="GDPR Art. 58(1)(b)",
        purpose="HCOMPL",
        epoch_from=epoch - 1,
        epoch_to=epoch + 1,
        expires_ms=int(time.time() * 1000) + 3_600_000,
        notify_after_ms=int(time.time() * 1000) + 3_600_000,
    )
    store.put(grant)
    return a, r, grant, alice


async def test_details_are_disclosed_in_pages_and_completely(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(audit_service, "MAX_DISCLOSED_RECORDS", 3)  # a full page ends a page...
    monkeypatch.setattr(audit_service, "MAX_DISCLOSURE_WALK", 4)  # ...and so does a long walk
    users = ["user:alice"] * 5 + ["user:bob", "user:bob", "user:alice"] * 3
    a, r, grant, alice = await _granted_history(tmp_path, users)
    a_key = cast(FakeHost, a.host).identity.public.sign_key
    found, note = await r.request_disclosures(a_key, grant.record_id)
    assert note == "" and {d.record_id for d in found} == alice and len(found) == len(alice) == 8
    assert all(d.fields["user"][1] == "user:alice" for d in found)
    asked = [value["after"] for channel, value in cast(FakeHost, r.host).sent if channel == "a.disclose?"]
    # Alice's records sit at 0-4, 7, 10 and 13: the first page fills up after three records,
    # the next ones stop after walking four places; the last one ends at the grant (14).
    assert asked == [0, 3, 7, 11]


async def test_two_scans_of_one_grant_at_once_both_get_every_page(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(audit_service, "MAX_DISCLOSED_RECORDS", 2)
    a, r, grant, alice = await _granted_history(tmp_path, ["user:alice", "user:bob"] * 4)
    a_key = cast(FakeHost, a.host).identity.public.sign_key
    first, second = await asyncio.gather(
        r.request_disclosures(a_key, grant.record_id), r.request_disclosures(a_key, grant.record_id)
    )
    for found, note in (first, second):
        assert note == "" and {d.record_id for d in found} == alice


async def test_an_institution_that_stops_answering_is_noted_with_what_it_disclosed(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(audit_service, "MAX_DISCLOSED_RECORDS", 3)
    monkeypatch.setattr(audit_service, "DISCLOSE_WAIT_S", 0.2)
    a, r, grant, alice = await _granted_history(tmp_path, ["user:alice", "user:bob"] * 5)
    answer = a.on_disclose_request

    def first_page_only(sender: bytes, value: Any) -> None:
        if value["after"] == 0:
            answer(sender, value)

    monkeypatch.setattr(a, "on_disclose_request", first_page_only)
    found, note = await r.request_disclosures(
        cast(FakeHost, a.host).identity.public.sign_key, grant.record_id
    )
    assert len(found) == 3 and {d.record_id for d in found} < alice
    assert note.startswith("the institution did not answer after disclosing the details of 3 records")
