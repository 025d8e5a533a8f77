"""The fast paths of clearing and book validation against plain reference implementations.

``clear`` works on numpy columns (a radix sort of prices, ids sorted only where prices tie,
columns shared with :func:`validate_book`); here a step-by-step Python clearing written from the
module's documented rules must give the identical result, trade for trade. ``validate_book`` first
tries a column-by-column check, chunk by chunk; the per-order rules must answer every book the same
way (same reason, same field), the bulk check must accept only books those rules accept, and the
columns it builds (whatever the chunk size) must equal the plain reader's.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market import clearing, orders
from market.clearing import ClearingResult, Rule, Trade, clear
from market.errors import InvalidInput
from market.orders import (
    BookColumns,
    Order,
    OrderLimits,
    Side,
    Step,
    ValidBook,
    book_columns,
    validate_book,
    validate_order,
)
from market.units import WH_PER_KWH, amount_micro, largest_remainder
from tests.market.strategies import books

# ---------------------------------------------------------------- reference clearing


def _side(book: Sequence[Order], side: Side) -> list[tuple[int, int, int, int]]:
    """(price, energy, order index, step index) in priority order."""
    steps = [
        (s.price_micro_per_kwh, s.energy_wh, k, i)
        for k, o in enumerate(book)
        if o.side is side
        for i, s in enumerate(o.steps)
    ]
    sign = -1 if side is Side.BUY else 1
    return sorted(steps, key=lambda x: (sign * x[0], book[x[2]].order_id, x[3]))


def _unit_price(curve: list[tuple[int, int, int, int]], cum: list[int], unit: int) -> int | None:
    if not cum or unit > cum[-1]:
        return None
    return curve[bisect.bisect_left(cum, unit)][0]


def _fills(curve: list[tuple[int, int, int, int]], cum: list[int], volume: int) -> list[int]:
    fills = [0] * len(curve)
    if volume == 0:
        return fills
    marginal = _unit_price(curve, cum, volume)
    level = [j for j, step in enumerate(curve) if step[0] == marginal]
    for j in range(level[0]):
        fills[j] = curve[j][1]
    left = volume - sum(fills)
    for j, share in zip(level, largest_remainder(left, [curve[j][1] for j in level]), strict=True):
        fills[j] = share
    return fills


@dataclasses.dataclass(frozen=True, slots=True)
class Expected:
    clearing_price_micro_per_kwh: int | None
    volume_wh: int
    welfare_micro: int
    trades: tuple[Trade, ...] = ()


def reference_clear(book: Sequence[Order], *, rule: Rule) -> Expected:
    buys, sells = _side(book, Side.BUY), _side(book, Side.SELL)
    cb = list(accumulate(x[1] for x in buys))
    cs = list(accumulate(x[1] for x in sells))
    lo, hi = 0, min(cb[-1] if cb else 0, cs[-1] if cs else 0)
    while lo < hi:  # the largest q whose q-th Wh of demand is priced >= its q-th Wh of supply
        mid = (lo + hi + 1) // 2
        b, s = _unit_price(buys, cb, mid), _unit_price(sells, cs, mid)
        assert b is not None and s is not None
        lo, hi = (mid, hi) if b >= s else (lo, mid - 1)
    volume = lo
    if volume == 0:
        return Expected(None, 0, 0)
    bf, sf = _fills(buys, cb, volume), _fills(sells, cs, volume)
    welfare = (
        sum(f * x[0] for f, x in zip(bf, buys, strict=True))
        - sum(f * x[0] for f, x in zip(sf, sells, strict=True))
    ) // WH_PER_KWH
    uniform = None
    if rule is Rule.PAY_AS_CLEAR:
        b_m, s_m = _unit_price(buys, cb, volume), _unit_price(sells, cs, volume)
        b_u, s_u = _unit_price(buys, cb, volume + 1), _unit_price(sells, cs, volume + 1)
        assert b_m is not None and s_m is not None
        low = max(s_m, b_u) if b_u is not None else s_m
        high = min(b_m, s_u) if s_u is not None else b_m
        uniform = (low + high) // 2
    # lay both sides' filled Wh out in priority order and match them Wh by Wh, in runs
    left_b = [[x, f] for x, f in zip(buys, bf, strict=True) if f]
    left_s = [[x, f] for x, f in zip(sells, sf, strict=True) if f]
    runs: list[list[int]] = []  # [buy order, sell order, price, energy]
    while left_b:
        (b, nb), (s, ns) = left_b[0], left_s[0]
        e = min(nb, ns)
        price = uniform if uniform is not None else (b[0] + s[0]) // 2
        if runs and runs[-1][:3] == [b[2], s[2], price]:
            runs[-1][3] += e
        else:
            runs.append([b[2], s[2], price, e])
        left_b[0][1] -= e
        left_s[0][1] -= e
        if not left_b[0][1]:
            left_b.pop(0)
        if not left_s[0][1]:
            left_s.pop(0)
    trades = tuple(
        Trade(
            book[kb].household,
            book[ks].household,
            book[kb].order_id,
            book[ks].order_id,
            e,
            p,
            amount_micro(e, p),
        )
        for kb, ks, p, e in runs
    )
    return Expected(uniform, volume, welfare, trades)


def same(got: ClearingResult, want: Expected, *, slot: int = 7) -> None:
    assert (got.slot, got.clearing_price_micro_per_kwh, got.volume_wh, got.welfare_micro) == (
        slot,
        want.clearing_price_micro_per_kwh,
        want.volume_wh,
        want.welfare_micro,
    )
    assert tuple(got.trades) == want.trades
    assert all(type(t) is Trade for t in got.trades)
    assert tuple(got.trades[i] for i in range(len(got.trades))) == want.trades


def check(book: list[Order], rule: Rule) -> None:
    want = reference_clear(book, rule=rule)
    same(clear(book, slot=7, rule=rule), want)
    shuffled = list(book)
    random.Random(len(book)).shuffle(shuffled)
    same(clear(shuffled, slot=7, rule=rule), want)


WIDE = books(max_orders=30, max_steps=4, max_energy=40, prices=())
TIED = books(max_orders=30, max_steps=4, max_energy=40)
RULES = st.sampled_from(list(Rule))


@settings(max_examples=150, deadline=None)
@given(book=TIED, rule=RULES)
def test_tie_heavy_books_clear_like_the_reference(book: list[Order], rule: Rule) -> None:
    check(book, rule)


@settings(max_examples=50, deadline=None)
@given(book=WIDE, rule=RULES)
def test_wide_price_books_clear_like_the_reference(book: list[Order], rule: Rule) -> None:
    check(book, rule)


@settings(max_examples=50, deadline=None)
@given(book=books(max_orders=12, max_steps=3, max_energy=10**6, prices=(1, 2**61, 2**62 - 1)))
def test_huge_prices_take_the_exact_paths(book: list[Order]) -> None:
    for rule in Rule:
        check(book, rule)


@settings(max_examples=50, deadline=None)
@given(book=TIED, rule=RULES)
def test_fallbacks_for_overflowing_keys_give_the_same_result(book: list[Order], rule: Rule) -> None:
    # with a tiny bound every packed key, product and dot product takes its exact fallback
    with pytest.MonkeyPatch.context() as m:
        m.setattr(clearing, "_SAFE", 64)
        check(book, rule)


@settings(max_examples=50, deadline=None)
@given(book=TIED, rule=RULES)
def test_clearing_a_validated_book_reuses_its_columns(book: list[Order], rule: Rule) -> None:
    checked = validate_book(7, book)
    assert isinstance(checked, ValidBook) and checked.columns is not None
    same(clear(checked, slot=7, rule=rule), reference_clear(book, rule=rule))
    assert clear(checked, slot=7, rule=rule) == clear(book, slot=7, rule=rule)


def test_a_validated_book_for_another_slot_is_refused_like_any_book() -> None:
    checked = validate_book(7, [Order("a", "h", Side.BUY, 7, (Step(1, 1),))])
    with pytest.raises(InvalidInput) as info:
        clear(checked, slot=8)
    assert info.value.reason == "wrong_slot"


def test_a_large_realistic_book_clears_like_the_reference() -> None:
    rng = random.Random(11)
    book = [
        Order(
            f"o{rng.randrange(10**9):09d}-{k}",
            f"h{k % 300}",
            rng.choice([Side.BUY, Side.SELL]),
            7,
            tuple(
                Step(
                    rng.choice([80_000, 120_000, rng.randint(80_000, 300_000)]),
                    rng.randint(1, 2000),
                )
                for _ in range(rng.randint(1, 4))
            ),
        )
        for k in range(1500)
    ]
    for rule in Rule:
        check(book, rule)


# ---------------------------------------------------------------- book validation


def reference_validate_book(slot: int, book: list[Order], limits: OrderLimits) -> None:
    """The per-order rules, in input order: the first refusal wins."""
    seen: set[str] = set()
    for order in book:
        validate_order(order, limits=limits)
        if order.slot != slot:
            raise InvalidInput(reason="wrong_slot", subject="", field="slot")
        if order.order_id in seen:
            raise InvalidInput(reason="duplicate_id", subject="", field="id")
        seen.add(order.order_id)


class Text(str):
    """A ``str`` subclass: valid for the rules, unusual for the bulk check."""


LIMITS = OrderLimits(
    price_cap_micro_per_kwh=300_000, max_steps=4, max_energy_wh=5_000, max_id_chars=6
)
ODD_INTS = [
    -1,
    0,
    1,
    4,
    5_000,
    5_001,
    300_000,
    300_001,
    2**62,
    2**63,
    2**64,
    True,
    False,
    1.0,
    "5",
    None,
    np.int64(5),
]
GOOD_ORDER = st.builds(
    Order,
    order_id=st.text("abcdef", min_size=1, max_size=6),
    household=st.sampled_from(["h1", "h2", "h3"]),
    side=st.sampled_from(list(Side)),
    slot=st.just(7),
    steps=st.lists(
        st.builds(
            Step, price_micro_per_kwh=st.integers(0, 300_000), energy_wh=st.integers(1, 5_000)
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
    nonce=st.integers(0, 2**40),
)


#: one field of a good order and odd values for it (valid or not: the rules decide)
ODD_VALUES: dict[str, list[object]] = {
    "order_id": ["", "x" * 6, "x" * 7, Text("ab"), 7, None],
    "household": ["", Text("h"), 3, None],
    "side": ["buy", None, 1],
    "slot": [6, -1, True, 7.0, 2**62, 2**63, np.int64(7)],
    "nonce": [-1, 0, 2**62 - 1, 2**62, 2**63, True, 1.5, None],
    "price": ODD_INTS,
    "energy": ODD_INTS,
    "steps": [0, 1, 4, 5, 6],  # that many copies of the first step
    "steps_list": [None],  # the steps as a list
}
ODD_FIELD = st.sampled_from([(f, v) for f, values in ODD_VALUES.items() for v in values])


def with_odd_field(order: Order, change: tuple[str, object]) -> Order:
    name, value = change
    first = order.steps[0]
    if name == "price":
        return dataclasses.replace(order, steps=(*order.steps[1:], Step(value, first.energy_wh)))  # type: ignore[arg-type]
    if name == "energy":
        return dataclasses.replace(
            order,
            steps=(Step(first.price_micro_per_kwh, value), *order.steps[1:]),  # type: ignore[arg-type]
        )
    if name == "steps":
        assert isinstance(value, int)
        return dataclasses.replace(order, steps=(first,) * value)
    if name == "steps_list":
        return dataclasses.replace(order, steps=list(order.steps))  # type: ignore[arg-type]
    return dataclasses.replace(order, **{name: value})


ORDER = st.builds(with_odd_field, GOOD_ORDER, ODD_FIELD)


def outcome(fn: object) -> tuple[str, str | None] | None:
    try:
        fn()  # type: ignore[operator]
    except InvalidInput as exc:
        return (str(exc.reason), exc.field)
    return None


def same_refusal(book: list[Order]) -> None:
    want = outcome(lambda: reference_validate_book(7, book, LIMITS))
    assert outcome(lambda: validate_book(7, book, limits=LIMITS)) == want
    if want is not None:
        from market.orders import _surely_valid

        assert _surely_valid(7, book, LIMITS) is None  # never accepts what the rules refuse


GOOD_BOOK = st.lists(GOOD_ORDER, max_size=6, unique_by=lambda o: o.order_id)


FIXED_BOOK = [
    Order("a", "h1", Side.BUY, 7, (Step(100, 10), Step(90, 5)), nonce=1),
    Order("b", "h2", Side.SELL, 7, (Step(80, 7),)),
]


@pytest.mark.parametrize(
    "change", [(f, v) for f, values in ODD_VALUES.items() for v in values], ids=repr
)
@pytest.mark.parametrize("at", [0, 1, 2])
def test_every_odd_field_is_judged_as_the_per_order_rules_judge_it(
    change: tuple[str, object], at: int
) -> None:
    odd = with_odd_field(Order("c", "h3", Side.SELL, 7, (Step(120, 9), Step(150, 3))), change)
    same_refusal([*FIXED_BOOK[:at], odd, *FIXED_BOOK[at:]])


@settings(max_examples=150, deadline=None)
@given(book=GOOD_BOOK, odd=ORDER, at=st.integers(0, 6))
def test_one_odd_order_is_judged_as_the_per_order_rules_judge_it(
    book: list[Order], odd: Order, at: int
) -> None:
    same_refusal([*book[:at], odd, *book[at:]])


@settings(max_examples=50, deadline=None)
@given(book=st.lists(st.one_of(GOOD_ORDER, ORDER), max_size=8))
def test_mixed_books_are_refused_as_the_per_order_rules_refuse_them(book: list[Order]) -> None:
    same_refusal(book)


@settings(max_examples=50, deadline=None)
@given(book=st.lists(GOOD_ORDER, max_size=20, unique_by=lambda o: o.order_id))
def test_plain_valid_books_take_the_bulk_path(book: list[Order]) -> None:
    checked = validate_book(7, book, limits=LIMITS)
    assert isinstance(checked, ValidBook) and checked.columns is not None
    assert checked == book and list(checked) == book and len(checked) == len(book)


# ---------------------------------------------------------------- chunks, radix sort, fallbacks

CHUNKS = st.sampled_from([1, 2, 3, 2048])


def same_columns(book: Sequence[Order], columns: object) -> None:
    """The bulk check's columns are exactly what the plain column reader makes of the book."""
    want = book_columns(book)
    assert isinstance(columns, BookColumns)
    assert columns.order_ids == want.order_ids and columns.households == want.households
    for name in ("is_buy", "step_counts", "price_micro_per_kwh", "energy_wh"):
        got, exp = getattr(columns, name), getattr(want, name)
        assert got.dtype == exp.dtype and got.tolist() == exp.tolist(), name


@settings(max_examples=100, deadline=None)
@given(book=st.lists(st.one_of(GOOD_ORDER, ORDER), max_size=8), chunk=CHUNKS)
def test_chunked_bulk_check_judges_like_the_per_order_rules(book: list[Order], chunk: int) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(orders, "_CHUNK", chunk)
        same_refusal(book)


@settings(max_examples=100, deadline=None)
@given(book=st.lists(GOOD_ORDER, max_size=12), chunk=CHUNKS)
def test_chunked_bulk_columns_equal_the_plain_columns(book: list[Order], chunk: int) -> None:
    # ids drawn freely: books with an id repeated within or across chunks must be refused
    with pytest.MonkeyPatch.context() as m:
        m.setattr(orders, "_CHUNK", chunk)
        same_refusal(book)
        if len({o.order_id for o in book}) == len(book):
            checked = validate_book(7, book, limits=LIMITS)
            assert isinstance(checked, ValidBook)
            same_columns(book, checked.columns)


@settings(max_examples=50, deadline=None)
@given(book=TIED, rule=RULES, chunk=CHUNKS)
def test_clearing_chunked_columns_matches_the_reference(
    book: list[Order], rule: Rule, chunk: int
) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(orders, "_CHUNK", chunk)
        checked = validate_book(7, book)
    assert isinstance(checked, ValidBook) and checked.columns is not None
    same(clear(checked, slot=7, rule=rule), reference_clear(book, rule=rule))


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(0, 2**8), st.integers(0, 2**20), st.integers(0, 2**62 - 1)),
        ),
        max_size=60,
    ),
    span=st.sampled_from([2**4, 2**15, 2**16, 2**31, 2**47, 2**62]),
)
def test_price_ranking_is_a_stable_sort_buys_descending_then_sells_ascending(
    steps: list[tuple[bool, int]], span: int
) -> None:
    buy = np.asarray([b for b, _ in steps], dtype=bool)
    price = np.asarray([p % span for _, p in steps], dtype=np.int64)
    want = sorted(
        range(len(steps)),
        key=lambda i: (not buy[i], -int(price[i]) if buy[i] else int(price[i]), i),
    )
    for radix_min in (clearing._RADIX_MIN, 0):  # 0: the radix passes even for a few keys
        with pytest.MonkeyPatch.context() as m:
            m.setattr(clearing, "_RADIX_MIN", radix_min)
            perm, n_buy = clearing._by_price(price, buy)
        assert perm.tolist() == want and n_buy == int(buy.sum())


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.integers(0, 2**47), min_size=1, max_size=80),
    kind=st.sampled_from([np.uint16, np.uint32, np.uint64]),
)
def test_radix_passes_are_numpys_stable_sort(keys: list[int], kind: type) -> None:
    key = np.asarray(keys, dtype=np.uint64).astype(kind)  # wrapped to the type's width
    want = np.argsort(key, kind="stable").tolist()
    assert clearing._radix(clearing._digits(key, int(key.max()))).tolist() == want
    with pytest.MonkeyPatch.context() as m:
        m.setattr(clearing, "_GATHER", 3)  # the permutation composed a few elements at a time
        assert clearing._radix(clearing._digits(key, int(key.max()))).tolist() == want


@settings(max_examples=50, deadline=None)
@given(book=TIED, rule=RULES, dense=st.sampled_from([0, 10**9]))
def test_long_ties_rank_alike_by_search_or_by_per_order_arrays(
    book: list[Order], rule: Rule, dense: int
) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(clearing, "_DENSE", dense)  # 0: always by search; 10**9: always by arrays
        check(book, rule)


@settings(max_examples=50, deadline=None)
@given(book=st.one_of(TIED, WIDE), rule=RULES)
def test_radix_sorted_books_clear_like_the_reference(book: list[Order], rule: Rule) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(clearing, "_RADIX_MIN", 0)
        check(book, rule)


def _big_book(n: int) -> list[Order]:
    rng = random.Random(n)
    return [
        Order(
            f"i{k:05d}",
            f"h{k % 97}",
            rng.choice(list(Side)),
            7,
            tuple(Step(rng.randint(0, 300_000), rng.randint(1, 5_000)) for _ in range(1 + k % 4)),
            nonce=k,
        )
        for k in range(n)
    ]


@pytest.mark.parametrize(
    "spoil",
    [
        "none",
        "duplicate_across_chunks",
        "bad_price_last_chunk",
        "wrong_slot_last_chunk",
        "empty_household_middle",
    ],
)
def test_a_book_of_many_chunks_is_judged_like_the_per_order_rules(spoil: str) -> None:
    book = _big_book(5_000)  # more than two chunks of 2048
    if spoil == "duplicate_across_chunks":
        book[4_500] = dataclasses.replace(book[4_500], order_id=book[10].order_id)
    elif spoil == "bad_price_last_chunk":
        book[-1] = dataclasses.replace(book[-1], steps=(Step(300_001, 1),))
    elif spoil == "wrong_slot_last_chunk":
        book[-2] = dataclasses.replace(book[-2], slot=8)
    elif spoil == "empty_household_middle":
        book[2_500] = dataclasses.replace(book[2_500], household="")
    same_refusal(book)
    if spoil == "none":
        checked = validate_book(7, book, limits=LIMITS)
        assert isinstance(checked, ValidBook)
        same_columns(book, checked.columns)


@pytest.mark.parametrize("big", [2**31 - 1, 2**31, 10**12])
def test_chunks_of_wide_and_narrow_integers_join_as_int64(big: int) -> None:
    # chunks waiting to be joined are kept as int32 where they fit; a chunk with a larger value
    # stays int64, and every join is int64 with the same values as the plain reader's
    limits = OrderLimits(price_cap_micro_per_kwh=10**12, max_energy_wh=10**12)
    book = [
        Order("a", "h1", Side.BUY, 7, (Step(5, 3), Step(big, 1))),
        Order("b", "h2", Side.SELL, 7, (Step(7, big),)),
        Order("c", "h3", Side.SELL, 7, (Step(1, 2),)),
    ]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(orders, "_CHUNK", 1)
        checked = validate_book(7, book, limits=limits)
    assert isinstance(checked, ValidBook)
    same_columns(book, checked.columns)
    for rule in Rule:
        same(clear(checked, slot=7, rule=rule), reference_clear(book, rule=rule))


def test_ids_and_curves_too_long_for_a_byte_go_to_the_per_order_rules() -> None:
    # lengths of 256 or more do not fit the bulk check's bytes: the per-order rules decide
    limits = OrderLimits(max_id_chars=300, max_steps=300)
    long_id = Order("x" * 256, "h", Side.BUY, 7, (Step(10, 1),))
    long_curve = Order("y", "h", Side.SELL, 7, (Step(5, 1),) * 256)
    for book in ([long_id], [long_curve], [long_id, long_curve]):
        assert orders._surely_valid(7, book, limits) is None
        checked = validate_book(7, book, limits=limits)
        assert isinstance(checked, ValidBook) and checked.columns is None
        for rule in Rule:
            check(book, rule)
    with pytest.raises(InvalidInput) as info:
        validate_book(7, [long_id])  # the default limits: at most 128 chars
    assert info.value.reason == "id_too_long"
