"""docs/protocol.md's test vectors are the bytes our encoders make, and our decoders read them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from gridnode.core.block_id import block_header, block_id
from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
    decode_commit,
    decode_message,
    verify_commit,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import verify
from gridnode.core.ledger import (
    SignedBundle,
    SignedCancel,
    SignedOrder,
    SignedReading,
    decode_block,
    decode_tx,
    verify_signature,
)
from gridnode.core.ledger.blocks import decode_header
from gridnode.net.framing import FrameDecoder
from gridnode.txbatch import decode_tx_batch, decode_tx_results
from market.codec import unpack
from tests.audit.vectors import GENESIS, VALIDATORS, merkle_vectors, vectors

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "protocol.md"
_VECTOR = re.compile(r"<!-- vector: (\w+) \((\d+) bytes\) -->\n```text\n([0-9a-f\n]+)```")


def _documented(doc: Path = DOC) -> dict[str, bytes]:
    out = {}
    for name, size, text in _VECTOR.findall(doc.read_text(encoding="utf-8")):
        data = bytes.fromhex(text.replace("\n", ""))
        assert len(data) == int(size), name
        assert name not in out, f"{name} quoted twice"
        out[name] = data
    return out


def test_every_vector_is_documented_and_equal_to_what_we_encode() -> None:
    ours, documented = vectors(), _documented()
    assert set(documented) == set(ours)
    for name, data in ours.items():
        assert documented[name] == data, f"docs/protocol.md vector {name} differs from the code"


@pytest.fixture(scope="module")
def v() -> dict[str, bytes]:
    return _documented()


def test_transactions_decode_and_their_signatures_verify(v: dict[str, bytes]) -> None:
    order = decode_tx(v["order_tx"])
    assert isinstance(order, SignedOrder) and verify_signature(GENESIS, order)
    assert order.id == v["order_tx_id"] == hashlib.sha256(v["order_tx"]).digest()
    assert unpack(v["order_tx"], what="tx")[2] == unpack(v["order_body"], what="order")
    signed = v["order_signing_bytes"]
    assert signed == b"gridnode/order:vectors\x00" + v["order_body"]
    assert verify(bytes.fromhex(order.household), "order:vectors", v["order_body"], order.signature)
    cancel, reading = decode_tx(v["cancel_tx"]), decode_tx(v["reading_tx"])
    assert isinstance(cancel, SignedCancel) and verify_signature(GENESIS, cancel)
    assert isinstance(reading, SignedReading) and verify_signature(GENESIS, reading)
    assert reading.net_wh == -250
    bundle = decode_tx(v["bundle_tx"])
    assert isinstance(bundle, SignedBundle) and verify_signature(GENESIS, bundle)
    assert bundle.reading is not None and bundle.reading.net_wh == -250
    assert [o.order_id for o in bundle.orders] == ["o-1"] and bundle.models[0] is not None


def test_batches_results_and_frames_decode(v: dict[str, bytes]) -> None:
    txs = decode_tx_batch(v["tx_batch"], max_bytes=1 << 16)
    assert [tx.encode() for tx in txs] == [v["order_tx"], v["reading_tx"]]
    gossip = decode_tx_batch(v["gossip_orders_2"], max_bytes=1 << 16)
    assert [tx.encode() for tx in gossip] == [v["order_tx"]]
    rows = decode_tx_results(v["tx_results"], expected=2)
    assert [r[1] for r in rows] == [None, "reading_too_late"]
    frames = FrameDecoder(max_frame_bytes=1 << 20)
    bodies = frames.feed(
        v["submit_request_frame"] + v["submit_ok_frame"] + v["submit_rejected_frame"]
    )
    assert bodies == [v["order_tx"], b"\x00" + v["order_tx_id"], b"\x01stale_nonce"]


def test_blocks_commits_and_consensus_messages_decode_and_verify(v: dict[str, bytes]) -> None:
    validators = ValidatorSet(tuple(k.public_key for k in VALIDATORS))
    block = decode_block(v["block"])
    assert block.header.raw == v["block_header"] == block_header(v["block"])
    assert (
        block.hash
        == v["block_id"]
        == block_id(v["block"])
        == hashlib.sha256(v["block_header"]).digest()
    )
    assert decode_header(v["block_header"]).txs_root == v["txs_root"]
    commit = decode_commit(v["commit"])
    verify_commit(validators, commit, v["block"], height=1)
    verify_commit(validators, commit, v["block_header"], height=1)  # the header alone suffices
    prevote = decode_message(v["prevote"])
    assert isinstance(prevote, Vote) and prevote.vote_type is VoteType.PREVOTE
    assert verify_vote(validators, prevote)
    assert v["prevote_signing_bytes"].startswith(b"gridnode/vote\x00")
    proposal = decode_message(v["proposal"])
    assert isinstance(proposal, Proposal) and proposal.block == v["block"]
    assert verify_proposal(validators, proposal)
    assert decode_message(v["block_request"]) == BlockRequest(1, 64)
    resp = decode_message(v["block_response"])
    assert isinstance(resp, BlockResponse) and resp.blocks[0].block == v["block"]
    assert resp.blocks[0].commit == commit


def test_merkle_md_vectors_are_ours_and_the_bill_proof_verifies() -> None:
    from gridnode.core.ledger.proofs import verify_bill_proof
    from gridnode.core.merkle import leaf_hash, verify_inclusion

    ours, documented = merkle_vectors(), _documented(DOCS / "merkle.md")
    assert documented == ours
    leaves = [leaf_hash(f"entry {i}".encode()) for i in range(5)]
    path = [ours["tree5_path_of_3"][i : i + 32] for i in range(0, 96, 32)]
    assert verify_inclusion(leaves[3], 3, 5, path, ours["tree5_root"])
    bill = verify_bill_proof(GENESIS, ours["bill_proof"])
    assert (
        hashlib.sha256(ours["state_root_record"]).digest() == ours["state_root"] == bill.state_root
    )
    assert bill.nonce == 1 and [s.phase for s in bill.slots] == ["open"]
    assert bill.slots[0].order == _documented()["order_tx"]  # protocol.md's signed order
