"""The client commands against real `gridnode run` daemons (separate processes, libp2p on loopback).

One validator and one full node, the clock at 60x: orders placed with `gridnode order place` on both
nodes are listed by `gridnode order list --all` and cleared (`gridnode trades`), and `gridnode status`
shows the same head as the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode import cli
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net


@pytest.fixture(autouse=True)
def client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    if "client" not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, "client"))


@pytest.fixture
def community(tmp_path: Path) -> Iterator[LocalCommunity]:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60)
    lc.create()
    lc.start()
    try:
        lc.wait_ready(90)
        yield lc
    finally:
        codes = lc.stop()
        assert all(code == 0 for code in codes.values()), codes


def gridnode(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_cli_against_real_daemons(
    community: LocalCommunity, capsys: pytest.CaptureFixture[str]
) -> None:
    lc = community
    validator, full = str(lc.households[0].dir), str(lc.households[1].dir)
    slot = lc.api(0, "/api/status")["first_open_slot"] + 1  # one slot (15 s) of margin
    gridnode(capsys, "order", "place", "--dir", full, "--slot", str(slot), "--side", "sell",
             "--step", "90000:800")  # fmt: skip
    gridnode(capsys, "order", "place", "--dir", validator, "--slot", str(slot), "--side", "buy",
             "--step", "250000:500")  # fmt: skip
    assert lc.wait_for(lambda: len(lc.api(1, "/api/orders")["orders"]) == 2, 30)
    listed = gridnode(capsys, "order", "list", "--dir", full, "--all")
    assert "90000:800" in listed and "250000:500" in listed
    mine = json.loads(gridnode(capsys, "order", "list", "--dir", full, "--json"))["orders"]
    assert [(o["side"], o["energy_wh"]) for o in mine] == [("sell", 800)]
    assert lc.wait_for(lambda: lc.api(1, "/api/status")["last_cleared_slot"] >= slot, 60)
    trades = json.loads(gridnode(capsys, "trades", "--dir", full, "--slot", str(slot), "--json"))
    (cleared,) = trades["slots"]
    assert cleared["volume_wh"] == 500 and cleared["clearing_price_micro_per_kwh"] is not None
    assert [t["my_side"] for t in cleared["trades"]] == ["sell"]
    table = gridnode(capsys, "trades", "--dir", full)
    assert f"{slot}" in table and "sell 500 Wh for" in table
    status = json.loads(gridnode(capsys, "status", "--dir", validator, "--json"))
    assert status["role"] == "validator" and status["validators"]["quorum"] is True
    assert status["height"] >= 1
