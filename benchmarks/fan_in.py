"""Fan-in: how many members one host (a validator) holds, every one of them dialling in.

A validator holds a connection to every member of its community that bootstraps to it. This starts
one hub and ``--members`` member hosts in one process (real py-libp2p hosts on loopback TCP, the
daemon's own :func:`gridnode.net.host.open_net_host`), has every member dial the hub, then has every
member send the hub one request, and prints how many dials succeeded, how many connections the hub
holds and how many requests it answered.

    python benchmarks/fan_in.py [--members 320] [--max-connections N]

``--max-connections`` sets the hub's ``NetConfig.max_connections`` (default: the daemon's,
``DEFAULT_MAX_CONNECTIONS``). With py-libp2p's own limits (300 connections, of which 250 inbound) the
hub held 250 of 320 and the other 70 members' dials failed in the security handshake.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridnode.core.crypto import KeyPair
from gridnode.net.host import DEFAULT_MAX_CONNECTIONS, NetConfig, NetHost, open_net_host
from market.errors import UsageError


async def fan_in(members: int, max_connections: int) -> dict[str, float]:
    rng = random.Random(3)
    hub_cfg = NetConfig(community="fan-in", max_connections=max_connections)
    cfg = NetConfig(community="fan-in")
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(open_net_host(KeyPair.from_rng(rng), hub_cfg))
        hub.on_request("ping", lambda peer, body: b"pong")
        hosts: list[NetHost] = []
        for i in range(members):
            hosts.append(await stack.enter_async_context(open_net_host(KeyPair.from_rng(rng), cfg)))
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} member hosts started", flush=True)
        dialled = failed = answered = 0

        async def dial(member: NetHost) -> None:
            nonlocal dialled, failed
            try:
                await member.connect(hub.addrs[0])
                dialled += 1
            except Exception:  # counted: what the benchmark measures
                failed += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for member in hosts:
                nursery.start_soon(dial, member)
                await trio.sleep(0.01)  # 100 dials a second, like a community coming up
        dial_s = time.perf_counter() - t0
        await trio.sleep(2)  # a connection dropped after its dial would show now
        held = len(hub.connected_peers())

        async def ask(member: NetHost) -> None:
            nonlocal answered
            with trio.move_on_after(30):
                try:
                    if await member.request(hub.peer_id, "ping", b"") == b"pong":
                        answered += 1
                except Exception:  # counted: a request unanswered
                    pass

        async with trio.open_nursery() as nursery:
            for member in hosts:
                nursery.start_soon(ask, member)
        print("  stopping the hosts", flush=True)
    return {
        "dialled": dialled,
        "failed": failed,
        "held": held,
        "answered": answered,
        "dial_s": dial_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=320, help="member hosts dialling the hub")
    ap.add_argument(
        "--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, help="the hub's limit"
    )
    args = ap.parse_args()
    if args.members < 1:
        ap.error("--members: expected at least 1")
    try:
        NetConfig(community="fan-in", max_connections=args.max_connections)
    except UsageError as exc:
        ap.error(f"--max-connections: {exc}")
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{args.members} members dial one hub (max_connections {args.max_connections})")
    r = trio.run(fan_in, args.members, args.max_connections)
    print(
        f"dials {r['dialled']:.0f} ok / {r['failed']:.0f} failed in {r['dial_s']:.1f} s; "
        f"the hub holds {r['held']:.0f} connections and answered {r['answered']:.0f} of "
        f"{args.members} requests; peak RSS of the process {r['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
