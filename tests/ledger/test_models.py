"""Provenance on the ledger: model commitments, an order's model hash, models in the state root."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from gridnode.core.ledger import (
    ZERO_HASH,
    SignedModel,
    admission_error,
    apply,
    check,
    decode_block,
    decode_state,
    decode_tx,
    sign_model,
    sign_order,
)
from gridnode.core.ledger.proofs import make_bill_proof, verify_bill_proof
from market.errors import LedgerReason, WireReason, is_misbehaviour
from market.orders import Order, Side, Step
from tests.chain.helpers import commit_for
from tests.ledger.helpers import T0_MS, Community
from tests.refusals import refused

SLOT = T0_MS // 1000 // 900 + 2
VALIDATION = (65536 * 100, 65536 * 40, 1, 2, 3, 65536 * 50, 65536 * 80)


def _hash(n: int) -> bytes:
    return hashlib.sha256(f"model {n}".encode()).digest()


def _model(
    c: Community, rnd: int, previous: bytes, *, validator: int = 0, model: bytes | None = None
) -> SignedModel:
    return sign_model(
        c.validators[validator],
        c.genesis,
        round=rnd,
        model=_hash(rnd) if model is None else model,
        previous=previous,
        contributors=4,
        validation=VALIDATION,
        features="gn.fedqr.1",
    )


def _order(c: Community, member: int, model: bytes | None, nonce: int = 1) -> object:
    key = c.members[member]
    order = Order(
        f"o{member}-{nonce}", key.public_hex, Side.BUY, SLOT, (Step(100_000, 500),), nonce
    )
    return sign_order(key, c.genesis, order, model=model)


def test_a_committed_model_is_in_the_state_and_orders_can_name_it() -> None:
    c = Community()
    first = _model(c, 1, ZERO_HASH)
    block, state = c.block(c.state(), T0_MS + 1000, [first])
    assert block.txs == (first,)
    held = state.models[first.model]
    assert (held.round, held.contributors, held.validation, held.height) == (1, 4, VALIDATION, 1)
    assert state.last_model == first.model
    # the next round names it as previous; a round's result may commit together with orders
    second = _model(c, 2, first.model, validator=1)
    order = _order(c, 0, second.model)
    block2, state2 = c.block(state, T0_MS + 2000, [second, order])  # type: ignore[list-item]
    assert len(block2.txs) == 2
    assert state2.last_model == second.model and len(state2.models) == 2
    assert state2.open_order(SLOT, c.members[0].public_hex) == order
    # a replaying node derives the same state (root included)
    replay = check(check(c.state(), block), block2)
    assert replay.digest() == state2.digest()


def test_an_order_naming_an_uncommitted_model_is_refused_and_a_local_one_is_not() -> None:
    c = Community()
    forged = _order(c, 0, _hash(99))
    error = admission_error(c.state(), forged, time_ms=T0_MS + 1000)  # type: ignore[arg-type]
    assert error is not None and error.reason is LedgerReason.UNKNOWN_MODEL
    assert not is_misbehaviour(error.reason)  # an honest race (the model not yet committed here)
    local = _order(c, 1, None)
    assert admission_error(c.state(), local, time_ms=T0_MS + 1000) is None  # type: ignore[arg-type]
    block, _ = c.block(c.state(), T0_MS + 1000, [forged, local])  # type: ignore[list-item]
    assert block.txs == (local,)
    # a block carrying it anyway is invalid
    bad = replace(block, txs=(forged,))
    with refused(LedgerReason.UNKNOWN_MODEL):
        check(c.state(), bad)  # type: ignore[arg-type]


def test_model_commitment_refusals_name_their_rule() -> None:
    c = Community()
    state = c.state()
    now = T0_MS + 1000

    def why(tx: SignedModel, on: object = None) -> object:
        err = admission_error(state if on is None else on, tx, time_ms=now)  # type: ignore[arg-type]
        return None if err is None else err.reason

    outsider = sign_model(
        c.members[0], c.genesis, round=1, model=_hash(1), previous=ZERO_HASH,
        contributors=4, validation=VALIDATION, features="gn.fedqr.1",
    )  # fmt: skip
    assert why(outsider) is LedgerReason.NOT_A_VALIDATOR
    good = _model(c, 1, ZERO_HASH)
    forged = replace(good, signature=bytes(64))
    assert why(forged) is LedgerReason.BAD_SIGNATURE
    assert why(_model(c, 2, ZERO_HASH)) is LedgerReason.MODEL_ROUND_NOT_NEXT
    assert why(_model(c, 1, _hash(7))) is LedgerReason.MODEL_WRONG_PREVIOUS
    assert why(_model(c, 1, ZERO_HASH, model=ZERO_HASH)) is LedgerReason.BAD_MODEL
    few = sign_model(
        c.validators[0], c.genesis, round=1, model=_hash(1), previous=ZERO_HASH,
        contributors=2, validation=VALIDATION, features="gn.fedqr.1",
    )  # fmt: skip
    assert why(few) is LedgerReason.BAD_MODEL
    assert is_misbehaviour(LedgerReason.BAD_MODEL)
    assert why(good) is None
    _, after = c.block(state, now, [good])
    again = _model(c, 2, good.model, validator=2, model=good.model)
    assert why(again, after) is LedgerReason.DUPLICATE_MODEL
    assert why(_model(c, 2, ZERO_HASH), after) is LedgerReason.MODEL_WRONG_PREVIOUS
    assert why(_model(c, 2, good.model, validator=3), after) is None


def test_encodings_round_trip_and_a_local_order_keeps_its_bytes() -> None:
    c = Community()
    local = _order(c, 0, None)
    with_model = _order(c, 0, _hash(1))
    assert decode_tx(local.encode()) == local  # type: ignore[attr-defined]
    assert decode_tx(with_model.encode()) == with_model  # type: ignore[attr-defined]
    # the model hash is one more element of the signed body: 34 bytes (bin 8 header + 32)
    assert len(with_model.raw) == len(local.raw) + 34  # type: ignore[attr-defined]
    model = _model(c, 1, ZERO_HASH)
    back = decode_tx(model.encode())
    assert back == model and back.id == model.id
    # a zero model hash is not a second way to say "local"
    raw = with_model.raw.replace(_hash(1), ZERO_HASH)  # type: ignore[attr-defined]
    with refused(WireReason.OUT_OF_RANGE):
        decode_tx(raw)
    short = with_model.raw.replace(b"\xc4\x20" + _hash(1), b"\xc4\x04abcd")  # type: ignore[attr-defined]
    with refused(WireReason.BAD_TYPE):
        decode_tx(short)


def test_models_enter_the_state_root_and_snapshots() -> None:
    c = Community()
    empty_root = c.state().digest()
    block, state = c.block(c.state(), T0_MS + 1000, [_model(c, 1, ZERO_HASH)])
    _, no_model = c.block(c.state(), T0_MS + 1000, [])
    assert state.digest() != no_model.digest() != empty_root
    # another validation sum, everything else equal: another root
    other = sign_model(
        c.validators[0], c.genesis, round=1, model=_hash(1), previous=ZERO_HASH,
        contributors=4, validation=(1,) * 7, features="gn.fedqr.1",
    )  # fmt: skip
    _, state_b = c.block(c.state(), T0_MS + 1000, [other])
    assert state_b.digest() != state.digest()
    # snapshots carry the models; a state without models keeps its old encoding (format 2)
    back = decode_state(state.encode(), c.genesis)
    assert back.models == state.models and back.last_model == state.last_model
    assert back.digest() == state.digest()
    assert state.encode() == state._encode_plain()
    assert no_model.encode()[:12] == no_model._encode_plain()[:12]
    assert decode_state(no_model.encode(), c.genesis).digest() == no_model.digest()
    assert apply(c.state(), block).digest() == state.digest()


def test_a_bill_proof_verifies_against_a_root_that_commits_models() -> None:
    c = Community()
    order = _order(c, 0, None)
    block, state = c.block(c.state(), T0_MS + 1000, [_model(c, 1, ZERO_HASH), order])  # type: ignore[list-item]
    data = block.encode()
    commit = commit_for(c.validators, block.height, data)
    household = c.members[0].public_hex
    proof = make_bill_proof(state, decode_block(data).header.raw, commit, household)
    bill = verify_bill_proof(c.genesis, proof)
    assert bill.household == household and bill.height == 1


def test_a_bundles_order_may_name_a_committed_model_and_keeps_it_open() -> None:
    from gridnode.core.ledger import BundledOrder, BundleReading, sign_bundle

    c = Community()
    first = _model(c, 1, ZERO_HASH)
    _, state = c.block(c.state(), T0_MS + 1000, [first])
    key = c.members[0]
    order = Order("b0-1", key.public_hex, Side.BUY, SLOT, (Step(100_000, 500),), 1)
    later = replace(order, order_id="b0-2", slot=SLOT + 1, nonce=2)
    bundle = sign_bundle(
        key, c.genesis, reading=BundleReading(SLOT - 3, 5), orders=(order, later),
        models=(first.model, None),
    )  # fmt: skip
    block, after = c.block(state, T0_MS + 2000, [bundle])
    assert block.txs == (bundle,)
    held = after.open_order(SLOT, key.public_hex)
    assert isinstance(held, BundledOrder) and held.model == first.model
    assert after.open_order(SLOT + 1, key.public_hex).model is None  # type: ignore[union-attr]
    assert decode_state(after.encode(), c.genesis).digest() == after.digest()
    # the same bundle naming a model the ledger never committed is refused whole
    unknown = sign_bundle(
        key, c.genesis, reading=BundleReading(SLOT - 3, 5), orders=(order, later),
        models=(None, _hash(9)),
    )  # fmt: skip
    err = admission_error(state, unknown, time_ms=T0_MS + 2000)
    assert err is not None and err.reason is LedgerReason.UNKNOWN_MODEL and "order 1" in err.subject
