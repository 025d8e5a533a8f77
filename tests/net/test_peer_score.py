"""Properties of the pure peer score (``gridnode.core.peerscore``): refusals are free, time heals,
one message never bans, validators are tolerated longer, a ban lasts exactly its back-off."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gridnode.core.peerscore import (
    DEFAULT_WEIGHTS,
    PeerScore,
    PeerScores,
    ScoreParams,
    Verdict,
    record,
)
from market.errors import MISBEHAVIOUR, REASONS, LedgerReason, Reason, WireReason

PARAMS = ScoreParams()
REFUSALS = sorted(r for r in REASONS.values() if r not in MISBEHAVIOUR)
FAULTS = sorted(MISBEHAVIOUR)

gaps = st.floats(min_value=0.0, max_value=600.0, allow_nan=False)
events = st.lists(st.tuples(gaps, st.sampled_from(FAULTS + REFUSALS)), max_size=60)


def replay(
    evs: list[tuple[float, Reason]], *, protected: bool = False, params: ScoreParams = PARAMS
) -> list[tuple[float, PeerScore, Verdict]]:
    """Apply events (gap since the previous one, reason) from t=0; every intermediate state."""
    score, now, out = PeerScore(), 0.0, []
    for gap, reason in evs:
        now += gap
        score, verdict = record(score, reason, now, params, protected=protected)
        out.append((now, score, verdict))
    return out


@given(st.lists(st.tuples(gaps, st.sampled_from(REFUSALS)), max_size=60), st.booleans())
def test_refusals_never_change_a_score(evs: list[tuple[float, Reason]], protected: bool) -> None:
    for now, score, verdict in replay(evs, protected=protected):
        assert verdict is Verdict.REFUSAL
        assert score == PeerScore() and not score.banned_at(now)


@given(events, gaps, gaps)
def test_a_score_is_never_positive_and_only_heals_with_time(
    evs: list[tuple[float, Reason]], later: float, more: float
) -> None:
    states = replay(evs)
    if not states:
        return
    now, score, _ = states[-1]
    a = score.score_at(now + later, PARAMS)
    b = score.score_at(now + later + more, PARAMS)
    assert score.score_at(now, PARAMS) <= a <= b <= 0.0


@given(events, gaps, gaps)
def test_decay_does_not_depend_on_when_it_is_looked_at(
    evs: list[tuple[float, Reason]], t1: float, t2: float
) -> None:
    states = replay(evs)
    if not states:
        return
    now, score, _ = states[-1]
    direct = score.penalty_at(now + t1 + t2, PARAMS)
    stepped = PeerScore(score.penalty_at(now + t1, PARAMS), now + t1).penalty_at(
        now + t1 + t2, PARAMS
    )
    assert math.isclose(direct, stepped, rel_tol=1e-9, abs_tol=1e-9)


@given(st.sampled_from(FAULTS + REFUSALS), st.booleans(), gaps)
def test_one_message_never_bans_anyone(reason: Reason, protected: bool, at: float) -> None:
    _, verdict = record(PeerScore(at_s=at), reason, at, PARAMS, protected=protected)
    assert verdict is not Verdict.BANNED


@given(events)
def test_more_misbehaviour_never_improves_a_score(evs: list[tuple[float, Reason]]) -> None:
    """Dropping any one misbehaviour leaves a score at least as good at every later time."""
    full = replay(evs)
    for i, (_, reason) in enumerate(evs):
        if reason not in MISBEHAVIOUR:
            continue
        fewer = replay([*evs[:i], (evs[i][0], LedgerReason.STALE_NONCE), *evs[i + 1 :]])
        for (now, a, _), (_, b, _) in zip(full, fewer, strict=True):
            assert a.score_at(now, PARAMS) <= b.score_at(now, PARAMS) + 1e-9


def _first_ban(states: list[tuple[float, PeerScore, Verdict]]) -> float | None:
    return next((now for now, _, v in states if v is Verdict.BANNED), None)


@given(events)
def test_a_validator_is_banned_no_earlier_than_an_ordinary_peer(
    evs: list[tuple[float, Reason]],
) -> None:
    ordinary, validator = _first_ban(replay(evs)), _first_ban(replay(evs, protected=True))
    if validator is not None:
        assert ordinary is not None and ordinary <= validator


@given(st.lists(st.sampled_from(FAULTS), max_size=16))
def test_a_validator_survives_any_burst_shorter_than_its_tolerance(faults: list[Reason]) -> None:
    """Even back to back, a protected peer needs protected_factor x threshold points: with the
    heaviest weight (a forgery, 60) that is 17 messages; 16 of anything never ban it."""
    states = replay([(0.0, r) for r in faults], protected=True)
    assert all(v is not Verdict.BANNED for _, _, v in states)


@given(st.sampled_from(FAULTS), st.floats(min_value=0.0, max_value=5.0))
def test_a_burst_bans_an_ordinary_peer_for_exactly_its_back_off(
    reason: Reason, spacing: float
) -> None:
    """Misbehaving every ``spacing`` s (<= 5) without end, an ordinary peer is banned within 11
    messages (the lightest weight, a bad order, 12 points); the ban lasts ``ban_s`` from the
    banning message, then ends."""
    states = replay([(spacing, reason)] * 11)
    banned_at = _first_ban(states)
    assert banned_at is not None
    _, score, _ = next(s for s in states if s[2] is Verdict.BANNED)
    assert score.banned_until_s == banned_at + PARAMS.ban_s
    assert score.banned_at(banned_at + PARAMS.ban_s - 1e-6)
    assert not score.banned_at(banned_at + PARAMS.ban_s)


@given(st.sampled_from(FAULTS), st.integers(min_value=1, max_value=200))
def test_a_slow_steady_offender_is_never_banned(reason: Reason, n: int) -> None:
    """The steady-state penalty of one report every T seconds is w / (1 - 2^(-T/h)): below the
    threshold, no number of reports bans (the score forgives faster than they arrive)."""
    w = PARAMS.weight(reason)
    h = PARAMS.half_life_s
    # the shortest interval whose steady state stays below the threshold, plus a margin
    t = -h * math.log2(1 - w / PARAMS.ban_threshold) + 1.0
    assert all(v is not Verdict.BANNED for _, _, v in replay([(t, reason)] * n))


def test_the_default_weights_are_documented_ones() -> None:
    assert PARAMS.weight(LedgerReason.BAD_SIGNATURE) == 60
    assert PARAMS.weight(WireReason.MALFORMED) == 30
    assert PARAMS.weight("slot_closed") == 0 and PARAMS.weight("no_such_code") == 0
    assert max(DEFAULT_WEIGHTS.values()) < PARAMS.ban_threshold  # one message never bans


def test_the_book_keeps_peers_apart_and_forgets_the_clean() -> None:
    book = PeerScores()
    book.protect(["validator"])
    for i in range(4):
        assert book.record("attacker", WireReason.MALFORMED, float(i)) in (
            Verdict.PENALISED,
            Verdict.BANNED,
        )
        book.record("validator", WireReason.MALFORMED, float(i))
        assert book.record("late", "slot_closed", float(i)) is Verdict.REFUSAL
    assert book.is_banned("attacker", 4.0) and not book.is_banned("validator", 4.0)
    assert book.score("late", 4.0) == 0.0 and book.peers() == ["attacker", "validator"]
    assert book.ban_left_s("attacker", 4.0) == PARAMS.ban_s - 1.0
    # an hour later the validator's record has decayed away; the attacker's ban has ended
    assert book.forget_clean(3_600.0) == 2 and book.peers() == []
