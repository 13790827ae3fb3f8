"""RFC 6962 / RFC 9162 Merkle tree hashing.

Leaves are hashed as ``SHA-256(0x00 || data)`` and interior nodes as
``SHA-256(0x01 || left || right)``, so a leaf can never be passed off as a node.
The tree over ``n`` leaves splits at the largest power of two below ``n``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Hash of a leaf holding ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of leaf hashes (iterative, O(n))."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Folding perfect subtrees left to right gives the RFC 6962 shape.
    compact = CompactRange()
    for item in leaf_hashes:
        compact.append(item)
    return compact.root()


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size): O(log n) state.

    Appending a leaf and computing the root of everything so far both cost
    O(log n), which lets each block header carry the root of the whole ledger.
    """

    __slots__ = ("_peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if len(peaks) != bin(size).count("1"):
            raise ValueError("a compact range has one peak per set bit of its size")
        self.size = size
        self._peaks: list[bytes] = list(peaks)

    @property
    def peaks(self) -> tuple[bytes, ...]:
        """Perfect subtree roots, largest (leftmost) first."""
        return tuple(self._peaks)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        node = leaf
        size = self.size
        # Each trailing 1 bit of the old size is a peak of equal height to merge with.
        while size & 1:
            node = node_hash(self._peaks.pop(), node)
            size >>= 1
        self._peaks.append(node)
        self.size += 1

    def root(self) -> bytes:
        """Merkle tree hash of all leaves appended so far."""
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            node = node_hash(peak, node)
        return node

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange(self.size, self._peaks)
