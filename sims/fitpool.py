"""Forecaster fits in worker processes: the in-process engine's block fitter.

The engine fits its whole community's forecaster once per refit period (profile-qr: ≈ 0.04–0.06 CPU-s
per household with a year of 15-minute history, less without PV; 1,000 households ≈ 1 min of one
core; ``docs/forecasting.md``, *Cost*). :class:`FitPool` is a
:data:`gridnode.household.forecast.BlockFitter` that does this work in worker processes. Rules:

* **Same results.** A fit is a pure function of the model and its block of history (the forecast
  module's rules); a worker runs the same code on the same bytes, so the fitted parameters equal an
  inline fit's bit for bit and the run's results are identical (tested: same results digest with
  and without the pool).
* **Spread**: the blocks of one fit (:data:`~gridnode.household.forecast.FIT_ROWS` rows each) are
  spread over the workers (``workers``, two on this 2-core machine): the engine waits for them, so
  a fit it needs now takes about half the wall time.
* **Ahead**: :meth:`FitPool.ahead` starts a fit now; a later :meth:`FitPool.fit_blocks` call for the
  same model object and the same blocks (window, rows and content fingerprint) takes its result
  instead of fitting again. The engine fits the next refit period's model while it simulates the
  current period (:class:`sims.training.Training`), so on a long run the fits leave the engine's
  core. A fit started ahead that is never asked for is dropped at :meth:`close`.
* **The same blocks to the same worker**: block ``i`` of a fit prefers worker ``i % workers``, so a
  worker refits the households it fitted last period and reuses the features it computed then
  (profile-qr's fit memo, :mod:`forecasting.profile_qr`'s rules: a weekly refit's training window
  is last week's moved by a week). A fit started ahead waits in the parent for its worker; the
  blocks of a fit the engine waits for go to whichever worker is idle (its own blocks first).
  Which worker fits a block never changes the numbers, only the work.
* **No memo without a refit**: ``fit_memo_blocks`` is how many blocks' fit features each worker
  keeps for their refit (:func:`forecasting.profile_qr.keep_fit_features`); the engine passes
  ``0`` when no household is fitted twice in the run (a run shorter than its refit period, as
  the town's 7 days of a 28-day period), so the workers do not carry features nobody reuses
  (≈ 100 MB per worker in the town). Never changes a fit, only memory.
* **Background priority**: a worker lowers its own CPU priority by :data:`WORKER_NICE` (``nice``)
  when it starts. A fit the engine waits for runs while the engine sleeps, so it loses nothing;
  a fit started ahead then runs in what the engine and the sample full node leave of the cores,
  instead of taking the engine's turn on its core (the engine is the run's critical path):
  ``year.toml`` 28 days 66.1–66.6 → 61.1–61.2 s wall, two alternating pairs at load 2–2.5, the
  same digest (stop 29). Since stop 31 by 19, the lowest ordinary priority (10 before): a fit
  ahead is background work, and at 10 it still took ≈ a tenth of a core from the engine whenever
  the engine, the full node and a worker all wanted one. The engine's wall over its own CPU time
  on the 28-day cut: 1.12–1.13 at 10 against 1.09–1.12 at 19 (3 alternating pairs; Linux's
  idle scheduling class: 1.08–1.09, not taken: a worker in it would starve, and the engine wait,
  while other programs keep every core busy). Never changes a fit, only when it runs.
* **Cheap fits stay inline**: the seasonal-naive fallback (fitted at every call while a history is
  short) costs less than shipping its history to a worker.
* **Refusals** in a worker (:class:`market.errors.InvalidInput`, e.g. ``history_too_short``) come
  back as the same refusal when the result is taken, as an inline fit raises it.
* Workers are plain child processes (``python -m sims.fitpool``, like the sample full node's: a
  :mod:`multiprocessing` ``spawn`` would re-import the caller's main module, ``fork`` would copy
  the engine and its pipes), started at the first fit and stopped by :meth:`close` (the engine
  closes the pool at the end of a run). A worker gets one block at a time (the parent never blocks
  on a full pipe); the rest wait in the parent and are handed out whenever the engine asks the
  pool for anything (:meth:`FitPool.poll` at every forecast).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle
import select
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from forecasting.models import FittedForecaster, Forecaster, SeasonalNaive
from forecasting.profile_qr import FIT_MEMO_BLOCKS, keep_fit_features
from forecasting.series import MeterHistory
from gridnode.household.forecast import fit_inline
from market.errors import InvalidInput, Reason, UsageError

__all__ = ["WORKER_NICE", "FitPool"]

#: how much a worker lowers its CPU priority (module rules: background priority; 19 is the
#: lowest ordinary priority, whatever the engine's own)
WORKER_NICE = 19


@dataclass(frozen=True, slots=True)
class _Refusal:
    """An :class:`InvalidInput` raised in a worker, in a form that crosses the process boundary."""

    reason: Reason
    subject: str
    field: str
    expected: str
    found: str


def _fit_block(model: Forecaster, block: MeterHistory) -> FittedForecaster | _Refusal:
    """``model`` fitted on ``block`` (or the refusal): what a worker does with a job."""
    try:
        return model.fit(block)
    except InvalidInput as exc:
        return _Refusal(exc.reason, exc.subject, exc.field, exc.expected, exc.found)


def serve(inp: BinaryIO, out: BinaryIO, *, fit_memo_blocks: int = FIT_MEMO_BLOCKS) -> None:
    """The worker process: fit each ``(model, block)`` read from ``inp``, answer on ``out``, until
    the input closes, keeping ``fit_memo_blocks`` blocks' fit features (module rules). Frames are
    pickles (trusted: parent and child are the same program)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the pipe
    keep_fit_features(fit_memo_blocks)
    while True:
        try:
            model, block = pickle.load(inp)
        except EOFError:
            return
        result = _fit_block(model, block)
        try:
            pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except BrokenPipeError:  # the parent is gone (ended, or its run was interrupted)
            return


@dataclass(slots=True, eq=False)
class _Job:
    model: Forecaster
    block: MeterHistory | None  # dropped once sent (a year of 32 rows: ≈ 27 MB)
    worker: int = 0  # the worker it prefers (block i of a fit: i % workers)
    waited: bool = False  # the engine waits for it: any idle worker takes it
    result: FittedForecaster | _Refusal | None = None
    done: bool = False


@dataclass(slots=True, eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    job: _Job | None = None
    fd: int = field(init=False)

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()


def _key(model: Forecaster, blocks: Sequence[MeterHistory]) -> tuple[Any, ...]:
    """What identifies a fit: the model object and each block's window, rows and a fingerprint of
    its last day of net power (two windows of one cohort's history with equal bounds are equal)."""
    parts: list[tuple[int, int, int, int, bytes]] = []
    for b in blocks:
        tail = b.net_w[:, -b.steps_per_day :]
        parts.append(
            (b.start_s, b.end_s, b.step_s, b.households, hashlib.blake2b(tail.tobytes()).digest())
        )
    return (id(model), tuple(parts))


class FitPool:
    """Fits blocks of a forecaster's history in worker processes (module rules)."""

    def __init__(self, workers: int = 2, *, fit_memo_blocks: int = FIT_MEMO_BLOCKS) -> None:
        if fit_memo_blocks < 0:
            raise UsageError(f"fit_memo_blocks must be >= 0, got {fit_memo_blocks}")
        self.workers = max(1, workers)
        self.fit_memo_blocks = fit_memo_blocks
        self._procs: list[_Worker] = []
        self._queue: deque[_Job] = deque()
        # key -> (the model, kept alive so that its id is not reused; the blocks' jobs)
        self._ahead: dict[tuple[Any, ...], tuple[Forecaster, list[_Job]]] = {}
        self.fits = 0  # fits done in workers
        self.ahead_taken = 0  # of them, started ahead and taken

    # ------------------------------------------------------------------ workers
    def _start(self) -> None:
        # the child imports this very package, wherever the caller found it
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        # the workers are the parallelism: one BLAS thread each, not a spinning pool per worker
        # (a matrix product's elements do not depend on how many threads computed them: tested)
        env |= {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for _ in range(self.workers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "sims.fitpool", str(self.fit_memo_blocks)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            self._procs.append(_Worker(proc))

    def _submit(
        self, model: Forecaster, blocks: Sequence[MeterHistory], *, waited: bool
    ) -> list[_Job]:
        if not self._procs:
            self._start()
        jobs = [_Job(model, b, i % self.workers, waited) for i, b in enumerate(blocks)]
        self._queue.extend(jobs)
        self.poll()
        return jobs

    def _collect(self, w: _Worker) -> None:
        assert w.proc.stdout is not None and w.job is not None
        try:
            w.job.result = pickle.load(w.proc.stdout)
        except EOFError:
            code = w.proc.wait()
            raise RuntimeError(
                f"a forecaster-fit worker ended without an answer (exit {code}; its error is above)"
            ) from None
        w.job.done, w.job = True, None

    def poll(self, *, wait: bool = False) -> None:
        """Take the answers that are in and hand queued blocks to idle workers; with ``wait``,
        block until at least one busy worker answers (if any is busy)."""
        while True:
            busy = [w for w in self._procs if w.job is not None]
            if busy:
                ready, _, _ = select.select([w.fd for w in busy], [], [], None if wait else 0)
                for w in busy:
                    if w.fd in ready:
                        self._collect(w)
                wait = False
            sent = False
            for i, w in enumerate(self._procs):
                if w.job is None and self._queue:
                    job = self._next_for(i)
                    if job is None:
                        continue
                    assert w.proc.stdin is not None
                    pickle.dump((job.model, job.block), w.proc.stdin, pickle.HIGHEST_PROTOCOL)
                    w.proc.stdin.flush()
                    w.job, job.block = job, None
                    sent = True
            if not sent or not any(w.job is None for w in self._procs) or not self._queue:
                return

    def _next_for(self, worker: int) -> _Job | None:
        """The queued job idle worker ``worker`` takes (removed from the queue): the first that
        prefers it, else the first the engine waits for, else none (module rules)."""
        job = next((j for j in self._queue if j.worker == worker), None)
        if job is None:
            job = next((j for j in self._queue if j.waited), None)
        if job is not None:
            self._queue.remove(job)
        return job

    def pending(self) -> int:
        """Blocks queued or being fitted."""
        return len(self._queue) + sum(w.job is not None for w in self._procs)

    # ------------------------------------------------------------------ the block fitter
    def ahead(self, model: Forecaster, blocks: Sequence[MeterHistory]) -> None:
        """Start fitting ``model`` on ``blocks`` now, for a later :meth:`fit_blocks` call."""
        if isinstance(model, SeasonalNaive) or not blocks:
            return
        key = _key(model, blocks)
        if key not in self._ahead:
            self._ahead[key] = (model, self._submit(model, blocks, waited=False))

    def fit_blocks(
        self, model: Forecaster, blocks: Sequence[MeterHistory]
    ) -> list[FittedForecaster]:
        """The :data:`~gridnode.household.forecast.BlockFitter`: ``model`` fitted on each block."""
        if isinstance(model, SeasonalNaive):
            return fit_inline(model, blocks)
        entry = self._ahead.pop(_key(model, blocks), None)
        if entry is not None:
            jobs = entry[1]
            self.ahead_taken += 1
            for j in jobs:
                j.waited = True  # now any idle worker may take those still queued
        else:
            jobs = self._submit(model, blocks, waited=True)
        self.fits += 1
        while not all(j.done for j in jobs):
            self.poll(wait=True)
        out: list[FittedForecaster] = []
        for j in jobs:
            r = j.result
            if isinstance(r, _Refusal):
                raise InvalidInput(
                    reason=r.reason,
                    subject=r.subject,
                    field=r.field,
                    expected=r.expected,
                    found=r.found,
                )
            assert r is not None
            out.append(r)
        return out

    def close(self) -> None:
        """Stop the workers (fits started ahead and not taken are dropped)."""
        self._ahead.clear()
        self._queue.clear()
        for w in self._procs:
            if w.job is not None:  # fitting a block nobody will take: stop it
                w.proc.kill()
            for pipe in (w.proc.stdin, w.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(BrokenPipeError):
                        pipe.close()
        for w in self._procs:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - only if a worker hangs
                w.proc.kill()
                w.proc.wait()
        self._procs = []


if __name__ == "__main__":
    os.nice(WORKER_NICE)  # a worker process only (module rules), not a caller of serve
    # run the imported module's serve, so what it pickles is sims.fitpool's (not __main__'s) types
    importlib.import_module("sims.fitpool").serve(
        sys.stdin.buffer,
        sys.stdout.buffer,
        fit_memo_blocks=int(sys.argv[1]) if len(sys.argv) > 1 else FIT_MEMO_BLOCKS,
    )
