"""Audit grants, scans and reports over a sample chain of pseudonymous transfer records."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from mftp.crypto.primitives import tag
from mftp.crypto.signing import SigningIdentity
from mftp.ledger import merkle, sample
from mftp.ledger.audit import (
    AuditUsageError,
    GrantError,
    make_grant_body,
    make_report_body,
    matches_root,
    open_grant,
    scan,
)
from mftp.ledger.audit_index import EpochWindows, TagIndex, fast_hmac, hmac_pads, match_index
from mftp.ledger.pseudonyms import (
    AuditStore,
    Disclosure,
    DisclosureError,
    KeyErasedError,
    PartyKeyring,
    Role,
    SlotFill,
    attribute,
    build_slots,
    commit_details,
    derive_epoch_key,
    epoch_of,
    epoch_start_ms,
    fill_slot,
)
from mftp.ledger.records import Record, RecordType, make_record
from mftp.ledger.store_memory import MemoryStore

T0 = sample.SAMPLE_TIME_MS
E0 = epoch_of(T0)
HOUR_MS = 3_600_000
ALICE, BOB, CAROL = "user:alice@hospital-a", "user:bob@hospital-a", "user:carol@hospital-b"
HOSP_A, HOSP_B = "institution:hospital-a", "institution:hospital-b"
PATIENTS = ("patient:p1@hospital-a", "patient:p2@hospital-a")
NOW_MS = T0 + 200 * 24 * HOUR_MS


@dataclass
class World:
    """Two institutions, an auditor and a chain of their records in a memory store."""

    node_a: SigningIdentity
    node_b: SigningIdentity
    auditor: SigningIdentity
    ring_a: PartyKeyring
    ring_b: PartyKeyring
    builder: sample.ChainBuilder
    store: MemoryStore
    details: AuditStore
    ids_of: dict[str, list[bytes]] = field(default_factory=dict)  # party -> record ids, in ledger order

    def append(self, records: list[Record]) -> None:
        block, cert = self.builder.next_block(records, time_ms=max(r.time_ms for r in records) + 1)
        self.store.append(block, cert)


def make_event(world: World, rng: random.Random, time_ms: int) -> Record:
    """A transfer offer or a study access with random parties; remembers who took part."""
    record_id = rng.randbytes(16)
    sender_ring, receiver_ring = (
        (world.ring_a, world.ring_b) if rng.random() < 0.7 else (world.ring_b, world.ring_a)
    )
    sender_user = rng.choice([ALICE, BOB]) if sender_ring is world.ring_a else CAROL
    parties = {Role.SENDER_USER: sender_user}
    parties[Role.SENDER_INSTITUTION] = HOSP_A if sender_ring is world.ring_a else HOSP_B
    if sender_ring is world.ring_a:
        parties[Role.PATIENT] = rng.choice(PATIENTS)
    transfer = rng.random() < 0.8
    if transfer:
        parties[Role.RECEIVER_USER] = CAROL if receiver_ring is world.ring_b else rng.choice([ALICE, BOB])
        parties[Role.RECEIVER_INSTITUTION] = HOSP_B if receiver_ring is world.ring_b else HOSP_A
    fills: dict[Role, SlotFill] = {}
    for role, party_id in parties.items():
        ring = world.ring_a if party_id in world.ring_a.parties else world.ring_b
        fills[role] = fill_slot(ring.party(party_id), record_id, time_ms, role)
        world.ids_of.setdefault(party_id, []).append(record_id)
    tags, envelope = build_slots(fills)
    commitments, openings = commit_details({"user": sender_user, "study": f"1.2.840.{rng.randrange(99)}"})
    world.details.add(record_id, openings)
    record_type = RecordType.TRANSFER_OFFERED if transfer else RecordType.STUDY_ACCESSED
    return make_record(
        world.node_a if sender_ring is world.ring_a else world.node_b,
        record_type,
        sample.sample_body(record_type, rng),
        record_id=record_id,
        time_ms=time_ms,
        tags=tags,
        envelope=envelope,
        commitments=commitments,
    )


@pytest.fixture(scope="module")
def world() -> World:
    """150 events over about four months; alice's master key rotates at the second month."""
    node_a, node_b = sample.identities(2, "audit-tests")
    auditor = sample.identities(1, "audit-tests-auditor")[0]
    genesis = sample.sample_genesis([node_a, node_b], auditors=[auditor], chain_id="mftp-audit-test")
    ring_a = PartyKeyring().add(ALICE, "user").add(BOB, "user").add(HOSP_A, "institution")
    for patient in PATIENTS:
        ring_a = ring_a.add(patient, "patient")
    ring_a, _, _ = ring_a.rotate(ALICE, E0 + 1)
    ring_b = PartyKeyring().add(CAROL, "user").add(HOSP_B, "institution")
    builder = sample.ChainBuilder(genesis, [node_a, node_b])
    world = World(node_a, node_b, auditor, ring_a, ring_b, builder, MemoryStore(), AuditStore())
    rng = random.Random(5)
    events = [make_event(world, rng, T0 + i * 19 * HOUR_MS) for i in range(150)]
    for start in range(0, len(events), 10):
        world.append(events[start : start + 10])
    return world


def rows_of(world: World, party_id: str) -> list[int]:
    """The ledger indexes of the records ``party_id`` took part in."""
    rows = []
    for record_id in world.ids_of[party_id]:
        found = world.store.record(record_id)
        assert found is not None
        rows.append(found.ledger_index)
    return rows


def grant(world: World, subject: str, *, epochs: tuple[int, int] = (E0, E0 + 6)) -> Record:
    ring = world.ring_a if subject in world.ring_a.parties else world.ring_b
    body = make_grant_body(
        ring.party(subject),
        world.auditor.public,
        legal_basis="court order 2026/17",
        purpose="HLEGAL",
        epoch_from=epochs[0],
        epoch_to=epochs[1],
        expires_ms=NOW_MS + 1,
        notify_after_ms=NOW_MS + 90 * 24 * HOUR_MS,
    )
    return make_record(
        world.node_a,
        RecordType.AUDIT_GRANT,
        body,
        record_id=random.Random(subject).randbytes(16),
        time_ms=T0,
        tags=build_slots({})[0],
    )


def test_fast_hmac_is_the_tag_primitive() -> None:
    rng = random.Random(3)
    for key_bytes in (16, 32, 64, 65):
        key = rng.randbytes(key_bytes)
        message = rng.randbytes(17)
        assert fast_hmac(hmac_pads(key), message)[:16] == tag(key, message)


def test_epoch_windows_cover_granted_months_only() -> None:
    windows = EpochWindows({E0: b"k" * 32, E0 + 2: b"m" * 32})
    assert windows.lookup(epoch_start_ms(E0) - 1)[2] is None
    assert windows.lookup(epoch_start_ms(E0))[2] is not None
    assert windows.lookup(epoch_start_ms(E0 + 1))[2] is None  # a gap between granted epochs
    lo, hi, pads = windows.lookup(epoch_start_ms(E0 + 2) + 5)
    assert (lo, hi) == (epoch_start_ms(E0 + 2), epoch_start_ms(E0 + 3)) and pads is not None
    assert windows.lookup(epoch_start_ms(E0 + 3))[2] is None
    assert EpochWindows({}).lookup(T0)[2] is None


def test_scan_finds_exactly_the_subjects_records_across_a_rotation(world: World) -> None:
    keys = open_grant(grant(world, ALICE), world.auditor)
    assert keys.subject == ALICE and keys.kind == "user"
    result = scan(world.store, keys, now_ms=NOW_MS)
    assert result.matched_ids == world.ids_of[ALICE]
    # Alice's master rotated at E0 + 1: records of both generations are found with the granted keys.
    assert {E0, E0 + 1, E0 + 2} <= {epoch_of(m.record.time_ms) for m in result.matches}
    masters = world.ring_a.party(ALICE).masters
    assert keys.epoch_keys[E0] == derive_epoch_key(masters[0][1], "user", E0)
    assert keys.epoch_keys[E0 + 1] == derive_epoch_key(masters[1][1], "user", E0 + 1)
    assert result.ledger_size == world.store.leaf_count
    assert result.ledger_root == world.store.root()
    assert f"All {result.ledger_size} records" in result.statement
    for match in result.matches:
        assert match.roles and set(match.roles) <= {Role.SENDER_USER, Role.RECEIVER_USER}
        match.proof.verify(match.record.leaf_hash, result.ledger_root)
        assert world.store.record_at(match.ledger_index) == match.record


def test_every_kind_of_subject_is_found(world: World) -> None:
    for subject in (BOB, CAROL, HOSP_A, HOSP_B, *PATIENTS):
        result = scan(world.store, open_grant(grant(world, subject), world.auditor), now_ms=NOW_MS)
        assert result.matched_ids == world.ids_of[subject], subject


def test_keys_of_another_party_or_epoch_link_nothing(world: World) -> None:
    stranger = PartyKeyring().add("user:dave@hospital-a", "user").party("user:dave@hospital-a")
    keys = open_grant(grant(world, ALICE), world.auditor)
    index = TagIndex.from_store(world.store)
    bob_epochs = {epoch: world.ring_a.party(BOB).epoch_key(epoch) for epoch in keys.epoch_keys}
    dave_epochs = {epoch: stranger.epoch_key(epoch) for epoch in keys.epoch_keys}
    alice_rows = [row for row, _ in match_index(index, "user", keys.epoch_keys)]
    bob_rows = [row for row, _ in match_index(index, "user", bob_epochs)]
    assert alice_rows == rows_of(world, ALICE) and bob_rows == rows_of(world, BOB)
    assert match_index(index, "user", dave_epochs) == []
    # Alice's keys read as an institution's or a patient's match nothing either.
    assert match_index(index, "institution", keys.epoch_keys) == []
    assert match_index(index, "patient", keys.epoch_keys) == []
    # A grant of one epoch only finds that month.
    narrow = open_grant(grant(world, ALICE, epochs=(E0 + 1, E0 + 1)), world.auditor)
    found = scan(world.store, narrow, now_ms=NOW_MS, index=index).matches
    assert found and all(epoch_of(m.record.time_ms) == E0 + 1 for m in found)


def test_parallel_match_equals_serial(world: World) -> None:
    keys = open_grant(grant(world, ALICE), world.auditor)
    small = TagIndex.from_store(world.store)
    rng = random.Random(9)
    big = TagIndex(bytes(small.data) * 1)
    for _ in range(12_000):  # random rows in the granted months around the real ones
        big.append(rng.randbytes(16), T0 + rng.randrange(100 * 24 * HOUR_MS), [rng.randbytes(16)] * 8)
    serial = match_index(big, "user", keys.epoch_keys)
    assert [row for row, _ in serial] == rows_of(world, ALICE)
    assert match_index(big, "user", keys.epoch_keys, workers=2) == serial


def test_grant_opens_for_its_auditor_only(world: World) -> None:
    record = grant(world, ALICE)
    other = sample.identities(1, "another-auditor")[0]
    with pytest.raises(AuditUsageError, match="another auditor"):
        open_grant(record, other)
    # A grant naming our key but sealed to somebody else does not open.
    foreign = make_grant_body(
        world.ring_a.party(ALICE),
        other.public,
        legal_basis="x",
        purpose="HLEGAL",
        epoch_from=E0,
        epoch_to=E0,
        expires_ms=NOW_MS,
        notify_after_ms=NOW_MS,
    )
    forged = make_record(
        world.node_a,
        RecordType.AUDIT_GRANT,
        {**foreign, "auditor": world.auditor.public.sign_key},
        record_id=b"\x77" * 16,
        time_ms=T0,
        tags=build_slots({})[0],
    )
    with pytest.raises(GrantError, match="does not open"):
        open_grant(forged, world.auditor)
    # A grant whose subject commitment was swapped is refused.
    swapped = make_record(
        world.node_a,
        RecordType.AUDIT_GRANT,
        {**record.body, "subject_commitment": bytes(32)},
        record_id=b"\x78" * 16,
        time_ms=T0,
        tags=build_slots({})[0],
    )
    with pytest.raises(GrantError, match="subject commitment"):
        open_grant(swapped, world.auditor)
    # The public body names no one.
    assert ALICE.encode() not in record.to_bytes()


def test_expired_grant_and_uncertified_sizes_are_refused(world: World) -> None:
    keys = open_grant(grant(world, ALICE), world.auditor)
    with pytest.raises(AuditUsageError, match="expired"):
        scan(world.store, keys, now_ms=keys.expires_ms)
    with pytest.raises(AuditUsageError, match="inside a block"):
        scan(world.store, keys, now_ms=NOW_MS, up_to_size=15)
    older = scan(world.store, keys, now_ms=NOW_MS, up_to_size=50)
    assert older.ledger_size == 50 and older.height == 5
    assert older.ledger_root == world.store.header(5).ledger_root
    assert [match.ledger_index for match in older.matches] == [i for i in rows_of(world, ALICE) if i < 50]


def test_disclosures_are_checked_against_commitments(world: World) -> None:
    keys = open_grant(grant(world, ALICE), world.auditor)
    first, second = world.ids_of[ALICE][:2]
    disclosures = {
        first: world.details.disclose(first, ["study"]),
        second: world.details.disclose(second, ["user"]),
    }
    result = scan(world.store, keys, now_ms=NOW_MS, disclosures=disclosures)
    assert set(result.matches[0].disclosed) == {"study"}
    assert result.matches[1].disclosed == {"user": world.details.disclose(second, ["user"]).fields["user"][1]}
    salt, _ = disclosures[first].fields["study"]
    tampered = {first: Disclosure(first, {"study": (salt, "1.2.840.999")})}
    with pytest.raises(DisclosureError):
        scan(world.store, keys, now_ms=NOW_MS, disclosures=tampered)


def test_report_goes_on_the_ledger(world: World) -> None:
    grant_record = grant(world, ALICE)
    keys = open_grant(grant_record, world.auditor)
    result = scan(world.store, keys, now_ms=NOW_MS)
    body = result.report_body()
    assert body == make_report_body(keys.grant_id, result.ledger_size, result.ledger_root, result.matched_ids)
    assert body["match_count"] == len(world.ids_of[ALICE])
    assert body["matches_root"] == merkle.root_of([merkle.leaf_hash(i) for i in sorted(world.ids_of[ALICE])])
    assert matches_root(reversed(world.ids_of[ALICE])) == body["matches_root"]
    report = make_record(
        world.auditor,
        RecordType.AUDIT_REPORT,
        body,
        record_id=b"\x79" * 16,
        time_ms=NOW_MS,
        tags=build_slots({})[0],
    )
    store = MemoryStore(dict(world.store.data))  # a copy: the shared world stays as it was
    builder = world.builder
    saved = (builder.state, builder.last_cert)
    try:
        block, cert = builder.next_block([grant_record, report], time_ms=NOW_MS)
        store.append(block, cert)
    finally:
        builder.state, builder.last_cert = saved
    assert store.record(report.record_id) is not None and store.record(grant_record.record_id) is not None
    assert store.record_ids_by_type(RecordType.AUDIT_REPORT) == [report.record_id]


def test_erased_subject_cannot_be_granted_or_attributed(world: World) -> None:
    shredded = world.ring_a.erase(ALICE)
    with pytest.raises(KeyErasedError):
        shredded.party(ALICE)  # so no grant for her can ever be made again
    for record_id in world.ids_of[ALICE][:20]:
        found = world.store.record(record_id)
        assert found is not None
        assert ALICE in attribute(world.ring_a, found.record).values()
        assert ALICE not in attribute(shredded, found.record).values()
    # An auditor's earlier grant still reads what it was granted: erasure is forward-looking,
    # so the retention period must outlast the grants (the node refuses grants past it).
    keys = open_grant(grant(world, ALICE), world.auditor)
    assert scan(world.store, keys, now_ms=NOW_MS).matched_ids == world.ids_of[ALICE]
