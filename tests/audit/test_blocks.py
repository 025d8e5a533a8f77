"""Blocks v2 and transactions decoded without re-encoding: the same objects, bytes and ids as
built, and the signed body cut from the bytes is the body's encoding."""

from __future__ import annotations

from gridnode.core.block_id import block_header, block_id
from gridnode.core.ledger import Block, decode_block, decode_tx
from gridnode.core.ledger.transactions import signed_body
from market.codec import pack
from tests.audit.helpers import small_chain


def test_decoded_blocks_and_transactions_equal_the_built_ones() -> None:
    chain = small_chain()
    for height, data, _ in chain.chain:
        block = decode_block(data)
        built = Block(
            block.height, block.prev_hash, block.time_ms, block.proposer, block.txs,
            block.state_root,
        )  # fmt: skip
        assert block == built and block.raw == built.raw == data
        assert block.hash == built.hash == block_id(data) == block_id(block_header(data))
        assert block.height == height
        for tx in block.txs:
            again = decode_tx(tx.raw)
            assert again == tx and again.raw == tx.raw and again.id == tx.id
            assert signed_body(tx) == pack(tx.body())


def test_a_block_id_is_the_hash_of_its_header_only() -> None:
    data = small_chain().chain[0][1]
    block = decode_block(data)
    assert block_header(data) == block.header.raw and len(block.header.raw) < 256
    assert block_id(b"opaque test bytes") != block_id(data)
