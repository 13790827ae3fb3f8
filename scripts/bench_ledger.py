#!/usr/bin/env python3
"""Benchmark of the ledger: append, full verification and inclusion proofs on LevelDB.

    bench_ledger.py [--quick] [--records N] [--block-records N] [--workers N] [--proofs N]

1. Builds N signed records up front (4 validator identities, signed on all cores; not timed).
2. ``append_records_per_s``: appends them in blocks of 500 to a LevelDB store in a
   temporary directory through :class:`mftp.ledger.ledger.Ledger`: building each
   block (records and ledger roots, encoding), checking it with ``apply_block``
   (structure, ids, roots; record signatures are checked by consensus before it
   votes, and again by verification), signing and checking its certificate, and
   one synced write batch per block.
3. ``verify_records_per_s``: ``verify_chain`` from the genesis, every record
   signature and every certificate checked, on ``--workers`` processes.
4. ``proofs_per_s``: for random records, look the record up, build its inclusion
   proof against the head's ledger root and verify it (the head's certificate is
   verified once: that is what makes its root trusted).

The two cores are shared with other work, so the JSON also gives the load
average before and after the run: figures taken under load are low.

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mftp.ledger import merkle, sample
from mftp.ledger.block import ValidatorSet
from mftp.ledger.chain import build_block
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_record, verify_certified_header
from mftp.ledger.records import Record
from mftp.ledger.store import BlockStore
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.ledger.verify import verify_chain

VALIDATORS = 4
SEED = "bench-ledger"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sign_chunk(args: tuple[int, int]) -> list[bytes]:
    """Sign ``count`` records (worker process); returns their encodings."""
    start, count = args
    signers = sample.identities(VALIDATORS, SEED)
    rng = random.Random(start)
    return [sample.sample_record(signers[(start + i) % VALIDATORS], rng).to_bytes() for i in range(count)]


def make_records(total: int, workers: int) -> list[Record]:
    chunk = 2000
    jobs = [(start, min(chunk, total - start)) for start in range(0, total, chunk)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        encoded = [data for part in pool.map(_sign_chunk, jobs) for data in part]
    return [Record.decode(data) for data in encoded]


def bench_append(ledger: Ledger, records: list[Record], block_records: int) -> float:
    signers = sample.identities(VALIDATORS, SEED)
    chain_id = ledger.genesis.chain_id
    last_cert = None
    started = time.perf_counter()
    for start in range(0, len(records), block_records):
        state = ledger.state
        proposer = state.validators.proposer(state.height + 1, 0).sign_key
        block = build_block(
            state,
            records[start : start + block_records],
            time_ms=state.last_time_ms + 1000,
            proposer=proposer,
            last_commit=last_cert,
        )
        cert = sample.certify(block, signers, chain_id)
        ledger.append(block, cert, check_signatures=False)
        last_cert = cert
    return time.perf_counter() - started


def bench_proofs(store: BlockStore, ids: list[bytes], count: int, validators: ValidatorSet) -> float:
    head = store.header(store.head_height)
    verify_certified_header(head, store.certificate(head.height), validators)
    rng = random.Random(7)
    chosen = [rng.choice(ids) for _ in range(count)]
    started = time.perf_counter()
    for record_id in chosen:
        found, proof = prove_record(store, record_id)
        proof.verify(merkle.leaf_hash(found.record.to_bytes()), head.ledger_root)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="20,000 records (under a minute)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--block-records", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--proofs", type=int, default=None)
    args = parser.parse_args()
    total = args.records or (20_000 if args.quick else 100_000)
    proofs = args.proofs or (5_000 if args.quick else 20_000)

    load_before = os.getloadavg()[0]  # the 2 cores are shared: a loaded machine skews every figure
    signers = sample.identities(VALIDATORS, SEED)
    genesis = sample.sample_genesis(signers, chain_id="mftp-bench")
    log(f"signing {total} records on {args.workers} processes ...")
    started = time.perf_counter()
    records = make_records(total, args.workers)
    log(f"  {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        path = Path(tmp) / "ledger"
        ledger = Ledger(LevelDBStore(path), genesis)
        log(f"appending in blocks of {args.block_records} to LevelDB ...")
        append_s = bench_append(ledger, records, args.block_records)
        blocks = ledger.height
        log(f"  {append_s:.2f} s, {blocks} blocks")

        log(f"verifying the chain on {args.workers} workers ...")
        started = time.perf_counter()
        state = verify_chain(ledger.store, genesis, workers=args.workers)
        verify_s = time.perf_counter() - started
        assert state == ledger.state
        log(f"  {verify_s:.2f} s")

        log(f"{proofs} inclusion proofs ...")
        assert ledger.state.last_validators is not None
        proofs_s = bench_proofs(
            ledger.store,
            [r.record_id for r in records],
            proofs,
            ledger.state.last_validators,
        )
        log(f"  {proofs_s:.2f} s")
        disk_bytes = sum(f.stat().st_size for f in path.iterdir())
        ledger.close()

    result = {
        "append_records_per_s": round(total / append_s),
        "verify_records_per_s": round(total / verify_s),
        "proofs_per_s": round(proofs / proofs_s),
        "records": total,
        "blocks": blocks,
        "block_records": args.block_records,
        "workers": args.workers,
        "proofs": proofs,
        "store_mb": round(disk_bytes / 1e6, 1),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "goal_append_records_per_s": 20_000,
        "goal_verify_records_per_s": 10_000,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
