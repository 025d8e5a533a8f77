"""`gridnode init` / `run` as a user meets them: refusals, bad config, lock, clean stop on SIGINT."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode.config import load_config, update_config
from gridnode.store import NodeStore
from market.errors import UsageError
from sims.daemons import LocalCommunity


def gridnode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_init_refuses_to_overwrite_and_bad_config_names_the_key(tmp_path: Path) -> None:
    d = tmp_path / "home"
    first = gridnode("init", "--dir", str(d))
    assert first.returncode == 0, first.stderr
    assert "household id" in first.stdout
    again = gridnode("init", "--dir", str(d))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    cfg = d / "gridnode.toml"
    cfg.write_text(cfg.read_text() + "\n[api]\ncolour = 1\n")
    bad = gridnode("run", "--dir", str(d))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1  # one line, no traceback
    assert "gridnode.toml" in bad.stderr and "api" in bad.stderr


def test_bad_value_and_missing_genesis(tmp_path: Path) -> None:
    d = tmp_path / "home"
    assert gridnode("init", "--dir", str(d)).returncode == 0
    missing = gridnode("run", "--dir", str(d))
    assert missing.returncode == 2 and "genesis" in missing.stderr
    text = (d / "gridnode.toml").read_text().replace("port = 8470", 'port = "eighty"')
    (d / "gridnode.toml").write_text(text)
    bad = gridnode("run", "--dir", str(d))
    assert bad.returncode == 2 and "api.port must be an integer" in bad.stderr


def test_bidding_policy_is_checked_and_perfect_foresight_needs_a_replay_meter(
    tmp_path: Path,
) -> None:
    d = tmp_path / "home"
    assert gridnode("init", "--dir", str(d)).returncode == 0
    cfg = d / "gridnode.toml"
    assert 'policy = "forecast"' in cfg.read_text()  # in the commented template
    assert load_config(d).bidding_policy == "forecast"
    cfg.write_text(cfg.read_text().replace('policy = "forecast"', 'policy = "psychic"'))
    bad = gridnode("run", "--dir", str(d))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert (
        "bidding.policy must be one of forecast, naive-fixed-price, perfect-foresight, "
        "got 'psychic'" in bad.stderr
    )
    with pytest.raises(UsageError, match=r"needs meter\.source = 'replay' or 'file', got 'none'"):
        update_config(d, {"bidding.policy": "perfect-foresight"})
    with pytest.raises(UsageError, match=r"needs meter\.source = 'replay' or 'file', got 'mqtt'"):
        update_config(
            d,
            {
                "bidding.policy": "perfect-foresight",
                "meter.source": "mqtt",
                "meter.mqtt_url": "mqtt://localhost",
                "meter.mqtt_topic": ["tele/meter/SENSOR"],
            },
        )
    update_config(d, {"bidding.policy": "naive-fixed-price", "meter.source": "file"})
    assert load_config(d).bidding_policy == "naive-fixed-price"
    # a meter file written ahead (the daemon engine's real homes) can be read ahead
    update_config(d, {"bidding.policy": "perfect-foresight", "meter.source": "file"})
    update_config(d, {"bidding.policy": "perfect-foresight", "meter.source": "replay"})
    assert load_config(d).bidding_policy == "perfect-foresight"


@pytest.mark.net
def test_second_daemon_is_refused_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, speedup=60)
    lc.create()
    update_config(lc.households[0].dir, {"logging.level": "info"})
    lc.start()
    try:
        lc.wait_ready(60)
        second = gridnode("run", "--dir", str(lc.households[0].dir))
        assert second.returncode == 2
        assert "already running" in second.stderr or "in use" in second.stderr
        proc = lc.households[0].process
        assert proc is not None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 10
    finally:
        lc.stop()
    log = (lc.households[0].dir / "daemon.log").read_text()
    assert "stopping" in log and "Traceback" not in log


@pytest.mark.net
def test_a_household_whose_validators_are_gone_keeps_running(tmp_path: Path) -> None:
    """Bidding and meter readings with no validator reachable: warned about, retried, never fatal."""
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60)
    lc.create()
    household = lc.households[1].dir
    update_config(
        household, {"meter.source": "replay", "meter.pv_scale": 2.0, "bidding.enabled": True}
    )
    lc.start()
    try:
        lc.wait_ready(60)
        lc.kill(0)  # the only validator is gone
        log = household / "daemon.log"
        assert lc.wait_for(lambda: "household step: " in log.read_text(), 90)
        proc = lc.households[1].process
        assert proc is not None and proc.poll() is None
        # the validator comes back: the household's loop is still alive and its quotes get committed
        lc.start(which=[0])
        lc.wait_ready(60, which=[0])
        me = lc.households[1].key.public_hex
        assert lc.wait_for(
            lambda: any(o["household"] == me for o in lc.api(0, "/api/orders")["orders"]), 90
        )
    finally:
        lc.stop()
    # quiet, timestamped logs: the dead validator is a warning of ours, not py-libp2p's noise
    lines = [line for line in (household / "daemon.log").read_text().splitlines() if line]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", x) for x in lines), lines
    assert not any("Failed to open TCP stream" in x for x in lines)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs to fill up for real (needs root to mount, as in CI and on the dev box)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.net
def test_a_full_disk_stops_the_daemon_with_one_line_instead_of_a_zombie(
    tmp_path: Path, small_disk: Path
) -> None:
    """Issue 11.3: the disk fills under a running validator. It used to keep serving /api/status
    with a frozen height (its node task dead with a traceback); now it stops: the API goes away,
    one CRITICAL line says why, exit 1, and the store is sound for a restart once space is freed."""
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, speedup=60)
    lc.create()
    update_config(lc.households[0].dir, {"node.data_dir": str(small_disk / "data")})
    lc.start()
    proc = lc.households[0].process
    assert proc is not None
    try:
        lc.wait_ready(60)
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 3, 60)
        filler = small_disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:  # until ENOSPC
                f.write(b"\0" * 65536)
                f.flush()
        code = proc.wait(timeout=60)
    finally:
        lc.stop()
    assert code == 1
    log = (lc.households[0].dir / "daemon.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    fatal = [line for line in log.splitlines() if " CRITICAL " in line]
    assert len(fatal) == 1, log[-3000:]
    assert "fatal: store " in fatal[0] and "database or disk is full" in fatal[0]
    assert fatal[0].endswith("the daemon stops (exit 1)")
    with pytest.raises(urllib.error.URLError):
        lc.api(0, "/api/status", timeout_s=2)
    filler.unlink()
    with NodeStore.open(small_disk / "data" / "node.sqlite") as store:
        head = store.head()
        assert head is not None and head.height >= 3
        assert store.integrity_check() == "ok"


def test_a_start_up_that_fails_turns_the_garbage_collector_back_on(tmp_path: Path) -> None:
    """`gridnode run` switches cyclic collection off while it starts; a start-up refused before
    the daemon serves (here: no community directory) must leave it on for the caller."""
    import argparse
    import gc

    from gridnode.cli.run import run

    assert gc.isenabled()
    with pytest.raises(UsageError):
        run(argparse.Namespace(dir=tmp_path / "no-such-home", modules_file=None))
    assert gc.isenabled()


def test_a_listen_address_that_is_not_tcp_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    d = tmp_path / "home"
    assert gridnode("init", "--dir", str(d)).returncode == 0
    made = gridnode(
        "community", "create", "--id", "t", "--validator", str(d), "--member", str(d),
        "--out", str(d / "genesis.toml"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    update_config(d, {"network.listen": ["/ip4/127.0.0.1/udp/0/quic-v1"]})
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    refused = gridnode("run", "--dir", str(d))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"gridnode run: error: {d / 'gridnode.toml'}: [network] "
        "listen address '/ip4/127.0.0.1/udp/0/quic-v1': "
        "expected a TCP address (/ip4/…/tcp/…)"
    ]
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
