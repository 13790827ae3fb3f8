"""The block store: committed blocks, their certificates, record indexes and the ledger tree.

One implementation over a tiny ordered key-value interface (:class:`KeyValue`)
serves both back ends: LevelDB on disk (:mod:`.store_leveldb`) and a dict in
memory (:mod:`.store_memory`), so both pass one test suite.

Layout (heights, indexes and levels big-endian, so keys sort numerically)::

    F                          format tag, written when the store is created
    H                          head: height(8) ledger size(8) head block hash(32)
    S                          opaque state snapshot of the head (the Ledger's ChainState)
    B height                   block shell: canonical {"header", "last_commit"}
    C height                   the block's own commit certificate (canonical)
    E ledger_index             record bytes, in ledger order
    R record_id                ledger_index(8) height(8) index_in_block(4)
    T type height index        record_id (records by type and height)
    N level index              hash of the perfect subtree (level, index) of the ledger tree

A block is stored as its shell plus its records under ``E``; :meth:`BlockStore.block_bytes`
reassembles the exact canonical block encoding (``records`` is the last key of a
block, and msgpack is concatenative).  So a record is one small read, and an
inclusion proof is O(log n) reads of ``N``.

Everything one block adds, the head pointer included, goes into ONE atomic,
synced write batch: after a crash the store holds the previous head or the new
one, never half a block.  The store checks that a block links to its head and
that its ledger root matches the tree it extends, but validating blocks is the
chain's job (:func:`mftp.ledger.chain.apply_block`, or :class:`mftp.ledger.ledger.Ledger`).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgpack

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from . import merkle
from .block import Block, BlockHeader, CommitCertificate
from .errors import LedgerInputError, LedgerUsageError, StoreError
from .records import Record, RecordType

FORMAT_TAG: Final = b"mftp-ledger-store/1"
MAX_TYPE_QUERY: Final = 100_000  # most record ids one by-type query returns
_SHELL_CACHE: Final = 256  # decoded block headers kept in memory

_FORMAT: Final = b"F"
_HEAD: Final = b"H"
_STATE: Final = b"S"
_BLOCK: Final = b"B"
_CERT: Final = b"C"
_ENTRY: Final = b"E"
_RECORD: Final = b"R"
_TYPE: Final = b"T"
_NODE: Final = b"N"

_HEAD_FMT: Final = struct.Struct(">QQ32s")
_LOCATION_FMT: Final = struct.Struct(">QQI")
_U64: Final = struct.Struct(">Q")
_NODE_KEY: Final = struct.Struct(">cBQ")
_TYPE_KEY: Final = struct.Struct(">cBQI")


class KeyValue(Protocol):
    """The ordered key-value operations a back end provides."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` or None."""

    def write(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        """Write all ``puts`` atomically and durably (synced) or none of them."""

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < stop`` in key order."""

    def close(self) -> None:
        """Release the back end."""


class StoredRecord(NamedTuple):
    """A record with its place in the chain."""

    record: Record
    height: int
    index_in_block: int
    ledger_index: int


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + _U64.pack(height)


def _node_key(level: int, index: int) -> bytes:
    return _NODE_KEY.pack(_NODE, level, index)


class BlockStore:
    """Committed blocks and their indexes over a :class:`KeyValue` back end.

    Not thread-safe: one writer (the node's commit path) owns it.  Reads of
    data from the back end that fail to parse raise :class:`StoreError`.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv: KeyValue = kv
        self._closed = False
        self._shells: OrderedDict[int, tuple[bytes, BlockHeader]] = OrderedDict()
        try:
            self._head_height, self._leaf_count, self._head_hash = self._load_head()
            self._tree = self._load_tree()
            self._check_head()
        except BaseException:
            kv.close()
            raise

    # --- opening -------------------------------------------------------------------------------

    def _load_head(self) -> tuple[int, int, bytes]:
        tag = self._kv.get(_FORMAT)
        head = self._kv.get(_HEAD)
        if tag is None:
            if head is not None or next(self._kv.scan(b"\x00", b"\xff"), None) is not None:
                raise StoreError("store has data but no format tag: not an MFTP ledger store")
            self._kv.write([(_FORMAT, FORMAT_TAG)])
            return 0, 0, b""
        if tag != FORMAT_TAG:
            raise StoreError(f"unknown store format {tag[:40]!r}")
        if head is None:
            if self._kv.get(_height_key(_BLOCK, 1)) is not None:
                raise StoreError("store has blocks but no head pointer")
            return 0, 0, b""
        if len(head) != _HEAD_FMT.size:
            raise StoreError("head pointer is corrupt")
        height, leaf_count, head_hash = _HEAD_FMT.unpack(head)
        return height, leaf_count, head_hash

    def _load_tree(self) -> merkle.CompactRange:
        peaks = []
        for level, index in merkle.peak_nodes(0, self._leaf_count):
            value = self._kv.get(_node_key(level, index))
            if value is None or len(value) != merkle.HASH_BYTES:
                raise StoreError(f"ledger tree node ({level}, {index}) is missing or corrupt")
            peaks.append(value)
        return merkle.CompactRange(self._leaf_count, peaks)

    def _check_head(self) -> None:
        """Refuse a store whose head pointer disagrees with its contents (see the module doc)."""
        height, size = self._head_height, self._leaf_count
        if next(self._kv.scan(_height_key(_BLOCK, height + 1), _after(_BLOCK)), None) is not None:
            raise StoreError(f"a block above the head {height} is stored")
        if next(self._kv.scan(_height_key(_ENTRY, size), _after(_ENTRY)), None) is not None:
            raise StoreError(f"a record above the ledger size {size} is stored")
        if height == 0:
            if size != 0 or next(self._kv.scan(_BLOCK, _after(_BLOCK)), None) is not None:
                raise StoreError("empty head, but blocks or records are stored")
            return
        header = self.header(height)
        if header.hash != self._head_hash or header.ledger_size != size:
            raise StoreError(f"head pointer does not match block {height}")
        if self._tree.root() != header.ledger_root:
            raise StoreError(f"ledger tree does not match the root of block {height}")
        if size and (
            self._kv.get(_height_key(_ENTRY, size - 1)) is None
            or self._kv.get(_node_key(0, size - 1)) is None
        ):
            raise StoreError(f"record {size - 1} of the head block or its leaf hash is missing")
        if self._kv.get(_height_key(_CERT, height)) is None:
            raise StoreError(f"certificate of the head block {height} is missing")

    # --- writing -------------------------------------------------------------------------------

    def append(self, block: Block, cert: CommitCertificate, *, state: bytes | None = None) -> None:
        """Store ``block`` at head + 1 with the certificate that commits it, in one synced batch.

        ``state`` is an opaque snapshot (the chain state after this block) stored
        in the same batch.  The previous block's stored certificate is replaced
        by ``block.last_commit``, the one the chain itself carries, so every
        block but the head is served with the certificate all nodes agree on.
        Raises :class:`LedgerUsageError` if the block does not extend the head.
        """
        header = block.header
        self._check_extends(block, cert)
        tree = self._tree.copy()
        puts: list[tuple[bytes, bytes]] = []
        height = header.height
        first = self._leaf_count
        for index, record in enumerate(block.records):
            ledger_index = first + index
            puts.append((_height_key(_ENTRY, ledger_index), record.to_bytes()))
            puts.append((_RECORD + record.record_id, _LOCATION_FMT.pack(ledger_index, height, index)))
            puts.append((_TYPE_KEY.pack(_TYPE, record.type, height, index), record.record_id))
            puts.extend((_node_key(level, i), h) for level, i, h in tree.append_nodes(record.leaf_hash))
        if tree.root() != header.ledger_root:
            raise LedgerUsageError(f"block {height}: ledger root does not extend the stored tree")
        puts.append((_height_key(_BLOCK, height), _encode_shell(block)))
        puts.append((_height_key(_CERT, height), canonical.encode(cert.to_value())))
        if block.last_commit is not None:
            puts.append((_height_key(_CERT, height - 1), canonical.encode(block.last_commit.to_value())))
        if state is not None:
            puts.append((_STATE, state))
        puts.append((_HEAD, _HEAD_FMT.pack(height, tree.size, block.hash)))
        self._kv.write(puts)
        # Only after the batch is durable does the in-memory view move on.
        self._head_height, self._leaf_count, self._head_hash, self._tree = height, tree.size, block.hash, tree

    def _check_extends(self, block: Block, cert: CommitCertificate) -> None:
        header = block.header
        if header.height != self._head_height + 1:
            raise LedgerUsageError(f"block {header.height} does not follow the head {self._head_height}")
        if self._head_height and header.prev_hash != self._head_hash:
            raise LedgerUsageError(f"block {header.height} does not link to the stored head")
        if cert.height != header.height or cert.block_hash != block.hash:
            raise LedgerUsageError(f"certificate is not for block {header.height}")
        if header.ledger_size != self._leaf_count + len(block.records):
            raise LedgerUsageError(f"block {header.height}: ledger size does not follow the head")

    # --- reading blocks ------------------------------------------------------------------------

    @property
    def head_height(self) -> int:
        """Height of the newest stored block (0: empty)."""
        return self._head_height

    @property
    def head_hash(self) -> bytes:
        """Hash of the newest stored block (empty bytes if none)."""
        return self._head_hash

    @property
    def leaf_count(self) -> int:
        """Records in the whole ledger (the size of the ledger tree)."""
        return self._leaf_count

    def header(self, height: int) -> BlockHeader:
        """The header of block ``height``."""
        return self._shell(height)[1]

    def _shell(self, height: int) -> tuple[bytes, BlockHeader]:
        cached = self._shells.get(height)
        if cached is not None:
            self._shells.move_to_end(height)
            return cached
        shell = self._get_at(_BLOCK, height, self._head_height, "block")
        value = self._decode(shell, f"block {height}")
        try:
            header = BlockHeader.from_value(value.get("header") if isinstance(value, dict) else None)
        except LedgerInputError as exc:
            raise StoreError(f"block {height} is corrupt: {exc}") from None
        if header.height != height or header.record_count > header.ledger_size:
            raise StoreError(f"block {height} is corrupt: wrong height or sizes in its header")
        # Proofs and sync ask for the same few headers (the head's) again and again.
        if len(self._shells) >= _SHELL_CACHE:
            self._shells.popitem(last=False)
        self._shells[height] = shell, header
        return shell, header

    def block_bytes(self, height: int) -> bytes:
        """The canonical encoding of block ``height`` (as a peer would send it)."""
        shell, header = self._shell(height)
        start = header.ledger_size - header.record_count
        stop = header.ledger_size
        records = [data for _, data in self._kv.scan(_height_key(_ENTRY, start), _height_key(_ENTRY, stop))]
        if len(records) != header.record_count:
            raise StoreError(f"block {height}: {header.record_count - len(records)} records are missing")
        # {"header", "last_commit"} + {"records"}: "records" sorts last, so append its entry.
        return b"\x83" + shell[1:] + b"\xa7records" + msgpack.packb(records, use_bin_type=True)

    def block(self, height: int) -> Block:
        """Block ``height``, decoded and checked for shape (raises :class:`StoreError` if corrupt)."""
        try:
            return Block.from_bytes(self.block_bytes(height))
        except LedgerInputError as exc:
            raise StoreError(f"block {height} is corrupt: {exc}") from None

    def certificate(self, height: int) -> CommitCertificate:
        """The stored commit certificate of block ``height``."""
        value = self._decode(self._get_at(_CERT, height, self._head_height, "certificate"), "certificate")
        try:
            return CommitCertificate.from_value(value)
        except LedgerInputError as exc:
            raise StoreError(f"certificate {height} is corrupt: {exc}") from None

    def state_bytes(self) -> bytes | None:
        """The snapshot stored with the head block, if any."""
        return self._kv.get(_STATE)

    # --- reading records -----------------------------------------------------------------------

    def has_record(self, record_id: bytes) -> bool:
        """Whether a record with this id is on the chain."""
        return self._kv.get(_RECORD + record_id) is not None

    def record(self, record_id: bytes) -> StoredRecord | None:
        """The record with this id and where it sits, or None."""
        location = self._kv.get(_RECORD + record_id)
        if location is None:
            return None
        if len(location) != _LOCATION_FMT.size:
            raise StoreError(f"location of record {record_id.hex()} is corrupt")
        ledger_index, height, index = _LOCATION_FMT.unpack(location)
        record = self.record_at(ledger_index)
        if record.record_id != record_id:  # the index is not covered by any hash: check it
            raise StoreError(f"index of record {record_id.hex()} points at another record")
        return StoredRecord(record, height, index, ledger_index)

    def record_at(self, ledger_index: int) -> Record:
        """The record at ``ledger_index`` in the whole ledger."""
        data = self._get_at(_ENTRY, ledger_index + 1, self._leaf_count, "record", key=ledger_index)
        try:
            return Record.decode(data)
        except LedgerInputError as exc:
            raise StoreError(f"record {ledger_index} is corrupt: {exc}") from None

    def records_by_block(self, height: int) -> tuple[Record, ...]:
        """The records of block ``height``, in order."""
        header = self.header(height)
        start = header.ledger_size - header.record_count
        return tuple(self.record_at(i) for i in range(start, header.ledger_size))

    def record_ids_by_type(
        self,
        record_type: RecordType,
        start_height: int = 1,
        end_height: int | None = None,
        *,
        limit: int = MAX_TYPE_QUERY,
    ) -> list[bytes]:
        """Ids of the records of ``record_type`` in heights ``[start_height, end_height)``, in order."""
        if not 0 < limit <= MAX_TYPE_QUERY:
            raise LedgerUsageError(f"limit must be 1..{MAX_TYPE_QUERY}")
        end = self._head_height + 1 if end_height is None else min(end_height, self._head_height + 1)
        if start_height >= end:
            return []
        start_key = _TYPE_KEY.pack(_TYPE, int(record_type), max(start_height, 0), 0)
        stop_key = _TYPE_KEY.pack(_TYPE, int(record_type), end, 0)
        ids = []
        for _, record_id in self._kv.scan(start_key, stop_key):
            ids.append(record_id)
            if len(ids) == limit:
                break
        return ids

    # --- the ledger tree -----------------------------------------------------------------------

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree ``(level, index)`` of the ledger tree."""
        if not (0 <= level < 64 and index >= 0 and (index + 1) << level <= self._leaf_count):
            raise LedgerUsageError(f"no complete ledger tree node ({level}, {index})")
        value = self._kv.get(_node_key(level, index))
        if value is None or len(value) != merkle.HASH_BYTES:
            raise StoreError(f"ledger tree node ({level}, {index}) is missing or corrupt")
        return value

    def root(self, size: int | None = None) -> bytes:
        """The ledger root at ``size`` records (default: now)."""
        if size is None or size == self._leaf_count:
            return self._tree.root()
        return merkle.root_at(self._check_size(size), self.node)

    def inclusion_proof(self, ledger_index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of the record at ``ledger_index`` in the ledger of ``size`` records."""
        size = self._leaf_count if size is None else self._check_size(size)
        return merkle.inclusion_proof(ledger_index, size, self.node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof between two ledger sizes (default new size: now)."""
        new_size = self._leaf_count if new_size is None else self._check_size(new_size)
        return merkle.consistency_proof(old_size, new_size, self.node)

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self._leaf_count:
            raise LedgerUsageError(f"ledger size {size} is beyond the stored {self._leaf_count}")
        return size

    # --- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the back end; further use is a :class:`LedgerUsageError`."""
        if not self._closed:
            self._closed = True
            kv, self._kv = self._kv, _ClosedKeyValue()
            kv.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_at(self, prefix: bytes, number: int, last: int, what: str, *, key: int | None = None) -> bytes:
        """The value for ``number`` in ``1..last``; asking beyond is our misuse, a gap is corruption."""
        if not 1 <= number <= last:
            raise LedgerUsageError(f"{what} {number if key is None else key} is beyond the store ({last})")
        value = self._kv.get(_height_key(prefix, number if key is None else key))
        if value is None:
            raise StoreError(f"{what} {number if key is None else key} is missing from the store")
        return value

    @staticmethod
    def _decode(data: bytes, what: str) -> Any:
        try:
            return canonical.decode(data, max_depth=8)
        except DecodeError as exc:
            raise StoreError(f"{what} is corrupt: {exc}") from None


class _ClosedKeyValue:
    """Stands in for the back end once the store is closed."""

    def get(self, key: bytes) -> bytes | None:
        raise LedgerUsageError("the block store is closed")

    def write(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        raise LedgerUsageError("the block store is closed")

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        raise LedgerUsageError("the block store is closed")

    def close(self) -> None:
        pass


def _after(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with the one-byte ``prefix``."""
    return bytes([prefix[0] + 1])


def _encode_shell(block: Block) -> bytes:
    last = block.last_commit
    return canonical.encode(
        {"header": block.header.to_value(), "last_commit": None if last is None else last.to_value()}
    )
