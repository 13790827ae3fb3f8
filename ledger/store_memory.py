"""The block store in memory: the same :class:`BlockStore` over a dict, for tests and simulations.

Pass the ``data`` of one store to a new one to "reopen" it, which runs the
same consistency checks as opening a LevelDB directory.  Range scans sort the
keys each time, so by-type queries cost O(n log n): fine for tests, not for a
node (use :class:`mftp.ledger.store_leveldb.LevelDBStore`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .store import BlockStore


class _DictKV:
    """:class:`mftp.ledger.store.KeyValue` over a dict (a batch is applied all at once)."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        self.data.update(puts)

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = sorted(key for key in self.data if start <= key < stop)
        for key in keys:
            yield key, self.data[key]

    def close(self) -> None:
        pass


class MemoryStore(BlockStore):
    """A :class:`BlockStore` held in a dict (``data``), shared with any store reopened on it."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = {} if data is None else data
        super().__init__(_DictKV(self.data))
