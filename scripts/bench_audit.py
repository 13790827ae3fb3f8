#!/usr/bin/env python3
"""Benchmark of the audit scan: one user's records among a million.

    bench_audit.py [--quick] [--records N] [--matches N] [--workers N]

1. Builds a :class:`~mftp.ledger.audit_index.TagIndex` of N rows directly (not
   timed): random record ids and tags, record times spread over twelve months,
   and about ``--matches`` rows where the subject user holds the sender-user
   or the receiver-user slot, with tags made by the real tag primitive.
2. ``scan_1m_s``: the time :func:`~mftp.ledger.audit_index.match_index` takes
   over all N rows with the subject's twelve epoch keys on ``--workers``
   processes (forking included), scaled to 1,000,000 rows.  The baseline
   ``scan_1m_1worker_s`` is the same scan on one process, measured in the same run.
   (Fetching, proving and checking the few matched records is per match, not
   per record, and is not part of this figure.)

``--quick`` scans 200,000 rows and scales.  The two cores may be shared with
other work, so the JSON also gives the load average before the run.

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from mftp.ledger import sample
from mftp.ledger.audit_index import ROW_BYTES, TagIndex, match_index
from mftp.ledger.pseudonyms import PartyKeys, Role, epoch_of, epoch_start_ms

MONTHS = 12
FULL_RECORDS = 1_000_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_index(records: int, matches: int, subject: PartyKeys) -> tuple[TagIndex, int]:
    """An index of ``records`` random rows, ``matches`` of them the subject's; returns it and the count."""
    rng = np.random.default_rng(2026)
    rows = rng.integers(0, 256, size=(records, ROW_BYTES), dtype=np.uint8)
    first = epoch_of(sample.SAMPLE_TIME_MS)
    start, end = epoch_start_ms(first), epoch_start_ms(first + MONTHS)
    times = np.sort(rng.integers(start, end, size=records, dtype=np.uint64)).astype(">u8")
    rows[:, 16:24] = times.view(np.uint8).reshape(records, 8)
    chosen = sorted(set(rng.choice(records, size=min(matches, records), replace=False).tolist()))
    for row in chosen:
        record_id = rows[row, :16].tobytes()
        role = Role.SENDER_USER if row % 3 else Role.RECEIVER_USER
        slot = 24 + 16 * role
        rows[row, slot : slot + 16] = np.frombuffer(subject.tag(record_id, int(times[row]), role), np.uint8)
    return TagIndex(rows.tobytes()), len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scan 200,000 rows and scale to 1M")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--matches", type=int, default=None, help="subject's rows (default: 1 per 1000)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    records = args.records or (200_000 if args.quick else FULL_RECORDS)
    matches = args.matches if args.matches is not None else records // 1000
    load_before = os.getloadavg()[0]

    subject = PartyKeys.generate("user:subject@hospital-a", "user")
    first = epoch_of(sample.SAMPLE_TIME_MS)
    epoch_keys = {epoch: subject.epoch_key(epoch) for epoch in range(first, first + MONTHS)}
    log(f"building an index of {records} rows ...")
    index, expected = build_index(records, matches, subject)

    scale = FULL_RECORDS / records
    log(f"scanning on {args.workers} workers ...")
    started = time.perf_counter()
    hits = match_index(index, "user", epoch_keys, workers=args.workers)
    parallel_s = time.perf_counter() - started
    log("scanning on 1 worker ...")
    started = time.perf_counter()
    serial = match_index(index, "user", epoch_keys, workers=1)
    serial_s = time.perf_counter() - started
    if hits != serial or len(hits) != expected:
        raise SystemExit(f"scan found {len(hits)} / {len(serial)} rows, {expected} expected")
    print(
        json.dumps(
            {
                "scan_1m_s": round(parallel_s * scale, 3),
                "scan_1m_1worker_s": round(serial_s * scale, 3),
                "matches": len(hits),
                "records": records,
                "workers": args.workers,
                "load_before": round(load_before, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
