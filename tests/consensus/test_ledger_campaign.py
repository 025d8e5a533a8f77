"""The campaign with the real ledger: households' orders, readings and double-signing sellers."""

from __future__ import annotations

from sims.campaign import main, run_campaign


def test_ledger_campaign_finds_no_violation_and_settles_slots() -> None:
    summary, found = run_campaign(seeds=3, app="ledger")
    assert found == []
    assert summary.settled_slots > 0  # slots opened, cleared and settled under faults
    assert summary.double_signs > 0  # Byzantine sellers tried to sell the same energy twice
    assert summary.committed_txs > 0


def test_planted_double_sell_bug_is_caught() -> None:
    summary, found = run_campaign(seeds=3, app="ledger", negative_control="ledger-nonce")
    assert summary.violations > 0
    assert {v.kind for _, v in found} == {"energy_sold_twice"}


def test_cli_exit_codes(capsys: object) -> None:
    assert main(["--seeds", "1"]) == 0
    assert main(["--seeds", "2", "--negative-control", "ledger-nonce"]) == 1
