"""The daemon's household driver and its agent on a virtual clock (``trio.testing.MockClock``).

A real :class:`~gridnode.daemon.DaemonNode` (real libp2p host on loopback, real SQLite store, its
consensus timers and household driver on trio's clock) runs a one-validator community whose only
member is itself, with a replay meter, a battery and forecast bidding. Under
``MockClock(autojump_threshold=0)`` several 15-minute slots pass in well under a second of work;
the chain it commits must hold exactly one reading per delivered slot, as the battery model
computes it from the meter, and an order for every slot it quoted.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from gridnode.chain import BlockFacts
from gridnode.clock import NodeClock
from gridnode.config import Config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, OpenOrder, decode_block
from gridnode.household.battery import Battery, dispatch
from gridnode.household_driver import foreseen
from gridnode.meter import shipped_replay
from gridnode.store import NodeStore
from market.slots import SlotClock
from tests.daemon.single_node import open_single_node

SPEEDUP = 60.0  # a 15-minute slot in 15 s of (virtual) wall time
WALL0_MS = 1_750_000_100_000  # the wall clock when the daemon starts (fixed: a virtual run)
SLOTS = 4  # delivered slots the test waits for


def test_node_clock_follows_trio_and_speeds_up_around_the_epoch() -> None:
    async def main() -> None:
        clock = NodeClock.start(epoch_ms=WALL0_MS - 10_000, speedup=SPEEDUP, wall_ms=WALL0_MS)
        assert clock.wall_ms() == WALL0_MS
        assert clock.now_ms() == WALL0_MS - 10_000 + 10_000 * 60  # the community is 60x ahead
        await trio.sleep(2.5)
        assert clock.wall_ms() == WALL0_MS + 2_500
        assert clock.now_ms() == WALL0_MS - 10_000 + 12_500 * 60
        at = clock.now_ms() + 900_000  # one slot of community time is 15 s of trio time
        assert clock.seconds_until(at) == 15.0
        await trio.sleep(clock.seconds_until(at))
        assert clock.now_ms() == at and clock.seconds_until(at) == 0.0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.net
def test_household_driver_reads_and_quotes_every_slot_under_a_virtual_clock(
    tmp_path: Path,
) -> None:
    key = KeyPair.from_rng(random.Random("household-driver"))
    genesis = Genesis(
        community_id="driver-test",
        genesis_time_ms=WALL0_MS - 1_000,
        members=(key.public_hex,),
        validators=(key.public_hex,),
    )
    config = Config(
        dir=tmp_path,
        role="validator",
        listen=("/ip4/127.0.0.1/tcp/0",),
        mdns=False,
        battery_kwh=5.0,
        battery_kw=2.5,
        bidding_enabled=True,
        meter_source="replay",
        replay_hour=11.0,
        pv_scale=1.5,
        clock_speedup=SPEEDUP,
    )
    store = NodeStore.open(tmp_path / "node.sqlite")
    seen: dict[str, object] = {}

    async def main() -> None:
        node_at = open_single_node(config, genesis, key, store, speedup=SPEEDUP, wall_ms=WALL0_MS)
        async with node_at as (node, clock):
            slots = genesis.clock
            start_slot = slots.slot_at(clock.now_ms() // 1000)
            # until the SLOTS slots after the start one are delivered and their readings committed
            # (two minutes of community time: two blocks)
            until_ms = slots.start(start_slot + SLOTS + 1) * 1000 + 120_000
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.run)
                await trio.sleep(clock.seconds_until(until_ms))
                seen["start_slot"] = start_slot
                assert node.household is not None  # built by the node's household task
                seen["soc_wh"] = node.household.agent.soc_wh
                seen["forecast"] = node.latest.forecast
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    readings: dict[int, list[int]] = {}
    orders: dict[int, list[OpenOrder]] = {}
    kinds: set[str] = set()
    for sb in store.blocks_from(1, 100_000):
        block = decode_block(sb.block)
        kinds |= {type(tx).__name__ for tx in block.txs}
        facts = BlockFacts(block, sb.block_hash, (), ())  # the chain reader's view of its txs
        for r in facts.readings:
            readings.setdefault(r.slot, []).append(r.net_wh)
        for o in facts.orders:
            orders.setdefault(o.order.slot, []).append(o)
    store.close()
    # the household sends one transaction per slot boundary: its reading and orders, bundled
    assert kinds == {"SignedBundle"}, kinds

    start_slot = seen["start_slot"]
    assert isinstance(start_slot, int)
    delivered = range(start_slot, start_slot + SLOTS + 1)
    # one reading per delivered slot: the meter's net after the battery, which started half full
    # and dispatched against a contract of 0 (a lone member never trades)
    assert sorted(readings) == list(delivered)
    meter = shipped_replay(node_anchor_s=genesis.genesis_time_ms // 1000, hour=11.0, pv_scale=1.5)
    battery, soc = Battery(capacity_wh=5000, power_w=2500), 2500
    for slot in delivered:
        natural = meter.slot_net_wh(slot, genesis.clock)
        assert natural is not None
        d = dispatch(battery, soc_wh=soc, natural_net_wh=natural, contract_wh=0, slot_seconds=900)
        soc = d.soc_wh
        assert readings[slot] == [d.metered_net_wh], slot
    assert seen["soc_wh"] == soc
    # an order for every slot quoted at a boundary (the first open one: the next slot)
    quoted = range(start_slot + 2, start_slot + SLOTS + 3)
    assert set(quoted) <= set(orders), sorted(orders)
    for slot in quoted:
        assert {o.order.side.value for o in orders[slot]} <= {"buy", "sell"}
    forecast = seen["forecast"]
    assert isinstance(forecast, tuple) and len(forecast) == 1  # the status page's forecast


def test_perfect_foresight_quotes_what_the_replay_meter_will_measure() -> None:
    clock = SlotClock(900, 300)
    meter = shipped_replay(node_anchor_s=1_700_000_000, hour=11.0, pv_scale=1.5)
    first = clock.slot_at(1_700_000_000) + 1
    slots = range(first, first + 3)
    fc = foreseen(meter, slots, clock)
    actual = [meter.slot_net_wh(s, clock) for s in slots]
    assert fc.model == "perfect-foresight"
    assert [(q.slot, q.p10_wh, q.p50_wh, q.p90_wh) for q in fc.quantiles] == [
        (s, a, a, a) for s, a in zip(slots, actual, strict=True)
    ]
    assert len(set(actual)) > 1  # real data: the slots differ
