"""This node's part in the membership flow: proposals, votes, its own directory entry, and lifecycles.

Every record is first checked against the chain's rules on the current state (the same
:class:`~mftp.ledger.membership.Book` the chain applies), so a proposal the safety rails refuse
is answered at once with the reason (what f would become) instead of entering the mempool and
being evicted from the next block without a word.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from enum import Enum
from typing import Any, Final, Protocol

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.chain import MEMBERSHIP_DELAY_BLOCKS, ChainState
from mftp.ledger.errors import InvalidBlockError, InvalidRecordError
from mftp.ledger.membership import MAX_PROPOSAL_LIFETIME_MS, MIN_PROPOSAL_LIFETIME_MS, Book, MemberEntry
from mftp.ledger.records import TAG_SLOTS, Record, RecordType, make_record

from ..clock import Clock
from ..config import Config
from ..errors import NodeUsageError
from ..lifecycle import Lifecycle
from . import directory

log = logging.getLogger("mftp.node.membership")

DEFAULT_LIFETIME_MS: Final = 7 * 24 * 3600 * 1000
ENTRY_RETRY_MS: Final = 30_000  # our entry, submitted but not yet on the chain, is sent again after this


class ProposalState(Enum):
    """Where a membership proposal is, as this node has seen the chain."""

    PENDING = "pending"
    APPROVED = "approved"  # more than 2/3 approved; takes effect two heights later
    EFFECTIVE = "effective"
    REJECTED = "rejected"
    EXPIRED = "expired"
    VOID = "void"  # approved, but no longer applicable (the member left meanwhile...)


_P = ProposalState
PROPOSAL_LIFECYCLE: Final = Lifecycle(
    "membership proposal",
    {
        _P.PENDING: frozenset({_P.APPROVED, _P.REJECTED, _P.EXPIRED, _P.VOID}),
        _P.APPROVED: frozenset({_P.EFFECTIVE}),
        _P.EFFECTIVE: frozenset(),
        _P.REJECTED: frozenset(),
        _P.EXPIRED: frozenset(),
        _P.VOID: frozenset(),
    },
)


class MembershipHost(Protocol):
    """What the service needs of the running node."""

    config: Config
    identity: SigningIdentity
    clock: Clock

    @property
    def chain_state(self) -> ChainState:
        """The chain state after the newest stored block."""

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer signed records to the mempool."""


def _hex_id(text: str, what: str = "proposal id") -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 16:
        raise NodeUsageError(f"{what} is 32 hex digits")
    return value


class MembershipService:
    """Builds, checks and submits this node's membership records; tracks proposals' lifecycles."""

    def __init__(self, host: MembershipHost) -> None:
        self.host = host
        self.states: dict[bytes, tuple[ProposalState, int]] = {}  # id -> (state, height)
        self._entry_sent_ms = -(10**18)
        self._entry_sent_seq = -1

    # ---------------------------------------------------------------- reading

    def directory(self) -> list[dict[str, Any]]:
        """The members now and the candidates of open proposals."""
        return [m.view() for m in directory.members(self.host.chain_state, candidates=True)]

    def proposals(self) -> list[dict[str, Any]]:
        """Open proposals (with their expiry and votes) and recent outcomes."""
        state = self.host.chain_state
        self.follow(state)
        vset = state.validators
        out = []
        for p in state.proposals:
            out.append(
                {
                    "id": p.proposal_id.hex(),
                    "state": ProposalState.PENDING.value,
                    "action": p.action,
                    "role": p.role,
                    "member": p.member.hex(),
                    "name": p.name,
                    "power": p.power,
                    "sponsor": _name(state, p.sponsor),
                    "proposed_at": p.height,
                    "expires_ms": p.expires_ms,
                    "approvals": sorted(_name(state, k) for k in p.approvals),
                    "rejections": sorted(_name(state, k) for k in p.rejections),
                    "approved_power": vset.power_of(p.approvals),
                    "total_power": vset.total_power,
                    "country": p.entry.country if p.entry else "",
                }
            )
        for pid, outcome, height in reversed(state.recent):
            known = self.states.get(pid)
            out.append(
                {
                    "id": pid.hex(),
                    "state": known[0].value if known else outcome,
                    "height": height,  # approved: where it takes effect; else where it closed
                }
            )
        return out

    def follow(self, state: ChainState) -> None:
        """Move each proposal's lifecycle to what the chain says (after every stored block)."""
        for p in state.proposals:
            self.states.setdefault(p.proposal_id, (ProposalState.PENDING, p.height))
        for pid, outcome, height in state.recent:
            current, _ = self.states.get(pid, (ProposalState.PENDING, height))
            target = ProposalState(outcome)
            if target is ProposalState.APPROVED and state.height + 1 >= height:
                target = ProposalState.EFFECTIVE  # the new set votes on ``height``: in force
            if current is ProposalState.PENDING and target is ProposalState.EFFECTIVE:
                current = PROPOSAL_LIFECYCLE.move(current, ProposalState.APPROVED)
            if current is not target:
                current = PROPOSAL_LIFECYCLE.move(current, target)
            self.states[pid] = (current, height)
        if len(self.states) > 256:  # keep the newest only: the chain has the rest
            for pid in list(self.states)[: len(self.states) - 256]:
                del self.states[pid]

    # ---------------------------------------------------------------- acting

    async def propose(
        self,
        *,
        action: str,
        role: str,
        member: bytes,
        name: str,
        power: int,
        request: bytes = b"",
        lifetime_ms: int = DEFAULT_LIFETIME_MS,
    ) -> Record:
        """Sponsor a proposal; a usage error (400) says why the chain's rules would refuse it."""
        if not MIN_PROPOSAL_LIFETIME_MS <= lifetime_ms <= MAX_PROPOSAL_LIFETIME_MS:
            raise NodeUsageError("a proposal lives 1 minute to 30 days")
        body = {
            "action": action,
            "role": role,
            "member": member,
            "name": name,
            "power": power,
            "expires_ms": self.host.clock.now_ms() + lifetime_ms,
            "request": request,
        }
        record = await self._submit(RecordType.MEMBERSHIP_PROPOSAL, body)
        log.info("membership proposal submitted", extra={"fields": {"action": action, "role": role}})
        return record

    async def propose_removal(self, member: bytes, *, lifetime_ms: int = DEFAULT_LIFETIME_MS) -> Record:
        """Propose to remove ``member`` (this node's own key: leaving)."""
        state = self.host.chain_state
        validator = state.validators.get(member)
        if validator is not None:
            return await self.propose(
                action="remove",
                role="validator",
                member=member,
                name=validator.name,
                power=0,
                lifetime_ms=lifetime_ms,
            )
        auditor = next((a for a in state.auditors if a.sign_key == member), None)
        if auditor is None:
            raise NodeUsageError("not a member")
        return await self.propose(
            action="remove", role="audit", member=member, name=auditor.name, power=0, lifetime_ms=lifetime_ms
        )

    async def vote(self, proposal_id: str, approve: bool) -> Record:
        """Approve or reject an open proposal (this node must be a validator)."""
        body = {"proposal": _hex_id(proposal_id), "approve": approve}
        record = await self._submit(RecordType.MEMBERSHIP_VOTE, body)
        log.info("membership vote submitted", extra={"fields": {"approve": approve}})
        return record

    def own_entry(self, seq: int) -> MemberEntry | None:
        """This node's directory entry from its configuration (None if it is not a member)."""
        state = self.host.chain_state
        key = self.host.identity.public.sign_key
        name = next((m.name for m in directory.members(state) if m.key == key), None)
        if name is None:
            return None
        config = self.host.config
        addresses = tuple(a for a in config.get("p2p", "listen") if "/0.0.0.0/" not in a and "/::/" not in a)
        host, _, port = config.get("transfer", "data_listen").rpartition(":")
        data_url = "" if host in ("0.0.0.0", "[::]") else f"https://{host}:{port}"
        return MemberEntry(key, name, config.get("node", "country"), addresses[:8], data_url, seq)

    async def publish_entry_if_stale(self) -> Record | None:
        """Publish this node's directory entry when the chain's differs from its configuration."""
        state = self.host.chain_state
        key = self.host.identity.public.sign_key
        current = next((e for e in state.directory if e.key == key), None)
        wanted = self.own_entry(0 if current is None else current.seq)
        if wanted is None or wanted == current:
            return None
        now = self.host.clock.now_ms()
        seq = max(now, (current.seq + 1) if current else 0)
        if (
            self._entry_sent_seq > (current.seq if current else -1)
            and now - self._entry_sent_ms < ENTRY_RETRY_MS
        ):
            return None  # ours is on its way
        entry = replace(wanted, seq=seq)
        record = await self._submit(RecordType.MEMBER_ENTRY, entry.to_value())
        self._entry_sent_ms, self._entry_sent_seq = now, seq
        log.info("directory entry published", extra={"fields": {"seq": seq}})
        return record

    async def _submit(self, kind: RecordType, body: dict[str, Any]) -> Record:
        record = make_record(
            self.host.identity,
            kind,
            body,
            record_id=secrets.token_bytes(16),
            time_ms=self.host.clock.now_ms(),
            tags=tuple(secrets.token_bytes(16) for _ in range(TAG_SLOTS)),
        )
        self.check(record)
        outcome = (await self.host.submit_records([record]))[0]
        if outcome != "accepted":
            raise NodeUsageError(f"the mempool refused the record: {outcome}")
        return record

    def check(self, record: Record) -> None:
        """Run ``record`` through the chain's rules on the current state; a usage error says why not."""
        state = self.host.chain_state
        if not state.is_member(record.author):
            raise NodeUsageError("this node is not a member (yet): it cannot sign membership records")
        book = Book(
            chain_id=state.chain_id,
            genesis_hash=state.genesis.hash,
            height=state.height + 1,
            block_time_ms=max(self.host.clock.now_ms(), state.last_time_ms + 1),
            validators=state.validators,
            auditors=state.auditors,
            pending=state.pending,
            directory=state.directory,
            proposals=state.proposals,
            recent=state.recent,
            delay_blocks=MEMBERSHIP_DELAY_BLOCKS,
        )
        book.expire()
        try:
            book.apply(record)
        except (InvalidBlockError, InvalidRecordError) as exc:
            reason = str(exc).split(": ", 2)[-1]  # without "block h: <type> <id>"
            raise NodeUsageError(f"refused by the chain's rules: {reason}") from None


def _name(state: ChainState, key: bytes) -> str:
    validator = state.validators.get(key)
    if validator is not None:
        return validator.name
    return next((a.name for a in state.auditors if a.sign_key == key), key.hex()[:16])
