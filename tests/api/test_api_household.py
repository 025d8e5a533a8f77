"""The owner's views against a real in-process node: ``/api/household``, ``/api/slot``,
``/api/market``, the health verdict in ``/api/status``, ``/metrics`` and the event stream."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from gridnode.api import make_app
from gridnode.health import node_health
from gridnode.metrics import CommitLatency, render_metrics
from gridnode.status import Submission, ValidatorHealth
from market.orders import Side
from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import AUTH, TOKEN

pytestmark = pytest.mark.asyncio

SELL = {"slot": FIRST_OPEN, "side": "sell", "steps": [{"price": 100_000, "energy_wh": 500}]}


async def get(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as response:
        assert response.status == 200, await response.text()
        return json.loads(await response.text())


async def sell_and_clear(node: LocalNode, http: aiohttp.ClientSession) -> str:
    """This household offers 500 Wh, member 0 bids for 400: the slot clears 400 Wh. Returns the
    order id; the node's submissions record it as the daemon's do."""
    async with http.post("/api/orders", json=SELL, headers=AUTH) as response:
        placed = await response.json()
    node.submissions = (
        Submission(
            FIRST_OPEN, node.now_ms, placed["order_id"], placed["tx_id"], "sell", 500, 1, True
        ),
    )
    node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (250_000, 400)))
    node.commit()
    node.commit(advance_ms=600_000)  # past gate closure: cleared
    assert node.app.state.trades[FIRST_OPEN]
    return str(placed["order_id"])


def deliver(node: LocalNode, *, mine: int | None) -> None:
    """Past the slot's end: every member's reading (this household's unless ``mine`` is None)."""
    node.commit(advance_ms=1_200_000)
    if mine is not None:
        node.metered(FIRST_OPEN, mine, pv_wh=mine + 200, load_wh=200)
        node.submit(node.reading(-1, FIRST_OPEN, mine))
    for i, wh in enumerate((-400, 0, 0)):
        node.submit(node.reading(i, FIRST_OPEN, wh))
    node.commit()


async def test_household_view_keeps_trades_and_bills_after_settlement(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    order_id = await sell_and_clear(node, http)
    h = await get(http, "/api/household")
    (order,) = h["orders"]
    assert (order["order_id"], order["fate"], order["traded_wh"]) == (order_id, "partly", 400)
    assert order["fate_text"].startswith("sold 400 Wh of 500 Wh at ")
    assert order["delivery"].endswith("UTC+00:00") and order["span"] == "08:15–08:30"
    deliver(node, mine=500)
    assert FIRST_OPEN not in node.app.state.trades  # the ledger dropped them
    h = await get(http, "/api/household")
    (trade,) = h["trades"]
    assert trade["slot"] == FIRST_OPEN and trade["side"] == "sell" and trade["settled"] is True
    assert trade["energy_wh"] == 400 and trade["counterparty"] == node.others[0].public_hex
    totals = node.app.state.totals[node.key.public_hex]
    assert h["since_joining"]["savings_micro"] == totals.savings_micro > 0
    assert h["today"]["bill_micro"] == totals.bill_micro
    assert h["today"]["sold_p2p_wh"] == 400 and h["today"]["slots_settled"] == 1
    row = next(r for r in h["slots"] if r["slot"] == FIRST_OPEN)
    assert (row["pv_wh"], row["load_wh"], row["reading_wh"]) == (700, 200, 500)
    assert (row["sold_p2p_wh"], row["grid_export_wh"], row["missed"]) == (400, 100, False)
    # shares from the ledger's grid import/export and the meter's PV and load (market.kpis)
    assert h["shares"]["self_sufficiency"] == 1.0  # nothing bought from the grid
    assert h["shares"]["self_consumption"] == round(1 - 100 / 700, 4)
    assert h["pv_known"] is True
    why = await get(http, "/api/slot")  # the default: the newest slot this household was in
    assert why["slot"] == FIRST_OPEN and why["state"] == "settled"
    assert why["supply"] == [[100_000, 500]] and why["demand"] == [[250_000, 400]]
    assert why["my_order"]["side"] == "sell" and why["volume_wh"] == 400
    assert why["bill"]["bill_micro"] == totals.bill_micro
    text = " ".join(why["explanation"])
    assert "You sold 400 Wh of it" in text and "went to the grid" in text
    market = await get(http, "/api/market")
    (m,) = market["slots"]
    assert (m["slot"], m["volume_wh"], m["trades"], m["orders"]) == (FIRST_OPEN, 400, 1, 2)
    assert market["last_day"]["volume_wh"] == 400


async def test_a_missed_reading_is_marked_with_what_it_cost(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    await sell_and_clear(node, http)
    deliver(node, mine=None)  # every other reading is in; ours never comes
    assert FIRST_OPEN in node.app.state.trades
    node.commit(advance_ms=900_000)  # the reading deadline passes: settled as 0 Wh
    h = await get(http, "/api/household")
    (missed,) = h["missed"]
    # sold 400 Wh, delivered "0": bought back at retail (0.30) instead of delivering the contract
    assert missed["slot"] == FIRST_OPEN and missed["basis"] == "contract"
    assert missed["cost_micro"] == 400 * 300_000 // 1000 and missed["contract_wh"] == 400
    assert h["today"]["readings_missed"] == 1
    s = await get(http, "/api/status")
    assert s["health"]["level"] == "warn" and s["health"]["readings_missed"] == 1
    assert "missed" in s["health"]["label"]
    why = await get(http, f"/api/slot?slot={FIRST_OPEN}")
    assert why["reading"]["missed"] is True
    assert any("never reached the ledger" in line for line in why["explanation"])


async def test_a_missed_reading_costs_against_what_the_meter_had(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    await sell_and_clear(node, http)
    node.metered(FIRST_OPEN, 450, pv_wh=650, load_wh=200)  # measured, but never sent
    deliver(node, mine=None)
    node.commit(advance_ms=900_000)
    (missed,) = (await get(http, "/api/household"))["missed"]
    # 0 Wh counted: 400 Wh bought back at retail; with 450 Wh it would have sold 50 at feed-in
    assert missed["basis"] == "meter"
    assert missed["cost_micro"] == 400 * 300_000 // 1000 + 50 * 80_000 // 1000


async def test_fates_of_refused_replaced_and_open_orders(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    async with http.post("/api/orders", json=SELL, headers=AUTH) as response:
        placed = await response.json()
    node.commit()
    now = node.now_ms
    node.submissions = (
        Submission(FIRST_OPEN, now - 9, "old-quote", "00" * 32, "sell", 300, 1, True),
        Submission(FIRST_OPEN, now - 5, placed["order_id"], placed["tx_id"], "sell", 500, 1, True),
        Submission(FIRST_OPEN + 1, now, "late", "11" * 32, "buy", 200, 1, False, "slot_closed"),
        Submission(FIRST_OPEN + 2, now, "lost", "22" * 32, "buy", 200, 1, False, "network"),
    )
    h = await get(http, "/api/household")
    fates = {o["order_id"]: (o["fate"], o["fate_text"]) for o in h["orders"]}
    assert fates == {
        placed["order_id"]: ("open", "in the book; waiting for the gate to close"),
        "late": ("refused", "refused: its gate had closed"),
        "lost": ("refused", "refused: no validator answered"),
    }  # the first quote was replaced by the second: only the newest per slot is listed
    assert next(o for o in h["orders"] if o["order_id"] == placed["order_id"])["submissions"] == 2
    node.commit(advance_ms=600_000)  # nobody bid: cleared without a trade
    h = await get(http, "/api/household")
    fate, words = next((o["fate"], o["fate_text"]) for o in h["orders"] if o["slot"] == FIRST_OPEN)
    assert fate == "not_matched" and words.startswith("nothing sold: nobody bid")


async def test_health_tells_the_truth(node: LocalNode) -> None:
    node.commit()
    snap = node.snapshot()
    assert node_health(snap).level == "ok" and node_health(snap).label == "in sync · height 1"
    # a full node that hears no validator: no quorum, whatever else is fine
    other = node.others[0].public_hex
    lonely = replace(
        snap,
        household=other,
        role="full",
        validators=(ValidatorHealth(node.key.public_hex, False, None),),
    )
    h = node_health(lonely)
    assert h.level == "bad" and h.label.startswith("no quorum: 0 of 1 validators reachable")
    # at 60x, node-time ages are wall time x 60: 7 node-minutes are 7 wall seconds, not stale
    fast = replace(snap, speedup=60.0, now_ms=snap.ledger.time_ms + 7 * 60_000)
    assert node_health(fast).level == "ok" and node_health(fast).head_age_s == 7.0
    stale = replace(snap, now_ms=snap.ledger.time_ms + 31_000)
    assert node_health(stale).level == "bad" and "not in sync" in node_health(stale).label
    failed = replace(snap, submit_failures=(snap.now_ms - 1_000,))
    assert node_health(failed).level == "warn"
    assert "not acknowledged by any validator" in node_health(failed).label


async def test_status_ages_are_wall_time_and_a_validator_is_this_node(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    node.speedup = 60.0
    node.commit()
    s = await get(http, "/api/status")
    (me,) = s["validators"]["members"]
    assert me["self"] is True and me["heard_s_ago"] is None  # not "yes / never"
    assert s["member"] is True and s["health"]["level"] == "ok"
    assert s["now_local"].endswith("UTC+00:00") and s["timezone"] == "UTC"
    assert s["speedup"] == 60.0


async def test_metrics_are_prometheus_text() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    node = LocalNode()
    node.commit()
    latency = CommitLatency()
    latency.sent([b"a", b"b"], 1_000)
    latency.committed([b"a", b"b", b"unknown"], 1_700)
    snap = replace(
        node.snapshot(), misbehaviour={"bad_signature": 2}, commit_latency=latency.histogram()
    )
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(snap).decode())}
    assert families["gridnode_height"].samples[0].value == 1
    assert families["gridnode_quorum"].samples[0].value == 1
    refused = families["gridnode_refused_messages"].samples
    assert [(s.labels, s.value) for s in refused] == [({"reason": "bad_signature"}, 2)]
    hist = {
        s.labels.get("le", s.name): s.value
        for s in families["gridnode_commit_latency_seconds"].samples
    }
    assert hist["0.5"] == 0 and hist["1.0"] == 2 and hist["+Inf"] == 2
    assert hist["gridnode_commit_latency_seconds_count"] == 2
    assert families["gridnode_savings_micro"].samples[0].value == 0


async def test_events_push_status_and_the_household_when_it_changes(node: LocalNode) -> None:
    from gridnode.api import start_api

    running = await start_api(make_app(node, token=TOKEN), "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.url + "/api/events") as r,
        ):
            assert r.headers["Content-Type"] == "text/event-stream"
            seen: list[tuple[str, Any]] = []

            async def read_until(pred: Any) -> None:
                event = ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        seen.append((event, json.loads(line[6:])))
                        if pred():
                            return

            def names() -> list[str]:
                return [e for e, _ in seen]

            await asyncio.wait_for(
                read_until(lambda: {"status", "household", "market", "peers"} <= set(names())), 10
            )
            node.commit()  # a new block: a new status and a new household document
            start = len(seen)
            await asyncio.wait_for(
                read_until(lambda: any(e == "household" for e, _ in seen[start:])), 10
            )
            statuses = [d for e, d in seen if e == "status"]
            assert statuses[-1]["height"] == 1
    finally:
        await running.stop()  # ends the open stream (on_shutdown), within the shutdown timeout
