"""How the real-daemon engine starts a community: households at a lower CPU priority when asked,
and a ledger that stops growing noticed (real ``gridnode run`` processes on loopback)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from market.errors import UsageError
from sims.daemon_engine import _LedgerWatch
from sims.daemons import LocalCommunity


def test_a_negative_nice_is_refused_before_anything_starts(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0)
    with pytest.raises(UsageError, match="nice must be >= 0"):
        lc.start(nice=-5)


@pytest.mark.net
@pytest.mark.timeout(180)
def test_niced_households_and_a_stalled_ledger(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60)
    lc.create()
    try:
        lc.start(which=[0])
        lc.wait_ready(60, which=[0])
        lc.start(which=[1], nice=7)
        lc.wait_ready(60, which=[1])
        validator, household = (h.process for h in lc.households)
        assert validator is not None and household is not None
        assert os.getpriority(os.PRIO_PROCESS, validator.pid) == os.getpriority(
            os.PRIO_PROCESS, os.getpid()
        )
        assert os.getpriority(os.PRIO_PROCESS, household.pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + 7
        )
        # the lone validator makes blocks: the ledger grows
        watch = _LedgerWatch(lc, stall_s=3.0)
        assert watch.still()
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] > watch.height + 1, 30)
        assert watch.still() and watch.height > 0
        # a validator that stops (SIGSTOP: it neither makes blocks nor answers) stalls the ledger
        validator.send_signal(signal.SIGSTOP)
        try:
            # unanswered or unchanged for more than stall_s
            assert lc.wait_for(lambda: not watch.still(), 30, poll_s=0.5)
        finally:
            validator.send_signal(signal.SIGCONT)
    finally:
        lc.stop()
