"""The household driver sends one bundle per slot boundary; a bundle refused for one of its orders
is followed by its reading alone (the ledger admits a bundle all or nothing); only the readings no
validator answered are sent again."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

import pytest
import trio

from gridnode.clock import NodeClock
from gridnode.config import Config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    BundleReading,
    Genesis,
    LedgerState,
    SignedBundle,
    SignedReading,
    Tx,
    genesis_state,
    sign_bundle,
)
from gridnode.history import MeteredSlot
from gridnode.household_driver import HouseholdDriver
from gridnode.meter import shipped_replay
from gridnode.status import SubmitResult
from market.errors import LedgerReason, NetworkError, OrderReason
from market.orders import Order

WALL0_MS = 1_800_000_000_000 + 60_000  # one minute into a slot


#: the driver's step just after a slot boundary (``_drive``)
Step: TypeAlias = Callable[[int], Awaitable[None]]


@dataclass
class _Runtime:
    state: LedgerState


@dataclass
class _Node:
    """The driver's node (:class:`gridnode.household_driver.HouseholdNode`) with a scripted
    validator: it answers each bundle with ``refuse`` (``""``: accepted; every other transaction
    is accepted), and after ``answers_left`` more requests (``None``: never) no validator
    answers (:class:`NetworkError`)."""

    key: KeyPair
    genesis: Genesis
    clock: NodeClock
    runtime: _Runtime
    refuse: str
    sent: list[list[Tx]] = field(default_factory=list)
    nonce: int = 0
    started_ms: int = WALL0_MS  # the node clock when the node started (the driver's first slot)
    answers_left: int | None = None

    def sign_bundle(
        self, reading: BundleReading | None, orders: Sequence[Order], *, model: bytes | None = None
    ) -> SignedBundle:
        placed = []
        for o in orders:
            self.nonce += 1
            placed.append(replace(o, household=self.key.public_hex, nonce=self.nonce))
        return sign_bundle(
            self.key, self.genesis, reading=reading, orders=tuple(placed),
            models=(model,) * len(placed),
        )  # fmt: skip

    async def submit_batch(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        self.sent.append(list(txs))
        if self.answers_left is not None:
            if self.answers_left == 0:
                raise NetworkError("no validator answered (scripted)")
            self.answers_left -= 1
        out = []
        for tx in txs:
            reason = self.refuse if isinstance(tx, SignedBundle) else ""
            out.append(SubmitResult(not reason, tx.id.hex(), reason))
        return out

    def record_submission(self, order: Order, at_ms: int, result: SubmitResult) -> None:
        pass

    def record_metered(self, metered: MeteredSlot) -> None:
        pass


def _setup(tmp_path: Path) -> tuple[KeyPair, Genesis, Config, Any]:
    key = KeyPair.from_rng(random.Random(5))
    genesis = Genesis(
        community_id="bundle-driver",
        genesis_time_ms=WALL0_MS - 3_600_000,
        members=(key.public_hex,),
        validators=(key.public_hex,),
    )
    config = Config(
        dir=tmp_path, bidding_enabled=True, bidding_policy="perfect-foresight",
        meter_source="replay",
    )  # fmt: skip
    meter = shipped_replay(node_anchor_s=genesis.genesis_time_ms // 1000, hour=11.0, pv_scale=1.5)
    return key, genesis, config, meter


def _drive(
    tmp_path: Path, refuse: str, script: Callable[[_Node, Step], Awaitable[None]]
) -> list[list[Tx]]:
    """Run ``script`` on trio's clock with a scripted node (refusing bundles for ``refuse``) and a
    driver over it; ``step(k)`` is the driver's step just after the ``k``-th slot boundary. What
    the node was sent, batch by batch."""
    key, genesis, config, meter = _setup(tmp_path)
    slots = genesis.clock
    first = slots.slot_at(WALL0_MS // 1000)
    sent: list[list[Tx]] = []

    async def main() -> None:
        clock = NodeClock.start(epoch_ms=WALL0_MS, speedup=1.0, wall_ms=WALL0_MS)
        node = _Node(key, genesis, clock, _Runtime(genesis_state(genesis)), refuse, sent)
        driver = HouseholdDriver(node, meter, config)  # type: ignore[arg-type]

        async def step(k: int) -> None:
            await driver.step(slots.start(first + k) + 1)

        await script(node, step)

    trio.run(main)
    return sent


def _step(tmp_path: Path, refuse: str) -> list[list[Tx]]:
    async def two_boundaries(node: _Node, step: Step) -> None:
        for k in (1, 2):  # two boundaries: the second reads the first slot and quotes
            await step(k)

    return _drive(tmp_path, refuse, two_boundaries)


def test_one_bundle_per_boundary_carries_the_reading_and_the_orders(tmp_path: Path) -> None:
    sent = _step(tmp_path, "")
    last = sent[-1]
    assert len(last) == 1 and isinstance(last[0], SignedBundle)
    bundle = last[0]
    assert bundle.reading is not None and bundle.orders  # the slot just delivered, and quotes
    assert [o.nonce for o in bundle.orders] == sorted({o.nonce for o in bundle.orders})


def test_a_bundle_refused_for_an_order_is_followed_by_its_reading_alone(tmp_path: Path) -> None:
    sent = _step(tmp_path, LedgerReason.MEMPOOL_FULL.value)
    bundle_batch, alone_batch = sent[-2], sent[-1]
    (bundle,) = bundle_batch
    assert isinstance(bundle, SignedBundle) and bundle.reading is not None and bundle.orders
    (alone,) = alone_batch
    assert isinstance(alone, SignedReading)
    assert (alone.slot, alone.net_wh) == (bundle.reading.slot, bundle.reading.net_wh)


def test_a_bundle_refused_for_its_reading_is_not_followed_by_it(tmp_path: Path) -> None:
    for reason in (LedgerReason.DUPLICATE_READING, OrderReason.ENERGY_TOO_LARGE):
        sent = _step(tmp_path, reason.value)
        assert all(isinstance(tx, SignedBundle) for batch in sent for tx in batch)


def _readings(batch: Sequence[Tx]) -> list[int]:
    """The slots of the lone readings in ``batch``."""
    return [tx.slot for tx in batch if isinstance(tx, SignedReading)]


def test_only_the_unanswered_reading_goes_back_after_the_lone_resend_fails(
    tmp_path: Path,
) -> None:
    """The bundle's reading sent alone (after the bundle was refused for an order) meets a network
    error: that reading comes out again at the next step; the re-sent reading the same request
    carried (and a validator accepted) does not."""

    async def script(node: _Node, step: Step) -> None:
        sent = node.sent
        await step(1)
        # no validator answers at all: the step's reading goes back to the agent
        node.answers_left = 0
        with pytest.raises(NetworkError):
            await step(2)
        (lost,) = sent[-1]
        assert isinstance(lost, SignedBundle) and lost.reading is not None
        # the lost reading goes alone beside the new bundle (both answered: the reading accepted,
        # the bundle refused for an order); then the bundle's reading alone meets no validator
        node.refuse, node.answers_left = LedgerReason.MEMPOOL_FULL.value, 1
        n = len(sent)
        with pytest.raises(NetworkError):
            await step(3)
        together, unanswered = sent[n:]
        assert _readings(together) == [lost.reading.slot]
        bundle = together[-1]
        assert isinstance(bundle, SignedBundle) and bundle.reading is not None and bundle.orders
        assert _readings(unanswered) == [bundle.reading.slot]
        # the next step sends again only the reading no validator answered
        node.refuse, node.answers_left = "", None
        n = len(sent)
        await step(4)
        (batch,) = sent[n:]
        assert _readings(batch) == [bundle.reading.slot]

    _drive(tmp_path, "", script)
