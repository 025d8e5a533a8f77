"""The protocol's test vectors: every message of docs/protocol.md built from fixed inputs.

Ed25519 signatures are deterministic, so the bytes never change. ``python -m tests.audit.vectors``
prints them in the form docs/protocol.md quotes them; ``test_protocol_vectors.py`` checks that the
document and this module agree and that our decoders read every vector back.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    SyncedBlock,
    VoteType,
    commit_from_votes,
    encode_commit,
    encode_message,
    sign_proposal,
    sign_vote,
    vote_sign_bytes,
)
from gridnode.core.crypto import KeyPair, signing_bytes
from gridnode.core.ledger import (
    ZERO_HASH,
    Block,
    BundleReading,
    Genesis,
    sign_bundle,
    sign_cancel,
    sign_model,
    sign_order,
    sign_reading,
)
from gridnode.net.framing import encode_frame
from gridnode.txbatch import encode_tx_batch, encode_tx_results
from market.codec import order_to_wire, pack
from market.errors import LedgerReason
from market.orders import Order, Side, Step

#: seeds: 32 bytes of one repeated value each (test keys, never for real use)
HOUSEHOLD = KeyPair(bytes([1]) * 32)
VALIDATORS = [KeyPair(bytes([0x10 + i]) * 32) for i in range(4)]
GENESIS = Genesis(
    community_id="vectors",
    genesis_time_ms=1_800_000_000_000,
    members=(HOUSEHOLD.public_hex,),
    validators=tuple(k.public_hex for k in VALIDATORS),
)
SLOT = 2_000_001  # open at genesis time (900 s slots)
#: the model hash of the provenance vectors (a committed community model's content hash)
MODEL = hashlib.sha256(b"a model").digest()


def vectors() -> dict[str, bytes]:
    """Name -> bytes, in the order docs/protocol.md lists them."""
    g = GENESIS
    order = Order(
        order_id="o-1",
        household=HOUSEHOLD.public_hex,
        side=Side.SELL,
        slot=SLOT,
        steps=(Step(120_000, 800), Step(180_000, 400)),
        nonce=1,
    )
    body = pack(order_to_wire(order))
    signed = sign_order(HOUSEHOLD, g, order)
    cancel = sign_cancel(HOUSEHOLD, g, slot=SLOT, nonce=2)
    reading = sign_reading(HOUSEHOLD, g, slot=SLOT - 1, net_wh=-250)
    block = Block(
        height=1,
        prev_hash=ZERO_HASH,
        time_ms=g.genesis_time_ms + 1_000,
        proposer=VALIDATORS[1].public_hex,
        txs=(signed, reading),
        state_root=hashlib.sha256(b"a state root").digest(),
    )
    raw = block.encode()
    votes = [
        sign_vote(k, vote_type=VoteType.PRECOMMIT, height=1, round_=0, value=block.hash,
                  validator=i)
        for i, k in enumerate(VALIDATORS[:3])
    ]  # fmt: skip
    commit = commit_from_votes(1, 0, block.hash, votes)
    prevote = sign_vote(
        VALIDATORS[2], vote_type=VoteType.PREVOTE, height=1, round_=0, value=block.hash, validator=2
    )
    proposal = sign_proposal(
        VALIDATORS[1], height=1, round_=0, block=raw, valid_round=-1, proposer=1
    )
    return {
        "genesis_hash": g.hash,
        "order_body": body,
        "order_signing_bytes": signing_bytes(g.domain("order"), body),
        "order_tx": signed.encode(),
        "order_tx_id": signed.id,
        "cancel_tx": cancel.encode(),
        "reading_tx": reading.encode(),
        "order_tx_model": sign_order(HOUSEHOLD, g, order, model=MODEL).encode(),
        # the reading above and the order above (nonce 3, naming the model), signed once
        "bundle_tx": sign_bundle(
            HOUSEHOLD,
            g,
            reading=BundleReading(SLOT - 1, -250),
            orders=(replace(order, nonce=3),),
            models=(MODEL,),
        ).encode(),
        "model_tx": sign_model(
            VALIDATORS[0],
            g,
            round=1,
            model=MODEL,
            previous=ZERO_HASH,
            contributors=3,
            validation=(1, 2, 3, 4, 5, 6, 7),
            features="gn.fedqr.1",
        ).encode(),
        "fed_invite": pack(["gn.fed.invite", 1, 1]),
        "fed_join": pack(["gn.fed.join", 1, 900]),
        "tx_batch": encode_tx_batch([signed, reading]),
        "gossip_orders_2": encode_tx_batch([signed]),
        "tx_results": encode_tx_results(
            [(signed.id, None), (reading.id, LedgerReason.READING_TOO_LATE)]
        ),
        "submit_request_frame": encode_frame(signed.encode()),
        "submit_ok_frame": encode_frame(b"\x00" + signed.id),
        "submit_rejected_frame": encode_frame(b"\x01" + b"stale_nonce"),
        "txs_root": block.header.txs_root,
        "block_header": block.header.raw,
        "block": raw,
        "block_id": block.hash,
        "prevote_signing_bytes": signing_bytes(
            "vote", vote_sign_bytes(VoteType.PREVOTE, 1, 0, block.hash)
        ),
        "prevote": encode_message(prevote),
        "proposal": encode_message(proposal),
        "commit": encode_commit(commit),
        "block_request": encode_message(BlockRequest(1, 64)),
        "block_response": encode_message(BlockResponse((SyncedBlock(1, raw, commit),))),
    }


def merkle_vectors() -> dict[str, bytes]:
    """docs/merkle.md's vectors: the hashing, a small tree and its audit path, and a real bill
    proof: the vectors' genesis, block 1 with the order of docs/protocol.md §7.3, committed by
    validators 0–2; the proof of the household's account and its open order at height 1."""
    from gridnode.core.ledger import build_block, decode_block, genesis_state
    from gridnode.core.ledger.proofs import make_bill_proof
    from gridnode.core.merkle import inclusion_path, leaf_hash, tree_root

    entries = [f"entry {i}".encode() for i in range(5)]
    leaves = [leaf_hash(e) for e in entries]
    g = GENESIS
    order = Order(
        order_id="o-1",
        household=HOUSEHOLD.public_hex,
        side=Side.SELL,
        slot=SLOT,
        steps=(Step(120_000, 800), Step(180_000, 400)),
        nonce=1,
    )
    block, state = build_block(
        genesis_state(g),
        time_ms=g.genesis_time_ms + 1_000,
        proposer=VALIDATORS[1].public_hex,
        txs=[sign_order(HOUSEHOLD, g, order)],
    )
    raw = block.encode()
    votes = [
        sign_vote(k, vote_type=VoteType.PRECOMMIT, height=1, round_=0, value=block.hash,
                  validator=i)
        for i, k in enumerate(VALIDATORS[:3])
    ]  # fmt: skip
    commit = encode_commit(commit_from_votes(1, 0, block.hash, votes))
    header = decode_block(raw).header.raw
    return {
        "empty_leaf_hash": leaf_hash(b""),
        "tree5_root": tree_root(leaves),
        "tree5_path_of_3": b"".join(inclusion_path(leaves, 3)),
        "state_root_record": state.tree().record,
        "state_root": state.digest(),
        "bill_proof": make_bill_proof(state, header, commit, HOUSEHOLD.public_hex),
    }


if __name__ == "__main__":
    for name, data in {**vectors(), **merkle_vectors()}.items():
        print(f"{name}:")
        h = data.hex()
        for i in range(0, len(h), 96):
            print("  " + h[i : i + 96])
