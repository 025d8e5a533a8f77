"""Real daemons on loopback: committed signed orders per second and commit latency.

Starts 4 validators (`gridnode run` processes, real libp2p, real SQLite, real-time clock) and one
client libp2p host in this process that submits orders signed by 300 extra member households over the
acknowledged submit protocol (`/gridnode/<community>/submit/1.0.0`), as households' daemons do.

* latency: single orders, one at a time, from submit to visible as committed on validator 0's API
  (`/api/status` open_orders; polled every 10 ms), p50/p99;
* throughput: waves of N orders submitted concurrently; time until all are committed → orders/s.

    python benchmarks/daemons.py [--singles 30] [--waves 100,400,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import sign_order
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity


def open_orders(lc: LocalCommunity) -> int:
    return int(lc.api(0, "/api/status")["open_orders"])


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    members = [KeyPair.from_rng(rng) for _ in range(300)]
    root = Path(tempfile.mkdtemp(prefix="gridnode-bench-"))
    lc = LocalCommunity(
        root,
        validators=4,
        full_nodes=0,
        speedup=1.0,
        extra_members=tuple(k.public_hex for k in members),
    )
    lc.create()
    assert lc.genesis is not None
    genesis = lc.genesis
    lc.start()
    nonces = {k.public_hex: 0 for k in members}
    counter = [0]

    def next_order() -> bytes:
        counter[0] += 1
        key = members[counter[0] % len(members)]
        nonces[key.public_hex] += 1
        n = nonces[key.public_hex]
        slot = first_open + 1 + n  # one open order per household and slot: use a new slot each time
        side = Side.SELL if counter[0] % 2 else Side.BUY
        order = Order(
            f"b{counter[0]}",
            key.public_hex,
            side,
            slot,
            (Step(rng.randint(80_000, 300_000), rng.randint(1, 2000)),),
            n,
        )
        return sign_order(key, genesis, order).encode()

    try:
        lc.wait_ready(120)
        lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 60)
        first_open = lc.api(0, "/api/status")["first_open_slot"]
        peers = [peer_id_of(h.key.public_key) for h in lc.households]
        async with TrioBridge() as bridge:
            client: NetHost = await bridge.enter(
                lambda: open_net_host(
                    KeyPair.from_rng(rng), NetConfig(community=genesis.community_id)
                )
            )
            for h in lc.households:
                await bridge.call(client.connect, h.multiaddr())
            # latency of single orders
            lat = []
            for i in range(args.singles):
                before = open_orders(lc)
                body = next_order()
                t0 = time.perf_counter()
                await bridge.call(client.request, peers[i % len(peers)], "submit", body)
                while open_orders(lc) <= before:
                    await asyncio.sleep(0.01)
                lat.append(time.perf_counter() - t0)
            lat.sort()
            print(
                f"single orders: n={len(lat)} commit latency p50={1000 * statistics.median(lat):.0f} ms "
                f"p99={1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.0f} ms max={1000 * lat[-1]:.0f} ms"
            )
            for wave in (int(w) for w in args.waves.split(",")):
                before = open_orders(lc)
                bodies = [next_order() for _ in range(wave)]
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        bridge.call(client.request, peers[i % len(peers)], "submit", b)
                        for i, b in enumerate(bodies)
                    )
                )
                acked = time.perf_counter() - t0
                while open_orders(lc) < before + wave:
                    await asyncio.sleep(0.02)
                done = time.perf_counter() - t0
                print(
                    f"wave of {wave}: all acknowledged in {acked:.2f} s, all committed in {done:.2f} s "
                    f"-> {wave / done:.0f} committed orders/s"
                )
    finally:
        lc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--singles", type=int, default=30)
    ap.add_argument("--waves", default="100,400,1000")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
