"""Differentially private federated rounds between real daemons (``[training] dp_*``).

Four validators, all members with replay meters and ``training.mode = "federated"``. Nodes 0–2 set
a budget of ε = 8 over 4 rounds (σ/C = 2/μ(8) ≈ 1.2 per round); node 3 a budget of ε = 1 for one
round (σ/C ≈ 3.73). A round aggregated by nodes 0–2 asks for less noise than node 3's budget
allows, so node 3 refuses it and the round completes without it; a round node 3 aggregates asks for
more noise, which the others accept. Then, after two committed rounds:

* every committed round's record (``DATA/fedrounds.jsonl`` of its aggregator) states its DP: the
  noise multiplier, δ and the ε that round alone spends;
* every contributor's privacy account (``DATA/dpspend.json``) counts exactly the DP updates its
  log says it sent, and its ε is the composition of their noise multipliers;
* node 3 never spends more than its budget.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from forecasting.dp import DpBudget, DpSpend, gdp_epsilon
from gridnode.config import update_config
from gridnode.daemon.federation import DP_SPEND_FILE, ROUNDS_FILE
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net

ROUND_EVERY_S = 1800  # node seconds: 30 s of wall time at 60x
_DP_UPDATE = re.compile(r"federated: round (\d+): DP update \(σ/C ([0-9.]+)\)")


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCommunity]:
    lc = LocalCommunity(tmp_path_factory.mktemp("fed-dp"), validators=4, full_nodes=0, speedup=60)
    lc.create()
    for h in lc.households:
        tight = h.index == 3
        update_config(
            h.dir,
            {
                "meter.source": "replay",
                "meter.replay_day_offset": 3 * h.index,
                "training.mode": "federated",
                "training.round_every_s": ROUND_EVERY_S,
                "training.dp_epsilon": 1.0 if tight else 8.0,
                "training.dp_rounds": 1 if tight else 4,
            },
        )
    lc.start()
    try:
        lc.wait_ready(120)
        yield lc
    finally:
        lc.stop()


def _log(lc: LocalCommunity, node: int) -> str:
    return (lc.households[node].dir / "daemon.log").read_text(encoding="utf-8", errors="replace")


def _records(lc: LocalCommunity) -> list[dict[str, object]]:
    out = []
    for h in lc.households:
        path = h.dir / "data" / ROUNDS_FILE
        if path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_dp_rounds_commit_and_every_household_accounts_its_privacy(
    community: LocalCommunity,
) -> None:
    lc = community

    def committed() -> list[dict[str, object]]:
        return [r for r in _records(lc) if r["outcome"] == "committed"]

    assert lc.wait_for(lambda: len(committed()) >= 2, 300), (
        f"two DP rounds did not commit: {_records(lc)}"
    )
    for record in committed():
        z = float(record["dp_noise_multiplier"])  # type: ignore[arg-type]
        assert z in (round(DpBudget(8.0, 1e-5, 4).noise_multiplier, 6),
                     round(DpBudget(1.0, 1e-5, 1).noise_multiplier, 6))  # fmt: skip
        assert record["dp_delta"] == 1e-5
        assert float(record["dp_epsilon_round"]) == pytest.approx(  # type: ignore[arg-type]
            gdp_epsilon(1 / z, 1e-5), rel=1e-4
        )
        assert 3 <= int(record["contributors"]) <= 4  # type: ignore[call-overload]
    contributed = 0
    for h in lc.households:
        sent = [float(m.group(2)) for m in _DP_UPDATE.finditer(_log(lc, h.index))]
        path = h.dir / "data" / DP_SPEND_FILE
        if not sent:
            assert not path.exists()
            continue
        contributed += 1
        account = json.loads(path.read_text())
        assert account["rounds"] == len(sent)
        assert account["mu_squared"] == pytest.approx(sum(1 / z**2 for z in sent), rel=1e-2)
        spend = DpSpend(account["rounds"], account["mu_squared"])
        assert account["epsilon"] == pytest.approx(spend.epsilon(1e-5), rel=1e-9)
        assert account["delta"] == 1e-5
    assert contributed >= 3
    # node 3's budget (ε = 1, one round at σ/C 3.73) is never exceeded: it refused the rounds
    # that asked for less noise, or declined once its round was spent
    tight = _log(lc, 3)
    account_path = lc.households[3].dir / "data" / DP_SPEND_FILE
    if account_path.exists():
        assert json.loads(account_path.read_text())["epsilon"] <= 1.0 + 1e-6
    assert "would exceed this member's DP budget" in tight or "invitation: declined" in tight
