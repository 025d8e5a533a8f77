"""What the node measures about itself for ``/metrics``, and the Prometheus text the API serves.

Rules of this module:

* :class:`CommitLatency` (on the node's thread) times this node's own transactions — its orders,
  cancels and readings — from submission to the block that commits them, in **wall** seconds (the
  node clock may run sped up), into fixed buckets (:data:`LATENCY_BUCKETS_S`). A transaction never
  committed (refused, replaced, dropped) is forgotten after :data:`MAX_PENDING` newer ones.
  :meth:`CommitLatency.histogram` is an immutable :class:`LatencyHistogram` for the snapshot.
* :func:`render_metrics` turns a :class:`~gridnode.status.Snapshot` into the Prometheus text
  exposition format with ``prometheus_client``'s own metric families and encoder, on a registry of
  its own per scrape (no global registry, nothing configured at import). Every value comes from the
  snapshot: the API computes nothing twice. Metric names and meanings: ``docs/api.md``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gridnode.status import Snapshot

__all__ = [
    "LATENCY_BUCKETS_S",
    "CommitLatency",
    "LatencyHistogram",
    "render_metrics",
]

#: upper bounds (wall seconds) of the commit-latency buckets; +Inf is implied
LATENCY_BUCKETS_S: Final = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: submitted transactions awaiting their block, at most
MAX_PENDING: Final = 4_096


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Cumulative counts per bucket bound (``LATENCY_BUCKETS_S`` then +Inf), sum and count."""

    cumulative: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS_S) + 1)
    sum_s: float = 0.0
    count: int = 0


class CommitLatency:
    """Submission-to-commit times of this node's transactions (see the module rules)."""

    def __init__(self) -> None:
        self._pending: OrderedDict[bytes, int] = OrderedDict()
        self._counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum_s = 0.0
        self._count = 0
        self._histogram = LatencyHistogram()

    def sent(self, tx_ids: Iterable[bytes], wall_ms: int) -> None:
        for tid in tx_ids:
            self._pending.setdefault(tid, wall_ms)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def committed(self, tx_ids: Iterable[bytes], wall_ms: int) -> None:
        changed = False
        for tid in tx_ids:
            at = self._pending.pop(tid, None)
            if at is None:
                continue
            seconds = max(0, wall_ms - at) / 1000
            i = next((i for i, b in enumerate(LATENCY_BUCKETS_S) if seconds <= b), -1)
            self._counts[i] += 1
            self._sum_s += seconds
            self._count += 1
            changed = True
        if changed:
            running, cumulative = 0, []
            for n in self._counts:
                running += n
                cumulative.append(running)
            self._histogram = LatencyHistogram(tuple(cumulative), self._sum_s, self._count)

    def histogram(self) -> LatencyHistogram:
        return self._histogram


def render_metrics(snap: Snapshot) -> bytes:
    """The snapshot as Prometheus text (``text/plain; version=0.0.4``)."""
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
    from prometheus_client.registry import Collector  # noqa: PLC0415

    class _Snapshot(Collector):
        def collect(self) -> Iterator[object]:  # type: ignore[override]
            yield from _families(snap)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return bytes(generate_latest(registry))


def _families(snap: Snapshot) -> Iterator[object]:
    from prometheus_client.core import (  # noqa: PLC0415
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    from gridnode.health import node_health  # noqa: PLC0415

    ledger = snap.ledger
    genesis = ledger.genesis
    health = node_health(snap)

    def gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value, unit=unit)

    yield gauge("gridnode_height", "Ledger height (committed blocks)", ledger.height)
    yield gauge(
        "gridnode_sync_lag_seconds",
        "Wall seconds since the last committed block's time (a stalled or lagging node grows it)",
        health.head_age_s,
    )
    yield gauge(
        "gridnode_peers", "Connected libp2p peers", sum(1 for p in snap.peers if p.connected)
    )
    yield gauge(
        "gridnode_validators_connected",
        "Validators this node hears (itself included if it is one)",
        health.validators_connected,
    )
    yield gauge("gridnode_validators", "Validators in the genesis", len(genesis.validators))
    yield gauge(
        "gridnode_quorum", "1 if more than 2/3 of the validators are reachable", health.quorum
    )
    yield gauge(
        "gridnode_mempool_transactions", "Transactions waiting for a block", snap.mempool_size
    )
    yield gauge("gridnode_settled_slots", "Slots the ledger has settled", ledger.settled_slots)
    yield gauge(
        "gridnode_health", "0 ok, 1 warning, 2 problem (the status page's badge)", health.rank
    )
    refused = CounterMetricFamily(
        "gridnode_refused_messages",
        "Peer messages refused as misbehaviour, by reason (the peer book)",
        labels=["reason"],
    )
    for reason, n in sorted(snap.misbehaviour.items()):
        refused.add_metric([reason], n)
    yield refused
    yield gauge(
        "gridnode_submit_failures",
        "Submissions no validator acknowledged in the last 5 wall minutes",
        health.submit_failures,
    )
    lat = snap.commit_latency
    yield HistogramMetricFamily(
        "gridnode_commit_latency_seconds",
        "Wall seconds from submitting one of this node's transactions to the block committing it",
        buckets=[
            *((repr(b), c) for b, c in zip(LATENCY_BUCKETS_S, lat.cumulative, strict=False)),
            ("+Inf", lat.cumulative[-1]),
        ],
        sum_value=lat.sum_s,
    )
    totals = ledger.totals.get(snap.household)
    member = snap.household in genesis.member_set
    if member:
        yield gauge(
            "gridnode_balance_micro", "This household's ledger balance (µ¤, + owed to it)",
            ledger.balances.get(snap.household, 0),
        )  # fmt: skip
        yield gauge(
            "gridnode_savings_micro", "Savings against grid-only since joining (µ¤)",
            totals.savings_micro if totals else 0,
        )  # fmt: skip
        yield gauge(
            "gridnode_bill_micro", "Bill since joining (µ¤, − = earned)",
            totals.bill_micro if totals else 0,
        )  # fmt: skip
        err = health.forecast_mae_wh
        yield gauge(
            "gridnode_forecast_abs_error_wh",
            "Mean |P50 forecast − measured natural net| per slot over the history (Wh)",
            float("nan") if err is None else err,
        )
        yield gauge(
            "gridnode_readings_missed",
            "Settled slots in the history without this household's reading",
            health.readings_missed,
        )
