"""One daemon's footprint: start-up time, memory when idle, and what its imports cost.

Starts a small real community (``gridnode run`` processes: 4 validators and ``--households``
member households with automatic bidding, the last with a meter file — a year of the shipped
household's readings as a meter adapter writes them, ``meter.source = "file"`` — the others with a
replay meter, the way the daemon engine configures them; clock at 60×) and prints, per role:

* **start-up**, defined as process exec → ready: from spawning ``python -m gridnode run`` to its
  ``--ready-file`` existing, which the daemon writes once its API serves and libp2p listens
  (polled every 2 ms); wall seconds, and the CPU seconds the process had used by then
  (``/proc/<pid>/stat``: what a loaded machine cannot stretch). The daemons run with **compiled
  bytecode cached** (``PYTHONPYCACHEPREFIX`` in a temporary folder, filled by one warm-up start),
  as from an installed package, and with it the code their imports generate
  (:mod:`gridnode.codecache`, written beside the bytecode by that warm-up); ``--cold`` compiles
  every module at every start instead (a source tree under ``PYTHONDONTWRITEBYTECODE``, as this
  project's sessions run: neither cache is written);
* **memory when idle**: after ``--idle`` seconds of running (the households have forecast and
  quoted by then), ``VmRSS`` — the figure the target is stated in — and the unique (private) and
  proportional (PSS) set from ``/proc/<pid>/smaps_rollup``: with many daemons on one machine the
  shared libraries' pages are counted once, so PSS × N is what N daemons really take;
* **imports**: in fresh interpreters, what ``import libp2p`` costs plainly and what the parts of
  py-libp2p the daemon uses cost as the daemon imports them (:mod:`gridnode.lazyimports`
  installed, as ``gridnode run`` and the launcher do: ``libp2p/__init__.py`` does not run), and
  what ``import gridnode.daemon`` costs as the daemon imports it (CPU s, RSS, and whether pandas,
  pyarrow, statsmodels, scipy, pvlib, plotly or sklearn were loaded); and in one interpreter (the
  finder installed), step by step, what each layer adds: the libraries py-libp2p still imports
  for features gridnode never uses (it imports names from them at the top of modules the daemon
  does use), the rest of py-libp2p, numpy, aiohttp, and gridnode's own modules;
* with ``--launcher``: the same community again, each daemon forked from one pre-imported
  launcher (:mod:`gridnode.launcher`) instead of exec'd, in the same run after the first; start-up
  is then fork request → ready and its CPU the child's since the fork; the launcher's own memory
  is printed beside (its pages are shared with its children: their RSS counts them, PSS splits
  them). The load average is printed with each;
* with ``--against TREE``, only this: a validator's and two households' (a replay meter, a meter
  file) start-up (exec -> ready,
  wall and CPU, and RSS at ready) and the household's **first quote** (exec -> its first order
  forecast and signed, wall and CPU: "forecaster ready" — a household warms its forecaster after
  it is ready, ``docs/daemon.md``), each daemon alone (no validator answers: the quote is made,
  its submission fails) and stopped then, alternating between
  this tree and ``TREE`` (another source tree, e.g. main via ``git archive``) ``--pairs`` times
  in the same minutes: on a machine whose load changes by the minute, a comparison that one run
  after the other is not; with the median of the per-pair CPU differences (each pair's two
  starts follow each other, so a load that changes by the minute moves both); then, twice per tree, what a file meter's calls cost per slot on the
  year-long meter file (the first step reads it whole; then one row appended per slot and the
  step's three calls);
* with ``--many N``: ``N`` daemons (4 validators, ``N - 4`` full nodes without a meter) started at
  once, the time until all are ready, their summed CPU by then, and their summed RSS, PSS and
  USS after ``--idle`` seconds (with the launcher's); both ways with ``--launcher``.

    python benchmarks/daemon_footprint.py [--households 2] [--idle 20] [--cold]
        [--launcher] [--many N] [--no-imports]
    python benchmarks/daemon_footprint.py --against TREE [--pairs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from gridnode.config import update_config  # noqa: E402 - after the path fix
from gridnode.launcher import Launcher  # noqa: E402
from sims.daemons import Household, LocalCommunity  # noqa: E402

#: what the daemons import (validators and households), compiled once into the bytecode cache
WARM_UP = (
    "import gridnode.cli, gridnode.cli.run, gridnode.startup, gridnode.daemon, "
    "gridnode.household_driver, gridnode.meter, gridnode.meters"
)
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


#: what ``gridnode run`` does before its imports (:mod:`gridnode.lazyimports`, and
#: :mod:`gridnode.codecache`: the code the imports generate, from the cache the warm-up filled)
AS_THE_DAEMON = (
    "from gridnode.lazyimports import install; install()\n"
    "from gridnode import codecache; codecache.install()"
)
#: what ``gridnode run`` does once ready: the cache written (by the warm-up import)
SAVE = "from gridnode import codecache; codecache.save()"


def import_cost(statement: str, *, as_daemon: bool = True) -> str:
    code = (
        "import resource, sys\n" + (f"{AS_THE_DAEMON}\n" if as_daemon else "") + f"{statement}\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        # VmRSS, not ru_maxrss: a child's ru_maxrss keeps its parent's peak across fork + exec
        "rss = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS:')]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from gridnode.lazyimports import loaded_modules\n"
        "print(f'{u.ru_utime + u.ru_stime:.3f} s CPU, RSS {rss[0] / 1024:.0f} MB, "
        '{len(loaded_modules())} modules run, heavy: {heavy or "none"}\')\n'
        + (f"{SAVE}\n" if as_daemon else "")
    )
    env = {**os.environ, "PYTHONPATH": str(_HERE.parent)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()


#: the modules of py-libp2p the daemon's host is built from (``gridnode.net.host.build_host``) and
#: its gossip and identities use; with :mod:`gridnode.lazyimports` installed, ``import libp2p`` alone
#: runs nothing (its ``__init__`` is deferred), so these are what "py-libp2p as the daemon" costs
LIBP2P_PARTS = (
    "libp2p.host.basic_host",
    "libp2p.network.swarm",
    "libp2p.transport.tcp.tcp",
    "libp2p.transport.upgrader",
    "libp2p.transport.manager",
    "libp2p.security.noise.transport",
    "libp2p.stream_muxer.yamux.yamux",
    "libp2p.stream_muxer.mplex.mplex",
    "libp2p.peer.peerstore",
    "libp2p.rcmgr.manager",
    "libp2p.pubsub.gossipsub",
    "libp2p.pubsub.floodsub",
    "libp2p.crypto.ed25519",
    "libp2p.crypto.x25519",
)

#: the import layers of a validator's daemon, in order, in one interpreter with
#: :mod:`gridnode.lazyimports` installed (as ``gridnode run`` does); each step's cost is what it
#: adds on top of the steps before it. The fourth group is what py-libp2p still runs for
#: features gridnode does not use — DNS multiaddrs (dnspython: a resolver is built at import),
#: mDNS when off (zeroconf), RSA and secp256k1 keys (pycryptodome, coincurve),
#: metrics (prometheus_client), the resource manager's system probe (psutil), netaddr — because
#: modules the daemon does use import names from them at their top (``docs/benchmarks.md``);
#: imported first so the rest of py-libp2p's cost is separated from them. (AutoTLS's HTTP client,
#: requests, is lazy since stop 25: importing it runs nothing; QUIC's aioquic is not offered since
#: stop 27: ``gridnode.lazyimports.ABSENT_MODULES``.) numpy is lazy in the daemon: the last layer
#: is what it adds when a validator first clears (after it is ready).
LAYERS: tuple[tuple[str, str], ...] = (
    ("python and asyncio", "asyncio"),
    ("trio", "trio"),
    ("cryptography, PyNaCl", "cryptography.x509, nacl.signing"),
    (
        "libp2p's unused dependencies",
        "dns.asyncresolver, zeroconf, Crypto.PublicKey.RSA, coincurve, "
        "prometheus_client, psutil, netaddr",
    ),
    ("the rest of py-libp2p (the daemon's parts)", ", ".join(LIBP2P_PARTS)),
    ("aiohttp.web (the API; aiohttp's __init__ and client deferred)", "aiohttp.web"),
    ("gridnode (validator)", "gridnode.startup, gridnode.daemon"),
    # lazy in the daemon: importing a sub-module runs the package (a validator, at its first book)
    ("numpy, at the first order book", "numpy._core"),
)


def import_layers() -> list[str]:
    """Each of :data:`LAYERS`' RSS and CPU on top of the ones before, in one fresh interpreter."""
    code = (
        "import resource, sys, time\n"
        f"{AS_THE_DAEMON}\n"
        "def now():\n"
        "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    rss = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS:')]\n"
        "    from gridnode.lazyimports import loaded_modules\n"
        "    return rss[0] / 1024, u.ru_utime + u.ru_stime, len(loaded_modules())\n"
        "last = now()\n"
        "print(f'interpreter|{last[0]:.1f}|{last[1]:.3f}|{last[2]}')\n"
        f"for name, mods in {LAYERS!r}:\n"
        "    for m in mods.split(', '):\n"
        "        __import__(m)\n"
        "    cur = now()\n"
        "    print(f'{name}|{cur[0] - last[0]:.1f}|{cur[1] - last[1]:.3f}|{cur[2] - last[2]}')\n"
        "    last = cur\n"
        "print(f'total|{last[0]:.1f}|{last[1]:.3f}|{last[2]}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_HERE.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = []
    for line in out.strip().splitlines():
        name, rss, cpu, mods = line.split("|")
        sign = "" if name in ("interpreter", "total") else "+"
        rows.append(
            f"    {name:<30} {sign}{float(rss):5.1f} MB  {sign}{float(cpu):.3f} s CPU  {mods} modules run"
        )
    return rows


def wait_ready(h: Household, timeout_s: float = 120.0) -> float:
    """Wall seconds until ``h``'s ready file exists (polled every 2 ms)."""
    ready = h.dir / "ready"
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if h.process is not None and h.process.poll() is not None:
            raise SystemExit(f"{h.name} exited with {h.process.returncode}; see {h.dir}/daemon.log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{h.name} not ready after {timeout_s} s")
        time.sleep(0.002)
    return time.monotonic()


def start_one_by_one(
    root: Path, households: int, idle_s: float, launcher: Launcher | Literal[False]
) -> dict[str, list[tuple[float, float, dict[str, float]]]]:
    """The small community, each daemon started alone (its start-up measured on its own), then
    ``idle_s`` of running: per role, (wall s to ready, CPU s by then, memory when idle)."""
    lc = LocalCommunity(root, validators=4, full_nodes=households, speedup=60, launcher=launcher)
    lc.create()
    for h in lc.households[4:-1]:
        update_config(
            h.dir,
            {"meter.source": "replay", "meter.replay_hour": 11.0, "bidding.enabled": True},
        )
    use_meter_file(lc.households[-1].dir, lc.genesis.genesis_time_ms // 1000)
    ready: dict[int, tuple[float, float]] = {}  # index -> (wall s to ready, CPU s by then)
    rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {}
    try:
        for h in lc.households:  # one at a time: each start-up is measured on its own
            started = time.monotonic()
            lc.start([h.index])
            at = wait_ready(h)
            assert h.process is not None
            ready[h.index] = (at - started, proc_cpu_s(h.process.pid))
        time.sleep(idle_s)
        for h in lc.households:
            assert h.process is not None and h.process.poll() is None, f"{h.name} died"
            role = (
                "validator"
                if h.role == "validator"
                else "household (file meter, bidding)"
                if h is lc.households[-1]
                else "household (replay meter, bidding)"
            )
            rows.setdefault(role, []).append((*ready[h.index], memory_mb(h.process.pid)))
        if launcher:  # at the same moment: its pages are shared with its children
            rows["the launcher itself"] = [
                (0.0, launcher.preload["cpu_s"], memory_mb(launcher.pid))
            ]
    finally:
        lc.stop()
    return rows


def start_many(
    root: Path, n: int, idle_s: float, launcher: Launcher | Literal[False]
) -> dict[str, float]:
    """``n`` daemons (4 validators, the rest full nodes without a meter) started at once: wall
    seconds until every one is ready, their CPU seconds by then, and after ``idle_s`` the sum of
    their RSS, PSS and USS (with the launcher's own when there is one)."""
    lc = LocalCommunity(root, validators=4, full_nodes=n - 4, speedup=60, launcher=launcher)
    lc.create()
    try:
        t0 = time.monotonic()
        lc.start()
        for h in lc.households:
            wait_ready(h, timeout_s=300.0)
        wall = time.monotonic() - t0
        cpu = sum(proc_cpu_s(h.process.pid) for h in lc.households if h.process is not None)
        time.sleep(idle_s)
        pids = [h.process.pid for h in lc.households if h.process is not None]
        total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
        for pid in pids + ([launcher.pid] if launcher else []):
            for k, v in memory_mb(pid).items():
                total[k] += v
    finally:
        lc.stop()
    return {"wall_s": wall, "cpu_s": cpu, **total}


#: a household's record of each order it made (``gridnode.household_driver``): a line is appended
#: once the order is forecast and signed, before it is submitted — in every tree measured
PROVENANCE = Path("data") / "provenance.jsonl"


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def running(tree: Path, d: Path) -> Iterator[tuple[subprocess.Popen[bytes], float, float]]:
    """``gridnode run`` of ``tree`` (its own source on ``PYTHONPATH``) on the daemon directory
    ``d``, alone, until its ready file appears: yields the process, the monotonic time of its
    exec and the deadline (exec + 120 s) for what the caller waits for next; stopped (SIGTERM)
    on leaving."""
    ready = d / "ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with (d / "daemon.log").open("ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridnode", "run", "--dir", str(d), "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tree,
        )  # fmt: skip
    try:
        deadline = t0 + 120.0
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tree}: the daemon in {d} did not get ready; see its daemon.log")
            time.sleep(0.002)
        yield proc, t0, deadline
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def start_alone(
    tree: Path, d: Path, *, first_quote: bool = False
) -> tuple[float, float, float, float, float]:
    """:func:`running` of ``tree`` on ``d``: wall and CPU seconds from exec to its ready file,
    its RSS (MB) then, and with ``first_quote`` (a bidding household) wall and CPU seconds from
    exec to its first quote (its first order forecast and signed: a new line in its provenance
    record), else NaN; it is stopped right after."""
    quotes = _lines(d / PROVENANCE)
    with running(tree, d) as (proc, t0, deadline):
        wall = time.monotonic() - t0
        cpu = proc_cpu_s(proc.pid)
        rss = memory_mb(proc.pid)["rss"]
        quote_wall = quote_cpu = float("nan")
        while first_quote:
            if _lines(d / PROVENANCE) > quotes:
                quote_wall, quote_cpu = time.monotonic() - t0, proc_cpu_s(proc.pid)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tree}: the daemon in {d} made no quote; see its daemon.log")
            time.sleep(0.002)
    return wall, cpu, rss, quote_wall, quote_cpu


def start_pairs(root: Path, other: Path, pairs: int) -> None:
    """A validator's and two households' start-up (one with a replay meter, one with a meter
    file: :func:`write_meter_csv`), alternating between this tree and ``other`` (e.g. main,
    ``git archive``'d) ``pairs`` times in the same minutes, each daemon alone; medians."""
    lc = LocalCommunity(root, validators=4, full_nodes=2, speedup=60, launcher=False)
    lc.create()
    household, file_household = lc.households[4], lc.households[5]
    update_config(
        household.dir,
        {"meter.source": "replay", "meter.replay_hour": 11.0, "bidding.enabled": True},
    )
    use_meter_file(file_household.dir, lc.genesis.genesis_time_ms // 1000)
    trees = {"this tree": _HERE.parent, str(other): other}
    for tree in trees.values():  # bytecode into the cache, the store opened once
        start_alone(tree, lc.households[0].dir)
        start_alone(tree, household.dir, first_quote=True)
        start_alone(tree, file_household.dir, first_quote=True)
    for role, d in (
        ("validator", lc.households[0].dir),
        ("household", household.dir),
        ("household (file meter)", file_household.dir),
    ):
        load = os.getloadavg()[0]
        got: dict[str, list[tuple[float, float, float, float, float]]] = {n: [] for n in trees}
        for _ in range(pairs):
            for name, tree in trees.items():
                got[name].append(start_alone(tree, d, first_quote=role != "validator"))
        for name, rows in got.items():
            wall, cpu, rss, q_wall, q_cpu = (
                statistics.median(r[i] for r in rows) for i in range(5)
            )
            print(
                f"  {role:<22} {name:<24} n={pairs}  start-up {wall:.2f} s wall, {cpu:.2f} s CPU "
                f"(min {min(r[1] for r in rows):.2f})  |  RSS at ready {rss:.0f} MB  (medians)"
            )
            if role != "validator":
                print(
                    f"  {'':<22} {'':<24} first quote (forecaster ready: its first order "
                    f"forecast and signed) {q_wall:.2f} s wall, {q_cpu:.2f} s CPU "
                    f"(min {min(r[4] for r in rows):.2f})"
                )
        this, that = got.values()  # per pair, this tree's start then the other's, in a row
        diffs = [a[1] - b[1] for a, b in zip(this, that, strict=True)]
        print(
            f"  {'':<22} paired: this tree - {other}: median {statistics.median(diffs):+.3f} s CPU "
            f"to ready, {sum(d < 0 for d in diffs)} of {pairs} pairs lower"
        )
        print(f"  (alternating, load {load:.1f} -> {os.getloadavg()[0]:.1f})")
    load = os.getloadavg()[0]
    for _ in range(2):
        for name, tree in trees.items():
            cost = slot_cost(tree, file_household.dir / "meter.csv", root)
            print(f"  file meter, a year's CSV: {name:<24} {cost}")
    print(f"  (one row appended per slot, then a step's three meter calls; load {load:.1f})")


#: the meter file a file-meter household reads (``meter.source = "file"``): a year
METER_FILE_DAYS = 365


def write_meter_csv(path: Path, node_anchor_s: int) -> int:
    """A year of the shipped household's meter readings in node time, ending two days after
    ``node_anchor_s``, as a meter adapter writes them: ISO timestamps at the data's local
    standard time, ``pv_w`` and ``load_w``, one row per 15 minutes. Its number of rows."""
    import datetime as dt  # noqa: PLC0415

    from gridnode.meter import shipped_replay  # noqa: PLC0415 - numpy: the benchmark's side only

    h = shipped_replay(node_anchor_s=node_anchor_s, hour=11.0).history_before(
        node_anchor_s + 2 * 86_400, days=METER_FILE_DAYS
    )
    assert h.pv_w is not None and h.load_w is not None
    zone = dt.timezone(dt.timedelta(seconds=h.utc_offset_s))
    with path.open("w") as f:
        f.write("timestamp,pv_w,load_w\n")
        for i, (pv, load) in enumerate(zip(h.pv_w[0], h.load_w[0], strict=True)):
            when = dt.datetime.fromtimestamp(h.start_s + i * h.step_s, zone)
            f.write(f"{when.isoformat()},{pv:.1f},{load:.1f}\n")
    return h.steps


#: one household step's meter calls on a meter file, timed in a fresh interpreter of a tree: the
#: file read once (the first step), then per slot one row appended (the slot just delivered)
#: and the three calls a step makes (history, net reading, PV/load reading)
SLOT_COST = """\
import datetime as dt, shutil, statistics, sys, time
from pathlib import Path
from gridnode.meter import FileMeter
from market.slots import SlotClock
src, path = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copy(src, path)
last = src.read_text().rstrip().rsplit("\\n", 1)[1].split(",")[0]
end = dt.datetime.fromisoformat(last)
meter = FileMeter.checked(path) if hasattr(FileMeter, "checked") else FileMeter(path)
clock = SlotClock(slot_seconds=900)
def step(k):
    node_s = int(end.timestamp()) + 900 * (k + 1)
    meter.history_before(node_s, days=365)
    meter.slot_net_wh(node_s // 900 - 1, clock)
    meter.slot_pv_load_wh(node_s // 900 - 1, clock)
t = time.process_time()
step(0)
first = time.process_time() - t
times = []
for k in range(1, 11):
    with path.open("a") as f:
        f.write(f"{(end + dt.timedelta(minutes=15 * k)).isoformat()},100.0,200.0\\n")
    t = time.process_time()
    step(k)
    times.append(time.process_time() - t)
print(f"first step {first:.3f} s CPU, then {statistics.median(times) * 1000:.1f} ms per slot")
"""


def slot_cost(tree: Path, meter_csv: Path, work: Path) -> str:
    """:data:`SLOT_COST` run with ``tree``'s code on a copy of ``meter_csv``."""
    out = subprocess.run(
        [sys.executable, "-c", SLOT_COST, str(meter_csv), str(work / "slot-cost.csv")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
        check=True,
    )  # fmt: skip
    return out.stdout.strip()


def use_meter_file(d: Path, node_anchor_s: int) -> None:
    """Make the daemon in ``d`` a bidding household with a file meter (:func:`write_meter_csv`)."""
    write_meter_csv(d / "meter.csv", node_anchor_s)
    update_config(
        d,
        {"meter.source": "file", "bidding.meter_history": "meter.csv", "bidding.enabled": True},
    )


def print_rows(rows: dict[str, list[tuple[float, float, dict[str, float]]]], idle_s: float) -> None:
    for role, items in rows.items():
        if role == "the launcher itself":
            mem = items[0][2]
            print(
                f"  {role:<34} imports {items[0][1]:.2f} s CPU once  |  RSS {mem['rss']:.0f} MB, "
                f"PSS {mem['pss']:.0f} MB, USS {mem['uss']:.0f} MB (pages shared with its children)"
            )
            continue
        wall = statistics.median(r[0] for r in items)
        cpu = statistics.median(r[1] for r in items)
        mem = {k: statistics.median(r[2][k] for r in items) for k in ("rss", "pss", "uss")}
        print(
            f"  {role:<34} n={len(items)}  start-up {wall:.2f} s wall, {cpu:.2f} s CPU  |  "
            f"idle after {idle_s:.0f} s: RSS {mem['rss']:.0f} MB, "
            f"PSS {mem['pss']:.0f} MB, USS {mem['uss']:.0f} MB  (medians)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=2)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds to run before measuring")
    ap.add_argument(
        "--cold", action="store_true", help="no bytecode cache: compile every module at each start"
    )
    ap.add_argument(
        "--launcher",
        action="store_true",
        help="also start the same community from a pre-imported launcher (gridnode.launcher) "
        "and print both, popen first",
    )
    ap.add_argument(
        "--many",
        type=int,
        default=0,
        metavar="N",
        help="also start N daemons at once (4 validators, N-4 full nodes) and print the time "
        "until all are ready and their summed memory (with --launcher: both ways)",
    )
    ap.add_argument("--no-imports", action="store_true", help="skip the import measurements")
    ap.add_argument(
        "--against",
        type=Path,
        metavar="TREE",
        help="only: start a validator and a household alone, alternating with TREE's "
        "(another source tree, e.g. main: git -C REPO archive main | tar -x -C TREE), "
        "--pairs times each, and print both",
    )
    ap.add_argument("--pairs", type=int, default=5, help="with --against: starts per tree")
    args = ap.parse_args()
    if args.many and args.many < 5:
        ap.error("--many needs at least 5 daemons (4 validators and a household)")
    if args.against is not None and not (args.against / "gridnode" / "__init__.py").is_file():
        ap.error(f"--against {args.against}: not a gridnode source tree (no gridnode/__init__.py)")
    if args.pairs < 1:
        ap.error(f"--pairs must be >= 1, got {args.pairs}")
    if args.households < 1 or args.idle < 0:
        ap.error("--households must be >= 1 and --idle >= 0")
    with tempfile.TemporaryDirectory(prefix="gridnode-footprint-") as tmp:
        # every interpreter below (imports and daemons) inherits the bytecode setting
        if args.cold:
            os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
            os.environ.pop("PYTHONPYCACHEPREFIX", None)
        else:
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            import_cost(WARM_UP)  # fills the cache once
        print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        if args.against is not None:
            print(
                f"start-up alone (bytecode cached; exec -> ready file), this tree and "
                f"{args.against} alternating:"
            )
            start_pairs(Path(tmp) / "pairs", args.against.resolve(), args.pairs)
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            return
        if not args.no_imports:
            print(
                f"  import libp2p (plainly)          {import_cost('import libp2p', as_daemon=False)}"
            )
            parts = "import " + ", ".join(LIBP2P_PARTS)
            print(f"  py-libp2p as the daemon uses it  {import_cost(parts)}")
            print(f"  import gridnode.daemon (daemon)  {import_cost('import gridnode.daemon')}")
            print(
                "  import layers of a validator, each on top of the ones before (one interpreter, "
                "gridnode.lazyimports installed):"
            )
            for row in import_layers():
                print(row)
        how = (
            "compiled at every start (--cold)" if args.cold else "cached (as an installed package)"
        )
        ways: list[tuple[str, Launcher | Literal[False]]] = [("popen", False)]
        launcher = None
        if args.launcher:
            t0 = time.monotonic()
            launcher = Launcher.start()
            ways.append(("launcher", launcher))
            lw = time.monotonic() - t0
            print(
                f"launcher (pid {launcher.pid}) ready in {lw:.2f} s wall; its imports "
                f"{launcher.preload['cpu_s']:.2f} s CPU, {launcher.preload['modules']} modules"
            )
        try:
            for name, way in ways:
                load = os.getloadavg()[0]
                rows = start_one_by_one(Path(tmp) / f"c-{name}", args.households, args.idle, way)
                print(
                    f"{name}: bytecode {how}; start-up = "
                    + ("fork request" if way else "exec")
                    + f" -> ready file (API serving, libp2p listening); load {load:.1f} -> "
                    f"{os.getloadavg()[0]:.1f}"
                )
                print_rows(rows, args.idle)
            for name, way in ways if args.many else []:
                load = os.getloadavg()[0]
                got = start_many(Path(tmp) / f"m-{name}", args.many, args.idle, way)
                print(
                    f"{name}: {args.many} daemons started at once: all ready in "
                    f"{got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} s CPU by then; after "
                    f"{args.idle:.0f} s: RSS {got['rss']:.0f} MB, PSS {got['pss']:.0f} MB, USS "
                    f"{got['uss']:.0f} MB summed"
                    + (" (with the launcher's)" if way else "")
                    + f"; load {load:.1f} -> {os.getloadavg()[0]:.1f}"
                )
        finally:
            if launcher is not None:
                launcher.close()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
