"""Replays every scripted consensus scenario in ``tests/consensus/testdata`` and compares its
transcript byte for byte (see :mod:`tests.consensus.scripted`; after a reviewed change of
behaviour: ``python -m tests.consensus.scripted --rewrite`` and review the diff)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sims.simnet import SimApp
from tests.consensus.scripted import World, replay, scenarios

NAMES = [p.name for p in scenarios()]


def test_the_scenarios_are_there() -> None:
    assert {
        "01_locking.txt",
        "02_lock_change.txt",
        "03_restart_mid_round.txt",
        "04_equivocation.txt",
        "05_late_precommits.txt",
        "06_stale_lock.txt",
        "07_stale_lock_reproposal.txt",
    } <= set(NAMES)


@pytest.mark.parametrize("path", scenarios(), ids=NAMES)
def test_scenario_transcript(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert replay(text) == text, (
        f"{path.name}: the transcript changed; if the change is intended, run "
        "`python -m tests.consensus.scripted --rewrite` and review the diff"
    )


@pytest.mark.parametrize("name", ["06_stale_lock.txt", "07_stale_lock_reproposal.txt"])
def test_under_the_old_time_rule_a_stale_lock_is_never_decided(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World()
    judged = SimApp.block_error

    def old_rule(
        self: SimApp, height: int, block: bytes, now: int | None, *, round_: int = 0
    ) -> object:
        return judged(self, height, block, world.now if now is None else now, round_=round_)

    monkeypatch.setattr(SimApp, "block_error", old_rule)
    text = (Path(__file__).parent / "testdata" / name).read_text(encoding="utf-8")
    transcript = replay(text, world)
    assert "time_too_old" in transcript
    after_gap = transcript[transcript.index("> time +12000") :]
    assert " committed h1 " not in after_gap
