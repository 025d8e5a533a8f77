"""End to end: a real `gridnode run` daemon whose meter is a Tasmota-style MQTT publisher behind a real
Mosquitto broker signs readings whose Wh are exactly the published register differences.

A community of one validator (the genesis allows n = 1) at 60x: a 15-minute slot lasts 15 s. The test
publishes the meter's registers every 15 s of node time; the registers jump once per slot, in its
middle, by an amount that differs from slot to slot, so each boundary's value is unambiguous and the
expected reading of every slot is known. After the daemon stops, its SQLite chain is read back and
every committed reading is compared.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from gridnode.chain import BlockFacts
from gridnode.core.ledger import SignedBundle, decode_block
from gridnode.store import NodeStore
from sims.daemons import LocalCommunity
from tests.meters.conftest import Broker

pytestmark = pytest.mark.net

SPEEDUP = 60
SLOT = 900


def increments(slot: int) -> tuple[int, int]:
    """(import Wh, export Wh) the registers gain in ``slot`` (at its middle)."""
    return 100 + 10 * (slot % 5), 30 * (slot % 3)


def committed_readings(lc: LocalCommunity) -> int:
    """How many transactions the chain holds (bidding is off: every one carries a reading)."""
    total, start = 0, 1
    while True:
        page = lc.api(0, f"/api/blocks?from={start}&limit=100")
        total += sum(b["tx_count"] for b in page["blocks"])
        if start + 100 > page["height"]:
            return total
        start += 100


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_a_daemon_fed_by_mqtt_signs_the_register_differences(
    broker: Broker, tmp_path: Path
) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, speedup=SPEEDUP)
    lc.create()
    assert lc.genesis is not None
    epoch_ms = lc.genesis.genesis_time_ms
    from gridnode.config import update_config

    update_config(
        lc.households[0].dir,
        {
            "meter.source": "mqtt",
            "meter.mqtt_url": broker.url,
            "meter.mqtt_format": "tasmota",
            "meter.mqtt_topic": "tele/p1meter/SENSOR",
            "meter.mqtt_import_path": "SML.Total_in",
            "meter.mqtt_export_path": "SML.Total_out",
        },
    )

    def node_s() -> float:
        wall = time.time_ns() // 1_000_000
        return (epoch_ms + (wall - epoch_ms) * SPEEDUP) / 1000

    lc.start()
    expected: dict[int, int] = {}
    try:
        await asyncio.to_thread(lc.wait_ready, 90)
        imp, exp = 4_321_000, 1_000_000  # Wh on the registers
        jumped: set[int] = set()
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            deadline = time.monotonic() + 200
            while time.monotonic() < deadline:
                now = node_s()
                slot = int(now) // SLOT
                if now - slot * SLOT >= SLOT / 2 and slot not in jumped:  # mid-slot jump
                    jumped.add(slot)
                    di, de = increments(slot)
                    imp, exp = imp + di, exp + de
                    if slot - 1 in jumped:  # both boundaries of this slot saw our registers
                        expected[slot] = de - di
                doc = {"Time": "t", "SML": {"Total_in": imp / 1000, "Total_out": exp / 1000}}
                await pub.publish("tele/p1meter/SENSOR", json.dumps(doc), qos=1)
                if len(expected) >= 4 and await asyncio.to_thread(committed_readings, lc) >= 3:
                    break
                await asyncio.sleep(0.25)  # 15 s of node time between messages
    finally:
        codes = await asyncio.to_thread(lc.stop)
    assert codes == {0: 0}

    with NodeStore.open(lc.households[0].dir / "data" / "node.sqlite") as store:
        head = store.head()
        assert head is not None
        blocks = store.blocks_from(1, head.height)
    # bidding is off: each boundary's transaction is a bundle carrying the reading alone
    facts = [BlockFacts(decode_block(sb.block), sb.block_hash, (), ()) for sb in blocks]
    readings = {r.slot: r.net_wh for f in facts for r in f.readings}
    me = lc.households[0].key.public_hex
    assert all(
        isinstance(tx, SignedBundle) and tx.household == me and not tx.orders
        for f in facts
        for tx in f.block.txs
    )
    checked = {slot: net for slot, net in readings.items() if slot in expected}
    assert len(checked) >= 3, (readings, expected)
    # a slot's reading is its register differences: the jump published in its middle
    assert checked == {slot: expected[slot] for slot in checked}
    # no reading for a slot whose start the meter had not seen (before the first message)
    assert min(readings) >= min(jumped)
