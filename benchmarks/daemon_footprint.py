"""One daemon's footprint: start-up time, memory when idle, and what its imports cost.

Starts a small real community (``gridnode run`` processes: 4 validators and ``--households``
member households with a replay meter and automatic bidding, the way the daemon engine configures
them; clock at 60×) and prints, per role:

* **start-up**: wall seconds from spawning the process to its ready file (API serving, libp2p
  listening), and the CPU seconds the process had used by then (``/proc/<pid>/stat``; what a
  loaded machine cannot stretch);
* **memory when idle**: after ``--idle`` seconds of running (the households have forecast and
  quoted by then), ``VmRSS`` — the figure the target is stated in — and the unique (private) and
  proportional (PSS) set from ``/proc/<pid>/smaps_rollup``: with many daemons on one machine the
  shared libraries' pages are counted once, so PSS × N is what N daemons really take;
* **imports**: in fresh interpreters, what ``import gridnode.daemon`` costs (CPU s, max RSS, and
  whether pandas, pyarrow, statsmodels, scipy, pvlib, plotly or sklearn were loaded), and
  ``import libp2p`` alone for comparison (a floor this project does not control).

    python benchmarks/daemon_footprint.py [--households 2] [--idle 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from gridnode.config import update_config  # noqa: E402 - after the path fix
from sims.daemons import LocalCommunity  # noqa: E402

HEAVY = ("pandas", "pyarrow", "statsmodels", "scipy", "pvlib", "plotly", "sklearn")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
    roll = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        roll[name] = int(value.split()[0])
    out["pss"] = roll["Pss"] / 1024
    out["uss"] = (roll["Private_Clean"] + roll["Private_Dirty"]) / 1024
    return out


def import_cost(statement: str) -> str:
    code = (
        "import resource, sys\n"
        f"{statement}\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        # VmRSS, not ru_maxrss: a child's ru_maxrss keeps its parent's peak across fork + exec
        "rss = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS:')]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(f'{u.ru_utime + u.ru_stime:.3f} s CPU, RSS {rss[0] / 1024:.0f} MB, "
        '{len(sys.modules)} modules, heavy: {heavy or "none"}\')\n'
    )
    env = {**os.environ, "PYTHONPATH": str(_HERE.parent)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=2)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds to run before measuring")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    for statement in ("import libp2p", "import gridnode.daemon"):
        print(f"  {statement:<24} {import_cost(statement)}")
    with tempfile.TemporaryDirectory(prefix="gridnode-footprint-") as tmp:
        lc = LocalCommunity(Path(tmp) / "c", validators=4, full_nodes=args.households, speedup=60)
        lc.create()
        for h in lc.households[4:]:
            update_config(
                h.dir,
                {"meter.source": "replay", "meter.replay_hour": 11.0, "bidding.enabled": True},
            )
        started: dict[int, float] = {}
        ready: dict[int, tuple[float, float]] = {}  # index -> (wall s to ready, CPU s by then)
        for h in lc.households:  # one at a time: each start-up is measured on its own
            started[h.index] = time.monotonic()
            lc.start([h.index])
            lc.wait_ready(60, which=[h.index])
            assert h.process is not None
            ready[h.index] = (time.monotonic() - started[h.index], proc_cpu_s(h.process.pid))
        time.sleep(args.idle)
        rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {}
        for h in lc.households:
            assert h.process is not None and h.process.poll() is None, f"{h.name} died"
            role = "validator" if h.role == "validator" else "household (replay meter, bidding)"
            rows.setdefault(role, []).append((*ready[h.index], memory_mb(h.process.pid)))
        lc.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for role, items in rows.items():
        wall = statistics.median(r[0] for r in items)
        cpu = statistics.median(r[1] for r in items)
        mem = {k: statistics.median(r[2][k] for r in items) for k in ("rss", "pss", "uss")}
        print(
            f"  {role:<34} n={len(items)}  start-up {wall:.2f} s wall, {cpu:.2f} s CPU  |  "
            f"idle after {args.idle:.0f} s: RSS {mem['rss']:.0f} MB, "
            f"PSS {mem['pss']:.0f} MB, USS {mem['uss']:.0f} MB  (medians)"
        )


if __name__ == "__main__":
    main()
