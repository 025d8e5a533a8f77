"""The campaign command: one summary line, exit status from the violations, negative controls."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sims.campaign import main, run_campaign

LINE = re.compile(
    r"^seeds=(\d+) heights=(\d+) partitions=(\d+) crashes=(\d+) torn=\d+ stalls=(\d+) "
    r"byzantine_events=(\d+) evidence=(\d+) refused_proposals=\d+ committed_txs=(\d+) "
    r"(?:\(txs=[a-z]+: \d+ orders, \d+ readings\) )?"  # with the ledger
    r"double_signed_orders=\d+ settled_slots=\d+ "
    r"recovery_ms_p50=(-?\d+) recovery_ms_p99=-?\d+ recovery_ms_max=(-?\d+) "
    r"violations=(\d+)(?: \(([a-z_:,\d]+)\))? wall_s=[\d.]+"
)


def test_a_small_campaign_passes_with_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--seeds", "3", "--fault-ms", "3000", "--calm-ms", "6000"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    m = LINE.match(out[0])
    assert m is not None, out[0]
    seeds, heights, partitions, crashes, stalls, byz, _ev, _txs, p50, worst, violations = map(
        int, m.groups()[:11]
    )
    assert (rc, seeds, violations) == (0, 3, 0)
    assert heights > 0 and partitions + crashes > 0 and byz > 0 and stalls > 0
    assert 0 <= p50 <= worst <= 8_000  # every run decided again within the liveness bound


def test_the_documented_command_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gridnode.campaign", "--seeds", "1", "--faults", "none"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert LINE.match(done.stdout.strip()), done.stdout


@pytest.mark.parametrize(
    ("control", "kind"),
    [
        ("byzantine-majority", "disagreement"),
        ("weak-quorum", "bad_commit"),
        ("sign-without-persist", "double_sign"),
        ("sign-without-persist", "unpersisted_signature"),
        ("stale-time-rule", "no_decision_within_bound"),
    ],
)
def test_negative_controls_report_violations_and_fail(
    control: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--seeds", "3", "--negative-control", control])
    captured = capsys.readouterr()
    line = captured.out.strip()
    m = LINE.match(line)
    assert m is not None and int(m.group(11)) > 0, line
    assert kind in (m.group(12) or "")
    assert "found violations as expected" in line
    assert rc == 1
    assert "violation seed=" in captured.err


def test_a_planted_executor_bug_apply_before_persist_loses_an_announced_commit() -> None:
    # the contract check sees it at once; the consequence needs a torn crash between the
    # announcement and the store write (crash faults only: seeds 0-9 have some)
    summary, found = run_campaign(
        seeds=10, faults=["crash"], negative_control="apply-before-persist", fault_ms=6000
    )
    assert {v.kind for _, v in found} == {"announced_unstored", "lost_commit"}
    assert summary.violation_kinds["lost_commit"] > 0


def test_fault_selection_and_seven_validators() -> None:
    summary, found = run_campaign(
        seeds=2, validators=7, faults=["drop", "partition"], fault_ms=6000, calm_ms=4000
    )
    assert found == [] and summary.violations == 0
    assert summary.byzantine_events == 0  # byzantine not selected
    assert summary.partitions > 0 and summary.crashes == 0 and summary.stalls == 0


def test_unknown_faults_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--seeds", "1", "--faults", "drop,meteor"])
    assert e.value.code == 2
    assert "meteor" in capsys.readouterr().err
