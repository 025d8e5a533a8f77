"""Clearing one slot's order book: a pure, deterministic double auction.

Rules of this module (the contract every node re-runs to verify a slot):

**Input.** Validated orders of one slot (see :mod:`market.orders`); order ids must be unique. Each
order step is a limit: a buy step trades at its price or lower, a sell step at its price or higher.

**Canonical priority.** Buy steps are ranked by price descending, sell steps by price ascending; steps
at equal price are ranked by order id (Python ``str`` ordering, i.e. by code point) and then by step
index. The input order of ``orders`` never matters.

**Volume.** The cleared volume ``V`` is the largest ``q`` such that the ``q``-th Wh of the demand
curve (buy steps in priority order) is priced at least as high as the ``q``-th Wh of the supply curve.
That is the maximum energy any single price can clear, ``max_p min(D(p), S(p))``, and clearing at the
crossing also maximises welfare. No step ever trades outside its limit price.

**Who is filled.** Steps priced strictly better than the marginal price of their side are filled in
full. The steps *at* the marginal price share what is left **pro rata** to their energy, in whole Wh:
each gets ``floor(q_i * R / Q)``, and the Wh left over by flooring go one each to the steps with the
largest fractional remainder, ties to the higher-priority step (order id, then step index).

**Pairing.** Filled buy Wh and filled sell Wh are laid out in priority order and matched Wh by Wh; every
maximal run with the same (buy order, sell order, price) becomes one :class:`Trade`. Trades come out in
that canonical order.

**Price, pay-as-clear** (:attr:`Rule.PAY_AS_CLEAR`). One uniform price for all trades, the midpoint
(rounded down) of the crossing interval ``[lo, hi]`` with ``lo = max(s_m, b_u)``, ``hi = min(b_m, s_u)``:
``b_m``/``s_m`` are the limits of the last Wh bought/sold, ``b_u``/``s_u`` those of the first Wh left
unmatched on each side (absent if none). Every matched buyer's limit is ≥ the price, every matched
seller's ≤ it, and nobody left out would trade at it: a competitive equilibrium.

**Price, pay-as-bid** (:attr:`Rule.PAY_AS_BID`). Each matched pair trades at the midpoint (rounded
down) of its buy and sell limit prices, splitting that pair's surplus evenly (a ½-double auction).
``clearing_price`` is then ``None``.

**Money.** Each trade's ``amount_micro`` is :func:`market.units.amount_micro` of its energy and price,
computed once. ``welfare_micro`` is ``(Σ buy fill × limit − Σ sell fill × limit) // 1000``: the gains
from trade measured at the limit prices.

**Empty or uncrossed books** clear nothing: volume 0, no trades, ``clearing_price`` ``None``.

Known limits: a household's own buy and sell orders in one slot may match each other (a wash trade,
net zero money); the ledger refuses such pairs of orders before they reach clearing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import repeat
from operator import gt, itemgetter
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn, cast, overload

import numpy as np  # lazy in a daemon (gridnode.lazyimports): it runs at the first clearing

from market.errors import InvalidInput, OrderReason
from market.orders import BookColumns, Order, ValidBook, book_columns
from market.units import WH_PER_KWH, amount_micro, largest_remainder

__all__ = ["ClearingResult", "Rule", "Trade", "Trades", "clear"]

_I64: Final = "int64"  # the dtype np.int64, named (nothing of numpy is read at import)
if TYPE_CHECKING:
    import numpy.typing as npt

    _IntArray = npt.NDArray[np.int64]
    #: A column of integers: a numpy array on the fast path, a list of Python ints on the exact one.
    _Column = Sequence[int] | npt.NDArray[Any]
# Products above this may overflow int64; such (rare, huge) books take the exact Python-int path.
_SAFE = 2**62


class Rule(Enum):
    """Which price rule the auction uses."""

    PAY_AS_CLEAR = "pay-as-clear"
    PAY_AS_BID = "pay-as-bid"


class Trade(NamedTuple):
    """Energy moving from ``seller`` to ``buyer`` in one slot; ``amount_micro`` is paid buyer → seller.

    Immutable like our frozen dataclasses, but a ``NamedTuple``: one slot can yield tens of thousands
    of trades and a frozen slotted dataclass costs 3x as much to build (1.0 µs vs 0.34 µs, measured).
    """

    buyer: str
    seller: str
    buy_order: str
    sell_order: str
    energy_wh: int
    price_micro_per_kwh: int
    amount_micro: int


class Trades(Sequence[Trade]):
    """The trades of one clearing: an immutable sequence of :class:`Trade`, stored as columns.

    A 100k-step book yields ~50k trades; building them as Python objects up front would cost more
    than the whole auction, so items are made on access. Equality is by content.
    """

    __slots__ = ("_amount", "_buy", "_energy", "_homes", "_ids", "_price", "_sell")

    def __init__(
        self,
        *,
        buy: _Column = (),
        sell: _Column = (),
        energy_wh: _Column = (),
        price_micro_per_kwh: _Column = (),
        amount_micro: _Column = (),
        order_ids: Sequence[str] = (),
        households: Sequence[str] = (),
    ) -> None:
        self._buy = buy
        self._sell = sell
        self._energy = energy_wh
        self._price = price_micro_per_kwh
        self._amount = amount_micro
        self._ids = order_ids
        self._homes = households

    def __len__(self) -> int:
        return len(self._buy)

    @overload
    def __getitem__(self, index: int) -> Trade: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Trade, ...]: ...
    def __getitem__(self, index: int | slice) -> Trade | tuple[Trade, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        b = int(self._buy[index])
        s = int(self._sell[index])
        return Trade(
            self._homes[b],
            self._homes[s],
            self._ids[b],
            self._ids[s],
            int(self._energy[index]),
            int(self._price[index]),
            int(self._amount[index]),
        )

    def __iter__(self) -> Iterator[Trade]:
        # every column made in C first (itemgetter gathers the households and ids, one price
        # object stands for a uniform price), then each Trade built by tuple.__new__ (C, no
        # per-field Python call): ~1.5x faster than calling Trade(...) per item
        buys, sells = _gather(self._buy), _gather(self._sell)
        rows = zip(
            buys(self._homes),
            sells(self._homes),
            buys(self._ids),
            sells(self._ids),
            _as_list(self._energy),
            _as_values(self._price),
            _as_list(self._amount),
            strict=True,
        )
        return cast(Iterator[Trade], map(tuple.__new__, repeat(Trade), rows))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(x == y for x, y in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Trades({list(self)!r})"


def _as_list(column: _Column) -> list[int]:
    if isinstance(column, np.ndarray):
        values: list[int] = column.tolist()
        return values
    return list(column)


def _as_values(column: _Column) -> Iterable[int]:
    """``column``'s values; a column of one repeated value (pay-as-clear's price) as one int
    object repeated, which saves making one int per trade."""
    if (
        isinstance(column, np.ndarray)
        and len(column)
        and (column.strides == (0,) or bool((column == column[0]).all()))
    ):
        return repeat(int(column[0]), len(column))
    return _as_list(column)


def _gather(index: _Column) -> Callable[[Sequence[str]], Sequence[str]]:
    """A function picking the items at ``index`` from a sequence, in C (``itemgetter``) when
    there are two or more (with one, ``itemgetter`` returns the item, not a tuple)."""
    at = _as_list(index)
    if len(at) >= 2:
        return itemgetter(*at)
    return lambda items: [items[i] for i in at]


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """The outcome of clearing one slot."""

    slot: int
    rule: Rule
    clearing_price_micro_per_kwh: int | None
    volume_wh: int
    welfare_micro: int
    trades: Trades = field(default_factory=Trades)

    def filled_wh(self) -> dict[str, int]:
        """Energy filled per order id (both sides)."""
        out: dict[str, int] = {}
        for t in self.trades:
            out[t.buy_order] = out.get(t.buy_order, 0) + t.energy_wh
            out[t.sell_order] = out.get(t.sell_order, 0) + t.energy_wh
        return out


@dataclass(frozen=True, slots=True)
class _Ranked:
    """One side's steps by price (buys descending, sells ascending), equal prices still in input
    position, and their cumulative energy: all the crossing and the marginal level need (the order
    of steps within a price does not move any price or level boundary)."""

    where: npt.NDArray[np.intp]  # step positions in the book
    cum: _IntArray  # cumulative energy in that order


@dataclass(frozen=True, slots=True)
class _Filled:
    """One side's steps up to the end of its marginal price level, in canonical priority order,
    with each step's fill (zero after the marginal level: those steps are not kept)."""

    fill: _IntArray
    price: _IntArray
    order: npt.NDArray[Any]  # index into the book's orders


def _book(orders: Sequence[Order], slot: int) -> BookColumns | None:
    """The book as columns, or ``None`` if an order id repeats or an order is for another slot.

    A :class:`~market.orders.ValidBook` validated for this slot brings its columns (and already
    has unique ids, all for this slot); otherwise one pass of attribute reads per field.
    """
    columns = orders.columns if isinstance(orders, ValidBook) and orders.slot == slot else None
    if columns is None:
        n = len(orders)
        if len({o.order_id for o in orders}) != n or [o.slot for o in orders].count(slot) != n:
            return None
        columns = book_columns(orders)
    return columns


#: below this many keys one stable sort of the int64 key is faster than the radix passes
_RADIX_MIN: Final = 2048


def _by_price(price: _IntArray, buy: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], int]:
    """The book's step positions, buys first by price descending, then sells by price ascending,
    equal prices of a side in input position; and how many are buys.

    One stable sort of one key for both sides, in 16-bit digits (:func:`_radix`): ``price - lo``
    in the low bits, its complement for a buy (the high price first), and the top bit set for a
    sell, i.e. ``(price - lo) ^ (top bit - is_buy)``. Under :data:`_RADIX_MIN` steps, or for
    prices spanning 2**47 or more, numpy's stable sort of an int64 key instead.
    """
    n = len(price)
    buys = int(np.count_nonzero(buy))
    if n == 0:
        return np.zeros(0, dtype=np.intp), 0
    lo, hi = int(price.min()), int(price.max())
    span = hi - lo
    digits = next((d for d in (1, 2, 3) if span < 2 ** (16 * d - 1)), 0)
    if n < _RADIX_MIN or not digits:
        wide = np.where(buy, hi - price, price + (span + 1 - lo))
        return np.argsort(wide, kind="stable"), buys
    kind = (np.uint16, np.uint32, np.uint64)[digits - 1]
    key: npt.NDArray[Any] = np.empty(n, dtype=kind)
    np.subtract(price, lo, out=key, casting="unsafe")  # 0..span: fits below the top bit
    flip: npt.NDArray[Any] = buy.astype(kind)
    # a sell's flip: the top bit; a buy's: every bit below it
    np.subtract(kind(1 << (16 * digits - 1)), flip, out=flip)
    np.bitwise_xor(key, flip, out=key)
    del flip
    parts = _digits(key, (1 << (16 * digits)) - 1)
    del key  # the digits are all the sort needs
    return _radix(parts), buys


def _digits(key: npt.NDArray[Any], top: int) -> list[npt.NDArray[np.uint16]]:
    """``key`` (unsigned, at most ``top``) as 16-bit digits, least significant first."""
    out = [key if key.dtype == np.uint16 else key.astype(np.uint16)]  # the lowest 16 bits
    for shift in range(16, top.bit_length(), 16):
        digit = np.empty(len(key), dtype=np.uint16)
        np.right_shift(key, shift, out=digit, casting="unsafe")  # that digit: mod 2**16
        out.append(digit)
    return out


def _radix(digits: list[npt.NDArray[np.uint16]]) -> npt.NDArray[np.intp]:
    """The stable ascending order of the key whose 16-bit ``digits`` (least significant first)
    are given, which it consumes: one stable sort per digit, which numpy does as a radix sort
    (≈ 10x faster than its stable sort of wider integers)."""
    perm = np.argsort(digits.pop(0), kind="stable")
    while digits:
        then = np.argsort(digits.pop(0)[perm], kind="stable")
        for at in range(0, len(then), _GATHER):  # then = perm[then], a slice at a time
            then[at : at + _GATHER] = perm[then[at : at + _GATHER]]
        perm = then
    return perm


#: elements gathered at a time where a permutation is composed in place (a small temporary
#: instead of a third array as long as the key)
_GATHER: Final = 8192


def _ranked(where: npt.NDArray[np.intp], energy: _IntArray) -> _Ranked:
    cum = energy[where]
    return _Ranked(where=where, cum=np.cumsum(cum, out=cum))


def _price_of_unit(price: _IntArray, side: _Ranked, unit: int) -> int | None:
    """Limit price of the ``unit``-th Wh (1-based) of a side, or ``None`` past its end."""
    if unit > (int(side.cum[-1]) if len(side.cum) else 0):
        return None
    return int(price[side.where[int(np.searchsorted(side.cum, unit, side="left"))]])


def _crossing_volume(price: _IntArray, buys: _Ranked, sells: _Ranked) -> int:
    """Largest q with price_of_unit(buys, q) >= price_of_unit(sells, q) (monotone: binary search)."""
    if not len(buys.cum) or not len(sells.cum):
        return 0
    lo, hi = 0, min(int(buys.cum[-1]), int(sells.cum[-1]))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        b = _price_of_unit(price, buys, mid)
        s = _price_of_unit(price, sells, mid)
        assert b is not None and s is not None
        if b >= s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _level(price: _IntArray, where: npt.NDArray[np.intp], at: int) -> tuple[int, int]:
    """``[start, end)``: the run of steps of ``where`` (ranked by price) priced like the one at
    ``at``, found by two binary searches (prices are monotone along a side)."""
    p = int(price[where[at]])
    lo, hi = 0, at
    while lo < hi:
        mid = (lo + hi) // 2
        if int(price[where[mid]]) == p:
            hi = mid
        else:
            lo = mid + 1
    start = lo
    lo, hi = at + 1, len(where)
    while lo < hi:
        mid = (lo + hi) // 2
        if int(price[where[mid]]) == p:
            lo = mid + 1
        else:
            hi = mid
    return start, lo


@dataclass(frozen=True, slots=True)
class _Margin:
    """One side's steps through the end of its marginal price level (still by price, then input
    position), and that level: ``[start, len(where))``; ``before`` Wh are filled ahead of it and
    ``left`` of its ``level_wh`` Wh."""

    where: npt.NDArray[np.intp]
    start: int
    before: int
    left: int
    level_wh: int


def _margin(price: _IntArray, side: _Ranked, volume: int) -> _Margin:
    """The steps of ``side`` that trade some of ``volume``: those through its marginal level (a
    copy, so that the whole side's arrays can go)."""
    cum = side.cum
    start, end = _level(price, side.where, int(np.searchsorted(cum, volume, side="left")))
    before = int(cum[start - 1]) if start else 0
    return _Margin(
        where=side.where[:end].copy(),
        start=start,
        before=before,
        left=volume - before,
        level_wh=int(cum[end - 1]) - before,
    )


def _filled(columns: BookColumns, order: npt.NDArray[Any], margin: _Margin) -> _Filled:
    """A side's steps through its marginal level in canonical order, and their fills: in full
    before the marginal price, pro rata at it."""
    where, start = margin.where, margin.start
    level_price = columns.price_micro_per_kwh[where]
    where = _rank_ties(columns, order, where, level_price)
    fill = columns.energy_wh[where]
    if margin.left != margin.level_wh:
        # the documented rule is exactly market.units.largest_remainder over the level in
        # priority order
        share = largest_remainder(margin.left, fill[start:].tolist())
        fill[start:] = np.asarray(share, dtype=_I64)
    return _Filled(fill=fill, price=level_price, order=order[where])


def _rank_ties(
    columns: BookColumns,
    book_order: npt.NDArray[Any],
    where: npt.NDArray[np.intp],
    price: _IntArray,
) -> npt.NDArray[np.intp]:
    """Reorder runs of equal ``price`` in ``where`` (one side's steps, sorted by price, then input
    position) by (order id, step index).

    Only runs that mix orders need the ids, so only those steps' ids are compared (a book where
    every step has its own price compares no string at all). A run of two steps from two orders
    (the usual tie) is put in order by comparing the two ids; longer runs that mix orders rank
    their orders' ids with one sort and reorder by (id rank, step index).
    """
    if len(where) < 2:
        return where
    order = book_order[where]
    new_level = price[1:] != price[:-1]
    same = ~new_level & (order[1:] != order[:-1])
    if not same.any():
        return where  # equal prices only within one order: input position is step order
    level = np.empty(len(where), dtype=np.intp)
    level[0] = 0
    np.cumsum(new_level, out=level[1:])
    size = np.bincount(level)  # steps per run of equal price
    mixed = np.zeros(len(size), dtype=bool)
    mixed[level[1:][same]] = True
    out = where.copy()
    ids = columns.order_ids
    first = np.flatnonzero(np.concatenate(([True], new_level)))  # where each run starts
    pairs = first[np.flatnonzero(mixed & (size == 2))]  # two steps, two orders
    if len(pairs):
        earlier, later = _gather(order[pairs])(ids), _gather(order[pairs + 1])(ids)
        swap = np.frombuffer(bytes(map(gt, earlier, later)), dtype=bool)
        at = pairs[swap]
        out[at], out[at + 1] = where[at + 1], where[at]
    at = np.flatnonzero((mixed & (size > 2))[level])  # the steps of longer mixed runs
    if not len(at):
        return out
    owned = order[at]
    owns = np.zeros(len(ids), dtype=bool)
    owns[owned] = True
    owners = np.flatnonzero(owns)  # the orders with a step in such a run, once each, ascending
    by_id = sorted(owners.tolist(), key=ids.__getitem__)
    steps: npt.NDArray[Any]
    if len(at) * _DENSE >= len(ids):  # many: look ranks and first steps up in per-order arrays
        narrow = np.int32 if len(book_order) < 2**31 else np.intp
        rank = np.empty(len(ids), dtype=narrow)  # per order (owners only): its id's rank
        rank[by_id] = np.arange(len(owners), dtype=narrow)
        owner_rank = rank[owned]
        starts: npt.NDArray[Any] = np.cumsum(columns.step_counts, dtype=narrow)
        starts -= columns.step_counts  # each order's first step
        steps = where[at] - starts[owned]  # each step's index in its order
    else:  # few: search the owners and the book's steps (grouped by order: ``book_order`` is
        # sorted) instead of two arrays as long as the book's orders
        rank = np.empty(len(owners), dtype=_I64)
        rank[np.searchsorted(owners, by_id)] = np.arange(len(owners))
        owner_rank = rank[np.searchsorted(owners, owned)]
        steps = where[at] - np.searchsorted(book_order, owned)
    secondary = owner_rank.astype(_I64) * (int(steps.max()) + 1) + steps  # id rank, step index
    span = int(secondary.max()) + 1
    if (int(level[-1]) + 1) * span < _SAFE:
        perm = np.argsort(level[at] * span + secondary)  # keys are distinct: any sort will do
    else:
        perm = np.lexsort((secondary, level[at]))
    out[at] = where[at][perm]
    return out


#: long ties look their owners up in per-order arrays once they have at least 1/_DENSE as many
#: steps as the book has orders (a round-priced book), else by binary search (fewer, smaller
#: temporaries)
_DENSE: Final = 8


def _dot(a: _IntArray, b: _IntArray) -> int:
    if len(a) == 0:
        return 0
    if int(a.max(initial=0)) * int(b.max(initial=0)) * len(a) < _SAFE:
        return int(np.dot(a, b))
    return sum(int(x) * int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))


def clear(orders: Sequence[Order], *, slot: int, rule: Rule = Rule.PAY_AS_CLEAR) -> ClearingResult:
    """Clear one slot's validated order book; see the module docstring for every rule."""
    columns = _book(orders, slot)
    if columns is None:
        _refuse(orders, slot)
    return _clear_columns(columns, slot=slot, rule=rule)


def _refuse(orders: Sequence[Order], slot: int) -> NoReturn:
    """Raise why :func:`_book` could not take the book: the smallest repeated order id, else the
    first order for another slot."""
    rank: dict[str, int] = {}
    for oid in sorted(o.order_id for o in orders):
        if oid in rank:
            raise InvalidInput(
                reason=OrderReason.DUPLICATE_ID,
                subject=f"order {oid!r}",
                field="id",
                expected="unique order ids",
            )
        rank[oid] = len(rank)
    for o in orders:
        if o.slot != slot:
            raise InvalidInput(
                reason=OrderReason.WRONG_SLOT,
                subject=f"order {o.order_id!r}",
                field="slot",
                expected=str(slot),
                found=str(o.slot),
            )
    raise AssertionError("a book with unique ids, all for this slot, was refused")


def _clear_columns(columns: BookColumns, *, slot: int, rule: Rule) -> ClearingResult:
    counts = columns.step_counts
    price, energy = columns.price_micro_per_kwh, columns.energy_wh
    index = np.int32 if len(counts) < 2**31 else np.intp
    order = np.repeat(np.arange(len(counts), dtype=index), counts)  # per step: its order
    perm, n_buy = _by_price(price, np.repeat(columns.is_buy, counts))
    buys, sells = _ranked(perm[:n_buy], energy), _ranked(perm[n_buy:], energy)
    volume = _crossing_volume(price, buys, sells)
    if volume == 0:
        return ClearingResult(
            slot=slot, rule=rule, clearing_price_micro_per_kwh=None, volume_wh=0, welfare_micro=0
        )
    uniform: int | None = None
    if rule is Rule.PAY_AS_CLEAR:
        b_m = _price_of_unit(price, buys, volume)
        s_m = _price_of_unit(price, sells, volume)
        assert b_m is not None and s_m is not None
        b_u = _price_of_unit(price, buys, volume + 1)
        s_u = _price_of_unit(price, sells, volume + 1)
        lo = max(s_m, b_u) if b_u is not None else s_m
        hi = min(b_m, s_u) if s_u is not None else b_m
        assert lo <= hi, (lo, hi)
        uniform = (lo + hi) // 2
    b_margin, s_margin = _margin(price, buys, volume), _margin(price, sells, volume)
    del perm, buys, sells  # the whole sides: only the steps through each margin trade
    b = _filled(columns, order, b_margin)
    s = _filled(columns, order, s_margin)
    del order, b_margin, s_margin
    welfare = (_dot(b.fill, b.price) - _dot(s.fill, s.price)) // WH_PER_KWH
    return ClearingResult(
        slot=slot,
        rule=rule,
        clearing_price_micro_per_kwh=uniform,
        volume_wh=volume,
        welfare_micro=welfare,
        trades=_pair(columns, b, s, uniform=uniform),
    )


def _pair(columns: BookColumns, b: _Filled, s: _Filled, *, uniform: int | None) -> Trades:
    """The trades: both sides' filled Wh laid out in priority order and matched Wh by Wh.

    Each side's filled steps end at its cumulative fills (strictly increasing, both ending at the
    volume); one segment ends at each value of their union, pairing the buy step and the sell step
    not yet used up there. Consecutive segments with the same (buy order, sell order, price) are
    one trade. Temporaries are dropped as soon as they are read: at 100k steps each is ~0.4 MB of
    fresh memory, which the process pays for in page faults.
    """
    b_order, b_price, cb = _used(b)
    s_order, s_price, cs = _used(s)
    n_buy = len(cb)
    # the union of two strictly increasing runs: a stable sort merges them in linear time (a buy
    # end before an equal sell end); at each value's first occurrence, the ends of either side
    # before it count that side's steps already used up (what searchsorted(side="left") finds)
    both = np.concatenate((cb, cs))
    del cb, cs
    merge = np.argsort(both, kind="stable")
    merged = both[merge]
    del both
    from_buy = merge < n_buy
    del merge
    first = np.empty(len(merged), dtype=bool)
    first[0] = True
    np.not_equal(merged[1:], merged[:-1], out=first[1:])
    at = np.flatnonzero(first)  # each segment's end: the first occurrence of its value
    del first
    ends = merged[at]
    del merged
    energy = np.empty(len(ends), dtype=_I64)
    energy[0] = ends[0]
    np.subtract(ends[1:], ends[:-1], out=energy[1:])
    del ends
    bi = np.cumsum(from_buy, dtype=np.intp)
    bi -= from_buy  # per position: the buy ends before it
    del from_buy
    bi = bi[at]  # per segment: its buy step
    si = np.subtract(at, bi, out=at)  # and its sell step (the sell ends before it)
    buy, sell = b_order[bi], s_order[si]
    change = np.empty(len(buy), dtype=bool)  # where a trade starts
    change[0] = True
    np.not_equal(buy[1:], buy[:-1], out=change[1:])
    change[1:] |= sell[1:] != sell[:-1]
    price: _IntArray
    if uniform is None:
        price = b_price[bi]
        price += s_price[si]
        price //= 2
        change[1:] |= price[1:] != price[:-1]
    else:
        price = _uniform_column(uniform, len(buy))
    del bi, si
    if not change.all():  # merge consecutive segments of one trade
        starts = np.flatnonzero(change)
        energy = np.add.reduceat(energy, starts)
        buy, sell = buy[starts], sell[starts]
        price = price[starts] if uniform is None else _uniform_column(uniform, len(starts))
    amounts: _Column
    if int(energy.max()) * int(price.max()) < _SAFE:
        amounts = energy * price
        amounts += WH_PER_KWH // 2
        amounts //= WH_PER_KWH
    else:  # exact path for huge quantities
        amounts = [amount_micro(e, p) for e, p in zip(energy.tolist(), price.tolist(), strict=True)]
    return Trades(
        buy=buy,
        sell=sell,
        energy_wh=energy,
        price_micro_per_kwh=price,
        amount_micro=amounts,
        order_ids=columns.order_ids,
        households=columns.households,
    )


def _used(side: _Filled) -> tuple[npt.NDArray[Any], _IntArray, _IntArray]:
    """A side's steps with a fill (some at the marginal level may get none): their orders,
    prices and cumulative fills."""
    if side.fill.all():
        return side.order, side.price, np.cumsum(side.fill, dtype=_I64)
    k = np.flatnonzero(side.fill)
    return side.order[k], side.price[k], np.cumsum(side.fill[k], dtype=_I64)


def _uniform_column(price: int | None, n: int) -> _IntArray:
    """``n`` trades' price column for one uniform price: one value seen ``n`` times (a read-only
    view, no memory per trade)."""
    assert price is not None
    return np.broadcast_to(np.asarray(price, dtype=_I64), (n,))
