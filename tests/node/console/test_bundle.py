"""The signed audit bundle offline: it verifies with only the genesis, and any change, another
genesis, another signer or a broken proof is refused (BundleInvalid; the CLI exits 4)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_record
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.audit.bundle import BundleInvalid, make_bundle, verify_bundle
from mftp.node.cli.main import main


def _chain(tmp_path: Path) -> tuple[Ledger, SigningIdentity, object]:
    signers = identities(4)
    auditor = SigningIdentity.generate()
    genesis = sample_genesis(signers, auditors=[auditor])
    builder = ChainBuilder(genesis, signers)
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), genesis)
    rng = random.Random(11)
    for _ in range(3):
        ledger.append(*builder.next_block([sample_record(signers[0], rng) for _ in range(4)]))
    return ledger, auditor, genesis


def _scan(ledger: Ledger, picks: list[bytes]) -> dict[str, object]:
    store = ledger.store
    head = store.header(store.head_height)
    matches = []
    for record_id in picks:
        stored, proof = prove_record(store, record_id, store.head_height)
        matches.append(
            {
                "record_id": record_id.hex(), "type": stored.record.type.name.lower(),
                "time_ms": stored.record.time_ms,
                "ledger_index": proof.ledger_index,
                "proof": {"ledger_index": proof.ledger_index, "ledger_size": proof.ledger_size,
                          "path": [p.hex() for p in proof.path], "verified": True},
                "disclosed": {"user": "user:alice"},
            }
        )  # fmt: skip
    return {
        "grant_id": "ab" * 16, "subject": "user:alice", "height": head.height,
        "ledger_root": head.ledger_root.hex(), "match_count": len(matches), "matches": matches,
    }  # fmt: skip


def test_a_bundle_verifies_offline_and_every_change_is_refused(tmp_path: Path) -> None:
    ledger, auditor, genesis = _chain(tmp_path)
    store = ledger.store
    picks = [store.block(1).records[0].record_id, store.block(3).records[2].record_id]
    bundle = make_bundle(_scan(ledger, picks), store, genesis, auditor)  # type: ignore[arg-type]
    data = json.dumps(bundle).encode()
    summary = verify_bundle(data, genesis)  # type: ignore[arg-type]
    assert summary["matches"] == 2 and summary["height"] == 3

    # Every single byte flipped inside the signed content is refused (never a crash).
    content_at = data.index(b'"content"')
    step = max(1, (len(data) - content_at) // 400)
    for at in range(content_at, len(data), step):
        changed = bytearray(data)
        changed[at] ^= 0x01
        with pytest.raises(BundleInvalid):
            verify_bundle(bytes(changed), genesis)  # type: ignore[arg-type]

    # Re-signed by a node that is not an audit node of the genesis: refused.
    forged = make_bundle(_scan(ledger, picks), store, genesis, SigningIdentity.generate())  # type: ignore[arg-type]
    with pytest.raises(BundleInvalid, match="audit node"):
        verify_bundle(json.dumps(forged).encode(), genesis)  # type: ignore[arg-type]
    # Signed by the real auditor but claiming a record at another place: the proof fails.
    lying = _scan(ledger, picks)
    lying["matches"][0]["proof"]["ledger_index"] += 1  # type: ignore[index]
    with pytest.raises(BundleInvalid):
        verify_bundle(json.dumps(make_bundle(lying, store, genesis, auditor)).encode(), genesis)  # type: ignore[arg-type]
    # Another consortium's genesis: refused.
    other = sample_genesis(identities(4), auditors=[auditor], chain_id="test-2")
    with pytest.raises(BundleInvalid, match="another consortium"):
        verify_bundle(data, other)  # type: ignore[arg-type]
    for junk in (b"", b"[]", b"{}", b"[" * 100_000, b'{"content": 5, "signature": "zz"}'):
        with pytest.raises(BundleInvalid):
            verify_bundle(junk, genesis)  # type: ignore[arg-type]

    # The CLI: 0 when it holds, 4 when one byte changed, 3 for an unreadable genesis file.
    good, bad = tmp_path / "bundle.json", tmp_path / "bad.json"
    good.write_bytes(data)
    bad.write_bytes(data.replace(b'"user:alice"', b'"user:alicf"', 1))
    genesis_file = tmp_path / "genesis.json"
    genesis.save(genesis_file)  # type: ignore[attr-defined]
    assert main(["audit", "verify", str(good), "--genesis", str(genesis_file)]) == 0
    assert main(["audit", "verify", str(bad), "--genesis", str(genesis_file)]) == 4
    assert main(["audit", "verify", str(good), "--genesis", str(tmp_path / "missing.json")]) == 3
    ledger.close()
