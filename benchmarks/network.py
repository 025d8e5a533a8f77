"""Network benchmarks for the libp2p shell (real py-libp2p hosts on loopback TCP).

Prints figures; asserts nothing about speed. Run from the repo root inside the venv:

    python benchmarks/network.py                 # everything (~8 min on 2 cores)
    python benchmarks/network.py streams         # direct streams only
    python benchmarks/network.py gossip --hosts 4 10 --rate 5 20 --topology full
    python benchmarks/network.py procs --hosts 4 10 --rate 5 20 --routers gossipsub
    python benchmarks/network.py capacity --capacity-hosts 100

Except for ``procs``, all hosts of one run live in this one process and one trio loop, so every
figure includes the CPU of *both* ends (and, for gossip, of every host); ``procs`` runs one host
per process, as daemons do, and measures latency with the machine's wall clock.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gridnode.core.crypto import KeyPair
from gridnode.net.host import NetConfig, NetHost, open_net_host, stream_protocol

COMMUNITY = "bench"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def wait_until(cond: Callable[[], bool], timeout_s: float) -> bool:
    with trio.move_on_after(timeout_s):
        while not cond():
            await trio.sleep(0.005)
    return cond()


def keys(n: int, seed: int) -> list[KeyPair]:
    rng = random.Random(seed)
    return [KeyPair.from_rng(rng) for _ in range(n)]


# -- direct streams ------------------------------------------------------------------------------


async def bench_streams(n_requests: int, batch: int) -> None:
    ka, kb = keys(2, 1)
    cfg = NetConfig(community=COMMUNITY, request_timeout_s=30)
    async with open_net_host(ka, cfg) as a, open_net_host(kb, cfg) as b:
        received = 0

        def on_msg(peer: str, body: bytes) -> None:
            nonlocal received
            received += 1

        b.on_request("echo", lambda peer, body: body)
        b.on_message("votes", on_msg)
        peer = await a.connect(b.addrs[0])
        payload = b"x" * 200  # about one signed order
        await a.request(peer, "echo", payload)  # warm up
        key = (peer, stream_protocol(COMMUNITY, "echo"))

        async def timed(n: int, fresh_stream: bool) -> list[float]:
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                await a.request(peer, "echo", payload)
                lat.append(time.perf_counter() - t0)
                if fresh_stream:
                    await a._outbound[key].close()
            return lat

        n_fresh = max(50, n_requests // 10)
        lat = await timed(n_fresh, fresh_stream=True)
        print(
            f"  new stream per request : {n_fresh / sum(lat):8.0f} req/s   "
            f"p50 {ms(pct(lat, 0.5))}  p99 {ms(pct(lat, 0.99))}"
        )
        lat = await timed(n_requests, fresh_stream=False)
        print(
            f"  persistent, sequential : {n_requests / sum(lat):8.0f} req/s   "
            f"p50 {ms(pct(lat, 0.5))}  p99 {ms(pct(lat, 0.99))}"
        )

        # pipelined: `batch` concurrent requesters share the persistent stream
        lat = []

        async def one() -> None:
            t0 = time.perf_counter()
            await a.request(peer, "echo", payload)
            lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(n_requests // batch):
            async with trio.open_nursery() as nursery:
                for _ in range(batch):
                    nursery.start_soon(one)
        took = time.perf_counter() - t0
        print(
            f"  persistent, {batch:3d} in flight: {len(lat) / took:8.0f} req/s   "
            f"p50 {ms(pct(lat, 0.5))}  p99 {ms(pct(lat, 0.99))}"
        )

        # batched one-way messages: `batch` frames per write
        n_msgs = n_requests * batch
        t0 = time.perf_counter()
        for _ in range(n_msgs // batch):
            await a.send(peer, "votes", [payload] * batch)
            await trio.sleep(0)
        await wait_until(lambda: received >= n_msgs // batch * batch, 120)
        took = time.perf_counter() - t0
        print(f"  one-way, {batch} per write  : {received / took:8.0f} msgs/s ({received} msgs)")


# -- gossip ---------------------------------------------------------------------------------------


async def bench_gossip(
    n_hosts: int, router: str, n_messages: int, rate: float, topology: str
) -> None:
    cfg = NetConfig(community=COMMUNITY, router=router)  # type: ignore[arg-type]
    ks = keys(n_hosts, 2)
    async with AsyncExitStack() as stack:
        hosts: list[NetHost] = [await stack.enter_async_context(open_net_host(k, cfg)) for k in ks]
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        seen: list[set[int]] = [set() for _ in range(n_hosts)]
        duplicates = 0

        def handler_for(i: int) -> Callable[[str, bytes], None]:
            def handler(origin: str, data: bytes) -> None:
                nonlocal duplicates
                seq = int.from_bytes(data[:4], "big")
                if seq % n_hosts == i:
                    return  # libp2p hands a publisher its own message too
                if seq in seen[i]:
                    duplicates += 1
                    return
                seen[i].add(seq)
                latencies.append(time.perf_counter() - sent_at[seq])

            return handler

        for i, h in enumerate(hosts):
            await h.subscribe("orders", handler_for(i))
        # "hub-ring": every host dials host 0 and the next one; "full": every pair. In parallel.
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i, h in enumerate(hosts):
                targets = (
                    hosts[i + 1 :]
                    if topology == "full"
                    else [x for x in {hosts[0], hosts[(i + 1) % n_hosts]} if x is not h]
                )
                for other in targets:
                    nursery.start_soon(h.connect, other.addrs[0])
        topic = f"/gridnode/{COMMUNITY}/orders/1"
        await wait_until(lambda: all(h.gossip_peers(topic) for h in hosts), 20)
        await trio.sleep(2.5)  # let a few heartbeats build the mesh
        connect_s = time.perf_counter() - t0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        interval = 1.0 / rate
        for seq in range(n_messages):
            publisher = hosts[seq % n_hosts]
            sent_at[seq] = time.perf_counter()
            await publisher.publish("orders", seq.to_bytes(4, "big") + b"o" * 200)
            await trio.sleep(max(0.0, t0 + (seq + 1) * interval - time.perf_counter()))
        expected = n_messages * (n_hosts - 1)
        await wait_until(lambda: sum(len(x) for x in seen) >= expected, 30)
        cpu = time.process_time() - cpu0
        delivered = sum(len(x) for x in seen) / expected
        worst = min(
            len(x) / sum(1 for q in range(n_messages) if q % n_hosts != i)
            for i, x in enumerate(seen)
        )
        print(
            f"  {router:9s} {topology:8s} {n_hosts:3d} hosts, {rate:5.1f} msg/s: delivered "
            f"{delivered * 100:6.2f} % (worst host {worst * 100:.1f} %, dups {duplicates})  "
            f"latency p50 {ms(pct(latencies, 0.5))} "
            f"p99 {ms(pct(latencies, 0.99))}  CPU {cpu / n_messages * 1000:.1f} ms/msg "
            f"(all hosts)  setup {connect_s:.1f} s"
        )


# -- capacity ------------------------------------------------------------------------------------


async def bench_capacity(max_hosts: int) -> None:
    ks = keys(max_hosts, 3)
    cfg = NetConfig(community=COMMUNITY)
    base_rss = rss_mb()
    print(f"  process RSS before any host (python + libp2p imported): {base_rss:.0f} MB")
    base_threads = threading.active_count()
    base_fds = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else 0
    async with AsyncExitStack() as stack:
        hosts: list[NetHost] = []
        steps = sorted({s for s in (10, 25, 50, 100, 200, max_hosts) if s <= max_hosts})
        t_start = time.perf_counter()
        for target in steps:
            while len(hosts) < target:
                h = await stack.enter_async_context(open_net_host(ks[len(hosts)], cfg))
                await h.subscribe("orders", lambda o, d: None)
                if hosts:
                    h.add_peer(hosts[0].addrs[0])  # everyone keeps a connection to a hub
                hosts.append(h)
            hub = hosts[0]
            await wait_until(lambda n=target, hub=hub: len(hub.connected_peers()) >= n - 1, 60)
            cpu0, w0 = time.process_time(), time.perf_counter()
            await trio.sleep(3)
            idle = (time.process_time() - cpu0) / (time.perf_counter() - w0)
            fds = len(os.listdir("/proc/self/fd")) - base_fds if base_fds else -1
            print(
                f"  {target:4d} hosts: RSS +{rss_mb() - base_rss:7.1f} MB "
                f"({(rss_mb() - base_rss) / target:.2f} MB/host)  threads "
                f"+{threading.active_count() - base_threads}  fds +{fds}  idle CPU "
                f"{idle * 100:5.1f} % of a core  hub peers {len(hub.connected_peers())}  "
                f"elapsed {time.perf_counter() - t_start:.1f} s"
            )
        t0 = time.perf_counter()
    print(f"  shutdown of {len(hosts)} hosts: {time.perf_counter() - t0:.1f} s")


# -- gossip across processes (one daemon-like host per process) ---------------------------------


async def _worker(index: int, n_hosts: int, router: str, n_messages: int, rate: float) -> None:
    """One host in its own process; talks to the parent over stdin/stdout JSON lines."""

    async def read_line() -> dict:
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        return json.loads(line)

    def say(**msg: object) -> None:
        print(json.dumps(msg), flush=True)

    cfg = NetConfig(community=COMMUNITY, router=router)  # type: ignore[arg-type]
    key = keys(n_hosts, 4)[index]
    received: dict[int, float] = {}
    async with open_net_host(key, cfg) as host:

        def on_msg(origin: str, data: bytes) -> None:
            seq = int.from_bytes(data[:4], "big")
            sent = int.from_bytes(data[4:12], "big") / 1e6
            if seq % n_hosts != index and seq not in received:
                received[seq] = time.time() - sent

        await host.subscribe("orders", on_msg)
        say(addr=host.addrs[0])
        addrs = (await read_line())["addrs"]
        for addr in addrs[index + 1 :]:  # each pair dials once
            host.add_peer(addr)
        topic = f"/gridnode/{COMMUNITY}/orders/1"
        await wait_until(lambda: len(host.gossip_peers(topic)) >= n_hosts - 1, 60)
        say(ready=len(host.gossip_peers(topic)))
        start = (await read_line())["start"]
        await trio.sleep(max(0.0, start - time.time()))
        cpu0 = time.process_time()
        for seq in range(index, n_messages, n_hosts):
            await trio.sleep(max(0.0, start + seq / rate - time.time()))
            stamp = int(time.time() * 1e6).to_bytes(8, "big")
            await host.publish("orders", seq.to_bytes(4, "big") + stamp + b"o" * 200)
        mine = sum(1 for q in range(n_messages) if q % n_hosts != index)
        await wait_until(lambda: len(received) >= mine, 30)
        cpu = time.process_time() - cpu0
        say(received=len(received), expected=mine, lat=list(received.values()), cpu=cpu)
        await read_line()  # wait for "stop" so nobody disconnects before all are done


def bench_processes(n_hosts: int, router: str, n_messages: int, rate: float) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "_worker",
                str(i),
                str(n_hosts),
                router,
                str(n_messages),
                str(rate),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(n_hosts)
    ]
    try:

        def send(p: subprocess.Popen[str], **msg: object) -> None:
            assert p.stdin is not None
            p.stdin.write(json.dumps(msg) + "\n")
            p.stdin.flush()

        def recv(p: subprocess.Popen[str]) -> dict:
            assert p.stdout is not None
            return json.loads(p.stdout.readline())

        addrs = [recv(p)["addr"] for p in procs]
        for p in procs:
            send(p, addrs=addrs)
        for p in procs:
            recv(p)
        start = time.time() + 1.0
        for p in procs:
            send(p, start=start)
        results = [recv(p) for p in procs]
        for p in procs:
            send(p, stop=True)
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    got = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    cpu = sum(r["cpu"] for r in results)
    worst = min(r["received"] / r["expected"] for r in results)
    print(
        f"  {router:9s} {n_hosts:3d} processes, {rate:5.1f} msg/s: delivered "
        f"{got / expected * 100:6.2f} % (worst host {worst * 100:.1f} %)  latency p50 "
        f"{ms(pct(lat, 0.5))} p99 {ms(pct(lat, 0.99))}  CPU {cpu / n_messages * 1000:.1f} ms/msg "
        f"(sum over hosts, {cpu / n_messages / n_hosts * 1000:.1f} per host)"
    )


async def _sync(fn: Callable[..., None], *args: object) -> None:
    fn(*args)


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        index, n_hosts, router, n_messages, rate = sys.argv[2:7]
        trio.run(_worker, int(index), int(n_hosts), router, int(n_messages), float(rate))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what",
        nargs="*",
        default=["streams", "gossip", "procs", "capacity"],
        help="which: streams, gossip (in one process), procs (one host per process), capacity",
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--hosts", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--routers", nargs="+", default=["gossipsub", "floodsub"])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rate", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--topology", nargs="+", default=["full", "hub-ring"])
    parser.add_argument("--capacity-hosts", type=int, default=100)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, one process, loopback TCP")
    runs: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if "streams" in args.what:
        runs.append(
            ("direct streams (1 host pair)", lambda: bench_streams(args.requests, args.batch))
        )
    if "gossip" in args.what:
        combos = [
            (n, router, rate, topo)
            for n in args.hosts
            for topo in args.topology
            for rate in args.rate
            for router in args.routers
        ]
        header = "gossip (publishers rotate; latency = publish -> delivery, same process clock)"
        for k, (n, router, rate, topo) in enumerate(combos):
            runs.append(
                (
                    header if k == 0 else "",
                    lambda n=n, router=router, rate=rate, topo=topo: bench_gossip(
                        n, router, args.messages, rate, topo
                    ),
                )
            )
    if "procs" in args.what:
        for k, (n, router, rate) in enumerate(
            (n, router, rate) for n in args.hosts for rate in args.rate for router in args.routers
        ):
            title = "gossip, one host per process, full mesh" if k == 0 else ""
            runs.append(
                (
                    title,
                    lambda n=n, router=router, rate=rate: _sync(
                        bench_processes, n, router, args.messages, rate
                    ),
                )
            )
    if "capacity" in args.what:
        runs.append(("hosts per process", lambda: bench_capacity(args.capacity_hosts)))
    for title, fn in runs:
        if title:
            print(title)
        trio.run(fn)


if __name__ == "__main__":
    main()
