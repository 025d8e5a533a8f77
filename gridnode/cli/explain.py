"""``gridnode explain SOURCE --order ID | --slot S [--json]``: why an order or a slot went as it did,
from the ledger alone (SOURCE: a data directory or an export file; the chain is verified as read).

For a slot: the book at gate closure as supply and demand curves, the clearing point, every trade
and every settlement line. For an order: each committed version and the transaction that placed
it (its own gn.tx.order, or the gn.tx.bundle it came in), whether it was in the book at gate
closure, its trades and its household's settlement line, and which model produced it: a
committed community model (hash, round, contributors, federated validation error) or "local
model". The forecast quantiles and policy parameters are not on the ledger: they are shown when
SOURCE is the household's own data directory (its provenance.jsonl). docs/audit.md,
docs/federated.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from market.errors import UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="explain an order or a slot from the ledger alone (curves, clearing, trades, bills)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="data directory or export file")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--order", metavar="ID", help="an order id")
    what.add_argument("--slot", type=int, metavar="S", help="a slot number")
    p.add_argument("--genesis", type=Path, help="the community's genesis.toml")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--jobs", type=int, help="signature-checking processes (default: the cores)")
    p.set_defaults(func=_run)


def _facts(args: argparse.Namespace) -> Iterator[Any]:
    import os

    from gridnode.audit import BlockPipeline, open_chain

    genesis = None
    if args.genesis is not None:
        from gridnode.config import load_genesis

        genesis = load_genesis(args.genesis)
    src = open_chain(args.source, genesis=genesis)
    pipeline = BlockPipeline(src, jobs=max(1, args.jobs or os.cpu_count() or 1))
    try:
        for _batch, facts, _position in pipeline.batches():
            yield from facts
    finally:
        pipeline.close()
        src.close()


#: the transaction that placed an order version (``placed_by`` of the JSON), as printed
_PLACED_BY = {"order": "gn.tx.order", "bundle": "gn.tx.bundle"}


def _wh(x: int) -> str:
    return f"{x:,} Wh"


def _slot_text(doc: dict[str, Any]) -> list[str]:
    lines = [f"slot {doc['slot']}: {doc['orders_committed']} orders committed for it"]
    c = doc["cleared"]
    if c is None:
        return [*lines, "not cleared on this chain (no order held at its gate closure, or later)"]
    price = c["clearing_price_micro_per_kwh"]
    lines.append(
        f"cleared at height {c['height']}: {len(c['book'])} orders in the book at gate closure; "
        + (
            f"clearing price {price:,} µ¤/kWh, volume {_wh(c['volume_wh'])}"
            if price is not None
            else "no crossing (nothing traded)"
        )
    )
    for name in ("supply", "demand"):
        lines.append(f"  {name} curve (price µ¤/kWh: step Wh → cumulative Wh, household):")
        for s in c[name]:
            lines.append(
                f"    {s['price_micro_per_kwh']:>9,}: {s['energy_wh']:>7,} → "
                f"{s['cumulative_wh']:>9,}  {s['household'][:12]}"
            )
    lines.append(f"  {len(c['trades'])} trades:")
    for t in c["trades"]:
        lines.append(
            f"    {t['seller'][:12]} → {t['buyer'][:12]}: {_wh(t['energy_wh'])} at "
            f"{t['price_micro_per_kwh']:,} µ¤/kWh = {t['amount_micro']:,} µ¤"
        )
    s = doc["settled"]
    if s is None:
        lines.append("not settled yet on this chain")
        return lines
    lines.append(f"settled at height {s['height']}: {len(s['lines'])} settlement lines")
    for b in s["lines"]:
        read = (
            "no reading: 0 Wh"
            if b["reading_missing_settled_as_0_wh"]
            else f"read {b['reading_wh']:+,} Wh"
        )
        lines.append(
            f"  {b['household'][:12]}: {read}; bought {b['bought_p2p_wh']:,} sold "
            f"{b['sold_p2p_wh']:,} Wh P2P, grid +{b['grid_import_wh']:,}/-{b['grid_export_wh']:,} Wh; "
            f"bill {b['bill_micro']:,} µ¤ (grid only {b['grid_only_bill_micro']:,})"
        )
    return lines


def _order_text(doc: dict[str, Any]) -> list[str]:
    if not doc["found"]:
        return [f"order {doc['order_id']}: not on this chain"]
    lines = [f"order {doc['order_id']}: {len(doc['versions'])} committed version(s)"]
    for v in doc["versions"]:
        steps = ", ".join(
            f"{s['energy_wh']:,} Wh at {s['price_micro_per_kwh']:,}" for s in v["steps"]
        )
        placed_by = _PLACED_BY.get(v["placed_by"], v["placed_by"])
        lines.append(
            f"  height {v['height']}: {v['side']} for slot {v['slot']}, nonce {v['nonce']}: {steps} "
            f"(household {v['household'][:12]}, placed by {placed_by} {v['tx_id'][:16]})"
        )
    book = doc["in_book_at_gate_closure"]
    c = doc["slot_cleared"]
    if c is None:
        lines.append("its slot has not cleared on this chain")
    else:
        lines.append(
            f"slot cleared at height {c['height']} at "
            f"{c['clearing_price_micro_per_kwh'] if c['clearing_price_micro_per_kwh'] is not None else 'no'} "
            f"µ¤/kWh; this order was "
            + ("in the book (nonce " + str(book["nonce"]) + ")" if book else "NOT in the book "
               "(replaced by a newer order or cancelled)")
        )  # fmt: skip
    for t in doc["trades"]:
        lines.append(
            f"  traded {_wh(t['energy_wh'])} at {t['price_micro_per_kwh']:,} µ¤/kWh "
            f"({t['seller'][:12]} → {t['buyer'][:12]}) = {t['amount_micro']:,} µ¤"
        )
    s = doc["settlement"]
    if s is not None and "bill_micro" in s:
        lines.append(
            f"settled at height {s['height']}: bill {s['bill_micro']:,} µ¤ for the slot "
            f"(grid only {s['grid_only_bill_micro']:,})"
        )
    lines.extend(_model_text(doc["model"]))
    local = doc.get("local")
    if local is None:
        lines.append(
            "not on the ledger: " + "; ".join(f"{k}: {v}" for k, v in doc["not_on_ledger"].items())
        )
    else:
        f, p = local.get("forecast_wh") or {}, local.get("policy") or {}
        lines.append(
            f"this node's record: forecaster {local.get('forecaster')}, slot forecast "
            f"P10 {f.get('p10')} / P50 {f.get('p50')} / P90 {f.get('p90')} Wh; policy "
            f"{p.get('name')}, expected clearing price {p.get('expected_price_micro_per_kwh')} µ¤/kWh"
        )
    return lines


def _model_text(m: dict[str, Any] | None) -> list[str]:
    if m is None:
        return []
    if m["kind"] == "local":
        return ["model: local model (no community model named in the order)"]
    if m["kind"] == "unknown":
        return [f"model: {m['hash'][:16]}… was never committed on this chain"]
    v = m["validation"]
    err = (
        f"federated validation MAE {v['mae']:.3f} (skill {v['skill']:+.1%} vs seasonal naive) on "
        f"{v['samples']:,} held-back samples"
        if "mae" in v
        else "no federated validation yet (the first round)"
    )
    return [
        f"model: community model {m['hash'][:16]}…, round {m['round']}, "
        f"{m['contributors']} contributors, committed at height {m['height']} "
        f"(features {m['features']}); {err}"
    ]


def _local(source: Path, order_id: str) -> dict[str, Any] | None:
    """The household node's record of the order when SOURCE is its directory (or data dir)."""
    from gridnode.household_driver import read_provenance

    for d in (source, source / "data"):
        if d.is_dir():
            found = read_provenance(d, order_id)
            if found is not None:
                return found
    return None


def _run(args: argparse.Namespace) -> int:
    from gridnode.chain import ChainError
    from gridnode.explain import explain_order, explain_slot

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        if args.slot is not None:
            doc = explain_slot(args.slot, _facts(args))
            text = _slot_text(doc)
        else:
            doc = explain_order(args.order, _facts(args), local=_local(args.source, args.order))
            text = _order_text(doc)
    except ChainError as exc:
        print(f"explain: the chain does not verify: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(text))
    return 0
