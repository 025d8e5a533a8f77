"""A differentially private round's model: its public noise in the content, and a solve that stays
bounded however large the noise (forecasting/federated.py, SumNoise and the noisy solve)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import CITYLEARN_LATITUDE, CITYLEARN_LONGITUDE, load_citylearn_homes
from forecasting.federated import (
    CommunityModel,
    Layout,
    SumNoise,
    community_forecast,
    decode_model,
    dp_scale,
    dp_unscale,
    local_update,
    pooled_model,
)
from forecasting.federated_round import run_round
from forecasting.secagg import DpConfig, default_threshold, keypair_from_seed
from forecasting.series import SECONDS_PER_DAY, MeterHistory
from market.codec import pack, unpack
from market.errors import WireReason
from tests.refusals import refused

SITE = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}
LAYOUT = Layout(3600)


@dataclass(frozen=True)
class Round2:
    homes: MeterHistory
    first: CommunityModel
    scale: np.ndarray
    scaled_sum: np.ndarray  # the members' pre-scaled round-2 updates, summed (no noise)
    clean: CommunityModel  # the model of that sum without noise


@pytest.fixture(scope="module")
def round2() -> Round2:
    h = load_citylearn_homes((1, 2, 3, 4, 5, 6))
    homes = h.window(h.start_s, h.start_s + 60 * SECONDS_PER_DAY)
    first = pooled_model(local_update(homes, previous=None, **SITE), round=1, step_s=3600,  # type: ignore[arg-type]
                         previous=None)  # fmt: skip
    ups = local_update(homes, previous=first, **SITE)  # type: ignore[arg-type]
    scale = dp_scale(first, 3600)
    scaled = np.rint(ups * scale).astype(np.int64).sum(axis=0)
    clean = CommunityModel.of(dp_unscale(scaled, scale), round=2, step_s=3600,
                              previous=first.hash, contributors=6)  # fmt: skip
    return Round2(homes, first, scale, scaled, clean)


def _noisy(r: Round2, sigma: float, seed: int) -> CommunityModel:
    rng = np.random.default_rng(seed)
    total = np.rint(r.scaled_sum + rng.normal(0.0, sigma, r.scaled_sum.shape)).astype(np.int64)
    return CommunityModel.of(
        dp_unscale(total, r.scale), round=2, step_s=3600, previous=r.first.hash, contributors=6,
        noise=SumNoise.of(sigma, r.scale, LAYOUT),
    )  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.floats(1e2, 1e16), st.integers(0, 2**32))
def test_a_noisy_model_never_has_wild_coefficients(round2: Round2, sigma: float, seed: int) -> None:
    """Whatever the noise, the coefficients are finite and no larger than the clean model's
    (about 1.4 here) plus a little: noise-swamped directions shrink toward zero. (The plain ridge
    solve of the same noisy sums returns coefficients of 5–60: the doc's "wild" models.)"""
    model = _noisy(round2, sigma, seed)
    assert np.all(np.isfinite(model.coefs))
    assert np.abs(model.coefs).max() <= 1.2 * np.abs(round2.clean.coefs).max()
    fc = community_forecast(model, round2.homes, 24, **SITE)  # type: ignore[arg-type]
    scale = np.abs(round2.homes.net_w).mean()
    assert np.all(np.isfinite(fc.values_w)) and np.abs(fc.values_w).max() < 100 * scale


def test_little_noise_changes_the_model_little(round2: Round2) -> None:
    model = _noisy(round2, 1e3, 1)  # per entry ~3e-5 of a typical member's pre-scaled statistic
    assert np.abs(model.coefs - round2.clean.coefs).max() < 0.1


def test_a_dp_model_carries_its_noise_and_round_trips(round2: Round2) -> None:
    model = _noisy(round2, 5e9, 2)
    assert model.noise is not None and model.noise.sigma == 5_000_000_000
    again = decode_model(model.content())
    assert again.hash == model.hash and again.noise == model.noise
    assert np.array_equal(again.coefs, model.coefs)
    # the same sum without the noise record is another model (the hash covers the record)
    plain = CommunityModel.of(model.total, round=2, step_s=3600, previous=round2.first.hash,
                              contributors=6)  # fmt: skip
    assert plain.hash != model.hash
    # a model without DP has exactly the 8 elements it always had
    assert len(unpack(round2.clean.content(), what="model")) == 8
    # a broken noise record is refused at decoding
    fields = unpack(model.content(), what="model")
    for bad in ([0, fields[8][1]], [5, fields[8][1][:-1]], [5, [99] * LAYOUT.stats_len], 7):
        with refused(WireReason.BAD_SHAPE):
            decode_model(pack([*fields[:8], bad]))


def test_a_dp_round_records_the_noise_of_its_sum(round2: Round2) -> None:
    keys = [keypair_from_seed(bytes([9]) + k.to_bytes(31, "big")) for k in range(6)]
    dp = DpConfig(2.0, 1e-5, 1e9, rounds=14)
    model, _, _ = run_round([round2.homes], keys, 2, round2.first, dp=dp,
                            rng=np.random.default_rng(4), **SITE)  # type: ignore[arg-type]  # fmt: skip
    assert model is not None and model.noise is not None
    # 6 contributors each add N(0, σ²/t), t = 4: the sum's σ·sqrt(6/4)
    assert model.noise.sigma == round(dp.sigma * np.sqrt(6 / default_threshold(6)))
    assert model.noise.shifts == tuple(int(k) for k in np.log2(round2.scale[: LAYOUT.stats_len]))
    assert np.all(np.isfinite(model.coefs)) and np.abs(model.coefs).max() < 2.0
