"""Daemons forked from one pre-imported launcher (``gridnode.launcher``) behave as ``gridnode run``
processes do: they get ready, trade, stop on SIGTERM/SIGINT with 0, report -9 when killed, restart;
a daemon that refuses to start reports its exit code and log; no daemon outlives its launcher, nor
a launcher its caller. Real daemons on loopback, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode.config import update_config
from gridnode.launcher import LaunchedProcess, Launcher, LauncherGone
from sims.daemons import LocalCommunity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    with Launcher.start() as started:
        yield started


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _launched(lc: LocalCommunity, index: int) -> LaunchedProcess:
    proc = lc.households[index].process
    assert isinstance(proc, LaunchedProcess)
    return proc


@pytest.mark.net
@pytest.mark.timeout(240)
def test_launched_daemons_trade_stop_and_restart_like_popen_ones(
    tmp_path: Path, launcher: Launcher
) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=launcher)
    lc.create()
    household = lc.households[1]
    update_config(
        household.dir, {"meter.source": "replay", "meter.pv_scale": 2.0, "bidding.enabled": True}
    )
    try:
        lc.start(which=[0])
        lc.start(which=[1], nice=7)
        lc.wait_ready(90)
        validator, member = _launched(lc, 0), _launched(lc, 1)
        # a daemon of its own: its session, the launcher its parent, the caller's niceness + 7
        for proc in (validator, member):
            assert os.getsid(proc.pid) == proc.pid
            assert os.getpgid(proc.pid) == proc.pid
            ppid = Path(f"/proc/{proc.pid}/status").read_text().split("PPid:")[1].split()[0]
            assert int(ppid) == launcher.pid
        mine = os.getpriority(os.PRIO_PROCESS, os.getpid())
        assert os.getpriority(os.PRIO_PROCESS, validator.pid) == mine
        assert os.getpriority(os.PRIO_PROCESS, member.pid) == min(19, mine + 7)
        # the household forecasts, quotes and its orders reach the validator's ledger
        me = household.key.public_hex
        assert lc.wait_for(
            lambda: any(o["household"] == me for o in lc.api(0, "/api/orders")["orders"]), 120
        )
        # SIGKILL: -9, as subprocess reports it; restarted, it serves the chain it had
        height = lc.api(0, "/api/status")["height"]
        lc.kill(0)
        assert validator.returncode == -signal.SIGKILL
        assert validator.poll() == -signal.SIGKILL
        validator.send_signal(signal.SIGTERM)  # after its exit: nothing, as Popen does
        lc.start(which=[0])
        lc.wait_ready(60, which=[0])
        again = _launched(lc, 0)
        assert again.pid != validator.pid
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] > height, 60)
        # SIGINT (own session: only when sent to it) and SIGTERM stop cleanly with 0
        again.send_signal(signal.SIGINT)
        assert again.wait(30) == 0
        with pytest.raises(subprocess.TimeoutExpired):
            member.wait(0.2)
        member.terminate()
        assert member.wait(30) == 0
    finally:
        lc.stop()
    log = (lc.households[0].dir / "daemon.log").read_text()
    assert log.count("stopping") == 1 and "Traceback" not in log


@pytest.mark.net
@pytest.mark.timeout(120)
def test_a_daemon_that_refuses_to_start_reports_its_code_and_log(
    tmp_path: Path, launcher: Launcher
) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, launcher=launcher)
    lc.create()
    update_config(lc.households[0].dir, {"bidding.enabled": True})  # no meter to bid from
    lc.start()
    with pytest.raises(
        RuntimeError, match=r"(?s)v0 exited with 2:\n.*bidding.enabled = true needs"
    ):
        lc.wait_ready(60)
    assert _launched(lc, 0).returncode == 2


def test_an_environment_the_launcher_did_not_start_with_is_refused(
    tmp_path: Path, launcher: Launcher
) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "7" if os.environ.get("PYTHONHASHSEED") != "7" else "8"}
    with pytest.raises(ValueError, match="other PYTHONHASHSEED"):
        launcher.spawn(["--help"], log=tmp_path / "log", env=env)
    assert not (tmp_path / "log").exists()


def _two_running(tmp_path: Path, started: Launcher) -> tuple[LocalCommunity, list[LaunchedProcess]]:
    lc = LocalCommunity(tmp_path / "c", validators=2, full_nodes=0, launcher=started)
    lc.create()
    lc.start()
    lc.wait_ready(90)
    return lc, [_launched(lc, i) for i in range(2)]


@pytest.mark.net
@pytest.mark.timeout(180)
def test_closing_the_launcher_stops_its_daemons(tmp_path: Path) -> None:
    started = Launcher.start()
    try:
        lc, procs = _two_running(tmp_path, started)
    finally:
        started.close()
    assert [p.returncode for p in procs] == [0, 0]  # SIGTERM: a clean stop
    assert all(_gone(p.pid, 1) for p in procs)
    assert started.process.returncode == 0
    with pytest.raises(LauncherGone, match="was closed"):
        lc.start()


@pytest.mark.net
@pytest.mark.timeout(180)
def test_a_killed_launcher_leaves_no_daemon_behind(tmp_path: Path) -> None:
    started = Launcher.start()
    try:
        lc, procs = _two_running(tmp_path, started)
        started.process.send_signal(signal.SIGKILL)
        # its daemons got SIGTERM from the kernel (PR_SET_PDEATHSIG) and stop cleanly
        assert all(_gone(p.pid, 60) for p in procs)
        assert [p.wait(60) for p in procs] == [-signal.SIGTERM] * 2
        with pytest.raises(LauncherGone, match=r"launcher \(pid \d+\) killed by signal 9"):
            lc.start()
    finally:
        started.close()
    log = (lc.households[0].dir / "daemon.log").read_text()
    assert "gridnode launcher: the daemon launcher" in log and "stopping" in log


@pytest.mark.net
@pytest.mark.timeout(180)
def test_a_launcher_whose_caller_died_stops_its_daemons(tmp_path: Path) -> None:
    """The caller is SIGKILLed (no clean-up of its own): the launcher sees its socket close,
    stops the daemons and exits."""
    caller = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from gridnode.launcher import Launcher
        from sims.daemons import LocalCommunity
        lc = LocalCommunity(Path({str(tmp_path / "c")!r}), validators=1, full_nodes=0)
        lc.create()
        lc.launcher = Launcher.start()
        lc.start()
        lc.wait_ready(90)
        print(lc.launcher.pid, lc.households[0].process.pid, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", caller], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2, "the caller did not start its daemon"
        proc.kill()
        proc.wait(30)
        launcher_pid, daemon_pid = pids
        assert _gone(daemon_pid, 60) and _gone(launcher_pid, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "stopping" in (tmp_path / "c" / "node0" / "daemon.log").read_text()


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("0", False), ("false", False), (" FALSE ", False), ("1", True), ("True", True), ("", True)],
)
def test_the_launcher_switch_reads_0_1_true_and_false(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    from gridnode.launcher import LAUNCHER_ENV, launcher_enabled

    monkeypatch.setenv(LAUNCHER_ENV, value)
    assert launcher_enabled() is (enabled and sys.platform == "linux")


@pytest.mark.parametrize("value", ["no", "off", "2", "-1", "yes please"])
def test_any_other_launcher_switch_is_one_line_and_exit_2_before_anything_is_written(
    tmp_path: Path, value: str
) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "GRIDNODE_LAUNCHER": value, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "gridnode", "demo", "--dir", str(out), "--slots", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"gridnode demo: error: $GRIDNODE_LAUNCHER is {value!r}: expected 1 or true (fork daemons "
        "from the launcher, the default) or 0 or false (exec each daemon)"
    ]
    assert not out.exists()
