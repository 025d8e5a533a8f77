"""Chaos on real daemons in network namespaces: kill -9 storms, restarts, partitions, latency, loss.

    python benchmarks/chaos.py --seed 1 --kills 300 --partitions 50 [--out DIR]

Runs as root on Linux (network namespaces; see ``docs/chaos.md``). Prints one line per event and
the figures at the end; writes ``report.json`` (every heal's recovery time, RSS maxima, evidence,
lost orders) under ``--out``. Exit status 0 only when every check held.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/sims.py is named like the ``sims`` package: this folder must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from sims.chaos import ChaosConfig, ChaosRun  # noqa: E402 - after the path fix above
from sims.netns import netlab_unavailable  # noqa: E402 - after the path fix above


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kills", type=int, default=300, help="kill -9 of daemons, at least")
    p.add_argument("--partitions", type=int, default=50)
    p.add_argument("--full-nodes", type=int, default=1, help="households besides 4 validators")
    p.add_argument("--speedup", type=int, default=60, help="community clock speed-up")
    p.add_argument("--out", type=Path, default=None, help="where the community and report go")
    args = p.parse_args(argv)
    # SIGINT and SIGTERM end the run cleanly (daemons stopped, namespaces removed), also when it
    # was started in the background (where the shell ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    why = netlab_unavailable()
    if why is not None:
        print(f"chaos: cannot run here: {why}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix=f"chaos-{args.seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    config = ChaosConfig(
        seed=args.seed,
        kills=args.kills,
        partitions=args.partitions,
        full_nodes=args.full_nodes,
        speedup=args.speedup,
    )

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    run = ChaosRun(out / "community", config, log=log)
    log(f"{len(run.events)} events planned; community under {out / 'community'}")
    report = run.run()
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    for line in report.lines():
        print(line)
    print(f"report: {out / 'report.json'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
