"""Helpers of the ledger tests: sample chains and raw access to both kinds of block store."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import plyvel

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.block import Block, CommitCertificate
from mftp.ledger.genesis import Genesis
from mftp.ledger.records import Record, RecordType
from mftp.ledger.store import BlockStore
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.ledger.store_memory import MemoryStore

# Membership records are valid only in context (approvals, proposals, names): not sampled at random.
MEMBERSHIP_TYPES = {
    RecordType.MEMBERSHIP_CHANGE,
    RecordType.MEMBER_ENTRY,
    RecordType.MEMBERSHIP_PROPOSAL,
    RecordType.MEMBERSHIP_VOTE,
}
PUBLIC_TYPES = [t for t in RecordType if t not in MEMBERSHIP_TYPES]

Chain = list[tuple[Block, CommitCertificate]]


def build_chain(
    genesis: Genesis, signers: list[SigningIdentity], sizes: list[int], seed: int = 1
) -> tuple[Chain, sample.ChainBuilder]:
    """Blocks with ``sizes`` records each (all public record types, authors in turn)."""
    rng = random.Random(seed)
    builder = sample.ChainBuilder(genesis, signers)
    chain: Chain = []
    count = 0
    for size in sizes:
        records = []
        for _ in range(size):
            author = signers[count % len(signers)]
            record_type = PUBLIC_TYPES[count % len(PUBLIC_TYPES)]
            records.append(sample.sample_record(author, rng, record_type=record_type))
            count += 1
        chain.append(builder.next_block(records))
    return chain, builder


def all_records(chain: Chain) -> list[Record]:
    return [record for block, _ in chain for record in block.records]


@dataclass
class Backend:
    """Opens (and reopens) one store of a kind, and edits its raw contents for tamper tests."""

    kind: str
    path: Path
    data: dict[bytes, bytes]

    def open(self) -> BlockStore:
        return LevelDBStore(self.path) if self.kind == "leveldb" else MemoryStore(self.data)

    def edit(self, change: Callable[[dict[bytes, bytes]], object]) -> None:
        """Apply ``change`` to a dict of the raw contents (the store must be closed)."""
        if self.kind == "memory":
            change(self.data)
            return
        db = plyvel.DB(str(self.path))
        try:
            before = dict(db.iterator())
            after = dict(before)
            change(after)
            with db.write_batch(sync=True) as batch:
                for key in before.keys() - after.keys():
                    batch.delete(key)
                for key, value in after.items():
                    if before.get(key) != value:
                        batch.put(key, value)
        finally:
            db.close()


def fill(store: BlockStore, chain: Chain) -> None:
    for block, cert in chain:
        store.append(block, cert)
