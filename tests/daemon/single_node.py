"""One :class:`~gridnode.daemon.DaemonNode` on a real libp2p host, its meter made from its config,
on a node clock that runs ``speedup`` times trio's (a test runs it under trio's ``MockClock``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gridnode.clock import NodeClock
from gridnode.config import Config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from gridnode.daemon import DaemonNode
from gridnode.net.host import NetConfig, open_net_host
from gridnode.startup import make_meter
from gridnode.store import NodeStore


@asynccontextmanager
async def open_single_node(
    config: Config, genesis: Genesis, key: KeyPair, store: NodeStore, *, speedup: float,
    wall_ms: int,
) -> AsyncIterator[tuple[DaemonNode, NodeClock]]:  # fmt: skip
    """The node and its clock (started at ``wall_ms``), its host open while the block runs."""
    clock = NodeClock.start(epoch_ms=genesis.genesis_time_ms, speedup=speedup, wall_ms=wall_ms)
    net_config = NetConfig(community=genesis.community_id, listen_addrs=config.listen, mdns=False)
    async with open_net_host(key, net_config) as net:
        node = DaemonNode(
            config=config, genesis=genesis, key=key, store=store, net=net, clock=clock,
            meter=make_meter(config, genesis),
        )  # fmt: skip
        yield node, clock
