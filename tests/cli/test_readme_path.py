"""The path a user takes (README "Run a household"), with real processes: it is the one tested.

Issue 11.8: ``community create`` wrote ``max_drift_ms = 5000`` whatever the clock speed (the demo's
launcher scaled it by hand, so tests never saw it) and at 60x a restarted validator's proposals
went uncommitted for up to a minute. The genesis now carries the clock speed-up and the drift bound
in community time; a community made with the CLI trades and takes a restarted validator back.
Issue 14: ``--dir`` defaults, ``gridnode id``, no traceback on a closed pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gridnode.config import load_genesis
from tests.cli.readme_path import gridnode, ok, readme_community, wait_for

DIR_ENV = "GRIDNODE_DIR"


def test_community_create_puts_the_clock_and_a_drift_bound_for_it_in_the_genesis(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        ok("init", "--dir", str(d), "--role", "validator")
    before_ms = time.time_ns() // 1_000_000
    fast = tmp_path / "fast.toml"
    out = ok("community", "create", "--id", "s", "--member", str(a), "--validator", str(a),
             "--validator", str(b), "--clock-speedup", "60", "--out", str(fast))  # fmt: skip
    assert "community clock: 60x" in out and "drift bound 300000 ms" in out
    g = load_genesis(fast)
    assert g.clock_speedup == 60
    assert g.max_drift_ms == 5_000 * 60  # 5 s of wall time, in community time
    assert before_ms - 1_000 <= g.genesis_time_ms <= time.time_ns() // 1_000_000  # "now"
    real = tmp_path / "real.toml"
    ok("community", "create", "--id", "s", "--member", str(a), "--validator", str(a),
       "--out", str(real))  # fmt: skip
    g1 = load_genesis(real)
    assert (g1.clock_speedup, g1.max_drift_ms, g1.genesis_time_ms) == (1, 5_000, 0)
    assert "clock_speedup" not in real.read_text()  # a real-time genesis keeps its old hash
    bad = gridnode("community", "create", "--id", "s", "--member", str(a), "--validator",
                   str(a), "--clock-speedup", "60", "--genesis-time-ms", "0", "--out",
                   str(tmp_path / "bad.toml"))  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "clock_speedup 60 needs a genesis_time_ms" in bad.stderr
    assert not (tmp_path / "bad.toml").exists()


def test_dir_defaults_to_gridnode_dir_then_xdg_data_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != DIR_ENV}
    env |= {"XDG_DATA_HOME": str(xdg), "HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "gridnode", "init"], capture_output=True,
                          text=True, env=env, check=False, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (xdg / "gridnode" / "identity.key").is_file()
    assert f"created {xdg / 'gridnode'}" in done.stdout
    other = tmp_path / "other"
    ok("init", "--dir", str(other))
    shown = gridnode("id", "--json", env={DIR_ENV: str(other)})
    assert shown.returncode == 0, shown.stderr
    me = json.loads(shown.stdout)
    assert (other / "identity.key").read_text().strip() != me["household"]  # the public key
    assert me["peer_id"].startswith("12D3KooW") and me["role"] == "full"
    assert me["addrs"] == [f"/ip4/0.0.0.0/tcp/4001/p2p/{me['peer_id']}"]
    assert (
        "household id (public key): " + me["household"]
        in gridnode("id", env={DIR_ENV: str(other)}).stdout
    )
    missing = gridnode("id", env={DIR_ENV: str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nowhere: no such household directory; run `gridnode init --dir" in missing.stderr


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``gridnode ARGS`` with stdout a pipe whose reader has gone (``… | head`` after it
    exited): every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "gridnode", *args], stdout=write,
                              stderr=subprocess.PIPE, check=False, timeout=60)  # fmt: skip
    finally:
        os.close(write)


@pytest.mark.net
def test_a_readme_made_community_trades_and_takes_a_restarted_validator_back(
    tmp_path: Path,
) -> None:
    nodes = readme_community(tmp_path, validators=4, full_nodes=1, speedup=60)
    for n in nodes:
        n.start()
    try:
        for n in nodes:
            n.wait_ready(90)

        def api(i: int, path: str) -> dict[str, Any]:
            port = tomllib.loads((nodes[i].dir / "gridnode.toml").read_text())["api"]["port"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc

        def height(i: int) -> int:
            return int(api(i, "/api/status")["height"])

        assert wait_for(lambda: all(height(i) >= 3 for i in range(5)), 90)
        assert json.loads(ok("status", "--dir", str(nodes[4].dir), "--json"))["height"] >= 3
        # a household places an order with the CLI; the community commits it
        slot = int(api(4, "/api/status")["first_open_slot"]) + 2  # 30 s of margin at 60x
        placed = ok("order", "place", "--dir", str(nodes[4].dir), "--slot", str(slot), "--side",
                    "sell", "--step", "120000:800")  # fmt: skip
        assert "submitted" in placed
        assert wait_for(
            lambda: "sell" in ok("order", "list", "--dir", str(nodes[0].dir), "--all"), 60
        )

        # the clients never leave a traceback on a closed pipe
        for args in (("status", "--json"), ("id",), ("peers",)):
            piped = closed_pipe_run(*args, "--dir", str(nodes[0].dir))
            assert piped.returncode == 141 and piped.stderr == b"", (args, piped.stderr)

        # a validator restarts: its own proposals are committed again (the drift bound fits 60x)
        restarted = nodes[3]
        assert restarted.stop() == 0
        me = tomllib.loads((restarted.dir / "genesis.toml").read_text())["genesis"]["validators"]
        key = json.loads(ok("id", "--dir", str(restarted.dir), "--json"))["household"]
        assert key in me
        back_at = height(0)
        restarted.start()
        restarted.wait_ready(90)

        def proposed_by_restarted() -> bool:
            blocks = api(0, f"/api/blocks?from={back_at + 1}&limit=100")["blocks"]
            return any(b["proposer"] == key for b in blocks)

        assert wait_for(proposed_by_restarted, 60)
        assert min(height(i) for i in range(5)) > back_at
    finally:
        codes = [n.stop() for n in nodes]
    assert codes == [0] * 5
    for n in nodes:
        log = (n.dir / "daemon.log").read_text()
        assert "Traceback" not in log, log[-3000:]
