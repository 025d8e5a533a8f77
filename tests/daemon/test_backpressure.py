"""The back-pressure limit: what the committee committed in the last PENDING_TARGET_S seconds."""

from __future__ import annotations

from gridnode.daemon.submit import PENDING_MIN_TXS, Backpressure


def test_the_limit_follows_the_commit_rate_with_a_floor() -> None:
    bp = Backpressure(target_s=2.0, min_txs=100)
    assert bp.limit == 100  # nothing committed yet: the floor (a slot's burst still fits)
    for t in range(10):  # 500 transactions a second for 10 s
        bp.on_commit(500, float(t))
    assert bp.limit == 2 * 500 * 10 // 10
    bp.on_commit(0, 30.0)  # a quiet spell: the old commits leave the window
    assert bp.limit == 100


def test_the_default_floor_is_about_one_full_block() -> None:
    assert Backpressure().limit == PENDING_MIN_TXS
