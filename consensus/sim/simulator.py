"""A deterministic, single-process simulation of n validators and their network.

One seeded ``random.Random`` drives everything; a priority queue orders
deliveries, timeouts, ticks, crashes, restarts and record submissions by
(simulated time, sequence number), so a (scenario, seed) pair replays exactly.
The network delays (random, hence reordering), drops, duplicates and
partitions messages until ``heal_ms`` (GST); after that every message arrives
within the delay bound, crashed nodes are back, and liveness is judged: every
correct node must reach the target height within ``liveness_bound_ms``.
Nodes keep a durable store; a crash loses the replica and, on a power loss,
the unsynced WAL tail (perhaps leaving a torn frame), and a restart recovers
from the WAL through :meth:`~mftp.consensus.replica.Replica.recover`.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field, replace
from typing import Any

from mftp.ledger.block import Block, Vote, VoteType
from mftp.ledger.chain import ChainState, replay
from mftp.ledger.errors import LedgerInputError
from mftp.ledger.genesis import make_genesis
from mftp.ledger.membership import BROKEN_RULES
from mftp.ledger.records import Record, RecordType, make_record, membership_payload

from ..config import ConsensusConfig
from ..core import Consensus
from ..events import (
    Action,
    BlockSynced,
    Broadcast,
    Commit,
    Event,
    Evidence,
    FetchBlocks,
    ProposalReceived,
    RecordsSubmitted,
    ScheduleTimeout,
    SendBlocks,
    Start,
    Tick,
    TimeoutFired,
    VoteReceived,
)
from ..messages import Message, ProposalMessage, SyncedBlock
from ..replica import Replica
from ..wal import MemoryWal, NoWal, SimulatedCrash
from .checks import Checker
from .churn import ChurnDriver, Step
from .nodes import RecordingIdentity, SimNode, StoredBlock, rewrite, sim_record
from .scenarios import Spec, make_spec

CHAIN_ID = "mftp-sim"
MAX_SYNC_BLOCKS = 8
DELIVER, TIMER, TICK, CRASH, RESTART, SUBMIT, FETCH, START = range(8)


def sim_config(broken_quorum: bool = False) -> ConsensusConfig:
    """Short timeouts in simulated milliseconds."""
    return ConsensusConfig(
        timeout_propose_ms=150,
        timeout_propose_delta_ms=50,
        timeout_prevote_ms=80,
        timeout_prevote_delta_ms=40,
        timeout_precommit_ms=80,
        timeout_precommit_delta_ms=40,
        timeout_commit_ms=60,
        batch_records=50,
        sync_interval_ms=300,
        broken_quorum=broken_quorum,
    )


@dataclass
class Result:
    """The outcome of one run."""

    scenario: str
    seed: int
    broken_quorum: bool
    violations: list[str]
    heights: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)
    broken_membership: bool = False

    @property
    def replay_command(self) -> str:
        """The one command that replays this run."""
        flag = " --broken-quorum" if self.broken_quorum else ""
        flag += " --broken-membership" if self.broken_membership else ""
        return f"python scripts/sim.py --scenario {self.scenario} --seed {self.seed}{flag}"

    def describe(self) -> list[str]:
        """One line per violation, each naming the seed and the replay command."""
        return [
            f"[{self.scenario} seed={self.seed}] {v}  -- replay: {self.replay_command}"
            for v in self.violations
        ]


def _identity(spec: Spec, label: str) -> RecordingIdentity:
    return RecordingIdentity(
        hashlib.sha256(f"mftp-sim:{spec.scenario}:{spec.seed}:{label}".encode()).digest()
    )


class Simulator:
    """One run of one scenario; :meth:`run` returns a :class:`Result`."""

    def __init__(
        self, spec: Spec, *, config: ConsensusConfig | None = None, max_events: int = 400_000
    ) -> None:
        self.spec = spec
        self.config = config or sim_config(spec.broken_quorum)
        self.rng = random.Random(f"run:{spec.scenario}:{spec.seed}")
        self.max_events = max_events
        self.now = 0
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self.stats: dict[str, Any] = {"events": 0, "deliveries": 0, "evidence_actions": 0}
        self._heal_height = -1
        self.membership_height: int | None = None
        self._membership_ids: set[bytes] = set()
        self.churn: ChurnDriver | None = None
        self._build_nodes()
        correct = {n.key for n in self.nodes if n.correct}
        self.checker = Checker(self.config, CHAIN_ID, correct)

    # ------------------------------------------------------------------ set-up

    def _build_nodes(self) -> None:
        spec = self.spec
        validators = [_identity(spec, f"validator-{i}") for i in range(spec.n)]
        auditors = [_identity(spec, f"audit-{i}") for i in range(spec.auditors)]
        genesis = make_genesis(
            "sim",
            CHAIN_ID,
            0,
            [
                (f"v{i}", ident.public.sign_key, p)
                for i, (ident, p) in enumerate(zip(validators, spec.powers, strict=False))
            ],
            [(f"a{i}", ident.public.sign_key) for i, ident in enumerate(auditors)],
        )
        self.genesis = genesis
        state = ChainState.initial(genesis)
        if spec.broken_membership:
            state = replace(state, membership_rules=BROKEN_RULES)
        self.genesis_state = state
        self.nodes: list[SimNode] = []
        for i, ident in enumerate(validators):
            self.nodes.append(SimNode(i, f"v{i}", ident, state, spec.byzantine.get(i)))
        self.twin_of: dict[int, int] = {}
        for i in spec.twins():
            twin = _identity(spec, f"validator-{i}")  # same seed: same key, its own signing log
            self.twin_of[len(self.nodes)] = i
            self.nodes.append(SimNode(len(self.nodes), f"v{i}-twin", twin, state, "twin"))
        self.audit_nodes = set()
        for i, ident in enumerate(auditors):
            self.audit_nodes.add(len(self.nodes))
            self.nodes.append(SimNode(len(self.nodes), f"a{i}", ident, state, keeps_wal=False))
        self.joiner: SimNode | None = None
        if spec.joiner:
            self.joiner = SimNode(len(self.nodes), "joiner", _identity(spec, "joiner"), state)
            self.nodes.append(self.joiner)
        self.validator_identities = validators
        if spec.churn:
            self._build_churn(state)
        if spec.crash_after_append is not None:
            node, count = spec.crash_after_append
            self.nodes[node].crash_after_append = count

    def _build_churn(self, state: ChainState) -> None:
        """The churn scenario's newcomers (a validator and an audit node) and its driver."""
        spec = self.spec
        joiner = SimNode(len(self.nodes), "joiner", _identity(spec, "joiner"), state)
        self.nodes.append(joiner)
        newaudit = SimNode(len(self.nodes), "a-new", _identity(spec, "a-new"), state, keeps_wal=False)
        self.audit_nodes.add(newaudit.index)
        self.nodes.append(newaudit)
        removed = self.nodes[spec.churn_remove]
        plan = {
            "add_validator": Step("add", "validator", joiner.identity, "joiner", 1),
            "add_audit": Step("add", "audit", newaudit.identity, "a-new", 0),
            "remove": Step("remove", "validator", removed.identity, f"v{spec.churn_remove}", 0),
        }
        correct = {n.key for n in self.nodes if n.correct}
        wanted = None
        if spec.broken_membership:
            wanted = lambda st: len(st.validators) // 2 + 1  # noqa: E731 - over 1/2, not over 2/3
        self.churn = ChurnDriver(
            state,
            [plan[name] for name in spec.churn],
            correct,
            {n.key: n.identity for n in self.nodes},
            random.Random(f"churn:{spec.scenario}:{spec.seed}"),
            approvers_wanted=wanted,
        )

    def _churn_decided(self, block: Block) -> None:
        assert self.churn is not None

        def submit(record: Record, keys: list[bytes]) -> None:
            for node in self.nodes:
                if node.key in keys:
                    self._push(self.now + 1, SUBMIT, node.index, (record,))

        for problem in self.churn.on_decided(block, submit, self.now):
            kind, _, detail = problem.partition(": ")
            self.checker.fail(kind, detail)

    def _push(self, time_ms: int, kind: int, node: int, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, kind, node, payload))

    def _plan(self) -> None:
        spec = self.spec
        for node in self.nodes:
            self._boot(node)
        if spec.bulk_records:
            self._plan_bulk(spec.bulk_records)  # queued first: pooled before the first proposal
        for node in self.nodes:
            self._push(0, START, node.index)
        for crash in spec.crashes:
            self._push(crash.at_ms, CRASH, crash.node, (crash.power_loss, crash.torn_bytes))
            self._push(crash.restart_ms, RESTART, crash.node)
        correct_validators = [i for i in range(spec.n) if self.nodes[i].correct]
        for _ in range(spec.records):
            at = self.rng.randint(0, spec.heal_ms)
            author = self.validator_identities[self.rng.choice(correct_validators)]
            record = sim_record(author, self.rng, at)
            for target in self.rng.sample(range(spec.n), min(2, spec.n)):
                self._push(at, SUBMIT, target, (record,))
        if spec.joiner:
            self._plan_membership()

    def _plan_bulk(self, count: int, chunk: int = 500) -> None:
        authors = self.validator_identities
        records = [sim_record(authors[i % len(authors)], self.rng, 0) for i in range(count)]
        for start in range(0, count, chunk):
            for target in range(self.spec.n):
                self._push(0, SUBMIT, target, tuple(records[start : start + chunk]))

    def _plan_membership(self) -> None:
        assert self.joiner is not None
        at = self.rng.randint(50, self.spec.heal_ms)
        changes = [self._membership_record("add", self.joiner.key, "joiner", at)]
        removed = self.spec.remove_validator
        if removed is not None:
            changes.append(self._membership_record("remove", self.nodes[removed].key, f"v{removed}", at))
        for target in range(self.spec.n):
            self._push(at, SUBMIT, target, tuple(changes))
        self._membership_ids = {r.record_id for r in changes}

    def _membership_record(self, action: str, member: bytes, name: str, at: int) -> Record:
        record_id = self.rng.randbytes(16)
        body: dict[str, Any] = {
            "action": action,
            "role": "validator",
            "member": member,
            "name": name,
            "power": 1,
        }
        message = membership_payload(CHAIN_ID, record_id, body)
        body["approvals"] = [
            ident.public.sign_key + ident.sign("membership", message) for ident in self.validator_identities
        ]
        return make_record(
            self.validator_identities[0],
            RecordType.MEMBERSHIP_CHANGE,
            body,
            record_id=record_id,
            time_ms=at,
            tags=tuple(self.rng.randbytes(16) for _ in range(8)),
        )

    # ------------------------------------------------------------------ node life

    def _make_core(self, node: SimNode) -> Consensus:
        return Consensus(
            self.config,
            state=node.chain_state(),
            last_commit=node.last_certificate(),
            record_exists=node.record_ids.__contains__,
            identity=node.identity,
        )

    def _boot(self, node: SimNode) -> None:
        """First life: a fresh core and an empty WAL; Start comes as a queued event."""
        node.replica = Replica(self._make_core(node), node.new_wal(b""))
        self._push(self.rng.randint(1, self.spec.tick_ms), TICK, node.index, node.incarnation)

    def _crash(self, node: SimNode, power_loss: bool = False, torn_bytes: int = 0) -> None:
        if node.crashed or node.replica is None:
            return
        wal = node.replica.wal
        assert isinstance(wal, MemoryWal | NoWal)
        node.wal_bytes = b""  # an audit node keeps no WAL
        if isinstance(wal, MemoryWal):
            node.wal_bytes = wal.surviving_bytes(power_loss=power_loss, torn_bytes=torn_bytes)
        node.replica = None
        node.crashed = True
        self.stats["crashes"] = self.stats.get("crashes", 0) + 1

    def _restart(self, node: SimNode) -> None:
        if not node.crashed:
            return
        node.crashed = False
        node.incarnation += 1
        wal = node.new_wal(node.wal_bytes)
        if wal.problem is not None:
            self.stats["wal_tails_cut"] = self.stats.get("wal_tails_cut", 0) + 1
        replica, actions = Replica.recover(
            lambda: self._make_core(node),
            wal,
            on_commit=lambda commit: self._store(node, commit, during_recovery=True),
            now_ms=self.now,
        )
        node.replica = replica
        self._drain_signatures(node)
        self._push(self.now + self.rng.randint(1, self.spec.tick_ms), TICK, node.index, node.incarnation)
        self._carry_out(node, actions)

    def _input(self, node: SimNode, event: Event) -> None:
        if node.crashed or node.replica is None:
            return
        try:
            actions = node.replica.handle(event, self.now)
        except SimulatedCrash:
            power_loss, torn = self.spec.crash_power_loss
            self._drain_signatures(node)
            self._crash(node, power_loss, torn)
            self._push(self.now + 200, RESTART, node.index)
            return
        self._drain_signatures(node)
        self._carry_out(node, actions)

    def _drain_signatures(self, node: SimNode) -> None:
        identity = node.identity
        if isinstance(identity, RecordingIdentity) and identity.signed:
            signed, identity.signed = identity.signed, []
            if node.correct:
                for domain, content in signed:
                    self.checker.on_signed(node, domain, content)

    # ------------------------------------------------------------------ actions

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            if node.crashed:
                return
            if isinstance(action, Broadcast):
                self._broadcast(node, action.message)
            elif isinstance(action, ScheduleTimeout):
                self._push(max(action.at_ms, self.now), TIMER, node.index, (node.incarnation, action))
            elif isinstance(action, Commit):
                self._store(node, action)
            elif isinstance(action, SendBlocks):
                for target in self.nodes:
                    if target.key == action.peer and target is not node:
                        self._send_blocks(node, target, action.from_height)
            elif isinstance(action, FetchBlocks):
                peers = [n for n in self.nodes if n.key in action.peers and n is not node]
                if peers:
                    target = self.rng.choice(peers)
                    self._send(node.index, target.index, (FETCH, action.from_height))
            elif isinstance(action, Evidence):
                self.stats["evidence_actions"] += 1

    def _store(self, node: SimNode, commit: Commit, *, during_recovery: bool = False) -> None:
        block = commit.block
        if block.height != node.height + 1:
            return  # already stored before a crash
        validators = node.chain_state().validators
        self.checker.on_commit(node, block, commit.certificate, validators)
        node.store.append(StoredBlock(block, commit.certificate, commit.state))
        if self.churn is not None and node.correct:
            self._churn_decided(block)
        if self.membership_height is None and any(r.record_id in self._membership_ids for r in block.records):
            self.membership_height = block.height
        node.record_ids.update(r.record_id for r in block.records)
        if not during_recovery and node.replica is not None:
            node.replica.committed(block.height)

    def _broadcast(self, node: SimNode, message: Message) -> None:
        if isinstance(message, Vote) and node.index in self.audit_nodes:
            self.checker.on_observer_vote(node)
        others = [n.index for n in self.nodes if n is not node]
        if not node.correct:
            sends = rewrite(node, message, others, self.rng)  # a Byzantine node may send anything anywhere
        elif isinstance(message, Vote) and message.type is VoteType.PREVOTE:
            # Like the node (``Node._recipients``): prevotes go to validators, not to audit nodes.
            sends = [([i for i in others if i not in self.audit_nodes], message)]
        else:
            sends = [(others, message)]
        self._drain_signatures(node)
        for targets, msg in sends:
            for target in targets:
                self._send(node.index, target, msg)

    def _send_blocks(self, node: SimNode, target: SimNode, from_height: int) -> None:
        last = min(node.height, from_height + MAX_SYNC_BLOCKS - 1)
        for height in range(max(1, from_height), last + 1):
            stored = node.store[height - 1]
            self._send(node.index, target.index, SyncedBlock(stored.block, stored.certificate))

    # ------------------------------------------------------------------ network

    def _group(self, node: int, groups: tuple[frozenset[int], ...]) -> int:
        for g, members in enumerate(groups):
            if node in members:
                return g
        if node in self.twin_of:  # a twin's second instance sits on the other side
            return (self._group(self.twin_of[node], groups) + 1) % len(groups)
        return 0

    def _partitioned(self, src: int, dst: int) -> bool:
        return any(
            p.start_ms <= self.now < p.end_ms and self._group(src, p.groups) != self._group(dst, p.groups)
            for p in self.spec.partitions
        )

    def _send(self, src: int, dst: int, payload: Any) -> None:
        if self._partitioned(src, dst):
            return
        faulty = self.now < self.spec.heal_ms
        if faulty and self.rng.random() < self.spec.drop:
            return
        copies = 2 if faulty and self.rng.random() < self.spec.duplicate else 1
        low, high = self.spec.delay_ms
        for _ in range(copies):
            self._push(self.now + self.rng.randint(low, high), DELIVER, dst, (src, payload))

    def _deliver(self, node: SimNode, src: int, payload: Any) -> None:
        self.stats["deliveries"] += 1
        event: Event
        if isinstance(payload, Vote):
            event = VoteReceived(payload)
        elif isinstance(payload, ProposalMessage):
            event = ProposalReceived(payload.proposal, payload.block)
        elif isinstance(payload, SyncedBlock):
            event = BlockSynced(payload.block, payload.certificate)
        else:
            _kind, from_height = payload  # a fetch request: the shell answers from its store
            if not node.crashed:
                self._send_blocks(node, self.nodes[src], from_height)
            return
        self._input(node, event)

    # ------------------------------------------------------------------ main loop

    def _target(self) -> int:
        """The height every correct node must reach: past the target, past what was decided
        before the heal (so something is committed after it), and three heights past a
        membership change (so the new set has voted and been certified)."""
        target = max(self.spec.target_height, self._heal_height + 1)
        if self.churn is not None:
            if not self.churn.finished:
                return 10**9
            target = max(target, self.churn.last_effective() + 3)
        if self.spec.joiner:
            if self.membership_height is None:
                return 10**9
            target = max(target, self.membership_height + 3)
        return target

    def _done(self) -> bool:
        if self.now < self.spec.heal_ms:
            return False
        if self._heal_height < 0:
            self._heal_height = max(n.height for n in self.nodes if n.correct)
        target = self._target()
        return all(n.height >= target for n in self.nodes if n.correct)

    def _step(self) -> None:
        time_ms, _seq, kind, index, payload = heapq.heappop(self._queue)
        self.now = max(self.now, time_ms)
        node = self.nodes[index]
        if kind == DELIVER:
            self._deliver(node, *payload)
        elif kind == TIMER:
            incarnation, action = payload
            if incarnation == node.incarnation:
                self._input(node, _timeout_event(action))
        elif kind == TICK:
            if payload == node.incarnation and not node.crashed:
                self._input(node, Tick())
                self._push(self.now + self.spec.tick_ms, TICK, index, payload)
        elif kind == CRASH:
            self._crash(node, *payload)
        elif kind == RESTART:
            self._restart(node)
        elif kind == SUBMIT:
            self._input(node, RecordsSubmitted(payload))
        elif kind == START:
            self._input(node, Start())

    def run(self) -> Result:
        """Run to the target height (or the liveness bound) and judge."""
        self.prepare()
        self.run_loop()
        return self.judge()

    def prepare(self) -> None:
        """Boot the nodes and queue the planned faults, records and membership changes."""
        self._plan()

    def run_loop(self) -> None:
        """Process events until every correct node is done, a safety violation, or the liveness bound."""
        deadline = self.spec.heal_ms + self.spec.liveness_bound_ms
        # A run stops at its first safety violation: the seed has failed, and the rest would cost time.
        while self._queue and not self._done() and not self.checker.violations:
            if self.stats["events"] >= self.max_events or self.now > deadline:
                if not self.spec.broken_quorum:  # the broken protocol promises no liveness
                    self.checker.fail("liveness", self._liveness_detail())
                break
            self.stats["events"] += 1
            self._step()
        if self._done():
            self.stats["heal_to_done_ms"] = max(0, self.now - self.spec.heal_ms)

    def judge(self) -> Result:
        """The end-of-run checks and the result."""
        if not self.spec.broken_quorum and not self.checker.violations:
            self._final_checks()
        self.stats["sim_ms"] = self.now
        self.stats["rounds"] = sum(n.core.counters["rounds_started"] for n in self.nodes if n.replica)
        heights = {n.name: n.height for n in self.nodes}
        return Result(
            self.spec.scenario,
            self.spec.seed,
            self.spec.broken_quorum,
            self.checker.violations,
            heights,
            self.stats,
            self.spec.broken_membership,
        )

    def _liveness_detail(self) -> str:
        target = self._target()
        behind = [f"{n.name}@{n.height}" for n in self.nodes if n.correct and n.height < target]
        bound = self.spec.liveness_bound_ms
        return (
            f"after {self.stats['events']} events, not every correct node reached height {target} "
            f"within {bound}ms ({bound // self.spec.tick_ms} ticks) after the heal at "
            f"{self.spec.heal_ms}ms: {', '.join(behind)}"
        )

    def _final_checks(self) -> None:
        """An observer verifies the longest correct chain knowing only the genesis."""
        longest = max((n for n in self.nodes if n.correct), key=lambda n: n.height)
        blocks = [s.block for s in longest.store]
        if not blocks:
            return
        try:
            state = replay(self.genesis, blocks)
            state.verify_commit(longest.store[-1].certificate)
        except LedgerInputError as exc:
            self.checker.fail("chain", f"the chain of {longest.name} does not verify: {exc}")
            return
        self.stats["evidence_on_chain"] = sum(
            1 for b in blocks for r in b.records if r.type is RecordType.EVIDENCE
        )
        self.stats["records_on_chain"] = state.ledger_size
        self.stats["final_validators"] = len(state.validators)
        if self.joiner is not None:
            self._check_membership(blocks, state, longest.store[-1].certificate)
        if self.churn is not None:
            self.stats["churn_effective"] = [s.done_at for s in self.churn.steps]
            self.stats["churn_skipped"] = self.churn.skipped

    def _check_membership(self, blocks: list[Any], state: ChainState, last_cert: Any) -> None:
        assert self.joiner is not None
        ids = self._membership_ids
        committed_at = [b.height for b in blocks for r in b.records if r.record_id in ids]
        self.stats["membership_height"] = committed_at[0] if committed_at else None
        if committed_at and state.height >= committed_at[0] + 2:
            if self.joiner.key not in state.validators:
                self.checker.fail("membership", "the joiner is not a validator two heights after the change")
            removed = self.spec.remove_validator
            if removed is not None and self.nodes[removed].key in state.validators:
                self.checker.fail("membership", "the removed validator still votes two heights later")
        certs = [b.last_commit for b in blocks[1:] if b.last_commit is not None] + [last_cert]
        signers = {key for cert in certs for key, _ in cert.signatures}
        self.stats["joiner_signed"] = self.joiner.key in signers


def _timeout_event(action: ScheduleTimeout) -> Event:
    return TimeoutFired(action.height, action.round, action.step)


def run_seed(
    scenario: str, seed: int, *, broken_quorum: bool = False, broken_membership: bool = False
) -> Result:
    """Build and run one (scenario, seed)."""
    spec = make_spec(scenario, seed, broken_quorum=broken_quorum, broken_membership=broken_membership)
    return Simulator(spec).run()
