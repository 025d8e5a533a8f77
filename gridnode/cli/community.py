"""``gridnode community create``: the genesis file a community operator hands to every member."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gridnode.config import load_identity, write_genesis
from gridnode.core.crypto import is_public_hex
from gridnode.core.ledger import Genesis
from market.clearing import Rule
from market.errors import UsageError
from market.settlement import Netting


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "community",
        help="create a community (its genesis file)",
        description="Community operator tools.",
    )
    inner = p.add_subparsers(dest="community_command", metavar="ACTION", required=True)
    c: argparse.ArgumentParser = inner.add_parser(
        "create",
        help="write a genesis file for a new community",
        description=(
            "Write the genesis file that defines a community: its id, slot length, gate lead, prices, "
            "members and validators (n = 3f+1 tolerates f faulty). Members and validators are given as "
            "hex public keys or as household data directories made by `gridnode init`."
        ),
    )
    c.add_argument(
        "--id", required=True, dest="community_id", help="community id (ASCII, no spaces or '/')"
    )
    c.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="KEY|DIR",
        help="a member household (repeatable)",
    )
    c.add_argument(
        "--validator",
        action="append",
        default=[],
        metavar="KEY|DIR",
        help="a validator (repeatable)",
    )
    c.add_argument("--out", required=True, type=Path, help="where to write the genesis TOML")
    c.add_argument(
        "--genesis-time-ms", type=int, default=0, help="chain start, unix ms (default 0: any time)"
    )
    c.add_argument(
        "--slot-seconds", type=int, default=900, help="delivery slot length (default %(default)s)"
    )
    c.add_argument(
        "--gate-lead-seconds",
        type=int,
        default=300,
        help="gate closure before delivery (default %(default)s)",
    )
    c.add_argument(
        "--retail",
        type=int,
        default=300_000,
        help="grid retail price, µ-units/kWh (default %(default)s)",
    )
    c.add_argument(
        "--feed-in",
        type=int,
        default=80_000,
        help="grid feed-in price, µ-units/kWh (default %(default)s)",
    )
    c.add_argument(
        "--grid-fee",
        type=int,
        default=0,
        help="fee per kWh traded P2P, µ-units/kWh (default %(default)s)",
    )
    c.add_argument("--rule", choices=[r.value for r in Rule], default=Rule.PAY_AS_CLEAR.value)
    c.add_argument("--netting", choices=[n.value for n in Netting], default=Netting.NONE.value)
    c.add_argument(
        "--reading-deadline-seconds",
        type=int,
        default=900,
        help="meter readings accepted this long after a slot",
    )
    c.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    c.set_defaults(func=run_create)


def _key(text: str) -> str:
    if is_public_hex(text):
        return text
    path = Path(text)
    if path.is_dir():
        return load_identity(path).public_hex
    raise UsageError(f"{text!r} is neither a hex public key nor a household directory")


def run_create(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; use --force to overwrite")
    members = tuple(dict.fromkeys(_key(m) for m in args.member))
    validators = tuple(dict.fromkeys(_key(v) for v in args.validator))
    if not members:
        raise UsageError("give at least one --member")
    if not validators:
        raise UsageError("give at least one --validator (4 tolerate one faulty)")
    genesis = Genesis(
        community_id=args.community_id,
        genesis_time_ms=args.genesis_time_ms,
        members=members,
        validators=validators,
        slot_seconds=args.slot_seconds,
        gate_lead_seconds=args.gate_lead_seconds,
        retail_micro_per_kwh=args.retail,
        feed_in_micro_per_kwh=args.feed_in,
        grid_fee_micro_per_kwh=args.grid_fee,
        rule=Rule(args.rule),
        netting=Netting(args.netting),
        reading_deadline_seconds=args.reading_deadline_seconds,
    )
    write_genesis(args.out, genesis)
    n = len(validators)
    print(
        f"wrote {args.out}: community {genesis.community_id!r}, {len(members)} members, {n} validators "
        f"(tolerates {genesis.max_faulty} faulty), genesis hash {genesis.hash.hex()[:16]}"
    )
    if n % 3 != 1:
        print(
            f"note: {n} validators tolerate as many faults as {3 * genesis.max_faulty + 1}; n = 3f+1 is the efficient size"
        )
    return 0
