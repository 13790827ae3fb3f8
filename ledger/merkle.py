"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Leaves are hashed as ``SHA-256(0x00 || data)`` and interior nodes as
``SHA-256(0x01 || left || right)``, so a leaf can never be passed off as a node.
The tree over ``n`` leaves splits at the largest power of two below ``n``.

Proofs are built from *perfect aligned subtrees*: the node ``(level, index)``
is the root of leaves ``[index * 2**level, (index + 1) * 2**level)``.  A tree
store keeps every such node as leaves are appended (exactly the nodes that
:meth:`CompactRange.append` creates), so a proof for any tree size needs
O(log n) lookups through a :data:`NodeGetter` plus O(log n) hashing on the
right edge.  Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) needs only the
proof, the sizes and a trusted root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from .errors import InvalidProofError, LedgerUsageError

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
HASH_BYTES: Final = 32
MAX_TREE_SIZE: Final = 2**63 - 1  # sizes travel as int64 on the wire
MAX_PROOF_HASHES: Final = 128  # a consistency proof has at most 2 * 63 + 1 entries

NodeGetter = Callable[[int, int], bytes]
"""Returns the stored hash of the perfect subtree ``(level, index)``."""


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

    def append_nodes(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return every perfect node it completes as ``(level, index, hash)``.

        The leaf itself comes first (level 0), then each merge.  A tree store
        that saves these nodes holds every perfect aligned subtree of the tree.
        """
        index = self.size
        nodes = [(0, index, leaf)]
        node = leaf
        size = index
        level = 0
        while size & 1:
            node = node_hash(self._peaks.pop(), node)
            size >>= 1
            level += 1
            nodes.append((level, index >> level, node))
        self._peaks.append(node)
        self.size += 1
        return nodes

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


# --- proofs -------------------------------------------------------------------------------------


def peak_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect aligned subtrees ``(level, index)`` covering ``[start, end)``, left to right.

    ``start`` must be a multiple of a power of two at least ``end - start``
    (true of 0 and of every right-edge subtree of a proof), so the pieces are the
    set bits of ``end - start`` from the highest down.
    """
    nodes: list[tuple[int, int]] = []
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
        remaining -= 1 << level
    return nodes


def range_hash(start: int, end: int, get_node: NodeGetter) -> bytes:
    """The RFC 6962 hash of leaves ``[start, end)`` (aligned as in :func:`peak_nodes`)."""
    if end <= start:
        return EMPTY_ROOT
    hashes = [get_node(level, index) for level, index in peak_nodes(start, end)]
    node = hashes[-1]
    for left in reversed(hashes[:-1]):
        node = node_hash(left, node)
    return node


def root_at(size: int, get_node: NodeGetter) -> bytes:
    """The Merkle root of the first ``size`` leaves of a stored tree."""
    _check_size(size)
    return range_hash(0, size, get_node)


def inclusion_proof(index: int, size: int, get_node: NodeGetter) -> list[bytes]:
    """The RFC 9162 inclusion path of leaf ``index`` in the tree of ``size`` leaves, leaf first.

    Walks down from the root: while the path goes right the left sibling is a
    perfect subtree (one lookup); the first time it goes left the right sibling
    may be the ragged right edge (O(log n) lookups), and below that every
    subtree is perfect.
    """
    _check_size(size)
    if not 0 <= index < size:
        raise LedgerUsageError(f"leaf index {index} outside a tree of {size}")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append(range_hash(start + k, end, get_node))
            end = start + k
        else:
            siblings.append(get_node(k.bit_length() - 1, start // k))
            start += k
    siblings.reverse()
    return siblings


def consistency_proof(old_size: int, new_size: int, get_node: NodeGetter) -> list[bytes]:
    """The RFC 9162 consistency proof between two sizes of a stored tree (empty if trivial)."""
    _check_size(new_size)
    if not 0 <= old_size <= new_size:
        raise LedgerUsageError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    out: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], whole) of RFC 9162 section 2.1.4.1, unrolled.
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            out.append(range_hash(start + k, end, get_node))
            end = start + k
        else:
            out.append(get_node(k.bit_length() - 1, start // k))
            start += k
            m -= k
            whole = False
    if not whole:
        out.append(range_hash(start, end, get_node))
    out.reverse()
    return out


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2), or InvalidProofError."""
    _check_proof_shape(proof, [leaf])
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise InvalidProofError(f"leaf index {index} outside a tree of {size}")
    fn, sn = index, size - 1
    node = leaf
    for sibling in proof:
        if sn == 0:
            raise InvalidProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("inclusion proof is too short")
    return node


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`InvalidProofError` unless ``proof`` shows leaf hash ``leaf`` at ``index``.

    ``root`` is the trusted root of the tree of ``size`` leaves.
    """
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise InvalidProofError("inclusion proof does not lead to the trusted root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`InvalidProofError` unless the tree of ``new_size`` extends that of ``old_size``.

    Both roots are trusted (each from a certified block header); RFC 9162 section 2.1.4.2.
    """
    _check_proof_shape(proof, [old_root, new_root])
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise InvalidProofError(f"no consistency between sizes {old_size} and {new_size}")
    if old_size == new_size or old_size == 0:
        # Nothing to prove: the roots must simply be what those sizes imply.
        if proof:
            raise InvalidProofError("a trivial consistency proof must be empty")
        if old_size == new_size and old_root != new_root:
            raise InvalidProofError("equal sizes with different roots")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise InvalidProofError("the root of the empty tree is wrong")
        return
    path = list(proof)
    if not path:
        raise InvalidProofError("empty consistency proof")
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            raise InvalidProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("consistency proof is too short")
    if first != old_root or second != new_root:
        raise InvalidProofError("consistency proof does not lead to the trusted roots")


def _check_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise LedgerUsageError(f"tree size {size} out of range")


def _check_proof_shape(proof: Sequence[bytes], hashes: Sequence[bytes]) -> None:
    # The proof and roots may come from a peer: refuse odd shapes before hashing anything.
    if len(proof) > MAX_PROOF_HASHES:
        raise InvalidProofError(f"proof of {len(proof)} hashes exceeds {MAX_PROOF_HASHES}")
    for item in (*proof, *hashes):
        if not isinstance(item, bytes) or len(item) != HASH_BYTES:
            raise InvalidProofError("proof hashes and roots are 32 bytes each")
