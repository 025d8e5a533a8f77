"""What each peer did to us: traffic counters, misbehaviour by reason, and its decaying score.

Rules of this module:

* :class:`PeerBook` is the **one place** a host records a peer's misbehaviour
  (:meth:`PeerBook.report`): the stream server, the gossip validator and a handler that must
  still answer (``submit-batch``) all report through it, each refused message once, under its
  reason. Only reasons in :data:`market.errors.MISBEHAVIOUR` are recorded; a refusal an honest
  peer can meet (``slot_closed``, ``stale_nonce``, …) is answered but never counted.
* Each report feeds the peer's score (:mod:`gridnode.core.peerscore`, time = trio's clock). When
  the score falls below the threshold the book calls its ``on_ban`` hook once; the host then
  disconnects the peer and refuses its connections, streams and gossip while
  :meth:`PeerBook.is_banned` (``docs/protocol.md`` §6).
* Counting never raises and never blocks. :meth:`PeerBook.stats` hands out a copy.
* **Bounded**: a new identity costs an attacker nothing, so the book keeps per-peer records for
  at most ``max_peers`` peers. Past that, the least recently active peer that is neither banned
  nor protected is forgotten (its penalty too: a fresh key would have bought the same); what it
  did stays in the totals (:meth:`PeerBook.totals`, :attr:`PeerBook.forgotten`), so every refusal
  is still counted exactly once. A banned peer is kept until its ban ends (forgetting it would
  lift the ban). :meth:`PeerBook.stats` can be asked for a few peers and the most recent ones,
  so a status snapshot costs the same whatever the number of peers ever seen.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

import trio

from gridnode.core.peerscore import PeerScores, ScoreParams, Verdict
from market.errors import InvalidInput, PeerMisbehaviour, is_misbehaviour

__all__ = ["MAX_PEERS", "TRAFFIC", "PeerBook", "PeerStats"]

log = logging.getLogger("gridnode.net")

#: traffic counters (not misbehaviour): frames read on our streams, gossip messages delivered,
#: requests of ours that timed out (the network's fault as often as the peer's)
TRAFFIC: Final = ("frames_in", "gossip_in", "timeouts")
#: per-peer records a book keeps (see the module rules)
MAX_PEERS: Final = 1_000


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What one peer did to us since the host started, and where its score stands now."""

    frames_in: int = 0
    gossip_in: int = 0
    timeouts: int = 0
    #: reason code -> how many of its messages were refused as misbehaviour (each counted once)
    misbehaviour: Mapping[str, int] = field(default_factory=dict)
    score: float = 0.0
    #: seconds of ban left (0: not banned) and how many times it was banned
    ban_left_s: float = 0.0
    bans: int = 0

    @property
    def misbehaviour_total(self) -> int:
        return sum(self.misbehaviour.values())

    @property
    def banned(self) -> bool:
        return self.ban_left_s > 0


class PeerBook:
    """Counters and scores of every peer a host heard from (see the module rules)."""

    def __init__(
        self,
        params: ScoreParams | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self.scores = PeerScores(params)
        self._clock = clock
        self.max_peers = max_peers
        self._traffic: dict[str, dict[str, int]] = {}
        self._bad: dict[str, dict[str, int]] = {}
        #: peers with a record, least recently active first
        self._recent: OrderedDict[str, None] = OrderedDict()
        #: misbehaviour by reason of every peer ever recorded, forgotten ones included
        self._totals: dict[str, int] = {}
        #: peers whose records were dropped to keep the bound
        self.forgotten = 0
        #: banned peers -> end of their ban, and a heap of (end, peer) to expire them in order
        self._bans: dict[str, float] = {}
        self._ban_ends: list[tuple[float, str]] = []
        self._swept_at = float("-inf")
        #: called with the peer id when a peer gets banned (the host disconnects it)
        self.on_ban: Callable[[str], None] = lambda peer: None

    def count(self, peer: str, what: str, n: int = 1) -> None:
        """Bump a traffic counter (:data:`TRAFFIC`)."""
        self._touch(peer)
        row = self._traffic.get(peer)
        if row is None:
            row = self._traffic[peer] = dict.fromkeys(TRAFFIC, 0)
        row[what] += n

    def judge(self, peer: str, error: InvalidInput) -> bool:
        """Record ``error`` against ``peer`` if it is misbehaviour; return whether it was."""
        if not is_misbehaviour(error.reason):
            return False
        self.report(PeerMisbehaviour(peer, error))
        return True

    def report(self, error: PeerMisbehaviour) -> None:
        """Record one misbehaving message of ``error.peer``; ban it when its score says so."""
        peer, reason = error.peer, error.reason
        self._touch(peer)
        by_reason = self._bad.setdefault(peer, {})
        by_reason[reason.value] = by_reason.get(reason.value, 0) + 1
        self._totals[reason.value] = self._totals.get(reason.value, 0) + 1
        now = self._clock()
        verdict = self.scores.record(peer, reason, now)
        log.debug("peer %s misbehaved: %s", peer, error.cause)
        if verdict is Verdict.BANNED:
            held = self.scores.get(peer)
            until = held.banned_until_s if held is not None else None
            if until is not None:
                self._bans[peer] = until
                heapq.heappush(self._ban_ends, (until, peer))
            log.warning(
                "banning peer %s for %.0f s: score %.0f after %s",
                peer,
                self.scores.params.ban_s,
                self.scores.score(peer, now),
                reason.value,
            )
            self.on_ban(peer)

    def is_banned(self, peer: str) -> bool:
        return self.scores.is_banned(peer, self._clock())

    def protect(self, peers: list[str] | tuple[str, ...] | frozenset[str]) -> None:
        """Peers (the genesis validators) that need :attr:`ScoreParams.protected_factor` times the
        penalty before they are banned."""
        self.scores.protect(peers)

    def banned_count(self) -> int:
        """How many peers are banned now."""
        now = self._clock()
        ends = self._ban_ends
        while ends and ends[0][0] <= now:
            until, peer = heapq.heappop(ends)
            if self._bans.get(peer) == until:
                del self._bans[peer]
        return len(self._bans)

    def totals(self) -> dict[str, int]:
        """Misbehaviour by reason of every peer ever recorded (forgotten ones included)."""
        return dict(self._totals)

    def stats(
        self, *, peers: Collection[str] | None = None, recent: int | None = None
    ) -> dict[str, PeerStats]:
        """A snapshot of peers' counters and scores (a copy: safe to hand to another thread).

        Every recorded peer by default; else the records of ``peers`` (those it has) and of the
        ``recent`` most recently active others (so its cost does not grow with the peers seen)."""
        now = self._clock()
        if now - self._swept_at >= 1.0:  # decayed scores are dropped at most once a second
            self.scores.forget_clean(now)
            self._swept_at = now
        if peers is None and recent is None:
            chosen: set[str] = set(self._recent)
        else:
            chosen = {p for p in peers or () if p in self._recent}
            others = 0
            for p in reversed(self._recent):
                if others >= (recent or 0):
                    break
                if p not in chosen:
                    chosen.add(p)
                    others += 1
        out: dict[str, PeerStats] = {}
        for peer in sorted(chosen):
            held = self.scores.get(peer)
            out[peer] = PeerStats(
                **self._traffic.get(peer, dict.fromkeys(TRAFFIC, 0)),
                misbehaviour=dict(self._bad.get(peer, {})),
                score=self.scores.score(peer, now),
                ban_left_s=self.scores.ban_left_s(peer, now),
                bans=0 if held is None else held.bans,
            )
        return out

    def _touch(self, peer: str) -> None:
        recent = self._recent
        if peer in recent:
            recent.move_to_end(peer)
            return
        recent[peer] = None
        if len(recent) <= self.max_peers:
            return
        now = self._clock()
        for _ in range(len(recent) - 1):  # the oldest first; never the peer just added
            if len(recent) <= self.max_peers:
                break
            oldest = next(iter(recent))
            if self.scores.is_banned(oldest, now) or self.scores.is_protected(oldest):
                recent.move_to_end(oldest)  # kept (a ban must hold); look at the next
                continue
            del recent[oldest]
            self._traffic.pop(oldest, None)
            self._bad.pop(oldest, None)
            self.scores.forget(oldest)
            self.forgotten += 1
