"""The campaign with the real ledger: households' bundles (or separate orders and readings) and
double-signing sellers."""

from __future__ import annotations

import pytest

from sims.campaign import main, run_campaign
from sims.ledger_campaign import TX_KINDS


@pytest.mark.parametrize("txs", TX_KINDS)
def test_ledger_campaign_finds_no_violation_and_settles_slots(txs: str) -> None:
    summary, found = run_campaign(seeds=3, app="ledger", txs=txs)
    assert found == []
    assert summary.txs == txs
    assert summary.settled_slots > 0  # slots opened, cleared and settled under faults
    assert summary.double_signs > 0  # Byzantine sellers tried to sell the same energy twice
    assert summary.committed_txs > 0
    assert summary.committed_orders > 0 and summary.committed_readings > 0
    parts = summary.committed_orders + summary.committed_readings
    if txs == "bundle":  # one order per bundle, a reading in some: more parts than transactions
        assert summary.committed_orders == summary.committed_txs < parts
    else:
        assert parts == summary.committed_txs


@pytest.mark.parametrize("txs", TX_KINDS)
def test_planted_double_sell_bug_is_caught(txs: str) -> None:
    summary, found = run_campaign(seeds=3, app="ledger", negative_control="ledger-nonce", txs=txs)
    assert summary.violations > 0
    # only the double sale: the planted rule leaves no trace of a refused transaction behind, so
    # proposers and validators agree on every state root and the chain stays live
    assert {v.kind for _, v in found} == {"energy_sold_twice"}


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "1"]) == 0
    assert "txs=bundle" in capsys.readouterr().out
    assert main(["--seeds", "1", "--txs", "separate"]) == 0
    assert "txs=separate" in capsys.readouterr().out
    assert main(["--seeds", "2", "--negative-control", "ledger-nonce"]) == 1
