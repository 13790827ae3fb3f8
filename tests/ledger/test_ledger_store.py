"""The block store: one suite for LevelDB and memory (the ``backend`` fixture runs both)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import merkle
from mftp.ledger.block import CommitCertificate
from mftp.ledger.errors import LedgerUsageError, StoreError
from mftp.ledger.genesis import Genesis
from mftp.ledger.ledger import Ledger, decode_state, encode_state
from mftp.ledger.records import RecordType
from mftp.ledger.store import BlockStore
from mftp.ledger.store_leveldb import LevelDBStore
from tests.ledger.ledger_helpers import PUBLIC_TYPES, Backend, Chain, all_records, build_chain, fill


def test_empty_store(store: BlockStore) -> None:
    assert store.head_height == 0 and store.leaf_count == 0 and store.root() == merkle.EMPTY_ROOT
    assert store.record(bytes(16)) is None and not store.has_record(bytes(16))
    assert store.record_ids_by_type(RecordType.AUDIT_GRANT) == []
    with pytest.raises(LedgerUsageError):
        store.block(1)
    with pytest.raises(LedgerUsageError):
        store.node(0, 0)


def test_blocks_and_certificates(store: BlockStore, chain: Chain) -> None:
    fill(store, chain)
    assert store.head_height == len(chain) and store.head_hash == chain[-1][0].hash
    for height, (block, cert) in enumerate(chain, start=1):
        assert store.block_bytes(height) == block.to_bytes()
        assert store.block(height) == block and store.header(height) == block.header
        assert store.records_by_block(height) == block.records
        # Below the head, the certificate the next block carries; at the head, the one appended.
        expected = chain[height][0].last_commit if height < len(chain) else cert
        assert store.certificate(height) == expected
    for bad in (0, len(chain) + 1):
        with pytest.raises(LedgerUsageError):
            store.block_bytes(bad)
        with pytest.raises(LedgerUsageError):
            store.certificate(bad)


def test_records_by_id_and_type(store: BlockStore, chain: Chain) -> None:
    fill(store, chain)
    ledger_index = 0
    for height, (block, _) in enumerate(chain, start=1):
        for index, record in enumerate(block.records):
            found = store.record(record.record_id)
            assert found is not None and found.record == record
            assert (found.height, found.index_in_block, found.ledger_index) == (height, index, ledger_index)
            assert store.has_record(record.record_id) and store.record_at(ledger_index) == record
            ledger_index += 1
    assert store.leaf_count == ledger_index
    for record_type in PUBLIC_TYPES:
        for start, end in [(1, None), (4, 8), (7, 7), (10, 100)]:
            stop = len(chain) + 1 if end is None else end
            expected = [
                r.record_id
                for h, (block, _) in enumerate(chain, start=1)
                if start <= h < stop
                for r in block.records
                if r.type is record_type
            ]
            assert store.record_ids_by_type(record_type, start, end) == expected
    assert len(store.record_ids_by_type(RecordType.TRANSFER_OFFERED, limit=3)) == 3
    with pytest.raises(LedgerUsageError):
        store.record_ids_by_type(RecordType.TRANSFER_OFFERED, limit=0)


def test_tree_nodes_roots_and_proofs(store: BlockStore, chain: Chain) -> None:
    fill(store, chain)
    leaves = [r.leaf_hash for r in all_records(chain)]
    size = len(leaves)
    for level in range(size.bit_length()):
        for index in range(size >> level):
            assert store.node(level, index) == merkle.root_of(leaves[index << level : (index + 1) << level])
    for bad_level, bad_index in [(0, size), (size.bit_length(), 0), (-1, 0), (1, size // 2)]:
        with pytest.raises(LedgerUsageError):
            store.node(bad_level, bad_index)
    for height, (block, _) in enumerate(chain, start=1):
        header = block.header
        assert store.root(header.ledger_size) == header.ledger_root
        for index in range(0, header.ledger_size, 7):
            proof = store.inclusion_proof(index, header.ledger_size)
            merkle.verify_inclusion(leaves[index], index, header.ledger_size, proof, header.ledger_root)
        for old, _ in chain[: height - 1]:
            proof = store.consistency_proof(old.header.ledger_size, header.ledger_size)
            merkle.verify_consistency(
                old.header.ledger_size, header.ledger_size, old.header.ledger_root, header.ledger_root, proof
            )
    with pytest.raises(LedgerUsageError):
        store.inclusion_proof(0, size + 1)


def test_append_refuses_what_does_not_extend_the_head(store: BlockStore, chain: Chain) -> None:
    fill(store, chain[:3])
    block, cert = chain[3]
    other_cert = chain[2][1]
    bad = [
        (chain[4][0], chain[4][1]),  # a gap
        (chain[2][0], chain[2][1]),  # a repeat
        (block, other_cert),  # the certificate of another block
        (dataclasses.replace(block, header=dataclasses.replace(block.header, ledger_root=bytes(32))), cert),
        (dataclasses.replace(block, header=dataclasses.replace(block.header, prev_hash=bytes(32))), cert),
    ]
    for bad_block, bad_cert in bad:
        if bad_block.hash != block.hash:  # keep the certificate matching, so the store's own check fires
            bad_cert = CommitCertificate(bad_cert.height, 0, bad_block.hash, bad_cert.signatures)
        with pytest.raises(LedgerUsageError):
            store.append(bad_block, bad_cert)
    assert store.head_height == 3 and store.leaf_count == sum(len(b.records) for b, _ in chain[:3])
    store.append(block, cert)
    assert store.head_height == 4


def test_reopen_keeps_everything(backend: Backend, chain: Chain) -> None:
    with backend.open() as store:
        fill(store, chain[:6])
        root = store.root()
    with backend.open() as store:
        assert store.head_height == 6 and store.root() == root
        for block, cert in chain[6:]:
            store.append(block, cert)
        assert store.root() == chain[-1][0].header.ledger_root
    with backend.open() as store:
        assert store.block(len(chain)) == chain[-1][0]


def test_closed_store_is_a_usage_error(backend: Backend, chain: Chain) -> None:
    store = backend.open()
    store.close()
    store.close()
    with pytest.raises(LedgerUsageError):
        store.append(*chain[0])
    with pytest.raises(LedgerUsageError):
        store.block_bytes(1)
    with pytest.raises(LedgerUsageError):
        store.has_record(bytes(16))


def _drop(prefix: bytes, suffix: bytes = b"") -> Callable[[dict[bytes, bytes]], None]:
    def change(data: dict[bytes, bytes]) -> None:
        keys = [k for k in data if k.startswith(prefix) and k.endswith(suffix)]
        assert keys, prefix
        del data[max(keys)]

    return change


INCONSISTENT: dict[str, Callable[[dict[bytes, bytes]], Any]] = {
    "head block missing": _drop(b"B"),
    "head certificate missing": _drop(b"C"),
    "last record missing": _drop(b"E"),
    "last leaf hash missing": _drop(b"N\x00"),
    "a tree peak missing": _drop(b"N\x02"),
    "head pointer corrupt": lambda d: d.__setitem__(b"H", d[b"H"][:-1]),
    "head pointer wrong": lambda d: d.__setitem__(b"H", d[b"H"][:8] + (1).to_bytes(8, "big") + d[b"H"][16:]),
    "head pointer lost": lambda d: d.pop(b"H"),
    "block above the head": lambda d: d.__setitem__(b"B" + (99).to_bytes(8, "big"), b"x"),
    "record above the head": lambda d: d.__setitem__(b"E" + (10**6).to_bytes(8, "big"), b"x"),
    "format tag lost": lambda d: d.pop(b"F"),
    "foreign format": lambda d: d.__setitem__(b"F", b"something else"),
}


@pytest.mark.parametrize("damage", list(INCONSISTENT))
def test_inconsistent_store_is_refused(backend: Backend, chain: Chain, damage: str) -> None:
    with backend.open() as store:
        fill(store, chain)
        assert store.leaf_count == 124
    backend.edit(INCONSISTENT[damage])
    with pytest.raises(StoreError):
        backend.open()


def test_leveldb_refuses_a_second_opener(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBStore(path), pytest.raises(StoreError, match="cannot open"):
        LevelDBStore(path)
    LevelDBStore(path).close()


# --- the Ledger facade --------------------------------------------------------------------------


def test_ledger_recovers_its_state_from_the_snapshot(
    backend: Backend, genesis: Genesis, chain: Chain
) -> None:
    with Ledger(backend.open(), genesis) as ledger:
        for block, cert in chain[:7]:
            ledger.append(block, cert)
        state = ledger.state
    assert decode_state(encode_state(state), genesis) == state
    with Ledger(backend.open(), genesis) as ledger:
        assert ledger.state == state and ledger.height == 7
        for block, cert in chain[7:]:
            ledger.append(block, cert)
    backend.edit(lambda d: d.pop(b"S"))  # no snapshot: rebuilt by verification
    with Ledger(backend.open(), genesis, workers=0) as ledger:
        assert ledger.height == len(chain) and ledger.state.last_hash == chain[-1][0].hash


def test_ledger_refuses_another_genesis_and_bad_blocks(
    backend: Backend, genesis: Genesis, chain: Chain, validators: list[SigningIdentity]
) -> None:
    with Ledger(backend.open(), genesis) as ledger:
        ledger.append(*chain[0])
        with pytest.raises(LedgerUsageError):
            ledger.append(*chain[1], state_after=ledger.state)
        with pytest.raises(Exception, match="2/3"):
            ledger.append(chain[1][0], CommitCertificate(2, 0, chain[1][0].hash, chain[1][1].signatures[:2]))
        assert ledger.height == 1 and ledger.store.head_height == 1
    other, _ = build_chain(genesis, validators, [1])
    other_genesis = dataclasses.replace(genesis, chain_id="another")
    with pytest.raises(StoreError, match="another genesis"):
        Ledger(backend.open(), other_genesis)
    assert other
