"""Crash safety: SIGKILL a process while it appends; the store reopens as a valid chain."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import plyvel

from mftp.ledger.ledger import Ledger
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.ledger.verify import verify_chain
from tests.ledger.crash_writer import append_next, crash_chain

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 7


def _count_keys(path: Path) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    db = plyvel.DB(str(path))
    try:
        for key in db.iterator(include_value=False):
            counts[key[:1]] = counts.get(key[:1], 0) + 1
    finally:
        db.close()
    return counts


def _check_store(path: Path) -> int:
    """Reopen, verify the whole chain, and check no index holds anything beyond the head."""
    genesis, _ = crash_chain()
    with Ledger(LevelDBStore(path), genesis) as ledger:  # refuses an inconsistent head
        assert verify_chain(ledger.store, genesis, workers=0) == ledger.state
        height, size = ledger.height, ledger.store.leaf_count
    counts = _count_keys(path)
    # Every block wrote all of these in one batch: a torn batch would leave extra keys.
    assert counts.get(b"B", 0) == counts.get(b"C", 0) == height
    assert counts.get(b"E", 0) == counts.get(b"R", 0) == counts.get(b"T", 0) == size
    assert counts.get(b"N", 0) == 2 * size - bin(size).count("1")
    return height


def test_sigkill_while_appending_leaves_a_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    rng = random.Random(20240611)
    heights = []
    for _ in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = writer.stdout.readline() if writer.stdout else ""
            assert line.startswith("open"), writer.stderr.read() if writer.stderr else line
            time.sleep(rng.uniform(0.01, 0.25))  # lands anywhere: signing, encoding, mid-write, fsync
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        assert writer.returncode == -signal.SIGKILL
        heights.append(_check_store(path))
    assert heights == sorted(heights) and heights[-1] > 0, heights
    # The survivor keeps appending from the head it finds.
    genesis, validators = crash_chain()
    with Ledger(LevelDBStore(path), genesis) as ledger:
        for _ in range(2):
            append_next(ledger, validators)
    assert _check_store(path) == heights[-1] + 2
