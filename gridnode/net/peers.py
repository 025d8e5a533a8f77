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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import trio

from gridnode.core.peerscore import PeerScores, ScoreParams, Verdict
from market.errors import InvalidInput, PeerMisbehaviour, is_misbehaviour

__all__ = ["TRAFFIC", "PeerBook", "PeerStats"]

log = logging.getLogger("gridnode.net")

#: traffic counters (not misbehaviour): frames read on our streams, gossip messages delivered,
#: requests of ours that timed out (the network's fault as often as the peer's)
TRAFFIC: Final = ("frames_in", "gossip_in", "timeouts")


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
    ) -> None:
        self.scores = PeerScores(params)
        self._clock = clock
        self._traffic: dict[str, dict[str, int]] = {}
        self._bad: dict[str, dict[str, int]] = {}
        #: called with the peer id when a peer gets banned (the host disconnects it)
        self.on_ban: Callable[[str], None] = lambda peer: None

    def count(self, peer: str, what: str, n: int = 1) -> None:
        """Bump a traffic counter (:data:`TRAFFIC`)."""
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
        by_reason = self._bad.setdefault(peer, {})
        by_reason[reason.value] = by_reason.get(reason.value, 0) + 1
        now = self._clock()
        verdict = self.scores.record(peer, reason, now)
        log.debug("peer %s misbehaved: %s", peer, error.cause)
        if verdict is Verdict.BANNED:
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

    def stats(self) -> dict[str, PeerStats]:
        """A snapshot of every peer's counters and score (a copy: safe to hand to another thread)."""
        now = self._clock()
        self.scores.forget_clean(now)
        out: dict[str, PeerStats] = {}
        for peer in sorted(set(self._traffic) | set(self._bad)):
            held = self.scores.get(peer)
            out[peer] = PeerStats(
                **self._traffic.get(peer, dict.fromkeys(TRAFFIC, 0)),
                misbehaviour=dict(self._bad.get(peer, {})),
                score=self.scores.score(peer, now),
                ban_left_s=self.scores.ban_left_s(peer, now),
                bans=0 if held is None else held.bans,
            )
        return out
