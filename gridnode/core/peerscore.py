"""Peer scores: misbehaviour lowers a peer's score, time heals it, a low score bans the peer.

In the spirit of GossipSub v1.1's peer scoring (its P4 "invalid messages" term, a decaying counter
with a penalty weight, and a graylist threshold below which a peer is ignored), reduced to what a
community needs. Rules of this module:

* Only misbehaviour counts (:data:`market.errors.MISBEHAVIOUR`: undecodable bytes, a forged
  signature, an outsider's key, an order breaking the static rules). A *refusal* an honest peer
  can meet (``slot_closed``, ``stale_nonce``, ``duplicate``, ``full``, …) never changes a score:
  :func:`record` answers :attr:`Verdict.REFUSAL` and returns the score unchanged.
* Each misbehaviour reason has a weight in penalty points (:attr:`ScoreParams.weights`, else
  :attr:`ScoreParams.default_weight`). A peer's penalty decays exponentially with half-life
  ``half_life_s``; its score is ``-penalty`` (0 is clean; never positive). Decay is computed when
  the score is read or changed: ``penalty(t) = penalty(t0) * 2 ** (-(t - t0) / half_life_s)``, so
  reading a score never changes it.
* A peer whose penalty reaches ``ban_threshold`` is **banned** for ``ban_s`` (the driver
  disconnects it and refuses its connections, streams and gossip until then). A **protected** peer
  (a genesis validator: banning one costs the committee liveness, and a software fault in a
  validator must not split the community) needs ``protected_factor`` times as much penalty, so no
  single message — whatever its reason — ever bans a validator or any other peer: every weight is
  below ``ban_threshold``. Misbehaviour reported while a peer is banned still adds penalty but does
  not extend the ban.
* Pure: time is a float of seconds passed in by the caller (any monotonic clock); no I/O.

Known limits: penalties only (no positive score for good behaviour, no per-topic terms, no IP
colocation term); a peer can come back with a fresh identity (a new key costs nothing) — the ban
protects CPU and bandwidth from one identity, it is not Sybil resistance (ledger membership is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Final

from market.errors import (
    MISBEHAVIOUR,
    ConsensusReason,
    LedgerReason,
    OrderReason,
    Reason,
    UsageError,
    WireReason,
    reason_of,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "PeerScore",
    "PeerScores",
    "ScoreParams",
    "Verdict",
    "record",
]

_WIRE_FAULT: Final = 30.0
_FORGERY: Final = 60.0
_BAD_ORDER: Final = 12.0

#: Penalty points per misbehaviour reason (see ``docs/protocol.md`` §6 for the reasoning):
#: a forged signature costs most (the sender had to try), bytes no encoder writes and outsiders'
#: keys next, an order that breaks a static market rule least (a buggy client, or a probe).
DEFAULT_WEIGHTS: Final[Mapping[Reason, float]] = MappingProxyType(
    {
        LedgerReason.BAD_SIGNATURE: _FORGERY,
        LedgerReason.NOT_A_MEMBER: _WIRE_FAULT,
        ConsensusReason.BAD_VOTE_TYPE: _WIRE_FAULT,
        **{r: _WIRE_FAULT for r in MISBEHAVIOUR if isinstance(r, WireReason)},
        **{r: _BAD_ORDER for r in MISBEHAVIOUR if isinstance(r, OrderReason)},
    }
)


@dataclass(frozen=True, slots=True)
class ScoreParams:
    """How misbehaviour is weighed and forgiven. Durations in seconds, penalties in points.

    Defaults: half-life 60 s, ban at 100 points for 300 s, validators ×10. So an ordinary peer is
    banned by 2 forged signatures within 35 s, 4 junk frames within 15 s or 9 bad orders in quick
    succession, and one that sends a junk frame every 32 s or slower forever never is (its penalty
    settles below the threshold); a validator needs 17 forgeries or 34 junk frames in a burst.
    """

    weights: Mapping[Reason, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    default_weight: float = _WIRE_FAULT
    half_life_s: float = 60.0
    ban_threshold: float = 100.0
    ban_s: float = 300.0
    protected_factor: float = 10.0

    def __post_init__(self) -> None:
        if not self.half_life_s > 0 or not self.ban_s >= 0 or not self.protected_factor >= 1:
            raise UsageError("expected half_life_s > 0, ban_s >= 0 and protected_factor >= 1")
        heaviest = max([self.default_weight, *self.weights.values()])
        if not 0 < heaviest < self.ban_threshold or min(self.weights.values(), default=1) <= 0:
            raise UsageError(
                "every weight must be > 0 and below ban_threshold (one message never bans)"
            )

    def weight(self, reason: str) -> float:
        """Penalty points for ``reason``: 0 for a refusal (not misbehaviour)."""
        member = reason_of(reason)
        if member is None or member not in MISBEHAVIOUR:
            return 0.0
        return self.weights.get(member, self.default_weight)

    def threshold(self, *, protected: bool) -> float:
        return self.ban_threshold * (self.protected_factor if protected else 1.0)


class Verdict(Enum):
    """What :func:`record` did with one report."""

    REFUSAL = "refusal"  # not misbehaviour: the score is unchanged
    PENALISED = "penalised"
    BANNED = "banned"  # penalised, and the penalty reached the threshold: banned from now


@dataclass(frozen=True, slots=True)
class PeerScore:
    """One peer's penalty at ``at_s`` and its ban (``banned_until_s``; ``None`` if never banned)."""

    penalty: float = 0.0
    at_s: float = 0.0
    banned_until_s: float | None = None
    bans: int = 0

    def penalty_at(self, now_s: float, params: ScoreParams) -> float:
        """The penalty decayed to ``now_s`` (never earlier than ``at_s``)."""
        elapsed = max(0.0, now_s - self.at_s)
        return float(self.penalty * 2.0 ** (-elapsed / params.half_life_s))

    def score_at(self, now_s: float, params: ScoreParams) -> float:
        """``-penalty``: 0 for a clean peer, lower is worse."""
        return -self.penalty_at(now_s, params)

    def banned_at(self, now_s: float) -> bool:
        return self.banned_until_s is not None and now_s < self.banned_until_s


def record(
    score: PeerScore, reason: str, now_s: float, params: ScoreParams, *, protected: bool = False
) -> tuple[PeerScore, Verdict]:
    """``score`` after one report of ``reason`` at ``now_s``, and what happened (module rules)."""
    weight = params.weight(reason)
    if weight == 0.0:
        return score, Verdict.REFUSAL
    now_s = max(now_s, score.at_s)
    penalty = score.penalty_at(now_s, params) + weight
    if score.banned_at(now_s) or penalty < params.threshold(protected=protected):
        return PeerScore(penalty, now_s, score.banned_until_s, score.bans), Verdict.PENALISED
    return PeerScore(penalty, now_s, now_s + params.ban_s, score.bans + 1), Verdict.BANNED


class PeerScores:
    """The scores of every peer that misbehaved, keyed by peer id (any string); see the rules."""

    def __init__(self, params: ScoreParams | None = None) -> None:
        self.params = params if params is not None else ScoreParams()
        self._scores: dict[str, PeerScore] = {}
        self._protected: frozenset[str] = frozenset()

    def protect(self, peers: Iterable[str]) -> None:
        """Give ``peers`` (the validators) the protected threshold; replaces the previous set."""
        self._protected = frozenset(peers)

    def is_protected(self, peer: str) -> bool:
        return peer in self._protected

    def record(self, peer: str, reason: str, now_s: float) -> Verdict:
        old = self._scores.get(peer, PeerScore(at_s=now_s))
        new, verdict = record(old, reason, now_s, self.params, protected=peer in self._protected)
        if verdict is not Verdict.REFUSAL:
            self._scores[peer] = new
        return verdict

    def score(self, peer: str, now_s: float) -> float:
        held = self._scores.get(peer)
        return 0.0 if held is None else held.score_at(now_s, self.params)

    def is_banned(self, peer: str, now_s: float) -> bool:
        held = self._scores.get(peer)
        return held is not None and held.banned_at(now_s)

    def ban_left_s(self, peer: str, now_s: float) -> float:
        held = self._scores.get(peer)
        if held is None or held.banned_until_s is None:
            return 0.0
        return max(0.0, held.banned_until_s - now_s)

    def get(self, peer: str) -> PeerScore | None:
        return self._scores.get(peer)

    def forget(self, peer: str) -> None:
        """Drop ``peer``'s score (its record starts afresh if it misbehaves again)."""
        self._scores.pop(peer, None)

    def peers(self) -> list[str]:
        return sorted(self._scores)

    def forget_clean(self, now_s: float, *, below: float = 0.01) -> int:
        """Drop peers not banned whose penalty decayed below ``below`` (bounds memory); returns how
        many were dropped. Their record starts afresh if they misbehave again."""
        clean = [
            p
            for p, s in self._scores.items()
            if not s.banned_at(now_s) and s.penalty_at(now_s, self.params) < below
        ]
        for p in clean:
            del self._scores[p]
        return len(clean)
