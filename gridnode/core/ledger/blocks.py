"""Blocks: ``Block(height, prev_hash, time_ms, proposer, txs, state_root)`` and their strict decoding.

The block's hash is the SHA-256 of its canonical bytes ``["gn.block", 1, height, prev_hash,
time_ms, proposer, [tx bytes…], state_root]``; ``state_root`` commits to the state *after* the
block (without the block's own hash, which it cannot cover). What makes a block valid is
:mod:`.rules`; :func:`decode_block` parses structure only (at most ``MAX_BLOCK_BYTES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gridnode.core.ledger.genesis import FORMAT, _sha256
from gridnode.core.ledger.transactions import MAX_TX_BYTES, Tx, _int, _tx_from_wire
from market.codec import pack, unpack
from market.errors import InvalidInput, WireReason

__all__ = ["MAX_BLOCK_BYTES", "Block", "decode_block"]

MAX_BLOCK_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Block:
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: str
    txs: tuple[Tx, ...]
    state_root: bytes

    def encode(self) -> bytes:
        return pack(
            [
                "gn.block",
                FORMAT,
                self.height,
                self.prev_hash,
                self.time_ms,
                self.proposer,
                [tx.encode() for tx in self.txs],
                self.state_root,
            ]
        )

    @property
    def hash(self) -> bytes:
        return _sha256(self.encode())


def decode_block(data: bytes) -> Block:
    """Strictly parse a block's bytes (structure only; :func:`check` checks the rules)."""
    value = unpack(data, what="block", max_bytes=MAX_BLOCK_BYTES)
    if (
        not isinstance(value, list)
        or len(value) != 8
        or value[0] != "gn.block"
        or value[1] != FORMAT
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="block", expected="['gn.block', 1, …] of 8"
        )
    _, _, height, prev, time_ms, proposer, txs, root = value
    if not isinstance(prev, bytes) or not isinstance(root, bytes) or not isinstance(proposer, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", expected="bytes hashes and str proposer"
        )
    if not isinstance(txs, list) or not all(isinstance(t, bytes) for t in txs):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", field="txs", expected="array of bytes"
        )
    return Block(
        height=_int(height, "block", "height"),
        prev_hash=prev,
        time_ms=_int(time_ms, "block", "time_ms"),
        proposer=proposer,
        txs=tuple(_tx_from_wire(unpack(t, what="tx", max_bytes=MAX_TX_BYTES)) for t in txs),
        state_root=root,
    )
