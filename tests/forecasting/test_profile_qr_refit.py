"""profile-qr's fit memo: a refit whose training window is an earlier fit's grown or moved (the
weekly refit) takes the features of the intervals both hold from that fit, and must give bit for
bit the training set (hence the coefficients) of a fit from scratch — across grown and moved
windows, changed meter values, other households, calendars and sites, hourly steps and net-only
meters."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forecasting.profile_qr as pq
from forecasting.data import SHIPPED_LATITUDE, SHIPPED_LONGITUDE
from forecasting.profile_qr import ProfileQR
from forecasting.series import MeterHistory
from market.errors import UsageError
from tests.forecasting.conftest import local_midnight_utc

SITE = {"latitude": SHIPPED_LATITUDE, "longitude": SHIPPED_LONGITUDE}
DAY_S = 86_400
WEEK_S = 7 * DAY_S
# a short year: the tests fit windows of ~100 days (training origins over up to 60 of them)
MODEL = ProfileQR(train_days=60, max_origins=300, holiday_country="FR", **SITE)  # type: ignore[arg-type]


@contextmanager
def _fresh_memo() -> Iterator[pq._FitMemo]:
    """The module's memo replaced by an empty one (restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        memo = pq._FitMemo(pq.FIT_MEMO_BLOCKS)
        mp.setattr(pq, "_FIT_MEMO", memo)
        yield memo


def _bits(model: ProfileQR, history: MeterHistory) -> tuple[bytes, bytes, int | None]:
    x, y, cut = model.training_set(history)
    return x.tobytes(), y.tobytes(), cut


def _scratch(model: ProfileQR, history: MeterHistory) -> tuple[bytes, bytes, int | None]:
    """The training set with nothing memoised (the oracle: the fit as it was before the memo)."""
    with _fresh_memo():
        return _bits(model, history)


@pytest.fixture(scope="module")
def homes(shipped_15min: MeterHistory) -> MeterHistory:
    """Three households, 2008: the shipped one with PV, its load without PV, and the PV with
    another load (same row count as a block of the engine; other rows' values)."""
    h = shipped_15min.window(local_midnight_utc(2008, 1, 1), local_midnight_utc(2009, 1, 1))
    assert h.pv_w is not None and h.load_w is not None
    pv, load = h.pv_w[0], h.load_w[0]
    return MeterHistory.from_components(
        np.stack([pv, 0.0 * pv, 0.7 * pv]),
        np.stack([load, 0.8 * load, np.roll(load, 96 * 3)]),
        start_s=h.start_s,
        step_s=h.step_s,
        utc_offset_s=h.utc_offset_s,
    )


def test_grown_and_moved_windows_reuse_features_and_fit_the_same_bits(
    homes: MeterHistory,
) -> None:
    """The year's refits: the window grows by a week (history shorter than the fit's days),
    then moves by a week; the stride of the origins changes as it grows."""
    a, b = homes.start_s, homes.start_s + 90 * DAY_S
    windows = [(a, b), (a, b + WEEK_S), (a, b + 2 * WEEK_S), (a + WEEK_S, b + 3 * WEEK_S),
               (a + 2 * WEEK_S, b + 4 * WEEK_S)]  # fmt: skip
    with _fresh_memo() as memo:
        taken = [0]
        for lo, hi in windows:
            h = homes.window(lo, hi)
            assert _bits(MODEL, h) == _scratch(MODEL, h)
            taken.append(memo.taken)
        # every refit took most of its targets' features from the fit before
        assert all(t1 > t0 for t0, t1 in itertools.pairwise(taken[1:]))
        h = homes.window(*windows[-1])
        fitted = MODEL.fit(h)
    with _fresh_memo():
        alone = MODEL.fit(h)
    assert fitted.coefs.tobytes() == alone.coefs.tobytes()
    assert fitted.band_scales.tobytes() == alone.band_scales.tobytes()


def test_a_year_window_moved_by_a_week_as_the_engine_fits_it(homes: MeterHistory) -> None:
    """Training origins from day 22 of the window (a window no longer than the fit's days, as
    the engine's 365-day windows), moved week by week: the memo fills up over the weeks."""
    model = replace(MODEL, train_days=365)
    a, b = homes.start_s, homes.start_s + 70 * DAY_S
    with _fresh_memo() as memo:
        for k in range(4):
            h = homes.window(a + k * WEEK_S, b + k * WEEK_S)
            before = memo.taken
            assert _bits(model, h) == _scratch(model, h)
            assert (memo.taken > before) == (k > 0)


def test_changed_values_other_rows_calendars_and_sites_start_afresh(
    homes: MeterHistory,
) -> None:
    a, b = homes.start_s, homes.start_s + 90 * DAY_S
    first = homes.window(a, b)
    later = homes.window(a, b + WEEK_S)
    assert later.load_w is not None and later.pv_w is not None
    # one value inside the overlap's look-back changed: that interval's features are not reused
    load = later.load_w.copy()
    load[2, 40 * 96 + 17] += 1.0
    changed = MeterHistory.from_components(
        later.pv_w, load, start_s=later.start_s, step_s=later.step_s,
        utc_offset_s=later.utc_offset_s,
    )  # fmt: skip
    # other rows with the same row count, another holiday calendar, another site, net only
    other_rows = later.select([2, 0, 1])
    cases: list[tuple[ProfileQR, MeterHistory]] = [
        (MODEL, changed),
        (MODEL, other_rows),
        (replace(MODEL, holiday_country="US"), later),
        (replace(MODEL, latitude=10.0, longitude=20.0), later),
        (replace(MODEL, latitude=None, longitude=None), later),
        (MODEL, MeterHistory.from_net(later.net_w, start_s=later.start_s, step_s=later.step_s)),
    ]
    for model, h in cases:
        with _fresh_memo() as memo:
            _bits(MODEL, first)
            assert _bits(model, h) == _scratch(model, h)
            assert memo.taken == 0 or (model is MODEL and h is changed)


def test_hourly_steps_and_net_only_meters(homes: MeterHistory) -> None:
    hourly = homes.resample(3600)
    net = MeterHistory.from_net(homes.net_w, start_s=homes.start_s, step_s=homes.step_s)
    for h0 in (hourly, net):
        with _fresh_memo() as memo:
            for k in range(3):
                h = h0.window(h0.start_s + k * 3 * DAY_S, h0.start_s + (95 + 5 * k) * DAY_S)
                assert _bits(MODEL, h) == _scratch(MODEL, h)
            assert memo.taken > 0


def test_the_memo_keeps_the_last_blocks_only(homes: MeterHistory) -> None:
    h = homes.window(homes.start_s, homes.start_s + 80 * DAY_S).select([0])
    assert h.pv_w is not None and h.load_w is not None
    blocks = [
        MeterHistory.from_components(h.pv_w, (1.0 + 0.1 * i) * h.load_w, start_s=h.start_s,
                                     step_s=h.step_s, utc_offset_s=h.utc_offset_s)
        for i in range(pq.FIT_MEMO_BLOCKS + 1)
    ]  # fmt: skip
    with _fresh_memo() as memo:
        for block in blocks:
            _bits(MODEL, block)
        assert len(memo._entries) == pq.FIT_MEMO_BLOCKS
        _bits(MODEL, blocks[0])  # dropped: computed afresh
        assert memo.taken == 0
        _bits(MODEL, blocks[-1])  # held
        assert memo.taken > 0


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moves=st.lists(
        st.tuples(st.integers(-10, 20), st.integers(-10, 20), st.integers(0, 2)),
        min_size=2,
        max_size=4,
    )
)
def test_any_sequence_of_windows_gives_the_training_set_from_scratch(
    homes: MeterHistory, moves: list[tuple[int, int, int]]
) -> None:
    """Windows moved or grown by any number of days, forwards or back, of any rows."""
    with _fresh_memo():
        lo, hi = homes.start_s + 30 * DAY_S, homes.start_s + 130 * DAY_S
        for d_lo, d_hi, row in moves:
            lo, hi = lo + d_lo * DAY_S, hi + d_hi * DAY_S
            if hi - lo < MODEL.min_history_days * DAY_S or lo < homes.start_s:
                continue  # too short, or moved before the data begin (hi stays inside them)
            h = homes.window(lo, hi).select([row, (row + 1) % 3])
            assert _bits(MODEL, h) == _scratch(MODEL, h)


def test_a_memo_told_to_keep_fewer_blocks_drops_the_oldest_and_none_keeps_nothing(
    homes: MeterHistory,
) -> None:
    h = homes.window(homes.start_s, homes.start_s + 80 * DAY_S).select([0])
    assert h.pv_w is not None and h.load_w is not None
    blocks = [
        MeterHistory.from_components(h.pv_w, (1.0 + 0.1 * i) * h.load_w, start_s=h.start_s,
                                     step_s=h.step_s, utc_offset_s=h.utc_offset_s)
        for i in range(3)
    ]  # fmt: skip
    with _fresh_memo() as memo:
        for block in blocks:
            _bits(MODEL, block)
        newest = memo._entries[-1]
        pq.keep_fit_features(1)
        assert memo._entries == [newest]
        pq.keep_fit_features(0)
        assert memo._entries == []
        assert _bits(MODEL, blocks[0]) == _scratch(MODEL, blocks[0])
        assert _bits(MODEL, blocks[0]) == _scratch(MODEL, blocks[0])  # the same rows again
        assert memo._entries == [] and memo.taken == 0
        with pytest.raises(UsageError, match=">= 0 blocks"):
            pq.keep_fit_features(-1)
