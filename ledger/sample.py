"""Deterministic sample chains for tests, demos and benchmarks (never for production keys).

Identities are derived from a seed string, records get well-formed bodies of
every type, and :class:`ChainBuilder` plays the validators: it builds each
block with :func:`mftp.ledger.chain.build_block` and signs its certificate.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import Any

from mftp.crypto.signing import SigningIdentity

from .block import Block, CommitCertificate, VoteType, sign_vote
from .chain import ChainState, apply_block, build_block
from .genesis import Genesis, make_genesis
from .membership import make_join_request
from .records import TAG_SLOTS, Record, RecordType, make_record, membership_payload

SAMPLE_TIME_MS = 1_700_000_000_000


def identities(count: int, seed: str = "mftp-sample") -> list[SigningIdentity]:
    """``count`` identities derived from ``seed`` (the same seed gives the same keys)."""
    return [SigningIdentity(hashlib.sha256(f"{seed}/{index}".encode()).digest()) for index in range(count)]


def sample_genesis(
    validators: Sequence[SigningIdentity],
    *,
    powers: Sequence[int] | None = None,
    auditors: Sequence[SigningIdentity] = (),
    chain_id: str = "mftp-sample",
) -> Genesis:
    """A genesis with ``validators`` (power 1 each unless given) and audit nodes."""
    powers = [1] * len(validators) if powers is None else list(powers)
    return make_genesis(
        "Sample consortium",
        chain_id,
        SAMPLE_TIME_MS,
        [
            (f"validator-{i}", v.public.sign_key, p)
            for i, (v, p) in enumerate(zip(validators, powers, strict=True))
        ],
        [(f"audit-{i}", a.public.sign_key) for i, a in enumerate(auditors)],
    )


def sample_body(record_type: RecordType, rng: random.Random) -> dict[str, Any]:
    """A valid public body for any record type but membership changes (see :func:`membership_record`)."""

    def raw(size: int) -> bytes:
        return rng.randbytes(size)

    bodies: dict[RecordType, dict[str, Any]] = {
        RecordType.TRANSFER_OFFERED: {
            "transfer_id": raw(16),
            "recipient": raw(32),
            "purpose": "TREAT",
            "mode": "pseudonymised",
            "size_bucket": rng.randrange(10, 40),
            "study_commitment": raw(32),
        },
        RecordType.TRANSFER_RECEIVED: {
            "transfer_id": raw(16),
            "offer_id": raw(16),
            "manifest_hash": raw(32),
            "outcome": "complete",
        },
        RecordType.STUDY_ACCESSED: {"transfer_id": raw(16), "action": "view", "purpose": "TREAT"},
        RecordType.AUDIT_GRANT: {
            "auditor": raw(32),
            "legal_basis": "court order 12/34",
            "purpose": "HLEGAL",
            "subject_commitment": raw(32),
            "epoch_from": 1,
            "epoch_to": 9,
            "expires_ms": SAMPLE_TIME_MS + 10**9,
            "notify_after_ms": SAMPLE_TIME_MS + 10**8,
            "sealed_keys": raw(80),
        },
        RecordType.AUDIT_REPORT: {
            "grant_id": raw(16),
            "ledger_size": 10,
            "ledger_root": raw(32),
            "matches_root": raw(32),
            "match_count": 2,
        },
        RecordType.KEY_ROTATION: {
            "party_commitment": raw(32),
            "new_key_commitment": raw(32),
            "effective_epoch": 3,
            "reason": "scheduled",
        },
        RecordType.PATIENT_SHARE: {
            "share_id": raw(16),
            "action": "create",
            "transfer_ids": [raw(16)],
            "mode": "identified",
            "download": True,
            "effective_ms": SAMPLE_TIME_MS,
        },
        RecordType.EVIDENCE: {
            "kind": "equivocation",
            "offender": raw(32),
            "vote_a": raw(100),
            "vote_b": raw(100),
        },
        # Well-formed, but valid on a chain only in context (see ledger/membership.py).
        RecordType.MEMBER_ENTRY: {
            "name": "member",
            "country": "NO",
            "addresses": ["/ip4/127.0.0.1/tcp/7600"],
            "data_url": "https://127.0.0.1:7800",
            "tls_key_sha256": raw(32),
            "seq": 1,
        },
        RecordType.MEMBERSHIP_PROPOSAL: {
            "action": "remove",
            "role": "audit",
            "member": raw(32),
            "name": "member",
            "power": 0,
            "expires_ms": SAMPLE_TIME_MS + 10**8,
            "request": b"",
        },
        RecordType.MEMBERSHIP_VOTE: {"proposal": raw(16), "approve": True},
    }
    return bodies[record_type]


def sample_record(
    author: SigningIdentity,
    rng: random.Random,
    *,
    record_type: RecordType = RecordType.TRANSFER_OFFERED,
    time_ms: int = SAMPLE_TIME_MS,
    envelope_bytes: int = 200,
) -> Record:
    """A signed record with random id, tags, envelope and body."""
    return make_record(
        author,
        record_type,
        sample_body(record_type, rng),
        record_id=rng.randbytes(16),
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
        envelope=rng.randbytes(envelope_bytes),
        commitments={"study": rng.randbytes(32)},
    )


def membership_record(
    author: SigningIdentity,
    approvers: Iterable[SigningIdentity],
    chain_id: str,
    *,
    action: str,
    member: bytes,
    role: str = "validator",
    power: int = 1,
    rng: random.Random,
    time_ms: int = SAMPLE_TIME_MS,
) -> Record:
    """A membership change signed by ``author`` and approved by ``approvers``."""
    record_id = rng.randbytes(16)
    body: dict[str, Any] = {
        "action": action,
        "role": role,
        "member": member,
        "name": f"member-{member[:4].hex()}",
        "power": power,
    }
    message = membership_payload(chain_id, record_id, body)
    body["approvals"] = [a.public.sign_key + a.sign("membership", message) for a in approvers]
    return make_record(
        author,
        RecordType.MEMBERSHIP_CHANGE,
        body,
        record_id=record_id,
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
    )


def flow_record(
    author: SigningIdentity,
    record_type: RecordType,
    body: dict[str, Any],
    *,
    rng: random.Random,
    time_ms: int = SAMPLE_TIME_MS,
) -> Record:
    """A membership-flow record (entry, proposal or vote) with random id and decoy tags."""
    return make_record(
        author,
        record_type,
        body,
        record_id=rng.randbytes(16),
        time_ms=time_ms,
        tags=tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
    )


def join_request(
    newcomer: SigningIdentity, genesis: Genesis, *, name: str, role: str = "validator", country: str = "NO"
) -> bytes:
    """A newcomer's signed join request for ``genesis``'s chain (loopback addresses)."""
    return make_join_request(
        newcomer,
        chain_id=genesis.chain_id,
        genesis_hash=genesis.hash,
        role=role,
        name=name,
        country=country,
        addresses=["/ip4/127.0.0.1/tcp/7600"],
        data_url="https://127.0.0.1:7800",
        time_ms=SAMPLE_TIME_MS,
    )


def proposal_body(
    *,
    action: str,
    member: bytes,
    name: str,
    expires_ms: int,
    role: str = "validator",
    power: int | None = None,
    request: bytes = b"",
) -> dict[str, Any]:
    """A MEMBERSHIP_PROPOSAL body (power defaults to 1 for a validator added, else 0)."""
    if power is None:
        power = 1 if action == "add" and role == "validator" else 0
    return {
        "action": action,
        "role": role,
        "member": member,
        "name": name,
        "power": power,
        "expires_ms": expires_ms,
        "request": request,
    }


def certify(
    block: Block, signers: Iterable[SigningIdentity], chain_id: str, round_: int = 0
) -> CommitCertificate:
    """The commit certificate of ``block`` with precommits from ``signers``."""
    votes = [sign_vote(v, chain_id, VoteType.PRECOMMIT, block.height, round_, block.hash) for v in signers]
    return CommitCertificate.from_votes(votes)


class ChainBuilder:
    """Builds a chain block by block, signing certificates as every known validator.

    Each block is checked with ``apply_block`` except for record signatures, so
    tests can build chains with forged records on purpose.
    """

    def __init__(self, genesis: Genesis, signers: Sequence[SigningIdentity]) -> None:
        self.genesis = genesis
        self.signers = {s.public.sign_key: s for s in signers}
        self.state = ChainState.initial(genesis)
        self.last_cert: CommitCertificate | None = None

    def next_block(
        self, records: Iterable[Record], *, time_ms: int | None = None
    ) -> tuple[Block, CommitCertificate]:
        """The next block and its certificate (from the validators of its height); advances the state."""
        state = self.state
        proposer = state.validators.proposer(state.height + 1, 0).sign_key
        block = build_block(
            state,
            records,
            time_ms=state.last_time_ms + 1000 if time_ms is None else time_ms,
            proposer=proposer,
            last_commit=self.last_cert,
        )
        voters = [self.signers[v.sign_key] for v in state.validators.validators if v.sign_key in self.signers]
        cert = certify(block, voters, self.genesis.chain_id)
        self.state = apply_block(state, block, record_exists=lambda _: False, check_signatures=False)
        self.last_cert = cert
        return block, cert
