"""Bundles (``gn.tx.bundle``): a household's reading and orders signed once.

Checked against the separate kinds as the reference: a bundle's effects on the ledger are exactly
those of its reading and orders sent as their own transactions in the bundle's order; a bundle with
one bad part is refused with that part's reason and changes nothing; malformed, oversized and forged
bundles get typed refusals."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.chain import BlockFacts
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    MAX_TX_BYTES,
    BundledOrder,
    BundleReading,
    LedgerState,
    SignedBundle,
    Tx,
    admission_error,
    check,
    decode_state,
    decode_tx,
    sign_bundle,
    sign_cancel,
    sign_order,
    sign_reading,
    tx_id,
)
from gridnode.core.ledger.genesis import _sha256
from market.codec import pack, unpack
from market.errors import InvalidInput, LedgerReason, OrderReason, Reason, UsageError, WireReason
from market.orders import Order, Side, Step
from tests.ledger.helpers import T0_MS, Community
from tests.refusals import refused

SLOT_MS = 900_000
SLOT0 = T0_MS // SLOT_MS  # the slot delivering at genesis
OPEN = SLOT0 + 2  # open at genesis (gate closes 300 s before it)
AFTER_SLOT0 = T0_MS + SLOT_MS + 1  # SLOT0 delivered: its reading is due; OPEN + 1.. still open


def gate_ms(slot: int) -> int:
    return slot * SLOT_MS - 300_000


def _order(c: Community, member: int, side: Side, slot: int, *steps: tuple[int, int]) -> Order:
    key = c.members[member]
    c.nonce[key.public_hex] += 1
    n = c.nonce[key.public_hex]
    return Order(
        f"m{member}-{n}", key.public_hex, side, slot, tuple(Step(p, e) for p, e in steps), n
    )


def test_a_bundle_round_trips_and_its_bytes_are_the_definition() -> None:
    c = Community()
    o1 = _order(c, 0, Side.SELL, OPEN, (100_000, 500))
    o2 = _order(c, 0, Side.BUY, OPEN + 1, (200_000, 300), (150_000, 200))
    model = bytes(range(1, 33))
    b = sign_bundle(
        c.members[0], c.genesis, reading=BundleReading(SLOT0, -42), orders=(o1, o2),
        models=(None, model),
    )  # fmt: skip
    assert b.raw == pack(["gn.tx.bundle", 1, b.body(), b.signature])
    assert tx_id(b) == _sha256(b.raw)
    back = decode_tx(b.raw)
    assert back == b and back.raw == b.raw and back.id == b.id
    assert isinstance(back, SignedBundle) and back.models == (None, model)
    # rebuilt from its fields (not the signing shortcut): the same bytes
    assert SignedBundle(b.household, b.reading, b.orders, b.models, b.signature).raw == b.raw
    assert [p.order for p in b.placed()] == [o1, o2]
    assert all(p.raw == b.raw and p.id == b.id for p in b.placed())


def test_sign_bundle_refuses_what_no_ledger_would_take() -> None:
    c = Community()
    mine = _order(c, 0, Side.SELL, OPEN, (1, 1))
    theirs = _order(c, 1, Side.SELL, OPEN + 1, (1, 1))
    key, g = c.members[0], c.genesis
    for kwargs in (
        {},  # empty
        {"orders": (theirs,)},
        {"orders": (mine, dataclasses.replace(mine, order_id="x", nonce=99))},  # one slot twice
        {"orders": (mine,), "models": (bytes(32),)},
        {"orders": (mine,), "models": (None, None)},
    ):
        with pytest.raises(UsageError):
            sign_bundle(key, g, **kwargs)  # type: ignore[arg-type]


def _separate(c: Community, member: int, b: SignedBundle) -> list[Tx]:
    """The bundle's parts as their own transactions (the reference)."""
    key = c.members[member]
    out: list[Tx] = []
    if b.reading is not None:
        out.append(sign_reading(key, c.genesis, slot=b.reading.slot, net_wh=b.reading.net_wh))
    out += [sign_order(key, c.genesis, o, model=m) for o, m in zip(b.orders, b.models, strict=True)]
    return out


def _plain(s: LedgerState) -> tuple[object, ...]:
    """What the ledger holds, with each open order as its market order (the placing tx aside)."""
    return (
        dict(s.nonces),
        {k: {h: (o.order, o.model) for h, o in v.items()} for k, v in s.orders.items()},
        {k: dict(v) for k, v in s.readings.items()},
        dict(s.trades),
        dict(s.balances),
        dict(s.totals),
        dict(s.clearing_prices),
    )


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.booleans(),  # with a reading
            st.integers(-3_000, 3_000),  # its net Wh
            st.lists(  # orders: (slot offset from OPEN, side, price, energy)
                st.tuples(
                    st.integers(0, 3),
                    st.sampled_from(Side),
                    st.integers(80_000, 300_000),
                    st.integers(1, 2_000),
                ),
                max_size=3,
                unique_by=lambda t: t[0],
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_bundle_does_exactly_what_its_parts_do_as_separate_transactions(
    data: list[tuple[bool, int, list[tuple[int, Side, int, int]]]],
) -> None:
    c = Community()
    bundles: list[Tx] = []
    separate: list[Tx] = []
    for member, (with_reading, net_wh, specs) in enumerate(data):
        orders = tuple(
            _order(c, member, side, OPEN + 1 + k, (price, wh)) for k, side, price, wh in specs
        )
        reading = BundleReading(SLOT0, net_wh) if with_reading else None
        if reading is None and not orders:
            continue
        b = sign_bundle(c.members[member], c.genesis, reading=reading, orders=orders)
        bundles.append(b)
        separate += _separate(c, member, b)
    s0 = c.state()
    _, s_b = c.block(s0, AFTER_SLOT0, bundles)
    _, s_s = c.block(s0, AFTER_SLOT0, separate)
    assert _plain(s_b) == _plain(s_s)
    assert sum(len(v) for v in s_b.orders.values()) == sum(len(v) for v in s_s.orders.values())
    # then clear and settle everything: the same trades, bills and balances
    far = (OPEN + 6) * SLOT_MS + 2 * 900_000
    _, s_b = c.block(s_b, far, [])
    _, s_s = c.block(s_s, far, [])
    assert _plain(s_b) == _plain(s_s)
    # a snapshot with bundled open orders reads back to the same state and root
    back = decode_state(s_b.encode(), c.genesis)
    assert back.digest() == s_b.digest()


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("stale_nonce", LedgerReason.STALE_NONCE),
        ("over_cap", OrderReason.PRICE_OUT_OF_RANGE),
        ("closed_slot", OrderReason.SLOT_CLOSED),
        ("unknown_model", LedgerReason.UNKNOWN_MODEL),
        ("duplicate_id", OrderReason.DUPLICATE_ID),
        ("id_twice_in_bundle", OrderReason.DUPLICATE_ID),
        ("someone_elses_order", LedgerReason.BAD_SIGNATURE),
        ("early_reading", LedgerReason.SLOT_NOT_DELIVERED),
        ("duplicate_reading", LedgerReason.DUPLICATE_READING),
        ("forged", LedgerReason.BAD_SIGNATURE),
        ("outsider", LedgerReason.NOT_A_MEMBER),
    ],
)
def test_one_bad_part_refuses_the_whole_bundle_with_its_reason(bad: str, why: Reason) -> None:
    c = Community()
    key, g = c.members[0], c.genesis
    s = c.state()
    held = c.order(1, Side.SELL, OPEN + 1, (100_000, 10))  # an open order of another member
    first: list[Tx] = [held]
    if bad == "duplicate_reading":
        first.append(sign_reading(key, g, slot=SLOT0, net_wh=1))
    _, s = c.block(s, T0_MS + SLOT_MS, first)
    good = _order(c, 0, Side.SELL, OPEN + 2, (100_000, 500))
    second = _order(c, 0, Side.BUY, OPEN + 3, (120_000, 100))
    reading: BundleReading | None = BundleReading(SLOT0, 7)
    models: tuple[bytes | None, ...] = (None, None)
    if bad == "stale_nonce":
        second = dataclasses.replace(second, nonce=good.nonce)
    elif bad == "over_cap":
        second = dataclasses.replace(second, steps=(Step(g.retail_micro_per_kwh + 1, 1),))
    elif bad == "closed_slot":
        second = dataclasses.replace(second, slot=SLOT0)
    elif bad == "unknown_model":
        models = (None, bytes(range(1, 33)))
    elif bad == "duplicate_id":
        second = dataclasses.replace(second, order_id=held.order.order_id)  # type: ignore[union-attr]
    elif bad == "id_twice_in_bundle":
        second = dataclasses.replace(second, order_id=good.order_id)
    elif bad == "early_reading":
        reading = BundleReading(OPEN, 7)
    body_orders = (good, second)
    if bad == "someone_elses_order":  # signed by member 0, the second order is member 1's
        other = dataclasses.replace(second, household=c.members[1].public_hex)
        unsigned = SignedBundle(key.public_hex, reading, (good, other), models, b"")
        sig = key.sign(g.domain("bundle"), pack(unsigned.body()))
        tx: SignedBundle = dataclasses.replace(unsigned, signature=sig)
    elif bad == "outsider":
        out = KeyPair.from_rng(random.Random(99))
        o = dataclasses.replace(good, household=out.public_hex)
        tx = sign_bundle(out, g, reading=reading, orders=(o,))
    else:
        tx = sign_bundle(key, g, reading=reading, orders=body_orders, models=models)
        if bad == "forged":
            tx = dataclasses.replace(tx, signature=b"\x01" * 64)
    time_ms = AFTER_SLOT0
    err = admission_error(s, tx, time_ms=time_ms)
    assert err is not None and err.reason is why, err
    if bad not in {"forged", "outsider"}:  # the refusal names the part it refused
        part = "reading" if "reading" in bad else "order 1"
        assert part in err.subject, err.subject
    block, after = c.block(s, time_ms, [tx])
    assert block.txs == ()  # the proposer filtered it out: nothing of it applied
    assert after.readings.get(SLOT0, {}).get(key.public_hex) == s.readings.get(SLOT0, {}).get(
        key.public_hex
    )  # the bundle's reading (7) is not applied
    assert after.nonces.get(key.public_hex) == s.nonces.get(key.public_hex)
    assert (OPEN + 2) not in after.orders
    with refused(why):
        check(s, dataclasses.replace(block, txs=(tx,)))


def test_bundled_orders_are_replaced_and_cancelled_like_any_other() -> None:
    c = Community()
    key, g = c.members[0], c.genesis
    o = _order(c, 0, Side.SELL, OPEN, (100_000, 500))
    b = sign_bundle(key, g, orders=(o,))
    _, s = c.block(c.state(), T0_MS + 1, [b])
    held = s.open_order(OPEN, key.public_hex)
    assert isinstance(held, BundledOrder) and held.order == o and held.id == b.id
    # a bundle's order for the same slot with a higher nonce replaces it, keeping its id
    o2 = dataclasses.replace(o, nonce=o.nonce + 1, steps=(Step(90_000, 400),))
    _, s = c.block(s, T0_MS + 2, [sign_bundle(key, g, orders=(o2,))])
    assert s.open_order(OPEN, key.public_hex).order == o2  # type: ignore[union-attr]
    assert s.open_order_ids == frozenset({o.order_id})
    # and a cancel removes it
    _, s = c.block(s, T0_MS + 3, [sign_cancel(key, g, slot=OPEN, nonce=o2.nonce + 1)])
    assert s.open_order(OPEN, key.public_hex) is None and not s.open_order_ids


def test_a_chain_of_bundles_reads_as_orders_and_readings() -> None:
    c = Community(n_members=2)
    key, g = c.members[0], c.genesis
    o = _order(c, 0, Side.SELL, OPEN + 1, (100_000, 500))
    b = sign_bundle(key, g, reading=BundleReading(SLOT0, 12), orders=(o,))
    block, s = c.block(c.state(), AFTER_SLOT0, [b])
    facts = BlockFacts(block, s.head_hash, (), ())
    assert [(p.order, p.id) for p in facts.orders] == [(o, b.id)]
    assert [(r.household, r.slot, r.net_wh, r.tx_id) for r in facts.readings] == [
        (key.public_hex, SLOT0, 12, b.id)
    ]
    assert s.readings[SLOT0] == {key.public_hex: 12}


def _bundle_wire(c: Community) -> tuple[list[object], KeyPair]:
    key = c.members[0]
    o = _order(c, 0, Side.SELL, OPEN, (100_000, 500))
    b = sign_bundle(key, c.genesis, reading=BundleReading(SLOT0, 3), orders=(o,))
    return unpack(b.raw, what="t"), key


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda w: w[2].__setitem__(4, []) or w[2].__setitem__(3, None), WireReason.BAD_SHAPE),
        (lambda w: w[2].__setitem__(3, [1]), WireReason.BAD_SHAPE),
        (lambda w: w[2].__setitem__(3, [1, "x"]), WireReason.BAD_TYPE),
        (lambda w: w[2].__setitem__(4, {"a": 1}), WireReason.BAD_TYPE),
        (lambda w: w[2].__setitem__(4, w[2][4] * 2), WireReason.DUPLICATE_IN_BATCH),
        (lambda w: w[2][4][0].append(bytes(32)), WireReason.OUT_OF_RANGE),
        (lambda w: w[2][4][0].append(b"short"), WireReason.BAD_TYPE),
        (lambda w: w[2][4].__setitem__(0, ["gn.order"]), WireReason.BAD_SHAPE),
        (lambda w: w[2].__setitem__(2, 7), WireReason.BAD_TYPE),
        (lambda w: w[2].append(None), WireReason.BAD_SHAPE),
        (lambda w: w[2].__setitem__(0, "gn.reading"), WireReason.BAD_SHAPE),
    ],
)
def test_malformed_bundles_are_typed_refusals(mutate: object, why: WireReason) -> None:
    wire, _ = _bundle_wire(Community())
    mutate(wire)  # type: ignore[operator]
    with refused(why):
        decode_tx(pack(wire))


def test_an_oversized_bundle_is_refused_before_it_is_parsed() -> None:
    c = Community()
    key = c.members[0]
    steps = tuple(Step(100_000 + i, 1) for i in range(40))
    orders = tuple(
        Order(f"o{i}", key.public_hex, Side.SELL, OPEN + i, steps, i + 1) for i in range(24)
    )
    b = sign_bundle(key, c.genesis, orders=orders)
    assert len(b.raw) > MAX_TX_BYTES
    with refused(WireReason.OVERSIZE):
        decode_tx(b.raw)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_bundle_bytes_decode_or_are_refused_never_crash(data: st.DataObject) -> None:
    c = Community()
    key = c.members[0]
    o = _order(c, 0, Side.SELL, OPEN, (100_000, 500))
    raw = bytearray(sign_bundle(key, c.genesis, reading=BundleReading(SLOT0, 3), orders=(o,)).raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        tx = decode_tx(bytes(raw))
    except InvalidInput as exc:
        assert isinstance(exc.reason, (WireReason, OrderReason, LedgerReason))
        return
    # it decoded: the ledger then refuses it by reason (or admits it, if the flip was harmless)
    err = admission_error(c.state(), tx, time_ms=AFTER_SLOT0)
    assert err is None or isinstance(err.reason, (LedgerReason, OrderReason))
