"""Clearing speed: 1k, 10k, 100k and 1M order steps of a realistic book.

Households send 1–4 steps each, half sellers and half buyers, prices between feed-in (80 000 µ¤/kWh)
and retail (300 000 µ¤/kWh), energies of a 15-minute slot (50–2 000 Wh). Prints the best-of-N time per
clearing, steps/s, and the ratio to a baseline run in the same process: sorting the same steps with
Python's ``sorted`` (the floor for any comparison-based auction), so the figure survives a noisy machine.

    python benchmarks/clearing.py [--sizes 1000,10000,100000,1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time

from market.clearing import Rule, clear
from market.orders import Order, Side, Step

FEED_IN, RETAIL = 80_000, 300_000


def realistic_book(steps: int, *, seed: int = 1) -> list[Order]:
    rng = random.Random(seed)
    orders: list[Order] = []
    n = 0
    while n < steps:
        k = min(rng.randint(1, 4), steps - n)
        side = Side.SELL if rng.random() < 0.5 else Side.BUY
        base = rng.randint(FEED_IN, RETAIL)
        prices = [*sorted(rng.randint(FEED_IN, RETAIL) for _ in range(k - 1)), base]
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


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'steps':>9} {'rule':>12} {'ms/clear':>9} {'steps/s':>11} {'trades':>8} {'x sort':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        book = realistic_book(size)
        keys = [(s.price_micro_per_kwh, o.order_id, i) for o in book for i, s in enumerate(o.steps)]
        repeat = max(1, args.repeat if size <= 100_000 else 2)
        baseline = best_of(repeat, lambda keys=keys: sorted(keys))
        for rule in Rule:
            result = clear(book, slot=1, rule=rule)
            t = best_of(repeat, lambda book=book, rule=rule: clear(book, slot=1, rule=rule))
            print(
                f"{size:>9} {rule.value:>12} {t * 1000:>9.1f} {size / t:>11,.0f} {len(result.trades):>8} "
                f"{t / baseline:>7.2f}"
            )


if __name__ == "__main__":
    main()
