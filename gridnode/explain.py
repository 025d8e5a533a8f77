"""Explain an automated decision from the ledger alone: an order's life, or a slot's auction.

Everything here is a fact of the chain as the one chain reader (:mod:`gridnode.chain`) reports it
— the ledger's own apply step, re-verified from genesis — put into JSON-ready dicts:

* :func:`explain_slot`: the book the ledger held at the slot's gate closure (every replacement and
  cancel applied), as **supply and demand curves** (sell steps by ascending price, buy steps by
  descending price, cumulative Wh), the **clearing point** (price and volume, the height and time
  it cleared), **every trade** and **every settlement line** (the readings signed, a missing one
  settled as 0 Wh, each household's bill) and the height that settled it.
* :func:`explain_order`: every committed version of the order id (a newer nonce replaces an open
  order), whether it was the one in the book at gate closure, its trades and its household's
  settlement line for that slot.

**Which model made an order** is on the ledger: an order names the committed community model
that produced it (its hash, signed with the order) or nothing ("local model": the household's own
forecaster, or a hand-placed order); the model's commitment (round, previous model, contributors,
the summed held-back validation, feature version, aggregator, height) is a transaction of the same
chain (:func:`model_json`). The forecast quantiles and the policy parameters stay on the
household's node (its local record ``DATA/provenance.jsonl``, ``/api/provenance``): ``explain``
shows them when given that record (``local``), and says so otherwise (:data:`NOT_ON_LEDGER`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from gridnode.chain import BlockFacts, SlotCleared, SlotSettled, trade_row
from gridnode.core.ledger import BundledOrder, CommittedModel, OpenOrder, SignedModel
from gridnode.core.ledger.stateroot import BILL_FIELDS

__all__ = ["NOT_ON_LEDGER", "curves", "explain_order", "explain_slot", "model_json"]

#: what an explanation of an order needs that orders do not carry
NOT_ON_LEDGER: Final = {
    "forecast": "the P10/P50/P90 forecast of the slot's net Wh the quote was made from",
    "policy": "the bidding policy and its parameters (expected clearing price)",
    "where": "the household's own node: DATA/provenance.jsonl, /api/provenance (not the chain)",
}


def _validation_json(values: tuple[int, ...]) -> dict[str, Any]:
    """The summed validation integers (16-bit fixed point, ``forecasting.federated``) as means."""
    from forecasting.federated import FRAC_BITS  # noqa: PLC0415

    count, abs_e, p10, p50, p90, naive, covered = (v / (1 << FRAC_BITS) for v in values)
    out: dict[str, Any] = {"samples": round(count), "sums": list(values)}
    if count > 0:
        out.update(
            mae=round(abs_e / count, 6),
            pinball=round((p10 + p50 + p90) / (3 * count), 6),
            naive_mae=round(naive / count, 6),
            coverage=round(covered / count, 6),
            skill=round(1.0 - abs_e / naive, 6) if naive > 0 else 0.0,
        )
    return out


def model_json(model: bytes | None, committed: CommittedModel | None) -> dict[str, Any]:
    """Which model made an order: ``local`` (none named), ``community`` (a committed model and
    its commitment) or ``unknown`` (a hash this chain did not commit: the ledger refuses such an
    order, so only a forged record shows it)."""
    if model is None:
        return {"kind": "local", "text": "local model (the household's own forecaster)"}
    if committed is None:
        return {"kind": "unknown", "hash": model.hex()}
    return {
        "kind": "community",
        "hash": model.hex(),
        "round": committed.round,
        "previous": committed.previous.hex(),
        "contributors": committed.contributors,
        "validation": _validation_json(committed.validation),
        "validation_of": "the previous model's held-back error, summed over the contributors "
        "(units of each household's mean load)",
        "features": committed.features,
        "aggregator": committed.aggregator,
        "height": committed.height,
    }


def _committed(tx: SignedModel, height: int) -> CommittedModel:
    return CommittedModel(
        tx.round, tx.previous, tx.contributors, tx.validation, tx.features, tx.aggregator, height
    )


def _order_json(so: OpenOrder) -> dict[str, Any]:
    o = so.order
    return {
        "order_id": o.order_id,
        # the transaction that placed it: its own gn.tx.order, or the gn.tx.bundle it came in
        "tx_id": so.id.hex(),
        "placed_by": "bundle" if isinstance(so, BundledOrder) else "order",
        "household": o.household,
        "side": o.side.value,
        "slot": o.slot,
        "nonce": o.nonce,
        "steps": [
            {"price_micro_per_kwh": s.price_micro_per_kwh, "energy_wh": s.energy_wh}
            for s in o.steps
        ],
    }


def curves(book: Iterable[OpenOrder]) -> dict[str, list[dict[str, Any]]]:
    """Supply (sell steps, ascending price) and demand (buy steps, descending price), each step
    with the cumulative Wh offered up to it (ties: by household, as listed)."""
    sells: list[tuple[int, int, str, str]] = []
    buys: list[tuple[int, int, str, str]] = []
    for so in book:
        for s in so.order.steps:
            row = (s.price_micro_per_kwh, s.energy_wh, so.household, so.order.order_id)
            (sells if so.order.side.value == "sell" else buys).append(row)
    sells.sort(key=lambda r: (r[0], r[2]))
    buys.sort(key=lambda r: (-r[0], r[2]))

    def cumulative(rows: list[tuple[int, int, str, str]]) -> list[dict[str, Any]]:
        total, out = 0, []
        for price, wh, household, oid in rows:
            total += wh
            out.append(
                {
                    "price_micro_per_kwh": price,
                    "energy_wh": wh,
                    "cumulative_wh": total,
                    "household": household,
                    "order_id": oid,
                }
            )
        return out

    return {"supply": cumulative(sells), "demand": cumulative(buys)}


def _settled_json(s: SlotSettled, height: int, time_ms: int) -> dict[str, Any]:
    return {
        "height": height,
        "time_ms": time_ms,
        "lines": [
            {
                "household": b.household,
                "reading_wh": s.readings.get(b.household),
                "reading_missing_settled_as_0_wh": b.household not in s.readings,
                **{f: getattr(b, f) for f in BILL_FIELDS},
            }
            for b in s.settlement.bills
        ],
        "transfers": [
            {
                "payer": t.payer,
                "payee": t.payee,
                "amount_micro": t.amount_micro,
                "kind": t.kind.value,
            }
            for t in s.settlement.transfers
        ],
    }


def explain_slot(slot: int, facts: Iterable[BlockFacts]) -> dict[str, Any]:
    """Read ``facts`` (a chain's, in order) until ``slot`` is settled (or the chain ends)."""
    cleared: tuple[SlotCleared, int, int] | None = None
    settled: dict[str, Any] | None = None
    committed = 0
    for f in facts:
        committed += sum(1 for o in f.orders if o.order.slot == slot)
        for c in f.cleared:
            if c.slot == slot:
                cleared = (c, f.height, f.time_ms)
        for s in f.settled:
            if s.slot == slot:
                settled = _settled_json(s, f.height, f.time_ms)
        if settled is not None:
            break
    out: dict[str, Any] = {"slot": slot, "orders_committed": committed}
    if cleared is None:
        out["cleared"] = None
    else:
        c, height, time_ms = cleared
        book = sorted(c.book.values(), key=lambda so: so.household)
        out["cleared"] = {
            "height": height,
            "time_ms": time_ms,
            "book": [_order_json(so) for so in book],
            **curves(book),
            "clearing_price_micro_per_kwh": c.clearing_price_micro_per_kwh,
            "volume_wh": c.volume_wh,
            "trades": [trade_row(t) for t in c.trades],
        }
    out["settled"] = settled
    return out


def explain_order(
    order_id: str, facts: Iterable[BlockFacts], *, local: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read ``facts`` until the order's slot is settled (or the chain ends); ``local``: the
    household node's record of the order (forecast, policy), when known."""
    models: dict[bytes, CommittedModel] = {}
    versions: list[dict[str, Any]] = []
    slot: int | None = None
    household = ""
    in_book: OpenOrder | None = None
    trades: list[dict[str, Any]] = []
    line: dict[str, Any] | None = None
    cleared_at: dict[str, Any] | None = None
    for f in facts:
        for tx in f.block.txs:
            if isinstance(tx, SignedModel):
                models[tx.model] = _committed(tx, f.height)
        for o in f.orders:
            if o.order.order_id == order_id:
                versions.append(
                    {
                        "height": f.height,
                        "time_ms": f.time_ms,
                        **_order_json(o),
                        "model": model_json(o.model, models.get(o.model) if o.model else None),
                    }
                )
                slot, household = o.order.slot, o.household
        for c in f.cleared:
            if slot is not None and c.slot == slot:
                mine = c.book.get(household)
                in_book = mine if mine is not None and mine.order.order_id == order_id else None
                trades = [trade_row(t) for t in c.trades if order_id in (t.buy_order, t.sell_order)]
                cleared_at = {
                    "height": f.height,
                    "clearing_price_micro_per_kwh": c.clearing_price_micro_per_kwh,
                    "volume_wh": c.volume_wh,
                }
        for s in f.settled:
            if slot is not None and s.slot == slot:
                lines = _settled_json(s, f.height, f.time_ms)["lines"]
                line = next((x for x in lines if x["household"] == household), None)
                line = {"height": f.height, **(line or {"household": household, "traded": False})}
        if line is not None:
            break
    return {
        "order_id": order_id,
        "found": bool(versions),
        "versions": versions,
        "in_book_at_gate_closure": None if in_book is None else _order_json(in_book),
        "slot_cleared": cleared_at,
        "trades": trades,
        "settlement": line,
        "model": versions[-1]["model"] if versions else None,
        "local": local,
        "not_on_ledger": NOT_ON_LEDGER,
    }
