"""``benchmarks/sims.py --year/--town`` splits its children's CPU by role: what it reads from
``/proc`` for a live fit worker is that worker's CPU, as the kernel reports it once it has ended."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchscripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # load_benchmark registers bench_sims; the monkeypatch takes it out again after the test
    monkeypatch.setitem(sys.modules, "bench_sims", ModuleType("bench_sims"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts the repository first on the path
    return load_benchmark("sims")


def test_a_fit_workers_cpu_is_read_by_role_at_the_last_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench(monkeypatch)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sims.fitpool", "0"],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdin is not None
    try:
        while (bench._cpu_s(proc.pid) or 0.0) < 0.05:  # started: importing its modules
            assert proc.poll() is None
        memory = bench._Memory(96, last_slot=5)
        memory.sample(3)  # not a day's end nor the last slot: roles and memory only
        assert memory.roles.get(proc.pid) == "fit"
        assert memory.cpu == {}
        proc.stdin.close()  # the worker ends at its input's end; read it before it is reaped
        read = None
        while proc.poll() is None:
            read = bench._cpu_s(proc.pid) or read
            memory.sample(5)
    finally:
        proc.stdin.close()
        proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # /proc counts user and system time in clock ticks (10 ms), the kernel's rusage in µs: the
    # two can differ by a few ticks either way (CI once read 0.20 against 0.182)
    assert read is not None and 0.05 <= memory.cpu_by_role("fit") <= total + 0.05
    assert total - memory.cpu_by_role("fit") < 0.2  # what it used after the last read
    assert memory.cpu_by_role("full node") == 0.0
    assert bench._cpu_s(proc.pid) is None  # gone
