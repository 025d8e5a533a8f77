"""Benchmark: latency of the local API's GET endpoints over real HTTP on loopback.

A community of N households (every one with an open order in each of S slots, i.e. N*S orders in
the ledger) on the real in-process node of the API tests; sequential requests from one aiohttp client.
Prints p50/p99 per endpoint. Not a test (no assertion on time): run

    python -m tests.api.bench_api [--households 500] [--slots 4] [--requests 300]

(The lead may move it to ``benchmarks/api.py``.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp

from gridnode.api import make_app, start_api
from market.orders import Side
from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import TOKEN


async def run(households: int, slots: int, requests: int) -> None:
    node = LocalNode(n_members=households)
    t0 = time.perf_counter()
    for slot in range(FIRST_OPEN, FIRST_OPEN + slots):
        for i in range(households - 1):
            side = Side.SELL if i % 2 else Side.BUY
            node.submit(node.other_order(i, side, slot, (80_000 + 200 * i % 220_000, 100 + i)))
    node.commit()
    print(
        f"ledger: {households} households, {sum(len(v) for v in node.app.state.orders.values())} "
        f"open orders (built in {time.perf_counter() - t0:.1f} s)"
    )
    running = await start_api(make_app(node, token=TOKEN), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=running.url) as http:
            for path in (
                "/api/status",
                "/api/orders?mine=1",
                "/api/orders",
                "/api/trades",
                "/api/balance",
                "/",
            ):
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    async with http.get(path) as response:
                        await response.read()
                        assert response.status == 200
                    times.append((time.perf_counter() - start) * 1000)
                q = statistics.quantiles(times, n=100)
                print(
                    f"GET {path:22s} first {times[0]:7.2f} ms  p50 {q[49]:6.2f} ms  "
                    f"p99 {q[98]:6.2f} ms  ({requests} requests)"
                )
    finally:
        await running.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--households", type=int, default=500)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args()
    asyncio.run(run(args.households, args.slots, args.requests))


if __name__ == "__main__":
    main()
