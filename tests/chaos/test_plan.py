"""The chaos schedule is a pure function of its seed and meets its counts."""

from __future__ import annotations

from sims.chaos import ChaosConfig, KillEvent, PartitionEvent, plan_events


def test_the_schedule_is_reproducible_by_seed_and_meets_the_counts() -> None:
    config = ChaosConfig(seed=5, kills=300, partitions=50)
    events = plan_events(config)
    assert events == plan_events(ChaosConfig(seed=5, kills=300, partitions=50))
    assert events != plan_events(ChaosConfig(seed=6, kills=300, partitions=50))
    kills = [e for e in events if isinstance(e, KillEvent)]
    parts = [e for e in events if isinstance(e, PartitionEvent)]
    assert sum(e.kills for e in kills) >= 300 and len(parts) == 50
    storms = [e for e in kills if len(e.victims) == 2]
    assert storms and all(max(e.victims) < 4 for e in storms)  # two of the four validators
    assert any(e.rekill_after_s is not None for e in kills)
    assert any(e.victims == (4,) for e in kills)  # the household too
    for p in parts:
        assert len(p.links) == 5
        assert all(50 <= d <= 200 and 1.0 <= loss <= 5.0 for d, loss in p.links)
        nodes = [n for g in p.groups for n in g]
        assert len(nodes) == len(set(nodes))  # each node on one side
    assert {p.shape for p in parts} == {
        "isolate_validator", "split_validators", "isolate_household",
        "validator_and_household", "cut_pair",
    }  # fmt: skip
