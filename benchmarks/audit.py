"""Bill proofs over a real chain: how big they are and how fast they verify, for every household.

Replays an export (``gridnode sim SCENARIO --chain FILE``) to the height that settled ``--slot``
(default: the slot with the most trades), then cuts every household's bill proof of that slot
(its account and its settled slot: trades, reading, bill line) and verifies each from the genesis
alone, as ``gridnode verify-bill`` does. Prints the sizes (median, p90, p99, max; how many are
≤ 4 KB) and the verification times (each proof verified ``--repeat`` times, the best kept).

    python benchmarks/audit.py CHAIN.gnc [--slot S] [--households N] [--repeat 3] [--out DIR]

``--out DIR`` also writes the largest and the median proof there (for ``gridnode verify-bill``).
The audit's own figures come from ``gridnode audit`` (docs/audit.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# this file is named like nothing in the tree, but keep the repository root importable as a script
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from gridnode.audit import BlockPipeline, open_chain  # noqa: E402 - after the path fix above
from gridnode.core.ledger import decode_block  # noqa: E402
from gridnode.core.ledger.proofs import BillProver, verify_bill_proof  # noqa: E402


def _busiest_slot(path: Path) -> int:
    src = open_chain(path)
    counts: Counter[int] = Counter()
    pipeline = BlockPipeline(src, jobs=os.cpu_count() or 1)
    try:
        for _, facts, _ in pipeline.batches():
            for f in facts:
                for c in f.cleared:
                    counts[c.slot] += len(c.trades)
    finally:
        pipeline.close()
        src.close()
    return counts.most_common(1)[0][0]


def _state_at_settlement(path: Path, slot: int) -> tuple[Any, bytes, bytes]:
    src = open_chain(path)
    hit: list[Any] = []

    def after(height: int, state: Any) -> None:
        if not hit and slot in state.settled:
            hit.append(state)

    pipeline = BlockPipeline(src, jobs=os.cpu_count() or 1, after_block=after)
    try:
        for batch, _, _ in pipeline.batches():
            if hit:
                _, block, commit = next(b for b in batch if b[0] == hit[0].height)
                return hit[0], decode_block(block).header.raw, commit
    finally:
        pipeline.close()
        src.close()
    raise SystemExit(f"slot {slot} was never settled on this chain")


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("chain", type=Path)
    ap.add_argument("--slot", type=int)
    ap.add_argument("--households", type=int, help="only the first N members")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    slot = args.slot if args.slot is not None else _busiest_slot(args.chain)
    state, header, commit = _state_at_settlement(args.chain, slot)
    replay_s = time.perf_counter() - t0
    genesis = state.genesis
    members = genesis.members[: args.households] if args.households else genesis.members
    t0 = time.perf_counter()
    prover = BillProver(state, header, commit)
    tree_ms = (time.perf_counter() - t0) * 1000
    sizes: list[float] = []
    verify_ms: list[float] = []
    cut_ms: list[float] = []
    proofs: dict[str, bytes] = {}
    trades: list[float] = []
    for h in members:
        t = time.perf_counter()
        data = prover.proof(h, [slot])
        cut_ms.append((time.perf_counter() - t) * 1000)
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            bill = verify_bill_proof(genesis, data)
            best = min(best, (time.perf_counter() - t) * 1000)
        verify_ms.append(best)
        sizes.append(len(data))
        trades.append(len(bill.slots[0].trades))
        proofs[h] = data
    n = len(sizes)
    print(
        f"slot {slot} settled at height {state.height}; {len(genesis.members)} members, "
        f"{len(genesis.validators)} validators; replay to it {replay_s:.1f} s; trees "
        f"{tree_ms:.0f} ms; {n} households' bill proofs (account + the settled slot):"
    )
    print(
        f"  size bytes: median {_pct(sizes, 0.5):,.0f}, p90 {_pct(sizes, 0.9):,.0f}, "
        f"p99 {_pct(sizes, 0.99):,.0f}, max {max(sizes):,.0f}; "
        f"{sum(1 for s in sizes if s <= 4096)} of {n} ≤ 4 KB"
    )
    print(
        f"  trades in the slot per household: median {_pct(trades, 0.5):.0f}, max {max(trades):.0f}"
    )
    print(
        f"  verify ms (best of {args.repeat}): median {_pct(verify_ms, 0.5):.2f}, "
        f"p99 {_pct(verify_ms, 0.99):.2f}, max {max(verify_ms):.2f}; "
        f"cut ms: median {_pct(cut_ms, 0.5):.2f}"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        order = sorted(proofs, key=lambda h: len(proofs[h]))
        for name, h in (("median", order[len(order) // 2]), ("largest", order[-1])):
            (args.out / f"bill-{name}.proof").write_bytes(proofs[h])
        print(f"  wrote {args.out}/bill-median.proof and bill-largest.proof")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
