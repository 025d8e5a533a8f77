"""``gridnode clear FILE``: clear one slot's JSON order book and print the result as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from market.clearing import clear
from market.errors import DataReason, InvalidInput
from market.jsonbook import parse_book, result_to_json
from market.orders import OrderLimits
from market.units import MAX_PRICE_MICRO_PER_KWH


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "clear",
        help="clear one slot's order book (JSON) and print the result (JSON)",
        description=(
            "Clear one delivery slot's order book with the market engine every node runs, and print "
            "the clearing price, volume and trades as JSON on stdout. Format: docs/clear.md. "
            "Bad input exits 2 with a message naming the order and field; stdout stays empty."
        ),
    )
    p.add_argument("file", metavar="FILE", help="order book JSON file, or - for standard input")
    p.add_argument(
        "--price-cap",
        type=int,
        default=MAX_PRICE_MICRO_PER_KWH,
        metavar="MICRO_PER_KWH",
        help="reject steps priced above this (µ-units per kWh; default: the hard maximum %(default)s)",
    )
    p.add_argument(
        "--max-steps", type=int, default=16, help="max steps per order (default %(default)s)"
    )
    p.add_argument(
        "--indent", type=int, default=2, help="JSON indent, 0 for one line (default %(default)s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            reason=DataReason.UNREADABLE, subject=source, found=exc.strerror or str(exc)
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(reason=DataReason.NOT_UTF8, subject=source, found=str(exc)) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            reason=DataReason.MALFORMED_JSON,
            subject=source,
            found=f"{exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from exc
    limits = OrderLimits(price_cap_micro_per_kwh=args.price_cap, max_steps=args.max_steps)
    slot, rule, orders = parse_book(doc, limits=limits)
    result = clear(orders, slot=slot, rule=rule)
    json.dump(result_to_json(result), sys.stdout, indent=args.indent or None)
    sys.stdout.write("\n")
    return 0
