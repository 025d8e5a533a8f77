"""``benchmarks/daemon_footprint.py`` refuses bad arguments with one line and exit 2, before it
starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--against", "/nonexistent"], "--against /nonexistent: not a gridnode source tree"),
        (["--pairs", "0"], "--pairs must be >= 1, got 0"),
        (["--households", "0"], "--households must be >= 1 and --idle >= 0"),
        (["--many", "3"], "--many needs at least 5 daemons"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], line: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "daemon_footprint.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines()[-1].startswith(f"daemon_footprint.py: error: {line}")
    assert "Traceback" not in out.stderr
