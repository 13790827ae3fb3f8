"""Pseudonymous party tags, identity escrow and committed details of ledger records.

Who took part in an event is never written on the ledger in clear.  Each record
carries :data:`~.records.TAG_SLOTS` (8) tags of 16 bytes, one per *role*:

====  ========================  ===================================
slot  role                      party kind that can fill it
====  ========================  ===================================
0     sender user               ``user``
1     sender institution        ``institution``
2     receiver user             ``user``
3     receiver institution      ``institution``
4     patient                   ``patient``
5-7   decoys                    (always random)
====  ========================  ===================================

A role that does not apply to a record type is a random decoy too, so an
outsider cannot even tell which roles are present.

*Tags.*  A party (user, institution or patient) has a 32-byte master key kept
by its *home institution*.  Time is cut into *epochs* (calendar months, UTC:
``epoch = (year - 1970) * 12 + month - 1``); the epoch key is
``HKDF(master, salt=b"mftp-epoch", info=kind || 0x00 || epoch(4, big-endian))``
and the tag of a record is ``tag(epoch_key, record_id || role)``
(HMAC-SHA256 truncated to 16 bytes).  Record ids are random, so the tags of one
party are unlinkable random strings to anyone without its epoch keys; handing
an auditor the keys of a few epochs reveals exactly those months.

*Escrow.*  Every filled slot also gets a sealed box holding ``[record id, role,
party id]`` (padded to a fixed size), sealed to the party's escrow X25519 key,
which its home institution holds.  Decoy slots get a box of the same size
sealed to a throw-away key, so the envelope does not reveal which slots are
real.  The box binds the record id and role, so it cannot be copied into
another record.  Each party has its own escrow key so that erasing one party
(crypto-shredding) leaves the others readable.

*Details.*  What happened (user, patient, study, purpose, outcome ...) stays in
the institution's :class:`AuditStore`; the record carries one salted commitment
per field, ``SHA-256(salt || canonical([name, value]))`` with a fresh 32-byte
salt, so fields are disclosed one by one and checked with :func:`check_disclosure`.

*Counterparties.*  The author of a transfer cannot compute the receiver's tags
(it lacks the receiver's keys): the receiving institution contributes the
:class:`SlotFill` of its own side (slots 2 and 3) for the offer's record id, and
before countersigning checks the offer with :func:`check_counterparty`.

*Rotation and erasure.*  :meth:`PartyKeyring.rotate` starts a new master from an
epoch on (a ``KEY_ROTATION`` record commits to it); :meth:`PartyKeyring.erase`
drops a party's masters and escrow key, after which its tags can no longer be
linked and its escrow boxes no longer opened.

Keyrings are plain immutable values here; keeping them on disk is the node's job.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import CryptoError, DecodeError, DecryptionError
from mftp.crypto.primitives import constant_time_equal, hkdf, random_bytes, tag
from mftp.crypto.sealing import SEAL_OVERHEAD_BYTES, seal, unseal
from mftp.crypto.signing import SigningIdentity

from .errors import LedgerInputError, LedgerUsageError
from .records import MAX_COMMITMENTS, MAX_ENVELOPE_BYTES, TAG_BYTES, TAG_SLOTS, Record

MASTER_KEY_BYTES: Final = 32
SALT_BYTES: Final = 32
MAX_PARTY_ID_CHARS: Final = 96
MAX_FIELD_NAME_CHARS: Final = 32
ESCROW_PLAINTEXT_BYTES: Final = 128  # fits [16-byte id, role, 96-byte party id] plus its length
ESCROW_BOX_BYTES: Final = ESCROW_PLAINTEXT_BYTES + SEAL_OVERHEAD_BYTES
MAX_EPOCH: Final = 12 * 10_000  # far beyond any real date; epochs travel as 4 bytes
EPOCH_SALT: Final = b"mftp-epoch"
KEY_COMMITMENT_SALT: Final = b"mftp-key-commitment"


class Role(IntEnum):
    """What a party did in an event; the value is its tag slot."""

    SENDER_USER = 0
    SENDER_INSTITUTION = 1
    RECEIVER_USER = 2
    RECEIVER_INSTITUTION = 3
    PATIENT = 4


KINDS: Final = ("user", "institution", "patient")
KIND_ROLES: Final[dict[str, tuple[Role, ...]]] = {
    "user": (Role.SENDER_USER, Role.RECEIVER_USER),
    "institution": (Role.SENDER_INSTITUTION, Role.RECEIVER_INSTITUTION),
    "patient": (Role.PATIENT,),
}
ROTATION_REASONS: Final = frozenset({"scheduled", "compromise", "erasure"})


class PseudonymUsageError(LedgerUsageError):
    """Our misuse of the pseudonym API: unknown party, wrong role for a kind, bad sizes."""


class KeyErasedError(PseudonymUsageError):
    """The keys asked for were destroyed (crypto-shredded) or never existed for that epoch."""


class EscrowError(LedgerInputError):
    """A record's escrow envelope is malformed or a box does not open to what it should."""


class CounterpartyMismatchError(LedgerInputError):
    """A counterparty's record does not carry our side's tags or escrow: refuse to countersign."""


class DisclosureError(LedgerInputError):
    """A disclosed detail does not match the commitment on the record."""


# --- epochs -----------------------------------------------------------------------------------

_DAY_MS: Final = 86_400_000
_UNIX_DAY0: Final = datetime.date(1970, 1, 1)


def epoch_of(time_ms: int) -> int:
    """The epoch (calendar month, UTC, counted from January 1970) of a record time."""
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        raise PseudonymUsageError("time_ms is a non-negative int")
    day = _UNIX_DAY0 + datetime.timedelta(days=time_ms // _DAY_MS)
    return (day.year - 1970) * 12 + day.month - 1


def epoch_start_ms(epoch: int) -> int:
    """The first millisecond of ``epoch``."""
    _check_epoch(epoch)
    year, month = divmod(epoch, 12)
    return (datetime.date(1970 + year, month + 1, 1) - _UNIX_DAY0).days * _DAY_MS


def _check_epoch(epoch: int) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise PseudonymUsageError(f"an epoch is an int from 0 to {MAX_EPOCH}")


def derive_epoch_key(master: bytes, kind: str, epoch: int) -> bytes:
    """The 32-byte epoch key of a party of ``kind`` for ``epoch`` (see the module doc)."""
    _check_epoch(epoch)
    info = kind.encode("ascii") + b"\x00" + epoch.to_bytes(4, "big")
    return hkdf(master, salt=EPOCH_SALT, info=info, length=32)


# --- parties and keyrings ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _escrow_identity(seed: bytes) -> SigningIdentity:
    # Building the X25519 key from the seed costs a scalar multiplication; parties repeat.
    return SigningIdentity(seed)


def check_party_id(party_id: str, kind: str) -> None:
    """Refuse an id that does not start with ``kind:`` or is too long (our misuse)."""
    if kind not in KINDS:
        raise PseudonymUsageError(f"party kind is one of {KINDS}, not {kind!r}")
    if not isinstance(party_id, str) or not party_id.startswith(kind + ":"):
        raise PseudonymUsageError(f"a {kind} id starts with {kind + ':'!r}")
    if len(party_id.encode("utf-8", "surrogatepass")) > MAX_PARTY_ID_CHARS:
        raise PseudonymUsageError(f"a party id is at most {MAX_PARTY_ID_CHARS} bytes")


@dataclass(frozen=True, slots=True)
class PartyKeys:
    """The secret keys of one party, held by its home institution.

    ``masters`` lists ``(from_epoch, master)`` generations, oldest first: the
    master of an epoch is the newest one starting at or before it.
    ``escrow_seed`` makes the party's escrow X25519 keypair.
    """

    party_id: str
    kind: str
    masters: tuple[tuple[int, bytes], ...]
    escrow_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_party_id(self.party_id, self.kind)
        if not self.masters:
            raise PseudonymUsageError("a party has at least one master key")
        previous = -1
        for from_epoch, master in self.masters:
            _check_epoch(from_epoch)
            if from_epoch <= previous:
                raise PseudonymUsageError("master key generations must start at increasing epochs")
            if not isinstance(master, bytes) or len(master) != MASTER_KEY_BYTES:
                raise PseudonymUsageError(f"a master key is {MASTER_KEY_BYTES} bytes")
            previous = from_epoch
        if not isinstance(self.escrow_seed, bytes) or len(self.escrow_seed) != 32:
            raise PseudonymUsageError("an escrow seed is 32 bytes")

    @classmethod
    def generate(cls, party_id: str, kind: str, *, from_epoch: int = 0) -> PartyKeys:
        """A new party with fresh random keys, tagging from ``from_epoch`` on."""
        return cls(party_id, kind, ((from_epoch, random_bytes(MASTER_KEY_BYTES)),), random_bytes(32))

    def __repr__(self) -> str:  # never print keys
        return f"PartyKeys(kind={self.kind!r}, generations={len(self.masters)})"

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles (slots) a party of this kind can fill."""
        return KIND_ROLES[self.kind]

    @property
    def escrow(self) -> SigningIdentity:
        """The escrow keypair (its ``public.box_key`` receives the sealed boxes)."""
        return _escrow_identity(self.escrow_seed)

    def master_for(self, epoch: int) -> bytes:
        """The master key in force in ``epoch``."""
        _check_epoch(epoch)
        chosen = None
        for from_epoch, master in self.masters:
            if from_epoch <= epoch:
                chosen = master
        if chosen is None:
            raise KeyErasedError(f"no master key of this {self.kind} covers epoch {epoch}")
        return chosen

    def epoch_key(self, epoch: int) -> bytes:
        """The epoch key of ``epoch`` (what a grant hands to an auditor)."""
        return derive_epoch_key(self.master_for(epoch), self.kind, epoch)

    def tag(self, record_id: bytes, time_ms: int, role: Role) -> bytes:
        """This party's tag in slot ``role`` of the record ``record_id`` made at ``time_ms``."""
        if role not in self.roles:
            raise PseudonymUsageError(f"a {self.kind} cannot fill slot {int(role)}")
        return tag(self.epoch_key(epoch_of(time_ms)), record_id + bytes([role]))


@dataclass(frozen=True, slots=True)
class PartyKeyring:
    """The party keys an institution keeps (its own, its users', its patients').

    Immutable: every change returns a new keyring.  ``erased`` remembers which
    ids were shredded, so they are never silently re-created.
    """

    parties: Mapping[str, PartyKeys] = field(default_factory=dict)
    erased: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"PartyKeyring(parties={len(self.parties)}, erased={len(self.erased)})"

    def party(self, party_id: str) -> PartyKeys:
        """The keys of ``party_id``; :class:`KeyErasedError` if erased, usage error if unknown."""
        found = self.parties.get(party_id)
        if found is not None:
            return found
        if party_id in self.erased:
            raise KeyErasedError("this party's keys were erased")
        raise PseudonymUsageError("unknown party (not in this keyring)")

    def with_party(self, keys: PartyKeys) -> PartyKeyring:
        """A keyring that also holds ``keys`` (replacing nothing: ids are unique)."""
        if keys.party_id in self.parties or keys.party_id in self.erased:
            raise PseudonymUsageError("this party is already in the keyring (or was erased)")
        return PartyKeyring({**self.parties, keys.party_id: keys}, self.erased)

    def add(self, party_id: str, kind: str, *, from_epoch: int = 0) -> PartyKeyring:
        """A keyring with a new party of fresh random keys."""
        return self.with_party(PartyKeys.generate(party_id, kind, from_epoch=from_epoch))

    def rotate(
        self,
        party_id: str,
        effective_epoch: int,
        *,
        reason: str = "scheduled",
        new_master: bytes | None = None,
    ) -> tuple[PartyKeyring, dict[str, Any], RotationOpening]:
        """Start a new master key at ``effective_epoch``.

        Returns the new keyring, the ``KEY_ROTATION`` record body to publish and
        its opening (keep it in the audit store).  Older epochs keep their keys,
        so grants over a range spanning the rotation still find every record.
        """
        old = self.party(party_id)
        if effective_epoch <= old.masters[-1][0]:
            raise PseudonymUsageError("a rotation starts after the newest master key's first epoch")
        master = random_bytes(MASTER_KEY_BYTES) if new_master is None else new_master
        keys = PartyKeys(party_id, old.kind, (*old.masters, (effective_epoch, master)), old.escrow_seed)
        body, opening = make_rotation_body(party_id, master, effective_epoch, reason)
        return PartyKeyring({**self.parties, party_id: keys}, self.erased), body, opening

    def erase(self, party_id: str) -> PartyKeyring:
        """A keyring without ``party_id``'s masters and escrow key (crypto-shredding).

        Call it once the retention period is over and the identity must become
        unrecoverable: without the masters nobody can recompute (hence link) the
        party's tags, and without the escrow key nobody can open its boxes.
        Publish the fact with :func:`make_rotation_body` (reason ``"erasure"``).
        """
        self.party(party_id)
        remaining = {pid: keys for pid, keys in self.parties.items() if pid != party_id}
        return PartyKeyring(remaining, self.erased | {party_id})


# --- rotation records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationOpening:
    """What opens a ``KEY_ROTATION`` body's commitments (kept off chain)."""

    party_id: str
    party_salt: bytes
    key_salt: bytes
    key_fingerprint: bytes


def key_fingerprint(master: bytes) -> bytes:
    """A one-way fingerprint of a master key (never the key itself)."""
    return hkdf(master, salt=KEY_COMMITMENT_SALT, info=b"fingerprint", length=32)


def make_rotation_body(
    party_id: str, new_master: bytes | None, effective_epoch: int, reason: str
) -> tuple[dict[str, Any], RotationOpening]:
    """The ``KEY_ROTATION`` body and its opening.

    ``party_commitment = SHA-256(salt || party id)`` and ``new_key_commitment =
    SHA-256(salt' || fingerprint(new master))`` with fresh salts, so rotations of
    one party do not link to each other.  For an erasure ``new_master`` is None
    and the key commitment is to random bytes (there is no new key).
    """
    if reason not in ROTATION_REASONS:
        raise PseudonymUsageError(f"rotation reason is one of {sorted(ROTATION_REASONS)}")
    if (new_master is None) != (reason == "erasure"):
        raise PseudonymUsageError("an erasure has no new master key, any other rotation has one")
    _check_epoch(effective_epoch)
    fingerprint = random_bytes(32) if new_master is None else key_fingerprint(new_master)
    opening = RotationOpening(party_id, random_bytes(SALT_BYTES), random_bytes(SALT_BYTES), fingerprint)
    body = {
        "party_commitment": hashlib.sha256(opening.party_salt + party_id.encode("utf-8")).digest(),
        "new_key_commitment": hashlib.sha256(opening.key_salt + fingerprint).digest(),
        "effective_epoch": effective_epoch,
        "reason": reason,
    }
    return body, opening


def check_rotation(body: Mapping[str, Any], opening: RotationOpening) -> None:
    """Raise :class:`DisclosureError` unless ``opening`` opens the rotation ``body``."""
    party = hashlib.sha256(opening.party_salt + opening.party_id.encode("utf-8")).digest()
    key = hashlib.sha256(opening.key_salt + opening.key_fingerprint).digest()
    if not (
        constant_time_equal(party, body["party_commitment"])
        and constant_time_equal(key, body["new_key_commitment"])
    ):
        raise DisclosureError("the rotation opening does not match the record's commitments")


# --- slots: tags and escrow ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotFill:
    """One filled slot: the party's tag and its sealed escrow box."""

    tag: bytes
    box: bytes


def _escrow_plaintext(record_id: bytes, role: Role, party_id: str) -> bytes:
    data = canonical.encode([record_id, int(role), party_id])
    # A 2-byte length, then zero padding: every box has the same size whatever the id.
    if len(data) + 2 > ESCROW_PLAINTEXT_BYTES:
        raise PseudonymUsageError("party id too long for an escrow box")
    return (len(data).to_bytes(2, "big") + data).ljust(ESCROW_PLAINTEXT_BYTES, b"\x00")


def fill_slot(party: PartyKeys, record_id: bytes, time_ms: int, role: Role) -> SlotFill:
    """The tag and escrow box of ``party`` in slot ``role`` of a record.

    The author calls it for its own parties; a receiving institution calls it
    for its side of a transfer and hands the result to the sender.
    """
    box = seal(party.escrow.public.box_key, _escrow_plaintext(record_id, role, party.party_id))
    return SlotFill(party.tag(record_id, time_ms, role), box)


def _decoy_box() -> bytes:
    # Sealed to a key nobody keeps: indistinguishable from a real box (a random
    # string would not be, X25519 public keys have a fixed top bit).
    throwaway = SigningIdentity(random_bytes(32)).public.box_key
    return seal(throwaway, random_bytes(ESCROW_PLAINTEXT_BYTES))


def build_slots(fills: Mapping[Role, SlotFill]) -> tuple[tuple[bytes, ...], bytes]:
    """The record's ``tags`` and ``envelope`` from the filled slots; every other slot is a decoy."""
    unknown = set(fills) - set(Role)
    if unknown:
        raise PseudonymUsageError(f"not fillable slots: {sorted(unknown)}")
    tags: list[bytes] = []
    boxes: list[bytes] = []
    for slot in range(TAG_SLOTS):
        fill = fills.get(Role(slot)) if slot < len(Role) else None
        if fill is None:
            tags.append(random_bytes(TAG_BYTES))
            boxes.append(_decoy_box())
            continue
        if len(fill.tag) != TAG_BYTES or len(fill.box) != ESCROW_BOX_BYTES:
            raise PseudonymUsageError(f"slot {slot}: a tag is {TAG_BYTES} bytes, a box {ESCROW_BOX_BYTES}")
        tags.append(fill.tag)
        boxes.append(fill.box)
    envelope = canonical.encode(boxes)
    if len(envelope) > MAX_ENVELOPE_BYTES:  # a constant-size envelope: only a constants change can do it
        raise PseudonymUsageError(f"escrow envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    return tuple(tags), envelope


def envelope_boxes(envelope: bytes) -> list[bytes]:
    """The per-slot boxes of an escrow envelope; :class:`EscrowError` if malformed."""
    try:
        boxes = canonical.decode(envelope, max_bytes=MAX_ENVELOPE_BYTES, max_depth=2)
    except DecodeError as exc:
        raise EscrowError(f"malformed escrow envelope: {exc}") from None
    if (
        not isinstance(boxes, list)
        or len(boxes) != TAG_SLOTS
        or not all(isinstance(box, bytes) and len(box) == ESCROW_BOX_BYTES for box in boxes)
    ):
        raise EscrowError(f"an escrow envelope is {TAG_SLOTS} boxes of {ESCROW_BOX_BYTES} bytes")
    return boxes


def open_escrow_box(party: PartyKeys, box: bytes, record_id: bytes, role: Role) -> str:
    """Open ``box`` with the party's escrow key; return the sealed party id.

    Raises :class:`EscrowError` if it does not open or was made for another
    record or slot (copied from elsewhere).
    """
    try:
        plain = unseal(party.escrow, box)
    except DecryptionError:
        raise EscrowError(f"escrow box of slot {int(role)} does not open with this party's key") from None
    length = int.from_bytes(plain[:2], "big")
    try:
        value = canonical.decode(plain[2 : 2 + length], max_bytes=ESCROW_PLAINTEXT_BYTES, max_depth=2)
    except DecodeError:
        raise EscrowError(f"escrow box of slot {int(role)} holds a malformed entry") from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != record_id
        or value[1] != int(role)
        or not isinstance(value[2], str)
    ):
        raise EscrowError(f"escrow box of slot {int(role)} was made for another record or slot")
    return value[2]


def check_slot(party: PartyKeys, record: Record, role: Role) -> None:
    """Raise :class:`CounterpartyMismatchError` unless slot ``role`` of ``record`` is ``party``'s.

    Both the tag and the escrow box must be right: a right tag with a wrong box
    would leave the record unattributable to whoever opens the escrow.
    Error messages name the slot, never the party (they may be logged).
    """
    expected = party.tag(record.record_id, record.time_ms, role)
    if not constant_time_equal(record.tags[role], expected):
        raise CounterpartyMismatchError(f"record {record.record_id.hex()}: slot {role.name} tag is not ours")
    try:
        boxes = envelope_boxes(record.envelope)
        sealed_id = open_escrow_box(party, boxes[role], record.record_id, role)
    except EscrowError as exc:
        raise CounterpartyMismatchError(f"record {record.record_id.hex()}: slot {role.name}: {exc}") from None
    if sealed_id != party.party_id:
        raise CounterpartyMismatchError(
            f"record {record.record_id.hex()}: slot {role.name} escrow names another party"
        )


def check_counterparty(keyring: PartyKeyring, record: Record, expected: Mapping[Role, str]) -> None:
    """What a receiving institution checks before countersigning a transfer.

    ``expected`` maps our side's slots (usually ``RECEIVER_INSTITUTION`` and
    ``RECEIVER_USER``) to the party ids we expect in them.  Raises
    :class:`CounterpartyMismatchError` (the sender's fault: refuse the record)
    if a tag or escrow box does not match; asking for a party we do not hold
    is a :class:`PseudonymUsageError`.
    """
    if not expected:
        raise PseudonymUsageError("name at least one slot of our side to check")
    for role, party_id in expected.items():
        check_slot(keyring.party(party_id), record, Role(role))


def tagged_roles(party: PartyKeys, record: Record) -> list[Role]:
    """The slots of ``record`` that hold ``party``'s tag (compared in constant time).

    Tags only, the escrow boxes are not opened: the one-party core of :func:`attribute`.
    Raises :class:`KeyErasedError` if no master key of the party covers the record's epoch.
    """
    return [
        role
        for role in party.roles
        if constant_time_equal(record.tags[role], party.tag(record.record_id, record.time_ms, role))
    ]


def attribute(keyring: PartyKeyring, record: Record) -> dict[Role, str]:
    """Which of ``keyring``'s parties fill which slots of ``record``, proven by tag and escrow.

    The home institution's answer to "who did this?" (ALCOA+ attributable).
    Costs one HMAC per party and role (about a microsecond each), so it is
    for answering a request about a record, not for scanning the chain.
    """
    found: dict[Role, str] = {}
    boxes: list[bytes] | None = None
    for party in keyring.parties.values():
        for role in tagged_roles(party, record):
            boxes = envelope_boxes(record.envelope) if boxes is None else boxes
            found[role] = open_escrow_box(party, boxes[role], record.record_id, role)
    return found


# --- committed details --------------------------------------------------------------------------


def detail_commitment(name: str, salt: bytes, value: Any) -> bytes:
    """``SHA-256(salt || canonical([name, value]))``: the name is bound so fields cannot swap."""
    try:
        return hashlib.sha256(salt + canonical.encode([name, value])).digest()
    except CryptoError as exc:
        raise PseudonymUsageError(f"detail {name!r} cannot be encoded: {exc}") from None


@dataclass(frozen=True, slots=True)
class Disclosure:
    """Some fields of one record's details, each with the salt that opens its commitment."""

    record_id: bytes
    fields: Mapping[str, tuple[bytes, Any]]


def commit_details(details: Mapping[str, Any]) -> tuple[dict[str, bytes], dict[str, tuple[bytes, Any]]]:
    """The record's ``commitments`` and the openings the audit store keeps, for ``details``."""
    if len(details) > MAX_COMMITMENTS:
        raise PseudonymUsageError(f"at most {MAX_COMMITMENTS} committed details per record")
    commitments: dict[str, bytes] = {}
    openings: dict[str, tuple[bytes, Any]] = {}
    for name, value in details.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_FIELD_NAME_CHARS:
            raise PseudonymUsageError(f"a detail name is 1 to {MAX_FIELD_NAME_CHARS} characters")
        salt = random_bytes(SALT_BYTES)
        commitments[name] = detail_commitment(name, salt, value)
        openings[name] = (salt, value)
    return commitments, openings


def check_disclosure(commitments: Mapping[str, bytes], disclosure: Disclosure) -> dict[str, Any]:
    """The disclosed values, each checked against the record's commitment.

    Raises :class:`DisclosureError` (the discloser's fault) for a field the
    record does not commit to or whose value or salt does not match.
    """
    values: dict[str, Any] = {}
    for name, (salt, value) in disclosure.fields.items():
        committed = commitments.get(name)
        if committed is None:
            raise DisclosureError(f"record {disclosure.record_id.hex()} commits to no field {name!r}")
        if not constant_time_equal(detail_commitment(name, salt, value), committed):
            raise DisclosureError(f"record {disclosure.record_id.hex()}: field {name!r} does not match")
        values[name] = value
    return values


class AuditStore:
    """An institution's off-chain details: ``{record id: {field: (salt, value)}}``.

    A pure in-memory structure; the node persists it (encrypted) later.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, dict[str, tuple[bytes, Any]]] = {}
        self._order: list[bytes] = []  # every id ever added, erased ones too: positions never shift

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record_id: bytes, openings: Mapping[str, tuple[bytes, Any]]) -> None:
        """Keep the openings of ``record_id`` (from :func:`commit_details`)."""
        if record_id in self._entries:
            raise PseudonymUsageError(f"details of record {record_id.hex()} are already stored")
        self._entries[record_id] = dict(openings)
        self._order.append(record_id)

    def record_ids(self) -> list[bytes]:
        """The ids of every record whose details are stored, in the order they were added."""
        return list(self._entries)

    def positioned_ids(self, start: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
        """Up to ``limit`` positions from ``start`` in the order of adding, as ``(position, id)``
        of the records still held, and the position after them (-1: the end).

        Positions never shift (erasing keeps a record's place), so a reader paging
        through while details are added or erased skips nothing still held.
        """
        if start < 0 or limit < 1:
            raise PseudonymUsageError("positions start at 0 and a page holds at least one")
        stop = start + limit
        held = [(p, rid) for p, rid in enumerate(self._order[start:stop], start) if rid in self._entries]
        return held, (stop if stop < len(self._order) else -1)

    def fields(self, record_id: bytes) -> list[str] | None:
        """The names of the details stored for ``record_id``, or None if there are none."""
        entry = self._entries.get(record_id)
        return None if entry is None else list(entry)

    def disclose(self, record_id: bytes, fields: Iterable[str]) -> Disclosure:
        """The named fields of a record, ready for :func:`check_disclosure`."""
        entry = self._entries.get(record_id)
        if entry is None:
            raise PseudonymUsageError(f"no details stored for record {record_id.hex()}")
        wanted = list(fields)
        missing = [name for name in wanted if name not in entry]
        if missing:
            raise PseudonymUsageError(f"record {record_id.hex()} has no details {missing}")
        return Disclosure(record_id, {name: entry[name] for name in wanted})

    def erase(self, record_id: bytes) -> None:
        """Forget a record's details (after the retention period)."""
        self._entries.pop(record_id, None)
