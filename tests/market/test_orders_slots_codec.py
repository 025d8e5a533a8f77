"""Orders' validation rules, slot arithmetic, and the canonical encoding."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market import codec
from market.clearing import clear
from market.codec import decode_order, encode_clearing_result, encode_order, pack
from market.errors import InvalidInput, OrderReason, UsageError, WireReason
from market.orders import (
    REJECTION_REASONS,
    Order,
    OrderLimits,
    Side,
    Step,
    validate_book,
    validate_order,
)
from market.slots import SlotClock
from tests.market.strategies import books
from tests.refusals import refused

GOOD = Order("o1", "h1", Side.SELL, 10, (Step(120_000, 800), Step(180_000, 400)), nonce=3)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"order_id": ""}, "empty_id", "id"),
        ({"order_id": "x" * 129}, "id_too_long", "id"),
        ({"household": ""}, "empty_household", "household"),
        ({"side": "sell"}, "bad_side", "side"),
        ({"slot": -1}, "bad_slot", "slot"),
        ({"slot": True}, "bad_slot", "slot"),
        ({"nonce": -1}, "bad_nonce", "nonce"),
        ({"steps": ()}, "no_steps", "steps"),
        ({"steps": (Step(1, 1),) * 17}, "too_many_steps", "steps"),
        ({"steps": (Step(1, 0),)}, "non_positive_energy", "steps[0].energy_wh"),
        ({"steps": (Step(1, 5), Step(1, -5))}, "non_positive_energy", "steps[1].energy_wh"),
        ({"steps": (Step(1, 10**9 + 1),)}, "energy_too_large", "steps[0].energy_wh"),
        ({"steps": (Step(-1, 5),)}, "price_out_of_range", "steps[0].price"),
        ({"steps": (Step(1_000_001, 5),)}, "price_out_of_range", "steps[0].price"),
        # not plain ints: the fast path of plain-int steps must not let these through
        ({"steps": (Step(1, True),)}, "non_positive_energy", "steps[0].energy_wh"),
        ({"steps": (Step(1, 5), Step(False, 5))}, "price_out_of_range", "steps[1].price"),
        ({"steps": (Step(1, 5.0),)}, "non_positive_energy", "steps[0].energy_wh"),  # type: ignore[arg-type]
        ({"steps": (Step(2.5, 5),)}, "price_out_of_range", "steps[0].price"),  # type: ignore[arg-type]
    ],
)
def test_every_rejection_names_reason_and_field(
    change: dict[str, object], reason: str, field: str
) -> None:
    bad = dataclasses.replace(GOOD, **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        validate_order(bad)
    assert (info.value.reason, info.value.field) == (reason, field)
    assert reason in REJECTION_REASONS


def test_steps_of_int_subclasses_other_than_bool_pass_as_before() -> None:
    class Wh(int):
        pass

    order = dataclasses.replace(GOOD, steps=(Step(Wh(120_000), Wh(800)),))
    assert validate_order(order) is order


def test_valid_order_passes_and_closed_slot_is_rejected() -> None:
    clock = SlotClock(slot_seconds=900, gate_lead_seconds=300)
    assert validate_order(GOOD, clock=clock, now=clock.gate_closure(10) - 1) is GOOD
    with refused(OrderReason.SLOT_CLOSED):
        validate_order(GOOD, clock=clock, now=clock.gate_closure(10))


def test_book_rules_wrong_slot_and_duplicate_id() -> None:
    with refused(OrderReason.WRONG_SLOT):
        validate_book(11, [GOOD])
    with refused(OrderReason.DUPLICATE_ID):
        validate_book(10, [GOOD, dataclasses.replace(GOOD, household="h2")])
    assert validate_book(10, [GOOD], limits=OrderLimits()) == [GOOD]


@given(slot_seconds=st.integers(1, 7200), lead=st.integers(0, 7200), now=st.integers(0, 2**40))
def test_slot_arithmetic(slot_seconds: int, lead: int, now: int) -> None:
    c = SlotClock(slot_seconds=slot_seconds, gate_lead_seconds=lead)
    k = c.slot_at(now)
    assert c.start(k) <= now < c.end(k)
    first = c.first_open_slot(now)
    assert c.is_open(first, now)
    assert not c.is_open(first - 1, now)
    assert list(c.closed_slots_between(now, now + slot_seconds)) == [first]


def test_bad_slot_clock_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        SlotClock(slot_seconds=0)
    with pytest.raises(UsageError):
        SlotClock(gate_lead_seconds=-1)


def test_order_encoding_is_pinned() -> None:
    # these bytes are what gets signed: they must never change without a version bump
    assert encode_order(GOOD).hex() == (
        "98a8676e2e6f7264657201a26f31a26831a473656c6c0a039292ce0001d4c0cd032092ce0002bf20cd0190"
    )


@given(book=books(max_orders=4))
def test_order_round_trip(book: list[Order]) -> None:
    for order in book:
        data = encode_order(order)
        assert decode_order(data) == order
        assert encode_order(decode_order(data)) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode_order(GOOD) + b"\x00", "malformed"),  # trailing bytes
        (b"\xc1", "malformed"),  # never-used msgpack byte
        (b"\x00" * (64 * 1024 + 1), "oversize"),
        (pack(["gn.order", 2, "o", "h", "buy", 1, 0, [[1, 1]]]), "bad_version"),
        (pack(["gn.ordr", 1, "o", "h", "buy", 1, 0, [[1, 1]]]), "bad_tag"),
        (pack(["gn.order", 1, "o", "h", "hold", 1, 0, [[1, 1]]]), "bad_side"),
        (pack(["gn.order", 1, "o", "h", "buy", 1.5, 0, [[1, 1]]]), "bad_type"),
        (pack(["gn.order", 1, "o", "h", "buy", 1, 0, [[1]]]), "bad_shape"),
        (pack({"not": "an array"}), "bad_shape"),
        # slot 1 encoded as a uint32 instead of a positive fixint: same value, other bytes
        (
            bytes.fromhex(
                "98a8676e2e6f7264657201a16fa168a3627579ce0000000100919201 01".replace(" ", "")
            ),
            "non_canonical",
        ),
    ],
)
def test_decoder_is_strict(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_order(data)
    assert info.value.reason == reason


@given(book=books(max_orders=6))
def test_clearing_result_encoding_is_deterministic(book: list[Order]) -> None:
    r = clear(book, slot=7)
    assert encode_clearing_result(r) == encode_clearing_result(clear(list(reversed(book)), slot=7))


def test_decoded_orders_share_step_objects_and_the_memo_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoding remembers each ``(price, energy)`` step (an immutable value) and hands the same
    object to every order that has it: the orders equal those built directly, their steps are
    ``Step``s with the decoded fields, and the memo is emptied once it holds its bound."""
    monkeypatch.setattr(codec, "_STEPS", {})
    monkeypatch.setattr(codec, "_STEPS_KEPT", 3)
    a = Order("a", "h1", Side.BUY, 5, (Step(100, 2), Step(90, 3)), nonce=1)
    b = Order("b", "h2", Side.SELL, 5, (Step(90, 3), Step(100, 2)), nonce=2)
    da, db = decode_order(encode_order(a)), decode_order(encode_order(b))
    assert (da, db) == (a, b)
    assert da.steps[0] is db.steps[1] and da.steps[1] is db.steps[0]
    assert all(type(s) is Step for s in (*da.steps, *db.steps))
    c = Order("c", "h1", Side.BUY, 6, (Step(80, 1), Step(70, 4)), nonce=3)
    assert decode_order(encode_order(c)) == c
    assert len(codec._STEPS) <= 3 and codec._STEPS[70, 4] == Step(70, 4)
    # a step that is not a pair of ints still takes the checked path and its typed refusal
    bad = pack(["gn.order", 1, "d", "h1", "buy", 6, 1, [[80, True]]])
    with pytest.raises(InvalidInput) as err:
        decode_order(bad)
    assert (err.value.reason, err.value.field) == (WireReason.BAD_TYPE, "steps[0].energy_wh")
