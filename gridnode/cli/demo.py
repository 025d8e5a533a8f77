"""``gridnode demo``: a small local community of real daemons trading by themselves.

Creates N household directories (4 validators + 2 full nodes by default), one genesis, and starts one
``gridnode run`` process per household on loopback. Each household's meter replays a different real
measured day (UCI household load + NREL PVDAQ PV, shipped with the package), with its own PV size;
every daemon forecasts its surplus, quotes orders for the next slots, sends its meter readings, and
the community clears and settles every slot on its replicated ledger. The clock runs ``--speedup``
times faster (60: a 15-minute slot every 15 s). The demo prints each slot's clearing and settlement,
then every household's savings against grid-only, checks that all nodes hold the same ledger, and
stops (or keeps running with ``--keep-running`` until Ctrl-C, status pages up). Once the daemons
have stopped it reads the first validator's store from genesis with the chain reader
(:mod:`gridnode.chain`: every commit, signature and rule checked, nothing shared with the daemon)
and checks that every slot's trades and the ledger digest are what the API served.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gridnode.localtime import LocalTime
from market.errors import UsageError

#: the households' time zone: the shipped data's local standard time (UTC−7)
DEMO_TIMEZONE = "-07:00"
DEMO_UTC_OFFSET_S = -7 * 3600
#: the community clock starts at this local hour (sunshine for the traded slots)
DEMO_START_HOUR = 9
#: the shipped data's step: replay anchors are whole steps
_DATA_STEP_S = 900


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run a local community of real daemons trading on real data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir", type=Path, help="where to create the community (default: a new temp dir)"
    )
    p.add_argument(
        "--validators", type=int, default=4, help="validators (default %(default)s; 3f+1)"
    )
    p.add_argument(
        "--full-nodes", type=int, default=2, help="non-validator households (default %(default)s)"
    )
    p.add_argument(
        "--slots", type=int, default=4, help="slots to trade and settle (default %(default)s)"
    )
    p.add_argument(
        "--speedup", type=float, default=60.0, help="clock speed-up (default %(default)s)"
    )
    p.add_argument("--keep-running", action="store_true", help="leave the daemons up until Ctrl-C")
    p.add_argument(
        "--no-launcher",
        dest="launcher",
        action="store_false",
        help="exec each daemon (`python -m gridnode run`) instead of forking it from one process "
        "that imported the daemon's code once (docs/daemon.md, 'Many daemons on one machine: "
        "the launcher'); also GRIDNODE_LAUNCHER=0",
    )
    p.set_defaults(func=run)


def _euro(micro: int) -> str:
    return f"{micro / 1_000_000:+.4f}"


def run(args: argparse.Namespace) -> int:
    from gridnode.launcher import Launcher, launcher_enabled
    from sims.daemons import LocalCommunity

    use_launcher = launcher_enabled() and args.launcher  # a bad $GRIDNODE_LAUNCHER: refused first

    if not 1 <= args.validators <= 10 or not 0 <= args.full_nodes <= 20:
        raise UsageError("--validators must be 1..10 and --full-nodes 0..20")
    if args.slots < 1 or args.speedup <= 0:
        raise UsageError("--slots must be >= 1 and --speedup > 0")
    root = args.dir or Path(tempfile.mkdtemp(prefix="gridnode-demo-"))
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        raise UsageError(f"{args.dir} exists and is not empty")
    lc = LocalCommunity(
        root, validators=args.validators, full_nodes=args.full_nodes, speedup=args.speedup
    )
    lc.create()
    n = len(lc.households)
    replay_hour = start_in_the_morning(lc, args.speedup)
    from gridnode.config import update_config

    for h in lc.households:
        update_config(
            h.dir,
            {
                "node.timezone": DEMO_TIMEZONE,
                "meter.source": "replay",
                "meter.replay_day_offset": h.index * 3,  # a different real day per household
                "meter.replay_hour": replay_hour,
                "meter.pv_scale": [2.5, 0.0, 1.5, 0.0, 3.0, 0.5][
                    h.index % 6
                ],  # PV sizes, some none
                "bidding.enabled": True,
            },
        )
    print(f"community of {n} households ({args.validators} validators) in {root}")
    print("starting daemons (real libp2p over loopback)…", flush=True)
    lc.launcher = Launcher.start() if use_launcher else False
    lc.start()
    stopped = False
    served: dict[int, tuple[int | None, list[dict[str, Any]]]] = {}
    try:
        lc.wait_ready(120)
        for h in lc.households:
            print(f"  {h.name}: status page {h.api_url}/  ({h.role}, log {h.dir / 'daemon.log'})")
        status = lc.api(0, "/api/status")
        first = status["current_slot"] + 2
        last = first + args.slots - 1
        slot_len = status["slot_seconds"]
        slot_s = slot_len / args.speedup
        zone = LocalTime.parse(DEMO_TIMEZONE)
        print(f"trading slots {first}..{last} (one every {slot_s:.0f} s)", flush=True)
        for slot in range(first, last + 1):
            ok = lc.wait_for(_cleared(lc, slot), slot_s * 4 + 60)
            if not ok:
                raise UsageError(
                    f"slot {slot} was not cleared in time; see the daemon logs in {root}"
                )
            t = lc.api(0, f"/api/trades?slot={slot}")
            info = t["slots"][0] if t.get("slots") else {}
            trades = info.get("trades", [])
            price = info.get("clearing_price_micro_per_kwh")
            volume = sum(tr["energy_wh"] for tr in trades)
            served[slot] = (price, trades)
            p = "-" if price is None else f"{price / 1_000_000:.3f}/kWh"
            when = zone.interval(slot * slot_len, (slot + 1) * slot_len)
            print(
                f"  slot {slot} ({when}): cleared {volume} Wh in {len(trades)} trades at {p}",
                flush=True,
            )
        traded = [slot for slot, (_, rows) in served.items() if rows]
        print(
            f"waiting for the meter readings and settlement of the traded slots {traded}…",
            flush=True,
        )
        if not lc.wait_for(lambda: _settled(lc, traded), timeout_s=slot_s * 6 + 60):
            raise UsageError(
                f"the traded slots {traded} were not settled in time; see the daemon logs in {root}"
            )
        print(
            f"{'household':>10} {'P2P bought':>11} {'P2P sold':>9} {'bill':>10} {'grid-only':>10} {'saved':>9}"
        )
        community_saving = 0
        for h in lc.households:
            b = lc.api(h.index, "/api/balance")
            tot = b.get("totals", b)
            saving = tot.get("savings_micro", 0)
            community_saving += saving
            print(
                f"{h.name:>10} {tot.get('bought_p2p_wh', 0):>9}Wh {tot.get('sold_p2p_wh', 0):>7}Wh "
                f"{_euro(tot.get('bill_micro', 0)):>10} {_euro(tot.get('grid_only_bill_micro', 0)):>10} "
                f"{_euro(saving):>9}"
            )
        print(f"community saved {_euro(community_saving)} (currency units) against grid-only")
        agreed = lc.wait_for(lambda: _agree(lc), 30, poll_s=0.05)
        s = lc.api(0, "/api/status")
        print(
            f"ledger: height {s['height']}, head {s['head_hash'][:16]}, digest {s['state_digest'][:16]}: "
            + ("all nodes agree" if agreed else "NODES DISAGREE")
        )
        if args.keep_running:
            print("daemons keep running; status pages above. Ctrl-C stops them.", flush=True)
            while True:
                time.sleep(3600)
        _stop(lc)
        stopped = True
        read = _read_chain(lc, served, s)
        return 0 if agreed and read else 1
    except KeyboardInterrupt:
        return 130
    finally:
        if not stopped:
            _stop(lc)
        if lc.launcher:
            lc.launcher.close()
        if args.dir is None and not args.keep_running:
            shutil.rmtree(root, ignore_errors=True)


def _stop(lc: Any) -> None:
    print("stopping daemons…", flush=True)
    codes = lc.stop()
    bad = {i: c for i, c in codes.items() if c != 0}
    if bad:
        print(f"daemons exited with {bad}")


def _read_chain(
    lc: Any, served: dict[int, tuple[int | None, list[dict[str, Any]]]], status: dict[str, Any]
) -> bool:
    """Read the first node's store from genesis with the chain reader; every slot's clearing price
    and trades and the head and digest at the served height must be what the API served."""
    from gridnode.chain import ChainError, ChainReader, SlotCleared, stored_blocks, trade_row
    from gridnode.store import NodeStore

    reader = ChainReader(lc.genesis)
    cleared: dict[int, SlotCleared] = {}
    at_height: tuple[str, str] | None = None
    try:
        with NodeStore.open(lc.households[0].dir / "data" / "node.sqlite") as store:
            for facts in reader.read_all(stored_blocks(store)):
                cleared.update((c.slot, c) for c in facts.cleared)
                if facts.height == status["height"]:
                    at_height = (facts.block_hash.hex(), reader.state.digest().hex())
    except ChainError as exc:
        print(f"chain: {lc.households[0].name}'s store does not read: {exc}")
        return False
    wrong = []
    for slot, (price, rows) in served.items():
        c = cleared.get(slot)
        chain_rows = [trade_row(t) for t in c.trades] if c else []
        api_rows = [{k: r[k] for k in row} for r, row in zip(rows, chain_rows, strict=False)]
        chain_price = c.clearing_price_micro_per_kwh if c else None
        if price != chain_price or len(rows) != len(chain_rows) or api_rows != chain_rows:
            wrong.append(slot)
    same_head = at_height == (status["head_hash"], status["state_digest"])
    print(
        f"chain: read {reader.height} blocks of {lc.households[0].name}'s store from genesis "
        "(every commit, signature and ledger rule checked): "
        + (
            f"the {len(served)} slots' trades and the digest at height {status['height']} "
            "are what the API served"
            if not wrong and same_head
            else f"DIFFERS from the API (slots {wrong}, digest at height {status['height']} "
            f"{'same' if same_head else 'different'})"
        )
    )
    return not wrong and same_head


def start_in_the_morning(lc: Any, speedup: float, *, hour: float = DEMO_START_HOUR) -> float:
    """Re-issue the genesis so the community clock (``epoch + (wall − epoch) × speedup``) reads the
    next ``hour`` o'clock in :data:`DEMO_TIMEZONE` when the daemons start, and
    return the replay hour that maps the genesis time to the same local time of day in the data:
    the page's local times and the replayed sun agree (PV peaks at noon). With a slow clock the
    genesis stays at the wall time and only the replay hour follows it."""
    from gridnode.config import write_genesis

    now_ms = time.time_ns() // 1_000_000
    epoch_ms = now_ms
    if speedup >= 10:
        local_now_s = now_ms // 1000 + DEMO_UTC_OFFSET_S
        start_s = local_now_s - local_now_s % 86_400 + int(hour * 3600)
        if start_s <= local_now_s:
            start_s += 86_400
        target_ms = (start_s - DEMO_UTC_OFFSET_S) * 1000
        # node(now) = epoch + (now − epoch) × speedup = target
        epoch_ms = int((speedup * now_ms - target_ms) / (speedup - 1))
    lc.genesis = replace(lc.genesis, genesis_time_ms=epoch_ms)
    for h in lc.households:
        write_genesis(h.dir / "genesis.toml", lc.genesis)
    anchor_s = epoch_ms // 1000 - (epoch_ms // 1000) % _DATA_STEP_S  # as the replay meter rounds
    return float((anchor_s + DEMO_UTC_OFFSET_S) % 86_400) / 3600


def _settled(lc: Any, slots: list[int]) -> bool:
    """Every node has settled every one of ``slots`` (its trades left the ledger's open trades:
    every reading is in, or the reading deadline passed)."""
    return all(
        not lc.api(h.index, f"/api/trades?slot={slot}")["slots"][0]["awaiting_settlement"]
        for h in lc.households
        for slot in slots
    )


def _cleared(lc: Any, slot: int) -> Callable[[], bool]:
    return lambda: bool(lc.api(0, "/api/status")["last_cleared_slot"] >= slot)


def _agree(lc: Any) -> bool:
    status = [lc.api(h.index, "/api/status") for h in lc.households]
    return len({(s["height"], s["head_hash"], s["state_digest"]) for s in status}) == 1
