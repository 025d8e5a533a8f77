"""Secure aggregation: exact sums (wraparound included), dropouts, restarts, refusals, privacy of
what a member sends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting import secagg as S
from forecasting.secagg import (
    Abort,
    Aggregation,
    Complete,
    Restart,
    RoundSpec,
    SecAggError,
    SecAggReason,
    Unmask,
    aggregate_round,
    keypair_from_seed,
    mask_update,
    reveal_seeds,
)

I64 = np.ndarray


def keys(n: int, salt: int = 0) -> dict[bytes, bytes]:
    """public -> private for ``n`` deterministic members."""
    pairs = [keypair_from_seed(bytes([salt]) + k.to_bytes(31, "big")) for k in range(n)]
    return {pk: sk for sk, pk in pairs}


def plain_sum(vectors: Iterator[I64] | list[I64], length: int) -> I64:
    total = np.zeros(length, dtype=np.uint64)
    for v in vectors:
        total += np.asarray(v, dtype=np.int64).view(np.uint64)
    return total.view(np.int64)


@contextmanager
def refused(reason: SecAggReason) -> Iterator[None]:
    """Expect a :class:`SecAggError` whose reason is exactly ``reason``."""
    with pytest.raises(SecAggError) as info:
        yield
    assert info.value.reason is reason, info.value


int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=9),
    length=st.integers(min_value=1, max_value=6),
    degree=st.sampled_from([2, 4, 24]),
    data=st.data(),
)
def test_the_masked_sum_is_the_plain_sum_mod_2_64(
    n: int, length: int, degree: int, data: st.DataObject
) -> None:
    members = keys(n)
    ups = {
        pk: np.array(data.draw(st.lists(int64s, min_size=length, max_size=length)), dtype=np.int64)
        for pk in members
    }
    outcome, transcript = aggregate_round(ups, members, 5, degree=degree)
    assert isinstance(outcome, Complete)
    assert np.array_equal(outcome.total, plain_sum(list(ups.values()), length))
    assert len(transcript.updates) == n and not transcript.reveals


def test_wraparound_is_exact() -> None:
    members = keys(4)
    big = np.array([2**63 - 1, -(2**63)], dtype=np.int64)
    ups = dict.fromkeys(members, big)
    outcome, _ = aggregate_round(ups, members, 1)
    assert isinstance(outcome, Complete)
    # 4 × (2**63 − 1) ≡ −4 and 4 × (−2**63) ≡ 0 (mod 2**64)
    assert outcome.total.tolist() == [-4, 0]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=6, max_value=14),
    degree=st.sampled_from([4, 6, 24]),
    drop_frac=st.floats(min_value=0.0, max_value=0.34),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_dropouts_above_threshold_give_the_survivors_plain_sum(
    n: int, degree: int, drop_frac: float, seed: int
) -> None:
    members = keys(n)
    rng = np.random.default_rng(seed)
    ups = {pk: rng.integers(-(2**40), 2**40, 7) for pk in members}
    order = sorted(members)
    dropped = [order[i] for i in rng.permutation(n)[: int(drop_frac * n)]]
    outcome, transcript = aggregate_round(ups, members, 2, dropped=dropped, degree=degree)
    assert isinstance(outcome, Complete)
    assert outcome.contributors == frozenset(members) - set(dropped)
    want = plain_sum([ups[pk] for pk in outcome.contributors], 7)
    assert np.array_equal(outcome.total, want)
    # a member never reveals a seed with a member whose update was received
    for reveal in transcript.reveals:
        assert all(d in dropped for d, _ in reveal.seeds)


def test_below_threshold_restarts_without_the_missing_and_then_completes() -> None:
    members = keys(6)
    ups = {pk: np.full(3, i, dtype=np.int64) for i, pk in enumerate(sorted(members))}
    spec = RoundSpec.new(9, members, 3)
    assert spec.threshold == 4
    agg = Aggregation(spec)
    live = sorted(members)[:3]
    for pk in live:
        agg.add_update(mask_update(spec, members[pk], pk, ups[pk]))
    outcome = agg.close_collection()  # the deadline passed with 3 of 6 < 4
    assert isinstance(outcome, Restart)
    assert outcome.missing == frozenset(sorted(members)[3:])
    nxt = outcome.spec
    assert nxt.members == tuple(live) and nxt.attempt == 1 and nxt.digest != spec.digest
    agg2 = Aggregation(nxt)
    for pk in live:
        agg2.add_update(mask_update(nxt, members[pk], pk, ups[pk]))
    done = agg2.close_collection()
    assert isinstance(done, Complete)
    assert done.total.tolist() == [0 + 1 + 2] * 3
    # a late update of the first attempt is refused, never blocks anything
    with refused(SecAggReason.LATE):
        agg.add_update(mask_update(spec, members[live[0]], live[0], ups[live[0]]))


def test_too_few_left_aborts_and_never_loops() -> None:
    members = keys(4)
    ups = {pk: np.ones(2, dtype=np.int64) for pk in members}
    outcome, _ = aggregate_round(ups, members, 1, dropped=sorted(members)[:2])
    assert isinstance(outcome, Abort)
    assert len(outcome.survivors) == 2


def test_a_silent_survivor_restarts_the_round_without_it() -> None:
    members = keys(9)
    order = sorted(members)
    ups = {pk: np.full(4, 1 + i, dtype=np.int64) for i, pk in enumerate(order)}
    spec = RoundSpec.new(3, members, 4, degree=4)
    neighbour = spec.members[spec.neighbours(order[0])[0]]  # asked to reveal, stays silent
    outcome, transcript = aggregate_round(
        ups, members, 3, dropped=[order[0]], silent=[neighbour], degree=4
    )
    assert isinstance(outcome, Complete)
    assert outcome.spec.attempt == 1
    assert order[0] not in outcome.contributors and neighbour not in outcome.contributors
    assert len(outcome.contributors) == 7
    assert np.array_equal(outcome.total, plain_sum([ups[p] for p in outcome.contributors], 4))
    assert len(transcript.unmasks) >= 1


def test_a_member_refuses_to_reveal_for_a_member_that_was_received() -> None:
    members = keys(5)
    spec = RoundSpec.new(1, members, 2)
    order = sorted(members)
    me, victim = order[0], order[1]
    lying = Unmask(
        spec.digest,
        received=frozenset(order[:4]),
        dropped=frozenset(order[4:]),
        requests={me: (victim,)},
    )
    with refused(SecAggReason.REVEAL_FOR_RECEIVED):
        reveal_seeds(spec, members[me], me, lying)


def test_a_member_refuses_when_it_would_keep_no_live_neighbour() -> None:
    members = keys(5)
    spec = RoundSpec.new(1, members, 2)
    order = sorted(members)
    me = order[0]
    everyone_else = tuple(order[1:])
    ask = Unmask(spec.digest, frozenset([me]), frozenset(everyone_else), {me: everyone_else})
    with refused(SecAggReason.TOO_FEW_LIVE_NEIGHBOURS):
        reveal_seeds(spec, members[me], me, ask)


def test_bad_inputs_are_refused_with_their_reason() -> None:
    members = keys(4)
    order = sorted(members)
    with refused(SecAggReason.BAD_SPEC):
        RoundSpec.new(1, order[:2], 3)
    with refused(SecAggReason.BAD_SPEC):
        RoundSpec(1, 0, tuple(reversed(order)), 3, 3)
    with refused(SecAggReason.BAD_SPEC):
        RoundSpec.new(1, order, 3, threshold=5)
    spec = RoundSpec.new(1, order, 3)
    other = RoundSpec.new(2, order, 3)
    agg = Aggregation(spec)
    pk = order[0]
    with refused(SecAggReason.BAD_LENGTH):
        mask_update(spec, members[pk], pk, np.zeros(4, dtype=np.int64))
    with refused(SecAggReason.WRONG_ROUND):
        agg.add_update(mask_update(other, members[pk], pk, np.zeros(3, dtype=np.int64)))
    stranger_sk, stranger_pk = keypair_from_seed(b"\xff" * 32)
    with refused(SecAggReason.UNKNOWN_MEMBER):
        mask_update(spec, stranger_sk, stranger_pk, np.zeros(3, dtype=np.int64))
    msg = mask_update(spec, members[pk], pk, np.zeros(3, dtype=np.int64))
    agg.add_update(msg)
    with refused(SecAggReason.DUPLICATE):
        agg.add_update(msg)
    with refused(SecAggReason.BAD_LENGTH):
        agg.add_update(S.MaskedUpdate(spec.digest, order[1], b"\x00" * 8))
    with refused(SecAggReason.WRONG_PHASE):
        agg.close_reveals()


def test_dp_sigma_and_clip() -> None:
    # the classical bound sqrt(2 ln(1.25/δ)) Δ/ε is an upper bound for ε < 1
    sigma = S.gaussian_sigma(0.5, 1e-5, 1.0)
    assert sigma < np.sqrt(2 * np.log(1.25 / 1e-5)) / 0.5
    assert S.gaussian_sigma(2.0, 1e-5, 1.0) < sigma
    with refused(SecAggReason.BAD_SPEC):
        S.gaussian_sigma(0.0, 1e-5, 1.0)
    v = np.array([3000, 4000], dtype=np.int64)
    assert S.clip_l2(v, 500.0).tolist() == [300, 400]
    assert S.clip_l2(v, 1e9) is v


def test_dp_noise_is_in_the_sum_and_needs_a_seeded_rng() -> None:
    members = keys(5)
    ups = {pk: np.zeros(2000, dtype=np.int64) for pk in members}
    dp = S.DpConfig(epsilon=1.0, delta=1e-5, clip_norm=1000.0)
    with refused(SecAggReason.BAD_SPEC):
        aggregate_round(ups, members, 1, dp=dp)
    outcome, _ = aggregate_round(ups, members, 1, dp=dp, rng=np.random.default_rng(3))
    assert isinstance(outcome, Complete)
    # 5 members each add N(0, σ²/threshold) with threshold 4: the sum's std is σ·sqrt(5/4)
    std = float(outcome.total.std())
    assert 0.9 * dp.sigma * np.sqrt(5 / 4) < std < 1.1 * dp.sigma * np.sqrt(5 / 4)
