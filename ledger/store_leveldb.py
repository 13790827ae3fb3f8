"""The block store on LevelDB (plyvel): the durable back end of :class:`BlockStore`.

Each :meth:`BlockStore.append` is one ``WriteBatch`` written with ``sync=True``:
LevelDB appends the batch to its log as one checksummed record and fsyncs it,
so after a crash (even SIGKILL or power loss) recovery replays whole batches
only, and the head pointer inside the batch never points at half a block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import plyvel

from .errors import StoreError
from .store import BlockStore

# LevelDB caches recently read blocks; proofs and sync re-read the upper tree nodes often.
_CACHE_BYTES: Final = 32 * 1024 * 1024
_WRITE_BUFFER_BYTES: Final = 16 * 1024 * 1024


class _LevelDB:
    """:class:`mftp.ledger.store.KeyValue` over plyvel."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=True,
                paranoid_checks=True,  # refuse a corrupt database instead of silently skipping data
                lru_cache_size=_CACHE_BYTES,
                write_buffer_size=_WRITE_BUFFER_BYTES,
                bloom_filter_bits=10,  # "is this record id new?" is asked for every appended record
                compression=None,  # records are mostly random bytes (ids, tags, sealed envelopes, hashes)
            )
        except plyvel.IOError as exc:
            # Most often the LOCK is held: another process (or store object) has it open.
            raise StoreError(f"cannot open the block store at {path}: {exc}") from None
        except plyvel.Error as exc:
            raise StoreError(f"block store at {path} is corrupt: {exc}") from None

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(key)
        except plyvel.Error as exc:  # a checksum mismatch (paranoid checks) or an I/O error
            raise StoreError(f"cannot read the block store: {exc}") from None

    def write(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        batch = self._db.write_batch(sync=True)
        for key, value in puts:
            batch.put(key, value)
        try:
            batch.write()
        except plyvel.Error as exc:  # disk full, I/O error: nothing of the batch was applied
            raise StoreError(f"cannot write the block store: {exc}") from None

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with self._db.iterator(start=start, stop=stop) as items:
                yield from items
        except plyvel.Error as exc:
            raise StoreError(f"cannot read the block store: {exc}") from None

    def close(self) -> None:
        self._db.close()


class LevelDBStore(BlockStore):
    """A :class:`BlockStore` in a LevelDB directory (created if missing).

    Only one process may open a directory at a time (LevelDB's lock); a second
    open raises :class:`StoreError`, as does a directory whose contents are
    inconsistent (see :meth:`BlockStore._check_head`).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(_LevelDB(self.path))
