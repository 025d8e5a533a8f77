"""CPU of the year's weekly forecaster refits, as a fit worker does them.

Builds ``sims/scenarios/year.toml``'s engine (its history and forecasters, no run), cuts the fit
windows of ``--weeks`` consecutive refit periods from ``--first-week`` on into the blocks the engine
sends to its fit workers (``sims.training``: 32 households each), and fits them one week after the
other in this process (``OPENBLAS_NUM_THREADS=1``, as the workers run) — every block, or only those
one worker gets (``--blocks 0,2``: block ``i`` goes to worker ``i % 2``). Prints the CPU seconds of
each week's fits and a SHA-256 of every fitted coefficient and band factor (the same on any tree
that fits the same numbers), then the total over the weeks after the first (a worker's first fit of
a block computes everything; the later ones reuse what they can: ``docs/forecasting.md``, *Cost*).

    OPENBLAS_NUM_THREADS=1 python benchmarks/refits.py [--weeks 18] [--first-week 0]
        [--blocks 0,2] [--cold]

``--cold`` empties profile-qr's fit memo before every fit (every fit from scratch, as before it).
``--ab`` fits every block twice, one right after the other: from scratch (an empty memo) and with
the memo of the weeks before, and prints both CPU totals (the same minutes, the same process: what
the memo saves, with the machine's other load shared alike). Compare two trees by running this file
with ``PYTHONPATH`` set to each, side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
YEAR = ROOT / "sims" / "scenarios" / "year.toml"
# this folder's forecasting.py is not the package; the package is PYTHONPATH's (a tree to
# measure) or else this repository's
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weeks", type=int, default=18, help="consecutive refit periods (default 18)")
    ap.add_argument("--first-week", type=int, default=0, help="the first period (0: the run's)")
    ap.add_argument("--blocks", default="", help="only these blocks of each fit, e.g. 0,2")
    ap.add_argument("--cold", action="store_true", help="empty the fit memo before every fit")
    ap.add_argument("--ab", action="store_true", help="each fit from scratch and with the memo")
    args = ap.parse_args(argv)
    if args.weeks < 1 or args.first_week < 0:
        print("refits: --weeks must be >= 1 and --first-week >= 0", file=sys.stderr)
        return 2
    try:
        only = [int(b) for b in args.blocks.split(",")] if args.blocks else None
    except ValueError:
        print(
            f"refits: --blocks must be block numbers like 0,2; found {args.blocks!r}",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    import numpy as np  # noqa: PLC0415 - after the BLAS thread count is set

    import forecasting.profile_qr as pq  # noqa: PLC0415
    from forecasting.solar import clear_sky_ghi_w_m2  # noqa: PLC0415
    from gridnode.household.forecast import row_blocks  # noqa: PLC0415
    from sims.inproc import _Engine  # noqa: PLC0415
    from sims.scenario import load_scenario  # noqa: PLC0415

    engine = _Engine(load_scenario(YEAR), fit_workers=0)
    training = engine.training
    first_s = engine.clock.start(engine.first_slot)
    clear_sky_ghi_w_m2(np.array([first_s]), latitude=1.0, longitude=1.0)  # pvlib's import
    print(f"{pq.__file__}  blocks {only or 'all'}  {'cold' if args.cold else 'memo'}")
    total, total_cold, whole = 0.0, 0.0, hashlib.sha256()
    for week in range(args.first_week, args.first_week + args.weeks):
        start = (first_s // training.refit_s + week) * training.refit_s if week else first_s
        jobs = []
        for k, cohort in enumerate(training.cohorts):
            history = training.history_of(cohort, start)
            if history is None:
                continue
            forecaster = training._forecasters[k][1]
            blocks = [b for _, b in row_blocks(forecaster.fit_window(history, now_s=start))]
            jobs += [
                (forecaster.model, b) for i, b in enumerate(blocks) if only is None or i in only
            ]
        fitted, cpu, cpu_cold = [], 0.0, 0.0
        for model, block in jobs:
            if args.ab:  # from scratch first, in a memo of its own
                memo = pq._FIT_MEMO
                pq._FIT_MEMO = pq._FitMemo(pq.FIT_MEMO_BLOCKS)  # type: ignore[misc]
                t = time.process_time()
                cold = model.fit(block)
                cpu_cold += time.process_time() - t
                pq._FIT_MEMO = memo  # type: ignore[misc]
            elif args.cold:
                pq._FIT_MEMO.clear()
            t = time.process_time()
            fitted.append(model.fit(block))
            cpu += time.process_time() - t
            if args.ab:  # the same numbers either way
                assert isinstance(cold, pq.FittedProfileQR)
                assert isinstance(fitted[-1], pq.FittedProfileQR)
                assert cold.coefs.tobytes() == fitted[-1].coefs.tobytes()
        digest = hashlib.sha256()
        for f in fitted:
            assert isinstance(f, pq.FittedProfileQR)
            digest.update(f.coefs.tobytes() + f.band_scales.tobytes())
        whole.update(digest.digest())
        if week > args.first_week:
            total += cpu
            total_cold += cpu_cold
        scratch = f"  from scratch {cpu_cold:6.2f}" if args.ab else ""
        print(f"week {week:3d}: {cpu:6.2f} CPU-s{scratch}  {len(jobs)} blocks  "
              f"{digest.hexdigest()[:16]}", flush=True)  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    scratch = f" (from scratch {total_cold:.2f})" if args.ab else ""
    print(f"weeks after the first: {total:.2f} CPU-s{scratch}; all {whole.hexdigest()[:16]}; "
          f"peak RSS {rss} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
