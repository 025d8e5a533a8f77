"""The order topic's trust rule (``gridnode/daemon/gossip.py``, ``docs/daemon.md`` "trust model").

A household takes an order batch a validator authored without checking each order (that validator
admitted them; the household only shows them in its live book), so it does not verify every order
of the community; a batch anyone else authored is checked in full, and a validator checks every
batch in full. Real libp2p host (not connected to anyone), real SQLite store, the real runtime.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio

from gridnode.clock import NodeClock
from gridnode.core.consensus import TimerKind
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import SignedOrder
from gridnode.daemon.gossip import OrderGossip
from gridnode.net.host import NetConfig, open_net_host, peer_id_of
from gridnode.node import NodeRuntime
from gridnode.store import Durability, NodeStore
from gridnode.txbatch import encode_tx_batch
from market.errors import InvalidInput, LedgerReason
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community


class _Quiet:
    """An outbox that carries nothing: this node talks to no one in these tests."""

    def broadcast(self, data: bytes) -> None:
        del data

    def send(self, to: str, data: bytes) -> None:
        del to, data

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        del at_ms, kind, height, round_


def _forged(c: Community, slot: int) -> SignedOrder:
    tx = c.order(0, Side.SELL, slot, (100_000, 100))
    assert isinstance(tx, SignedOrder)
    return dataclasses.replace(tx, signature=bytes(64))


def _check(tmp: Path, key: KeyPair, *, validator: bool, origin: KeyPair) -> tuple[int, int]:
    """Offer a batch with one forged order, authored by ``origin``, to a node with ``key``: the
    batches it took on trust and how many orders reached its live book (-1: refused as forged)."""
    c = Community()
    store = NodeStore.open(tmp / "node.sqlite", durability=Durability.NORMAL)
    runtime = NodeRuntime(
        genesis=c.genesis, key=key, store=store, outbox=_Quiet(), validator=validator
    )
    slot = c.genesis.clock.first_open_slot(T0_MS // 1000) + 1
    data = encode_tx_batch([_forged(c, slot)])

    async def main() -> tuple[int, int]:
        config = NetConfig(community=c.genesis.community_id, listen_addrs=())
        async with open_net_host(key, config) as net:
            clock = NodeClock.start(epoch_ms=c.genesis.genesis_time_ms)
            gossip = OrderGossip(runtime=runtime, net=net, clock=clock, genesis=c.genesis)
            author = peer_id_of(origin.public_key)
            try:
                gossip._validate(author, data)
            except InvalidInput as exc:
                assert exc.reason is LedgerReason.BAD_SIGNATURE
                return gossip.trusted_batches, -1
            gossip._on_batch(author, data)
            return gossip.trusted_batches, len(gossip.live_orders)

    try:
        return trio.run(main)
    finally:
        store.close()


def test_a_household_takes_a_validators_batch_without_checking_each_order(tmp_path: Path) -> None:
    c = Community()
    assert _check(tmp_path, c.members[1], validator=False, origin=c.validators[0]) == (1, 1)


def test_a_household_checks_a_batch_no_validator_authored(tmp_path: Path) -> None:
    c = Community()
    assert _check(tmp_path, c.members[1], validator=False, origin=c.members[2]) == (0, -1)


def test_a_validator_checks_every_batch_even_another_validators(tmp_path: Path) -> None:
    c = Community()
    assert _check(tmp_path, c.validators[1], validator=True, origin=c.validators[0]) == (0, -1)
