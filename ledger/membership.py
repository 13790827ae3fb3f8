"""Membership by proposal and vote on the chain, and the member directory (record types 9-11).

The flow, every step a record every member checks the same way (:class:`Book`, called by
:func:`mftp.ledger.chain.apply_block`):

1. A newcomer signs a **join request** off the chain (:func:`make_join_request`): the chain it
   wants to join, the role it wants, and its directory entry.  It is not a member, so it cannot
   author records itself.
2. A member (the sponsor) puts a ``MEMBERSHIP_PROPOSAL`` on the chain: add (carrying the join
   request), remove (a member may remove itself) or change a validator's power, with an expiry.
   The safety rails are checked here and again when the change is approved:

   * one validator change in flight at a time (no other open validator proposal, and no
     approved validator change still waiting to take effect);
   * a removal may not leave fewer than :data:`MIN_VALIDATORS` validators, and no removal or
     power change may leave a fault tolerance f below 1;
   * the validators of today, with their new powers, must still hold more than 2/3 of the new
     total power: an added validator that is slow to start cannot stall the chain.

   Every refusal says what f would become.
3. Each validator puts a ``MEMBERSHIP_VOTE`` (approve or reject) on the chain; the record's
   signature is the approval.  When approvals hold more than 2/3 of the validators' power, the
   change is scheduled like a ``MEMBERSHIP_CHANGE``: it takes effect two heights later.  When
   rejections leave no quorum possible, the proposal closes as rejected; past its expiry (by
   block time) it closes as expired.
4. A member publishes its own directory entry (``MEMBER_ENTRY``, signed by itself: name,
   country, p2p addresses, data-plane URL, TLS key fingerprint, a sequence number that must
   grow).  A newcomer's entry comes from its join request when the change takes effect; a
   member that leaves loses its entry at the same height.

Pure: no clock, no I/O; block time and height come in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import BadSignatureError, DecodeError
from mftp.crypto.signing import SIGNATURE_BYTES, SigningIdentity, verify

from . import schema as s
from .block import MAX_POWER, Validator, ValidatorSet
from .errors import InvalidBlockError, InvalidRecordError, LedgerUsageError
from .genesis import AuditNode
from .records import MAX_JOIN_REQUEST_BYTES, MEMBER_ENTRY_SCHEMA, Record, RecordType

MIN_VALIDATORS: Final = 4
MAX_OPEN_PROPOSALS: Final = 8
MIN_PROPOSAL_LIFETIME_MS: Final = 60_000
MAX_PROPOSAL_LIFETIME_MS: Final = 30 * 24 * 3600 * 1000
MAX_RECENT_OUTCOMES: Final = 32
JOIN_REQUEST_VERSION: Final = 1
_COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class MembershipRules:
    """The approval threshold of the flow: approvals must hold more than num/den of the power.

    Only the simulator's test of the tester lowers it (``BROKEN_RULES``), to show that its
    independent model of the rules catches a chain that follows a weaker rule.
    """

    num: int = 2
    den: int = 3

    def approved(self, validators: ValidatorSet, power: int) -> bool:
        """Whether approvals of ``power`` carry a change."""
        return power * self.den > validators.total_power * self.num


STANDARD_RULES: Final = MembershipRules()
BROKEN_RULES: Final = MembershipRules(1, 2)  # more than half: deliberately wrong

Pending = tuple[tuple[int, tuple[tuple[str, Any], ...]], ...]
"""Changes waiting for their height: (effective height, sorted (key, value) items)."""


def fault_tolerance(powers: Iterable[int]) -> int:
    """f: how many validators may fail, the most powerful first, and the rest still hold > 2/3."""
    ordered = sorted(powers, reverse=True)
    total, failed, f = sum(ordered), 0, 0
    for power in ordered:
        if (failed + power) * 3 >= total:
            break
        failed += power
        f += 1
    return f


# ------------------------------------------------------------------------------ directory


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One member's directory entry: who it is to people and how peers reach it."""

    key: bytes
    name: str
    country: str
    addresses: tuple[str, ...]
    data_url: str
    seq: int

    @property
    def tls_key_sha256(self) -> bytes:
        """The fingerprint of the data plane's TLS key, which is the node key (see dataplane/tls.py)."""
        return hashlib.sha256(self.key).digest()

    def to_value(self) -> dict[str, Any]:
        """The entry's map (a MEMBER_ENTRY record body); the key is its author."""
        return {
            "name": self.name,
            "country": self.country,
            "addresses": list(self.addresses),
            "data_url": self.data_url,
            "tls_key_sha256": self.tls_key_sha256,
            "seq": self.seq,
        }

    @classmethod
    def from_value(cls, key: bytes, value: Any) -> MemberEntry:
        """Check an entry map for member ``key``; :class:`InvalidRecordError` names the field."""
        s.check(MEMBER_ENTRY_SCHEMA, value, "member entry")
        if not _COUNTRY.fullmatch(value["country"]):
            raise InvalidRecordError("member entry.country: must be an ISO 3166-1 alpha-2 code such as NO")
        if value["tls_key_sha256"] != hashlib.sha256(key).digest():
            raise InvalidRecordError("member entry.tls_key_sha256: not the fingerprint of the member's key")
        url = value["data_url"]
        if url and not url.startswith("https://"):
            raise InvalidRecordError("member entry.data_url: must be empty or an https:// URL")
        for address in value["addresses"]:
            if not address.startswith(("/ip4/", "/ip6/", "/dns")):
                raise InvalidRecordError(f"member entry.addresses: {address[:40]!r} is not a multiaddr")
        return cls(key, value["name"], value["country"], tuple(value["addresses"]), url, value["seq"])

    def encode(self) -> bytes:
        """Canonical bytes of key and entry (how a pending change and a snapshot carry it)."""
        return canonical.encode({"key": self.key, "entry": self.to_value()})

    @classmethod
    def decode(cls, data: bytes) -> MemberEntry:
        """Parse :meth:`encode`'s bytes."""
        try:
            value = canonical.decode(data, max_bytes=MAX_JOIN_REQUEST_BYTES, max_depth=4)
        except DecodeError as exc:
            raise InvalidRecordError(f"member entry: {exc}") from None
        s.check({"key": s.exact_bytes(32), "entry": s.Field("map", max_len=8)}, value, "member entry")
        return cls.from_value(value["key"], value["entry"])


# ------------------------------------------------------------------------------ join request


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A newcomer's signed request to join one chain in one role."""

    chain_id: str
    genesis_hash: bytes
    role: str
    entry: MemberEntry
    time_ms: int
    encoded: bytes

    @property
    def member(self) -> bytes:
        """The newcomer's node key."""
        return self.entry.key


_JOIN_SCHEMA: Final[s.Schema] = {
    "v": s.integer(JOIN_REQUEST_VERSION, JOIN_REQUEST_VERSION),
    "chain_id": s.text(64, min_len=1),
    "genesis": s.exact_bytes(32),
    "member": s.exact_bytes(32),
    "role": s.text(16, choices=frozenset({"validator", "audit"})),
    "entry": s.Field("map", max_len=8),
    "time_ms": s.integer(),
    "sig": s.exact_bytes(SIGNATURE_BYTES),
}


def make_join_request(
    identity: SigningIdentity,
    *,
    chain_id: str,
    genesis_hash: bytes,
    role: str,
    name: str,
    country: str,
    addresses: Iterable[str],
    data_url: str,
    time_ms: int,
) -> bytes:
    """The newcomer's join request, signed by its node key (domain ``member``)."""
    entry = MemberEntry(identity.public.sign_key, name, country, tuple(addresses), data_url, time_ms)
    unsigned = {
        "v": JOIN_REQUEST_VERSION,
        "chain_id": chain_id,
        "genesis": genesis_hash,
        "member": entry.key,
        "role": role,
        "entry": entry.to_value(),
        "time_ms": time_ms,
    }
    data = canonical.encode({**unsigned, "sig": identity.sign("member", canonical.encode(unsigned))})
    try:
        parse_join_request(data)  # one validation path for built and received requests
    except InvalidRecordError as exc:
        raise LedgerUsageError(f"cannot build a join request: {exc}") from None
    return data


def parse_join_request(data: bytes) -> JoinRequest:
    """Check a join request's shape and signature; :class:`InvalidRecordError` if anything is wrong."""
    if not isinstance(data, bytes) or len(data) > MAX_JOIN_REQUEST_BYTES:
        raise InvalidRecordError("join request: not bytes, or too long")
    try:
        value = canonical.decode(data, max_bytes=MAX_JOIN_REQUEST_BYTES, max_depth=4)
    except DecodeError as exc:
        raise InvalidRecordError(f"join request: {exc}") from None
    s.check(_JOIN_SCHEMA, value, "join request")
    entry = MemberEntry.from_value(value["member"], value["entry"])
    unsigned = {k: v for k, v in value.items() if k != "sig"}
    try:
        verify(value["member"], "member", canonical.encode(unsigned), value["sig"])
    except BadSignatureError:
        raise InvalidRecordError("join request: bad signature (not signed by the newcomer's key)") from None
    return JoinRequest(value["chain_id"], value["genesis"], value["role"], entry, value["time_ms"], data)


# ------------------------------------------------------------------------------ proposals


@dataclass(frozen=True, slots=True)
class OpenProposal:
    """A proposal on the chain that is neither approved, rejected nor expired."""

    proposal_id: bytes
    sponsor: bytes
    action: str  # add | remove | power
    role: str  # validator | audit
    member: bytes
    name: str
    power: int
    expires_ms: int
    height: int  # where it was proposed
    entry: MemberEntry | None = None  # add: the newcomer's entry from its join request
    approvals: tuple[bytes, ...] = ()
    rejections: tuple[bytes, ...] = ()

    def change(self) -> tuple[tuple[str, Any], ...]:
        """The change to schedule when approved (the MEMBERSHIP_CHANGE form, plus the entry)."""
        items: dict[str, Any] = {
            "action": self.action,
            "role": self.role,
            "member": self.member,
            "name": self.name,
            "power": self.power,
        }
        if self.entry is not None:
            items["entry"] = self.entry.encode()
        return tuple(sorted(items.items()))

    def to_value(self) -> dict[str, Any]:
        """Canonical map (chain state snapshots)."""
        return {
            "id": self.proposal_id,
            "sponsor": self.sponsor,
            "action": self.action,
            "role": self.role,
            "member": self.member,
            "name": self.name,
            "power": self.power,
            "expires_ms": self.expires_ms,
            "height": self.height,
            "entry": b"" if self.entry is None else self.entry.encode(),
            "approvals": list(self.approvals),
            "rejections": list(self.rejections),
        }

    @classmethod
    def from_value(cls, value: Any) -> OpenProposal:
        """Parse :meth:`to_value`'s map."""
        key = s.exact_bytes(32)
        s.check(
            {
                "id": s.exact_bytes(16),
                "sponsor": key,
                "action": s.text(8, choices=frozenset({"add", "remove", "power"})),
                "role": s.text(16, choices=frozenset({"validator", "audit"})),
                "member": key,
                "name": s.text(64, min_len=1),
                "power": s.integer(0, MAX_POWER),
                "expires_ms": s.integer(),
                "height": s.integer(),
                "entry": s.some_bytes(MAX_JOIN_REQUEST_BYTES),
                "approvals": s.list_of(key, 64),
                "rejections": s.list_of(key, 64),
            },
            value,
            "state.proposals",
        )
        entry = MemberEntry.decode(value["entry"]) if value["entry"] else None
        return cls(
            value["id"],
            value["sponsor"],
            value["action"],
            value["role"],
            value["member"],
            value["name"],
            value["power"],
            value["expires_ms"],
            value["height"],
            entry,
            tuple(value["approvals"]),
            tuple(value["rejections"]),
        )


def _new_validator_powers(
    validators: ValidatorSet, action: str, member: bytes, power: int
) -> dict[bytes, int]:
    powers = {v.sign_key: v.power for v in validators.validators}
    if action == "remove":
        powers.pop(member, None)
    else:
        powers[member] = power
    return powers


def validator_change_problem(validators: ValidatorSet, action: str, member: bytes, power: int) -> str | None:
    """Why the safety rails refuse this validator change (None if they allow it).

    Every reason says what the fault tolerance f would become.
    """
    new = _new_validator_powers(validators, action, member, power)
    total = sum(new.values())
    f_now, f_new = fault_tolerance(v.power for v in validators.validators), fault_tolerance(new.values())
    after = f"fault tolerance f would become {f_new} (it is {f_now})"
    if action == "remove" and len(new) < MIN_VALIDATORS:
        return f"it would leave {len(new)} validators, fewer than {MIN_VALIDATORS}: {after}"
    if action != "add" and f_new < 1:
        return f"no validator could fail any more: {after}"
    current = sum(p for key, p in new.items() if key in validators)
    if current * 3 <= total * 2:
        return (
            f"today's validators would hold {current} of {total} power, not more than 2/3: the chain "
            f"would stop whenever the new validator is not voting; {after}"
        )
    if len(new) > 64:
        return "a validator set has at most 64 members"
    return None


# ------------------------------------------------------------------------------ the book


class Book:
    """The membership part of one block's state transition, applied record by record.

    Built from the state before the block; :meth:`expire` runs first (block time), then
    :meth:`apply` for each membership record in block order.  It raises
    :class:`InvalidBlockError` for a record that breaks a rule: the block is invalid, and a
    proposer evicts that record from its mempool.
    """

    def __init__(
        self,
        *,
        chain_id: str,
        genesis_hash: bytes,
        height: int,
        block_time_ms: int,
        validators: ValidatorSet,
        auditors: tuple[AuditNode, ...],
        pending: Pending,
        directory: tuple[MemberEntry, ...],
        proposals: tuple[OpenProposal, ...],
        recent: tuple[tuple[bytes, str, int], ...],
        delay_blocks: int,
        rules: MembershipRules = STANDARD_RULES,
    ) -> None:
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.height = height
        self.time_ms = block_time_ms
        self.validators = validators
        self.auditors = auditors
        self.directory = {e.key: e for e in directory}
        self.proposals = {p.proposal_id: p for p in proposals}
        self.scheduled: list[tuple[int, tuple[tuple[str, Any], ...]]] = []
        self.pending = pending
        self.recent = list(recent)
        self.delay_blocks = delay_blocks
        self.rules = rules

    # ---------------------------------------------------------------- results

    def result(
        self,
    ) -> tuple[tuple[MemberEntry, ...], tuple[OpenProposal, ...], tuple[tuple[bytes, str, int], ...]]:
        """Directory (by key), open proposals (in proposal order) and recent outcomes."""
        directory = tuple(sorted(self.directory.values(), key=lambda e: e.key))
        return directory, tuple(self.proposals.values()), tuple(self.recent[-MAX_RECENT_OUTCOMES:])

    def _close(self, proposal: OpenProposal, outcome: str, at: int) -> None:
        del self.proposals[proposal.proposal_id]
        self.recent.append((proposal.proposal_id, outcome, at))

    # ---------------------------------------------------------------- rules

    def expire(self) -> None:
        """Close the proposals whose expiry the block's time has passed."""
        for proposal in list(self.proposals.values()):
            if proposal.expires_ms < self.time_ms:
                self._close(proposal, "expired", self.height)

    def apply(self, record: Record) -> None:
        """Check and apply one MEMBER_ENTRY, MEMBERSHIP_PROPOSAL or MEMBERSHIP_VOTE record."""
        where = f"block {self.height}: {record.type.name.lower()} {record.record_id.hex()}"
        try:
            if record.type is RecordType.MEMBER_ENTRY:
                self._entry(record, where)
            elif record.type is RecordType.MEMBERSHIP_PROPOSAL:
                self._proposal(record, where)
            elif record.type is RecordType.MEMBERSHIP_VOTE:
                self._vote(record, where)
        except InvalidRecordError as exc:
            raise InvalidBlockError(f"{where}: {exc}") from None

    def _name_of(self, key: bytes) -> str | None:
        validator = self.validators.get(key)
        if validator is not None:
            return validator.name
        return next((a.name for a in self.auditors if a.sign_key == key), None)

    def _entry(self, record: Record, where: str) -> None:
        entry = MemberEntry.from_value(record.author, record.body)
        name = self._name_of(record.author)
        if entry.name != name:
            raise InvalidBlockError(f"{where}: the entry's name is not the member's name on the chain")
        old = self.directory.get(record.author)
        if old is not None and entry.seq <= old.seq:
            raise InvalidBlockError(f"{where}: seq {entry.seq} does not follow the entry's seq {old.seq}")
        self.directory[record.author] = entry

    def _validator_change_waiting(self) -> bool:
        if any(p.role == "validator" for p in self.proposals.values()):
            return True
        waiting = [dict(change) for _at, change in (*self.pending, *self.scheduled)]
        return any(change["role"] == "validator" for change in waiting)

    def _proposal(self, record: Record, where: str) -> None:
        body = record.body
        action, role, member, power = body["action"], body["role"], body["member"], body["power"]
        lifetime = body["expires_ms"] - self.time_ms
        if not MIN_PROPOSAL_LIFETIME_MS <= lifetime <= MAX_PROPOSAL_LIFETIME_MS:
            raise InvalidBlockError(
                f"{where}: expiry must be {MIN_PROPOSAL_LIFETIME_MS // 1000} s to "
                f"{MAX_PROPOSAL_LIFETIME_MS // 86_400_000} days after the block's time"
            )
        if len(self.proposals) >= MAX_OPEN_PROPOSALS:
            raise InvalidBlockError(f"{where}: {MAX_OPEN_PROPOSALS} proposals are open already")
        if any(p.member == member for p in self.proposals.values()):
            raise InvalidBlockError(f"{where}: a proposal for this member is open already")
        if role == "validator" and self._validator_change_waiting():
            raise InvalidBlockError(f"{where}: one validator change at a time, and one is in flight")
        entry = None
        if action == "add":
            entry = self._check_add(body, where)
        else:
            self._check_existing(body, where)
        if role == "validator":
            problem = validator_change_problem(self.validators, action, member, power)
            if problem is not None:
                raise InvalidBlockError(f"{where}: refused: {problem}")
        self.proposals[record.record_id] = OpenProposal(
            record.record_id,
            record.author,
            action,
            role,
            member,
            body["name"],
            power,
            body["expires_ms"],
            self.height,
            entry,
        )

    def _check_add(self, body: dict[str, Any], where: str) -> MemberEntry:
        member, role = body["member"], body["role"]
        if self._name_of(member) is not None:
            raise InvalidBlockError(f"{where}: already a member")
        taken = {v.name.casefold() for v in self.validators.validators}
        taken |= {a.name.casefold() for a in self.auditors}
        taken |= {p.name.casefold() for p in self.proposals.values()}
        if body["name"].casefold() in taken:
            raise InvalidBlockError(f"{where}: the name {body['name']!r} is taken")
        if (role == "validator") != (body["power"] >= 1):
            raise InvalidBlockError(f"{where}: a validator needs power >= 1, an audit node power 0")
        request = parse_join_request(body["request"])
        if request.chain_id != self.chain_id or request.genesis_hash != self.genesis_hash:
            raise InvalidBlockError(f"{where}: the join request is for another chain")
        if request.member != member or request.role != role or request.entry.name != body["name"]:
            raise InvalidBlockError(f"{where}: the join request does not match the proposal")
        return request.entry

    def _check_existing(self, body: dict[str, Any], where: str) -> None:
        member, role, action = body["member"], body["role"], body["action"]
        if body["request"]:
            raise InvalidBlockError(f"{where}: only an addition carries a join request")
        is_validator = member in self.validators
        if (role == "validator") != is_validator or (role == "audit" and self._name_of(member) is None):
            raise InvalidBlockError(f"{where}: not a member in that role")
        if self._name_of(member) != body["name"]:
            raise InvalidBlockError(f"{where}: the name is not the member's name on the chain")
        if action == "power":
            current = self.validators.get(member)
            if role != "validator" or current is None or body["power"] in (0, current.power):
                raise InvalidBlockError(f"{where}: a power change names a validator and a new power >= 1")
        elif body["power"] != 0:
            raise InvalidBlockError(f"{where}: a removal carries power 0")

    def _vote(self, record: Record, where: str) -> None:
        if record.author not in self.validators:
            raise InvalidBlockError(f"{where}: only a validator votes on membership")
        proposal = self.proposals.get(record.body["proposal"])
        if proposal is None:
            raise InvalidBlockError(f"{where}: no open proposal with that id")
        if record.author in proposal.approvals or record.author in proposal.rejections:
            raise InvalidBlockError(f"{where}: this validator has voted on the proposal already")
        if record.body["approve"]:
            proposal = replace(proposal, approvals=(*proposal.approvals, record.author))
        else:
            proposal = replace(proposal, rejections=(*proposal.rejections, record.author))
        self.proposals[proposal.proposal_id] = proposal
        vset = self.validators
        if self.rules.approved(vset, vset.power_of(proposal.approvals)):
            self._approve(proposal)
        elif not vset.has_quorum(vset.total_power - vset.power_of(proposal.rejections)):
            self._close(proposal, "rejected", self.height)

    def _approve(self, proposal: OpenProposal) -> None:
        """Schedule the change, unless it no longer applies (then the proposal closes as void)."""
        name = self._name_of(proposal.member)
        still = name is None if proposal.action == "add" else name == proposal.name
        if still and proposal.role == "validator":
            problem = validator_change_problem(
                self.validators, proposal.action, proposal.member, proposal.power
            )
            still = problem is None
        if not still:
            self._close(proposal, "void", self.height)
            return
        effective = self.height + self.delay_blocks
        self.scheduled.append((effective, proposal.change()))
        self._close(proposal, "approved", effective)


def activate(
    validators: ValidatorSet,
    auditors: tuple[AuditNode, ...],
    directory: tuple[MemberEntry, ...],
    due: list[dict[str, Any]],
) -> tuple[ValidatorSet, tuple[AuditNode, ...], tuple[MemberEntry, ...]]:
    """Apply the changes due at one height (MEMBERSHIP_CHANGE and approved proposals alike)."""
    members = {v.sign_key: v for v in validators.validators}
    audit = {a.sign_key: a for a in auditors}
    entries = {e.key: e for e in directory}
    for change in due:
        key = change["member"]
        if change["action"] == "add" and key not in members and key not in audit:
            if change["role"] == "validator":
                members[key] = Validator(change["name"], key, change["power"])
            else:
                audit[key] = AuditNode(change["name"], key)
            if change.get("entry"):
                entries[key] = MemberEntry.decode(change["entry"])
        elif change["action"] == "remove":
            if change["role"] == "validator" and len(members) > 1:
                members.pop(key, None)
            elif change["role"] == "audit":
                audit.pop(key, None)
            if key not in members and key not in audit:
                entries.pop(key, None)  # a member that left is no longer dialled
        elif change["action"] == "power" and key in members:
            members[key] = Validator(members[key].name, key, change["power"])
    directory_out = tuple(sorted(entries.values(), key=lambda e: e.key))
    return ValidatorSet(members.values()), tuple(audit.values()), directory_out
