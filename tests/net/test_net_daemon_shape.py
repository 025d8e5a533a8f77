"""How the daemon drives the network: asyncio main loop, libp2p hosts on the bridge's trio thread."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
import trio

from gridnode.core.crypto import KeyPair
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host

pytestmark = pytest.mark.net


async def poll(cond: Callable[[], bool], timeout_s: float = 10) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return cond()


@pytest.mark.asyncio
async def test_hosts_on_the_bridge_talk_and_stop_without_stray_threads() -> None:
    before = set(threading.enumerate())
    rng = random.Random(99)
    ka, kb = KeyPair.from_rng(rng), KeyPair.from_rng(rng)
    bridge = TrioBridge().start()
    try:
        a: NetHost = await bridge.enter(lambda: open_net_host(ka, NetConfig(community="c")))
        b_cfg = NetConfig(community="c", bootstrap=(a.addrs[0],))
        b: NetHost = await bridge.enter(lambda: open_net_host(kb, b_cfg))
        got: list[bytes] = []
        # handlers run on the trio thread; the asyncio side only sees thread-safe results
        await bridge.run_sync(a.on_request, "status", lambda peer, body: b"height=7")
        await bridge.call(a.subscribe, "orders", lambda origin, data: got.append(data))
        await bridge.call(b.subscribe, "orders", lambda origin, data: None)
        assert await poll(lambda: a.peer_id in b.connected_peers()), "bootstrap dial"
        assert await bridge.call(b.request, a.peer_id, "status", b"") == b"height=7"
        topic = "/gridnode/c/orders/1"
        assert await poll(lambda: a.peer_id in b.gossip_peers(topic))
        await bridge.call(b.publish, "orders", b"order-1")
        assert await poll(lambda: got == [b"order-1"])
        assert (await bridge.run_sync(a.peer_stats))[b.peer_id].gossip_in == 1
    finally:
        await bridge.aclose()
    assert set(threading.enumerate()) == before


@pytest.mark.slow
def test_mdns_finds_and_dials_a_peer_on_the_lan() -> None:
    """Needs multicast on a real interface: skipped by default (environment-dependent)."""
    rng = random.Random(9)
    ka, kb = KeyPair.from_rng(rng), KeyPair.from_rng(rng)
    cfg = NetConfig(community="c", mdns=True, listen_addrs=("/ip4/0.0.0.0/tcp/0",))
    before = set(threading.enumerate())

    async def scenario() -> None:
        async with open_net_host(ka, cfg) as a, open_net_host(kb, cfg) as b:
            with trio.move_on_after(20):
                while b.peer_id not in a.connected_peers():
                    await trio.sleep(0.1)
            assert b.peer_id in a.connected_peers()

    trio.run(scenario)
    assert set(threading.enumerate()) == before
