"""A household daemon that names its holiday country: start-up CPU and idle memory, A/B.

One bidding household (replay meter, ``household.holiday_country = "US"``, clock 60×) of a small
community is started alone (no validator answers: its quotes are made, their submission fails),
alternating between this tree and ``--against TREE`` (e.g. main, ``git archive``'d) ``--pairs``
times in the same minutes, each with compiled bytecode cached (one warm-up start per tree, which
also builds this tree's holiday calendar file: the starts measured are *second* starts). Per
start: CPU seconds exec → ready (``/proc/<pid>/stat``), CPU to its first quote (its forecaster
fitted with the holidays), and ``VmRSS``/PSS ``--idle`` seconds after ready; the load average
with each pair. ``--first`` also measures this tree's first start (the calendar file removed
before each: the config check builds it in a child, whose CPU is counted apart).

    python benchmarks/holiday_daemon.py --against /tmp/main [--pairs 5] [--idle 15] [--first]
        [--country US]   # --country "": the same household without a holiday country
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from benchmarks.daemon_footprint import (  # noqa: E402 - its daemon start and /proc readers
    PROVENANCE,
    _lines,
    memory_mb,
    proc_cpu_s,
    running,
)
from gridnode.config import update_config  # noqa: E402 - after the path fix
from sims.daemons import LocalCommunity  # noqa: E402


def children_cpu_s(pid: int) -> float:
    """CPU of ``pid``'s children it has waited for (the holiday child)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def start(tree: Path, d: Path, idle_s: float) -> dict[str, float]:
    """One start of the household in ``d`` from ``tree``'s source; stopped after ``idle_s``."""
    quotes = _lines(d / PROVENANCE)
    out: dict[str, float] = {}
    with running(tree, d) as (proc, _t0, deadline):
        t_ready = time.monotonic()
        out["cpu_ready"] = proc_cpu_s(proc.pid)
        out["child_ready"] = children_cpu_s(proc.pid)
        while _lines(d / PROVENANCE) <= quotes:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tree}: the daemon in {d} made no quote; see daemon.log")
            time.sleep(0.005)
        out["cpu_quote"] = proc_cpu_s(proc.pid)
        time.sleep(max(0.0, t_ready + idle_s - time.monotonic()))
        mem = memory_mb(proc.pid)
        out["rss"], out["pss"] = mem["rss"], mem["pss"]
        out["cpu_idle"] = proc_cpu_s(proc.pid)
    return out


def show(name: str, rows: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        f"  {name:<28} n={len(rows)}  CPU to ready {med['cpu_ready']:.3f} s "
        f"(min {min(r['cpu_ready'] for r in rows):.3f}; holiday child {med['child_ready']:.3f})  "
        f"to first quote {med['cpu_quote']:.2f} s  |  RSS {med['rss']:.1f} MB "
        f"(min {min(r['rss'] for r in rows):.1f}, max {max(r['rss'] for r in rows):.1f}), "
        f"PSS {med['pss']:.1f} MB  (medians)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, required=True, help="the other source tree")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=15.0, help="seconds after ready to read RSS")
    ap.add_argument("--first", action="store_true", help="also this tree's first starts")
    ap.add_argument("--country", default="US", help='the holiday country ("": none, the baseline)')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridnode-holidays-") as tmp:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        lc = LocalCommunity(Path(tmp) / "c", validators=4, full_nodes=1, speedup=60, launcher=False)
        lc.create()
        d = lc.households[4].dir
        update_config(
            d,
            {
                "meter.source": "replay",
                "meter.replay_hour": 11.0,
                "bidding.enabled": True,
            }
            | ({"household.holiday_country": args.country} if args.country else {}),
        )
        trees = {"this tree": _HERE.parent, str(args.against): args.against.resolve()}
        for tree in trees.values():  # bytecode into the cache; this tree's calendar file built
            start(tree, d, 1.0)
        got: dict[str, list[dict[str, float]]] = {n: [] for n in trees}
        for i in range(args.pairs):
            load = os.getloadavg()
            for name, tree in trees.items():
                got[name].append(start(tree, d, args.idle))
            print(
                f"  pair {i + 1}: "
                + "; ".join(
                    f"{n}: ready {rows[-1]['cpu_ready']:.3f} s CPU, RSS {rows[-1]['rss']:.1f} MB"
                    for n, rows in got.items()
                )
                + f"  (load {load[0]:.2f} {load[1]:.2f} -> {os.getloadavg()[0]:.2f})"
            )
        for name, rows in got.items():
            show(name, rows)
        this, that = got.values()
        for key, unit in (("cpu_ready", "s CPU to ready"), ("rss", "MB RSS idle")):
            diffs = [a[key] - b[key] for a, b in zip(this, that, strict=True)]
            print(
                f"  paired, this tree - {args.against}: median {statistics.median(diffs):+.3f} "
                f"{unit}, {sum(x < 0 for x in diffs)} of {len(diffs)} pairs lower"
            )
        if args.first:
            rows = []
            for _ in range(args.pairs):
                for f in (d / "data").glob("holidays-*.json"):
                    f.unlink()
                rows.append(start(_HERE.parent, d, args.idle))
            show("this tree, first start", rows)
        print(f"  load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
