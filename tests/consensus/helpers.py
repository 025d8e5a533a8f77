"""Shared helpers for the consensus tests: keys, a validator set, a tiny application."""

from __future__ import annotations

import random

from gridnode.core.consensus import Application, BlockSource
from gridnode.core.consensus_messages import SyncedBlock, ValidatorSet
from gridnode.core.crypto import KeyPair
from market.codec import pack, unpack
from market.errors import InvalidInput, SimReason


def keys(n: int, seed: int = 7) -> list[KeyPair]:
    rng = random.Random(seed)
    return [KeyPair.from_rng(rng) for _ in range(n)]


def validator_set(ks: list[KeyPair]) -> ValidatorSet:
    return ValidatorSet(tuple(k.public_key for k in ks))


class TagApp(Application):
    """Blocks are ``pack([height, tag])``; valid when the height matches and the tag is allowed."""

    def __init__(self, tag: str, *, reject: frozenset[str] = frozenset()) -> None:
        self.tag = tag
        self.reject = reject
        self.validated: list[bytes] = []

    def make_block(self, height: int, round_: int, now: int) -> bytes:
        return pack([height, f"{self.tag}-r{round_}"])

    def block_error(
        self, height: int, block: bytes, now: int | None, *, round_: int = 0
    ) -> InvalidInput | None:
        self.validated.append(block)
        h, tag = unpack(block, what="test block")
        if h != height:
            return InvalidInput(reason="wrong_height", subject=f"block {height}", found=str(h))
        if tag in self.reject:
            return InvalidInput(reason=SimReason.BAD_HEADER, subject=f"block {height}", found=tag)
        return None


class ListBlocks(BlockSource):
    def __init__(self) -> None:
        self.blocks: dict[int, SyncedBlock] = {}

    def committed(self, height: int) -> SyncedBlock | None:
        return self.blocks.get(height)
