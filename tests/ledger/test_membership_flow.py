"""Membership by proposal and vote (record types 9-11): the flow, the safety rails, and every refusal."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.chain import ChainState
from mftp.ledger.errors import InvalidBlockError, LedgerUsageError
from mftp.ledger.genesis import Genesis
from mftp.ledger.ledger import Ledger, decode_state, encode_state
from mftp.ledger.membership import (
    MemberEntry,
    fault_tolerance,
    make_join_request,
    parse_join_request,
    validator_change_problem,
)
from mftp.ledger.records import Record, RecordType
from mftp.ledger.store_memory import MemoryStore
from mftp.ledger.verify import verify_chain

NEWCOMER = sample.identities(1, "flow-newcomer")[0]
SECOND = sample.identities(1, "flow-second")[0]
AUDITOR = sample.identities(1, "flow-auditor")[0]
STRANGER = sample.identities(1, "flow-stranger")[0]
RNG = random.Random(20)


class Flow:
    """A chain builder that keeps every block, with short-hands for the flow's records."""

    def __init__(self, genesis: Genesis, signers: list[SigningIdentity]) -> None:
        self.genesis = genesis
        self.builder = sample.ChainBuilder(genesis, [*signers, NEWCOMER, SECOND])
        self.blocks: list[Any] = []

    @property
    def state(self) -> ChainState:
        return self.builder.state

    def block(self, *records: Record) -> ChainState:
        self.blocks.append(self.builder.next_block(list(records)))
        return self.state

    def expires(self, seconds: int = 3600) -> int:
        return self.state.last_time_ms + seconds * 1000

    def propose(self, author: SigningIdentity, **kw: Any) -> Record:
        kw.setdefault("expires_ms", self.expires())
        return sample.flow_record(author, RecordType.MEMBERSHIP_PROPOSAL, sample.proposal_body(**kw), rng=RNG)

    def add(self, author: SigningIdentity, who: SigningIdentity = NEWCOMER, **kw: Any) -> Record:
        role = kw.get("role", "validator")
        name = kw.pop("name", "newcomer")
        request = kw.pop("request", None) or sample.join_request(who, self.genesis, name=name, role=role)
        return self.propose(
            author, action="add", member=who.public.sign_key, name=name, request=request, **kw
        )

    def vote(self, author: SigningIdentity, proposal: Record, approve: bool = True) -> Record:
        body = {"proposal": proposal.record_id, "approve": approve}
        return sample.flow_record(author, RecordType.MEMBERSHIP_VOTE, body, rng=RNG)

    def store(self) -> MemoryStore:
        store = MemoryStore()
        for block, cert in self.blocks:
            store.append(block, cert)
        return store


def entry_record(author: SigningIdentity, name_on_chain: str, seq: int = 1, **kw: Any) -> Record:
    entry = MemberEntry(
        author.public.sign_key, name_on_chain, "NO", ("/ip4/10.0.0.1/tcp/7600",), "https://10.0.0.1:7800", seq
    )
    body = {**entry.to_value(), **kw}
    return sample.flow_record(author, RecordType.MEMBER_ENTRY, body, rng=RNG)


@pytest.fixture
def flow(genesis: Genesis, validators: list[SigningIdentity]) -> Flow:
    return Flow(genesis, validators)


def test_join_approved_by_more_than_two_thirds_takes_effect_two_heights_later(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    proposal = flow.add(validators[0])
    state = flow.block(proposal)
    assert [p.proposal_id for p in state.proposals] == [proposal.record_id]
    state = flow.block(flow.vote(validators[0], proposal), flow.vote(validators[1], proposal))
    assert state.proposals[0].approvals and not state.pending  # 2 of 4 is not more than 2/3
    state = flow.block(flow.vote(validators[2], proposal))  # 3 of 4: approved at H
    height = state.height
    assert not state.proposals and state.recent[-1] == (proposal.record_id, "approved", height + 2)
    assert NEWCOMER.public.sign_key not in state.validators
    state = flow.block()
    assert NEWCOMER.public.sign_key in state.validators  # votes on H + 2
    entry = next(e for e in state.directory if e.key == NEWCOMER.public.sign_key)
    assert entry.name == "newcomer" and entry.addresses == ("/ip4/127.0.0.1/tcp/7600",)
    state = flow.block()  # H + 2, certified by the five
    assert NEWCOMER.public.sign_key in {key for key, _ in flow.blocks[-1][1].signatures}
    assert verify_chain(flow.store(), flow.genesis, workers=0) == state


def test_a_member_removing_itself_leaves_and_its_records_still_verify(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    # First grow to five, so that a removal leaves four.
    add = flow.add(validators[0])
    flow.block(add, *(flow.vote(v, add) for v in validators[:3]))
    flow.block()
    leaving = validators[3]
    flow.block(entry_record(leaving, "validator-3"), sample.sample_record(leaving, RNG))
    assert any(e.key == leaving.public.sign_key for e in flow.state.directory)
    remove = flow.propose(leaving, action="remove", member=leaving.public.sign_key, name="validator-3")
    voters = [*validators[:3], NEWCOMER]
    state = flow.block(remove, *(flow.vote(v, remove) for v in voters))  # 4 of 5 > 2/3
    state = flow.block()
    assert leaving.public.sign_key not in state.validators
    assert all(e.key != leaving.public.sign_key for e in state.directory)  # no longer dialled
    with pytest.raises(InvalidBlockError, match="not a member"):
        flow.block(sample.sample_record(leaving, RNG))
    flow.block()
    assert verify_chain(flow.store(), flow.genesis, workers=0) == flow.state


def test_audit_node_added_and_removed_by_the_same_flow(flow: Flow, validators: list[SigningIdentity]) -> None:
    add = flow.add(validators[1], who=AUDITOR, name="regulator", role="audit", power=0)
    flow.block(add, *(flow.vote(v, add) for v in validators[:3]))
    state = flow.block()
    assert [a.name for a in state.auditors] == ["regulator"]
    remove = flow.propose(
        validators[1], action="remove", role="audit", member=AUDITOR.public.sign_key, name="regulator"
    )
    flow.block(remove, *(flow.vote(v, remove) for v in validators[1:]))
    assert flow.block().auditors == ()


def test_power_change() -> None:
    seven = sample.identities(7, "flow-seven")
    flow = Flow(sample.sample_genesis(seven, chain_id="mftp-test"), seven)
    key = seven[0].public.sign_key
    change = flow.propose(seven[0], action="power", member=key, name="validator-0", power=2)
    flow.block(change, *(flow.vote(v, change) for v in seven[:5]))  # 5 of 7 > 2/3
    state = flow.block()
    validator = state.validators.get(key)
    assert validator is not None and validator.power == 2 and state.validators.total_power == 8


# --- the safety rails -----------------------------------------------------------------------------


def test_removal_leaving_three_validators_is_refused_and_says_what_f_becomes(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    member = validators[3].public.sign_key
    with pytest.raises(InvalidBlockError, match=r"leave 3 validators.*f would become 0 \(it is 1\)"):
        flow.block(flow.propose(validators[0], action="remove", member=member, name="validator-3"))


def test_a_newcomer_too_strong_for_todays_validators_is_refused(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    with pytest.raises(InvalidBlockError, match=r"hold 4 of 6 power.*f would become 0 \(it is 1\)"):
        flow.block(flow.add(validators[0], power=2))


def test_a_power_change_that_leaves_no_fault_tolerance_is_refused(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    key = validators[0].public.sign_key
    with pytest.raises(InvalidBlockError, match="f would become 0"):
        flow.block(flow.propose(validators[0], action="power", member=key, name="validator-0", power=3))


def test_one_validator_change_in_flight(flow: Flow, validators: list[SigningIdentity]) -> None:
    first = flow.add(validators[0])
    flow.block(first)
    second = flow.add(validators[1], who=SECOND, name="second")
    with pytest.raises(InvalidBlockError, match="one validator change at a time"):
        flow.block(second)
    flow.block(*(flow.vote(v, first) for v in validators[:3]))  # approved, not yet effective
    with pytest.raises(InvalidBlockError, match="one validator change at a time"):
        flow.block(second)
    flow.block()  # now effective
    audit = flow.add(validators[1], who=AUDITOR, name="regulator", role="audit", power=0)
    flow.block(second, audit)  # audit changes do not count as validator changes


def test_rails_function_directly() -> None:
    vset = sample.sample_genesis(sample.identities(7, "rails")).validators
    assert (
        fault_tolerance([1] * 7) == 2 and fault_tolerance([1] * 4) == 1 and fault_tolerance([3, 1, 1, 1]) == 0
    )
    keys = [v.sign_key for v in vset.validators]
    assert validator_change_problem(vset, "remove", keys[0], 0) is None
    assert validator_change_problem(vset, "add", bytes(32), 3) is None  # 7 of 10 > 2/3
    problem = validator_change_problem(vset, "add", bytes(32), 4)
    assert problem is not None and "7 of 11" in problem and "f would become" in problem


# --- votes, expiry, rejection ---------------------------------------------------------------------


def test_rejections_that_leave_no_quorum_close_the_proposal(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    proposal = flow.add(validators[0])
    flow.block(proposal, flow.vote(validators[0], proposal, approve=False))
    assert flow.state.proposals  # one rejection of four: three could still approve
    state = flow.block(flow.vote(validators[1], proposal, approve=False))
    assert not state.proposals and state.recent[-1][1] == "rejected"
    with pytest.raises(InvalidBlockError, match="no open proposal"):
        flow.block(flow.vote(validators[2], proposal))


def test_a_proposal_expires_by_block_time(flow: Flow, validators: list[SigningIdentity]) -> None:
    proposal = flow.add(validators[0], expires_ms=flow.expires(61))
    flow.block(proposal, flow.vote(validators[0], proposal))
    flow.block()
    state = flow.builder.state
    block, cert = flow.builder.next_block([], time_ms=state.last_time_ms + 120_000)
    flow.blocks.append((block, cert))
    assert not flow.state.proposals and flow.state.recent[-1][1] == "expired"
    with pytest.raises(InvalidBlockError, match="no open proposal"):
        flow.block(flow.vote(validators[1], proposal))


@pytest.mark.parametrize("seconds", [10, 40 * 86_400])
def test_expiry_outside_bounds_is_refused(
    flow: Flow, validators: list[SigningIdentity], seconds: int
) -> None:
    with pytest.raises(InvalidBlockError, match="expiry must be"):
        flow.block(flow.add(validators[0], expires_ms=flow.expires(seconds)))


def test_bad_votes_are_refused(flow: Flow, validators: list[SigningIdentity]) -> None:
    add = flow.add(validators[0], who=AUDITOR, name="regulator", role="audit", power=0)
    flow.block(add, *(flow.vote(v, add) for v in validators[:3]))
    flow.block()
    proposal = flow.add(validators[0])
    flow.block(proposal, flow.vote(validators[0], proposal))
    with pytest.raises(InvalidBlockError, match="only a validator votes"):
        flow.block(flow.vote(AUDITOR, proposal))
    with pytest.raises(InvalidBlockError, match="voted on the proposal already"):
        flow.block(flow.vote(validators[0], proposal, approve=False))
    with pytest.raises(InvalidBlockError, match="voted on the proposal already"):
        flow.block(flow.vote(validators[1], proposal), flow.vote(validators[1], proposal))
    with pytest.raises(InvalidBlockError, match="author is not a member"):
        flow.block(flow.vote(STRANGER, proposal))


# --- proposals and join requests ------------------------------------------------------------------


def _forged_request(genesis: Genesis) -> bytes:
    value = canonical.decode(sample.join_request(NEWCOMER, genesis, name="newcomer"))
    value["sig"] = STRANGER.sign("member", b"anything")
    return canonical.encode(value)


BAD_PROPOSALS: dict[str, Any] = {
    "already a member": lambda f, v: f.add(v[0], who=v[1], name="x"),
    "is taken": lambda f, v: f.add(v[0], name="Validator-2"),
    "another chain": lambda f, v: f.add(
        v[0],
        request=make_join_request(
            NEWCOMER,
            chain_id="other",
            genesis_hash=f.genesis.hash,
            role="validator",
            name="newcomer",
            country="NO",
            addresses=[],
            data_url="",
            time_ms=1,
        ),
    ),
    "does not match": lambda f, v: f.add(
        v[0], request=sample.join_request(NEWCOMER, f.genesis, name="newcomer", role="audit")
    ),
    "bad signature": lambda f, v: f.add(v[0], request=_forged_request(f.genesis)),
    "join request": lambda f, v: f.add(v[0], request=b"\x80"),
    "needs power": lambda f, v: f.add(v[0], power=0),
    "only an addition": lambda f, v: f.propose(
        v[0], action="remove", member=v[3].public.sign_key, name="validator-3", request=b"x"
    ),
    "not a member in that role": lambda f, v: f.propose(
        v[0], action="remove", role="audit", member=v[3].public.sign_key, name="validator-3"
    ),
    "the name is not": lambda f, v: f.propose(v[0], action="remove", member=v[3].public.sign_key, name="x"),
    "new power": lambda f, v: f.propose(
        v[0], action="power", member=v[3].public.sign_key, name="validator-3", power=1
    ),
}


@pytest.mark.parametrize("reason", list(BAD_PROPOSALS))
def test_bad_proposals_are_refused(flow: Flow, validators: list[SigningIdentity], reason: str) -> None:
    with pytest.raises(InvalidBlockError, match=reason):
        flow.block(BAD_PROPOSALS[reason](flow, validators))


def test_two_proposals_for_one_member_and_the_open_limit(
    flow: Flow, validators: list[SigningIdentity]
) -> None:
    flow.block(flow.add(validators[0], who=AUDITOR, name="regulator", role="audit", power=0))
    with pytest.raises(InvalidBlockError, match="open already"):
        flow.block(flow.add(validators[1], who=AUDITOR, name="regulator-2", role="audit", power=0))
    extra = sample.identities(8, "flow-extra")
    for index, who in enumerate(extra[:7]):
        flow.block(flow.add(validators[0], who=who, name=f"audit-x{index}", role="audit", power=0))
    with pytest.raises(InvalidBlockError, match="8 proposals are open"):
        flow.block(flow.add(validators[0], who=extra[7], name="audit-x7", role="audit", power=0))


def test_join_request_round_trip_and_tampering(genesis: Genesis) -> None:
    data = sample.join_request(NEWCOMER, genesis, name="newcomer")
    request = parse_join_request(data)
    assert request.member == NEWCOMER.public.sign_key and request.genesis_hash == genesis.hash
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    with pytest.raises(Exception, match=r"join request|member entry"):
        parse_join_request(bytes(flipped))
    with pytest.raises(LedgerUsageError):
        sample.join_request(NEWCOMER, genesis, name="newcomer", country="norway")


# --- the directory --------------------------------------------------------------------------------

BAD_ENTRIES: dict[str, Any] = {
    "not the member's name": {"name": "someone else"},
    "ISO 3166": {"country": "no"},
    "fingerprint": {"tls_key_sha256": bytes(32)},
    "https": {"data_url": "http://10.0.0.1:7800"},
    "not a multiaddr": {"addresses": ["10.0.0.1:7600"]},
}


@pytest.mark.parametrize("reason", list(BAD_ENTRIES))
def test_bad_directory_entries_are_refused(
    flow: Flow, validators: list[SigningIdentity], reason: str
) -> None:
    with pytest.raises(InvalidBlockError, match=reason):
        flow.block(entry_record(validators[0], "validator-0", **BAD_ENTRIES[reason]))


def test_directory_entries_only_move_forward(flow: Flow, validators: list[SigningIdentity]) -> None:
    state = flow.block(entry_record(validators[0], "validator-0", seq=5))
    assert state.directory[0].seq == 5
    with pytest.raises(InvalidBlockError, match="does not follow"):
        flow.block(entry_record(validators[0], "validator-0", seq=5))  # a replayed (or older) entry
    assert flow.block(entry_record(validators[0], "validator-0", seq=6)).directory[0].seq == 6


def test_snapshot_keeps_the_flow(flow: Flow, validators: list[SigningIdentity]) -> None:
    first = flow.add(validators[0], who=AUDITOR, name="regulator", role="audit", power=0)
    flow.block(
        first, entry_record(validators[0], "validator-0"), flow.vote(validators[0], first, approve=False)
    )
    proposal = flow.add(validators[0])
    flow.block(
        proposal,
        flow.vote(validators[1], proposal),
        *(flow.vote(v, first, approve=False) for v in validators[1:2]),
    )
    state = flow.state
    assert state.proposals and state.directory and state.recent
    assert decode_state(encode_state(state), flow.genesis) == state


def test_an_old_snapshot_is_rebuilt_from_the_chain(flow: Flow, validators: list[SigningIdentity]) -> None:
    proposal = flow.add(validators[0])
    flow.block(proposal, flow.vote(validators[0], proposal))
    store = MemoryStore()
    for block, cert in flow.blocks:
        store.append(block, cert, state=canonical.encode({"v": 1}))  # what an older version left
    assert Ledger(store, flow.genesis, workers=0).state == flow.state
