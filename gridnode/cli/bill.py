"""``gridnode verify-bill PROOF --genesis FILE`` and ``gridnode chain prove``: bills a household
checks without the chain.

A proof (``/api/proof`` of a daemon, or ``gridnode chain prove`` from a data directory or an export)
carries a block header, the commit certificate for it and Merkle paths from the state root to the
household's account and slots. ``verify-bill`` checks it against the genesis alone: the
validators' signatures, then every path (docs/merkle.md). Exit 0 and the bill when it verifies;
exit 1 naming the step that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from market.errors import InvalidInput, UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify-bill",
        help="verify a bill proof against the genesis alone (commit signatures + Merkle paths)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "proof", type=Path, help="the proof file (binary, or the JSON /api/proof serves)"
    )
    p.add_argument("--genesis", type=Path, required=True, help="the community's genesis.toml")
    p.add_argument("--json", action="store_true", help="print the verified bill as JSON")
    p.set_defaults(func=_verify)


def read_proof(path: Path) -> bytes:
    """A proof file: the raw bytes, or the JSON of ``/api/proof`` (its ``proof_hex``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if data[:1] == b"{":
        try:
            return bytes.fromhex(json.loads(data)["proof_hex"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: a JSON proof needs 'proof_hex' ({exc})") from None
    return data


def bill_json(bill: Any) -> dict[str, Any]:
    return {
        "household": bill.household,
        "height": bill.height,
        "time_ms": bill.time_ms,
        "block_id": bill.block_id.hex(),
        "state_root": bill.state_root.hex(),
        "signers": list(bill.signers),
        "nonce": bill.nonce,
        "balance_micro": bill.balance_micro,
        "totals": bill.totals,
        "slots": [
            {
                "slot": s.slot,
                "phase": s.phase,
                "clearing_price_micro_per_kwh": s.clearing_price_micro_per_kwh,
                "order_tx_hex": None if s.order is None else s.order.hex(),
                "trades": [
                    {
                        "role": "bought" if t.bought else "sold",
                        "counterparty": t.counterparty,
                        "energy_wh": t.energy_wh,
                        "price_micro_per_kwh": t.price_micro_per_kwh,
                        "amount_micro": t.amount_micro,
                    }
                    for t in s.trades
                ],
                "reading_wh": s.reading_wh,
                "bill": s.bill,
            }
            for s in bill.slots
        ],
    }


def _verify(args: argparse.Namespace) -> int:
    from gridnode.config import load_genesis
    from gridnode.core.ledger.proofs import verify_bill_proof

    genesis = load_genesis(args.genesis)
    data = read_proof(args.proof)
    t0 = time.perf_counter()
    try:
        bill = verify_bill_proof(genesis, data)
    except InvalidInput as exc:
        print(f"verify-bill: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps(bill_json(bill), indent=2))
        return 0
    t = bill.totals
    print(
        f"VERIFIED ({len(data):,} bytes in {ms:.1f} ms): household {bill.household[:16]}… at "
        f"height {bill.height} (block {bill.block_id.hex()[:16]}…), signed by validators "
        f"{', '.join(map(str, bill.signers))} of {len(genesis.validators)}"
    )
    print(
        f"balance {bill.balance_micro / 1e6:,.6f} ¤; over {t['slots_settled']} settled slots: "
        f"bill {t['bill_micro'] / 1e6:,.6f} ¤ (grid only {t['grid_only_bill_micro'] / 1e6:,.6f} ¤), "
        f"bought {t['bought_p2p_wh']:,} Wh, sold {t['sold_p2p_wh']:,} Wh P2P"
    )
    for s in bill.slots:
        line = f"slot {s.slot} ({s.phase}"
        if s.clearing_price_micro_per_kwh is not None:
            line += f", cleared at {s.clearing_price_micro_per_kwh:,} µ¤/kWh"
        line += "): "
        parts = []
        if s.order is not None:
            parts.append("open order")
        for tr in s.trades:
            side = "bought from" if tr.bought else "sold to"
            parts.append(
                f"{side} {tr.counterparty[:12]} {tr.energy_wh:,} Wh at "
                f"{tr.price_micro_per_kwh:,} µ¤/kWh = {tr.amount_micro:,} µ¤"
            )
        if s.reading_wh is not None:
            parts.append(f"meter read {s.reading_wh:+,} Wh")
        if s.bill is not None:
            parts.append(
                f"bill {s.bill['bill_micro']:,} µ¤ (grid only {s.bill['grid_only_bill_micro']:,})"
            )
        print(line + ("; ".join(parts) if parts else "nothing"))
    return 0
