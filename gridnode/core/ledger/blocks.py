"""Blocks: a header that commits to the transactions and the state, and the transactions.

Rules of this module (``docs/protocol.md`` §7.6 gives the bytes, with test vectors):

* A block is the canonical msgpack array ``["gn.block", 2, header, [tx, …]]``: ``header`` and each
  ``tx`` are canonical msgpack bytes embedded as ``bin`` (a transaction as in
  :mod:`.transactions`).
* The header is ``["gn.header", 2, height, prev_hash, time_ms, proposer, n_txs, txs_root,
  state_root]``: ``txs_root`` is the Merkle root (:mod:`gridnode.core.merkle`, RFC 9162 hashing)
  over the transactions' bytes in block order, ``state_root`` the state root of the state *after*
  the block (:mod:`.stateroot`; it cannot cover the block's own hash).
* The block's **id** (its ``hash``) is SHA-256 of the header bytes
  (:mod:`gridnode.core.block_id`): what validators commit on and the next block names as
  ``prev_hash``. A commit and a header therefore prove a state root without the transactions.
* :func:`decode_block` parses structure only (at most ``MAX_BLOCK_BYTES``) and refuses a block
  whose header does not match its transactions (``wrong_txs_root``); what makes a block valid is
  :mod:`.rules`. A transaction the caller already holds decoded (by id) is reused, not parsed
  again: a transaction's decoding is a function of its bytes alone. :func:`decode_header`
  parses a header alone (for light clients).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gridnode.core.ledger.transactions import MAX_TX_BYTES, Tx, _int, _tx_from_wire
from gridnode.core.merkle import leaf_hash, tree_root
from market.codec import pack, unpack
from market.errors import InvalidInput, LedgerReason, WireReason

__all__ = [
    "BLOCK_FORMAT",
    "MAX_BLOCK_BYTES",
    "Block",
    "BlockHeader",
    "decode_block",
    "decode_header",
]

MAX_BLOCK_BYTES: Final = 4 * 1024 * 1024
BLOCK_FORMAT: Final = 2
MAX_HEADER_BYTES: Final = 1024


def txs_root(txs: tuple[Tx, ...]) -> bytes:
    """The Merkle root over the transactions' canonical bytes, in block order."""
    return tree_root([leaf_hash(tx.raw) for tx in txs])


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A block's header (see the module rules); ``id`` is SHA-256 of its bytes."""

    height: int
    prev_hash: bytes
    time_ms: int
    proposer: str
    n_txs: int
    txs_root: bytes
    state_root: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = pack(
            [
                "gn.header",
                BLOCK_FORMAT,
                self.height,
                self.prev_hash,
                self.time_ms,
                self.proposer,
                self.n_txs,
                self.txs_root,
                self.state_root,
            ]
        )
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "id", hashlib.sha256(raw).digest())


@dataclass(frozen=True, slots=True)
class Block:
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: str
    txs: tuple[Tx, ...]
    state_root: bytes
    #: the header, the canonical bytes and the id (SHA-256 of the header), computed once
    header: BlockHeader = field(init=False, repr=False, compare=False)
    raw: bytes = field(init=False, repr=False, compare=False)
    hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        header = BlockHeader(
            self.height,
            self.prev_hash,
            self.time_ms,
            self.proposer,
            len(self.txs),
            txs_root(self.txs),
            self.state_root,
        )
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "hash", header.id)
        raw = pack(["gn.block", BLOCK_FORMAT, header.raw, [tx.raw for tx in self.txs]])
        object.__setattr__(self, "raw", raw)

    def encode(self) -> bytes:
        return self.raw


def _bytes32(value: Any, what: str, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject=what, field=name, expected="32 bytes"
        )
    return value


def _header_from_wire(value: Any) -> BlockHeader:
    if (
        not isinstance(value, list)
        or len(value) != 9
        or value[0] != "gn.header"
        or value[1] != BLOCK_FORMAT
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE,
            subject="block header",
            expected="['gn.header', 2, …] of 9",
        )
    _, _, height, prev, time_ms, proposer, n_txs, t_root, s_root = value
    if not isinstance(proposer, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block header", field="proposer", expected="str"
        )
    return BlockHeader(
        _int(height, "block header", "height"),
        _bytes32(prev, "block header", "prev_hash"),
        _int(time_ms, "block header", "time_ms"),
        proposer,
        _int(n_txs, "block header", "n_txs"),
        _bytes32(t_root, "block header", "txs_root"),
        _bytes32(s_root, "block header", "state_root"),
    )


def decode_header(data: bytes) -> BlockHeader:
    """Strictly parse a block header's bytes (a light client's view of a block)."""
    return _header_from_wire(unpack(data, what="block header", max_bytes=MAX_HEADER_BYTES))


def _known_or_decoded(raw: bytes, known: Callable[[bytes], Tx | None]) -> Tx:
    tid = hashlib.sha256(raw).digest()
    tx = known(tid)
    if tx is not None and tx.raw == raw and len(raw) <= MAX_TX_BYTES:
        return tx
    return _tx_from_wire(unpack(raw, what="tx", max_bytes=MAX_TX_BYTES), raw, tid)


def decode_block(data: bytes, *, known: Callable[[bytes], Tx | None] | None = None) -> Block:
    """Strictly parse a block's bytes (structure, and that the header matches the transactions;
    :func:`check` checks the rules). ``known``: the transaction the caller already decoded under
    an id (SHA-256 of its bytes), if it holds one (a validator's mempool); such a transaction
    is taken instead of parsing the same bytes again (its bytes compared equal), which gives
    the same block."""
    value = unpack(data, what="block", max_bytes=MAX_BLOCK_BYTES)
    if (
        not isinstance(value, list)
        or len(value) != 4
        or value[0] != "gn.block"
        or value[1] != BLOCK_FORMAT
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="block", expected="['gn.block', 2, header, txs]"
        )
    _, _, header_bytes, txs = value
    if not isinstance(header_bytes, bytes):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", field="header", expected="bytes"
        )
    if not isinstance(txs, list) or not all(isinstance(t, bytes) for t in txs):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", field="txs", expected="array of bytes"
        )
    header = decode_header(header_bytes)
    if known is None:
        parsed = tuple(_tx_from_wire(unpack(t, what="tx", max_bytes=MAX_TX_BYTES), t) for t in txs)
    else:
        parsed = tuple(_known_or_decoded(t, known) for t in txs)
    root = txs_root(parsed)
    if len(parsed) != header.n_txs or root != header.txs_root:
        raise InvalidInput(
            reason=LedgerReason.WRONG_TXS_ROOT,
            subject=f"block {header.height}",
            expected=f"{len(parsed)} txs with root {root.hex()[:16]}",
            found=f"{header.n_txs} txs with root {header.txs_root.hex()[:16]}",
        )
    # the bytes are canonical (unpack checked): the block is made from them without packing again
    block = Block.__new__(Block)
    for name, value in (
        ("height", header.height),
        ("prev_hash", header.prev_hash),
        ("time_ms", header.time_ms),
        ("proposer", header.proposer),
        ("txs", parsed),
        ("state_root", header.state_root),
        ("header", header),
        ("raw", bytes(data)),
        ("hash", header.id),
    ):
        object.__setattr__(block, name, value)
    return block
