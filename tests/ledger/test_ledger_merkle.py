"""RFC 6962 / 9162 hashing and proofs: published vectors, a naive reference for every shape, tampering."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.ledger import merkle
from mftp.ledger.errors import InvalidProofError, LedgerUsageError

# Certificate Transparency / transparency-dev reference data (leaf inputs, roots, proofs).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H = {
    "96a2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f08": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca85": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37e": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "fac5": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "6e34": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "0ebc": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b086": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
}
# (index, size, path) and (old, new, path) with 0-based indexes.
CT_INCLUSION = [
    (0, 8, ["96a2", "5f08", "6b47"]),
    (5, 8, ["bc1a", "ca85", "d37e"]),
    (2, 3, ["fac5"]),
    (1, 5, ["6e34", "5f08", "bc1a"]),
]
CT_CONSISTENCY = [
    (1, 8, ["96a2", "5f08", "6b47"]),
    (6, 8, ["0ebc", "ca85", "d37e"]),
    (2, 5, ["5f08", "bc1a"]),
    (6, 7, ["0ebc", "b086", "d37e"]),
]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH, recursively (the reference)."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split_point(len(leaves))
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = merkle.split_point(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if whole else [mth(leaves)]
    k = merkle.split_point(len(leaves))
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


class Tree:
    """A tree store in a dict, filled the way BlockStore fills LevelDB."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.lookups = 0
        compact = merkle.CompactRange()
        for leaf in leaves:
            for level, index, value in compact.append_nodes(leaf):
                self.nodes[(level, index)] = value
        self.compact = compact

    def get(self, level: int, index: int) -> bytes:
        self.lookups += 1
        return self.nodes[(level, index)]


CT_TREE = Tree([merkle.leaf_hash(leaf) for leaf in CT_LEAVES])
N = 64
LEAVES = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(N)]
TREE = Tree(LEAVES)


def test_reference_roots() -> None:
    for size, root in enumerate(CT_ROOTS):
        assert merkle.root_of([merkle.leaf_hash(x) for x in CT_LEAVES[:size]]).hex() == root
        assert merkle.root_at(size, CT_TREE.get).hex() == root


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = merkle.inclusion_proof(index, size, CT_TREE.get)
    assert [p.hex() for p in proof] == [H[p] for p in path]
    root = bytes.fromhex(CT_ROOTS[size])
    merkle.verify_inclusion(merkle.leaf_hash(CT_LEAVES[index]), index, size, proof, root)


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    proof = merkle.consistency_proof(old, new, CT_TREE.get)
    assert [p.hex() for p in proof] == [H[p] for p in path]
    merkle.verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), proof)


def test_stored_nodes_are_every_perfect_subtree() -> None:
    for level in range(7):
        for index in range(N >> level):
            assert TREE.nodes[(level, index)] == mth(LEAVES[index << level : (index + 1) << level])
    assert len(TREE.nodes) == 2 * N - 1


def test_all_inclusion_proofs_match_reference_up_to_64() -> None:
    for size in range(1, N + 1):
        root = mth(LEAVES[:size])
        assert merkle.root_at(size, TREE.get) == root
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, TREE.get)
            assert proof == ref_path(index, LEAVES[:size]), (index, size)
            merkle.verify_inclusion(LEAVES[index], index, size, proof, root)


def test_all_consistency_proofs_match_reference_up_to_64() -> None:
    roots = [mth(LEAVES[:size]) for size in range(N + 1)]
    for new in range(1, N + 1):
        for old in range(0, new + 1):
            proof = merkle.consistency_proof(old, new, TREE.get)
            expected = ref_subproof(old, LEAVES[:new], True) if 0 < old < new else []
            assert proof == expected, (old, new)
            merkle.verify_consistency(old, new, roots[old], roots[new], proof)


def test_proofs_cost_logarithmic_lookups() -> None:
    size = 20_011
    tree = Tree([merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)])
    for index in (0, 1, size // 2, size - 2, size - 1):
        tree.lookups = 0
        proof = merkle.inclusion_proof(index, size, tree.get)
        assert tree.lookups <= 2 * size.bit_length()
        merkle.verify_inclusion(tree.nodes[(0, index)], index, size, proof, tree.compact.root())
    tree.lookups = 0
    proof = merkle.consistency_proof(size // 3, size, tree.get)
    assert tree.lookups <= 3 * size.bit_length()
    old_root = merkle.root_at(size // 3, tree.get)
    merkle.verify_consistency(size // 3, size, old_root, tree.compact.root(), proof)


def _flip(data: bytes, bit: int) -> bytes:
    return bytes([data[0] ^ (1 << (bit % 8))]) + data[1:]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, N), data=st.data())
def test_tampered_inclusion_proofs_fail(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    root = mth(LEAVES[:size])
    proof = merkle.inclusion_proof(index, size, TREE.get)
    leaf = LEAVES[index]
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "index", "size", "leaf", "root", "swap"]))
    args: list[Any] = [leaf, index, size, list(proof), root]
    if kind == "flip" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        args[3][i] = _flip(proof[i], data.draw(st.integers(0, 7)))
    elif kind == "drop" and proof:
        args[3].pop(data.draw(st.integers(0, len(proof) - 1)))
    elif kind == "add":
        args[3].insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    elif kind == "index":
        other = data.draw(st.integers(0, 2 * N))
        if LEAVES[other % N] == leaf and other == index:
            return
        args[1] = other
    elif kind == "size":
        # The trusted root of another size: the proof must not carry over (unless it is that proof).
        other = data.draw(st.integers(index + 1, N))
        if other == size or merkle.inclusion_proof(index, other, TREE.get) == proof:
            return
        args[2], args[4] = other, mth(LEAVES[:other])
    elif kind == "leaf":
        args[0] = LEAVES[(index + 1) % N] if size > 1 else merkle.leaf_hash(b"other")
    elif kind == "root":
        args[4] = _flip(root, data.draw(st.integers(0, 7)))
    elif kind == "swap" and len(proof) > 1:
        args[3][0], args[3][1] = args[3][1], args[3][0]
        if args[3] == proof:
            return
    else:
        return
    with pytest.raises(InvalidProofError):
        merkle.verify_inclusion(*args)


@settings(max_examples=300, deadline=None)
@given(new=st.integers(2, N), data=st.data())
def test_tampered_consistency_proofs_fail(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new - 1))
    roots = [mth(LEAVES[:size]) for size in (old, new)]
    proof = list(merkle.consistency_proof(old, new, TREE.get))
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "old", "roots", "swap_roots"]))
    old_size, new_size, old_root, new_root = old, new, roots[0], roots[1]
    if kind == "flip":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof[i] = _flip(proof[i], data.draw(st.integers(0, 7)))
    elif kind == "drop":
        proof.pop(data.draw(st.integers(0, len(proof) - 1)))
    elif kind == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    elif kind == "old":
        old_size = data.draw(st.integers(1, new).filter(lambda x: x != old))
    elif kind == "roots":
        old_root = _flip(old_root, data.draw(st.integers(0, 7)))
    else:
        old_root, new_root = new_root, old_root
    with pytest.raises(InvalidProofError):
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)


def test_trivial_and_malformed_proofs() -> None:
    root = mth(LEAVES[:5])
    merkle.verify_consistency(5, 5, root, root, [])
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, root, [])
    merkle.verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    bad = [
        lambda: merkle.verify_consistency(5, 5, root, LEAVES[0], []),
        lambda: merkle.verify_consistency(5, 5, root, root, [root]),
        lambda: merkle.verify_consistency(0, 5, root, root, []),
        lambda: merkle.verify_consistency(6, 5, root, root, [root]),
        lambda: merkle.verify_consistency(3, 5, root, root, []),
        lambda: merkle.verify_inclusion(LEAVES[0], 0, 0, [], root),
        lambda: merkle.verify_inclusion(LEAVES[0], -1, 5, [], root),
        lambda: merkle.verify_inclusion(LEAVES[0], 0, 5, [b"short"], root),
        lambda: merkle.verify_inclusion(b"short", 0, 1, [], root),
        lambda: merkle.verify_inclusion(LEAVES[0], 0, 5, [root] * 200, root),
        lambda: merkle.verify_inclusion(LEAVES[0], 0, 2**64, [root] * 64, root),
    ]
    for call in bad:
        with pytest.raises(InvalidProofError):
            call()
    with pytest.raises(LedgerUsageError):
        merkle.inclusion_proof(5, 5, TREE.get)
    with pytest.raises(LedgerUsageError):
        merkle.consistency_proof(6, 5, TREE.get)


def test_compact_range_nodes_and_root() -> None:
    compact = merkle.CompactRange()
    created = []
    for leaf in LEAVES[:8]:
        created.append([(level, index) for level, index, _ in compact.append_nodes(leaf)])
    assert created == [[(0, 0)], [(0, 1), (1, 0)], [(0, 2)], [(0, 3), (1, 1), (2, 0)],
                       [(0, 4)], [(0, 5), (1, 2)], [(0, 6)], [(0, 7), (1, 3), (2, 1), (3, 0)]]  # fmt: skip
    assert compact.root() == mth(LEAVES[:8])
    copy = merkle.CompactRange(compact.size, compact.peaks)
    copy.append(LEAVES[8])
    assert copy.root() == mth(LEAVES[:9]) and compact.size == 8
    with pytest.raises(ValueError):
        merkle.CompactRange(3, [LEAVES[0]])
