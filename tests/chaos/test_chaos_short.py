"""Chaos on real daemons, short: a community of four validators and a household, each daemon in
its own network namespace, under 50-200 ms latency and 1-5 % loss, survives a kill -9 of two of its
four validators at once and a 2|2 partition of its validators (no quorum on either side): the same
blocks everywhere, no double vote, nothing acknowledged lost, a new block within 30 s of each heal,
validators under 300 MB, no crash (``sims/chaos.py``).

The long run (>= 300 kills, >= 50 partitions) is ``python benchmarks/chaos.py --seed S --kills 300
--partitions 50`` and the ``slow`` test below."""

from __future__ import annotations

from pathlib import Path

import pytest

from sims.chaos import ChaosConfig, ChaosRun, KillEvent, PartitionEvent
from tests.chaos import needs_netlab

pytestmark = [pytest.mark.net, needs_netlab]


def test_a_storm_and_a_partition_under_latency_and_loss(tmp_path: Path) -> None:
    links = ((80, 2.0), (150, 1.0), (50, 5.0), (200, 3.0), (120, 4.0))
    events = [
        PartitionEvent("isolate_household", ((4,), (0, 1, 2, 3)), 1.0, links),  # faults on
        KillEvent((1, 2), pause_s=0.7, down_s=1.5, rekill_after_s=None),
        PartitionEvent("split_validators", ((0, 1, 4), (2, 3)), 6.0, links),
    ]
    run = ChaosRun(tmp_path / "c", ChaosConfig(seed=0, kills=0, partitions=0), events=events)
    report = run.run()
    assert report.ok, "\n".join(report.lines() + report.crashes + report.safety_violations)
    assert report.storms == 1 and report.kills == 2 and report.partitions == 2
    assert len(report.heals) == 3
    assert report.acknowledged > 0 and not report.lost
    assert min(report.heights.values()) > 0


@pytest.mark.slow
def test_a_long_chaos_run(tmp_path: Path) -> None:
    report = ChaosRun(tmp_path / "c", ChaosConfig(seed=2, kills=60, partitions=12)).run()
    assert report.ok, "\n".join(report.lines() + report.crashes + report.safety_violations)
