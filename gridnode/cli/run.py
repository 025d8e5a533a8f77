"""``gridnode run --dir DIR``: start the household daemon.

Before anything imports numpy, ``gridnode run`` holds the numeric libraries to one thread
(:data:`BLAS_THREADS_ENV`, each only where the environment does not set it already): OpenBLAS
otherwise starts a pool of threads when numpy is loaded (≈ 0.03 s of CPU at every start of a
household, and at a validator's first order book) for a daemon whose numeric work — a
household's forecaster fit once a day, a validator's clearing — is single calls of milliseconds;
its fits come out bit for bit the same (``tests/daemon/test_startup_warm.py``). Daemons forked by
the launcher run so already (:data:`gridnode.launcher.THREAD_ENV`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any, Final

from gridnode.cli import add_dir_option

#: the numeric libraries' thread settings ``gridnode run`` sets unless the environment has them
BLAS_THREADS_ENV: Final = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="start the household daemon",
        description=(
            "Start the daemon for the household in DIR (made by `gridnode init`): join the community "
            "over libp2p, keep the ledger (and vote on blocks if this node is a validator), serve the "
            "local API and status page. Stops cleanly on Ctrl-C / SIGTERM (exit 0). Only one daemon "
            "may run on a directory. A problem you can fix stops it at start with one line (exit "
            "2, nothing changed on disk); a fatal error while running (e.g. the disk is full) "
            "stops it with one line (exit 1). docs/daemon.md lists both."
        ),
    )
    add_dir_option(p)
    p.add_argument(
        "--ready-file",
        type=Path,
        help="write the API URL and listen addresses here once serving (for scripts)",
    )
    p.add_argument(
        "--modules-file",
        type=Path,
        help="on exit, write the names of the Python modules the daemon ran here, one a line "
        "(tests and benchmarks: what a daemon imports; docs/daemon.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import gc

    # no cyclic collections while start-up imports and builds: ~260 of them, each walking what
    # the imports made so far; the daemon collects once when it serves and turns the collector
    # back on (gridnode.startup.settle_after_start) — or, if it never got there, the finally below
    gc.disable()
    try:
        return _run(args)
    finally:
        gc.enable()


def _run(args: argparse.Namespace) -> int:
    for name, value in BLAS_THREADS_ENV.items():  # read by OpenBLAS when numpy loads
        os.environ.setdefault(name, value)
    from gridnode.lazyimports import install

    install()  # before anything imports libp2p: what the daemon never runs is not loaded
    from gridnode import codecache

    codecache.install()  # the code the imports generate, as compiled at an earlier start
    from gridnode.startup import preflight

    plan = preflight(args.dir)  # the files, clock, meter and ports: refused before libp2p loads
    from gridnode.daemon import run_daemon

    try:
        return asyncio.run(run_daemon(plan, ready_file=args.ready_file))
    finally:
        codecache.save()  # if the daemon stopped before it settled (where it saves)
        if args.modules_file is not None:
            from gridnode.files import write_atomic
            from gridnode.lazyimports import loaded_modules

            write_atomic(args.modules_file, "".join(f"{name}\n" for name in loaded_modules()))
