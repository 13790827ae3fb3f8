"""Appends signed blocks to a LevelDB ledger until killed (run by test_ledger_crash.py).

    python crash_writer.py STORE_DIR

Prints ``open HEIGHT`` once the store is open, then appends forever, continuing
from whatever head it finds, so a test can SIGKILL it at any moment.
"""

from __future__ import annotations

import random
import sys

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.chain import build_block
from mftp.ledger.genesis import Genesis
from mftp.ledger.ledger import Ledger
from mftp.ledger.store_leveldb import LevelDBStore

RECORDS_PER_BLOCK = 20


def crash_chain() -> tuple[Genesis, list[SigningIdentity]]:
    """The genesis and validators every writer (and the test) share."""
    validators = sample.identities(4, "crash-test")
    return sample.sample_genesis(validators, chain_id="mftp-crash"), validators


def append_next(ledger: Ledger, validators: list[SigningIdentity]) -> None:
    """Build, certify and append the block after the head (records are a function of its height)."""
    state = ledger.state
    height = state.height + 1
    rng = random.Random(height)  # a block lost in a crash is rebuilt identically
    records = [sample.sample_record(validators[i % 4], rng) for i in range(RECORDS_PER_BLOCK)]
    last_commit = ledger.store.certificate(state.height) if state.height else None
    block = build_block(
        state,
        records,
        time_ms=state.last_time_ms + 1000,
        proposer=state.validators.proposer(height, 0).sign_key,
        last_commit=last_commit,
    )
    ledger.append(block, sample.certify(block, validators, state.chain_id), check_signatures=False)


def main() -> None:
    genesis, validators = crash_chain()
    ledger = Ledger(LevelDBStore(sys.argv[1]), genesis)
    print("open", ledger.height, flush=True)
    while True:
        append_next(ledger, validators)


if __name__ == "__main__":
    main()
