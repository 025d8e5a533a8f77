"""The in-process engine: deterministic, correct ledger, positive savings, agreement under faults."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gridnode.cli import sim as sim_cli
from gridnode.core.consensus import Consensus
from gridnode.meter import ReplayMeter, shipped_replay
from gridnode.node import NodeRuntime
from sims.inproc import _Engine, results_digest, run_inproc
from sims.results import SimResult
from sims.scenario import FaultSpec, Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _daytime(**changes: object) -> Scenario:
    """The small shipped scenario cut to a sunny stretch (fast: ~2-4 s a run)."""
    base = load_scenario(SCENARIOS / "small.toml")
    fields: dict[str, object] = {"days": 0.25, "start_hour": 9.0, "block_interval_s": 120}
    fields.update(changes)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def forecast_run() -> tuple[SimResult, list[dict[str, object]]]:
    trades: list[dict[str, object]] = []
    return run_inproc(_daytime(), trades_out=trades), trades


def test_same_seed_same_results_other_seed_other_results(
    forecast_run: tuple[SimResult, list[dict[str, object]]], tmp_path: Path
) -> None:
    first, _ = forecast_run
    again = run_inproc(_daytime())
    assert results_digest(again) == results_digest(first)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    first.write_json(a)
    again.write_json(b)
    strip = [
        json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "wall_seconds"})
        for p in (a, b)
    ]
    assert strip[0] == strip[1]
    other = run_inproc(_daytime(seed=8))
    assert results_digest(other) != results_digest(first)


def test_forecast_bidding_saves_money_and_the_ledger_is_sound(
    forecast_run: tuple[SimResult, list[dict[str, object]]],
) -> None:
    r, trades = forecast_run
    c = r.community()
    assert not r.interrupted and r.slots_done == r.slots_planned == 24
    assert r.ledger_agreement is True and r.conservation_ok is True
    assert c["savings_micro"] > 0 and c["p2p_volume_wh"] > 0
    assert c["orders_committed_share"] == 1.0
    # the slot records (from the full-node replay) and the ledger totals tell the same story
    assert sum(s.volume_wh for s in r.slots) == c["p2p_volume_wh"]
    assert sum(s.volume_wh for s in r.slots) == sum(h.sold_p2p_wh for h in r.households)
    assert sum(s.grid_import_wh for s in r.slots) == c["grid_import_wh"]
    assert sum(s.grid_export_wh for s in r.slots) == c["grid_export_wh"]
    assert sum(int(str(t["energy_wh"])) for t in trades) == c["p2p_volume_wh"]
    assert all(s.commit_height > 0 for s in r.slots)
    assert r.blocks_committed > 0 and r.commit_latency_ms_p50 is not None
    # grid-only counterfactual is what the meters imply
    assert c["pv_wh"] > 0 and c["load_wh"] > 0
    assert sum(s.pv_wh for s in r.slots) == c["pv_wh"]


def test_perfect_foresight_quotes_the_actual_net() -> None:
    r = run_inproc(_daytime(days=1 / 24, policy="perfect-foresight"))
    assert r.slots and all(s.forecast_abs_error_wh == 0 for s in r.slots)
    assert r.ledger_agreement is True and r.conservation_ok is True


def test_meter_rows_are_the_replay_meters() -> None:
    sc = _daytime(households=3, days=1 / 24)
    e = _Engine(sc)
    data = e.history
    slot = e.first_slot + 2
    net, _pv, _load = e.slot_energy(slot)
    for i, spec in enumerate(e.specs):
        # the same replay the daemon does for this household
        meter = shipped_replay(
            node_anchor_s=e.clock.start(e.first_slot),
            day=sc.start_day,
            day_offset=spec.day_offset,
            hour=sc.start_hour,
            pv_scale=spec.pv_scale,
            load_scale=spec.load_scale,
        )
        assert isinstance(meter, ReplayMeter)
        assert meter.slot_net_wh(slot, e.clock) == int(net[i])
    assert data.households == 3


def test_partition_crash_byzantine_and_skew_still_agree() -> None:
    faults = (
        FaultSpec(kind="partition", at_s=1800, duration_s=1200, groups=((0, 1), (2, 3))),
        FaultSpec(kind="crash", at_s=3600, duration_s=1800, validator=2),
        FaultSpec(kind="byzantine", at_s=5400, duration_s=3600, validator=3),
        FaultSpec(kind="drop", at_s=7200, duration_s=1800, rate=0.2),
        FaultSpec(kind="skew", at_s=0, validator=1, skew_ms=1500),
    )
    r = run_inproc(_daytime(faults=faults))
    kinds = [f.kind for f in r.faults]
    for k in ("partition", "heal", "crash", "restart", "byzantine", "drop", "skew"):
        assert k in kinds
    assert r.ledger_agreement is True, r.notes
    assert r.conservation_ok is True
    assert r.community()["p2p_volume_wh"] > 0
    assert any("evidence of equivocation" in n and not n.endswith(": 0") for n in r.notes)


def test_stop_returns_what_was_done(tmp_path: Path) -> None:
    calls = iter(range(100))
    r = run_inproc(_daytime(), should_stop=lambda: next(calls) >= 6)
    assert r.interrupted and r.slots_done < r.slots_planned
    assert len(r.slots) == r.slots_done
    r.write_json(tmp_path / "results.json")
    back = SimResult.read_json(tmp_path / "results.json")
    assert back.interrupted and back.slots_done == r.slots_done


# ------------------------------------------------------------------------------- the CLI

_TINY = """
name = "tiny"
seed = 5
days = 0.125
start_hour = 10
[households]
count = 6
[consensus]
block_interval_s = 120
"""

_CLI = (
    "import argparse, sys\n"
    "from gridnode.cli import sim\n"
    "p = argparse.ArgumentParser(prog='gridnode')\n"
    "sim.register(p.add_subparsers(dest='command', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridnode")
    sim_cli.register(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_runs_a_scenario_and_prints_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(_TINY, encoding="utf-8")
    out = tmp_path / "run"
    args = _parser().parse_args(["sim", str(scenario), "--households", "4", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "report: " in printed and "ledger agreement True" in printed
    report = Path(printed.split("report: ")[1].strip())
    assert report.is_file()
    result = SimResult.read_json(out / "results.json")
    assert len(result.households) == 4 and not result.interrupted


def test_ctrl_c_stops_cleanly_and_still_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        # three days, so the run is still going when the signal arrives, even on a fast machine
        [
            sys.executable,
            "-c",
            _CLI,
            "sim",
            str(SCENARIOS / "small.toml"),
            "--days",
            "3",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stderr is not None
    seen: list[str] = []
    err = proc.stderr
    # tqdm redraws with "\r", not newlines: read small chunks
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: err.read(16), "")))
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not re.search(r"\b[1-9]\d*/288", "".join(seen)):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    # not communicate(): it would also read (and close) stderr under the reader thread's feet
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    proc.stdout.close()
    err.close()
    assert proc.returncode == 130, "".join(seen)
    assert "INTERRUPTED" in stdout
    result = SimResult.read_json(out / "results.json")
    assert result.interrupted and result.slots_done < result.slots_planned


def test_a_validator_down_for_good_and_a_silent_one_with_seven_validators() -> None:
    faults = (
        FaultSpec(kind="byzantine", at_s=0, validator=1, behaviour="silent"),
        FaultSpec(kind="crash", at_s=1800, validator=2),  # duration 0: down until the end
    )
    r = run_inproc(_daytime(validators=7, days=1 / 8, faults=faults))
    assert r.ledger_agreement is True, r.notes
    assert r.conservation_ok is True
    assert [f.kind for f in r.faults] == ["byzantine", "crash"]
    assert r.community()["p2p_volume_wh"] > 0


def test_same_results_across_processes_with_different_hash_seeds() -> None:
    code = (
        "import dataclasses\n"
        "from sims.scenario import load_scenario\n"
        "from sims.inproc import run_inproc, results_digest\n"
        f"sc = load_scenario({str(SCENARIOS / 'faults.toml')!r})\n"
        "sc = dataclasses.replace(sc, days=1 / 12, start_hour=9.0, households=6)\n"
        "print(results_digest(run_inproc(sc)))\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_the_shared_caches_change_speed_never_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine forgets shared checked blocks behind the latest decision and empties its cache
    of verified votes when it is full (memory for long runs): a validator replaying its store
    after a crash then checks blocks itself, votes are verified again. The results are those of
    a run that keeps everything."""
    faults = (FaultSpec(kind="crash", at_s=1800, duration_s=3600, validator=2),)
    sc = _daytime(faults=faults, block_interval_s=60)
    monkeypatch.setattr("sims.inproc.VERIFIED_VOTES_KEPT", 20)
    forgetful = run_inproc(sc)
    monkeypatch.setattr("sims.inproc.SHARED_BLOCKS_BEHIND", 10**9)
    monkeypatch.setattr("sims.inproc.VERIFIED_VOTES_KEPT", 10**9)
    keeping = run_inproc(sc)
    assert forgetful.ledger_agreement is True, forgetful.notes
    assert forgetful.blocks_committed > 40  # the crashed validator missed more than 16 heights
    assert results_digest(forgetful) == results_digest(keeping)


def test_backlog_reports_the_executor_skips_change_no_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under adaptive cadence the executor reports only a full backlog once the consensus core
    knows transactions are pending (``Consensus.backlog_wanted``): the same results as a node that
    reports after every admitted transaction."""
    calls = [0]
    on_backlog = Consensus.on_backlog

    def counted(self: Consensus, backlog: object, now: int) -> object:
        calls[0] += 1
        return on_backlog(self, backlog, now)  # type: ignore[arg-type]

    monkeypatch.setattr(Consensus, "on_backlog", counted)
    sc = _daytime(cadence="adaptive", block_interval_s=600)
    skipping = run_inproc(sc)
    skipped_calls = calls[0]
    # as if never told: every admission that can matter is reported
    wanted = Consensus.backlog_wanted
    monkeypatch.setattr(Consensus, "backlog_wanted", lambda self: 2 * (wanted(self) > 0))
    calls[0] = 0
    reporting = run_inproc(sc)
    assert skipping.blocks_committed > 5 and skipping.ledger_agreement is True
    assert calls[0] > 2 * skipped_calls  # it did skip reports ...
    assert results_digest(skipping) == results_digest(reporting)  # ... and nothing changed


def test_offers_without_result_objects_change_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine offers transactions with ``Executor.offer`` (the reason or ``None``, no
    ``AddResult``), and the executor reads ``backlog_full()`` before it builds a backlog: the same
    results as submitting with ``Executor.submit`` and building the backlog each time, under
    adaptive cadence and with a validator down for a while."""
    faults = (FaultSpec(kind="crash", at_s=1800, duration_s=1800, validator=1),)
    sc = _daytime(cadence="adaptive", block_interval_s=600, faults=faults)
    offers = [0]
    offer = NodeRuntime.offer

    def counted(self: NodeRuntime, tx: object, now: int) -> str | None:
        offers[0] += 1
        return offer(self, tx, now)

    monkeypatch.setattr(NodeRuntime, "offer", counted)
    fast = run_inproc(sc)
    assert offers[0] > 100

    def via_submit(self: NodeRuntime, tx: object, now: int) -> str | None:
        result = self.submit(tx, now)
        return None if result.accepted else result.reason

    def eager(self: NodeRuntime, now: int) -> None:  # the backlog built after every admission
        core = self.core
        if not isinstance(core, Consensus):
            return
        wanted = core.backlog_wanted()
        if wanted:
            backlog = self.app.backlog()
            if backlog.full or wanted == 2:
                self._run(core.on_backlog(backlog, now), now)

    monkeypatch.setattr(NodeRuntime, "offer", via_submit)
    monkeypatch.setattr(NodeRuntime, "_admitted", eager)
    slow = run_inproc(sc)
    assert fast.ledger_agreement is True and fast.blocks_committed > 5
    assert results_digest(fast) == results_digest(slow)


def test_slot_net_is_the_meters_net_energy() -> None:
    """``_Engine.slot_net`` (net only, kept for a few slots) is ``slot_energy``'s net as a list,
    also for a slot asked again after it was dropped."""
    e = _Engine(_daytime(days=1 / 12))
    slots = [e.first_slot + k for k in (0, 1, 2, 0, 3, 4, 5, 6, 1, 7)]
    for s in slots:
        assert e.slot_net(s) == e.slot_energy(s)[0].tolist()
    assert len(e._nets) <= 4


def test_shared_decoded_messages_change_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validators share decoded consensus messages (a broadcast's bytes decoded once): the
    same results as validators that each decode what they receive, under every kind of fault."""
    import gridnode.node as node_module

    sc = load_scenario(SCENARIOS / "faults.toml")
    sc = dataclasses.replace(sc, days=1 / 12, start_hour=9.0, households=6)
    decodes = [0]
    decode = node_module.decode_message

    def counted(data: bytes) -> object:
        decodes[0] += 1
        return decode(data)

    monkeypatch.setattr(node_module, "decode_message", counted)
    shared = run_inproc(sc)
    shared_decodes = decodes[0]

    def lone(**kwargs: object) -> NodeRuntime:
        return NodeRuntime(**{**kwargs, "decoded": None})  # type: ignore[arg-type]

    monkeypatch.setattr("sims.inproc.NodeRuntime", lone)
    decodes[0] = 0
    alone = run_inproc(sc)
    assert decodes[0] > 2 * shared_decodes  # each validator decoded for itself ...
    assert results_digest(shared) == results_digest(alone)  # ... to the same results


def test_a_run_collects_garbage_less_often_and_restores_the_thresholds() -> None:
    """The engine raises the cyclic collector's thresholds for its run (``GC_THRESHOLDS``; when
    garbage is collected changes no result) and gives the caller's back, also when it fails."""
    import gc

    from sims.inproc import GC_THRESHOLDS

    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    run_inproc(_daytime(days=1 / 24), progress=lambda p: seen.append(gc.get_threshold()))
    assert seen and set(seen) == {GC_THRESHOLDS}
    assert gc.get_threshold() == before

    def fail(p: object) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_inproc(_daytime(days=1 / 24), progress=fail)
    assert gc.get_threshold() == before


def test_events_run_by_time_then_in_the_order_they_were_queued() -> None:
    """The engine's event queue (a heap of times, a list per time) runs events as one heap
    ordered by (time, push order) would: also one queued for the current time while its time's
    events run, which runs after those already queued."""
    e = _Engine(_daytime(days=1 / 24))
    ran: list[str] = []

    def step(ev: tuple[object, ...]) -> None:
        ran.append(str(ev[0]))
        if ev[0] == "b":
            e.push(e.now, ("d",))  # the current time: after "c", queued before it
            e.push(e.now + 1, ("f",))

    e.step = step  # type: ignore[method-assign]
    t = e.now + 10
    for at, name in [(t + 5, "g"), (t, "a"), (t, "b"), (t, "c"), (t + 1, "e")]:
        e.push(at, (name,))
    e.run_until(t + 1)
    assert ran == ["a", "b", "c", "d", "e", "f"] and e.now == t + 1
    e.run_until(t + 10)
    assert ran[-1] == "g" and e.now == t + 10
