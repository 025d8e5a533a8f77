"""Clearing speed, counting all the work: validation, the auction, and the trade objects.

Four kinds of book: *realistic* (households send 1–4 steps each, half sellers and half buyers,
prices between feed-in 80 000 and retail 300 000 µ¤/kWh, 50–2 000 Wh per step), sized by steps;
*single* (one step per order), sized by orders; *wide* (1–16 steps per order: fewer orders with many
steps), and *round* (realistic, but every price a multiple of 1 000 µ¤/kWh: 221 price levels, so
nearly every step ties with others and order ids decide), both sized by steps. Every row names both
the orders and the steps.

Per book it times, in CPU time of this process (``time.process_time``: robust to other jobs on a
shared machine; garbage collection left on, as in a node):

* ``validate``  — :func:`market.orders.validate_book` (the order rules + slot + unique ids);
* ``clear``     — :func:`market.clearing.clear` of the validated book (reuses the columns
  validation built, as ``gridnode clear`` does);
* ``v+c``       — the two together: *clearing including validation*, the issue-16 target;
* ``raw clear`` — ``clear`` of a plain list (what the ledger does: its orders were validated on
  admission), which reads every order itself;
* ``trades``    — building every :class:`~market.clearing.Trade` object (``tuple(result.trades)``,
  what the ledger stores); ``clear`` itself returns columns and builds trades on access.

``warm`` is the best of ``--repeat`` runs on one book; ``cold`` is the median, over ``--cold``
freshly generated books (new objects, never touched), of the first run on each. The ratios divide by
a baseline run in the same process on the same book: ``x np.sort`` = ``v+c`` ÷ numpy's sort of the
steps' int64 price keys (one array, already built: the floor of any sort-based auction), ``x sorted``
= ``v+c`` ÷ Python's ``sorted`` of the (price, order id, step) tuples (the floor in pure Python).

    python benchmarks/clearing.py [--steps 1000,10000,100000,1000000] [--single 10000,100000]
                                  [--wide 100000] [--round 100000]
                                  [--repeat 7] [--cold 3] [--rule pay-as-clear]

An empty list (``--wide ""``) leaves that kind out.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from market.clearing import Rule, clear
from market.orders import Order, OrderLimits, Side, Step, validate_book

FEED_IN, RETAIL = 80_000, 300_000
LIMITS = OrderLimits(price_cap_micro_per_kwh=RETAIL)


def realistic_book(
    steps: int, *, seed: int = 1, max_steps: int = 4, price_grid: int = 1
) -> list[Order]:
    """About ``steps`` steps in orders of 1..``max_steps`` steps (``max_steps=1``: single-step),
    prices rounded down to a multiple of ``price_grid`` (1: any integer; 1 000: many ties)."""
    rng = random.Random(seed)
    orders: list[Order] = []
    n = 0
    while n < steps:
        k = min(rng.randint(1, max_steps), steps - n)
        side = Side.SELL if rng.random() < 0.5 else Side.BUY
        base = rng.randint(FEED_IN, RETAIL)
        prices = [*sorted(rng.randint(FEED_IN, RETAIL) for _ in range(k - 1)), base]
        prices = [p - p % price_grid for p in prices]
        orders.append(
            Order(
                order_id=f"{side.value}-{len(orders):07d}",
                household=f"h{len(orders):07d}",
                side=side,
                slot=1,
                steps=tuple(Step(p, rng.randint(50, 2000)) for p in prices),
            )
        )
        n += k
    return orders


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def best(repeat: int, fn: Callable[[], Any]) -> float:
    return min(cpu(fn)[0] for _ in range(repeat))


def stages(book: Sequence[Order], rule: Rule) -> dict[str, Callable[[], Any]]:
    return {
        "validate": lambda: validate_book(1, book, limits=LIMITS),
        "v+c": lambda: clear(validate_book(1, book, limits=LIMITS), slot=1, rule=rule),
        "raw clear": lambda: clear(book, slot=1, rule=rule),
    }


def measure(book: list[Order], rule: Rule, repeat: int) -> dict[str, float]:
    checked = validate_book(1, book, limits=LIMITS)
    result = clear(checked, slot=1, rule=rule)
    out = {name: best(repeat, fn) for name, fn in stages(book, rule).items()}
    out["clear"] = best(repeat, lambda: clear(checked, slot=1, rule=rule))
    out["trades"] = best(repeat, lambda: tuple(result.trades))
    out["n_trades"] = len(result.trades)
    keys = np.asarray([s.price_micro_per_kwh for o in book for s in o.steps], dtype=np.int64)
    out["np.sort"] = best(repeat, lambda: np.sort(keys))
    tuples = [(s.price_micro_per_kwh, o.order_id, i) for o in book for i, s in enumerate(o.steps)]
    out["sorted"] = best(max(1, repeat // 2), lambda: sorted(tuples))
    return out


def validate_and_clear(book: Sequence[Order], rule: Rule) -> Any:
    return clear(validate_book(1, book, limits=LIMITS), slot=1, rule=rule)


def maker(size: int, max_steps: int, price_grid: int = 1) -> Callable[[int], list[Order]]:
    """A book of about ``size`` steps for a seed."""

    def make(seed: int) -> list[Order]:
        return realistic_book(size, seed=seed, max_steps=max_steps, price_grid=price_grid)

    return make


def cold(make: Callable[[int], list[Order]], rule: Rule, books: int) -> float:
    """Median over fresh books of the first validate + clear + trades on each."""
    times = []
    for seed in range(100, 100 + books):
        book = make(seed)
        t, result = cpu(partial(validate_and_clear, book, rule))
        t2, _ = cpu(partial(tuple, result.trades))
        times.append(t + t2)
    return statistics.median(times)


def row(kind: str, book: list[Order], m: dict[str, float], cold_s: float) -> str:
    steps = sum(len(o.steps) for o in book)
    vc = m["v+c"]
    return (
        f"{kind:>10} {len(book):>8,} {steps:>9,} {m['validate'] * 1e3:>9.1f} {m['clear'] * 1e3:>7.1f} "
        f"{vc * 1e3:>7.1f} {m['raw clear'] * 1e3:>9.1f} {m['trades'] * 1e3:>7.1f} "
        f"{(vc + m['trades']) * 1e3:>8.1f} {cold_s * 1e3:>8.1f} {steps / vc:>11,.0f} "
        f"{vc / m['np.sort']:>9.1f} {vc / m['sorted']:>8.2f} {int(m['n_trades']):>7,}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps", default="1000,10000,100000,1000000", help="realistic books, by steps"
    )
    ap.add_argument("--single", default="10000,100000", help="single-step books, by orders")
    ap.add_argument("--wide", default="100000", help="books of 1-16-step orders, by steps")
    ap.add_argument(
        "--round", default="100000", help="realistic books priced on a 1 000 µ¤ grid, by steps"
    )
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cold", type=int, default=3, help="fresh books for the cold figure")
    ap.add_argument("--rule", choices=[r.value for r in Rule], default=Rule.PAY_AS_CLEAR.value)
    args = ap.parse_args()
    rule = Rule(args.rule)
    print(
        f"# CPU ms of this process (time.process_time), rule {rule.value}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. warm = best of {args.repeat}, "
        f"cold = median of {args.cold} fresh books' first validate+clear+trades."
    )
    print(
        f"{'book':>10} {'orders':>8} {'steps':>9} {'validate':>9} {'clear':>7} {'v+c':>7} "
        f"{'raw clear':>9} {'trades':>7} {'v+c+tr':>8} {'cold all':>8} {'steps/s v+c':>11} "
        f"{'x np.sort':>9} {'x sorted':>8} {'trades#':>7}"
    )
    plans: list[tuple[str, int, Callable[[int], list[Order]]]] = []
    for size in (int(s) for s in args.steps.split(",") if s):
        plans.append(("realistic", size, maker(size, 4)))
    for size in (int(s) for s in args.single.split(",") if s):
        plans.append(("single", size, maker(size, 1)))
    for size in (int(s) for s in args.wide.split(",") if s):
        plans.append(("wide", size, maker(size, 16)))
    for size in (int(s) for s in args.round.split(",") if s):
        plans.append(("round", size, maker(size, 4, 1_000)))
    for kind, size, make in plans:
        cold_s = cold(make, rule, args.cold if size <= 100_000 else 1)
        book = make(1)
        repeat = args.repeat if size <= 100_000 else max(1, args.repeat // 3)
        print(row(kind, book, measure(book, rule, repeat), cold_s), flush=True)


if __name__ == "__main__":
    main()
