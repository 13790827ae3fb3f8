"""Small fixtures for consensus tests: identities, a genesis, records, and a lock-step harness."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from mftp.consensus.config import ConsensusConfig
from mftp.consensus.core import Consensus
from mftp.consensus.events import (
    Action,
    Broadcast,
    Commit,
    Event,
    ProposalReceived,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    VoteReceived,
)
from mftp.consensus.messages import ProposalMessage
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import Vote
from mftp.ledger.chain import ChainState
from mftp.ledger.genesis import Genesis, make_genesis
from mftp.ledger.records import Record, RecordType, make_record

CHAIN_ID = "mftp-test"


def identity(label: str) -> SigningIdentity:
    """A deterministic identity."""
    return SigningIdentity(hashlib.sha256(f"consensus-test:{label}".encode()).digest())


def genesis_for(
    validators: list[SigningIdentity], powers: list[int] | None = None, auditors: list[SigningIdentity] = ()
) -> Genesis:
    """A genesis with these validators (power 1 unless given) and audit nodes."""
    powers = powers or [1] * len(validators)
    return make_genesis(
        "test",
        CHAIN_ID,
        0,
        [(f"v{i}", v.public.sign_key, p) for i, (v, p) in enumerate(zip(validators, powers, strict=True))],
        [(f"a{i}", a.public.sign_key) for i, a in enumerate(auditors)],
    )


def record(author: SigningIdentity, rng: random.Random, time_ms: int = 1) -> Record:
    """A valid STUDY_ACCESSED record by ``author``."""
    return make_record(
        author,
        RecordType.STUDY_ACCESSED,
        {"transfer_id": rng.randbytes(16), "action": "view", "purpose": "TREAT"},
        record_id=rng.randbytes(16),
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(8)),
    )


FAST = ConsensusConfig(
    timeout_propose_ms=100,
    timeout_propose_delta_ms=10,
    timeout_prevote_ms=50,
    timeout_prevote_delta_ms=10,
    timeout_precommit_ms=50,
    timeout_precommit_delta_ms=10,
    timeout_commit_ms=5,
)


def fresh_core(genesis: Genesis, me: SigningIdentity, config: ConsensusConfig = FAST) -> Consensus:
    """A core at height 1 of ``genesis`` for ``me``, with an empty ledger (no record exists)."""
    return Consensus(
        config,
        state=ChainState.initial(genesis),
        last_commit=None,
        record_exists=lambda _i: False,
        identity=me,
    )


@dataclass
class Member:
    """One core in the harness, with its store."""

    core: Consensus
    commits: list[Commit] = field(default_factory=list)
    record_ids: set[bytes] = field(default_factory=set)
    timeouts: list[ScheduleTimeout] = field(default_factory=list)
    sent: list[Action] = field(default_factory=list)


class Harness:
    """Cores wired together with instant, reliable delivery; time moves only through timeouts."""

    def __init__(
        self, n: int = 4, *, observers: int = 0, joiners: int = 0, config: ConsensusConfig = FAST
    ) -> None:
        self.identities = [identity(f"v{i}") for i in range(n)]
        self.observer_ids = [identity(f"o{i}") for i in range(observers)]
        self.joiner_ids = [identity(f"j{i}") for i in range(joiners)]  # not in the genesis at all
        self.genesis = genesis_for(self.identities, auditors=self.observer_ids)
        self.now = 0
        self.members: list[Member] = []
        self.muted: set[int] = set()  # members whose messages are not delivered
        for ident in self.identities + self.observer_ids + self.joiner_ids:
            member = Member(core=None)  # type: ignore[arg-type]
            member.core = Consensus(
                config,
                state=ChainState.initial(self.genesis),
                last_commit=None,
                record_exists=member.record_ids.__contains__,
                identity=ident,
            )
            self.members.append(member)

    def feed(self, index: int, event: Event) -> None:
        """Give one member an event and deliver what it broadcasts, recursively."""
        pending = [(index, event)]
        while pending:
            target, ev = pending.pop(0)
            member = self.members[target]
            for action in member.core.step(ev, self.now):
                member.sent.append(action)
                if isinstance(action, Broadcast) and target not in self.muted:
                    pending.extend((i, _as_event(action)) for i in range(len(self.members)) if i != target)
                elif isinstance(action, Commit):
                    member.commits.append(action)
                    member.record_ids.update(r.record_id for r in action.block.records)
                elif isinstance(action, ScheduleTimeout):
                    member.timeouts.append(action)

    def start(self) -> None:
        """Start every member."""
        for i in range(len(self.members)):
            self.feed(i, Start())

    def fire_due(self, until_ms: int) -> None:
        """Advance time to ``until_ms``, firing scheduled timeouts in order."""
        while True:
            due = sorted(
                (
                    (t.at_ms, i, t)
                    for i, m in enumerate(self.members)
                    for t in m.timeouts
                    if t.at_ms <= until_ms
                ),
                key=lambda item: (item[0], item[1]),
            )
            if not due:
                self.now = max(self.now, until_ms)
                return
            at_ms, i, timeout = due[0]
            self.members[i].timeouts.remove(timeout)
            self.now = max(self.now, at_ms)
            self.feed(i, TimeoutFired(timeout.height, timeout.round, timeout.step))

    def run_until_height(self, height: int, limit_ms: int = 60_000) -> None:
        """Fire timeouts until every member has committed ``height`` blocks."""
        while any(len(m.commits) < height for m in self.members) and self.now < limit_ms:
            self.fire_due(self.now + 10)


def _as_event(action: Broadcast) -> Event:
    message = action.message
    if isinstance(message, Vote):
        return VoteReceived(message)
    assert isinstance(message, ProposalMessage)
    return ProposalReceived(message.proposal, message.block)
