"""Real daemons on loopback: a community of 4 validators + 2 full nodes trading over libp2p.

Every node is a separate `gridnode run` process with its own SQLite file; the test talks to them
only through their HTTP APIs, as a household would. The clock runs 60x (a 15-minute slot in 15 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from market.clearing import clear
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net


@pytest.fixture
def community(tmp_path: Path) -> Iterator[LocalCommunity]:
    lc = LocalCommunity(tmp_path / "c", validators=4, full_nodes=2, speedup=60)
    lc.create()
    lc.start(which=[0, 1, 2, 3, 4])  # node5 joins late
    try:
        lc.wait_ready(90, which=[0, 1, 2, 3, 4])
        yield lc
    finally:
        codes = lc.stop()
        assert all(code in (0, -9) for code in codes.values()), codes


def heights(lc: LocalCommunity, nodes: list[int]) -> dict[int, int]:
    return {i: lc.api(i, "/api/status")["height"] for i in nodes}


def block_hash(lc: LocalCommunity, node: int, height: int) -> str:
    blocks = lc.api(node, f"/api/blocks?from={height}&limit=1")["blocks"]
    return blocks[0]["hash"] if blocks and blocks[0]["height"] == height else ""


def agree(lc: LocalCommunity, nodes: list[int]) -> bool:
    """All nodes at one height report the same head hash and state digest."""
    status = [lc.api(i, "/api/status") for i in nodes]
    return len({(s["height"], s["head_hash"], s["state_digest"]) for s in status}) == 1


def test_orders_clear_in_their_slot_and_every_node_agrees_through_crash_and_late_join(
    community: LocalCommunity,
) -> None:
    lc = community
    assert lc.wait_for(lambda: min(heights(lc, [0, 1, 2, 3]).values()) >= 2, 60)
    slot = lc.api(0, "/api/status")["first_open_slot"] + 1  # at least one slot (15 s) of margin
    wanted = [  # node, side, price, energy: orders placed through different nodes' APIs
        (1, "sell", 90_000, 800),
        (4, "sell", 120_000, 400),  # a full node submits to a validator over libp2p
        (0, "buy", 250_000, 700),
        (3, "buy", 200_000, 600),
    ]
    placed: list[Order] = []
    for node, side, price, energy in wanted:
        r = lc.api(
            node,
            "/api/orders",
            method="POST",
            body={"slot": slot, "side": side, "steps": [{"price": price, "energy_wh": energy}]},
        )
        assert r.get("accepted") is True, r
        household = lc.households[node].key.public_hex
        placed.append(Order(r["order_id"], household, Side(side), slot, (Step(price, energy),)))
    expected = clear(placed, slot=slot)
    assert expected.volume_wh == 1200

    # the slot is cleared once its gate closes, from exactly the committed orders, on every node
    assert lc.wait_for(
        lambda: all(lc.api(i, "/api/status")["last_cleared_slot"] >= slot for i in range(5)), 60
    )
    for i in range(5):
        got = lc.api(i, f"/api/trades?slot={slot}")
        trades = got["slots"][0]["trades"] if "slots" in got else got["trades"]
        assert [(t["buy_order"], t["sell_order"], t["energy_wh"]) for t in trades] == [
            (t.buy_order, t.sell_order, t.energy_wh) for t in expected.trades
        ]
    assert lc.wait_for(lambda: agree(lc, [0, 1, 2, 3, 4]), 30, poll_s=0.05)

    # kill -9 one validator: the other three (> 2/3) keep committing
    lc.kill(3)
    h0 = lc.api(0, "/api/status")["height"]
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= h0 + 3, 40)
    # restart it: it recovers from its SQLite file and catches up
    lc.start(which=[3])
    lc.wait_ready(60, which=[3])
    assert lc.wait_for(
        lambda: lc.api(3, "/api/status")["height"] >= lc.api(0, "/api/status")["height"] - 1, 60
    )
    h = lc.api(3, "/api/status")["height"] - 1
    assert block_hash(lc, 3, h) == block_hash(lc, 0, h) != ""

    # a node started late syncs the whole chain from height 1
    lc.start(which=[5])
    lc.wait_ready(60, which=[5])
    assert lc.wait_for(
        lambda: lc.api(5, "/api/status")["height"] >= lc.api(0, "/api/status")["height"] - 1, 60
    )
    assert block_hash(lc, 5, 1) == block_hash(lc, 0, 1) != ""
    assert lc.wait_for(lambda: agree(lc, [0, 1, 2, 3, 4, 5]), 30, poll_s=0.05)
