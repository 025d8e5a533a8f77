"""One federated round in process: every member's update, secure aggregation, the community model.

Rules of this module (pure: no I/O; the CPU clock and the DP generator are the caller's):

* :func:`run_round` is what a simulation calls, and the reference the networked round driver must
  agree with: each row of ``histories`` is one member; member ``k`` computes its update with
  :func:`forecasting.federated.local_update` (rows of one history are computed together, but a
  row's update never depends on the others), masks it with :func:`forecasting.secagg.mask_update`
  and the aggregation runs :class:`forecasting.secagg.Aggregation` to completion
  (:func:`forecasting.secagg.aggregate_round`: dropouts, reveals and restarts included).
* The result is the :class:`~forecasting.federated.CommunityModel` of the exact sum of the
  contributors' updates (``None`` when the round aborted), and :class:`RoundStats`.
* **Differential privacy** (``dp``): every member multiplies its update by
  :func:`forecasting.federated.dp_scale` of the previous model (public) before the aggregation
  clips it and adds its noise share; the sum is divided by the same factors
  (:func:`~forecasting.federated.dp_unscale`) before it becomes the model, so every statistic pays
  the noise alike (``docs/federated.md``, "Differential privacy"). The model records the sum's
  public noise (:class:`~forecasting.federated.SumNoise`: ``σ·sqrt(n/t)`` for ``n`` contributors
  of threshold ``t``, and the scale exponents), from which its coefficients are solved stably.
* Members whose history is too short to contribute (under
  :data:`~forecasting.federated.MIN_CONTRIBUTE_DAYS` days) are not members of the round.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from forecasting.federated import (
    MIN_CONTRIBUTE_DAYS,
    NO_MODEL,
    CommunityModel,
    Layout,
    dp_scale,
    dp_total,
    local_update,
)
from forecasting.secagg import (
    DEFAULT_DEGREE,
    Complete,
    DpConfig,
    RoundStats,
    Transcript,
    aggregate_round,
    message_bytes,
)
from forecasting.series import MeterHistory
from market.errors import UsageError

__all__ = ["run_round"]


def run_round(
    histories: Sequence[MeterHistory],
    keys: Sequence[tuple[bytes, bytes]],
    round: int,
    previous: CommunityModel | None,
    *,
    dropped: Collection[int] = (),
    silent: Collection[int] = (),
    since_s: int | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    degree: int = DEFAULT_DEGREE,
    dp: DpConfig | None = None,
    rng: np.random.Generator | None = None,
    cpu_clock: Callable[[], float] | None = None,
) -> tuple[CommunityModel | None, RoundStats, Transcript]:
    """A round over the members (rows of ``histories``, in order; ``keys[k]`` is member ``k``'s
    X25519 ``(private, public)``). ``dropped`` members (indices) crash before sending their update,
    ``silent`` ones after sending it (they never reveal). ``since_s``: the start of the held-back
    validation window (the previous model's error on data from then on is summed in the update)."""
    start = cpu_clock() if cpu_clock is not None else 0.0
    rows = sum(h.households for h in histories)
    if len(keys) != rows:
        raise UsageError(f"{rows} members but {len(keys)} key pairs")
    step_s = histories[0].step_s
    if any(h.step_s != step_s for h in histories):
        raise UsageError("every member's history must have the same step")
    updates: dict[bytes, npt.NDArray[np.int64]] = {}
    first = 0
    for history in histories:
        if history.steps >= MIN_CONTRIBUTE_DAYS * history.steps_per_day:
            block = local_update(
                history, previous=previous, since_s=since_s, latitude=latitude, longitude=longitude
            )
            for k in range(history.households):
                updates[keys[first + k][1]] = block[k]
        first += history.households
    scale = None if dp is None else dp_scale(previous, step_s)
    if scale is not None:  # DP: statistics pre-scaled alike before clipping and noise
        updates = {k: np.rint(v * scale).astype(np.int64) for k, v in updates.items()}
    private = {public: secret for secret, public in keys}
    outcome, transcript = aggregate_round(
        updates,
        private,
        round,
        dropped=[keys[k][1] for k in dropped],
        silent=[keys[k][1] for k in silent],
        degree=degree,
        dp=dp,
        rng=rng,
    )
    model = None
    if isinstance(outcome, Complete):
        total, noise = outcome.total, None
        if dp is not None:
            total, noise = dp_total(
                outcome.total,
                previous,
                step_s,
                sigma=dp.sigma,
                contributors=len(outcome.contributors),
                threshold=outcome.spec.threshold,
            )
        model = CommunityModel.of(
            total,
            round=round,
            step_s=step_s,
            previous=NO_MODEL if previous is None else previous.hash,
            contributors=len(outcome.contributors),
            noise=noise,
        )
    sent = message_bytes(transcript)
    attempts = len({u.digest for u in transcript.updates})
    stats = RoundStats(
        members=len(updates),
        contributors=0 if model is None else model.contributors,
        attempts=attempts,
        update_entries=Layout(step_s).length,
        max_bytes_per_member=max(sent.values(), default=0),
        total_bytes=sum(sent.values()),
        cpu_s=(cpu_clock() - start) if cpu_clock is not None else 0.0,
    )
    return model, stats, transcript
