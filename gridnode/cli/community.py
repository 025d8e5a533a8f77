"""``gridnode community create``: the genesis file a community operator hands to every member."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gridnode.config import load_identity, write_genesis
from gridnode.core.crypto import is_public_hex
from gridnode.core.ledger import MAX_CLOCK_SPEEDUP, Genesis
from market.clearing import Rule
from market.errors import UsageError
from market.settlement import Netting

#: the drift bound a validator allows a proposal's time, in wall milliseconds: the genesis holds it in
#: community time, so ``community create`` scales it by the clock speed-up (at 60x a fixed 5,000
#: community-ms bound is 83 wall-ms: a restarted validator's proposals went uncommitted for a minute)
_DRIFT_WALL_MS = 5_000


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
        "--genesis-time-ms",
        type=int,
        help="chain start, unix ms (default: 0 = any time; now when --clock-speedup > 1)",
    )
    c.add_argument(
        "--clock-speedup",
        type=int,
        default=1,
        metavar="N",
        help=(
            "run the community clock N times faster than wall time from the genesis time (demos, "
            f"trials; 1..{MAX_CLOCK_SPEEDUP}, default %(default)s). Every node takes it from the "
            "genesis"
        ),
    )
    c.add_argument(
        "--max-drift-ms",
        type=int,
        help=(
            "how far a proposed block's time may be from a validator's clock, in community time "
            f"(default: {_DRIFT_WALL_MS} ms of wall time, i.e. {_DRIFT_WALL_MS} x the clock speed-up)"
        ),
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
    if args.out.is_dir():
        raise UsageError(f"{args.out}: is a directory; --out names the genesis file to write")
    if args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; use --force to overwrite")
    if not args.out.parent.is_dir():
        raise UsageError(f"{args.out.parent}: no such directory for --out")
    speedup = args.clock_speedup
    if not 1 <= speedup <= MAX_CLOCK_SPEEDUP:
        raise UsageError(f"--clock-speedup must be 1..{MAX_CLOCK_SPEEDUP}, got {speedup}")
    genesis_time_ms = args.genesis_time_ms
    if genesis_time_ms is None:  # a fast clock runs from a real moment: now, to the second
        genesis_time_ms = 0 if speedup == 1 else time.time_ns() // 1_000_000_000 * 1000
    max_drift_ms = _DRIFT_WALL_MS * speedup if args.max_drift_ms is None else args.max_drift_ms
    members = tuple(dict.fromkeys(_key(m) for m in args.member))
    validators = tuple(dict.fromkeys(_key(v) for v in args.validator))
    if not members:
        raise UsageError("give at least one --member")
    if not validators:
        raise UsageError("give at least one --validator (4 tolerate one faulty)")
    genesis = Genesis(
        community_id=args.community_id,
        genesis_time_ms=genesis_time_ms,
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
        max_drift_ms=max_drift_ms,
        clock_speedup=speedup,
    )
    write_genesis(args.out, genesis)
    n = len(validators)
    print(
        f"wrote {args.out}: community {genesis.community_id!r}, {len(members)} members, {n} validators "
        f"(tolerates {genesis.max_faulty} faulty), genesis hash {genesis.hash.hex()[:16]}"
    )
    if speedup > 1:
        print(
            f"community clock: {speedup}x from {genesis_time_ms} ms (a {genesis.slot_seconds} s slot "
            f"takes {genesis.slot_seconds / speedup:g} s), drift bound {max_drift_ms} ms"
        )
    if n % 3 != 1:
        print(
            f"note: {n} validators tolerate as many faults as {3 * genesis.max_faulty + 1}; n = 3f+1 is the efficient size"
        )
    return 0
