"""The tag index an audit scan runs over, and the fast matcher.

Decoding a full record costs tens of microseconds; a scan of a million records
must cost about one.  So the scan reads a compact :class:`TagIndex` instead:
fixed rows of ``record id (16) || time_ms (8, big-endian) || 8 tags (8 x 16)``
= 152 bytes, in ledger order (row ``i`` is ledger index ``i``).  The node keeps
one in memory and, before each scan, appends the rows of the records committed since
(:meth:`TagIndex.extend_from_store`); tests and tools rebuild one from a store with
:meth:`TagIndex.from_store`.  The index is derived data: a match is always re-checked
against the real record.

The matcher unpacks only the id, the time and the slots the subject's kind can
occupy (``struct.iter_unpack`` with pad bytes, all in C), and computes
HMAC-SHA256 from precomputed inner and outer SHA-256 states: ``hmac.digest``
rebuilds the key pads on every call (~2 µs here), copying two hash states
costs ~0.8 µs.  The result equals :func:`mftp.crypto.primitives.tag` (a test
checks it).  Large indexes are split across worker processes (fork).
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .errors import LedgerUsageError
from .pseudonyms import KIND_ROLES, epoch_start_ms
from .records import RECORD_ID_BYTES, TAG_BYTES, TAG_SLOTS, Record
from .store import BlockStore

ROW: Final = struct.Struct(">16sQ" + "16s" * TAG_SLOTS)
ROW_BYTES: Final = ROW.size
MAX_WORKERS: Final = 64
PARALLEL_MIN_ROWS: Final = 10_000  # below this, forking costs more than it saves
_BLOCK_BYTES: Final = 64  # SHA-256 block size: HMAC pads the key to it

_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))

Pads = tuple[Any, Any]  # the inner and outer SHA-256 states of one HMAC key


class TagIndex:
    """Rows of (record id, time, tags) in ledger order; see the module doc."""

    def __init__(self, data: bytes | bytearray = b"") -> None:
        if len(data) % ROW_BYTES:
            raise LedgerUsageError(f"a tag index is a whole number of {ROW_BYTES}-byte rows")
        self._data = bytearray(data)

    def __len__(self) -> int:
        return len(self._data) // ROW_BYTES

    @property
    def data(self) -> bytearray:
        """The raw rows (the node writes these to disk as they are)."""
        return self._data

    def append(self, record_id: bytes, time_ms: int, tags: Sequence[bytes]) -> None:
        """Add the row of the next ledger index."""
        if len(record_id) != RECORD_ID_BYTES or len(tags) != TAG_SLOTS:
            raise LedgerUsageError(f"a row is a {RECORD_ID_BYTES}-byte id and {TAG_SLOTS} tags")
        if any(len(item) != TAG_BYTES for item in tags):
            raise LedgerUsageError(f"a tag is {TAG_BYTES} bytes")
        self._data += ROW.pack(record_id, time_ms, *tags)

    def append_record(self, record: Record) -> None:
        """Add the row of ``record`` (the next in ledger order)."""
        self.append(record.record_id, record.time_ms, record.tags)

    def row(self, index: int) -> tuple[bytes, int, tuple[bytes, ...]]:
        """``(record id, time_ms, tags)`` of ledger index ``index``."""
        if not 0 <= index < len(self):
            raise LedgerUsageError(f"row {index} is beyond the index ({len(self)})")
        record_id, time_ms, *tags = ROW.unpack_from(self._data, index * ROW_BYTES)
        return record_id, time_ms, tuple(tags)

    def extend_from_store(self, store: BlockStore, size: int | None = None) -> None:
        """Append the rows of ledger indexes ``len(self)..size-1`` of ``store`` (default: to its end).

        The index must hold ``store``'s first rows already (empty, or kept up to date by this
        method); slow path: every new record is read and decoded.
        """
        size = store.leaf_count if size is None else size
        if not 0 <= size <= store.leaf_count:
            raise LedgerUsageError(f"size {size} is beyond the store ({store.leaf_count})")
        for ledger_index in range(len(self), size):
            self.append_record(store.record_at(ledger_index))

    @classmethod
    def from_store(cls, store: BlockStore, size: int | None = None) -> TagIndex:
        """Rebuild the index of the first ``size`` records of ``store`` (default all); slow path."""
        index = cls()
        index.extend_from_store(store, size)
        return index


def hmac_pads(key: bytes) -> Pads:
    """The SHA-256 states after absorbing ``key XOR ipad`` and ``key XOR opad``."""
    if len(key) > _BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK_BYTES, b"\x00")
    return hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD))


def fast_hmac(pads: Pads, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` from precomputed pads (equal to ``hmac.digest``)."""
    inner = pads[0].copy()
    inner.update(message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


class EpochWindows:
    """Maps a record time to the pads of its epoch's key, or None outside the granted epochs."""

    def __init__(self, epoch_keys: Mapping[int, bytes]) -> None:
        epochs = sorted(epoch_keys)
        # Window i is [starts[i], starts[i+1]); a gap between granted epochs is a keyless window.
        self._starts: list[int] = []
        self._pads: list[Pads | None] = []
        self._ends_at = 0
        for epoch in epochs:
            start, end = epoch_start_ms(epoch), epoch_start_ms(epoch + 1)
            if self._starts and self._ends_at != start:
                self._starts.append(self._ends_at)
                self._pads.append(None)
            self._starts.append(start)
            self._pads.append(hmac_pads(epoch_keys[epoch]))
            self._ends_at = end

    def lookup(self, time_ms: int) -> tuple[int, int, Pads | None]:
        """``(lo, hi, pads)``: the window ``[lo, hi)`` holding ``time_ms`` and its key's pads."""
        position = bisect.bisect_right(self._starts, time_ms) - 1
        if position < 0:
            return -1, self._starts[0] if self._starts else 2**64, None
        if time_ms >= self._ends_at:
            return self._ends_at, 2**64, None
        hi = self._starts[position + 1] if position + 1 < len(self._starts) else self._ends_at
        return self._starts[position], hi, self._pads[position]


def _row_format(slots: Sequence[int]) -> str:
    return ">16sQ" + "".join("16s" if slot in slots else "16x" for slot in range(TAG_SLOTS))


def match_rows(
    data: bytes | bytearray | memoryview, kind: str, epoch_keys: Mapping[int, bytes], start: int, stop: int
) -> list[tuple[int, int]]:
    """``(row, roles bitmask)`` of the rows in ``[start, stop)`` tagged by the subject.

    Bit ``r`` of the mask is set when slot ``r`` holds the subject's tag.
    """
    slots = KIND_ROLES[kind]
    view = memoryview(data)[start * ROW_BYTES : stop * ROW_BYTES]
    windows = EpochWindows(epoch_keys)
    if len(slots) == 2:
        return _match_two(view, _row_format(slots), windows, start, slots[0], slots[1])
    return _match_one(view, _row_format(slots), windows, start, slots[0])


def _match_two(
    view: memoryview, row_format: str, windows: EpochWindows, start: int, first: int, second: int
) -> list[tuple[int, int]]:
    # The hot loop of the scan: everything is a local, nothing is called but C functions.
    found: list[tuple[int, int]] = []
    role_a, role_b = bytes([first]), bytes([second])
    lo = hi = 0
    inner = outer = None
    row = start - 1
    for record_id, time_ms, tag_a, tag_b in struct.iter_unpack(row_format, view):
        row += 1
        if not lo <= time_ms < hi:
            lo, hi, pads = windows.lookup(time_ms)
            inner, outer = pads if pads is not None else (None, None)
        if inner is None or outer is None:
            continue
        mask = 0
        h = inner.copy()
        h.update(record_id + role_a)
        o = outer.copy()
        o.update(h.digest())
        if o.digest().startswith(tag_a):
            mask = 1 << first
        h = inner.copy()
        h.update(record_id + role_b)
        o = outer.copy()
        o.update(h.digest())
        if o.digest().startswith(tag_b):
            mask |= 1 << second
        if mask:
            found.append((row, mask))
    return found


def _match_one(
    view: memoryview, row_format: str, windows: EpochWindows, start: int, slot: int
) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    role = bytes([slot])
    lo = hi = 0
    inner = outer = None
    row = start - 1
    for record_id, time_ms, tag_a in struct.iter_unpack(row_format, view):
        row += 1
        if not lo <= time_ms < hi:
            lo, hi, pads = windows.lookup(time_ms)
            inner, outer = pads if pads is not None else (None, None)
        if inner is None or outer is None:
            continue
        h = inner.copy()
        h.update(record_id + role)
        o = outer.copy()
        o.update(h.digest())
        if o.digest().startswith(tag_a):
            found.append((row, 1 << slot))
    return found


# Set just before forking the workers, so they inherit the index without copying or pickling it.
_SHARED: tuple[bytes | bytearray, str, Mapping[int, bytes]] | None = None


def _match_shared(start: int, stop: int) -> list[tuple[int, int]]:
    if _SHARED is None:
        raise LedgerUsageError("worker started without a shared index")
    data, kind, epoch_keys = _SHARED
    return match_rows(data, kind, epoch_keys, start, stop)


def match_index(
    index: TagIndex,
    kind: str,
    epoch_keys: Mapping[int, bytes],
    *,
    start: int = 0,
    stop: int | None = None,
    workers: int = 1,
) -> list[tuple[int, int]]:
    """Every ``(row, roles bitmask)`` of ``index[start:stop]`` tagged by the subject, in order.

    With ``workers`` > 1 the rows are split into equal ranges matched by forked
    processes (where fork exists; elsewhere one process does all of it).
    """
    stop = len(index) if stop is None else stop
    if not 0 <= start <= stop <= len(index):
        raise LedgerUsageError(f"rows [{start}, {stop}) are not within the index ({len(index)})")
    if kind not in KIND_ROLES:
        raise LedgerUsageError(f"unknown party kind {kind!r}")
    if not 1 <= workers <= MAX_WORKERS:
        raise LedgerUsageError(f"workers is 1 to {MAX_WORKERS}")
    if (
        workers == 1
        or stop - start < PARALLEL_MIN_ROWS
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return match_rows(index.data, kind, epoch_keys, start, stop)
    return _match_parallel(index.data, kind, epoch_keys, start, stop, workers)


def _match_parallel(
    data: bytearray, kind: str, epoch_keys: Mapping[int, bytes], start: int, stop: int, workers: int
) -> list[tuple[int, int]]:
    global _SHARED
    step = -(-(stop - start) // workers)
    ranges = [(lo, min(lo + step, stop)) for lo in range(start, stop, step)]
    _SHARED = (data, kind, dict(epoch_keys))
    try:
        with multiprocessing.get_context("fork").Pool(len(ranges)) as pool:
            parts = pool.starmap(_match_shared, ranges)
    finally:
        _SHARED = None
    return [hit for part in parts for hit in part]
