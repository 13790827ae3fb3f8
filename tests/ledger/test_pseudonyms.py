"""Party tags, escrow, committed details, counterparty checks, rotation and crypto-shredding."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from mftp.crypto.primitives import tag
from mftp.ledger import sample
from mftp.ledger.pseudonyms import (
    ESCROW_BOX_BYTES,
    AuditStore,
    CounterpartyMismatchError,
    Disclosure,
    DisclosureError,
    EscrowError,
    KeyErasedError,
    PartyKeyring,
    PartyKeys,
    PseudonymUsageError,
    Role,
    RotationOpening,
    SlotFill,
    attribute,
    build_slots,
    check_counterparty,
    check_disclosure,
    check_rotation,
    commit_details,
    envelope_boxes,
    epoch_of,
    epoch_start_ms,
    fill_slot,
    make_rotation_body,
    open_escrow_box,
)
from mftp.ledger.records import MAX_ENVELOPE_BYTES, Record, RecordType, make_record

T0 = sample.SAMPLE_TIME_MS
AUTHOR = sample.identities(1, "pseudonym-tests")[0]
ALICE = "user:alice@hospital-a"
HOSP_A = "institution:hospital-a"
PATIENT = "patient:MRN-0042@hospital-a"
CAROL = "user:carol@hospital-b"
HOSP_B = "institution:hospital-b"


def fixed_party(party_id: str, kind: str, seed: int) -> PartyKeys:
    rng = random.Random(seed)
    return PartyKeys(party_id, kind, ((0, rng.randbytes(32)),), rng.randbytes(32))


@pytest.fixture(scope="module")
def ring_a() -> PartyKeyring:
    ring = PartyKeyring()
    for party_id, kind, seed in ((ALICE, "user", 1), (HOSP_A, "institution", 2), (PATIENT, "patient", 3)):
        ring = ring.with_party(fixed_party(party_id, kind, seed))
    return ring


@pytest.fixture(scope="module")
def ring_b() -> PartyKeyring:
    return PartyKeyring().with_party(fixed_party(CAROL, "user", 4)).add(HOSP_B, "institution")


def offer(ring_a: PartyKeyring, ring_b: PartyKeyring, *, record_id: bytes, time_ms: int = T0) -> Record:
    """A transfer offer from alice (hospital A) to carol (hospital B) about the patient."""
    ours = {
        Role.SENDER_USER: ring_a.party(ALICE),
        Role.SENDER_INSTITUTION: ring_a.party(HOSP_A),
        Role.PATIENT: ring_a.party(PATIENT),
    }
    fills = {role: fill_slot(party, record_id, time_ms, role) for role, party in ours.items()}
    # The receiver's side is contributed by the receiving institution.
    fills[Role.RECEIVER_USER] = fill_slot(ring_b.party(CAROL), record_id, time_ms, Role.RECEIVER_USER)
    fills[Role.RECEIVER_INSTITUTION] = fill_slot(
        ring_b.party(HOSP_B), record_id, time_ms, Role.RECEIVER_INSTITUTION
    )
    return signed(fills, record_id=record_id, time_ms=time_ms)


def signed(fills: dict[Role, SlotFill], *, record_id: bytes, time_ms: int = T0) -> Record:
    tags, envelope = build_slots(fills)
    body = sample.sample_body(RecordType.TRANSFER_OFFERED, random.Random(record_id))
    return make_record(
        AUTHOR,
        RecordType.TRANSFER_OFFERED,
        body,
        record_id=record_id,
        time_ms=time_ms,
        tags=tags,
        envelope=envelope,
    )


# --- epochs and tags ----------------------------------------------------------------------------


def test_epochs_are_calendar_months() -> None:
    assert epoch_of(0) == 0
    assert epoch_of(T0) == (2023 - 1970) * 12 + 10  # 2023-11-14
    for epoch in (0, 1, 11, 12, epoch_of(T0), 2000):
        start = epoch_start_ms(epoch)
        assert epoch_of(start) == epoch
        assert epoch_of(start - 1) == epoch - 1 if epoch else True
    with pytest.raises(PseudonymUsageError):
        epoch_of(-1)


def test_tag_is_hmac_of_record_id_and_role_under_the_epoch_key(ring_a: PartyKeyring) -> None:
    alice = ring_a.party(ALICE)
    record_id = bytes(range(16))
    key = alice.epoch_key(epoch_of(T0))
    assert alice.tag(record_id, T0, Role.RECEIVER_USER) == tag(key, record_id + b"\x02")
    assert alice.epoch_key(epoch_of(T0) + 1) != key
    with pytest.raises(PseudonymUsageError):
        alice.tag(record_id, T0, Role.PATIENT)  # a user never fills the patient slot


def test_tags_of_one_user_are_unlinkable_random_strings(ring_a: PartyKeyring) -> None:
    alice = ring_a.party(ALICE)
    rng = random.Random(7)
    count = 4000
    tags = [
        alice.tag(rng.randbytes(16), T0 + rng.randrange(90 * 86_400_000), rng.choice(alice.roles))
        for _ in range(count)
    ]
    assert len(set(tags)) == count  # no tag ever repeats
    data = b"".join(tags)
    # Chi-square of byte frequencies, 255 degrees of freedom: mean 255, sd ~22.6.
    expected = len(data) / 256
    chi2 = sum((observed - expected) ** 2 / expected for observed in Counter(data).values())
    chi2 += (256 - len(Counter(data))) * expected
    assert 255 - 6 * 22.6 < chi2 < 255 + 6 * 22.6
    # Monobit: the fraction of one bits is 1/2 within 6 standard deviations.
    bits = len(data) * 8
    ones = sum(bin(byte).count("1") for byte in data)
    assert abs(ones - bits / 2) < 6 * (bits / 4) ** 0.5
    # Every bit position of the tag is balanced too (no fixed bits, as X25519 keys have).
    for position in range(128):
        set_bits = sum(item[position // 8] >> (position % 8) & 1 for item in tags)
        assert abs(set_bits - count / 2) < 6 * (count / 4) ** 0.5


def test_no_identity_or_unkeyed_hash_of_one_reaches_the_record(
    ring_a: PartyKeyring, ring_b: PartyKeyring
) -> None:
    record = offer(ring_a, ring_b, record_id=b"\x01" * 16)
    data = record.to_bytes()
    for party_id in (ALICE, HOSP_A, PATIENT, CAROL, HOSP_B):
        assert party_id.encode() not in data
        assert hashlib.sha256(party_id.encode()).digest() not in data
        assert hashlib.sha256(party_id.split(":", 1)[1].encode()).digest() not in data


# --- slots and escrow ----------------------------------------------------------------------------


def test_envelope_has_a_fixed_size_whatever_slots_are_real(
    ring_a: PartyKeyring, ring_b: PartyKeyring
) -> None:
    full = offer(ring_a, ring_b, record_id=b"\x02" * 16)
    only_one = signed(
        {Role.SENDER_USER: fill_slot(ring_a.party(ALICE), b"\x03" * 16, T0, Role.SENDER_USER)},
        record_id=b"\x03" * 16,
    )
    assert len(full.envelope) == len(only_one.envelope) <= MAX_ENVELOPE_BYTES
    assert all(len(box) == ESCROW_BOX_BYTES for box in envelope_boxes(only_one.envelope))
    with pytest.raises(EscrowError):
        envelope_boxes(b"\x90")


def test_home_institution_attributes_its_slots_by_tag_and_escrow(
    ring_a: PartyKeyring, ring_b: PartyKeyring
) -> None:
    record = offer(ring_a, ring_b, record_id=b"\x04" * 16)
    assert attribute(ring_a, record) == {
        Role.SENDER_USER: ALICE,
        Role.SENDER_INSTITUTION: HOSP_A,
        Role.PATIENT: PATIENT,
    }
    assert attribute(ring_b, record) == {Role.RECEIVER_USER: CAROL, Role.RECEIVER_INSTITUTION: HOSP_B}
    stranger = PartyKeyring().add("user:mallory@elsewhere", "user")
    assert attribute(stranger, record) == {}
    boxes = envelope_boxes(record.envelope)
    with pytest.raises(EscrowError, match="does not open"):
        open_escrow_box(ring_b.party(CAROL), boxes[Role.SENDER_USER], record.record_id, Role.SENDER_USER)
    with pytest.raises(EscrowError, match="another record"):  # a box copied into another record
        open_escrow_box(ring_a.party(ALICE), boxes[Role.SENDER_USER], b"\x05" * 16, Role.SENDER_USER)


# --- counterparty check --------------------------------------------------------------------------


def test_receiver_accepts_an_offer_with_its_own_side(ring_a: PartyKeyring, ring_b: PartyKeyring) -> None:
    record = offer(ring_a, ring_b, record_id=b"\x06" * 16)
    check_counterparty(ring_b, record, {Role.RECEIVER_USER: CAROL, Role.RECEIVER_INSTITUTION: HOSP_B})


def test_receiver_refuses_a_mismatched_tag_or_escrow(ring_a: PartyKeyring, ring_b: PartyKeyring) -> None:
    record_id = b"\x07" * 16
    carol, hosp_b = ring_b.party(CAROL), ring_b.party(HOSP_B)
    good_user = fill_slot(carol, record_id, T0, Role.RECEIVER_USER)
    good_inst = fill_slot(hosp_b, record_id, T0, Role.RECEIVER_INSTITUTION)
    other_record = fill_slot(carol, b"\x08" * 16, T0, Role.RECEIVER_USER)
    wrong = {
        "tag of another record": other_record,
        "right tag, box of another record": SlotFill(good_user.tag, other_record.box),
        "right tag, box of another party": SlotFill(
            good_user.tag, fill_slot(ring_a.party(ALICE), record_id, T0, Role.RECEIVER_USER).box
        ),
        "random tag": SlotFill(bytes(16), good_user.box),
    }
    expected = {Role.RECEIVER_USER: CAROL, Role.RECEIVER_INSTITUTION: HOSP_B}
    for user_fill in wrong.values():
        record = signed(
            {Role.RECEIVER_USER: user_fill, Role.RECEIVER_INSTITUTION: good_inst}, record_id=record_id
        )
        with pytest.raises(CounterpartyMismatchError, match="RECEIVER_USER"):
            check_counterparty(ring_b, record, expected)
    decoy_side = signed({Role.RECEIVER_USER: good_user}, record_id=record_id)
    with pytest.raises(CounterpartyMismatchError, match="RECEIVER_INSTITUTION"):
        check_counterparty(ring_b, decoy_side, expected)
    with pytest.raises(PseudonymUsageError):
        check_counterparty(ring_b, decoy_side, {Role.RECEIVER_USER: ALICE})  # not our party
    with pytest.raises(PseudonymUsageError):
        check_counterparty(ring_b, decoy_side, {})


# --- details -------------------------------------------------------------------------------------


def test_details_are_disclosed_field_by_field_and_tampering_is_refused() -> None:
    details = {"user": ALICE, "patient": PATIENT, "study": "1.2.840.99.1", "purpose": "TREAT", "size": 7}
    commitments, openings = commit_details(details)
    store = AuditStore()
    record_id = b"\x09" * 16
    store.add(record_id, openings)
    disclosure = store.disclose(record_id, ["study", "purpose"])
    assert check_disclosure(commitments, disclosure) == {"study": "1.2.840.99.1", "purpose": "TREAT"}
    salt, _ = disclosure.fields["study"]
    tampered = [
        {"study": (salt, "1.2.840.99.2")},  # another value
        {"study": (bytes(32), "1.2.840.99.1")},  # another salt
        {"purpose": (salt, "1.2.840.99.1")},  # one field's opening passed off as another's
        {"outcome": (salt, "complete")},  # a field the record does not commit to
    ]
    for fields in tampered:
        with pytest.raises(DisclosureError):
            check_disclosure(commitments, Disclosure(record_id, fields))
    with pytest.raises(PseudonymUsageError):
        store.disclose(record_id, ["diagnosis"])
    store.erase(record_id)
    with pytest.raises(PseudonymUsageError):
        store.disclose(record_id, ["study"])


# --- rotation and erasure ------------------------------------------------------------------------


def test_rotation_is_a_record_and_keeps_old_epochs(ring_a: PartyKeyring) -> None:
    epoch = epoch_of(T0)
    rotated, body, opening = ring_a.rotate(ALICE, epoch + 1)
    before, after = ring_a.party(ALICE), rotated.party(ALICE)
    assert after.epoch_key(epoch) == before.epoch_key(epoch)
    assert after.epoch_key(epoch + 1) != before.epoch_key(epoch + 1)
    record = make_record(
        AUTHOR,
        RecordType.KEY_ROTATION,
        body,
        record_id=b"\x0a" * 16,
        time_ms=T0,
        tags=build_slots({})[0],
    )
    check_rotation(record.body, opening)
    with pytest.raises(DisclosureError):
        check_rotation(record.body, RotationOpening(CAROL, opening.party_salt, opening.key_salt, b"x" * 32))
    with pytest.raises(PseudonymUsageError):
        rotated.rotate(ALICE, epoch + 1)  # not after the newest generation
    erasure, _ = make_rotation_body(ALICE, None, epoch + 2, "erasure")
    assert erasure["reason"] == "erasure"


def test_crypto_shredding_makes_tags_unlinkable_and_escrow_unreadable(
    ring_a: PartyKeyring, ring_b: PartyKeyring
) -> None:
    records = [offer(ring_a, ring_b, record_id=bytes([0x10 + i]) * 16) for i in range(3)]
    for record in records:
        assert attribute(ring_a, record)[Role.SENDER_USER] == ALICE
    shredded = ring_a.erase(ALICE)
    with pytest.raises(KeyErasedError):
        shredded.party(ALICE)
    with pytest.raises(PseudonymUsageError):
        shredded.add(ALICE, "user")  # an erased id is never silently re-created
    for record in records:
        # Nobody left holds a key that recomputes alice's tags or opens her box.
        assert Role.SENDER_USER not in attribute(shredded, record)
        assert Role.SENDER_USER not in attribute(ring_b, record)
        box = envelope_boxes(record.envelope)[Role.SENDER_USER]
        for party in [*shredded.parties.values(), *ring_b.parties.values()]:
            with pytest.raises(EscrowError):
                open_escrow_box(party, box, record.record_id, Role.SENDER_USER)
    # The rest of the institution is untouched.
    assert attribute(shredded, records[0])[Role.SENDER_INSTITUTION] == HOSP_A


def test_longest_party_id_fits_its_escrow_box() -> None:
    longest = "user:" + "x" * (96 - len("user:"))
    party = PartyKeys.generate(longest, "user")
    fill = fill_slot(party, b"\x20" * 16, T0, Role.SENDER_USER)
    assert open_escrow_box(party, fill.box, b"\x20" * 16, Role.SENDER_USER) == longest
    with pytest.raises(PseudonymUsageError):
        PartyKeys.generate(longest + "x", "user")
    with pytest.raises(PseudonymUsageError):
        PartyKeys.generate("alice", "user")  # the id names its kind
