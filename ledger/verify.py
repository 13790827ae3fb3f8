"""Full chain verification from the genesis, with record signatures checked on all cores.

:func:`verify_chain` replays a stored chain through :func:`mftp.ledger.chain.apply_block`
(hash links, records and ledger roots, validator sets, membership changes,
every block's ``last_commit`` certificate) in this process, while the record
signatures, the bulk of the work (~66 µs each), are checked by worker
processes.  Workers receive batches of plain bytes (keys, signatures, signed
messages), which pickle at memory speed, and answer with one integer.

Whatever the interleaving, the error names the lowest bad height: the main
loop stops at its first failure or at the lowest known bad signature, and
every batch below the reported height is waited for.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from mftp.crypto.signing import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, is_valid

from .block import Block
from .chain import ChainState, apply_block
from .errors import ChainVerificationError, LedgerInputError, LedgerUsageError, StoreError
from .genesis import Genesis
from .records import Record
from .store import BlockStore

BATCH_RECORDS: Final = 512  # records per worker task: amortises the ~0.2 ms task overhead
MAX_WORKERS: Final = 64
_IN_FLIGHT_PER_WORKER: Final = 3  # bounds memory while keeping every worker busy

Progress = Callable[[int, int], None]
"""Called as ``progress(height, head_height)`` after each block."""


def check_signatures(authors: bytes, signatures: bytes, messages: Sequence[bytes]) -> int:
    """Index of the first record signature that fails, or -1 (runs in a worker process)."""
    for index, message in enumerate(messages):
        key = authors[index * PUBLIC_KEY_BYTES : (index + 1) * PUBLIC_KEY_BYTES]
        signature = signatures[index * SIGNATURE_BYTES : (index + 1) * SIGNATURE_BYTES]
        if not is_valid(key, "record", message, signature):
            return index
    return -1


@dataclass
class _Batch:
    """Records waiting to be checked, and who they are (kept here, not sent)."""

    heights: list[int] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    authors: list[bytes] = field(default_factory=list)
    signatures: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    def add(self, height: int, record: Record) -> None:
        self.heights.append(height)
        self.ids.append(record.record_id)
        self.authors.append(record.author)
        self.signatures.append(record.signature)
        self.messages.append(record.signing_bytes())

    def args(self) -> tuple[bytes, bytes, list[bytes]]:
        return b"".join(self.authors), b"".join(self.signatures), self.messages

    def failure(self, index: int) -> tuple[int, str]:
        return self.heights[index], f"record {self.ids[index].hex()}: invalid record signature"


class _SignatureChecker:
    """Checks record signatures in worker processes (or inline with ``workers=0``)."""

    def __init__(self, workers: int, start_method: str) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if workers:
            context = multiprocessing.get_context(start_method)
            if start_method == "forkserver":
                # The server imports this module once; each worker forked from it starts warm.
                context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(workers, mp_context=context)
        self._max_in_flight = max(1, workers) * _IN_FLIGHT_PER_WORKER
        self._batch = _Batch()
        self._in_flight: deque[tuple[_Batch, Future[int]]] = deque()
        self.failure: tuple[int, str] | None = None

    def add(self, height: int, records: Sequence[Record]) -> None:
        for record in records:
            self._batch.add(height, record)
        if len(self._batch.messages) >= BATCH_RECORDS:
            self.flush()

    def flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.messages:
            return
        if self._pool is None:
            self._settle(batch, check_signatures(*batch.args()))
            return
        self._in_flight.append((batch, self._pool.submit(check_signatures, *batch.args())))
        # Settle finished batches (in order) and wait once too many are in flight.
        while self._in_flight and (
            len(self._in_flight) > self._max_in_flight or self._in_flight[0][1].done()
        ):
            self._collect_oldest()

    def finish(self, below: float) -> None:
        """Wait for every batch holding a height below ``below``; drop the rest."""
        self.flush()
        while self._in_flight:
            batch, future = self._in_flight[0]
            if batch.heights[0] >= min(below, self._failure_height()):
                future.cancel()
                self._in_flight.popleft()
            else:
                self._collect_oldest()

    def _collect_oldest(self) -> None:
        batch, future = self._in_flight.popleft()
        self._settle(batch, future.result())

    def _settle(self, batch: _Batch, bad_index: int) -> None:
        # Batches settle in height order, so the first failure is the lowest.
        if bad_index >= 0 and self.failure is None:
            self.failure = batch.failure(bad_index)

    def _failure_height(self) -> float:
        return math.inf if self.failure is None else self.failure[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def verify_chain(
    store: BlockStore,
    genesis: Genesis,
    *,
    workers: int = 2,
    progress: Progress | None = None,
    start_method: str = "forkserver",
) -> ChainState:
    """Verify every block of ``store`` from ``genesis``; return the state of the head.

    Checks hash links, records roots, ledger roots, validator sets, every record
    signature (on ``workers`` processes; 0 checks inline), every certificate in
    the chain, the stored certificates and the head's certificate.  Raises
    :class:`ChainVerificationError` naming the first bad height and the reason.

    Workers are started with ``start_method`` ("forkserver": safe in a process
    with threads, such as one with LevelDB open), so a script calling this must
    guard its entry point with ``if __name__ == "__main__":``.  Record ids seen
    so far are kept in memory to refuse replays (~100 bytes a record).
    """
    if not 0 <= workers <= MAX_WORKERS:
        raise LedgerUsageError(f"workers must be 0..{MAX_WORKERS}")
    head = store.head_height
    state = ChainState.initial(genesis)
    seen: set[bytes] = set()
    checker = _SignatureChecker(workers, start_method)
    failure: tuple[int, str] | None = None
    try:
        for height in range(1, head + 1):
            if checker.failure is not None and checker.failure[0] <= height:
                break  # a lower height already failed: nothing here can be the first
            try:
                state = _verify_block(store, state, height, seen, checker)
                cert = store.certificate(height)
                if (cert.height, cert.block_hash) != (height, state.last_hash):
                    raise ChainVerificationError(height, "the stored certificate commits another block")
                if height == head:  # below the head, the next block carries (or checks) it
                    state.verify_commit(cert)
            except ChainVerificationError as exc:  # names its own height (a stored certificate below)
                failure = (exc.height, exc.reason)
                break
            except (LedgerInputError, StoreError) as exc:
                failure = (height, str(exc))
                break
            if progress is not None:
                progress(height, head)
        checker.finish(below=math.inf if failure is None else failure[0])
    finally:
        checker.close()
    failures = [f for f in (failure, checker.failure) if f is not None]
    if failures:
        height, reason = min(failures, key=lambda f: f[0])
        raise ChainVerificationError(height, reason)
    return state


def _verify_block(
    store: BlockStore, state: ChainState, height: int, seen: set[bytes], checker: _SignatureChecker
) -> ChainState:
    block = Block.from_bytes(store.block_bytes(height))
    if height > 1:
        # The stored certificate of the previous block is normally the one this
        # block carries (checked by apply_block); another one is checked in full.
        stored = store.certificate(height - 1)
        if stored != block.last_commit:
            try:
                state.verify_commit(stored)
            except LedgerInputError as exc:
                raise ChainVerificationError(height - 1, f"stored certificate: {exc}") from None
    new_state = apply_block(state, block, record_exists=seen.__contains__, check_signatures=False)
    seen.update(record.record_id for record in block.records)
    checker.add(height, block.records)
    return new_state
