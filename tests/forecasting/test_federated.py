"""The community model, its round and the personal blend, on real homes (small, fast slices)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import forecasting.federated as fed
from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    load_citylearn_homes,
)
from forecasting.federated import (
    BLEND_PRIOR_DAYS,
    DP_UNIT,
    FALLBACK_PRIOR_DAYS,
    FEATURE_VERSION,
    LAG_DAYS,
    MIN_CONTRIBUTE_DAYS,
    PERSONAL_DAYS,
    PERSONAL_PRIOR_SAMPLES,
    PROFILE_DAYS,
    PROFILE_MIN_LEAD_S,
    CommunityModel,
    FederatedForecaster,
    Layout,
    community_forecast,
    decode_model,
    dp_scale,
    dp_unscale,
    local_update,
    personal_coefs,
    pooled_model,
    profile_buckets,
)
from forecasting.federated_round import run_round
from forecasting.models import QuantileForecast, SeasonalNaive, _make_forecast
from forecasting.secagg import DpConfig, keypair_from_seed
from forecasting.series import SECONDS_PER_DAY, MeterHistory
from market.errors import DataReason, InvalidInput, UsageError, WireReason
from tests.refusals import refused

SITE = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}


@pytest.fixture(scope="module")
def homes() -> MeterHistory:
    h = load_citylearn_homes((1, 2, 3, 4, 5, 6))
    return h.window(h.start_s, h.start_s + 60 * SECONDS_PER_DAY)


def keys(n: int, salt: int = 0) -> list[tuple[bytes, bytes]]:
    return [keypair_from_seed(bytes([salt]) + k.to_bytes(31, "big")) for k in range(n)]


def test_a_member_update_is_its_own_and_sums_to_the_pooled_model(homes: MeterHistory) -> None:
    together = local_update(homes, previous=None, **SITE)  # type: ignore[arg-type]
    alone = local_update(homes.select([2]), previous=None, **SITE)  # type: ignore[arg-type]
    assert np.array_equal(together[2], alone[0])
    assert together.dtype == np.int64 and together.shape == (6, Layout(3600).length)
    model, stats, _ = run_round([homes], keys(6), 1, None, **SITE)  # type: ignore[arg-type]
    assert model is not None and stats.contributors == 6
    plain = pooled_model(together, round=1, step_s=3600, previous=None)
    assert model.hash == plain.hash and np.array_equal(model.total, plain.total)


def test_the_model_hash_is_the_same_for_every_member_and_round_trips(homes: MeterHistory) -> None:
    ups = local_update(homes, previous=None, **SITE)  # type: ignore[arg-type]
    a = pooled_model(ups, round=1, step_s=3600, previous=None)
    b = CommunityModel.of(a.total.copy(), round=1, step_s=3600, previous=bytes(32), contributors=6)
    assert a.hash == b.hash
    assert decode_model(a.content()).hash == a.hash
    assert pooled_model(ups, round=2, step_s=3600, previous=None).hash != a.hash
    with refused(WireReason.BAD_TAG):
        decode_model(a.content().replace(b"gn.fedmodel", b"gn.fedmodeX"))


def test_every_byte_a_member_sends_hides_its_update_and_readings(homes: MeterHistory) -> None:
    """Capture every message of a round with a dropout: the sum is exact, no update or reading
    appears in any byte sent, and the same update under other keys gives unrelated bytes."""
    n = homes.households
    ks = keys(n)
    model, stats, transcript = run_round([homes], ks, 1, None, dropped=[5], degree=2, **SITE)  # type: ignore[arg-type]
    assert model is not None and model.contributors == 5
    plain = local_update(homes, previous=None, **SITE)  # type: ignore[arg-type]
    assert np.array_equal(model.total, plain[:5].sum(axis=0))  # exact, int64
    assert transcript.reveals  # the dropped member's neighbours revealed their pair seeds
    sent = b"".join(u.masked for u in transcript.updates)
    sent += b"".join(seed + d for r in transcript.reveals for d, seed in r.seeds)
    for k in range(5):
        mine = next(u for u in transcript.updates if u.member == ks[k][1])
        masked = np.frombuffer(mine.masked, dtype="<u8")
        update = plain[k].view(np.uint64)
        # masked entries look uniform: no entry equals the update's, the top bits are fair coins
        assert np.mean(masked == update) < 0.01
        assert 0.45 < float(np.mean(masked >> np.uint64(63))) < 0.55
        # no 8-byte run of the update or of any raw reading (as float64 or int Wh) is in the bytes
        nonzero = [int(v) for v in plain[k] if abs(int(v)) > 1 << 20][:50]
        assert all(v.to_bytes(8, "little", signed=True) not in sent for v in nonzero)
    assert homes.pv_w is not None and homes.load_w is not None
    readings = np.concatenate([homes.load_w[:, 200:230].ravel(), homes.pv_w[:, 300:330].ravel()])
    assert all(np.float64(r).tobytes() not in sent for r in readings if r > 0)
    assert all(
        round(r).to_bytes(8, "little", signed=True) not in sent for r in readings if r > 1000
    )
    # the same updates under other key pairs: unrelated bytes, same sum
    again, _, transcript2 = run_round(
        [homes], keys(n, salt=9), 1, None, dropped=[5], degree=2, **SITE
    )  # type: ignore[arg-type]
    assert again is not None and again.hash == model.hash
    a = np.frombuffer(transcript.updates[0].masked, dtype="<u8")
    b = np.frombuffer(transcript2.updates[0].masked, dtype="<u8")
    assert np.mean(a == b) < 0.01
    assert stats.max_bytes_per_member == 8 * Layout(3600).length + 64


def test_without_one_pair_seed_the_aggregator_cannot_unmask(homes: MeterHistory) -> None:
    """All messages plus every pair seed but one of member 0's: member 0's vector minus the known
    masks is still its update plus one unknown pseudorandom mask."""
    from forecasting.secagg import RoundSpec, _mask, pair_seed

    ks = keys(homes.households)
    plain = local_update(homes, previous=None, **SITE)  # type: ignore[arg-type]
    _, _, transcript = run_round([homes], ks, 1, None, degree=2, **SITE)  # type: ignore[arg-type]
    spec = RoundSpec.new(1, [pk for _, pk in ks], Layout(3600).length, degree=2)
    sk0, pk0 = ks[0]
    i = spec.index(pk0)
    nb = spec.neighbours(pk0)
    vec = np.frombuffer(
        transcript.updates[[u.member for u in transcript.updates].index(pk0)].masked, dtype="<u8"
    ).copy()
    for j in nb[1:]:  # every seed but the first neighbour's
        m = _mask(pair_seed(spec, sk0, pk0, spec.members[j]), spec.length)
        vec = vec - m if j > i else vec + m
    left = vec - plain[0].view(np.uint64)
    assert np.mean(left == 0) < 0.01  # still masked
    m = _mask(pair_seed(spec, sk0, pk0, spec.members[nb[0]]), spec.length)
    vec = vec - m if nb[0] > i else vec + m
    assert np.array_equal(vec, plain[0].view(np.uint64))  # and the last seed unmasks it exactly


def test_a_history_too_short_to_contribute_is_refused_and_left_out(homes: MeterHistory) -> None:
    short = homes.window(homes.start_s, homes.start_s + (MIN_CONTRIBUTE_DAYS - 1) * SECONDS_PER_DAY)
    with refused(DataReason.HISTORY_TOO_SHORT):
        local_update(short, previous=None)
    model, stats, _ = run_round(
        [homes.select([0, 1, 2]), short.select([3])],
        keys(4),
        1,
        None,
        **SITE,  # type: ignore[arg-type]
    )
    assert model is not None and stats.members == 3 and model.contributors == 3


@pytest.fixture(scope="module")
def model(homes: MeterHistory) -> CommunityModel:
    first, _, _ = run_round([homes], keys(6), 1, None, **SITE)  # type: ignore[arg-type]
    second, _, _ = run_round(
        [homes], keys(6), 2, first, since_s=homes.end_s - 14 * SECONDS_PER_DAY, **SITE
    )  # type: ignore[arg-type]
    assert second is not None
    return second


def test_the_held_back_validation_is_summed_in_the_round(model: CommunityModel) -> None:
    v = model.validation
    assert v.samples > 0 and 0 < v.mae < v.naive_mae  # round 1's model beats naive on 6 homes
    assert 0.0 <= v.coverage <= 1.0


def test_a_daily_round_holds_back_every_sample_whose_reading_came_after_the_last_round(
    homes: MeterHistory,
) -> None:
    """With a round a day, the held-back validation is the previous model's error on exactly the
    samples whose target reading came after that model's round (fitted on the history before it,
    it never saw them): about a day of samples per lead bucket, not the at most one origin per
    bucket that counting only origins after the round gave."""
    since = homes.end_s - SECONDS_PER_DAY
    before = homes.window(homes.start_s, since)
    first = local_update(before, previous=None, **SITE)  # type: ignore[arg-type]
    model = pooled_model(first, round=1, step_s=homes.step_s, previous=None)
    update = local_update(homes, previous=model, since_s=since, **SITE)  # type: ignore[arg-type]
    got = update[:, Layout(homes.step_s).validation_at :] / float(1 << fed.FRAC_BITS)
    series = fed._series(
        homes, 0, latitude=SITE["latitude"], longitude=SITE["longitude"], holiday_country=None,
        holiday_subdiv=None,
    )  # fmt: skip
    x, y, targets = fed._training_rows(
        homes, series, max_origins=fed.MAX_ORIGINS, train_days=fed.TRAIN_DAYS
    )
    held = targets >= (since - homes.start_s) // homes.step_s
    buckets = targets.shape[0]
    assert held.sum() >= 5 * buckets  # 71 here (9 buckets); by origin, one origin: 9
    assert np.array_equal(got[:, 0], np.full(len(got), float(held.sum())))  # the count
    p50 = np.einsum("nbsf,bf->nbs", x, model.coefs[:, 1])
    want = np.abs(y - p50)[:, held].sum(axis=1)
    assert np.allclose(got[:, 1], want, rtol=1e-6, atol=1e-3)
    assert np.all(got[:, 6] <= got[:, 0])  # covered ≤ count


def test_community_forecast_is_sane(model: CommunityModel, homes: MeterHistory) -> None:
    past = homes.window(homes.end_s - 10 * SECONDS_PER_DAY, homes.end_s - SECONDS_PER_DAY)
    f = community_forecast(model, past, 24, **SITE)  # type: ignore[arg-type]
    assert f.values_w.shape == (6, 24, 3)
    assert np.all(np.diff(f.values_w, axis=2) >= 0)
    actual = homes.window(past.end_s, past.end_s + SECONDS_PER_DAY).net_w
    naive = past.net_w[:, -24:]
    assert np.abs(f.median_w - actual).mean() < 1.5 * np.abs(naive - actual).mean()


def test_the_forecast_looks_back_13_days_or_as_many_as_there_are(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """gn.fedqr.2: the profile features use the LAG_DAYS (13) days before a target — a history
    longer than 14 days forecasts exactly as its last 14 days — and a shorter history (at least 8
    days) uses the days it has."""
    assert FEATURE_VERSION == "gn.fedqr.2" and LAG_DAYS == 13
    end = homes.end_s - SECONDS_PER_DAY
    two_weeks = homes.window(end - 14 * SECONDS_PER_DAY, end)
    longer = homes.window(homes.start_s, end)
    a = community_forecast(model, two_weeks, 24, **SITE).values_w  # type: ignore[arg-type]
    assert np.array_equal(a, community_forecast(model, longer, 24, **SITE).values_w)  # type: ignore[arg-type]
    ten = community_forecast(model, homes.window(end - 10 * SECONDS_PER_DAY, end), 24, **SITE)  # type: ignore[arg-type]
    assert np.all(np.isfinite(ten.values_w)) and not np.array_equal(ten.values_w, a)


def test_whole_series_profiles_equal_the_per_target_definition(homes: MeterHistory) -> None:
    """The training path computes every interval's profiles in slices, with the same-day-type
    weights once per local day; the forecast path takes any targets. Both give the same numbers
    (weekends and a holiday calendar, a UTC offset, every look-back length from 7 to 13 days)."""
    shifted = MeterHistory.from_components(
        homes.pv_w, homes.load_w, start_s=homes.start_s + 7 * 3600, step_s=homes.step_s,
        utc_offset_s=-5 * 3600,
    )  # fmt: skip
    s = shifted.steps_per_day
    for country in (None, "US"):
        series = fed._series(
            shifted, 0, latitude=SITE["latitude"], longitude=SITE["longitude"],
            holiday_country=country, holiday_subdiv=None,
        )  # fmt: skip
        every = fed._all_profiles(series, s)
        t = np.arange(7 * s, shifted.steps, dtype=np.int64)[::-3]  # any order, any subset
        assert np.array_equal(every[:, t], fed._profiles(series, t, s))
        assert not every[:, : 7 * s].any()
        # Column 4 by its definition: the mean load at this time on the (up to) 4 latest of the
        # look-back days of the target's day type (weekend/holiday or working day).
        kind = series.day_type
        for target in t[::40]:
            back = [target - s * k for k in range(1, min(int(target) // s, LAG_DAYS) + 1)]
            same = [i for i in back if kind[i] == kind[target]][:4]
            want = series.load[:, same].mean(axis=1) if same else np.zeros(len(series.load))
            assert np.allclose(every[:, target, 4], want, rtol=1e-12, atol=1e-9)


def test_an_update_reads_only_its_training_window(homes: MeterHistory) -> None:
    """``local_update`` drops the history before its last ``train_days`` days' samples and their
    look-back: the update is exactly the one computed on the whole history (statistics, counts and
    the held-back validation; with and without a previous model, a holiday calendar too)."""
    first = local_update(homes, previous=None, **SITE)  # type: ignore[arg-type]
    previous = pooled_model(first, round=1, step_s=3600, previous=None)
    since = homes.end_s - 3 * SECONDS_PER_DAY
    site = (SITE["latitude"], SITE["longitude"], "US", None)
    layout = Layout(homes.step_s)
    for train_days in (20, 30):
        for prev in (None, previous):
            windowed = local_update(
                homes, previous=prev, since_s=since, train_days=train_days,
                holiday_country="US", **SITE,  # type: ignore[arg-type]
            )  # fmt: skip
            whole = fed._update_rows(
                homes, prev, since, layout, site=site, max_origins=fed.MAX_ORIGINS,
                train_days=train_days,
            )  # fmt: skip
            assert np.array_equal(windowed, whole)
            assert prev is None or windowed[:, layout.validation_at].all()


def test_personalisation_rule(model: CommunityModel, homes: MeterHistory) -> None:
    """No community: the local model alone. A cold-start household (14 days, local = seasonal
    naive) leans on the community; the weights are in [0, 1] and the refs name the model."""
    local = SeasonalNaive(period_days=1, train_days=28)
    alone = FederatedForecaster(None, local).fit(homes)
    past = homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    assert np.array_equal(
        alone.predict(past, 24).values_w, local.fit(homes).predict(past, 24).values_w
    )
    assert all(r.community is None and r.community_permille == 0 for r in alone.refs)
    cold = FederatedForecaster(model, local, **SITE).fit(past)  # type: ignore[arg-type]
    assert np.all((cold.weights >= 0) & (cold.weights <= 1))
    assert all(r.community == model.hash for r in cold.refs)
    assert np.mean([r.community_permille for r in cold.refs]) > 500


def _own_loss(stats: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``βᵀGβ − 2βᵀb`` per row, bucket and quantile: a row's weighted squared error on its own
    samples up to a constant (its own IRLS statistics ``stats``, upper triangles then ``b``)."""
    f = beta.shape[-1]
    iu = np.triu_indices(f)
    gram = np.zeros((*stats.shape[:-1], f, f))
    gram[..., iu[0], iu[1]] = stats[..., : len(iu[0])]
    gram += np.swapaxes(np.triu(gram, 1), -1, -2)
    rhs = stats[..., len(iu[0]) :]
    quad = np.einsum("...f,...fg,...g->...", beta, gram, beta)
    out: np.ndarray = quad - 2.0 * np.einsum("...f,...f->...", beta, rhs)
    return out


def test_personal_coefficients_are_the_community_prior_corrected_by_the_own_data(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """The MAP fit: never worse than the community's coefficients on the household's own samples,
    moving from the community's (a heavy prior) to the own fit (a light one); a row's own
    coefficients depend on its own data only; nothing to correct with (too short a history, an
    infinite prior, a DP model without counts): the community's coefficients."""
    past = homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    layout = Layout(3600)
    own = local_update(past, previous=model, train_days=PERSONAL_DAYS, **SITE)  # type: ignore[arg-type]
    stats = own[:, : layout.stats_len].astype(np.float64).reshape(6, layout.buckets, 3, -1) / float(
        1 << 16
    )
    base = np.broadcast_to(model.coefs, (6, *model.coefs.shape))
    losses = []
    for prior in (1e9, PERSONAL_PRIOR_SAMPLES, 1.0):
        beta = personal_coefs(model, past, prior_samples=prior, **SITE)  # type: ignore[arg-type]
        assert beta.shape == (6, layout.buckets, 3, model.coefs.shape[-1])
        losses.append(_own_loss(stats, beta))
    assert np.all(losses[1] <= _own_loss(stats, base) + 1e-9)
    assert np.all(losses[2] <= losses[1] + 1e-9) and np.all(losses[1] <= losses[0] + 1e-9)
    assert np.mean(losses[1]) < np.mean(_own_loss(stats, base))  # it does correct something
    heavy = personal_coefs(model, past, prior_samples=1e9, **SITE)  # type: ignore[arg-type]
    assert np.allclose(heavy, base, atol=1e-3)
    one = personal_coefs(model, past.select([2]), **SITE)  # type: ignore[arg-type]
    assert np.array_equal(one[0], personal_coefs(model, past, **SITE)[2])  # type: ignore[arg-type]
    short = past.window(past.end_s - (MIN_CONTRIBUTE_DAYS - 1) * SECONDS_PER_DAY, past.end_s)
    none = personal_coefs(model, past, prior_samples=math.inf, **SITE)  # type: ignore[arg-type]
    for same in (personal_coefs(model, short, **SITE), none):  # type: ignore[arg-type]
        assert np.array_equal(same, base)
    layout_counts = slice(layout.counts_at, layout.counts_at + layout.buckets)
    no_counts = model.total.copy()
    no_counts[layout_counts] = 0  # what a DP round's sum holds
    dp_like = CommunityModel.of(no_counts, round=3, step_s=3600, previous=model.hash,
                                contributors=6)  # fmt: skip
    base_dp = np.broadcast_to(dp_like.coefs, base.shape)
    assert np.array_equal(personal_coefs(dp_like, past, **SITE), base_dp)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Oracle:
    """A "local model" that knows the future of ``truth``: the best any local model can be."""

    truth: MeterHistory
    name: str = "oracle"
    min_history_days: int = 1

    def fit(self, history: MeterHistory) -> _Oracle:
        return self

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        i = self.truth.index_at(history.end_s)
        values = self.truth.net_w[:, i : i + horizon]
        return _make_forecast(history, np.repeat(values[:, :, None], 3, axis=2))


def test_a_household_whose_local_model_is_better_keeps_it(
    model: CommunityModel, homes: MeterHistory
) -> None:
    past = homes.window(homes.start_s, homes.end_s - SECONDS_PER_DAY)
    two_weeks = past.window(past.end_s - 14 * SECONDS_PER_DAY, past.end_s)
    for history in (past, two_weeks):  # the evidence prior never outweighs a clear comparison
        fitted = FederatedForecaster(model, _Oracle(homes), **SITE).fit(history)  # type: ignore[arg-type]
        assert np.all(fitted.weights == 1.0)  # the local model's weight: all of it
        assert all(r.community_permille == 0 and r.community == model.hash for r in fitted.refs)
    blend = fitted.predict(past, 24).values_w
    assert np.array_equal(blend, _Oracle(homes).predict(past, 24).values_w)


@dataclass(frozen=True)
class _Twin:
    """A "local model" that forecasts exactly as the community model: no evidence either way."""

    model: CommunityModel
    name: str = "twin"
    min_history_days: int = 1

    def fit(self, history: MeterHistory) -> _Twin:
        return self

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        return community_forecast(self.model, history, horizon, **SITE)  # type: ignore[arg-type]


def test_with_equal_errors_the_evidence_prior_decides(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """Equal errors: the local model's weight is its prior odds h / (h + k) as a weight — a
    two-week-old household leans on the community, a year-old one keeps about half. (The twin
    forecasts as the community model itself: personalisation off, ``personal_prior_samples``
    infinite.)"""
    for days in (14, 59):
        history = homes.window(homes.end_s - days * SECONDS_PER_DAY, homes.end_s)
        fitted = FederatedForecaster(model, _Twin(model), personal_prior_samples=math.inf,  # type: ignore[arg-type]
                                     **SITE).fit(history)  # type: ignore[arg-type]  # fmt: skip
        odds = days / (days + BLEND_PRIOR_DAYS)
        assert np.allclose(fitted.weights, odds / (1.0 + odds))
    assert np.all(fitted.weights > 0.3)
    young = FederatedForecaster(model, _Twin(model), personal_prior_samples=math.inf, **SITE).fit(  # type: ignore[arg-type]
        homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    )
    assert np.all(young.weights < 0.3) and all(r.community_permille > 700 for r in young.refs)


def test_a_garbage_community_model_does_not_hurt_a_cold_start_household(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """A round whose sum is garbage (a malicious member, DP noise in a small community): even a
    two-week-old household, whose prior leans on the community, keeps its own forecast."""
    rng = np.random.default_rng(1)
    total = model.total + rng.integers(-(1 << 48), 1 << 48, model.total.shape)
    garbage = CommunityModel.of(total, round=9, step_s=3600, previous=model.hash, contributors=6)
    history = homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    fitted = FederatedForecaster(garbage, SeasonalNaive(), **SITE).fit(history)  # type: ignore[arg-type]
    # mostly its own (a prior that shrank the weight itself would have capped it at 1/3)
    assert np.all(fitted.weights > 0.8)
    assert np.mean(fitted.weights) > 0.95


@dataclass(frozen=True)
class _TooYoung:
    """A local model that cannot fit yet (like profile-qr under 30 days): the fallback stands in."""

    name: str = "too-young"
    min_history_days: int = 30

    def fit(self, history: MeterHistory) -> _TooYoung:
        raise InvalidInput(
            reason=DataReason.HISTORY_TOO_SHORT, subject="meter history", field="steps",
            expected=">= 30 days", found="fewer",
        )  # fmt: skip

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        raise AssertionError("never fitted")


def test_a_fallback_local_model_has_the_fallback_prior(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """While the household's own model cannot fit, the fallback standing in for it gets the prior
    odds h / (h + FALLBACK_PRIOR_DAYS), not h / (h + BLEND_PRIOR_DAYS); and a garbage community
    model still gets almost no weight against it."""
    history = homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    fitted = FederatedForecaster(
        model, _TooYoung(), fallback=_Twin(model), personal_prior_samples=math.inf, **SITE,  # type: ignore[arg-type]
    ).fit(history)  # fmt: skip
    odds = 14 / (14 + FALLBACK_PRIOR_DAYS)
    assert FALLBACK_PRIOR_DAYS > BLEND_PRIOR_DAYS
    assert np.allclose(fitted.weights, odds / (1.0 + odds))
    assert all(r.local == "twin" for r in fitted.refs)
    rng = np.random.default_rng(2)
    total = model.total + rng.integers(-(1 << 48), 1 << 48, model.total.shape)
    garbage = CommunityModel.of(total, round=9, step_s=3600, previous=model.hash, contributors=6)
    fitted = FederatedForecaster(garbage, _TooYoung(), **SITE).fit(history)  # type: ignore[arg-type]
    assert all(r.local == "seasonal-naive-day" for r in fitted.refs)
    # mostly its own (this garbage: 86 % at k = 84, 93 % at k = 28, 79 % at k = 168)
    assert np.all(fitted.weights > 0.4) and np.mean(fitted.weights) > 0.85


def test_the_profile_is_the_median_of_the_same_time_over_the_last_days(homes: MeterHistory) -> None:
    history = homes.window(homes.end_s - 20 * SECONDS_PER_DAY, homes.end_s)
    got = fed.profile_forecast(history, 24, PROFILE_DAYS).median_w
    same = history.net_w[:, -PROFILE_DAYS * 24 :].reshape(history.households, PROFILE_DAYS, 24)
    assert np.allclose(got, np.median(same, axis=1))
    young = history.window(history.end_s - 3 * SECONDS_PER_DAY, history.end_s)  # as many as held
    first = fed.profile_forecast(young, 5, PROFILE_DAYS).median_w
    assert np.allclose(first, np.median(young.net_w.reshape(-1, 3, 24)[:, :, :5], axis=1))


def test_the_profile_mix_leaves_the_short_leads_alone() -> None:
    """The mix's lead buckets: those whose first interval starts at least ``min_lead_s`` after the
    history's end (interval i starts i · step_s after it); by default 4 h, so the next hours — the
    slots a household bids with — keep the corrected community model."""
    assert PROFILE_MIN_LEAD_S == 4 * 3600
    hourly = fed.lead_buckets(3600)
    got = profile_buckets(3600)
    assert got.shape == (int(hourly.max()) + 1,)
    # hourly buckets start at leads 0, 1, 2, 3, 4, 6, 8, 12, 16 h
    assert got.tolist() == [False] * 4 + [True] * 5
    for step_s in (900, 1800, 3600):
        buckets = fed.lead_buckets(step_s)
        mixed = profile_buckets(step_s)
        for lead, b in enumerate(buckets):
            if lead * step_s >= PROFILE_MIN_LEAD_S:
                assert mixed[b]  # every lead from 4 h on is mixed ...
            if lead * step_s < PROFILE_MIN_LEAD_S:
                assert not mixed[b]  # ... and none before it (buckets never straddle 4 h)
    assert profile_buckets(3600, 0).all()
    assert profile_buckets(3600, 3600).tolist() == [False] + [True] * 8
    assert not profile_buckets(3600, 86400).any()
    with pytest.raises(UsageError, match="min_lead_s"):
        profile_buckets(3600, -1)
    with pytest.raises(UsageError, match="step_s"):
        profile_buckets(0)


@pytest.mark.parametrize(("field", "value"), [("profile_days", -1), ("profile_min_lead_s", -3600)])
def test_a_negative_profile_setting_is_refused_not_taken_as_off(field: str, value: int) -> None:
    with pytest.raises(UsageError, match=f"federated {field} must be >= 0.*got {value}"):
        FederatedForecaster(None, SeasonalNaive(), **{field: value})  # type: ignore[arg-type]
    assert FederatedForecaster(None, SeasonalNaive(), profile_days=0).profile_days == 0  # off


def test_only_a_household_on_the_fallback_mixes_in_its_own_profile(
    model: CommunityModel, homes: MeterHistory
) -> None:
    """By default a cold-start household (its local model cannot fit yet) mixes its median profile
    into the community side at leads of 4 h and more, per lead bucket by both forecasts' errors on
    its own days; the shorter leads, and every lead of a household whose local model fits, are
    exactly the two-model blend; against a garbage community model the community side of the
    long leads becomes the household's own profile."""
    history = homes.window(homes.end_s - 14 * SECONDS_PER_DAY, homes.end_s)
    off = FederatedForecaster(model, _TooYoung(), profile_days=0, **SITE).fit(history)  # type: ignore[arg-type]
    assert np.all(off.profile == 0.0)
    cold = FederatedForecaster(model, _TooYoung(), **SITE).fit(history)  # type: ignore[arg-type]
    long = profile_buckets(3600)
    assert np.all((cold.profile >= 0) & (cold.profile <= 1)) and np.any(cold.profile > 0.05)
    assert np.any(cold.profile < 0.95) and np.all(cold.profile[:, ~long] == 0.0)
    assert np.all(cold.profile[:, long] > 0.0)
    assert np.array_equal(cold.weights, off.weights)  # the local weight is the same rule's
    both = (1.0 - cold.weights) * (1.0 - cold.profile)
    assert [r.community_permille for r in cold.refs] == [round(1000 * b.mean()) for b in both]
    # the short leads (the slots bid with) are bit for bit the forecast without the mix
    short = np.flatnonzero(~long[fed.lead_buckets(3600)])
    assert np.array_equal(
        cold.predict(history, 24).values_w[:, short], off.predict(history, 24).values_w[:, short]
    )
    assert not np.array_equal(cold.predict(history, 24).values_w, off.predict(history, 24).values_w)
    fitted = FederatedForecaster(model, _Twin(model), **SITE).fit(history)  # type: ignore[arg-type]
    assert np.all(fitted.profile == 0.0)
    assert fitted.coefs is not None
    w = fitted.weights[:, fed.lead_buckets(3600)][:, :, None]
    fc = fed._forecast(fitted.coefs, history, 24, fitted.model._site()).values_w
    two = np.sort(w * _Twin(model).predict(history, 24).values_w + (1.0 - w) * fc, axis=2)
    assert np.array_equal(fitted.predict(history, 24).values_w, two)
    rng = np.random.default_rng(3)
    total = model.total + rng.integers(-(1 << 48), 1 << 48, model.total.shape)
    garbage = CommunityModel.of(total, round=9, step_s=3600, previous=model.hash, contributors=6)
    bad = FederatedForecaster(garbage, _TooYoung(), **SITE).fit(history)  # type: ignore[arg-type]
    assert np.mean(bad.profile[:, long]) > 0.95
    # at the long leads the community's share of the blend is small (here 0–10 %, mean < 1 %)
    share = (1.0 - bad.weights) * (1.0 - bad.profile)
    assert np.mean(share[:, long]) < 0.03


def test_dp_prescaling_equalises_the_statistics_and_is_undone_on_the_sum(
    homes: MeterHistory,
) -> None:
    """Under DP every statistic is scaled to DP_UNIT per typical member (from the previous model,
    public) before clipping and noise, and the sum is scaled back; counts and validation are not
    shared."""
    first = pooled_model(local_update(homes, previous=None, **SITE), round=1, step_s=3600,  # type: ignore[arg-type]
                         previous=None)  # fmt: skip
    layout = Layout(3600)
    assert np.array_equal(dp_scale(None, 3600)[: layout.stats_len], np.ones(layout.stats_len))
    scale = dp_scale(first, 3600)
    assert np.all(scale[layout.stats_len :] == 0) and np.all(scale[: layout.stats_len] > 0)
    ups = local_update(homes, previous=first, **SITE)  # type: ignore[arg-type]
    scaled = np.rint(ups * scale).astype(np.int64)
    stats = slice(0, layout.stats_len)
    typical = np.median(np.abs(scaled[:, stats]).mean(axis=0))
    assert 0.1 * DP_UNIT < typical < 10 * DP_UNIT  # near the unit, whatever the statistic's size
    back = dp_unscale(scaled.sum(axis=0), scale)
    plain = ups.sum(axis=0)
    assert np.allclose(back[stats], plain[stats], rtol=1e-6, atol=8)  # rounding only
    assert np.all(back[layout.stats_len :] == 0)
    # a DP round through secure aggregation: noisy but usable statistics, nothing else shared
    dp = DpConfig(epsilon=2.0, delta=1e-5, clip_norm=1e9)
    model, _, _ = run_round([homes], keys(6), 2, first, dp=dp, rng=np.random.default_rng(5),
                            **SITE)  # type: ignore[arg-type]  # fmt: skip
    assert model is not None and model.samples == 0 and model.validation.samples == 0
    assert np.all(np.isfinite(model.coefs))
