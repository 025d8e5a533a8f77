"""Orders: a household's price–quantity curve for one delivery slot, and the rules they must obey.

Rules of this module:

* An :class:`Order` is immutable: order id, household id, side, slot, nonce and one or more
  :class:`Step` (limit price in µ¤/kWh, energy in Wh). A sell step offers its energy at that price or
  more; a buy step bids for its energy at that price or less. Steps are independent: a curve
  "800 Wh at ≥ 120 000, 400 Wh more at ≥ 180 000" is two steps.
* :func:`validate_order` checks one order against :class:`OrderLimits` and, given a slot clock and
  ``now``, that its slot is still open and not further ahead than ``limits.max_ahead_slots``
  (:meth:`~market.slots.SlotClock.window_error`); :func:`validate_book` also checks that every order
  is for the book's slot and that ids are unique. Slots and nonces are at most
  :data:`~market.units.MAX_WIRE_INT` (they must encode as signed 64-bit integers). Every rejection
  raises :class:`~market.errors.InvalidInput` with an :class:`~market.errors.OrderReason`, the
  order id and the field; the order reasons are listed in :data:`REJECTION_REASONS`.
* Nothing here mutates; a valid order stays valid (validation depends only on the order, the limits
  and ``now``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import reduce
from itertools import repeat
from operator import iconcat, is_
from typing import TYPE_CHECKING, Any, Final, overload

import numpy as np  # lazy in a daemon (gridnode.lazyimports): it runs at the first book's columns

if TYPE_CHECKING:
    import numpy.typing as npt

from market.errors import InvalidInput, OrderReason
from market.slots import SlotClock
from market.units import MAX_ENERGY_WH, MAX_PRICE_MICRO_PER_KWH, MAX_WIRE_INT

__all__ = [
    "REJECTION_REASONS",
    "BookColumns",
    "Order",
    "OrderLimits",
    "Side",
    "Step",
    "ValidBook",
    "book_columns",
    "validate_book",
    "validate_order",
]


class Side(Enum):
    """Which way an order trades energy."""

    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an order curve: ``energy_wh`` at limit ``price_micro_per_kwh``."""

    price_micro_per_kwh: int
    energy_wh: int


@dataclass(frozen=True, slots=True)
class Order:
    """A household's order for one slot. ``nonce`` is the household's sequence number for replays."""

    order_id: str
    household: str
    side: Side
    slot: int
    steps: tuple[Step, ...]
    nonce: int = 0

    @property
    def energy_wh(self) -> int:
        """Total energy over all steps."""
        return sum(s.energy_wh for s in self.steps)


@dataclass(frozen=True, slots=True)
class OrderLimits:
    """Bounds every order must respect. ``price_cap_micro_per_kwh`` is usually the retail price;
    ``max_ahead_slots`` (checked only when a clock and ``now`` are given) bounds how far beyond the
    first open slot an order may be placed (``None``: no bound)."""

    price_cap_micro_per_kwh: int = 1_000_000
    max_steps: int = 16
    max_energy_wh: int = 10**9
    max_id_chars: int = 128
    max_ahead_slots: int | None = None


#: the reasons :func:`validate_order` and :func:`validate_book` refuse an order with
REJECTION_REASONS: Final = (
    OrderReason.EMPTY_ID,
    OrderReason.ID_TOO_LONG,
    OrderReason.EMPTY_HOUSEHOLD,
    OrderReason.BAD_SIDE,
    OrderReason.BAD_SLOT,
    OrderReason.BAD_NONCE,
    OrderReason.NO_STEPS,
    OrderReason.TOO_MANY_STEPS,
    OrderReason.NON_POSITIVE_ENERGY,
    OrderReason.ENERGY_TOO_LARGE,
    OrderReason.PRICE_OUT_OF_RANGE,
    OrderReason.SLOT_CLOSED,
    OrderReason.SLOT_TOO_FAR_AHEAD,
    OrderReason.WRONG_SLOT,
    OrderReason.DUPLICATE_ID,
)


def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def validate_order(
    order: Order,
    *,
    limits: OrderLimits = OrderLimits(),
    clock: SlotClock | None = None,
    now: int | None = None,
) -> Order:
    """Return ``order`` if it obeys every rule, else raise :class:`InvalidInput`.

    With ``clock`` and ``now`` the order's slot must also still be open at ``now``.
    """

    def reject(reason: OrderReason, field: str, expected: str, found: object) -> InvalidInput:
        subject = f"order {order.order_id!r}" if order.order_id else "order"
        return InvalidInput(
            reason=reason, subject=subject, field=field, expected=expected, found=repr(found)
        )

    if not isinstance(order.order_id, str) or not order.order_id:
        raise reject(OrderReason.EMPTY_ID, "id", "a non-empty string", order.order_id)
    if len(order.order_id) > limits.max_id_chars:
        raise reject(
            OrderReason.ID_TOO_LONG,
            "id",
            f"at most {limits.max_id_chars} chars",
            len(order.order_id),
        )
    if not isinstance(order.household, str) or not order.household:
        raise reject(
            OrderReason.EMPTY_HOUSEHOLD, "household", "a non-empty string", order.household
        )
    if not isinstance(order.side, Side):
        raise reject(OrderReason.BAD_SIDE, "side", "'buy' or 'sell'", order.side)
    if not _is_int(order.slot) or not 0 <= order.slot <= MAX_WIRE_INT:
        raise reject(OrderReason.BAD_SLOT, "slot", f"an integer in [0, {MAX_WIRE_INT}]", order.slot)
    if not _is_int(order.nonce) or not 0 <= order.nonce <= MAX_WIRE_INT:
        raise reject(
            OrderReason.BAD_NONCE, "nonce", f"an integer in [0, {MAX_WIRE_INT}]", order.nonce
        )
    if not order.steps:
        raise reject(OrderReason.NO_STEPS, "steps", "at least one step", 0)
    if len(order.steps) > limits.max_steps:
        raise reject(
            OrderReason.TOO_MANY_STEPS, "steps", f"at most {limits.max_steps}", len(order.steps)
        )
    cap = min(limits.price_cap_micro_per_kwh, MAX_PRICE_MICRO_PER_KWH)
    max_energy = min(limits.max_energy_wh, MAX_ENERGY_WH)
    for i, step in enumerate(order.steps):
        energy, price = step.energy_wh, step.price_micro_per_kwh
        plain = type(energy) is int and type(price) is int
        if plain and 0 < energy <= max_energy and 0 <= price <= cap:
            continue  # a valid step of plain ints: the checks below, in one
        if not _is_int(step.energy_wh) or step.energy_wh <= 0:
            raise reject(
                OrderReason.NON_POSITIVE_ENERGY, f"steps[{i}].energy_wh", "> 0", step.energy_wh
            )
        if step.energy_wh > max_energy:
            raise reject(
                OrderReason.ENERGY_TOO_LARGE,
                f"steps[{i}].energy_wh",
                f"<= {max_energy}",
                step.energy_wh,
            )
        price = step.price_micro_per_kwh
        if not _is_int(price) or not 0 <= price <= cap:
            raise reject(
                OrderReason.PRICE_OUT_OF_RANGE, f"steps[{i}].price", f"in [0, {cap}]", price
            )
    if clock is not None and now is not None:
        why = clock.window_error(order.slot, now, max_ahead_slots=limits.max_ahead_slots)
        if why is not None:
            first = clock.first_open_slot(now)
            ahead = limits.max_ahead_slots
            window = f">= {first}" if ahead is None else f"in {first}..{first + ahead}"
            raise reject(why, "slot", f"a slot open at {now} ({window})", order.slot)
    return order


def validate_book(
    slot: int,
    orders: Iterable[Order],
    *,
    limits: OrderLimits = OrderLimits(),
) -> Sequence[Order]:
    """Validate every order of one slot's book: each order's rules, its slot, unique ids."""
    seen: set[str] = set()
    book = tuple(orders)  # ValidBook keeps this tuple (no second copy)
    columns = _surely_valid(slot, book, limits)
    if columns is not None:
        return ValidBook(book, slot=slot, columns=columns)
    for order in book:
        validate_order(order, limits=limits)
        if order.slot != slot:
            raise InvalidInput(
                reason=OrderReason.WRONG_SLOT,
                subject=f"order {order.order_id!r}",
                field="slot",
                expected=str(slot),
                found=str(order.slot),
            )
        if order.order_id in seen:
            raise InvalidInput(
                reason=OrderReason.DUPLICATE_ID,
                subject=f"order {order.order_id!r}",
                field="id",
                expected="an id used once per book",
                found="a second order with this id",
            )
        seen.add(order.order_id)
    return ValidBook(book, slot=slot, columns=None)


@dataclass(frozen=True, slots=True, eq=False)
class BookColumns:
    """A book's orders as columns, in input order: what the bulk check and clearing read.

    Per order: ``order_ids``, ``households``, ``is_buy``, ``step_counts`` (one byte each when every
    order has fewer than 256 steps, else intp); per step (the orders' steps one after another):
    ``price_micro_per_kwh`` and ``energy_wh`` as int64.
    """

    order_ids: list[str]
    households: list[str]
    is_buy: npt.NDArray[np.bool_]
    step_counts: npt.NDArray[np.integer[Any]]
    price_micro_per_kwh: npt.NDArray[np.int64]
    energy_wh: npt.NDArray[np.int64]


def book_columns(orders: Sequence[Order]) -> BookColumns:
    """The columns of ``orders`` (no rule checked; numpy's ``OverflowError`` past int64), read
    :data:`_CHUNK` orders at a time like the bulk check (each chunk stays in the CPU's cache)."""
    ids: list[str] = []
    homes: list[str] = []
    is_buy: list[bytes] = []
    counts: list[npt.NDArray[np.integer[Any]]] = []
    prices: list[npt.NDArray[np.int64]] = []
    energies: list[npt.NDArray[np.int64]] = []
    for start in range(0, len(orders), _CHUNK):
        part = orders[start : start + _CHUNK]
        ids += [o.order_id for o in part]
        homes += [o.household for o in part]
        is_buy.append(bytes(map(is_, [o.side for o in part], repeat(Side.BUY))))
        curves = [o.steps for o in part]
        counts.append(_lengths(curves))
        steps: list[Step] = reduce(iconcat, curves, [])
        prices.append(np.asarray([s.price_micro_per_kwh for s in steps], dtype=np.int64))
        energies.append(np.asarray([s.energy_wh for s in steps], dtype=np.int64))
    return BookColumns(
        order_ids=ids,
        households=homes,
        is_buy=np.frombuffer(b"".join(is_buy), dtype=bool),
        # uint8, or intp if a chunk has a curve of 256 steps or more
        step_counts=np.concatenate(counts) if counts else np.zeros(0, dtype=np.uint8),
        price_micro_per_kwh=_joined(prices, "int64"),
        energy_wh=_joined(energies, "int64"),
    )


def _joined(arrays: Sequence[npt.NDArray[Any]], dtype: str) -> npt.NDArray[Any]:
    """The chunks' arrays one after another, as ``dtype`` (a single chunk of that type as it
    is: most books are small)."""
    if len(arrays) == 1 and arrays[0].dtype == dtype:
        return arrays[0]
    return np.concatenate(arrays, dtype=dtype) if arrays else np.zeros(0, dtype=dtype)


class ValidBook(Sequence[Order]):
    """What :func:`validate_book` returns: the book's orders (immutable), the slot they were
    checked for, and their :class:`BookColumns` when the bulk check built them, which
    :func:`market.clearing.clear` reuses instead of reading every order again.

    Equal to any sequence of the same orders (a list, a tuple, another book).
    """

    __slots__ = ("_orders", "columns", "slot")

    def __init__(self, orders: Sequence[Order], *, slot: int, columns: BookColumns | None) -> None:
        self._orders = tuple(orders)
        self.slot = slot
        self.columns = columns

    def __len__(self) -> int:
        return len(self._orders)

    @overload
    def __getitem__(self, index: int) -> Order: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Order, ...]: ...
    def __getitem__(self, index: int | slice) -> Order | tuple[Order, ...]:
        return self._orders[index]

    def __iter__(self) -> Iterator[Order]:
        return iter(self._orders)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return self._orders == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ValidBook(slot={self.slot}, orders={list(self._orders)!r})"


#: slots and nonces up to this are accepted by the bulk check; larger ones go through the per-order
#: rules (which decide whether they are valid)
_BULK_INT_LIMIT: Final = 2**62


#: orders the bulk check reads per chunk: small enough that a chunk's objects stay in the CPU's
#: cache across the dozen passes over them (1.4-1.7x faster than passes over the whole book)
_CHUNK: Final = 2048


def _surely_valid(slot: int, book: Sequence[Order], limits: OrderLimits) -> BookColumns | None:
    """``book``'s columns if every order certainly passes :func:`validate_book` for ``slot``.

    The fast path of :func:`validate_book`: the same rules checked column by column, ≈ 5x faster
    than order by order. Each field is read into a list once and every check on it is one C-level
    pass over that list (:func:`_only` for the exact type, ``set`` for unique ids, lengths as
    :func:`_bytes` checked by :func:`_within`, ``all``, ``list.count``, ``min``/``max``, numpy for
    energies and prices). The book's objects are scattered in memory, so a pass costs what reading
    them from memory costs; the book is therefore read in chunks of :data:`_CHUNK` orders, all
    passes over one chunk before the next.

    It is a *sufficient* check: columns only for books every per-order rule accepts. Anything it
    cannot confirm — a rule broken, an unusual type (a ``str`` or ``int`` subclass, steps in a
    list), a slot or nonce above :data:`_BULK_INT_LIMIT` — answers ``None``, and the per-order
    rules run and raise the refusal with its reason. ``tests/market/test_fast_paths.py`` holds the
    two together.
    """
    if not book:
        return book_columns(())
    if type(slot) is not int or not 0 <= slot < _BULK_INT_LIMIT:
        return None
    ids: list[str] = []
    homes: list[str] = []
    unique: set[str] = set()
    is_buy: list[bytes] = []
    counts: list[bytes] = []
    prices: list[npt.NDArray[np.integer[Any]]] = []
    energies: list[npt.NDArray[np.integer[Any]]] = []
    narrow = len(book) > _CHUNK  # chunks kept until joined: as int32 where they fit
    for start in range(0, len(book), _CHUNK):
        part = _surely_valid_part(book[start : start + _CHUNK], slot, limits)
        if part is None:
            return None
        unique.update(part.ids)
        ids += part.ids
        if len(unique) != len(ids):  # a repeated id
            return None
        homes += part.homes
        is_buy.append(part.is_buy)
        counts.append(part.counts)
        prices.append(_narrowed(part.price) if narrow else part.price)
        energies.append(_narrowed(part.energy) if narrow else part.energy)
    del unique  # ~50 bytes an id: gone before the step columns are joined (a lower peak)
    return BookColumns(
        order_ids=ids,
        households=homes,
        is_buy=np.frombuffer(b"".join(is_buy), dtype=bool),
        step_counts=np.frombuffer(b"".join(counts), dtype=np.uint8),
        price_micro_per_kwh=_joined(prices, "int64"),
        energy_wh=_joined(energies, "int64"),
    )


def _narrowed(values: npt.NDArray[np.int64]) -> npt.NDArray[np.integer[Any]]:
    """``values`` (non-negative, checked) as int32 if they fit, else as they are: half the
    memory for a chunk waiting to be joined."""
    return values.astype(np.int32) if int(values.max()) < 2**31 else values


@dataclass(frozen=True, slots=True)
class _Part:
    """The columns of one chunk of a book that passed the bulk check."""

    ids: list[str]
    homes: list[str]
    is_buy: bytes
    counts: bytes
    price: npt.NDArray[np.int64]
    energy: npt.NDArray[np.int64]


def _surely_valid_part(part: Sequence[Order], slot: int, limits: OrderLimits) -> _Part | None:
    """One chunk's columns if each of its orders certainly passes the per-order rules and is for
    ``slot`` (:func:`_surely_valid` checks the ids across chunks)."""
    n = len(part)
    if not _only(part, Order):
        return None
    ids = [o.order_id for o in part]
    if not _only(ids, str):
        return None
    lengths = _bytes(map(len, ids))
    if lengths is None or not _within(lengths, 1, limits.max_id_chars):  # none empty
        return None
    homes = [o.household for o in part]
    if not _only(homes, str) or not all(homes):  # all exact str: all() is "none empty"
        return None
    sides = [o.side for o in part]
    if not _only(sides, Side):  # an Enum with members has no subclasses: BUY or SELL
        return None
    slots = [o.slot for o in part]
    if not _only(slots, int) or slots.count(slot) != n:
        return None
    nonces = [o.nonce for o in part]  # exact ints (checked first): min and max compare exactly
    if not _only(nonces, int) or min(nonces) < 0 or max(nonces) >= _BULK_INT_LIMIT:
        return None
    curves = [o.steps for o in part]
    if not _only(curves, tuple):
        return None
    counts = _bytes(map(len, curves))
    if counts is None or not _within(counts, 1, limits.max_steps):
        return None
    # single-step orders: unpacking each is faster than joining; else list += tuple, which
    # copies the tuple's items (no iterator per curve, as chain makes)
    steps: list[Step] = (
        [step for (step,) in curves] if counts.count(1) == n else reduce(iconcat, curves, [])
    )
    if not _only(steps, Step):
        return None
    energies = [s.energy_wh for s in steps]
    prices = [s.price_micro_per_kwh for s in steps]
    if not _only(energies, int) or not _only(prices, int):
        return None
    energy, price = _int64(energies), _int64(prices)
    if energy is None or price is None:  # beyond int64: far beyond every bound
        return None
    if int(energy.min()) <= 0 or int(energy.max()) > min(limits.max_energy_wh, MAX_ENERGY_WH):
        return None
    if int(price.min()) < 0:
        return None
    if int(price.max()) > min(limits.price_cap_micro_per_kwh, MAX_PRICE_MICRO_PER_KWH):
        return None
    return _Part(
        ids=ids,
        homes=homes,
        is_buy=bytes(map(is_, sides, repeat(Side.BUY))),
        counts=counts,
        price=price,
        energy=energy,
    )


def _only(values: Sequence[object], kind: type) -> bool:
    """Whether every item of ``values`` is of exactly the type ``kind`` (no subclass).

    One C pass building the list of types and one counting ``kind`` in it (``list.count``: the
    identity test first), ≈ 1.4x faster than ``set(map(type, values)) == {kind}``. Like that
    set, it trusts ``==`` between type objects, which only a metaclass that overrides ``__eq__``
    can bend.
    """
    return list(map(type, values)).count(kind) == len(values)


def _int64(values: list[int]) -> npt.NDArray[np.int64] | None:
    """``values`` (exact ints) as an int64 array, or ``None`` if one is beyond int64."""
    try:
        return np.fromiter(values, dtype=np.int64, count=len(values))
    except OverflowError:
        return None


def _bytes(values: Iterable[int]) -> bytes | None:
    """``values`` as bytes (built in C), or ``None`` if one is outside 0..255."""
    try:
        return bytes(values)
    except ValueError:
        return None


def _within(small: bytes, low: int, high: int) -> bool:
    """Whether every byte of ``small`` is in ``low..high`` (one C pass: delete those, see what
    is left)."""
    return not small.translate(None, bytes(range(max(low, 0), min(high, 255) + 1)))


def _lengths(curves: list[tuple[Step, ...]]) -> npt.NDArray[np.integer[Any]]:
    """The lengths of ``curves``: one byte each (built in C), or intp if a curve has 256 steps
    or more."""
    try:
        return np.frombuffer(bytes(map(len, curves)), dtype=np.uint8)
    except ValueError:
        return np.fromiter(map(len, curves), dtype=np.intp, count=len(curves))
