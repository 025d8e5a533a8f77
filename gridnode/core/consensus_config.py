"""The consensus core's configuration and the interfaces it asks of its host (split from
:mod:`gridnode.core.consensus`, which re-exports them): the timeouts (:class:`ConsensusConfig`,
``base + round * delta``), the adaptive cadence (:class:`AdaptiveCommit`, :class:`Backlog`), the
replicated :class:`Application` and the :class:`BlockSource` of committed blocks. Pure data and
protocols; the rules are the consensus module's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gridnode.core.consensus_effects import TimerKind
from gridnode.core.consensus_messages import SyncedBlock
from market.errors import InvalidInput

__all__ = ["AdaptiveCommit", "Application", "Backlog", "BlockSource", "ConsensusConfig"]


class Application(Protocol):
    """What consensus asks of the replicated application (the ledger, or a test app)."""

    def make_block(self, height: int, round_: int, now: int) -> bytes:
        """The block this node proposes at (height, round) when it has no valid value."""
        ...

    def block_error(
        self, height: int, block: bytes, now: int | None, *, round_: int = 0
    ) -> InvalidInput | None:
        """Why ``block`` may not be committed at ``height``, or ``None`` if it may.

        ``now`` (this node's clock, ms) is given only for a fresh proposal (L22): then the block's
        time is also judged against it. ``None``: the clock-free rules only (a value with a
        proof-of-lock, or one being locked or decided), which must not depend on when they are
        asked. ``round_`` is the fresh proposal's round: a later round may accept an older time
        (the application's rule; a starved node judges every proposal late, and a bound that
        never widens would refuse them all, round after round).
        """
        ...


class BlockSource(Protocol):
    """Committed blocks this node can serve to lagging peers (its store)."""

    def committed(self, height: int) -> SyncedBlock | None: ...


@dataclass(frozen=True, slots=True)
class AdaptiveCommit:
    """The wait after a decision when work is waiting (milliseconds; see the module rules):
    ``busy_ms`` once transactions are pending, ``full_ms`` once a block's worth is."""

    busy_ms: int
    full_ms: int = 0


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the application has waiting for the next block (adaptive cadence): ``pending``
    transactions, whether they ``full``-y fill a block, and ``due_ms``, the earliest block time at
    which a block would change the state even without a transaction (``None``: never)."""

    pending: int
    full: bool = False
    due_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Timeouts in milliseconds (``base + round * delta``) and sync limits.

    ``unsafe_quorum`` exists only for the campaign's negative control: it replaces the > 2/3
    threshold with a smaller one so the campaign can show it catches the resulting forks.
    """

    propose_ms: int = 400
    propose_delta_ms: int = 200
    prevote_ms: int = 150
    prevote_delta_ms: int = 100
    precommit_ms: int = 150
    precommit_delta_ms: int = 100
    commit_ms: int = 50
    sync_interval_ms: int = 300
    rebroadcast_ms: int = 1_000
    sync_batch: int = 32
    #: a block response carries blocks up to this many bytes (at least one block): it must fit
    #: in one network frame
    sync_max_bytes: int = 768 * 1024
    #: long poll (``gridnode.core.consensus_sync``): a request for the block being decided is held
    #: this long and answered once it is decided, and a full node asks again at once after each
    #: block it got (falling back to another peer after this long without one). ``0``: not held;
    #: a full node polls every ``sync_interval_ms``.
    sync_wait_ms: int = 0
    #: adaptive cadence (see the module rules); ``None``: every height waits ``commit_ms``
    adaptive: AdaptiveCommit | None = None
    unsafe_quorum: int | None = None

    def timeout(self, kind: TimerKind, round_: int) -> int:
        if kind is TimerKind.PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if kind is TimerKind.PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        if kind is TimerKind.PRECOMMIT:
            return self.precommit_ms + round_ * self.precommit_delta_ms
        if kind is TimerKind.NEW_HEIGHT:
            return self.commit_ms
        if kind is TimerKind.REBROADCAST:
            return self.rebroadcast_ms
        return self.sync_interval_ms
