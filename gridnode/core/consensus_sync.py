"""Block sync, shared by validators and full nodes, and the full node itself (split from
:mod:`gridnode.core.consensus`, which re-exports :class:`FullNode`).

Rules: a lagging node asks a peer for blocks (:class:`BlockRequest`, at most
``sync_batch`` blocks and ``sync_max_bytes`` bytes per response, at least one block); blocks
received are accepted only with a commit of > 2/3 of the validators over exactly these bytes, and
decided in height order. :class:`FullNode` does only this (it never votes).
"""

from __future__ import annotations

from collections.abc import Sequence

from gridnode.core.consensus_config import BlockSource, ConsensusConfig
from gridnode.core.consensus_effects import Decided, Effect, Send, SetTimer, TimerKind
from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    ConsensusMessage,
    SyncedBlock,
    ValidatorSet,
    verify_commit,
)
from market.errors import InvalidInput, UsageError

__all__ = ["FullNode", "SyncMixin"]


class SyncMixin:
    """Block-sync logic shared by validators and full nodes."""

    _validators: ValidatorSet
    _blocks_src: BlockSource
    _config: ConsensusConfig
    height: int

    def _answer_request(self, sender: str, req: BlockRequest, out: list[Effect]) -> None:
        found: list[SyncedBlock] = []
        limit = max(0, min(req.max_blocks, self._config.sync_batch))
        h, size = req.from_height, 0
        while len(found) < limit:
            sb = self._blocks_src.committed(h)
            if sb is None:
                break
            size += len(sb.block)
            if found and size > self._config.sync_max_bytes:
                break  # the rest in the next request: a response must fit one frame
            found.append(sb)
            h += 1
        if found:
            out.append(Send(sender, BlockResponse(tuple(found))))

    def _verified(self, sb: SyncedBlock) -> bool:
        try:
            verify_commit(
                self._validators,
                sb.commit,
                sb.block,
                height=sb.height,
                quorum=self._config.unsafe_quorum,
            )
        except InvalidInput:
            return False
        return True


class FullNode(SyncMixin):
    """A non-validator: polls peers for blocks, keeps those with a valid commit, serves them."""

    def __init__(
        self,
        *,
        validators: ValidatorSet,
        peers: Sequence[str],
        blocks: BlockSource,
        height: int = 1,
        config: ConsensusConfig | None = None,
    ) -> None:
        if not peers:
            raise UsageError("a full node needs at least one peer to sync from")
        self._validators = validators
        self._peers = tuple(peers)
        self._blocks_src = blocks
        self._config = config or ConsensusConfig()
        self.height = height
        self._next_peer = 0
        self.rejected_blocks = 0

    def start(self, now: int) -> list[Effect]:
        return self.on_timer(TimerKind.SYNC, self.height, 0, now)

    def on_timer(self, kind: TimerKind, height: int, round_: int, now: int) -> list[Effect]:
        del height, round_
        if kind is not TimerKind.SYNC:
            return []
        peer = self._peers[self._next_peer % len(self._peers)]
        self._next_peer += 1
        return [
            Send(peer, BlockRequest(self.height, self._config.sync_batch)),
            SetTimer(TimerKind.SYNC, self.height, 0, now + self._config.sync_interval_ms),
        ]

    def on_message(self, sender: str, msg: ConsensusMessage, now: int) -> list[Effect]:
        del now
        out: list[Effect] = []
        if isinstance(msg, BlockRequest):
            self._answer_request(sender, msg, out)
        elif isinstance(msg, BlockResponse):
            for sb in msg.blocks:
                if sb.height != self.height:
                    continue
                if not self._verified(sb):
                    self.rejected_blocks += 1
                    continue
                out.append(Decided(sb.height, sb.block, sb.commit))
                self.height += 1
        return out
