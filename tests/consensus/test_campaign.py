"""The campaign command: one summary line, exit status from the violations, negative controls."""

from __future__ import annotations

import re

import pytest

from gridnode.campaign import main, run_campaign

LINE = re.compile(
    r"^seeds=(\d+) heights=(\d+) partitions=(\d+) crashes=(\d+) byzantine_events=(\d+) "
    r"evidence=(\d+) committed_txs=(\d+) (?:double_signed_orders=\d+ settled_slots=\d+ )?"
    r"violations=(\d+) wall_s=[\d.]+"
)


def test_a_small_campaign_passes_with_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--seeds", "3", "--fault-ms", "3000", "--calm-ms", "6000"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    m = LINE.match(out[0])
    assert m is not None, out[0]
    seeds, heights, partitions, crashes, byz, _ev, _txs, violations = map(int, m.groups())
    assert (rc, seeds, violations) == (0, 3, 0)
    assert heights > 0 and partitions + crashes > 0 and byz > 0


@pytest.mark.parametrize("control", ["byzantine-majority", "weak-quorum"])
def test_negative_controls_report_violations_and_fail(
    control: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--seeds", "3", "--negative-control", control])
    captured = capsys.readouterr()
    line = captured.out.strip()
    m = LINE.match(line)
    assert m is not None and int(m.group(8)) > 0
    assert "found violations as expected" in line
    assert rc == 1
    assert "violation seed=" in captured.err


def test_fault_selection_and_seven_validators() -> None:
    summary, found = run_campaign(
        seeds=2, validators=7, faults=["drop", "partition"], fault_ms=6000, calm_ms=4000
    )
    assert found == [] and summary.violations == 0
    assert summary.byzantine_events == 0  # byzantine not selected
    assert summary.partitions > 0 and summary.crashes == 0


def test_unknown_faults_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--seeds", "1", "--faults", "drop,meteor"])
    assert e.value.code == 2
    assert "meteor" in capsys.readouterr().err
