"""A small community for ledger tests: seeded keys, a genesis, and helpers to build blocks."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    Block,
    Genesis,
    LedgerState,
    Tx,
    build_block,
    genesis_state,
    sign_order,
)
from market.orders import Order, Side, Step

T0_MS = 1_800_000_000_000  # a slot boundary for 900 s slots (1_800_000_000 / 900 = 2_000_000)


@dataclass
class Community:
    seed: int = 1
    n_members: int = 6
    n_validators: int = 4
    genesis_kwargs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.members = [KeyPair.from_rng(rng) for _ in range(self.n_members)]
        self.validators = [KeyPair.from_rng(rng) for _ in range(self.n_validators)]
        self.genesis = Genesis(
            community_id="test-community",
            genesis_time_ms=T0_MS,
            members=tuple(k.public_hex for k in self.members),
            validators=tuple(k.public_hex for k in self.validators),
            **self.genesis_kwargs,  # type: ignore[arg-type]
        )
        self.nonce = {k.public_hex: 0 for k in self.members}

    def state(self) -> LedgerState:
        return genesis_state(self.genesis)

    def order(
        self, member: int, side: Side, slot: int, *steps: tuple[int, int], oid: str | None = None
    ) -> Tx:
        key = self.members[member]
        self.nonce[key.public_hex] += 1
        nonce = self.nonce[key.public_hex]
        order = Order(
            order_id=oid or f"m{member}-{nonce}",
            household=key.public_hex,
            side=side,
            slot=slot,
            steps=tuple(Step(p, e) for p, e in steps),
            nonce=nonce,
        )
        return sign_order(key, self.genesis, order)

    def block(self, state: LedgerState, time_ms: int, txs: list[Tx]) -> tuple[Block, LedgerState]:
        proposer = self.genesis.validators[state.height % len(self.genesis.validators)]
        return build_block(state, time_ms=time_ms, proposer=proposer, txs=txs)
