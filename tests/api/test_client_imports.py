"""The client commands start fast: they import only the standard library and tiny modules of ours.

An import-graph test, not a timed one: each command runs in a fresh interpreter against a live API
(the real in-process node) and reports which modules it loaded. ``benchmarks/client.py`` prints the
time a call takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import ServerThread
from tests.api.test_cli_client import make_dir

ROOT = Path(__file__).resolve().parents[2]
#: what a client command must never load (each costs 0.1-0.9 s to import)
HEAVY = ("numpy", "pandas", "pyarrow", "libp2p", "trio", "aiohttp", "statsmodels", "plotly")

PROBE = """
import sys, json
from gridnode.cli import main
code = main(sys.argv[1:])
roots = sorted({m.split(".")[0] for m in sys.modules})
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("gridnode", "market", "forecasting", "sims"))
print(json.dumps({"code": code, "roots": roots, "ours": ours}))
"""


def loaded(*argv: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("order", "place", "--side", "sell", "--step", "120000:800", "--slot", str(FIRST_OPEN)),
        ("order", "list"),
        ("trades",),
        ("balance",),
        ("peers",),
    ],
)
def test_client_commands_import_no_heavy_module(argv: tuple[str, ...], tmp_path: Path) -> None:
    with ServerThread(LocalNode()) as server:
        home = make_dir(tmp_path / "home", server.port)
        doc = loaded(argv[0], *argv[1:], "--dir", str(home))
    assert doc["code"] == 0
    heavy = sorted(set(HEAVY) & set(doc["roots"]))  # type: ignore[arg-type]
    assert heavy == [], f"gridnode {' '.join(argv)} imported {heavy}"
    ours = set(doc["ours"])  # type: ignore[arg-type]
    assert "gridnode.cli.client" in ours
    assert not ours & {
        "gridnode.core.ledger",
        "market.clearing",
        "gridnode.cli.demo",
        "gridnode.cli.sim",
    }


def test_the_full_command_line_still_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gridnode", "--help"],
        check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    for command in ("demo", "sim", "init", "run", "status", "order", "forecast", "clear"):
        assert command in out.stdout
