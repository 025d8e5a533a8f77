"""Client commands that talk to the local daemon's API: ``gridnode status|peers|trades|balance|order``.

Each reads ``DIR/gridnode.toml`` for the API address (and ``DIR/api.token`` for writes), makes one
or two HTTP requests with the standard library's ``http.client``, and prints a human-readable table,
or the API's JSON with ``--json``. A daemon that does not answer, or an API error, is one line on
stderr and exit 2 (through :func:`gridnode.cli.main`).

These commands must start fast (``docs/api.md``): this module imports only the standard library
and small modules of ours (no numpy, pandas, libp2p, aiohttp, not even ``urllib.request``);
``tests/api/test_client_imports.py`` checks the import graph.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gridnode.cli import add_dir_option
from market.errors import UsageError

TIMEOUT_S = 10.0


def _common(p: argparse.ArgumentParser) -> None:
    add_dir_option(p)
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def register(sub: Any) -> None:
    """Add ``status``, ``peers``, ``trades``, ``balance`` and ``order`` to the top-level commands."""
    p = sub.add_parser(
        "status",
        help="the local daemon's status: slot, ledger height, peers, validators",
        description="Show the running daemon's status (GET /api/status; docs/api.md).",
    )
    _common(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser(
        "peers",
        help="the peers the local daemon knows",
        description="List the daemon's peers and their misbehaviour counters (GET /api/peers).",
    )
    _common(p)
    p.set_defaults(func=run_peers)

    p = sub.add_parser(
        "trades",
        help="the last cleared slots: clearing prices and trades",
        description=(
            "Show cleared slots (GET /api/trades): the clearing price, the volume and the trades "
            "awaiting settlement; yours are marked."
        ),
    )
    _common(p)
    p.add_argument("--slot", type=int, help="only this slot")
    p.add_argument("--limit", type=int, default=8, help="how many recent slots (default 8)")
    p.set_defaults(func=run_trades)

    p = sub.add_parser(
        "balance",
        help="this household's balance, bill and savings",
        description="Show this household's balance and totals (GET /api/balance).",
    )
    _common(p)
    p.set_defaults(func=run_balance)

    order = sub.add_parser(
        "order",
        help="place, cancel or list manual orders",
        description="Place, cancel or list this household's orders through the local daemon.",
    )
    osub = order.add_subparsers(dest="order_command", metavar="ACTION", required=True)
    p = osub.add_parser(
        "place",
        help="place an order for one slot",
        description=(
            "Sign and submit an order (POST /api/orders, needs DIR/api.token). A newer order for "
            "the same slot replaces the open one. Prices are µ-units per kWh, energy Wh."
        ),
    )
    _common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--slot", type=int, help="the delivery slot")
    which.add_argument("--next", action="store_true", help="the first slot still open")
    p.add_argument("--side", required=True, choices=("buy", "sell"))
    p.add_argument(
        "--step",
        required=True,
        action="append",
        metavar="PRICE:WH",
        help="a curve step: limit price (µ-units/kWh) and energy (Wh); repeat for more steps",
    )
    p.set_defaults(func=run_place)

    p = osub.add_parser(
        "cancel",
        help="cancel this household's order for a slot",
        description="Cancel the open order for a slot (DELETE /api/orders/SLOT, needs the token).",
    )
    _common(p)
    p.add_argument("--slot", type=int, required=True, help="the delivery slot")
    p.set_defaults(func=run_cancel)

    p = osub.add_parser(
        "list",
        help="list open orders (yours by default)",
        description="List open orders (GET /api/orders): yours, or everyone's with --all.",
    )
    _common(p)
    p.add_argument("--all", action="store_true", help="every household's open orders")
    p.set_defaults(func=run_list)


# ------------------------------------------------------------------------------------------ HTTP


def _target(directory: Path) -> tuple[str, str]:
    from gridnode.config import load_config

    return load_config(directory).api_url, str(directory)


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    body: Any = None,
    auth: bool = False,
) -> Any:
    url, directory = _target(args.dir)
    headers = {"Accept": "application/json"}
    if auth:
        from gridnode.config import load_token

        headers["Authorization"] = f"Bearer {load_token(args.dir)}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    not_running = f"no daemon answering at {url} (is `gridnode run --dir {directory}` running?)"
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except (ConnectionRefusedError, FileNotFoundError, socket.gaierror):
        raise UsageError(not_running) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise UsageError(f"the daemon at {url} did not answer: {exc}") from None
    finally:
        connection.close()
    if response.status >= 400:
        raise UsageError(_describe_error(response.status, response.reason, raw))
    try:
        return json.loads(raw)
    except ValueError:
        raise UsageError(f"{url}{path} did not answer JSON: is that a gridnode daemon?") from None


def _describe_error(status: int, reason: str, raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        field = f" ({error['field']})" if error.get("field") else ""
        return f"the daemon refused ({status} {error['reason']}){field}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"the daemon answered HTTP {status} {reason}"


# ---------------------------------------------------------------------------------------- output


def _dump(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _pairs(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def money(micro: int | None) -> str:
    """µ-units as currency units with 6 decimals, exact (integer arithmetic)."""
    if micro is None:
        return "-"
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def _duration(ms: int) -> str:
    s = max(0, ms) // 1000
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _steps(steps: Sequence[dict[str, int]]) -> str:
    return ", ".join(f"{s['price_micro_per_kwh']}:{s['energy_wh']}" for s in steps)


# -------------------------------------------------------------------------------------- commands


def run_status(args: argparse.Namespace) -> int:
    s = _call(args, "GET", "/api/status")
    if args.json:
        _dump(s)
        return 0
    v = s["validators"]
    misbehaviour = ", ".join(f"{k} {n}" for k, n in s["misbehaviour"].items())
    health = s["health"]
    speed = f" (clock at {s['speedup']:g}x)" if s["speedup"] != 1 else ""
    _pairs(
        [
            ("health", f"{health['level'].upper()}: {health['label']}"),
            *(("", f"- {r}") for r in health["reasons"][1:]),
            ("community", s["community_id"]),
            ("household", f"{s['household']} ({s['role']})"),
            ("peer id", s["peer_id"]),
            ("time", s["now_local"] + speed),
            ("height", s["height"]),
            ("head hash", s["head_hash"]),
            ("state digest", s["state_digest"]),
            ("current slot", f"{s['current_slot']} ({s['current_delivery']})"),
            (
                "first open slot",
                f"{s['first_open_slot']} ({s['first_open_delivery']}; gate closes in "
                f"{_duration(int(s['wall_s_to_gate_closure'] * 1000))})",
            ),
            ("last cleared", s["last_cleared_slot"]),
            ("peers", f"{s['peers_count']} connected"),
            (
                "validators",
                f"{v['connected']}/{v['total']} reachable"
                + (" (quorum)" if v["quorum"] else " (NO QUORUM)"),
            ),
            ("mempool", f"{s['mempool_size']} pending"),
            (
                "misbehaviour",
                f"{s['misbehaviour_total']}" + (f" ({misbehaviour})" if misbehaviour else ""),
            ),
        ]
    )
    return 0


def run_peers(args: argparse.Namespace) -> int:
    doc = _call(args, "GET", "/api/peers")
    if args.json:
        _dump(doc)
        return 0
    if not doc["peers"]:
        print("no peers")
        return 0
    _table(
        ["PEER ID", "HOUSEHOLD", "CONNECTED", "ROLE", "MISBEHAVIOUR", "SCORE"],
        [
            [
                p["peer_id"],
                p["household"][:16] or "-",
                "banned" if p.get("banned") else "yes" if p["connected"] else "no",
                "validator" if p["validator"] else "member" if p["member"] else "-",
                ", ".join(f"{k} {v}" for k, v in sorted(p["misbehaviour"].items())) or "0",
                f"{p.get('score', 0):.0f}",
            ]
            for p in doc["peers"]
        ],
    )
    return 0


def run_trades(args: argparse.Namespace) -> int:
    query = f"?slot={args.slot}" if args.slot is not None else f"?limit={args.limit}"
    if args.slot is not None and args.slot < 0:
        raise UsageError(f"--slot must be >= 0, got {args.slot}")
    doc = _call(args, "GET", "/api/trades" + query)
    if args.json:
        _dump(doc)
        return 0
    if not doc["slots"]:
        print(f"no slot cleared yet (last cleared slot {doc['last_cleared_slot']})")
        return 0
    rows = []
    for s in doc["slots"]:
        mine = [t for t in s["trades"] if t["mine"]]
        rows.append(
            [
                s["slot"],
                s["delivery"],
                "-"
                if s["clearing_price_micro_per_kwh"] is None
                else s["clearing_price_micro_per_kwh"],
                s["volume_wh"],
                len(s["trades"]),
                "; ".join(
                    f"{t['my_side']} {t['energy_wh']} Wh for {t['amount_micro']}" for t in mine
                )
                or "-",
            ]
        )
    _table(["SLOT", "DELIVERY", "PRICE µ/kWh", "VOLUME Wh", "TRADES", "MINE (µ)"], rows)
    return 0


def run_balance(args: argparse.Namespace) -> int:
    b = _call(args, "GET", "/api/balance")
    if args.json:
        _dump(b)
        return 0
    _pairs(
        [
            ("household", b["household"]),
            ("balance", f"{money(b['balance_micro'])} ({b['balance_micro']} µ)"),
            ("bill", f"{money(b['bill_micro'])} ({b['bill_micro']} µ)"),
            (
                "grid-only bill",
                f"{money(b['grid_only_bill_micro'])} ({b['grid_only_bill_micro']} µ)",
            ),
            ("savings", f"{money(b['savings_micro'])} ({b['savings_micro']} µ)"),
            ("bought / sold P2P", f"{b['bought_p2p_wh']} Wh / {b['sold_p2p_wh']} Wh"),
            ("grid import / export", f"{b['grid_import_wh']} Wh / {b['grid_export_wh']} Wh"),
            ("slots settled", b["slots_settled"]),
        ]
    )
    return 0


def _parse_step(text: str) -> dict[str, int]:
    price, sep, energy = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"price_micro_per_kwh": int(price), "energy_wh": int(energy)}
    except ValueError:
        raise UsageError(
            f"--step must be PRICE:WH with integers (µ-units per kWh : Wh), got {text!r}"
        ) from None


def run_place(args: argparse.Namespace) -> int:
    steps = [_parse_step(s) for s in args.step]
    if args.next:
        slot = _call(args, "GET", "/api/status")["first_open_slot"]
    else:
        slot = args.slot
        if slot < 0:
            raise UsageError(f"--slot must be >= 0, got {slot}")
    body = {"slot": slot, "side": args.side, "steps": steps}
    doc = _call(args, "POST", "/api/orders", body=body, auth=True)
    if args.json:
        _dump(doc)
        return 0
    print(f"order {doc['order_id']} for slot {slot} submitted (tx {doc['tx_id'][:16]}…)")
    if doc.get("delivery"):
        print(f"delivery {doc['delivery']}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    if args.slot < 0:
        raise UsageError(f"--slot must be >= 0, got {args.slot}")
    doc = _call(args, "DELETE", f"/api/orders/{args.slot}", auth=True)
    if args.json:
        _dump(doc)
        return 0
    print(f"cancel for slot {args.slot} submitted (tx {doc['tx_id'][:16]}…)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    doc = _call(args, "GET", "/api/orders" + ("" if args.all else "?mine=1"))
    if args.json:
        _dump(doc)
        return 0
    if not doc["orders"]:
        print("no open orders")
        return 0
    headers = ["SLOT", "DELIVERY", "SIDE", "STEPS price:Wh", "TOTAL Wh", "ORDER ID"]
    if args.all:
        headers.insert(0, "HOUSEHOLD")
    rows = []
    for o in doc["orders"]:
        row: list[object] = [
            o["slot"],
            o["delivery"],
            o["side"],
            _steps(o["steps"]),
            o["energy_wh"],
            o["order_id"] + ("" if o["open"] else " (closed)"),
        ]
        if args.all:
            row.insert(0, o["household"][:16] + ("*" if o["mine"] else ""))
        rows.append(row)
    _table(headers, rows)
    return 0
