"""A household daemon's start-up settles without profile-qr's refit memo (its one household is
refitted once a day: the memo held ≈ 2 MB to save ≈ 3 ms of that refit; ``docs/daemon.md``)."""

from __future__ import annotations

import pytest

import forecasting.profile_qr as pq
from gridnode.daemon import run as daemon_run


def test_a_household_drops_the_fit_memo_before_it_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    memo = pq._FitMemo(pq.FIT_MEMO_BLOCKS)
    memo._entries = [object()]  # type: ignore[list-item]  # what a first fit stores
    monkeypatch.setattr(pq, "_FIT_MEMO", memo)
    seen: list[tuple[int, int]] = []  # (blocks kept, entries) when the start-up settles
    monkeypatch.setattr(
        daemon_run, "settle_after_start", lambda: seen.append((memo.blocks, len(memo._entries)))
    )
    daemon_run._settle_household()
    assert seen == [(0, 0)]  # dropped first: the collection and trim that follow return it
    assert pq.FIT_MEMO_BLOCKS > 0  # the process default (the engines' refits) is untouched
