"""The consensus reactor: the shell around the pure consensus core, on the peer network.

It carries out the core's actions in order, which is what makes the write-ahead rule hold: a
validator's own vote is synced to its WAL (inside :class:`~mftp.consensus.replica.Replica`)
before the :class:`Broadcast` that sends it is returned to us.

Channels it handles (values are canonical maps, decoded with limits):

``c.proposal``, ``c.vote``, ``c.block``: consensus messages (see :mod:`.codec`)
``c.proposal_ids`` a proposal with its records as ids, to validators (see :mod:`.compact_proposals`)
``c.proposal?`` ``{"h": height, "r": round}``: ask the proposer for a whole proposal
``c.fetch``     ``{"from": height}``: ask a peer for committed blocks
``records``     ``[record bytes, ...]``: records for the mempools (sent to the validators)

Anything malformed raises an input error for the node's dispatcher to drop and count; the core
itself refuses invalid proposals, votes and blocks (and never accepts a synced block without a
valid certificate).  An audit node runs the core as an observer: it follows, verifies and stores
every block but never proposes or votes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, Final

from mftp.consensus.catchup import height_shown_by_a_third
from mftp.consensus.config import ConsensusConfig
from mftp.consensus.core import Consensus
from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import (
    Action,
    BlockSynced,
    Broadcast,
    Commit,
    Event,
    Evidence,
    FetchBlocks,
    Log,
    ProposalReceived,
    RecordsSubmitted,
    ScheduleTimeout,
    SendBlocks,
    TimeoutFired,
    VoteReceived,
)
from mftp.consensus.messages import Message, ProposalMessage, SyncedBlock
from mftp.consensus.replica import Replica
from mftp.consensus.wal import FileWal, NoWal
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import Vote, VoteType
from mftp.ledger.chain import ChainState
from mftp.ledger.errors import LedgerError
from mftp.ledger.ledger import Ledger
from mftp.ledger.records import Record

from ..clock import Clock
from ..config import Config
from ..errors import NodeError
from ..metrics import NodeMetrics
from ..p2p.network import PeerNetwork
from .codec import CONSENSUS_CHANNELS, decode_event, encode_message
from .compact_proposals import OwnProposals, compact_value, rebuild

log = logging.getLogger("mftp.node")

MAX_SYNC_BLOCKS: Final = 50
# A lagging node asks again this soon after its last fetch made progress: at 50 blocks
# a request it catches up at up to 250 blocks/s, well above what the chain produces.
SYNC_INTERVAL_MS: Final = 200
MAX_RECORDS_PER_MESSAGE: Final = 1000
RECORD_FLUSH_MS: Final = 10
COMPACT_RETRY_MS: Final = 15
"""How long a proposal by ids waits for missing records to arrive by gossip before it is fetched whole."""
FETCH_ANSWER_INTERVAL_MS: Final = 100
MAX_TRACKED_SUBMISSIONS: Final = 100_000

Handler = Callable[[bytes, Any], None]


def _membership_view(state: ChainState) -> tuple[Any, ...]:
    """What decides who may connect and where they are dialled (a validator that left stays one
    height longer, through ``last_validators``, so that its last precommits still arrive)."""
    members = (state.validators, state.last_validators, state.auditors)
    return (*members, state.directory, tuple(p.member for p in state.proposals))


def consensus_config(config: Config) -> ConsensusConfig:
    """The core's parameters from the ``[consensus]`` section."""
    section = config.values["consensus"]
    return ConsensusConfig(
        timeout_propose_ms=section["timeout_propose_ms"],
        timeout_propose_delta_ms=section["timeout_propose_delta_ms"],
        timeout_prevote_ms=section["timeout_prevote_ms"],
        timeout_prevote_delta_ms=section["timeout_prevote_delta_ms"],
        timeout_precommit_ms=section["timeout_precommit_ms"],
        timeout_precommit_delta_ms=section["timeout_precommit_delta_ms"],
        timeout_commit_ms=section["timeout_commit_ms"],
        empty_block_interval_ms=section["empty_block_interval_ms"],
        batch_records=section["max_block_records"],
        mempool_max_records=section["mempool_max_records"],
        sync_interval_ms=SYNC_INTERVAL_MS,
    )


class ChainReactor:
    """Drives one node's consensus replica: events in from peers and timers, actions out."""

    def __init__(
        self,
        config: Config,
        identity: SigningIdentity,
        ledger: Ledger,
        metrics: NodeMetrics,
        clock: Clock,
    ) -> None:
        self.config = config
        self.identity = identity
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.role = config.role
        # An audit node never signs, so it keeps no WAL (see NoWal); a restart catches up from peers.
        self.wal: FileWal | NoWal = NoWal()
        if self.role == "validator":
            self.wal = FileWal(config.resolve("node", "data_dir") / "consensus.wal")
        self.replica: Replica | None = None
        self.network: PeerNetwork | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._submitted: dict[bytes, float] = {}
        self._heights_shown: dict[bytes, int] = {}  # member -> highest height of its own messages
        self._fetch_answered: dict[bytes, int] = {}
        self._own_proposals = OwnProposals()
        self._last_commit_s: float | None = None
        self._stored = asyncio.Event()  # set (and replaced) each time a block is stored
        self._rng = random.Random()
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        # Called after each stored block whose membership, directory or open proposals changed
        # (the membership service dials what the chain's directory says).
        self.on_membership_change: list[Callable[[], None]] = []

    def channels(self) -> dict[str, Handler]:
        """The peer channels this reactor handles, for the node's dispatcher."""
        handlers: dict[str, Handler] = {
            "records": lambda _sender, value: self._on_records(value),
            "c.fetch": self._answer_fetch,
            "c.proposal_ids": self._on_compact_proposal,
            "c.proposal?": self._answer_proposal,
        }
        for channel in CONSENSUS_CHANNELS:
            handlers[channel] = self._consensus_handler(channel)
        return handlers

    def _consensus_handler(self, channel: str) -> Handler:
        def handle(sender: bytes, value: Any) -> None:
            event = decode_event(channel, value)
            self._note_height(sender, event)
            self._input(event)

        return handle

    # ------------------------------------------------------------------ lifecycle

    def start(self, network: PeerNetwork) -> None:
        """Recover the replica from the WAL and carry out what recovery asks for."""
        self.network = network
        replica, actions = Replica.recover(
            self._make_core, self.wal, on_commit=self._store, now_ms=self.clock.now_ms()
        )
        self.replica = replica
        self._carry_out(actions)

    def cancel_timers(self) -> None:
        """Cancel the core's pending timeouts (first, when the node stops: no step after this)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def stop(self) -> None:
        """Cancel the timers and close the WAL (last, once the network is down)."""
        self.cancel_timers()
        self.wal.close()

    def tick(self, event: Event) -> None:
        """Feed a clock tick (or any local event) to the core."""
        self._input(event)

    def _make_core(self) -> Consensus:
        store = self.ledger.store
        last = store.certificate(store.head_height) if store.head_height else None
        voter = self.identity if self.role == "validator" else None
        return Consensus(
            consensus_config(self.config),
            state=self.ledger.state,
            last_commit=last,
            record_exists=store.has_record,
            identity=voter,
        )

    def member_names(self) -> dict[bytes, str]:
        """Who may connect: the chain's members now (validators, audit nodes, validators leaving)
        and the newcomers of open proposals to add them, so they sync the chain before they vote."""
        state = self.ledger.state
        names = {p.member: p.name for p in state.proposals if p.action == "add"}
        names.update({v.sign_key: v.name for v in state.validators.validators})
        names.update({a.sign_key: a.name for a in state.auditors})
        if state.last_validators is not None:  # members leaving stay reachable for one more height
            names.update(
                {v.sign_key: v.name for v in state.last_validators.validators if v.sign_key not in names}
            )
        return names

    # ------------------------------------------------------------------ the core

    def _input(self, event: Event) -> None:
        if self.replica is None:
            return
        self._carry_out(self.replica.handle(event, self.clock.now_ms()))

    def _carry_out(self, actions: Iterable[Action]) -> None:
        """Carry out the core's actions in order; one that fails (our bug) never skips the next.

        A block we cannot store stops the node instead (:meth:`_fail_stop`): the actions after it
        belong to a height this node must not take part in.
        """
        for action in actions:
            if isinstance(action, Commit):
                if not self._commit(action):
                    return
                continue
            try:
                self._carry_out_one(action)
            except Exception as exc:  # our own bug: log it with its type, keep the rest of the step
                self.metrics.action_errors.labels(action=type(action).__name__).inc()
                log.error(
                    "consensus action failed",
                    extra={"fields": {"action": type(action).__name__, "error": repr(exc)}},
                )

    def _commit(self, action: Commit) -> bool:
        """Store a decided block; False if it cannot be (the node has stopped taking part)."""
        try:
            self._store(action)
        except Exception as exc:  # disk full, a store error, a gap: never vote on without it
            self._fail_stop(f"cannot store committed block {action.block.height}", exc)
            return False
        if self.replica is not None:  # the WAL may be emptied only once the block is stored
            self.replica.committed(action.block.height)
        return True

    def _carry_out_one(self, action: Action) -> None:
        if isinstance(action, Broadcast) and isinstance(action.message, ProposalMessage):
            self._broadcast_proposal(action.message)
        elif isinstance(action, Broadcast):
            channel, value = encode_message(action.message)
            assert self.network is not None
            self.network.broadcast(channel, value, to=self._recipients(action.message))
        elif isinstance(action, ScheduleTimeout):
            self._schedule(action)
        elif isinstance(action, SendBlocks):
            self._send_blocks(action.peer, action.from_height)
        elif isinstance(action, FetchBlocks):
            self._fetch(action)
        elif isinstance(action, Evidence):
            log.warning("equivocation detected", extra={"fields": {"offender": action.offender.hex()[:16]}})
        elif isinstance(action, Log):
            log.log(logging.getLevelName(action.level.upper()), action.message)

    def _fail_stop(self, reason: str, exc: BaseException) -> None:
        """Stop taking part: a validator that cannot store what it decided must not vote on.

        Its core has moved on to the next height, and emptying the WAL or checking replays
        against a store that lacks blocks would be unsafe; a crash-stop is what BFT assumes.
        """
        log.critical("node stopping", extra={"fields": {"reason": reason, "error": repr(exc)}})
        self.failure = exc
        self.replica = None  # no further input reaches the core
        self.failed.set()

    def _schedule(self, action: ScheduleTimeout) -> None:
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (action.at_ms - self.clock.now_ms()) / 1000)
        event = TimeoutFired(action.height, action.round, action.step)

        def fire() -> None:
            self._timers.discard(handle)
            self._input(event)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def _store(self, commit: Commit) -> None:
        block = commit.block
        if block.height <= self.ledger.height:
            return  # stored before a crash; the WAL replay decided it again
        if block.height != self.ledger.height + 1:
            raise NodeError(f"decided block {block.height} but the store ends at {self.ledger.height}")
        before = _membership_view(self.ledger.state)
        self.ledger.append(block, commit.certificate, state_after=commit.state)
        now_s = self.clock.monotonic_s()
        if self._last_commit_s is not None:
            self.metrics.block_interval.observe(now_s - self._last_commit_s)
        self._last_commit_s = now_s
        stored, self._stored = self._stored, asyncio.Event()
        stored.set()
        self.metrics.records_committed.inc(len(block.records))
        for record in block.records:
            submitted = self._submitted.pop(record.record_id, None)
            if submitted is not None:
                self.metrics.commit_latency.observe(now_s - submitted)
        if _membership_view(self.ledger.state) != before and self.network is not None:
            self.network.set_members(self.member_names())  # a member that left is cut off at once
            for listener in self.on_membership_change:
                listener()
        self.refresh_gauges()

    # ------------------------------------------------------------------ catch-up

    def _send_blocks(self, peer: bytes, from_height: int) -> None:
        if peer == self.identity.public.sign_key:
            return  # catch-up never targets this node (the core refuses it too)
        store = self.ledger.store
        assert self.network is not None
        last = min(store.head_height, from_height + MAX_SYNC_BLOCKS - 1)
        for height in range(max(1, from_height), last + 1):
            message = SyncedBlock(store.block(height), store.certificate(height))
            self.network.send(peer, *encode_message(message))

    def _fetch(self, action: FetchBlocks) -> None:
        connected = [p for p in action.peers if self.network is not None and p in self.network.peers()]
        if connected and self.network is not None:
            self.network.send(self._rng.choice(connected), "c.fetch", {"from": action.from_height})

    def _answer_fetch(self, peer: bytes, value: Any) -> None:
        if not isinstance(value, dict) or set(value) != {"from"} or not isinstance(value["from"], int):
            raise ConsensusInputError("malformed fetch request")
        now = self.clock.now_ms()
        if now - self._fetch_answered.get(peer, -(10**12)) < FETCH_ANSWER_INTERVAL_MS:
            return  # rate limit: a peer cannot make us read the whole chain in a loop
        self._fetch_answered[peer] = now
        self._send_blocks(peer, value["from"])

    # ------------------------------------------------------------------ peers

    def _on_records(self, value: Any) -> None:
        if not isinstance(value, list) or len(value) > MAX_RECORDS_PER_MESSAGE:
            raise ConsensusInputError("records: expected a bounded list")
        records = tuple(Record.decode(item) for item in value if isinstance(item, bytes))
        if len(records) != len(value):
            raise ConsensusInputError("records: every item must be record bytes")
        # Every input is logged to the WAL before the core sees it, so what the mempool would
        # refuse anyway (known, already stored, or by a non-member) is dropped here: a member
        # re-sending or flooding cannot grow the WAL with it.
        if self.replica is None:
            return
        pooled, store, state = self.replica.core.mempool, self.ledger.store, self.ledger.state
        fresh = tuple(
            r
            for r in records
            if r.record_id not in pooled and state.is_member(r.author) and not store.has_record(r.record_id)
        )
        if fresh:
            self._input(RecordsSubmitted(fresh))

    def _note_height(self, sender: bytes, event: Event) -> None:
        """Remember the height a member's message shows (unverified: see :meth:`status`)."""
        shown = 0
        if isinstance(event, VoteReceived):
            shown = event.vote.height
        elif isinstance(event, ProposalReceived):
            shown = event.proposal.height
        elif isinstance(event, BlockSynced):
            self.metrics.blocks_synced.inc()
        if shown > self._heights_shown.get(sender, 0):
            self._heights_shown[sender] = shown  # one entry per member: bounded

    # ------------------------------------------------------------------ submissions

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Return once block ``height`` is stored, or after ``timeout_s`` (``GET /blocks?wait_ms``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.ledger.height < height:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stored.wait(), remaining)

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer records to the mempool (one core step) and the admitted ones to every member's."""
        assert self.replica is not None
        core = self.replica.core
        fresh = [r for r in records if r.record_id not in core.mempool]
        if fresh:
            self._input(RecordsSubmitted(tuple(fresh)))
        offered = {id(r) for r in fresh}  # identity: comparing records field by field is O(n^2) here
        results = []
        now_s = self.clock.monotonic_s()
        for record in records:
            if id(record) not in offered:
                results.append("duplicate")
            elif record.record_id in core.mempool:
                results.append("accepted")
                if len(self._submitted) < MAX_TRACKED_SUBMISSIONS:
                    self._submitted[record.record_id] = now_s
                self._outbox.append(record.to_bytes())
            else:
                results.append(self._refusal(record))
        if self._outbox and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(RECORD_FLUSH_MS / 1000, self._flush_records)
        return results

    def _refusal(self, record: Record) -> str:
        """Why the mempool refused a record (the same checks, in the mempool's order)."""
        if self.ledger.store.has_record(record.record_id):
            return "replay"
        if not self.ledger.state.is_member(record.author):
            return "not_member"
        try:
            record.verify_signature()
        except LedgerError:
            return "bad_signature"
        return "refused"

    def _flush_records(self) -> None:
        self._flush_scheduled = False
        batch, self._outbox = self._outbox, []
        assert self.network is not None
        to = self._gossip_targets()
        for start in range(0, len(batch), MAX_RECORDS_PER_MESSAGE):
            self.network.broadcast("records", batch[start : start + MAX_RECORDS_PER_MESSAGE], to=to)

    # ------------------------------------------------------------------ proposals

    def _broadcast_proposal(self, message: ProposalMessage) -> None:
        """Our proposal: by record ids to the validators (they pooled the records), whole to the rest."""
        assert self.network is not None
        if self._outbox:  # records we pooled but not yet gossiped go first, on the same queues
            self._flush_records()
        self._own_proposals.keep(message)
        validators = self._gossip_targets()
        if validators:
            self.network.broadcast("c.proposal_ids", compact_value(message), to=validators)
        compact = set(validators)
        others = [key for key in self.network.members() if key not in compact]
        if others:
            channel, value = encode_message(message)
            self.network.broadcast(channel, value, to=others)

    def _on_compact_proposal(self, sender: bytes, value: Any, *, retry: bool = True) -> None:
        if self.replica is None or self.network is None:
            return  # fail-stopped: no input reaches the core any more
        core = self.replica.core
        rebuilt = rebuild(value, core.mempool.get)
        if isinstance(rebuilt, ProposalReceived):
            self.metrics.compact_proposals.labels(result="rebuilt").inc()
            self._note_height(sender, rebuilt)
            self._input(rebuilt)
            return
        proposal = value["p"]  # rebuild() checked its shape
        if proposal["height"] < core.height:
            return  # a re-sent proposal of a decided height: its records have left the mempool
        if retry:
            # The missing records are most often still on their way from a third validator's
            # gossip (another stream than the proposer's): give them a moment before fetching.
            asyncio.get_running_loop().call_later(
                COMPACT_RETRY_MS / 1000, self._retry_compact_proposal, sender, value
            )
            return
        self.metrics.compact_proposals.labels(result="fetched").inc()
        self.network.send(sender, "c.proposal?", {"h": proposal["height"], "r": proposal["round"]})

    def _retry_compact_proposal(self, sender: bytes, value: Any) -> None:
        try:
            self._on_compact_proposal(sender, value, retry=False)
        except (ConsensusInputError, LedgerError) as exc:  # the records now there do not match
            self.reject(sender, "c.proposal_ids", exc)

    def _answer_proposal(self, sender: bytes, value: Any) -> None:
        message = self._own_proposals.answer(sender, value, self.clock.now_ms())
        if message is not None:
            assert self.network is not None
            channel, whole = encode_message(message)
            self.network.send(sender, channel, whole)

    def _recipients(self, message: Message) -> list[bytes] | None:
        """Who gets a consensus message: everyone (``None``), but prevotes only the validators.

        An audit node decides on a proposal and 2f+1 precommits for it (line 49)
        and never votes, so prevotes are of no use to it; each would cost it a
        message through the network thread (~0.5 ms of CPU), four per height.
        """
        if isinstance(message, Vote) and message.type is VoteType.PREVOTE:
            return self._gossip_targets()
        return None

    def _gossip_targets(self) -> list[bytes]:
        """The validators among our network's members (connected now or not; the network queues for
        the others): records go only where blocks are proposed.

        Audit nodes propose nothing, so a record in their mempool is only a signature
        checked early; they check it when the proposal carrying it arrives instead,
        which spares every record one of its eight trips through the network.
        """
        assert self.network is not None
        members = self.network.members()
        return [v.sign_key for v in self.ledger.state.validators.validators if v.sign_key in members]

    # ------------------------------------------------------------------ status

    def reject(self, sender: bytes, channel: str, exc: Exception) -> None:
        """Count and log a peer's message that was malformed or invalid."""
        name = self.network.members().get(sender, sender.hex()[:16]) if self.network else sender.hex()[:16]
        self.metrics.rejected_messages.labels(peer=name).inc()
        log.info(
            "peer message dropped",
            extra={"fields": {"peer": name, "channel": channel, "reason": str(exc)}},
        )

    def status(self) -> dict[str, Any]:
        """The consensus part of ``GET /status``."""
        core = self.replica.core if self.replica is not None else None
        height = self.ledger.height
        # Heights shown by validators holding over a third of the power: one lying member
        # (its messages are not all verified here) cannot make us report "catching_up".
        highest_seen = height_shown_by_a_third(self._heights_shown, self.ledger.state.validators)
        behind = max(0, highest_seen - 1 - height)
        return {
            "height": height,
            "round": core.round if core is not None else 0,
            "ledger_size": self.ledger.state.ledger_size,
            "head_hash": self.ledger.state.last_hash.hex(),
            "mempool_records": len(core.mempool) if core is not None else 0,
            "sync": {"state": "catching_up" if behind > 1 else "synced", "highest_seen": highest_seen},
            "consensus": dict(core.counters) if core is not None else {},
        }

    def refresh_gauges(self) -> None:
        """Set the consensus gauges of ``/metrics`` from the core."""
        core = self.replica.core if self.replica is not None else None
        self.metrics.height.set(self.ledger.height)
        self.metrics.ledger_size.set(self.ledger.state.ledger_size)
        if core is not None:
            self.metrics.round.set(core.round)
            self.metrics.mempool.set(len(core.mempool))
            for kind, count in core.counters.items():
                self.metrics.consensus_events.labels(kind=kind).set(count)
