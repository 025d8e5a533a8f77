"""Real daemons on loopback: offered vs committed orders per second, commit latency, and the bound.

Starts 4 validators (``gridnode run`` processes: real libp2p, real SQLite, real-time clock, 15-minute
slots) and one client libp2p host in this process that submits orders signed by 300 extra member
households over the acknowledged submit protocols, as households' daemons do.

* ``singles`` — one order at a time, unloaded: submit → visible as committed on validator 0's API.
* ``offered R/s`` — open loop: every 100 ms the client signs and sends the orders due at ``R`` per
  second for ``--seconds``, without waiting for answers; then it waits (up to ``--drain`` s) for the
  rest to commit. ``--mode single`` sends one request per order (as separate households do; the
  client's own libp2p CPU may then bound the offered rate: its CPU is printed); ``--mode batch``
  sends each tick's orders as one ``submit-batch`` request per validator (fewer, larger messages
  than real households would send — say so when quoting it).

Every order's commit time is exact: after the runs the blocks are read from validator 0's store
(order id → height) and each height's commit time is when validator 0's API first showed it
(polled every 50 ms). Printed per run: the offered (sent) rate; the committed rate from the first
submit to the last commit (what the committee sustained, backlog included) and while sending
(orders committed from 2 s after the start to the end of sending, per second); latency p50/p99
(submit → commit); blocks (count, mean interval, mean and max orders per block vs the block limit,
how many were decided only after round 0, i.e. after a timeout); each daemon's CPU and its time
runnable but waiting for a CPU (``/proc/<pid>/task/*/schedstat``: what other load on the machine
takes), as shares of the run; CPU milliseconds per committed order per daemon and for the client,
and the rate this machine's cores could carry at that cost if nothing else ran (the figure that
survives a shared, loaded machine); the validators' answers — accepted, refused by reason (``full``:
back-pressure), unanswered (the client's request timed out) — and how many accepted orders never
committed (must be 0); and a verdict on what bounds the run: the client (offered rate not
reached), nothing (all offered orders committed; latency ≈ the block interval), the block size
(blocks full), a validator's CPU, or the block interval — noting when the daemons waited for a CPU
longer than they ran (other load on the machine).

    python benchmarks/daemons.py [--singles 20] [--rates 100,300,1000] [--seconds 10]
                                 [--mode single|batch] [--drain 30] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

# this folder holds a ``sims.py``: when run as a script, the folder must not shadow the sims package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from gridnode.core.consensus_messages import decode_commit  # noqa: E402 - after the path fix
from gridnode.core.crypto import KeyPair  # noqa: E402
from gridnode.core.ledger import SignedOrder, decode_block, sign_order  # noqa: E402
from gridnode.daemon.node import MAX_BLOCK_BYTES, MAX_BLOCK_TXS  # noqa: E402
from gridnode.net.bridge import TrioBridge  # noqa: E402
from gridnode.net.host import (  # noqa: E402
    NetConfig,
    NetHost,
    open_net_host,
    peer_id_of,
    peer_id_of_hex,
)
from gridnode.store import NodeStore  # noqa: E402
from gridnode.txbatch import decode_tx_results, encode_tx_batch  # noqa: E402
from market.errors import Rejected  # noqa: E402
from market.orders import Order, Side, Step  # noqa: E402
from sims.daemons import LocalCommunity  # noqa: E402

TICK_S = 0.1


def cpu_of(pid: int) -> tuple[float, float]:
    """(CPU seconds used, seconds runnable but waiting for a CPU) of a process, over its threads.

    From /proc/<pid>/task/*/schedstat (ns on a CPU, ns waiting on a run queue); the second figure
    is what a loaded machine takes from it.
    """
    on_cpu = waiting = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ran, waited, _slices = (task / "schedstat").read_text().split()
        except (OSError, ValueError):  # a thread that just ended
            continue
        on_cpu += int(ran)
        waiting += int(waited)
    return on_cpu / 1e9, waiting / 1e9


@dataclass
class Run:
    name: str
    rate: float = 0.0
    start: float = 0.0
    end_send: float = 0.0
    end: float = 0.0
    sent: dict[str, float] = field(default_factory=dict)  # order id -> submit wall time
    to: dict[str, str] = field(default_factory=dict)  # order id -> the validator it was sent to
    acked: int = 0
    refused: int = 0
    #: orders a validator acknowledged (OK) / refused with a reason code / left unanswered
    accepted: set[str] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    pending_at_end: int = 0  # validator 0's mempool when the drain ended
    client_cpu: float = 0.0
    daemon_cpu: list[float] = field(default_factory=list)
    daemon_wait: list[float] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(7)
        self.members = [KeyPair.from_rng(self.rng) for _ in range(300)]
        self.nonces = {k.public_hex: 0 for k in self.members}
        self.counter = 0
        self.root = Path(tempfile.mkdtemp(prefix="gridnode-bench-"))
        self.lc = LocalCommunity(
            self.root,
            validators=4,
            full_nodes=0,
            speedup=1.0,
            extra_members=tuple(k.public_hex for k in self.members),
        )
        self.first_open = 0
        self.base_open = 0
        self.seen: dict[int, float] = {}  # height -> wall time validator 0's API first showed it
        self.runs: list[Run] = []

    def order(self, run: Run) -> SignedOrder:
        assert self.lc.genesis is not None
        self.counter += 1
        key = self.members[self.counter % len(self.members)]
        self.nonces[key.public_hex] += 1
        n = self.nonces[key.public_hex]
        side = Side.SELL if self.counter % 2 else Side.BUY
        order = Order(
            f"{run.name}-{self.counter}",
            key.public_hex,
            side,
            self.first_open + 1 + n,  # one open order per household and slot: a new slot each time
            (Step(self.rng.randint(80_000, 300_000), self.rng.randint(1, 2000)),),
            n,
        )
        return sign_order(key, self.lc.genesis, order)

    async def poll(self) -> None:
        while True:
            try:
                status = await asyncio.to_thread(self.lc.api, 0, "/api/status")
                now = time.time()
                for h in range(max(self.seen, default=0) + 1, int(status["height"]) + 1):
                    self.seen.setdefault(h, now)
            except OSError:
                pass
            await asyncio.sleep(0.05)

    async def send(self, bridge: TrioBridge, client: NetHost, peers: list[str], run: Run) -> None:
        pending: list[asyncio.Task[Any]] = []
        batches: list[list[str]] = []  # the order ids of each request, in request order
        run.start = time.time()
        c0 = time.process_time()
        cpu0 = [cpu_of(h.process.pid) for h in self.lc.households if h.process is not None]
        k = 0
        ticks = round(self.args.seconds / TICK_S)
        for tick in range(1, ticks + 1):
            await asyncio.sleep(max(0.0, run.start + (tick - 1) * TICK_S - time.time()))
            due = [self.order(run) for _ in range(int(run.rate * tick * TICK_S) - len(run.sent))]
            now = time.time()
            for so in due:
                run.sent[so.order.order_id] = now
            if self.args.mode == "single":
                for so in due:
                    k += 1
                    run.to[so.order.order_id] = peers[k % len(peers)]
                    batches.append([so.order.order_id])
                    pending.append(
                        asyncio.create_task(
                            bridge.call(
                                client.request, peers[k % len(peers)], "submit", so.encode()
                            )
                        )
                    )
            else:
                for i, peer in enumerate(peers):
                    part = due[i :: len(peers)]
                    for so in part:
                        run.to[so.order.order_id] = peer
                    if part:
                        batches.append([so.order.order_id for so in part])
                        pending.append(
                            asyncio.create_task(
                                bridge.call(
                                    client.request, peer, "submit-batch", encode_tx_batch(part)
                                )
                            )
                        )
        run.end_send = time.time()
        results = await asyncio.gather(*pending, return_exceptions=True)
        for ids, result in zip(batches, results, strict=True):
            if isinstance(result, Rejected):
                run.refused += 1
                run.reasons[result.reason.value] = run.reasons.get(result.reason.value, 0) + len(
                    ids
                )
            elif isinstance(result, BaseException):  # no answer in time (or the stream failed)
                run.refused += 1
                run.unanswered += len(ids)
            else:
                run.acked += 1
                if self.args.mode == "single":
                    run.accepted.update(ids)
                    continue
                for oid, (_, reason) in zip(
                    ids, decode_tx_results(result, expected=len(ids)), strict=True
                ):
                    if reason is None:
                        run.accepted.add(oid)
                    else:
                        run.reasons[reason] = run.reasons.get(reason, 0) + 1
        run.client_cpu = time.process_time() - c0
        # drain: until validator 0 counts every order accepted so far as committed (all are for
        # future slots, so they stay open), or holds none pending and counts no new one for 3 s
        expected = self.base_open + sum(len(r.accepted) for r in self.runs)
        deadline = time.time() + self.args.drain
        last_count, last_change = -1, time.time()
        status: dict[str, Any] = {}
        while time.time() < deadline:
            status = await asyncio.to_thread(self.lc.api, 0, "/api/status")
            count = int(status["open_orders"])
            if count >= expected:
                break
            if count != last_count:
                last_count, last_change = count, time.time()
            elif int(status.get("mempool_size", 0)) == 0 and time.time() - last_change > 3:
                break
            await asyncio.sleep(0.2)
        run.pending_at_end = int(status.get("mempool_size", 0))
        run.end = time.time()
        cpu1 = [cpu_of(h.process.pid) for h in self.lc.households if h.process is not None]
        run.daemon_cpu = [b[0] - a[0] for a, b in zip(cpu0, cpu1, strict=True)]
        run.daemon_wait = [b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True)]

    async def singles(self, bridge: TrioBridge, client: NetHost, peers: list[str]) -> list[float]:
        run = Run("single")
        self.runs.append(run)
        lat = []
        for i in range(self.args.singles):
            so = self.order(run)
            t0 = time.time()
            run.sent[so.order.order_id] = t0
            await bridge.call(client.request, peers[i % len(peers)], "submit", so.encode())
            run.accepted.add(so.order.order_id)
            # committed once validator 0 counts one more open order (no other orders are placed)
            while int(self.lc.api(0, "/api/status")["open_orders"]) < i + 1 + self.base_open:
                await asyncio.sleep(0.01)
            lat.append(time.time() - t0)
        return lat

    async def main(self) -> None:
        lc = self.lc
        lc.create()
        genesis = lc.genesis
        assert genesis is not None
        lc.start()
        try:
            lc.wait_ready(120)
            lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 60)
            status = lc.api(0, "/api/status")
            self.first_open = int(status["first_open_slot"])
            self.base_open = int(status["open_orders"])
            peers = [peer_id_of(h.key.public_key) for h in lc.households]
            poller = asyncio.create_task(self.poll())
            async with TrioBridge() as bridge:
                client: NetHost = await bridge.enter(
                    lambda: open_net_host(
                        KeyPair.from_rng(self.rng), NetConfig(community=genesis.community_id)
                    )
                )
                for h in lc.households:
                    await bridge.call(client.connect, h.multiaddr())
                lat = sorted(await self.singles(bridge, client, peers))
                if lat:
                    print(
                        f"singles (unloaded, one at a time): n={len(lat)} commit latency "
                        f"p50={1000 * statistics.median(lat):.0f} ms "
                        f"p99={1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.0f} ms "
                        f"max={1000 * lat[-1]:.0f} ms",
                        flush=True,
                    )
                for rate in (float(r) for r in self.args.rates.split(",") if r):
                    run = Run(f"r{int(rate)}", rate=rate)
                    self.runs.append(run)
                    await self.send(bridge, client, peers, run)
                    print(f"offered {rate:.0f}/s: sent {len(run.sent)}, done", flush=True)
            poller.cancel()
        finally:
            lc.stop()
        # the daemons' config keeps the store under data_dir = "data" (gridnode init's default)
        store = lc.households[0].dir / "data" / "node.sqlite"
        if not store.exists():
            raise SystemExit(f"validator 0's store is not at {store}")
        self.report(store)
        if self.args.keep:
            print(f"# the community (daemon logs, stores) is kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def report(self, store_path: Path) -> None:
        store = NodeStore.open(store_path)
        try:
            height_of: dict[str, int] = {}
            proposed: dict[int, tuple[float, str]] = {}  # height -> (block time s, proposer peer)
            size: dict[int, int] = {}
            nbytes: dict[int, int] = {}
            rounds: dict[int, int] = {}
            for sb in store.blocks_from(1, 1 << 30):
                block = decode_block(sb.block)
                txs = block.txs
                proposed[sb.height] = (block.time_ms / 1000, peer_id_of_hex(block.proposer))
                size[sb.height] = len(txs)
                nbytes[sb.height] = len(sb.block)
                rounds[sb.height] = decode_commit(sb.commit).round
                for tx in txs:
                    if isinstance(tx, SignedOrder):
                        height_of[tx.order.order_id] = sb.height
        finally:
            store.close()
        print(
            f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; mode "
            f"{self.args.mode}; block limit {MAX_BLOCK_BYTES // 1024} KiB (or {MAX_BLOCK_TXS} txs); "
            "CPU as a share of one core"
        )
        for run in self.runs:
            if run.name == "single":
                continue
            lat = sorted(
                self.seen[height_of[oid]] - t
                for oid, t in run.sent.items()
                if oid in height_of and height_of[oid] in self.seen
            )
            committed = len(lat)
            steady0, steady1 = run.start + 2.0, run.end_send
            steady = sum(
                1
                for oid in run.sent
                if oid in height_of
                and height_of[oid] in self.seen
                and steady0 <= self.seen[height_of[oid]] <= steady1
            )
            heights = sorted(h for h, t in self.seen.items() if run.start <= t <= run.end)
            intervals = [self.seen[b] - self.seen[a] for a, b in pairwise(heights)]
            sizes = [size.get(h, 0) for h in heights]
            span = run.end_send - run.start
            length = run.end - run.start
            cpu = [c / length for c in run.daemon_cpu]
            wait = [w / length for w in run.daemon_wait]
            rate_committed = steady / max(1e-9, steady1 - steady0)
            last_commit = max((self.seen[height_of[oid]] for oid in run.sent if oid in height_of
                               and height_of[oid] in self.seen), default=run.start)  # fmt: skip
            throughput = committed / max(1e-9, last_commit - run.start)
            p50 = statistics.median(lat) if lat else float("nan")
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
            stages = self.stages(run, height_of, proposed)
            mean_interval = statistics.mean(intervals) if intervals else float("nan")
            full = sum(
                1
                for h in heights
                if size.get(h, 0) >= MAX_BLOCK_TXS or nbytes.get(h, 0) >= 0.95 * MAX_BLOCK_BYTES
            )
            late = sum(1 for h in heights if rounds.get(h, 0) > 0)
            client_share = run.client_cpu / span
            sent_rate = len(run.sent) / span
            machine = (
                f"; daemons waited for a CPU {max(wait, default=0.0):.0%} of the run (other load)"
                if max(wait, default=0.0) > max(cpu, default=0.0)
                else ""
            )
            if sent_rate < 0.9 * run.rate or client_share > 0.9:
                bound = "the client (offered rate not reached / client near one core)"
            elif throughput >= 0.9 * sent_rate:
                bound = (
                    f"none: kept up with the offered load; latency set by the block interval (one "
                    f"every {mean_interval:.2f} s)"
                )
            elif full and full >= len(sizes) // 2:
                per_block = max(sizes, default=0)
                bound = (
                    f"block size: blocks full (≈ {per_block} orders, at most "
                    f"{per_block / mean_interval:.0f}/s at one every {mean_interval:.2f} s)"
                )
            elif max(cpu, default=0.0) > 0.85:
                bound = "validator CPU (a daemon near one core)"
            else:
                bound = f"block interval (blocks not full; one every {mean_interval:.2f} s)"
            bound += machine
            # CPU per committed order: what bounds the committee when the machine is not shared
            per_order = [1000 * c / max(1, committed) for c in run.daemon_cpu]
            client_ms = 1000 * run.client_cpu / max(1, len(run.sent))
            cores = os.cpu_count() or 1
            capacity = 1000 * cores / max(1e-9, sum(per_order) + client_ms)
            print(
                f"offered {run.rate:.0f}/s ({self.args.mode}): sent {len(run.sent) / span:.0f}/s "
                f"for {span:.0f} s in {run.acked} requests ({run.refused} failed) | committed "
                f"{committed}/{len(run.sent)}: {throughput:.0f}/s from the first submit to the last "
                f"commit, {rate_committed:.0f}/s while sending (from 2 s in) | latency p50 "
                f"{1000 * p50:.0f} ms p99 {1000 * p99:.0f} ms | blocks {len(heights)}, one every "
                f"{mean_interval:.2f} s, orders/block mean {statistics.mean(sizes) if sizes else 0:.0f}"
                f" max {max(sizes, default=0)}, {full} full, {late} decided after round 0 | "
                f"CPU per daemon {' '.join(f'{c:.0%}' for c in cpu)}, waiting for a CPU "
                f"{' '.join(f'{w:.0%}' for w in wait)}, client {client_share:.0%} | bound: {bound}"
            )
            lost = sum(1 for oid in run.accepted if oid not in height_of)
            refusals = ", ".join(f"{r} {n}" for r, n in sorted(run.reasons.items())) or "none"
            print(
                f"  answers: accepted {len(run.accepted)}, refused {refusals}, unanswered "
                f"{run.unanswered} | accepted but not committed: {lost} (validator 0 still held "
                f"{run.pending_at_end} pending when the drain ended)"
            )
            print(f"  where the latency goes (p50s): {stages}")
            print(
                f"  CPU per committed order: daemons {' '.join(f'{m:.2f}' for m in per_order)} ms "
                f"(sum {sum(per_order):.2f}), client {client_ms:.2f} ms -> this machine's "
                f"{cores} cores, if not shared, could commit ≈ {capacity:.0f} orders/s"
            )

    def stages(
        self, run: Run, height_of: dict[str, int], proposed: dict[int, tuple[float, str]]
    ) -> str:
        """Submit -> proposal (the block's time: its proposer's clock when it built the block) ->
        commit (validator 0's API showed the height), split by whether the order was sent to the
        block's proposer or reached it from another validator (order gossip)."""
        parts: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
        for oid, t in run.sent.items():
            h = height_of.get(oid)
            if h is None or h not in self.seen or h not in proposed:
                continue
            block_s, proposer = proposed[h]
            waiting, deciding = parts[run.to.get(oid) == proposer]
            waiting.append(block_s - t)
            deciding.append(self.seen[h] - block_s)
        out = []
        for direct, label in ((True, "sent to the proposer"), (False, "via another validator")):
            waiting, deciding = parts[direct]
            if waiting:
                out.append(
                    f"{label} n={len(waiting)}: submit->proposal "
                    f"{1000 * statistics.median(waiting):.0f} ms, proposal->commit seen "
                    f"{1000 * statistics.median(deciding):.0f} ms"
                )
        return "; ".join(out) or "none committed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--singles", type=int, default=20)
    ap.add_argument("--rates", default="100,300,1000", help="offered orders per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="sending time per rate")
    ap.add_argument("--mode", choices=("single", "batch"), default="single")
    ap.add_argument("--drain", type=float, default=30.0, help="max seconds to wait for commits")
    ap.add_argument("--keep", action="store_true", help="keep the daemons' folders (logs, stores)")
    asyncio.run(Bench(ap.parse_args()).main())


if __name__ == "__main__":
    main()
