"""The inputs (events) and outputs (actions) of the consensus core.

The core is sans-IO, like h11: :meth:`mftp.consensus.core.Consensus.step` takes
one event and the current time and returns a list of actions for the shell to
carry out *in order*.  The order matters in one place: a :class:`WalAppend`
with ``sync=True`` (the validator's own vote or proposal) always comes before
the :class:`Broadcast` of that message, so a shell that executes actions in
order syncs its own votes to disk before they leave the process.

Events
    :class:`Start`, :class:`Tick`, :class:`TimeoutFired`, :class:`ProposalReceived`,
    :class:`VoteReceived`, :class:`RecordsSubmitted`, :class:`BlockSynced`.
Actions
    :class:`Broadcast`, :class:`WalAppend`, :class:`ScheduleTimeout`, :class:`Commit`,
    :class:`Evidence`, :class:`SendBlocks`, :class:`FetchBlocks`, :class:`Log`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from mftp.ledger.block import Block, CommitCertificate, Vote
from mftp.ledger.chain import ChainState
from mftp.ledger.records import Record

from .messages import Message, Proposal


class Step(IntEnum):
    """The paper's step_p, plus COMMIT: the wait after a decision before round 0 of the next height."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4  # CometBFT's timeout_commit: collect more precommits and records for the next block


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Start:
    """Begin (or, after a restart, resume) the current height. Idempotent."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic nudge: re-broadcast this validator's own messages of the current height.

    Gossip may lose messages; re-sending our own (identical, already-signed)
    votes and proposal lets peers that missed them catch up after a partition
    heals.  A tick changes no protocol state, so shells need not log it.
    """


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """A timeout scheduled by :class:`ScheduleTimeout` is due."""

    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A peer's proposal and its block."""

    proposal: Proposal
    block: Block


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A peer's prevote or precommit."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class RecordsSubmitted:
    """Records for the mempool (from local clients or mempool gossip)."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class BlockSynced:
    """A committed block and its certificate fetched from a peer (catch-up)."""

    block: Block
    certificate: CommitCertificate


Event = Start | Tick | TimeoutFired | ProposalReceived | VoteReceived | RecordsSubmitted | BlockSynced


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``message`` to every member (gossip)."""

    message: Message


@dataclass(frozen=True, slots=True)
class OwnVote:
    """WAL entry: a vote this validator signed."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class OwnProposal:
    """WAL entry: a proposal this validator signed, with its block (to re-send the same one)."""

    proposal: Proposal
    block: Block


@dataclass(frozen=True, slots=True)
class WalAppend:
    """Append ``entry`` to the write-ahead log; if ``sync``, make it durable before the next action."""

    entry: OwnVote | OwnProposal
    sync: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Feed ``TimeoutFired(height, round, step)`` back at ``at_ms`` (stale timeouts are ignored)."""

    height: int
    round: int
    step: Step
    at_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Block ``block.height`` is decided: store it with its certificate, durably.

    ``state`` is the chain state after the block (so the shell need not recompute it).
    """

    block: Block
    certificate: CommitCertificate
    state: ChainState


@dataclass(frozen=True, slots=True)
class Evidence:
    """Validator ``offender`` signed two different votes for one (height, round, type)."""

    offender: bytes
    vote_a: Vote
    vote_b: Vote


@dataclass(frozen=True, slots=True)
class SendBlocks:
    """Peer ``peer`` is behind: send it committed blocks from ``from_height`` with certificates."""

    peer: bytes
    from_height: int


@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """We are behind: ask one of ``peers`` for committed blocks from ``from_height``."""

    peers: tuple[bytes, ...]
    from_height: int


@dataclass(frozen=True, slots=True)
class Log:
    """Something an operator may want to see (never patient data)."""

    level: str
    message: str


Action = Broadcast | WalAppend | ScheduleTimeout | Commit | Evidence | SendBlocks | FetchBlocks | Log
