"""How long a client command takes, end to end: a fresh ``gridnode`` process, its imports, one or
two HTTP requests to a live local API (the real in-process node of the API tests), the output.

    python benchmarks/client.py [--runs 15]

Prints the wall time (min and median) and the process's CPU time (user + system, median) per
command; on a busy machine the CPU time is the better estimate of the idle wall time. The target is <= 150 ms on an idle
machine (docs/api.md); the imports are kept to the standard library and a few small modules of
ours, which ``tests/api/test_client_imports.py`` checks (``python -X importtime -m gridnode
status --dir DIR`` shows them).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.node import FIRST_OPEN, LocalNode  # noqa: E402
from tests.api.server import ServerThread  # noqa: E402
from tests.api.test_cli_client import make_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp, ServerThread(LocalNode()) as server:
        home = make_dir(Path(tmp) / "home", server.port)
        commands = {
            "gridnode status": ["status"],
            "gridnode order place": [
                "order", "place", "--slot", str(FIRST_OPEN), "--side", "sell", "--step", "120000:800",
            ],
            "gridnode balance": ["balance"],
        }  # fmt: skip
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for name, argv in commands.items():
            times, cpu = [], []
            for _ in range(args.runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "gridnode", *argv, "--dir", str(home)],
                    check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                )  # fmt: skip
                times.append((time.perf_counter() - start) * 1000)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                cpu.append(used * 1000)
            print(
                f"{name:22} wall min {min(times):4.0f} / median {statistics.median(times):4.0f} ms, "
                f"CPU median {statistics.median(cpu):4.0f} ms  ({args.runs} runs)"
            )


if __name__ == "__main__":
    main()
