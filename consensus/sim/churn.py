"""Membership churn in the simulator: the proposal-and-vote flow driven while faults run, and a judge.

:class:`ChurnDriver` plays the members' operators.  It follows the chain as the correct nodes
decide it and moves through a plan of steps (add a validator, add an audit node, remove one of
the original validators), one proposal at a time: a correct validator sponsors each step, every
correct validator approves (Byzantine ones reject), and records that were lost to a crash or
evicted by a lagging proposer are submitted again at the next decided height.

:class:`MembershipModel` is the judge: an independent re-statement of the rules (it shares no
code with ``ledger/membership.py``).  Block by block it counts the approvals on the chain
against the validator set *it* derived, and when a header's validator set differs from the one
the approvals justify, or the set shrinks below four, it reports a violation.  With the
deliberately weaker rule (``--broken-membership``: approvals of more than half) the chain
changes its set on approvals the model does not accept, and the run fails.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import Block
from mftp.ledger.chain import ChainState, apply_block
from mftp.ledger.membership import make_join_request, validator_change_problem
from mftp.ledger.records import Record, RecordType, make_record

PROPOSAL_LIFETIME_MS = 3_600_000
MODEL_MIN_VALIDATORS = 4

Submit = Callable[[Record, list[bytes]], None]
"""``submit(record, to_keys)``: hand a record to these members' mempools now."""


@dataclass
class Step:
    """One planned change and the records that carry it."""

    action: str
    role: str
    member: SigningIdentity
    name: str
    power: int
    proposal: Record | None = None
    done_at: int | None = None  # height at which it took effect


class ChurnDriver:
    """Submits the flow's records as the chain moves on (see the module docstring)."""

    def __init__(
        self,
        genesis_state: ChainState,
        steps: list[Step],
        correct: set[bytes],
        identities: dict[bytes, SigningIdentity],
        rng: random.Random,
        *,
        approvers_wanted: Callable[[ChainState], int] | None = None,
    ) -> None:
        self.state = genesis_state
        self.steps = steps
        self.correct = correct
        self.identities = identities
        self.rng = rng
        self.approvers_wanted = approvers_wanted  # broken mode: fewer approvals than 2/3
        self.decided: dict[int, Block] = {}
        self.votes: dict[tuple[bytes, bytes], Record] = {}
        self.skipped: list[str] = []
        self.model = MembershipModel(genesis_state)

    @property
    def finished(self) -> bool:
        """Every step took effect (or was skipped by the rails)."""
        return all(step.done_at is not None for step in self.steps)

    def last_effective(self) -> int:
        """The highest height at which a step took effect."""
        return max((s.done_at or 0 for s in self.steps), default=0)

    def on_decided(self, block: Block, submit: Submit, now_ms: int) -> list[str]:
        """A correct node decided ``block``: follow the chain and submit what is due; returns violations."""
        self.decided.setdefault(block.height, block)
        problems: list[str] = []
        while self.state.height + 1 in self.decided:
            nxt = self.decided[self.state.height + 1]
            self.state = apply_block(self.state, nxt, record_exists=lambda _: False, check_signatures=False)
            problems += self.model.follow(nxt)
        self._act(submit, now_ms)
        return problems

    def _validators(self) -> list[bytes]:
        return [v.sign_key for v in self.state.validators.validators]

    def _act(self, submit: Submit, now_ms: int) -> None:
        step = next((s for s in self.steps if s.done_at is None), None)
        if step is None:
            return
        state = self.state
        to = self._validators()
        if step.proposal is None:
            problem = self._refusal(step)
            if problem is not None:
                self.skipped.append(f"{step.action} {step.name}: {problem}")
                step.done_at = state.height
                return
            step.proposal = self._proposal(step, now_ms)
        pid = step.proposal.record_id
        outcome = next((o for o in state.recent if o[0] == pid), None)
        if outcome is not None:
            if outcome[1] == "approved" and state.height >= outcome[2]:
                step.done_at = outcome[2]
            elif outcome[1] != "approved":
                step.proposal = None  # rejected or expired: propose again
            return
        open_ = next((p for p in state.proposals if p.proposal_id == pid), None)
        if open_ is None:
            submit(step.proposal, to)  # not on the chain yet (lost, or evicted): again
            return
        voters = [k for k in to if k not in open_.approvals and k not in open_.rejections]
        if self.approvers_wanted is not None:
            wanted = self.approvers_wanted(state)
            voters = [k for k in voters if k in self.correct][: max(0, wanted - len(open_.approvals))]
        for key in voters:
            vote = self.votes.get((pid, key))
            if vote is None:
                approve = key in self.correct
                vote = self._record(
                    self.identities[key],
                    RecordType.MEMBERSHIP_VOTE,
                    {"proposal": pid, "approve": approve},
                    now_ms,
                )
                self.votes[(pid, key)] = vote
            submit(vote, to)

    def _refusal(self, step: Step) -> str | None:
        state = self.state
        if step.role != "validator":
            return None
        problem = validator_change_problem(
            state.validators, step.action, step.member.public.sign_key, step.power
        )
        if problem is None and step.action == "remove":
            # Byzantine members must keep under a third of the power, or safety is not promised.
            faulty = sum(v.power for v in state.validators.validators if v.sign_key not in self.correct)
            total = state.validators.total_power - (state.validators.power_of([step.member.public.sign_key]))
            if faulty * 3 >= total:
                problem = "the Byzantine members would hold a third of the power"
        return problem

    def _proposal(self, step: Step, now_ms: int) -> Record:
        sponsors = [k for k in self._validators() if k in self.correct]
        sponsor = self.identities[self.rng.choice(sorted(sponsors))]
        request = b""
        if step.action == "add":
            request = make_join_request(
                step.member,
                chain_id=self.state.chain_id,
                genesis_hash=self.state.genesis.hash,
                role=step.role,
                name=step.name,
                country="NO",
                addresses=[],
                data_url="",
                time_ms=now_ms,
            )
        body = {
            "action": step.action,
            "role": step.role,
            "member": step.member.public.sign_key,
            "name": step.name,
            "power": step.power,
            "expires_ms": self.state.last_time_ms + PROPOSAL_LIFETIME_MS,
            "request": request,
        }
        return self._record(sponsor, RecordType.MEMBERSHIP_PROPOSAL, body, now_ms)

    def _record(self, author: SigningIdentity, kind: RecordType, body: dict[str, Any], now_ms: int) -> Record:
        return make_record(
            author,
            kind,
            body,
            record_id=self.rng.randbytes(16),
            time_ms=now_ms,
            tags=tuple(self.rng.randbytes(16) for _ in range(8)),
        )


class MembershipModel:
    """The rules of the flow restated independently, checked against every decided block."""

    def __init__(self, genesis_state: ChainState) -> None:
        self.chain_id = genesis_state.chain_id
        self.powers: dict[bytes, int] = {v.sign_key: v.power for v in genesis_state.validators.validators}
        self.names: dict[bytes, str] = {v.sign_key: v.name for v in genesis_state.validators.validators}
        self.floor = min(MODEL_MIN_VALIDATORS, len(self.powers))
        self.open: dict[bytes, dict[str, Any]] = {}
        self.due: dict[int, list[dict[str, Any]]] = {}
        self.height = 0

    def _set_hash(self) -> bytes:
        # The header's validators_hash: the canonical list of {name, key, power} sorted by key.
        ordered = sorted(self.powers)
        value = [{"name": self.names[k], "key": k, "power": self.powers[k]} for k in ordered]
        return hashlib.sha256(canonical.encode(value)).digest()

    def follow(self, block: Block) -> list[str]:
        """Check block ``height`` = self.height + 1 and move on; returns violations."""
        problems = []
        self.height = block.height
        if block.header.validators_hash != self._set_hash():
            problems.append(
                f"membership: block {block.height} is voted by a validator set the approvals on the "
                "chain do not justify"
            )
        total = sum(self.powers.values())
        for proposal in list(self.open.values()):
            if proposal["expires_ms"] < block.header.time_ms:
                del self.open[proposal["id"]]
        for record in block.records:
            if record.type is RecordType.MEMBERSHIP_PROPOSAL:
                self.open[record.record_id] = {
                    "id": record.record_id,
                    **record.body,
                    "yes": set(),
                    "no": set(),
                }
            elif record.type is RecordType.MEMBERSHIP_VOTE and record.body["proposal"] in self.open:
                proposal = self.open[record.body["proposal"]]
                proposal["yes" if record.body["approve"] else "no"].add(record.author)
                yes = sum(self.powers.get(k, 0) for k in proposal["yes"])
                no = sum(self.powers.get(k, 0) for k in proposal["no"])
                if 3 * yes > 2 * total:
                    self.due.setdefault(block.height + 2, []).append(proposal)
                    del self.open[proposal["id"]]
                elif 3 * (total - no) <= 2 * total:
                    del self.open[proposal["id"]]
        for change in self.due.pop(block.height + 1, []):  # takes effect for the next height
            key = change["member"]
            if change["role"] != "validator":
                continue
            if change["action"] == "remove":
                self.powers.pop(key, None)
            else:
                self.powers[key] = change["power"]
                self.names.setdefault(key, change["name"])
        if len(self.powers) < self.floor:
            problems.append(f"membership: {len(self.powers)} validators after height {block.height}")
        return problems
