"""One verdict on the node's health, derived from its snapshot: the status page's badge and ``/metrics``.

Rules of this module (``docs/page.md`` shows what each looks like):

* Ages are **wall** seconds: node-time differences divided by the clock's speed-up, so a node at 60×
  does not call a validator heard 7 seconds ago "7 min ago".
* **Problem** (``bad``), worst first: no quorum (at most 2/3 of the validators reachable: no block
  can be decided, orders and readings wait), or not in sync (the newest block is more than
  :data:`STALE_S` wall seconds old).
* **Warning** (``warn``): submissions no validator acknowledged within the last
  :data:`FAILURE_WINDOW_S` wall seconds; this household's readings missed in the last day (the ledger
  counted them as 0 Wh); the meter gave nothing for a delivered slot.
* Otherwise **ok**, labelled with the height. ``label`` is the badge's one line (the worst reason);
  ``reasons`` lists every one.
* A validator counts itself as reachable; quorum is ``3 × reachable > 2 × validators``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gridnode.localtime import zone_named

if TYPE_CHECKING:
    from gridnode.status import Snapshot

__all__ = ["FAILURE_WINDOW_S", "STALE_S", "Health", "node_health"]

#: the newest block older than this (wall seconds) means the node is not in sync
STALE_S: Final = 30.0
#: failed submissions younger than this (wall seconds) are a warning
FAILURE_WINDOW_S: Final = 300.0
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Health:
    level: str  # "ok" | "warn" | "bad"
    label: str
    reasons: tuple[str, ...]
    quorum: bool
    validators_connected: int
    validators_total: int
    head_age_s: float  # wall seconds since the newest block's time
    submit_failures: int  # within FAILURE_WINDOW_S
    readings_missed: int  # within the last day (node time)
    missed_cost_micro: int
    meter_silent_slot: int | None  # a delivered slot the meter gave nothing for
    forecast_mae_wh: float | None  # over the history's slots with a forecast and a reading

    @property
    def rank(self) -> int:
        return {"ok": 0, "warn": 1, "bad": 2}[self.level]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def node_health(snap: Snapshot) -> Health:
    """The verdict for ``snap`` (see the module rules)."""
    ledger = snap.ledger
    genesis = ledger.genesis
    speed = snap.speedup or 1.0
    validators = set(genesis.validators)
    reachable = {v.public_key for v in snap.validators if v.connected} & validators
    if snap.household in validators:
        reachable.add(snap.household)
    n = len(validators)
    quorum = 3 * len(reachable) > 2 * n
    since_ms = ledger.time_ms if ledger.height > 0 else (snap.started_ms or snap.now_ms)
    head_age_s = max(0, snap.now_ms - since_ms) / 1000 / speed
    window_ms = FAILURE_WINDOW_S * 1000 * speed
    failures = sum(1 for at in snap.submit_failures if snap.now_ms - at <= window_ms)

    missed = cost = 0
    errors: list[int] = []
    silent: int | None = None
    view = snap.history
    clock = genesis.clock
    member = snap.household in genesis.member_set
    if view is not None:
        day_ago_s = (snap.now_ms - _DAY_MS) // 1000
        for r in view.slots:
            if r.missed and clock.start(r.slot) >= day_ago_s:
                missed += 1
                cost += r.missed_cost_micro
            if r.forecast is not None and r.metered is not None:
                errors.append(abs(r.forecast[1] - r.metered.natural_wh))
        delivered = clock.slot_at(snap.now_ms // 1000) - 2
        if (
            member
            and snap.meter_source not in ("", "none")
            and snap.started_ms // 1000 <= clock.start(delivered - 1)
        ):
            record = view.slot(delivered)
            if record is None or record.metered is None:
                silent = delivered

    problems: list[str] = []
    warnings: list[str] = []
    if not quorum:
        problems.append(
            f"no quorum: {len(reachable)} of {n} validators reachable — no block can be decided, "
            "orders and readings wait"
        )
    if head_age_s > STALE_S:
        problems.append(f"not in sync: the newest block is {_ago(head_age_s)} old")
    if failures:
        warnings.append(
            f"{_plural(failures, 'submission')} in the last {int(FAILURE_WINDOW_S // 60)} min "
            "not acknowledged by any validator"
        )
    if missed:
        warnings.append(
            f"{_plural(missed, 'meter reading')} missed in the last day (counted as 0 Wh)"
        )
    if silent is not None:
        zone = zone_named(snap.timezone)
        warnings.append(
            f"the meter gave no reading for {zone.span(clock.start(silent), clock.end(silent))}"
        )
    if problems:
        level, label = "bad", problems[0]
    elif warnings:
        level, label = "warn", warnings[0]
    else:
        level, label = "ok", f"in sync · height {ledger.height}"
    return Health(
        level=level,
        label=label,
        reasons=tuple(problems + warnings),
        quorum=quorum,
        validators_connected=len(reachable),
        validators_total=n,
        head_age_s=round(head_age_s, 1),
        submit_failures=failures,
        readings_missed=missed,
        missed_cost_micro=cost,
        meter_silent_slot=silent,
        forecast_mae_wh=sum(errors) / len(errors) if errors else None,
    )
