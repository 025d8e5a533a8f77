"""Federated rounds between N real daemons over libp2p: completion, round wall time, bytes.

Starts a community of ``gridnode run`` processes on loopback (``sims.daemons.LocalCommunity``: 4
validators + N − 4 full nodes, every one a member with a replay meter of the shipped household on
its own days, ``training.mode = "federated"``, bidding off so the daemons' CPU goes to consensus,
readings and the rounds), clock 60x. Rounds run every ``--round-every`` node seconds (1800: 30 s of
wall time); a daemon aggregates only periods that begin after it started, and the validators take
turns. After every daemon is ready the script waits for ``--rounds`` rounds whose period began
after that and prints, per round, from the aggregator's log line: outcome, contributors of invited,
attempts, wall seconds (invitation window of 5 s included), payload bytes the aggregator received
(masked updates and reveals) and sent (requests), and how many members adopted the model (checked
via each daemon's ``/api/model``). Then the daemons' total CPU seconds.

    python benchmarks/federated_daemons.py [--nodes 50] [--rounds 2] [--round-every 1800]
        [--dp-epsilon E [--dp-rounds R]]

``--dp-epsilon``: every household sets ``[training] dp_epsilon`` (its total ε over ``--dp-rounds``
rounds, δ = 10⁻⁵): the rounds run with differential privacy (``docs/federated.md``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

# this folder holds a ``sims.py``: when run as a script, the folder must not shadow the sims package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from gridnode.config import update_config  # noqa: E402 - after the path fix
from sims.daemons import LocalCommunity  # noqa: E402

_ROUND = re.compile(
    r"^(\S+ \S+) INFO gridnode: federated round (\d+): (.+?), (\d+) of (\d+) invited contributed "
    r"in ([\d.]+) s \((\d+) attempts, (\d+) bytes in, (\d+) bytes out; (\d+) answered, "
    r"(\d+) joined\)",
    re.MULTILINE,
)


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--round-every", type=int, default=1800, help="node seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="wall seconds in all")
    ap.add_argument("--keep", action="store_true", help="keep the daemons' directories (logs)")
    ap.add_argument("--dp-epsilon", type=float, help="DP: every household's total ε (δ = 1e-5)")
    ap.add_argument("--dp-rounds", type=int, default=0, help="DP: the horizon (0: a year)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gn-fedbench-"))
    lc = LocalCommunity(root, validators=4, full_nodes=args.nodes - 4, speedup=60)
    t0 = time.monotonic()
    lc.create()
    for h in lc.households:
        update_config(
            h.dir,
            {
                "meter.source": "replay",
                "meter.replay_day_offset": 2 * (h.index % 60),
                "bidding.enabled": False,
                "training.mode": "federated",
                "training.round_every_s": args.round_every,
            }
            | (
                {"training.dp_epsilon": args.dp_epsilon, "training.dp_rounds": args.dp_rounds}
                if args.dp_epsilon is not None
                else {}
            ),
        )
    print(f"{args.nodes} daemons created in {time.monotonic() - t0:.1f} s under {root}")
    try:
        lc.start()
        lc.wait_ready(600)
        ready_wall = time.time()
        print(f"all ready {time.monotonic() - t0:.1f} s after the start")
        wanted: dict[int, re.Match[str]] = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(wanted) < args.rounds:
            for v in range(4):
                text = (lc.households[v].dir / "daemon.log").read_text(errors="replace")
                for m in _ROUND.finditer(text):
                    stamp = time.mktime(
                        time.strptime(m.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S")
                    )
                    started = stamp - float(m.group(6))
                    if started > ready_wall + 1 and int(m.group(2)) not in wanted:
                        wanted[int(m.group(2))] = m
            time.sleep(1.0)
        print(
            "round  outcome      contributors/invited  answered  joined  attempts  wall s  "
            "bytes in  bytes out"
        )
        for rnd, m in sorted(wanted.items()):
            print(
                f"{rnd:5d}  {m.group(3):<11}  {m.group(4):>5} / {m.group(5):<13}  "
                f"{m.group(10):>8}  {m.group(11):>6}  {m.group(7):>8}  {float(m.group(6)):6.2f}  {int(m.group(8)):8,}  "
                f"{int(m.group(9)):9,}"
            )
        if wanted:
            time.sleep(5.0)
            last = max(wanted)
            adopted = 0
            for i in range(args.nodes):
                try:
                    committed = lc.api(i, "/api/model")["committed"]
                except Exception:
                    continue
                adopted += any(c["round"] == last for c in committed)
            print(f"round {last}'s model on the ledger of {adopted} of {args.nodes} daemons")
        if len(wanted) < args.rounds:
            print(f"only {len(wanted)} of {args.rounds} rounds completed within the timeout")
        cpu = sum(_cpu_s(h.process.pid) for h in lc.households if h.process is not None)
        print(f"daemons' CPU: {cpu:.0f} s over {time.monotonic() - t0:.0f} s of wall time")
    finally:
        lc.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if len(wanted) >= args.rounds else 1


if __name__ == "__main__":
    raise SystemExit(main())
