#!/usr/bin/env python3
"""A short tour of the MFTP ledger: blocks of signed records, verification and proofs.

Makes keys for four validators, appends a few blocks of signed records with
their commit certificates to a LevelDB store in a temporary directory, verifies
the chain from the genesis, then prints an inclusion proof and a consistency
proof and checks them the way a light client would.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.block import ValidatorSet
from mftp.ledger.chain import build_block
from mftp.ledger.errors import InvalidProofError
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_extension, prove_record, verify_ledger_extension, verify_record_in_ledger
from mftp.ledger.records import RecordType
from mftp.ledger.store import BlockStore
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.ledger.verify import verify_chain

BLOCKS = [
    [RecordType.TRANSFER_OFFERED, RecordType.TRANSFER_OFFERED],
    [RecordType.TRANSFER_RECEIVED, RecordType.STUDY_ACCESSED, RecordType.TRANSFER_RECEIVED],
    [RecordType.AUDIT_GRANT],
    [RecordType.STUDY_ACCESSED, RecordType.KEY_ROTATION, RecordType.TRANSFER_OFFERED],
    [RecordType.AUDIT_REPORT, RecordType.STUDY_ACCESSED],
]


def short(data: bytes) -> str:
    return data.hex()[:16] + "…"


def append_blocks(ledger: Ledger, validators: list[SigningIdentity]) -> None:
    rng = random.Random(7)
    last_cert = None
    for types in BLOCKS:
        state = ledger.state
        height = state.height + 1
        records = [sample.sample_record(validators[i % 4], rng, record_type=t) for i, t in enumerate(types)]
        proposer = state.validators.proposer(height, 0)
        time_ms = state.last_time_ms + 5000
        block = build_block(
            state, records, time_ms=time_ms, proposer=proposer.sign_key, last_commit=last_cert
        )
        cert = sample.certify(block, validators[:3], state.chain_id)  # 3 of 4: more than 2/3
        ledger.append(block, cert)  # checks the block, every signature and the certificate
        last_cert = cert
        names = ", ".join(t.name.lower() for t in types)
        print(f"  block {height}  {short(block.hash)}  by {proposer.name:<12} records: {names}")
        print(f"           ledger size {block.header.ledger_size:>2}, root {short(block.header.ledger_root)}")


def main() -> None:
    validators = [SigningIdentity.generate() for _ in range(4)]
    genesis = sample.sample_genesis(validators, chain_id="mftp-demo")
    print(f"Genesis {short(genesis.hash)}: 4 validators of power 1, chain id {genesis.chain_id!r}\n")
    with (
        tempfile.TemporaryDirectory(prefix="mftp-demo-") as tmp,
        Ledger(LevelDBStore(Path(tmp) / "ledger"), genesis) as ledger,
    ):
        print("Appending blocks (each record signed by its institution, each block certified):")
        append_blocks(ledger, validators)
        state = verify_chain(ledger.store, genesis, workers=2)
        print(f"\nverify_chain: {state.height} blocks, {state.ledger_size} records, every signature OK")
        assert state.last_validators is not None
        show_inclusion(ledger.store, state.last_validators)
        show_consistency(ledger.store)


def show_inclusion(store: BlockStore, validators: ValidatorSet) -> None:
    record_id = store.record_ids_by_type(RecordType.AUDIT_GRANT)[0]
    found, proof = prove_record(store, record_id)
    head = store.header(store.head_height)
    cert = store.certificate(head.height)
    print(f"\nInclusion proof of the audit grant {record_id.hex()} (block {found.height}):")
    print(f"  leaf {proof.ledger_index} of {proof.ledger_size}, path:")
    for node in proof.path:
        print(f"    {node.hex()}")
    record = verify_record_in_ledger(found.record.to_bytes(), proof, head, cert, validators)
    print(f"  verified against block {head.height}'s certified root {short(head.ledger_root)}:")
    print(f"  a {record.type.name} signed by {short(record.author)}")
    tampered = found.record.to_bytes().replace(b"HLEGAL", b"TREAT\x00")
    try:
        verify_record_in_ledger(tampered, proof, head, cert, validators)
    except InvalidProofError as exc:
        print(f"  the same proof for a tampered copy: refused ({exc})")


def show_consistency(store: BlockStore) -> None:
    extension = prove_extension(store, 2, store.head_height)
    print(f"\nConsistency proof: the ledger of block {store.head_height} extends that of block 2")
    print(f"  sizes {extension.old_size} -> {extension.new_size}, path:")
    for node in extension.path:
        print(f"    {node.hex()}")
    verify_ledger_extension(store.header(2), store.header(store.head_height), extension)
    print("  verified: nothing was removed or rewritten, only appended")


if __name__ == "__main__":
    main()
