"""Block sync, shared by validators and full nodes, and the full node itself (split from
:mod:`gridnode.core.consensus`, which re-exports :class:`FullNode`).

Rules: a lagging node asks a peer for blocks (:class:`BlockRequest`, at most
``sync_batch`` blocks and ``sync_max_bytes`` bytes per response, at least one block); blocks
received are accepted only with a commit of > 2/3 of the validators over exactly these bytes, and
decided in height order. :class:`FullNode` does only this (it never votes).

**Long poll** (``ConsensusConfig.sync_wait_ms`` > 0; off by default): a request for the block this
node is deciding (``from_height`` is its current height) is *held* — at most
:data:`HELD_REQUESTS` of them, one per requester, the oldest dropped beyond — and answered with
that block right after the node decides it (the ``Send`` follows the ``Decided`` effect, so the
block is stored before it leaves); a held request older than ``sync_wait_ms`` is dropped. A
:class:`FullNode` asks the same peer again at once after a response that gave it a block, and
only when ``sync_wait_ms`` passed without one does it ask the next peer. So a full node learns of
each block one message after its decision instead of polling every ``sync_interval_ms`` (an idle
community made every household ask every wall second, and each ask cost both sides CPU);
duplicate pushes (two peers holding a request) die out, as only a response that advanced the
node is followed by a new request. Timing only: every block is still accepted only with a valid
commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

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

__all__ = ["HELD_REQUESTS", "FullNode", "SyncMixin"]

#: requests held for a block not decided yet (long poll), at most this many (the oldest dropped):
#: anyone may ask, so the memory and the pushes a node owes stay bounded
HELD_REQUESTS: Final = 1024


class SyncMixin:
    """Block-sync logic shared by validators and full nodes."""

    _validators: ValidatorSet
    _blocks_src: BlockSource
    _config: ConsensusConfig
    height: int
    #: long poll: requester -> (height it asked from, when the request arrived)
    _held: dict[str, tuple[int, int]]

    def _answer_request(self, sender: str, req: BlockRequest, now: int, out: list[Effect]) -> None:
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
        elif self._config.sync_wait_ms > 0 and limit > 0 and req.from_height == self.height:
            held = self._held
            held.pop(sender, None)  # the newest request of each requester, at the end
            held[sender] = (req.from_height, now)
            while len(held) > HELD_REQUESTS:
                held.pop(next(iter(held)))

    def _release_held(self, sb: SyncedBlock, now: int, out: list[Effect]) -> None:
        """Answer the requests held for ``sb``'s height (just decided); drop expired ones."""
        if not self._held:
            return
        expired = now - self._config.sync_wait_ms
        keep: dict[str, tuple[int, int]] = {}
        for sender, (height, at) in self._held.items():
            if at < expired:
                continue  # its requester has asked again by now, here or elsewhere
            if height == sb.height:
                out.append(Send(sender, BlockResponse((sb,))))
            else:
                keep[sender] = (height, at)
        self._held = keep

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
    """A non-validator: asks peers for blocks, keeps those with a valid commit, serves them (with
    ``sync_wait_ms``, by long poll: see the module rules)."""

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
        self._held = {}
        self._asked_at: int | None = None  # long poll: when the outstanding request was sent
        self.rejected_blocks = 0
        #: block requests this node sent (a driver or test may read it)
        self.requests_sent = 0

    def start(self, now: int) -> list[Effect]:
        return self.on_timer(TimerKind.SYNC, self.height, 0, now)

    def _ask(self, peer: str, now: int) -> Send:
        self._asked_at = now
        self.requests_sent += 1
        return Send(peer, BlockRequest(self.height, self._config.sync_batch))

    def on_timer(self, kind: TimerKind, height: int, round_: int, now: int) -> list[Effect]:
        del height, round_
        if kind is not TimerKind.SYNC:
            return []
        out: list[Effect] = []
        wait = self._config.sync_wait_ms
        if wait <= 0 or self._asked_at is None or now - self._asked_at >= wait:
            # polling, or no block for sync_wait_ms from the peer holding our request: next peer
            out.append(self._ask(self._peers[self._next_peer % len(self._peers)], now))
            self._next_peer += 1
        assert self._asked_at is not None
        at = now + self._config.sync_interval_ms if wait <= 0 else self._asked_at + wait
        out.append(SetTimer(TimerKind.SYNC, self.height, 0, at))
        return out

    def on_message(self, sender: str, msg: ConsensusMessage, now: int) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(msg, BlockRequest):
            self._answer_request(sender, msg, now, out)
        elif isinstance(msg, BlockResponse):
            advanced = False
            for sb in msg.blocks:
                if sb.height != self.height:
                    continue
                if not self._verified(sb):
                    self.rejected_blocks += 1
                    continue
                out.append(Decided(sb.height, sb.block, sb.commit))
                self._release_held(sb, now, out)
                self.height += 1
                advanced = True
            if advanced and self._config.sync_wait_ms > 0:
                out.append(self._ask(sender, now))  # the long poll: the next block from it
        return out
