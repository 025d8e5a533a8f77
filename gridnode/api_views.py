"""The owner's views of the API, built from one snapshot: ``/api/household``, ``/api/market``,
``/api/slot`` and the health and local times in ``/api/status``.

Rules of this module:

* Every view is a pure function of a :class:`~gridnode.status.Snapshot` (and the household's
  :class:`~gridnode.localtime.LocalTime`): the facts come from the node (its ledger state and its
  :class:`~gridnode.history.HistoryView`), computed once there; a view only selects, joins and
  words them. Shares use :mod:`market.kpis`, bills the ledger's own
  :class:`~market.settlement.HouseholdBill`, health :func:`gridnode.health.node_health`.
* Units as everywhere in the API: ``*_wh``, ``*_micro``, ``*_micro_per_kwh``, unix ``*_ms``. Every
  slot also carries its delivery interval in local time with the offset (``delivery``: ``"2026-06-01
  13:15–13:30 UTC−07:00"``) and a chart-ready local wall-clock time (``local``).
* **An order's fate** (``/api/household`` ``orders``): the latest submission per slot (older ones
  were replaced by it) and every refused one, newest first. ``open`` (committed, gate still open),
  ``pending`` (accepted by a validator, not yet in a block), ``refused`` (with the reason code),
  ``cleared`` (all of it traded), ``partly`` (some), ``not_matched`` (in the book at gate closure,
  nothing traded), ``expired`` (never committed before its gate closed, or cancelled), ``unknown``
  (a slot before this node's history).
* Bounded: at most :data:`MAX_ROWS` rows per list; the energy chart covers today and yesterday
  (local days).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from gridnode.core.ledger import HouseholdTotals, LedgerState
from gridnode.health import Health, node_health
from gridnode.history import HouseholdSlot
from gridnode.localtime import LocalTime
from gridnode.status import Snapshot, Submission
from market.kpis import self_consumption, self_sufficiency
from market.orders import Order, Side

__all__ = [
    "MAX_ROWS",
    "account_totals",
    "household_view",
    "market_view",
    "model_view",
    "provenance_view",
    "slot_view",
    "status_extras",
]

MAX_ROWS: Final = 40
MAX_MARKET_SLOTS: Final = 96

#: what a refusal means, in words (codes from market.errors; others are shown as the code)
REASON_WORDS: Final = {
    "slot_closed": "its gate had closed",
    "slot_too_far_ahead": "too far ahead",
    "stale_nonce": "a newer order was already sent",
    "network": "no validator answered",
    "not_a_member": "this household is not a member",
    "price_out_of_range": "price outside the community's limits",
    "duplicate": "already submitted",
    "full": "the validators' queue was full",
}


# ------------------------------------------------------------------------------------ formatting


def money(micro: int | None) -> str:
    """µ¤ as ``"−0.2400 ¤"`` (4 decimals, exact)."""
    if micro is None:
        return "—"
    sign = "−" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac // 100:04d} ¤"


def price(micro_per_kwh: int | None) -> str:
    return "—" if micro_per_kwh is None else f"{money(micro_per_kwh)}/kWh"


def energy(wh: int) -> str:
    return f"{wh / 1000:.2f} kWh" if abs(wh) >= 10_000 else f"{wh} Wh"


def _share(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _when(zone: LocalTime, snap: Snapshot, slot: int) -> dict[str, Any]:
    clock = snap.ledger.genesis.clock
    start, end = clock.start(slot), clock.end(slot)
    return {
        "slot": slot,
        "start_ms": start * 1000,
        "local": zone.naive(start),
        "clock": zone.clock(start),
        "date": zone.date(start).isoformat(),
        "span": zone.span(start, end),
        "delivery": zone.interval(start, end),
    }


# ---------------------------------------------------------------------------------------- status


def status_extras(snap: Snapshot, zone: LocalTime) -> dict[str, Any]:
    """What ``/api/status`` adds for people: the health verdict, local times, wall-time ages."""
    health = node_health(snap)
    clock = snap.ledger.genesis.clock
    now_s = snap.now_ms // 1000
    first_open = clock.first_open_slot(now_s)
    speed = snap.speedup or 1.0
    return {
        "health": _health_json(health),
        "speedup": speed,
        "timezone": zone.name,
        "utc_offset": zone.offset(now_s),
        "now_local": zone.stamp(now_s),
        "current_delivery": zone.interval(
            clock.start(clock.slot_at(now_s)), clock.end(clock.slot_at(now_s))
        ),
        "first_open_delivery": zone.interval(clock.start(first_open), clock.end(first_open)),
        "gate_closure_local": zone.stamp(clock.gate_closure(first_open)),
        "wall_s_to_gate_closure": round(
            max(0, clock.gate_closure(first_open) * 1000 - snap.now_ms) / 1000 / speed, 1
        ),
        "member": snap.household in snap.ledger.genesis.member_set,
        "meter_source": snap.meter_source,
        "forecaster": snap.forecaster_state,
    }


def _health_json(h: Health) -> dict[str, Any]:
    return {
        "level": h.level,
        "label": h.label,
        "reasons": list(h.reasons),
        "quorum": h.quorum,
        "validators_connected": h.validators_connected,
        "validators_total": h.validators_total,
        "head_age_s": h.head_age_s,
        "submit_failures": h.submit_failures,
        "readings_missed": h.readings_missed,
        "missed_cost_micro": h.missed_cost_micro,
        "forecast_mae_wh": None if h.forecast_mae_wh is None else round(h.forecast_mae_wh, 1),
    }


def validator_rows(snap: Snapshot) -> list[dict[str, Any]]:
    """The genesis validators as this node sees them; ``heard_s_ago`` in wall seconds."""
    speed = snap.speedup or 1.0
    rows = []
    for v in snap.validators:
        me = v.public_key == snap.household
        age = None if v.last_seen_ms is None else snap.now_ms - v.last_seen_ms
        rows.append(
            {
                "public_key": v.public_key,
                "self": me,
                "connected": v.connected,
                "last_seen_ms": v.last_seen_ms,
                "age_ms": age,
                "heard_s_ago": None if me or age is None else round(max(0, age) / 1000 / speed, 1),
            }
        )
    return rows


# ------------------------------------------------------------------------------------- household


def _my_energy(r: HouseholdSlot, me: str) -> tuple[int, int]:
    """(bought, sold) Wh in the slot: the bill's once settled, else the trades."""
    if r.bill is not None:
        return r.bill.bought_p2p_wh, r.bill.sold_p2p_wh
    bought = sum(t.energy_wh for t in r.my_trades if t.buyer == me)
    return bought, sum(t.energy_wh for t in r.my_trades if t.seller == me)


def _slot_row(zone: LocalTime, snap: Snapshot, r: HouseholdSlot, day: str) -> dict[str, Any]:
    me = snap.household
    bought, sold = _my_energy(r, me)
    m, b = r.metered, r.bill
    return {
        **_when(zone, snap, r.slot),
        "day": day,
        "pv_wh": None if m is None else m.pv_wh,
        "load_wh": None if m is None else m.load_wh,
        "natural_wh": None if m is None else m.natural_wh,
        "reading_wh": None if m is None else m.reading_wh,
        "battery_charged_wh": 0 if m is None else m.charged_wh,
        "battery_discharged_wh": 0 if m is None else m.discharged_wh,
        "battery_soc_wh": None if m is None else m.soc_wh,
        "forecast": None if r.forecast is None else list(r.forecast),
        "bought_p2p_wh": bought,
        "sold_p2p_wh": sold,
        "grid_import_wh": None if b is None else b.grid_import_wh,
        "grid_export_wh": None if b is None else b.grid_export_wh,
        "bill_micro": None if b is None else b.bill_micro,
        "grid_only_bill_micro": None if b is None else b.grid_only_bill_micro,
        "price_micro_per_kwh": r.price_micro_per_kwh,
        "settled": r.settled,
        "missed": r.missed,
        "missed_cost_micro": r.missed_cost_micro,
    }


def _chart_rows(
    snap: Snapshot, zone: LocalTime, since_s: int, labels: dict[str, str]
) -> list[dict[str, Any]]:
    """Every slot from ``since_s`` (local midnight yesterday) or the history's start, whichever is
    later, to the last one delivered: the history's record, or an empty row (``no_reading``: the
    meter gave nothing for it)."""
    view = snap.history
    if view is None or view.since_slot is None:
        return []
    clock = snap.ledger.genesis.clock
    first = max(clock.slot_at(since_s), view.since_slot)
    last = clock.slot_at(snap.now_ms // 1000) - 1
    rows = []
    for slot in range(first, last + 1):
        r = view.slot(slot) or HouseholdSlot(slot)
        row = _slot_row(zone, snap, r, labels.get(zone.date(clock.start(slot)).isoformat(), ""))
        row["no_reading"] = r.metered is None and snap.meter_source not in ("", "none")
        rows.append(row)
    return rows


def _day_json(d: Any, label: str) -> dict[str, Any]:
    return {
        "day": d.day,
        "label": label,
        "slots_settled": d.slots_settled,
        "bill_micro": d.bill_micro,
        "grid_only_bill_micro": d.grid_only_bill_micro,
        "savings_micro": d.savings_micro,
        "bought_p2p_wh": d.bought_p2p_wh,
        "sold_p2p_wh": d.sold_p2p_wh,
        "grid_import_wh": d.grid_import_wh,
        "grid_export_wh": d.grid_export_wh,
        "pv_wh": d.pv_wh,
        "load_wh": d.load_wh,
        "metered_slots": d.metered_slots,
        "self_sufficiency": _share(
            self_sufficiency(load_wh=d.load_wh, import_wh=d.grid_import_metered_wh)
        ),
        "self_consumption": _share(
            self_consumption(pv_wh=d.pv_wh, export_wh=d.grid_export_metered_wh)
        ),
        "readings_missed": d.readings_missed,
        "missed_cost_micro": d.missed_cost_micro,
    }


def _fate(
    snap: Snapshot, s: Submission, record: HouseholdSlot | None, latest: bool
) -> tuple[str, str, int]:
    """(fate, words, traded Wh) of submission ``s`` (module rules)."""
    ledger = snap.ledger
    clock = ledger.genesis.clock
    me = snap.household
    if not s.accepted:
        return "refused", f"refused: {REASON_WORDS.get(s.reason, s.reason or 'refused')}", 0
    if not latest:
        return "replaced", "replaced by a newer order for the slot", 0
    if clock.is_open(s.slot, snap.now_ms // 1000):
        held = ledger.orders.get(s.slot, {}).get(me)
        if held is not None and held.order.order_id == s.order_id:
            return "open", "in the book; waiting for the gate to close", 0
        return "pending", "accepted; waiting for a block", 0
    history = snap.history
    if history is None or history.since_slot is None or s.slot < history.since_slot:
        return "unknown", "before this node's history", 0
    if record is None or record.cleared_height == 0 or record.my_order is None:
        if ledger.last_cleared_slot < s.slot:
            return "pending", "gate closed; waiting for the slot to clear", 0
        return "expired", "not in the book when its gate closed", 0
    if record.my_order.order_id != s.order_id:
        return "expired", "not in the book when its gate closed", 0
    traded = sum(t.energy_wh for t in record.my_trades)
    verb = "sold" if s.side == "sell" else "bought"
    if traded == 0:
        return "not_matched", f"nothing {verb}: {_why_unmatched(record)}", 0
    at = price(record.price_micro_per_kwh) if record.price_micro_per_kwh is not None else ""
    if traded >= record.my_order.energy_wh:
        return "cleared", f"{verb} all {energy(traded)}" + (f" at {at}" if at else ""), traded
    return (
        "partly",
        f"{verb} {energy(traded)} of {energy(record.my_order.energy_wh)}"
        + (f" at {at}" if at else ""),
        traded,
    )


def _why_unmatched(r: HouseholdSlot) -> str:
    o = r.my_order
    assert o is not None
    best = (
        max(s.price_micro_per_kwh for s in o.steps)
        if o.side is Side.BUY
        else min(s.price_micro_per_kwh for s in o.steps)
    )
    if r.price_micro_per_kwh is None:
        other = "offered" if o.side is Side.BUY else "bid"
        return f"nobody {other} at a price that met yours ({price(best)})"
    if o.side is Side.BUY:
        return f"your highest bid {price(best)} was below the clearing price {price(r.price_micro_per_kwh)}"
    return (
        f"your lowest ask {price(best)} was above the clearing price {price(r.price_micro_per_kwh)}"
    )


def _orders(snap: Snapshot, zone: LocalTime) -> list[dict[str, Any]]:
    history = snap.history
    latest: dict[int, Submission] = {}
    for s in snap.submissions:
        if s.accepted:
            latest[s.slot] = s
    requotes: dict[int, int] = {}
    for s in snap.submissions:
        requotes[s.slot] = requotes.get(s.slot, 0) + 1
    shown = [s for s in snap.submissions if not s.accepted or latest.get(s.slot) is s]
    rows = []
    for s in reversed(shown[-MAX_ROWS:]):
        record = None if history is None else history.slot(s.slot)
        fate, words, traded = _fate(snap, s, record, latest.get(s.slot) is s)
        rows.append(
            {
                **_when(zone, snap, s.slot),
                "order_id": s.order_id,
                "side": s.side,
                "energy_wh": s.energy_wh,
                "steps": s.steps,
                "at_ms": s.at_ms,
                "submitted_local": zone.clock(s.at_ms // 1000),
                "fate": fate,
                "fate_text": words,
                "traded_wh": traded,
                "reason": s.reason,
                "submissions": requotes.get(s.slot, 1),
            }
        )
    return rows


def _trades(
    snap: Snapshot, zone: LocalTime, slots: Sequence[HouseholdSlot]
) -> list[dict[str, Any]]:
    me = snap.household
    rows: list[dict[str, Any]] = []
    for r in reversed(slots):
        for t in r.my_trades:
            buy = t.buyer == me
            rows.append(
                {
                    **_when(zone, snap, r.slot),
                    "side": "buy" if buy else "sell",
                    "energy_wh": t.energy_wh,
                    "price_micro_per_kwh": t.price_micro_per_kwh,
                    "amount_micro": t.amount_micro,
                    "counterparty": t.seller if buy else t.buyer,
                    "settled": r.settled,
                    "missed": r.missed,
                }
            )
            if len(rows) >= MAX_ROWS:
                return rows
    return rows


def account_totals(ledger: LedgerState, household: str) -> dict[str, int]:
    """A household's totals since it joined, from the ledger (zeros before its first settled
    slot): what ``/api/balance`` and the page's "since joining" show."""
    t = ledger.totals.get(household) or HouseholdTotals()
    return {
        "bill_micro": t.bill_micro,
        "grid_only_bill_micro": t.grid_only_bill_micro,
        "savings_micro": t.savings_micro,
        "bought_p2p_wh": t.bought_p2p_wh,
        "sold_p2p_wh": t.sold_p2p_wh,
        "grid_import_wh": t.grid_import_wh,
        "grid_export_wh": t.grid_export_wh,
        "slots_settled": t.slots_settled,
    }


def household_view(snap: Snapshot, zone: LocalTime) -> dict[str, Any]:
    """``/api/household``: what an owner asks (module rules)."""
    ledger = snap.ledger
    genesis = ledger.genesis
    me = snap.household
    now_s = snap.now_ms // 1000
    today = zone.date(now_s)
    yesterday_start = zone.day_start_s(today) - 86_400
    view = snap.history
    slots = view.slots if view is not None else ()
    days = view.days if view is not None else ()
    labels = {today.isoformat(): "today", zone.date(yesterday_start).isoformat(): "yesterday"}
    chart = _chart_rows(snap, zone, yesterday_start, labels)
    metered = [r for r in slots if r.settled and r.bill is not None and r.metered is not None]
    known = [r for r in metered if r.metered and r.metered.pv_wh is not None]
    load = sum(r.metered.load_wh or 0 for r in known if r.metered)
    pv = sum(r.metered.pv_wh or 0 for r in known if r.metered)
    imported = sum(r.bill.grid_import_wh for r in known if r.bill)
    exported = sum(r.bill.grid_export_wh for r in known if r.bill)
    day_docs = [_day_json(d, labels.get(d.day, d.day)) for d in days]
    by_day = {d["day"]: d for d in day_docs}
    missed = [r for r in slots if r.missed]
    return {
        "household": me,
        "member": me in genesis.member_set,
        "role": snap.role,
        "now_ms": snap.now_ms,
        "timezone": zone.name,
        "utc_offset": zone.offset(now_s),
        "today": by_day.get(today.isoformat()) or _day_json(_empty_day(today.isoformat()), "today"),
        "yesterday": by_day.get(zone.date(yesterday_start).isoformat())
        or _day_json(_empty_day(zone.date(yesterday_start).isoformat()), "yesterday"),
        "days": day_docs[-31:],
        "since_joining": {
            "balance_micro": ledger.balances.get(me, 0),
            **account_totals(ledger, me),
        },
        "shares": {
            "slots": len(known),
            "pv_wh": pv,
            "load_wh": load,
            "self_sufficiency": _share(self_sufficiency(load_wh=load, import_wh=imported)),
            "self_consumption": _share(self_consumption(pv_wh=pv, export_wh=exported)),
        },
        "pv_known": bool(known) or any(r.metered and r.metered.pv_wh is not None for r in slots),
        "history_since": None
        if view is None or view.since_slot is None
        else _when(zone, snap, view.since_slot),
        "slots": chart,
        "forecaster": snap.forecaster_state,
        "forecast": [
            {**_when(zone, snap, s), "p10_wh": p10, "p50_wh": p50, "p90_wh": p90}
            for s, p10, p50, p90 in snap.forecast
        ],
        "orders": _orders(snap, zone),
        "trades": _trades(snap, zone, slots),
        "missed": [
            {
                **_when(zone, snap, r.slot),
                "cost_micro": r.missed_cost_micro,
                "basis": r.missed_basis,
                "contract_wh": _contract(r, me),
            }
            for r in reversed(missed[-MAX_ROWS:])
        ],
        "why_slot": _default_why(slots, me, ledger.last_cleared_slot),
    }


def _contract(r: HouseholdSlot, me: str) -> int:
    return sum(t.energy_wh for t in r.my_trades if t.seller == me) - sum(
        t.energy_wh for t in r.my_trades if t.buyer == me
    )


def _empty_day(day: str) -> Any:
    from gridnode.history import DayTotals  # noqa: PLC0415

    return DayTotals(day, 0)


def _default_why(slots: Sequence[HouseholdSlot], me: str, last_cleared: int) -> int | None:
    """The slot the page explains first: the newest cleared one this household traded or bid in,
    else the newest cleared one."""
    cleared = [
        r for r in slots if r.cleared_height and r.slot <= last_cleared and r.supply + r.demand
    ]
    for r in reversed(cleared):
        if r.my_order is not None:
            return r.slot
    return cleared[-1].slot if cleared else None


# ---------------------------------------------------------------------------------------- market


def market_view(snap: Snapshot, zone: LocalTime) -> dict[str, Any]:
    """``/api/market``: the community's clearing prices and volumes, newest slots last."""
    genesis = snap.ledger.genesis
    view = snap.history
    cleared = [r for r in (view.slots if view is not None else ()) if r.cleared_height]
    cleared = cleared[-MAX_MARKET_SLOTS:]
    day_ago = snap.now_ms // 1000 - 86_400
    recent = [r for r in cleared if genesis.clock.start(r.slot) >= day_ago]
    volume = sum(r.volume_wh for r in recent)
    value = sum(r.volume_wh * r.price_micro_per_kwh for r in recent if r.price_micro_per_kwh)
    priced = sum(r.volume_wh for r in recent if r.price_micro_per_kwh)
    return {
        "retail_micro_per_kwh": genesis.retail_micro_per_kwh,
        "feed_in_micro_per_kwh": genesis.feed_in_micro_per_kwh,
        "rule": genesis.rule.value,
        "members": len(genesis.members),
        "last_day": {
            "slots_cleared": len(recent),
            "volume_wh": volume,
            "trades": sum(r.trade_count for r in recent),
            "mean_price_micro_per_kwh": value // priced if priced else None,
        },
        "slots": [
            {
                **_when(zone, snap, r.slot),
                "price_micro_per_kwh": r.price_micro_per_kwh,
                "volume_wh": r.volume_wh,
                "trades": r.trade_count,
                "orders": r.orders,
            }
            for r in cleared
        ],
    }


# ------------------------------------------------------------------------------------------ slot


def _steps(o: Order | None) -> list[dict[str, int]] | None:
    if o is None:
        return None
    return [
        {"price_micro_per_kwh": s.price_micro_per_kwh, "energy_wh": s.energy_wh} for s in o.steps
    ]


def _curves(orders: Iterable[Order]) -> tuple[list[list[int]], list[list[int]]]:
    from gridnode.history import aggregate_curve  # noqa: PLC0415

    listed = list(orders)
    return (
        [list(x) for x in aggregate_curve(listed, Side.SELL)],
        [list(x) for x in aggregate_curve(listed, Side.BUY)],
    )


def slot_view(snap: Snapshot, zone: LocalTime, slot: int) -> dict[str, Any] | None:
    """``/api/slot?slot=N``: why the slot went as it did (``None``: the node knows nothing of it)."""
    ledger = snap.ledger
    me = snap.household
    clock = ledger.genesis.clock
    record = None if snap.history is None else snap.history.slot(slot)
    open_ = clock.is_open(slot, snap.now_ms // 1000)
    if record is None or record.cleared_height == 0:
        book = [so.order for so in ledger.orders.get(slot, {}).values()]
        live = [so.order for so in snap.gossip_orders if so.order.slot == slot]
        known = {o.order_id for o in book}
        book += [o for o in live if o.order_id not in known]
        if not book and record is None and not open_:
            return None
        supply, demand = _curves(book)
        mine = next((o for o in book if o.household == me), None)
        state = "open" if open_ else ("waiting" if slot > ledger.last_cleared_slot else "empty")
        doc = {
            **_when(zone, snap, slot),
            "state": state,
            "gate_closure_local": zone.stamp(clock.gate_closure(slot)),
            "orders": len(book),
            "supply": supply,
            "demand": demand,
            "my_order": None if mine is None else {"side": mine.side.value, "steps": _steps(mine)},
            "price_micro_per_kwh": None,
            "volume_wh": 0,
            "my_trades": [],
            "bill": None,
            "reading": _reading(record),
        }
        doc["explanation"] = _explain_open(doc, mine)
        return doc
    bill = record.bill
    doc = {
        **_when(zone, snap, slot),
        "state": "settled" if record.settled else "cleared",
        "gate_closure_local": zone.stamp(clock.gate_closure(slot)),
        "orders": record.orders,
        "supply": [list(x) for x in record.supply],
        "demand": [list(x) for x in record.demand],
        "curves_kept": bool(record.supply or record.demand or not record.orders),
        "my_order": None
        if record.my_order is None
        else {"side": record.my_order.side.value, "steps": _steps(record.my_order)},
        "price_micro_per_kwh": record.price_micro_per_kwh,
        "volume_wh": record.volume_wh,
        "trade_count": record.trade_count,
        "my_trades": [
            {
                "side": "buy" if t.buyer == me else "sell",
                "energy_wh": t.energy_wh,
                "price_micro_per_kwh": t.price_micro_per_kwh,
                "amount_micro": t.amount_micro,
            }
            for t in record.my_trades
        ],
        "bill": None
        if bill is None
        else {
            "measured_net_wh": bill.measured_net_wh,
            "bought_p2p_wh": bill.bought_p2p_wh,
            "sold_p2p_wh": bill.sold_p2p_wh,
            "imbalance_wh": bill.imbalance_wh,
            "grid_import_wh": bill.grid_import_wh,
            "grid_export_wh": bill.grid_export_wh,
            "paid_p2p_micro": bill.paid_p2p_micro,
            "received_p2p_micro": bill.received_p2p_micro,
            "grid_fee_micro": bill.grid_fee_micro,
            "grid_import_micro": bill.grid_import_micro,
            "grid_export_micro": bill.grid_export_micro,
            "netting_micro": bill.netting_micro,
            "bill_micro": bill.bill_micro,
            "grid_only_bill_micro": bill.grid_only_bill_micro,
            "savings_micro": bill.savings_micro,
        },
        "reading": _reading(record),
        "forecast": None if record.forecast is None else list(record.forecast),
    }
    doc["explanation"] = _explain(doc, record, snap)
    return doc


def _reading(record: HouseholdSlot | None) -> dict[str, Any] | None:
    if record is None:
        return None
    m = record.metered
    return {
        "missed": record.missed,
        "missed_cost_micro": record.missed_cost_micro,
        "missed_basis": record.missed_basis,
        "metered_wh": None if m is None else m.reading_wh,
        "natural_wh": None if m is None else m.natural_wh,
        "pv_wh": None if m is None else m.pv_wh,
        "load_wh": None if m is None else m.load_wh,
    }


def _explain_open(doc: dict[str, Any], mine: Order | None) -> list[str]:
    lines = []
    if doc["state"] == "open":
        lines.append(f"Orders are open until {doc['gate_closure_local']}.")
    elif doc["state"] == "waiting":
        lines.append("The gate has closed; the slot clears with the next block.")
    else:
        lines.append("Nobody placed an order for this slot: it cleared empty.")
    if mine is not None:
        lines.append(f"Your {_order_words(mine)}.")
    offers = sum(wh for _, wh in doc["supply"])
    bids = sum(wh for _, wh in doc["demand"])
    lines.append(
        f"So far {energy(offers)} offered and {energy(bids)} asked for ({doc['orders']} orders)."
    )
    return lines


def _order_words(o: Order) -> str:
    verb = "offer to sell" if o.side is Side.SELL else "bid to buy"
    limit = "for at least" if o.side is Side.SELL else "for at most"
    steps = ", ".join(
        f"{energy(s.energy_wh)} {limit} {price(s.price_micro_per_kwh)}" for s in o.steps
    )
    return f"{verb} {steps}"


def _explain(doc: dict[str, Any], r: HouseholdSlot, snap: Snapshot) -> list[str]:
    lines = []
    offers = sum(wh for _, wh in r.supply)
    bids = sum(wh for _, wh in r.demand)
    if r.price_micro_per_kwh is not None:
        lines.append(
            f"{r.orders} orders: {energy(offers)} offered, {energy(bids)} asked for; they met at "
            f"{price(r.price_micro_per_kwh)}: {energy(r.volume_wh)} traded in {r.trade_count} trades."
            if r.supply or r.demand
            else f"Cleared at {price(r.price_micro_per_kwh)}: {energy(r.volume_wh)} traded "
            f"in {r.trade_count} trades."
        )
    elif r.volume_wh:
        lines.append(f"{energy(r.volume_wh)} traded at each pair's own price (pay-as-bid).")
    else:
        lines.append(
            f"{r.orders} orders, but no bid met an offer "
            f"({energy(offers)} offered, {energy(bids)} asked for): nothing traded."
        )
    if r.my_order is None:
        lines.append("You had no order in this slot: your meter settled with the grid.")
    else:
        traded = sum(t.energy_wh for t in r.my_trades)
        lines.append(f"Your {_order_words(r.my_order)}.")
        verb = "sold" if r.my_order.side is Side.SELL else "bought"
        if traded == 0:
            lines.append(f"Nothing {verb}: {_why_unmatched(r)}.")
        else:
            amount = sum(t.amount_micro for t in r.my_trades)
            part = "all of it" if traded >= r.my_order.energy_wh else f"{energy(traded)} of it"
            lines.append(f"You {verb} {part} for {money(amount)}.")
    b = r.bill
    if r.missed:
        basis = (
            "the reading your meter had"
            if r.missed_basis == "meter"
            else "delivering your contract exactly"
        )
        lines.append(
            f"Your meter reading never reached the ledger: it counted 0 Wh. That cost "
            f"{money(r.missed_cost_micro)} more than {basis}."
        )
    elif b is not None:
        net = b.measured_net_wh
        lines.append(
            f"Your meter read {energy(abs(net))} {'exported' if net >= 0 else 'imported'}; "
            + (
                f"{energy(abs(b.imbalance_wh))} {'more' if b.imbalance_wh > 0 else 'less'} than you "
                f"contracted went {'to' if b.imbalance_wh > 0 else 'from'} the grid."
                if b.imbalance_wh
                else "exactly as contracted."
            )
        )
    if b is not None:
        lines.append(
            f"Your bill for the slot: {money(b.bill_micro)} (grid only: {money(b.grid_only_bill_micro)}; "
            f"saved {money(b.savings_micro)})."
        )
    elif not r.settled:
        clock = snap.ledger.genesis.clock
        if snap.now_ms // 1000 < clock.end(r.slot):
            lines.append("It settles after delivery, once the meter readings are in.")
        else:
            lines.append("Not settled yet: waiting for the meter readings (or their deadline).")
    return lines


# --------------------------------------------------------------------------- provenance (issue 13)


def model_view(ledger: LedgerState, model_hash: bytes | None) -> dict[str, Any]:
    """``/api/model``: a committed community model (default: the newest) and every model's hash
    in round order. ``found`` is false for a hash the ledger never committed."""
    from gridnode.explain import model_json  # noqa: PLC0415

    chain = sorted(ledger.models.items(), key=lambda kv: kv[1].round)
    if model_hash is None:
        model_hash = ledger.last_model if ledger.models else None
    committed = None if model_hash is None else ledger.models.get(model_hash)
    return {
        "found": committed is not None,
        "model": None if model_hash is None else model_json(model_hash, committed),
        "committed": [{"round": m.round, "hash": h.hex()} for h, m in chain],
        "last_model": ledger.last_model.hex() if ledger.models else None,
    }


def provenance_view(
    ledger: LedgerState, order_id: str, record: dict[str, Any] | None
) -> dict[str, Any]:
    """``/api/provenance``: which model made the order (the signed hash in the ledger's open
    order, else in this node's record) with the model's commitment, and this node's record of its
    forecast and policy (``None`` when this node did not make the order)."""
    from gridnode.explain import NOT_ON_LEDGER, model_json  # noqa: PLC0415

    held = next(
        (so for by_h in ledger.orders.values() for so in by_h.values()
         if so.order.order_id == order_id),
        None,
    )  # fmt: skip
    if held is not None:
        model, source = held.model, "ledger (open order)"
    elif record is not None:
        model = None if record.get("model") is None else bytes.fromhex(str(record["model"]))
        source = (
            "this node's record (the order is no longer open; gridnode explain reads the chain)"
        )
    else:
        return {"order_id": order_id, "found": False}
    return {
        "order_id": order_id,
        "found": True,
        "model_hash_from": source,
        "model": model_json(model, None if model is None else ledger.models.get(model)),
        "local": record,
        "not_on_ledger": NOT_ON_LEDGER,
    }
