"""Merkle trees as Certificate Transparency hashes them (RFC 6962 / RFC 9162 §2.1), pure.

Rules of this module (the specification another implementation follows is ``docs/merkle.md``):

* **Hashing.** SHA-256 with domain prefixes, so a leaf can never pass for an inner node:
  ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``. The hash
  of an empty tree is ``SHA-256("")``.
* **Shape.** The Merkle Tree Hash of ``n`` entries is RFC 9162's ``MTH``: for ``n > 1`` split at
  ``k``, the largest power of two ``< n``, and hash the two halves. Computed bottom-up it is the
  same tree: pair neighbours level by level and carry an unpaired last node up unchanged
  (:func:`tree_root` does that; the tests compare it with the recursive definition).
* **Inclusion proofs** are RFC 9162's audit paths (§2.1.3.1): the sibling hashes from the leaf
  up, a carried-up level contributing none. :func:`verify_inclusion` is the RFC's verification
  algorithm (§2.1.3.2), step by step; it answers ``False``, never raises, for a bad proof.
* :class:`FixedTree` is a tree of a fixed number of leaves whose leaf hashes change: it keeps
  every level, and :meth:`FixedTree.updated` recomputes only the nodes above changed leaves,
  returning a new tree (the old one is never mutated, so states that share a tree stay right).

Known limits: trees are held in memory as lists of 32-byte hashes (about 2·n of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = [
    "EMPTY_ROOT",
    "FixedTree",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "tree_root",
    "verify_inclusion",
]

_sha256 = hashlib.sha256
#: :meth:`FixedTree.updated` rehashes the whole tree when at least 1/this of its leaves changed
#: (the measured crossover with updating only the nodes above them)
_REBUILD_SHARE: Final = 2
EMPTY_ROOT: Final = _sha256(b"").digest()
#: SHA-256 fed the inner-node prefix: :meth:`FixedTree.updated` copies it per node
_NODE_PREFIX: Final = _sha256(b"\x01")


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one entry."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an inner node."""
    return _sha256(b"\x01" + left + right).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaves`` (leaf hashes), bottom first; the last has one node."""
    level = list(leaves)
    out = [level]
    while len(level) > 1:
        n = len(level)
        pairs = zip(level[::2], level[1::2], strict=False)  # an odd last node has no pair
        nxt = [_sha256(b"\x01" + a + b).digest() for a, b in pairs]
        if n & 1:
            nxt.append(level[-1])  # carried up unchanged
        out.append(nxt)
        level = nxt
    return out


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash over ``leaves`` (their leaf hashes, in order)."""
    if not leaves:
        return EMPTY_ROOT
    return _levels(leaves)[-1][0]


def _path(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    path: list[bytes] = []
    i = index
    for level in levels[:-1]:
        sibling = i ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        i >>= 1
    return path


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of entry ``index`` in the tree over ``leaves`` (leaf hashes)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of a tree of {len(leaves)}")
    return _path(_levels(leaves), index)


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves that the leaf hash ``leaf`` is entry ``index`` of the tree of
    ``size`` entries whose root is ``root`` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0 or len(p) != 32:
            return False
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


class FixedTree:
    """A Merkle tree over a fixed number of leaves (see the module rules). Immutable."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        """``leaves``: the leaf hashes (at least one)."""
        if not leaves:
            raise ValueError("a FixedTree needs at least one leaf")
        self._levels = _levels(leaves)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def path(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} of a tree of {self.size}")
        return _path(self._levels, index)

    def updated(self, changes: Mapping[int, bytes]) -> FixedTree:
        """A tree with the leaf hashes at the given indices replaced; only the nodes above them
        are recomputed (the levels are copied, never shared writes)."""
        if not changes:
            return self
        new = FixedTree.__new__(FixedTree)
        base = list(self._levels[0])
        for i, h in changes.items():
            base[i] = h
        if len(changes) * _REBUILD_SHARE >= len(base):
            # so many leaves changed that nearly every node above is dirty: hashing each level
            # whole is the same tree and cheaper than tracking which nodes to redo
            new._levels = _levels(base)
            return new
        levels = [base]
        below = base
        node = _NODE_PREFIX.copy  # a copy of SHA-256 after 0x01: node_hash without re-hashing it
        dirty: Iterable[int] = changes.keys()
        for level in self._levels[1:]:
            above = list(level)
            n = len(below)
            parents = {i >> 1 for i in dirty}  # any order: each parent reads the level below
            for p in parents:
                left = p << 1
                if left + 1 < n:
                    hasher = node()
                    hasher.update(below[left])
                    hasher.update(below[left + 1])
                    above[p] = hasher.digest()
                else:
                    above[p] = below[left]
            levels.append(above)
            below, dirty = above, parents
        new._levels = levels
        return new
