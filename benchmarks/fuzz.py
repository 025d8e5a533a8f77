"""Fuzz every decoder a peer or a local user can reach, at length; print the figures.

    python benchmarks/fuzz.py --seed 1 [--frames 1000000] [--wire-frames 30000]
                              [--api-requests 100000] [--only inproc,wire,api]

* ``inproc``: ``--frames`` malformed wire frames (mutated valid frames and random bytes, from
  outsider, member and validator identities, on submit, submit-batch, tx, consensus, gossip and the
  framing) through a real daemon node's own dispatch in this process (``sims/fuzz.py``);
* ``wire``: ``--wire-frames`` frames over real libp2p from many identities to one daemon of a
  running community (``sims/fuzz_wire.py``), every count checked against its ``/api/status``;
* ``api``: ``--api-requests`` HTTP requests of every kind to that daemon's API
  (``sims/fuzz_api.py``).

Each part prints its figures; the exit status is 0 only when there was no crash, no HTTP 500 and
every refusal was counted with its reason (``docs/chaos.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/sims.py is named like the ``sims`` package: this folder must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import trio  # noqa: E402 - after the path fix above

from gridnode.config import load_token  # noqa: E402
from sims.fuzz import fuzz_in_process  # noqa: E402
from sims.fuzz_api import fuzz_api  # noqa: E402
from sims.fuzz_wire import fuzz_community  # noqa: E402


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", type=int, default=1_000_000, help="in-process wire frames")
    p.add_argument("--wire-frames", type=int, default=30_000, help="frames over real libp2p")
    p.add_argument("--api-requests", type=int, default=100_000)
    p.add_argument("--only", default="inproc,wire,api", help="which parts, comma-separated")
    args = p.parse_args(argv)
    parts = set(args.only.split(","))
    ok = True
    if "inproc" in parts:
        log(f"in-process: {args.frames:,} frames, seed {args.seed}")
        tally = trio.run(
            lambda: fuzz_in_process(
                args.frames, seed=args.seed, progress=lambda t: log(t.lines()[0])
            )
        )
        for line in tally.lines():
            print(line)
        for crash in tally.crashes[:10]:
            print("CRASH", crash[:500])
        ok &= tally.ok
    if parts & {"wire", "api"}:
        with tempfile.TemporaryDirectory(prefix="gn-fuzz-") as tmp, fuzz_community(Path(tmp)) as fc:
            log("community of 4 validators up (a 5th validator's key and 40 member keys held)")
            if "wire" in parts:
                tally_w = fc.run_wire(
                    args.wire_frames, seed=args.seed, progress=lambda t: log(t.lines()[0])
                )
                for line in tally_w.lines():
                    print(line)
                for failure in tally_w.failures[:10]:
                    print("FAILURE", failure[:300])
                ok &= tally_w.ok
            if "api" in parts:
                h = fc.lc.households[0]
                rss0 = fc.rss_mb(0)
                tally_a = asyncio.run(
                    fuzz_api(
                        ("127.0.0.1", h.api_port),
                        requests=args.api_requests,
                        seed=args.seed,
                        token=load_token(h.dir),
                        first_open=lambda: int(fc.lc.api(0, "/api/status")["first_open_slot"]),
                        progress=lambda t: log(t.lines()[0]),
                    )
                )
                for line in tally_a.lines():
                    print(line)
                print(f"daemon RSS {rss0:.0f} -> {fc.rss_mb(0):.0f} MB")
                for err in (tally_a.server_errors + tally_a.unknown_reasons)[:10]:
                    print("ERROR", err[:300])
                ok &= tally_a.ok
            height = fc.lc.api(0, "/api/status")["height"]
            alive = fc.lc.wait_for(lambda: fc.lc.api(0, "/api/status")["height"] > height, 60)
            tracebacks = fc.tracebacks(0)
            print(f"daemon still committing: {alive}; tracebacks/handler failures in its log: "
                  f"{len(tracebacks)}")  # fmt: skip
            for tb in tracebacks[:3]:
                print(tb[:1500])
            ok &= alive and not tracebacks
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
