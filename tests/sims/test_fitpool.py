"""Forecaster fits in worker processes (``sims.fitpool``): the same fits, the same run results.

Real child processes (``python -m sims.fitpool``), real profile-qr fits on the shipped data."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import signal
from pathlib import Path

import pytest

from forecasting import profile_qr
from forecasting.models import SeasonalNaive
from forecasting.profile_qr import FittedProfileQR
from forecasting.series import MeterHistory
from gridnode.household import forecast as forecast_module
from gridnode.household.forecast import SlotForecaster, bidding_forecaster, fit_inline, row_blocks
from market.errors import DataReason, UsageError
from sims import fitpool as fitpool_module
from sims.fitpool import FitPool
from sims.inproc import _Engine, run_inproc
from sims.inproc_kpis import results_digest
from sims.scenario import load_scenario
from sims.training import Training, single_fit
from tests.refusals import refused

YEAR = Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "year.toml"
DAY_S = 86_400


def _history(households: int) -> tuple[_Engine, MeterHistory]:
    sc = dataclasses.replace(load_scenario(YEAR, households=households, days=3), refit_days=1)
    e = _Engine(sc)
    return e, e.history


def _first_fit_blocks(households: int) -> tuple[SlotForecaster, list[MeterHistory]]:
    """The daemon's forecaster (refitted daily) and the blocks of its fit at the first slot."""
    e, history = _history(households)
    forecaster = bidding_forecaster(e.sc.model, site=e.sc.site, refit_every_s=DAY_S)
    now_s = e.clock.start(e.first_slot)
    window = forecaster.fit_window(history.window(history.start_s, now_s), now_s=now_s)
    return forecaster, [b for _, b in row_blocks(window)]


def _coefs(fitted: list[object]) -> list[bytes]:
    out = []
    for f in fitted:
        assert isinstance(f, FittedProfileQR)
        out.append(f.coefs.tobytes() + f.band_scales.tobytes())
    return out


def test_pool_fits_equal_inline_fits_bit_for_bit_and_ahead_fits_are_taken() -> None:
    e, history = _history(5)
    forecaster = bidding_forecaster(e.sc.model, site=e.sc.site, refit_every_s=DAY_S)
    now_s = e.clock.start(e.first_slot)
    window = forecaster.fit_window(history.window(history.start_s, now_s), now_s=now_s)
    blocks = [b for _, b in row_blocks(window.select(slice(0, 5)))]
    inline = fit_inline(forecaster.model, blocks)
    pool = FitPool(2)
    try:
        assert _coefs(list(pool.fit_blocks(forecaster.model, blocks))) == _coefs(list(inline))
        assert (pool.fits, pool.ahead_taken) == (1, 0)
        pool.ahead(forecaster.model, blocks)
        pool.poll()
        assert _coefs(list(pool.fit_blocks(forecaster.model, blocks))) == _coefs(list(inline))
        assert (pool.fits, pool.ahead_taken) == (2, 1)
        # another model object is another fit, even on the same blocks
        other = bidding_forecaster(e.sc.model, site=e.sc.site).model
        pool.ahead(forecaster.model, blocks)
        assert _coefs(list(pool.fit_blocks(other, blocks))) == _coefs(list(inline))
        assert pool.ahead_taken == 1
    finally:
        pool.close()


def test_polling_hands_queued_blocks_to_idle_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecast_module, "FIT_ROWS", 2)
    e, history = _history(5)
    forecaster = bidding_forecaster(e.sc.model, site=e.sc.site, refit_every_s=DAY_S)
    now_s = e.clock.start(e.first_slot)
    window = forecaster.fit_window(history.window(history.start_s, now_s), now_s=now_s)
    blocks = [b for _, b in row_blocks(window)]
    assert len(blocks) == 3
    pool = FitPool(1)
    try:
        pool.ahead(forecaster.model, blocks)
        assert pool.pending() == 3  # one in the worker, two queued
        while pool.pending():  # what the engine does at every forecast, here waiting
            pool.poll(wait=True)
        fitted = pool.fit_blocks(forecaster.model, blocks)
        assert pool.ahead_taken == 1
        assert _coefs(list(fitted)) == _coefs(list(fit_inline(forecaster.model, blocks)))
    finally:
        pool.close()


def test_a_refusal_in_a_worker_comes_back_as_the_same_refusal() -> None:
    _e, history = _history(2)
    short = history.window(history.start_s, history.start_s + 5 * DAY_S)
    model = bidding_forecaster().model
    with refused(DataReason.HISTORY_TOO_SHORT) as inline:
        fit_inline(model, [short])
    pool = FitPool(1)
    try:
        with refused(DataReason.HISTORY_TOO_SHORT) as pooled:
            pool.fit_blocks(model, [short])
        # the seasonal-naive fallback is fitted inline (cheap; no worker is asked)
        assert pool.fit_blocks(SeasonalNaive(period_days=1, train_days=28), [short])
        assert pool.fits == 1
    finally:
        pool.close()
    assert str(pooled.value) == str(inline.value)


def test_training_fits_the_next_period_ahead_with_the_same_forecasts() -> None:
    e, history = _history(4)
    first = e.clock.start(e.first_slot)
    times = [first, first + DAY_S, first + DAY_S + 900]
    got = []
    for workers in (0, 1):
        t = Training(e.sc, e.specs, history, first_slot_s=first, refit_s=DAY_S, fit_workers=workers)
        try:
            runs = []
            for now_s in times:
                slot = e.clock.slot_at(now_s) + 1
                runs.append(t.forecast(now_s, [slot], e.clock))
            got.append(runs)
            if t.pool is not None:
                assert t.pool.fits == 2 and t.pool.ahead_taken == 1
        finally:
            t.close()
    assert got[0] == got[1]


def test_a_run_with_fit_workers_has_the_same_results() -> None:
    sc = dataclasses.replace(load_scenario(YEAR, households=4, days=1.25), refit_days=1)
    digests = {w: results_digest(run_inproc(sc, full_node="inline", fit_workers=w)) for w in (0, 2)}
    assert digests[0] == digests[2]


def test_fit_workers_must_not_be_negative() -> None:
    sc = load_scenario(YEAR, households=2, days=0.25)
    with pytest.raises(UsageError, match="fit_workers must be >= 0"):
        run_inproc(sc, fit_workers=-1)


def test_a_worker_takes_its_own_blocks_and_any_block_the_engine_waits_for() -> None:
    """Block i of a fit prefers worker i % workers (its features of the last period are there);
    a fit the engine waits for goes to any idle worker, its own blocks first."""
    pool = FitPool(2)
    model = bidding_forecaster().model
    ahead = [fitpool_module._Job(model, None, i % 2) for i in range(4)]
    waited = [fitpool_module._Job(model, None, i % 2, waited=True) for i in range(2)]
    pool._queue.extend([*ahead, *waited])
    assert pool._next_for(1) is ahead[1]
    assert pool._next_for(1) is ahead[3]
    assert pool._next_for(1) is waited[1]
    assert pool._next_for(1) is waited[0]  # not its own, but waited for
    assert pool._next_for(1) is None  # ahead[0] and [2] wait for worker 0
    assert pool._next_for(0) is ahead[0]
    assert list(pool._queue) == [ahead[2]]


TOWN = Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "town.toml"


def test_a_run_inside_one_refit_period_fits_once_and_others_refit() -> None:
    """The town (7 days of a 28-day period) fits each household once: its workers keep no fit
    features; a weekly refit over 3 days crossing a period, a fit at every forecast, or federated
    training keep them (single_fit's rules)."""
    town = load_scenario(TOWN, households=4)
    first = 1_243_814_400  # 2009-06-01 00:00 UTC, the town's first day (period 14392..14419)
    assert single_fit(town, first_slot_s=first, end_s=first + 7 * DAY_S, refit_s=28 * DAY_S)
    # the run's end, or its first forecast a slot before its first slot, in the next period
    assert not single_fit(town, first_slot_s=first, end_s=first + 25 * DAY_S, refit_s=28 * DAY_S)
    period = 14_392 * DAY_S
    assert not single_fit(town, first_slot_s=period + 900, end_s=period + DAY_S, refit_s=28 * DAY_S)
    assert not single_fit(town, first_slot_s=first, end_s=first + DAY_S, refit_s=0)
    federated = dataclasses.replace(town, training="federated")
    assert not single_fit(federated, first_slot_s=first, end_s=first + DAY_S, refit_s=28 * DAY_S)
    year = load_scenario(YEAR, households=4, days=3)
    assert not single_fit(year, first_slot_s=first, end_s=first + 3 * DAY_S, refit_s=DAY_S)


def test_a_worker_told_no_refit_keeps_no_fit_features_and_fits_the_same() -> None:
    forecaster, blocks = _first_fit_blocks(3)
    frames = io.BytesIO()
    for b in blocks * 2:  # the same rows twice: a memo would take the second fit's features
        pickle.dump((forecaster.model, b), frames, protocol=pickle.HIGHEST_PROTOCOL)
    answers: dict[int, list[bytes]] = {}
    handler = signal.getsignal(signal.SIGINT)
    memo = profile_qr._FitMemo(profile_qr.FIT_MEMO_BLOCKS)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(profile_qr, "_FIT_MEMO", memo)
            for keep in (profile_qr.FIT_MEMO_BLOCKS, 0):
                frames.seek(0)
                out = io.BytesIO()
                fitpool_module.serve(frames, out, fit_memo_blocks=keep)
                assert memo.blocks == keep
                assert len(memo._entries) == (1 if keep else 0)
                out.seek(0)
                answers[keep] = _coefs([pickle.load(out) for _ in range(2 * len(blocks))])
                assert memo.taken > 0  # the memo was used by the first serve, not the second
    finally:
        signal.signal(signal.SIGINT, handler)
    assert answers[0] == answers[profile_qr.FIT_MEMO_BLOCKS]
    assert answers[0] == _coefs(list(fit_inline(forecaster.model, blocks))) * 2


def test_a_pool_passes_its_memo_size_to_its_workers() -> None:
    forecaster, blocks = _first_fit_blocks(3)
    pool = FitPool(1, fit_memo_blocks=0)
    try:
        assert _coefs(list(pool.fit_blocks(forecaster.model, blocks))) == _coefs(
            list(fit_inline(forecaster.model, blocks))
        )
        assert pool._procs[0].proc.args[-1] == "0"
    finally:
        pool.close()
    with pytest.raises(UsageError, match="fit_memo_blocks must be >= 0"):
        FitPool(1, fit_memo_blocks=-1)


def _nice(pid: int) -> int:
    # field 19 of /proc/PID/stat, counted after the command name's closing parenthesis
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def test_workers_run_at_background_priority() -> None:
    # module rules: a worker lowers its priority by WORKER_NICE, the engine keeps its own
    forecaster, blocks = _first_fit_blocks(2)
    pool = FitPool(1)
    try:
        list(pool.fit_blocks(forecaster.model, blocks))  # the worker has started and answered
        worker = pool._procs[0].proc.pid
        assert _nice(worker) == min(19, _nice(os.getpid()) + fitpool_module.WORKER_NICE)
    finally:
        pool.close()
