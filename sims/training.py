"""How a simulated community trains its forecasters: alone (``local``) or together (``federated``).

The in-process engine (:mod:`sims.inproc`) asks :class:`Training` for every household's forecast
of the slots it quotes. Rules of this module:

* **History cohorts.** Households whose group declares ``history_days = N`` are *cold-start*: their
  meter history begins ``N`` days before the first slot (a new household, or a replaced meter), in
  both modes. Households with the same ``history_days`` form one cohort (``0``: all the data, the
  *established* households) and each cohort gets its own forecaster, fitted and predicted on its
  own rows' history only (:meth:`Training.history_of`). So a cold-start household's model never
  sees a day before its history began. Forecasts come back in household order.
* **Local training** (``training.mode = "local"``): each cohort bids with
  :func:`gridnode.household.forecast.bidding_forecaster` (the daemon's). With no cold-start group
  this is one forecaster for the whole community, exactly as before.
* **Federated training** (``"federated"``): rounds are held at the multiples of
  ``round_every_days`` days in unix time (00:00 UTC, like the refit periods), the first
  ``rounds_before_start`` of them at or before the first slot (the community was already training
  when the run begins), then every round time the run reaches (at the first slot boundary at or
  after it, before the households forecast). A round is
  :func:`forecasting.federated_round.run_round` over every household's history **as of the round
  time** (each cohort's own window: a member contributes only its own data, as a daemon would;
  members with under 9 days are not members), warm-started from the previous committed model,
  summing the previous model's held-back error since the previous round, with each household's
  X25519 key pair derived from the scenario seed (:func:`federated_keys`), no dropouts, and the
  optional differential privacy (``dp_epsilon``: each household's **total** ε over the run's
  rounds, composed exactly as the daemon's ``[training] dp_epsilon`` over its ``dp_rounds``; its
  noise is drawn from a generator seeded by the scenario seed and the round). An aborted round leaves the previous model in force. After a
  round the households bid with :func:`gridnode.household.forecast.federated_forecaster` (the
  community model blended with their own local model); a cohort whose history is shorter than the
  community model needs (8 days) bids locally until it is long enough.
* **Recorded per round** (:class:`sims.results.RoundRecord`): members, contributors, attempts,
  bytes each member sent (the most), total bytes, the round's CPU seconds
  (``time.process_time``: the only figure that varies between runs, left out of
  :func:`sims.inproc_kpis.results_digest`), the model's content hash and the held-back validation.
  Deterministic for a seed: the same scenario gives the same model hashes.
* **Fits in worker processes** (``fit_workers > 0``, the engine's choice on long runs): every
  cohort's forecaster fits its blocks in a :class:`sims.fitpool.FitPool`, and after each forecast
  the next refit period's fit is started ahead (the history before that period is known now), so it
  runs on the other core while the engine simulates this period. Same fits, same results (the
  pool's rules); :meth:`Training.close` stops the workers. When every forecast of the run falls
  in one refit period (and training is local), each household is fitted once: the workers then
  keep no fit features for a refit (:func:`single_fit`; the pool's rules).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from forecasting.federated import MIN_FORECAST_DAYS, CommunityModel
from forecasting.federated_round import run_round
from forecasting.profile_qr import FIT_MEMO_BLOCKS
from forecasting.secagg import DpConfig, keypair_from_seed
from forecasting.series import MeterHistory
from gridnode.household.forecast import (
    BlockFitter,
    SlotForecast,
    SlotForecaster,
    bidding_forecaster,
    federated_forecaster,
    fit_inline,
    row_blocks,
)
from market.slots import SlotClock
from sims.fitpool import FitPool
from sims.results import RoundRecord, history_group
from sims.scenario import HouseholdSpec, Scenario

__all__ = ["Cohort", "Training", "cohorts", "federated_keys", "single_fit"]

DAY_S: Final = 86_400


def federated_keys(seed: int, households: int) -> list[tuple[bytes, bytes]]:
    """Each household's X25519 ``(private, public)`` key pair for the rounds, deterministic in the
    scenario's ``seed`` (a daemon has its own; in a simulation they are derived)."""
    return [
        keypair_from_seed(hashlib.sha256(f"gn.sim.fedkey:{seed}:{i}".encode()).digest())
        for i in range(households)
    ]


@dataclass(frozen=True, slots=True)
class Cohort:
    """Households whose meter history begins at the same time (module rules)."""

    history_days: int  # 0: all the data (established households)
    rows: tuple[int, ...]  # household indices, ascending
    start_s: int | None  # where their history begins (None: where the data begin)

    @property
    def label(self) -> str:
        return history_group(self.history_days)


def cohorts(specs: Sequence[HouseholdSpec], first_slot_s: int) -> list[Cohort]:
    """The households by ``history_days``: established first, then shortest history first."""
    days = sorted({s.history_days for s in specs}, key=lambda d: (d != 0, d))
    return [
        Cohort(
            d,
            tuple(s.index for s in specs if s.history_days == d),
            None if d == 0 else first_slot_s - d * DAY_S,
        )
        for d in days
    ]


def single_fit(sc: Scenario, *, first_slot_s: int, end_s: int, refit_s: int) -> bool:
    """Whether a run fits each cohort's forecaster once: local training, and every time it
    forecasts or fits ahead — from a day before ``first_slot_s`` (the first forecast comes a slot
    before it) up to ``end_s`` (where its history ends: no fit ahead starts after) — lies in one
    refit period of ``refit_s`` (``0``: a fit at every forecast)."""
    if sc.training != "local" or refit_s <= 0:
        return False
    return (first_slot_s - DAY_S) // refit_s == (end_s - 1) // refit_s


class Training:
    """Every household's forecaster and, under federated training, the rounds (module rules)."""

    def __init__(
        self,
        sc: Scenario,
        specs: Sequence[HouseholdSpec],
        history: MeterHistory,
        *,
        first_slot_s: int,
        refit_s: int,
        fit_workers: int = 0,
    ) -> None:
        self.sc = sc
        self.history = history
        self.refit_s = refit_s
        self.cohorts = cohorts(specs, first_slot_s)
        self.households = len(specs)
        self.federated = sc.training == "federated"
        self.model: CommunityModel | None = None
        self.rounds: list[RoundRecord] = []
        once = single_fit(sc, first_slot_s=first_slot_s, end_s=history.end_s, refit_s=refit_s)
        self.pool = (
            FitPool(fit_workers, fit_memo_blocks=0 if once else FIT_MEMO_BLOCKS)
            if fit_workers > 0
            else None
        )
        self.fit_blocks: BlockFitter = fit_inline if self.pool is None else self.pool.fit_blocks
        self._ahead_done: set[tuple[int, int]] = set()  # (cohort, period start) fits started ahead
        # per cohort: the forecaster, and the community model hash it blends (None: local)
        self._forecasters: list[tuple[bytes | None, SlotForecaster]] = [
            (
                None,
                bidding_forecaster(
                    sc.model, site=sc.site, refit_every_s=refit_s, fit_blocks=self.fit_blocks
                ),
            )
            for _ in self.cohorts
        ]
        self.keys: list[tuple[bytes, bytes]] = []
        self.every_s = sc.round_every_days * DAY_S
        self.next_round_s = 0
        self._last_round_s: int | None = None
        if self.federated:
            self.keys = federated_keys(sc.seed, len(specs))
            first = first_slot_s // self.every_s - sc.rounds_before_start + 1
            self.next_round_s = first * self.every_s
        #: the rounds this run holds (the first up to the last slot's start): the scenario's
        #: ``dp_epsilon`` is each household's total over them, as the daemon's is over its
        #: ``dp_rounds``
        last_slot_s = first_slot_s + sc.duration_s - sc.slot_seconds
        self.dp_rounds = max(1, (last_slot_s - self.next_round_s) // self.every_s + 1)

    def history_of(self, cohort: Cohort, until_s: int) -> MeterHistory | None:
        """What ``cohort``'s households know at ``until_s``: their rows, from where their history
        begins (``None`` when it has not begun)."""
        h = self.history
        start = h.start_s if cohort.start_s is None else max(h.start_s, cohort.start_s)
        end = min(until_s, h.end_s)
        if end <= start:
            return None
        rows = h.select(list(cohort.rows)) if len(cohort.rows) != h.households else h
        return rows.window(start, end)

    # ------------------------------------------------------------------ rounds
    def catch_up(self, now_s: int) -> None:
        """Hold every round due at or before ``now_s`` (federated training only)."""
        while self.federated and self.next_round_s <= now_s:
            self._round(self.next_round_s)
            self.next_round_s += self.every_s

    def _round(self, at_s: int) -> None:
        histories: list[MeterHistory] = []
        keys: list[tuple[bytes, bytes]] = []
        for cohort in self.cohorts:
            h = self.history_of(cohort, at_s)
            if h is None or h.steps == 0:
                continue
            histories.append(h)
            keys += [self.keys[i] for i in cohort.rows]
        number = len(self.rounds) + 1
        if not histories:
            return
        sc = self.sc
        dp = None
        rng = None
        if sc.dp_epsilon is not None:
            dp = DpConfig(sc.dp_epsilon, sc.dp_delta, sc.dp_clip_norm, rounds=self.dp_rounds)
            rng = np.random.default_rng([sc.seed, number])
        previous = self.model
        model, stats, _transcript = run_round(
            histories,
            keys,
            number,
            previous,
            since_s=self._last_round_s,
            latitude=sc.site.latitude,
            longitude=sc.site.longitude,
            dp=dp,
            rng=rng,
            cpu_clock=time.process_time,
        )
        v = model.validation if model is not None else None
        seen = v is not None and v.samples > 0
        self.rounds.append(
            RoundRecord(
                round=number,
                at_s=at_s,
                members=stats.members,
                contributors=stats.contributors,
                attempts=stats.attempts,
                bytes_per_member=stats.max_bytes_per_member,
                total_bytes=stats.total_bytes,
                cpu_s=round(stats.cpu_s, 4),
                model_hash="" if model is None else model.hash.hex(),
                validation_samples=v.samples if v is not None else 0,
                validation_mae=round(v.mae, 6) if v is not None and seen else None,
                validation_skill=round(v.skill, 6) if v is not None and seen else None,
            )
        )
        if model is not None:
            self.model = model
            self._last_round_s = at_s

    # ------------------------------------------------------------------ forecasts
    def forecast(
        self, now_s: int, slots: Sequence[int], clock: SlotClock
    ) -> list[SlotForecast | None]:
        """Every household's forecast of ``slots`` (household order), after the rounds due."""
        self.catch_up(now_s)
        out: list[SlotForecast | None] = [None] * self.households
        for k, cohort in enumerate(self.cohorts):
            h = self.history_of(cohort, now_s)
            if h is None:
                continue
            forecaster = self._forecaster(k, h)
            for i, fc in zip(
                cohort.rows,
                forecaster.forecast(h, now_s=now_s, slots=slots, clock=clock),
                strict=True,
            ):
                out[i] = fc
            self._fit_ahead(k, forecaster, now_s)
        return out

    def _fit_ahead(self, k: int, forecaster: SlotForecaster, now_s: int) -> None:
        """With a pool: start cohort ``k``'s fit for the next refit period, once (module rules)."""
        if self.pool is None or not self.refit_s:
            return
        self.pool.poll()  # take the answers in, hand the queued blocks to idle workers
        start = (now_s // self.refit_s + 1) * self.refit_s
        if start >= self.history.end_s or (k, start) in self._ahead_done:
            return
        self._ahead_done.add((k, start))
        h = self.history_of(self.cohorts[k], start)
        if h is None:
            return
        window = forecaster.fit_window(h, now_s=start)
        self.pool.ahead(forecaster.model, [block for _, block in row_blocks(window)])

    def close(self) -> None:
        """Stop the fit workers, if any."""
        if self.pool is not None:
            self.pool.close()

    def _forecaster(self, k: int, history: MeterHistory) -> SlotForecaster:
        """Cohort ``k``'s forecaster: a new one whenever the community model it should blend
        changes (module rules)."""
        model = self.model
        if model is not None and history.steps < MIN_FORECAST_DAYS * history.steps_per_day:
            model = None
        want = None if model is None else model.hash
        have, forecaster = self._forecasters[k]
        if want != have:
            forecaster = federated_forecaster(
                model,
                self.sc.model,
                site=self.sc.site,
                refit_every_s=self.refit_s,
                fit_blocks=self.fit_blocks,
            )
            self._forecasters[k] = (want, forecaster)
        return forecaster
