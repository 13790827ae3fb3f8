"""Simulated members: an honest shell around a :class:`~mftp.consensus.replica.Replica`, and Byzantine ones.

A :class:`SimNode` owns what survives a crash (its store of committed blocks
with certificates and chain states, its record index, its WAL bytes) and what
does not (the replica).  Byzantine behaviours run an honest core underneath
and rewrite what it sends, signing with the node's own key behind the core's
double-sign guard:

* ``equivocating_proposer``: as proposer, sends one block to half the peers
  and another to the rest (one peer gets both);
* ``double_vote``: sends each vote to half the peers and a conflicting vote
  for another block to the rest (one peer gets both);
* ``invalid_block``: as proposer, proposes blocks that fail validation (a bad
  record signature, a replayed record, a wrong ledger root, a stranger's record);
* ``unknown_votes``: votes for random block hashes nobody proposed, and for
  rounds ahead;
* ``twin``: honest code, but two instances share one key (the Twins method).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import NIL, Block, CommitCertificate, Vote, VoteType, sign_vote
from mftp.ledger.chain import ChainState, build_block
from mftp.ledger.records import Record, RecordType, make_record

from ..core import Consensus
from ..messages import Message, ProposalMessage, sign_proposal
from ..replica import Replica
from ..wal import MemoryWal, NoWal

BEHAVIOURS = ("equivocating_proposer", "double_vote", "invalid_block", "unknown_votes", "twin")


class RecordingIdentity(SigningIdentity):
    """A signing identity that remembers every vote and proposal it signs (for the double-sign check)."""

    __slots__ = ("signed",)

    def __init__(self, seed: bytes) -> None:
        super().__init__(seed)
        self.signed: list[tuple[str, dict[str, Any]]] = []

    def sign(self, domain: str, message: bytes | bytearray | memoryview) -> bytes:
        """Sign, and keep the decoded content of consensus messages."""
        if domain in ("vote", "proposal"):
            self.signed.append((domain, canonical.decode(bytes(message))))
        return super().sign(domain, message)


@dataclass
class StoredBlock:
    """One committed block as a node's durable store holds it."""

    block: Block
    certificate: CommitCertificate
    state: ChainState  # after the block


@dataclass
class SimNode:
    """One process in the simulation: a validator, a twin instance, an audit node or a joiner."""

    index: int
    name: str
    identity: SigningIdentity
    genesis_state: ChainState
    behaviour: str | None = None  # None: correct
    store: list[StoredBlock] = field(default_factory=list)
    record_ids: set[bytes] = field(default_factory=set)
    wal_bytes: bytes = b""
    replica: Replica | None = None
    incarnation: int = 0
    crashed: bool = False
    crash_after_append: int | None = None  # planned crash: after this WAL append (first life only)
    keeps_wal: bool = True  # audit nodes keep none, as in the node (see NoWal)

    @property
    def key(self) -> bytes:
        """The node's public signing key."""
        return self.identity.public.sign_key

    @property
    def correct(self) -> bool:
        """Not Byzantine (crashes are not Byzantine)."""
        return self.behaviour is None

    @property
    def height(self) -> int:
        """Height of the last stored block."""
        return len(self.store)

    @property
    def core(self) -> Consensus:
        """The running core (only while up)."""
        assert self.replica is not None
        return self.replica.core

    def chain_state(self) -> ChainState:
        """The state after the last stored block."""
        return self.store[-1].state if self.store else self.genesis_state

    def last_certificate(self) -> CommitCertificate | None:
        """The certificate of the last stored block."""
        return self.store[-1].certificate if self.store else None

    def new_wal(self, data: bytes) -> MemoryWal | NoWal:
        """A WAL over the surviving bytes, with the planned crash point if this is the first life."""
        if not self.keeps_wal:
            return NoWal()
        crash = self.crash_after_append if self.incarnation == 0 else None
        return MemoryWal(data, crash_after=crash)


# ---------------------------------------------------------------------------- Byzantine rewriting

Sends = list[tuple[list[int], Message]]


def _halves(rng: random.Random, others: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Split peers in two; one random peer of the first half also gets the second message."""
    shuffled = others[:]
    rng.shuffle(shuffled)
    cut = len(shuffled) // 2
    first, second = shuffled[:cut], shuffled[cut:]
    both = [first[0]] if first else []
    return first, second, both


def rewrite(node: SimNode, message: Message, others: list[int], rng: random.Random) -> Sends:
    """What a node actually sends for one broadcast of its core."""
    behaviour = node.behaviour
    if behaviour == "equivocating_proposer":
        return _equivocate_proposal(node, message, others, rng)
    if behaviour == "double_vote":
        return _double_vote(node, message, others, rng)
    if behaviour == "invalid_block":
        return _invalid_block(node, message, others, rng)
    if behaviour == "unknown_votes":
        return _unknown_votes(node, message, others, rng)
    return [(others, message)]


def _own_fresh_proposal(node: SimNode, message: Message) -> ProposalMessage | None:
    if not isinstance(message, ProposalMessage) or message.proposal.proposer != node.key:
        return None
    return message if message.proposal.pol_round == -1 else None


def _resign(node: SimNode, original: ProposalMessage, block: Block) -> ProposalMessage:
    p = original.proposal
    proposal = sign_proposal(node.identity, block.header.chain_id, p.height, p.round, p.pol_round, block.hash)
    return ProposalMessage(proposal, block)


def _equivocate_proposal(node: SimNode, message: Message, others: list[int], rng: random.Random) -> Sends:
    fresh = _own_fresh_proposal(node, message)
    if fresh is None:
        return [(others, message)]
    block = fresh.block
    state = node.core.state
    alt_block = build_block(
        state,
        (),
        time_ms=block.header.time_ms + 1 + rng.randrange(1000),
        proposer=node.key,
        last_commit=block.last_commit,
    )
    alt = _resign(node, fresh, alt_block)
    first, second, both = _halves(rng, others)
    return [(first, message), (second + both, alt)]


def _double_vote(node: SimNode, message: Message, others: list[int], rng: random.Random) -> Sends:
    if not isinstance(message, Vote) or message.validator != node.key:
        return [(others, message)]
    other_hash = rng.randbytes(32) if message.block_hash == NIL else NIL
    chain_id = node.core.state.chain_id
    alt = sign_vote(node.identity, chain_id, message.type, message.height, message.round, other_hash)
    first, second, both = _halves(rng, others)
    return [(first, message), (second + both, alt)]


def _invalid_block(node: SimNode, message: Message, others: list[int], rng: random.Random) -> Sends:
    fresh = _own_fresh_proposal(node, message)
    if fresh is None:
        return [(others, message)]
    bad = make_invalid_block(node, fresh.block, rng)
    return [(others, _resign(node, fresh, bad))]


def make_invalid_block(node: SimNode, block: Block, rng: random.Random) -> Block:
    """A block that fails ``valid``, in one of several ways."""
    state = node.core.state
    header = block.header
    kind = rng.choice(["bad_signature", "replay", "ledger_root", "stranger"])
    if kind == "replay" and node.store and node.store[-1].block.records:
        records: tuple[Record, ...] = (node.store[-1].block.records[0],)
    elif kind == "ledger_root":
        return Block(replace(header, ledger_root=rng.randbytes(32)), block.records, block.last_commit)
    elif kind == "stranger":
        stranger = SigningIdentity(rng.randbytes(32))
        records = (sim_record(stranger, rng, header.time_ms),)
    else:
        good = sim_record(node.identity, rng, header.time_ms)
        records = (replace(good, signature=bytes(64), encoded=b""),)
    return build_block(
        state, records, time_ms=header.time_ms, proposer=header.proposer, last_commit=block.last_commit
    )


def _unknown_votes(node: SimNode, message: Message, others: list[int], rng: random.Random) -> Sends:
    if not isinstance(message, Vote) or message.validator != node.key:
        return [(others, message)]
    chain_id = node.core.state.chain_id
    fake = sign_vote(node.identity, chain_id, message.type, message.height, message.round, rng.randbytes(32))
    ahead_type = rng.choice([VoteType.PREVOTE, VoteType.PRECOMMIT])
    ahead = sign_vote(
        node.identity,
        chain_id,
        ahead_type,
        message.height,
        message.round + rng.randint(1, 3),
        rng.randbytes(32),
    )
    return [(others, fake), (others, ahead)]


def sim_record(identity: SigningIdentity, rng: random.Random, time_ms: int) -> Record:
    """A small, valid STUDY_ACCESSED record signed by ``identity`` (no real party in it)."""
    return make_record(
        identity,
        RecordType.STUDY_ACCESSED,
        {"transfer_id": rng.randbytes(16), "action": "view", "purpose": "TREAT"},
        record_id=rng.randbytes(16),
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(8)),
    )
