"""Light-client proofs: a record in the ledger under a certified header, and ledger extension."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.errors import InvalidProofError, LedgerUsageError
from mftp.ledger.genesis import Genesis
from mftp.ledger.proofs import (
    ConsistencyProof,
    InclusionProof,
    prove_extension,
    prove_record,
    verify_ledger_extension,
    verify_record_in_ledger,
)
from mftp.ledger.store import BlockStore
from tests.ledger.ledger_helpers import Chain, all_records, fill


def test_every_record_is_proven_under_certified_headers(
    store: BlockStore, chain: Chain, genesis: Genesis
) -> None:
    fill(store, chain)
    vset = genesis.validators  # no membership changes in this chain
    for height in (4, len(chain)):
        header, cert = store.header(height), store.certificate(height)
        for record in all_records(chain)[: header.ledger_size : 5]:
            found, proof = prove_record(store, record.record_id, height)
            assert found.record == record
            again = InclusionProof.from_bytes(proof.to_bytes())
            assert again == proof
            assert verify_record_in_ledger(record.to_bytes(), again, header, cert, vset) == record


def test_what_a_light_client_refuses(
    store: BlockStore, chain: Chain, genesis: Genesis, validators: list[SigningIdentity]
) -> None:
    fill(store, chain)
    vset = genesis.validators
    head = store.header(store.head_height)
    cert = store.certificate(head.height)
    record = all_records(chain)[40]
    _, proof = prove_record(store, record.record_id)
    other = all_records(chain)[41]
    older = store.header(9)
    _, old_proof = prove_record(store, record.record_id, 9)
    strangers = sample.sample_genesis(sample.identities(4, "strangers")).validators
    weak = sample.certify(chain[-1][0], validators[:2], genesis.chain_id)
    data = record.to_bytes()
    moved = dataclasses.replace(proof, ledger_index=41)
    forged = dataclasses.replace(head, ledger_root=bytes(32))
    cases = {
        "another record": (other.to_bytes(), proof, head, cert, vset),
        "a changed byte": (data[:-1] + b"\x02", proof, head, cert, vset),
        "another index": (data, moved, head, cert, vset),
        "a proof for another size": (data, old_proof, head, cert, vset),
        "a header not certified": (data, old_proof, older, cert, vset),
        "unknown validators": (data, proof, head, cert, strangers),
        "too few signers": (data, proof, head, weak, vset),
        "a forged root": (data, proof, forged, cert, vset),
    }
    for name, args in cases.items():
        with pytest.raises(InvalidProofError):
            verify_record_in_ledger(*args)
            pytest.fail(name)


def test_ledger_extension(store: BlockStore, chain: Chain) -> None:
    fill(store, chain)
    for old in range(1, len(chain) + 1):
        for new in range(old, len(chain) + 1, 3):
            proof = prove_extension(store, old, new)
            assert ConsistencyProof.from_bytes(proof.to_bytes()) == proof
            verify_ledger_extension(store.header(old), store.header(new), proof)
    proof = prove_extension(store, 4, 10)
    with pytest.raises(InvalidProofError):
        verify_ledger_extension(store.header(5), store.header(10), proof)
    with pytest.raises(InvalidProofError):
        forged = dataclasses.replace(store.header(10), ledger_root=bytes(32))
        verify_ledger_extension(store.header(4), forged, proof)


def test_proving_what_is_not_there_is_our_error(store: BlockStore, chain: Chain) -> None:
    fill(store, chain)
    with pytest.raises(LedgerUsageError):
        prove_record(store, bytes(16))
    with pytest.raises(LedgerUsageError):
        prove_record(store, all_records(chain)[-1].record_id, 3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_malformed_proofs_raise_only_proof_errors(data: bytes) -> None:
    for decode in (InclusionProof.from_bytes, ConsistencyProof.from_bytes):
        with contextlib.suppress(InvalidProofError):
            decode(data)
