"""The daemon's local HTTP API and status page (aiohttp, bound to 127.0.0.1 by default).

Rules of this module:

* Reads come from the node's latest immutable :class:`~gridnode.status.Snapshot` (``handle.snapshot()``,
  never blocking); writes (place / cancel a manual order) go through the :class:`NodeHandle`, which
  queues them to the node core. The API never touches the node's state directly.
* Every ``GET /api/*`` is read-only and needs no token. ``POST /api/orders`` and
  ``DELETE /api/orders/{slot}`` need ``Authorization: Bearer <token>`` (the token in ``DIR/api.token``):
  no or malformed header → 401, wrong token → 403; the comparison is constant-time.
* Every error is JSON: ``{"error": {"reason": str, "field": str, "message": str}}`` with a 4xx status
  (400 malformed request, 401/403 auth, 404 unknown path or thing, 405 method, 409 refused by the
  node, 413 body too large, 415 not JSON, 422 breaks a market rule, 503 node cannot submit now).
  ``reason`` is always a code from the closed set of :mod:`market.errors` (an
  :class:`~market.errors.ApiReason`, or the order/ledger rule that refused the request).
  Anything unexpected becomes a JSON 500 ``internal`` error; the traceback goes to the log only.
* A client's mistakes are not our errors: a malformed HTTP request (aiohttp answers it with a
  plain 400) and a client that goes away mid-request are logged as one line at debug/info level,
  never as an ERROR with a traceback. JSON integers are at most 20 digits (``number_too_long``).
* The ``Host`` header must be ``name`` or ``name:port`` with a decimal port 1-65535 (``[v6]`` and
  ``[v6]:port`` for IPv6) and ``name`` one of the allowed hosts; anything else (``localhost:80@evil``)
  is refused ``host_not_allowed``.
* Energy and money are integers with the unit in the key: ``*_wh``, ``*_micro``,
  ``*_micro_per_kwh``; times are unix ``*_ms`` (or ``*_s``); hashes and keys are lowercase hex.
* Orders are checked with :func:`market.orders.validate_order` (price cap = the genesis retail
  price, at most ``max_steps`` steps, slot still open at the snapshot's ``now_ms``) before the handle
  sees them; the ledger re-checks everything anyway.
* The status page (``/``) is static HTML + JS + CSS shipped in ``gridnode/web``; it makes no
  request outside this origin (a Content-Security-Policy header enforces it) and polls the JSON API.

Documented for users in ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gridnode.core.ledger import LedgerState, SignedOrder
from gridnode.status import NodeHandle, Snapshot, SubmitResult
from market.errors import (
    ApiReason,
    DataReason,
    InvalidInput,
    LedgerReason,
    NetworkError,
    OrderReason,
    Reason,
    UsageError,
    WireReason,
    reason_of,
)
from market.orders import REJECTION_REASONS, Order, Side, Step, validate_order

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HANDLE_KEY",
    "LOOPBACK_HOSTS",
    "MAX_BODY_BYTES",
    "RunningApi",
    "make_app",
    "start_api",
]

log = logging.getLogger("gridnode.api")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8470
#: The largest request body accepted (an order with 16 steps is ~1 KiB of JSON).
MAX_BODY_BYTES: Final = 16 * 1024
#: The longest JSON integer accepted, in digits (every integer field fits in 63 bits: 19 digits).
MAX_INT_DIGITS: Final = 20
MAX_BLOCKS: Final = 100
DEFAULT_BLOCKS: Final = 20
DEFAULT_TRADE_SLOTS: Final = 8
MAX_TRADE_SLOTS: Final = 96

HANDLE_KEY: Final = web.AppKey("gridnode_handle", NodeHandle)
_TOKEN_KEY: Final = web.AppKey("gridnode_token", bytes)
_DIGEST_KEY: Final = web.AppKey("gridnode_digest_cache", dict)
_PAGES_KEY: Final = web.AppKey("gridnode_pages", dict)
_IDS_KEY: Final[web.AppKey[itertools.count[int]]] = web.AppKey("gridnode_order_ids")

#: Host names accepted by default: a page on another site that resolves its own name to 127.0.0.1
#: (DNS rebinding) sends its own name as Host and is refused.
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
_HOSTS_KEY: Final = web.AppKey("gridnode_allowed_hosts", frozenset)

_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC: Final = {  # URL path -> (file in gridnode/web, content type)
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}


# ------------------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """A request we refuse: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, reason: Reason, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field
        self.message = message


def _error_response(status: int, reason: Reason, message: str, field: str = "") -> web.Response:
    body = {"error": {"reason": reason.value, "field": field, "message": message}}
    return web.json_response(body, status=status)


_HTTP_REASONS: Final[dict[int, Reason]] = {
    400: ApiReason.BAD_REQUEST,
    401: ApiReason.UNAUTHORIZED,
    403: ApiReason.FORBIDDEN,
    404: ApiReason.NOT_FOUND,
    405: ApiReason.METHOD_NOT_ALLOWED,
    413: ApiReason.BODY_TOO_LARGE,
    415: ApiReason.UNSUPPORTED_MEDIA_TYPE,
}


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error; unexpected ones are logged, never shown."""
    try:
        _check_host(request)
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.reason, exc.message, exc.field)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="gridnode"'
    except web.HTTPException as exc:  # router 404/405, body too large, ...
        if exc.status < 400:
            raise
        reason = _HTTP_REASONS.get(exc.status, ApiReason.HTTP_ERROR)
        message = {
            404: f"no such endpoint: {request.path} (see docs/api.md)",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body over {MAX_BODY_BYTES} bytes",
        }.get(exc.status, exc.reason)
        response = _error_response(exc.status, reason, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except ConnectionError as exc:  # the client went away mid-request: its business, not a bug
        log.info("client left during %s %s: %s", request.method, request.path, exc)
        response = _error_response(400, ApiReason.BAD_REQUEST, "the connection was lost")
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        response = _error_response(500, ApiReason.INTERNAL, "internal error; see the daemon's log")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def host_name(header: str) -> str | None:
    """The lower-case name in a ``Host`` header of the form ``name[:port]`` or ``[v6][:port]``
    (port: 1-5 decimal digits, 1..65535), or ``None`` when the header has any other form."""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1 :]
    else:
        name, sep, port = header.rpartition(":")
        name, rest = (name, ":" + port) if sep else (header, "")
    if rest:
        port = rest[1:]
        if not (rest[0] == ":" and port.isascii() and port.isdigit() and len(port) <= 5):
            return None
        if not 0 < int(port) <= 65535:
            return None
    if not name or not name.isascii() or not all(c.isalnum() or c in ".-:" for c in name):
        return None
    return name.lower()


def _check_host(request: web.Request) -> None:
    allowed: frozenset[str] = request.app[_HOSTS_KEY]
    if not allowed:
        return
    if host_name(request.host) not in allowed:
        raise ApiError(
            403,
            ApiReason.HOST_NOT_ALLOWED,
            f"Host {request.host[:100]!r} is not served here (allowed: {', '.join(sorted(allowed))})",
        )


# ------------------------------------------------------------------------------------- query args

_TRUE: Final = ("1", "true", "yes")
_FALSE: Final = ("0", "false", "no", "")


def _check_params(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise ApiError(
                400,
                ApiReason.UNKNOWN_PARAMETER,
                f"unknown query parameter {name[:64]!r} (known: {known})",
            )


def _int_param(
    request: web.Request, name: str, default: int | None, *, low: int = 0, high: int | None = None
) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(
            400, ApiReason.BAD_PARAMETER, f"{name} must be an integer >= {low}", field=name
        )
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ApiError(
            400, ApiReason.BAD_PARAMETER, f"{name} must be in {bound}, got {value}", field=name
        )
    return value


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "0").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(400, ApiReason.BAD_PARAMETER, f"{name} must be 0 or 1, got {raw!r}", field=name)


# ----------------------------------------------------------------------------------------- views


def _snapshot(request: web.Request) -> Snapshot:
    return request.app[HANDLE_KEY].snapshot()


def _digest(request: web.Request, ledger: LedgerState) -> str:
    """The state digest, computed once per ledger state (it re-encodes the whole state)."""
    cache: dict[str, Any] = request.app[_DIGEST_KEY]
    if cache.get("state") is not ledger:
        cache["state"] = ledger
        cache["digest"] = ledger.digest().hex()
    digest: str = cache["digest"]
    return digest


def _order_json(so: SignedOrder, me: str, *, open_: bool) -> dict[str, Any]:
    o = so.order
    return {
        "order_id": o.order_id,
        "household": o.household,
        "mine": o.household == me,
        "side": o.side.value,
        "slot": o.slot,
        "nonce": o.nonce,
        "open": open_,
        "energy_wh": o.energy_wh,
        "steps": [
            {"price_micro_per_kwh": s.price_micro_per_kwh, "energy_wh": s.energy_wh}
            for s in o.steps
        ],
    }


async def status(request: web.Request) -> web.Response:
    _check_params(request, ())
    snap = _snapshot(request)
    ledger = snap.ledger
    genesis = ledger.genesis
    clock = genesis.clock
    now_s = snap.now_ms // 1000
    first_open = snap.first_open_slot
    gate_ms = clock.gate_closure(first_open) * 1000
    n = len(genesis.validators)
    me_validator = snap.household in genesis.validators
    connected = {v.public_key for v in snap.validators if v.connected}
    if me_validator:
        connected.add(snap.household)
    connected &= set(genesis.validators)
    body = {
        "peer_id": snap.peer_id,
        "household": snap.household,
        "role": snap.role,
        "community_id": snap.community_id,
        "genesis_hash": genesis.hash.hex(),
        "now_ms": snap.now_ms,
        "started_ms": snap.started_ms,
        "uptime_s": max(0, snap.now_ms - snap.started_ms) // 1000 if snap.started_ms else None,
        "height": ledger.height,
        "head_hash": ledger.head_hash.hex(),
        "state_digest": _digest(request, ledger),
        "block_time_ms": ledger.time_ms,
        "slot_seconds": genesis.slot_seconds,
        "gate_lead_seconds": genesis.gate_lead_seconds,
        "current_slot": snap.current_slot,
        "first_open_slot": first_open,
        "gate_closure_ms": gate_ms,
        "ms_to_gate_closure": max(0, gate_ms - snap.now_ms),
        "last_cleared_slot": ledger.last_cleared_slot,
        "settled_slots": ledger.settled_slots,
        "peers_count": sum(1 for p in snap.peers if p.connected),
        "validators": {
            "total": n,
            "connected": len(connected),
            "quorum": 3 * len(connected) > 2 * n,
            "self_is_validator": me_validator,
            "members": [
                {
                    "public_key": v.public_key,
                    "connected": v.connected,
                    "last_seen_ms": v.last_seen_ms,
                    "age_ms": None if v.last_seen_ms is None else snap.now_ms - v.last_seen_ms,
                }
                for v in snap.validators
            ],
        },
        "mempool_size": snap.mempool_size,
        "misbehaviour": dict(sorted(snap.misbehaviour.items())),
        "misbehaviour_total": sum(snap.misbehaviour.values()),
        "banned_peers": sum(1 for p in snap.peers if p.banned),
        "open_orders": sum(
            1 for s, by_h in ledger.orders.items() if clock.is_open(s, now_s) for _ in by_h
        ),
        "my_open_orders": sum(
            1
            for s, by_h in ledger.orders.items()
            if clock.is_open(s, now_s) and snap.household in by_h
        ),
        "retail_micro_per_kwh": genesis.retail_micro_per_kwh,
        "feed_in_micro_per_kwh": genesis.feed_in_micro_per_kwh,
        "max_steps": genesis.max_steps,
    }
    return web.json_response(body)


async def peers(request: web.Request) -> web.Response:
    _check_params(request, ())
    snap = _snapshot(request)
    members = set(snap.ledger.genesis.members)
    validators = set(snap.ledger.genesis.validators)
    body = {
        "peers": [
            {
                "peer_id": p.peer_id,
                "household": p.household,
                "connected": p.connected,
                "member": p.household in members,
                "validator": p.household in validators,
                "misbehaviour": dict(sorted(p.misbehaviour.items())),
                "score": p.score,
                "banned": p.banned,
            }
            for p in sorted(snap.peers, key=lambda p: (not p.connected, p.peer_id))
        ],
        "connected": sum(1 for p in snap.peers if p.connected),
    }
    return web.json_response(body)


async def orders(request: web.Request) -> web.Response:
    _check_params(request, ("mine", "slot"))
    mine = _bool_param(request, "mine")
    only_slot = _int_param(request, "slot", None)
    snap = _snapshot(request)
    ledger = snap.ledger
    clock = ledger.genesis.clock
    now_s = snap.now_ms // 1000
    listed = []
    for slot in sorted(ledger.orders):
        if only_slot is not None and slot != only_slot:
            continue
        open_ = clock.is_open(slot, now_s)
        for household in sorted(ledger.orders[slot]):
            if mine and household != snap.household:
                continue
            listed.append(_order_json(ledger.orders[slot][household], snap.household, open_=open_))
    committed = {o["order_id"] for o in listed}
    pending = [  # seen on the orders topic (signature-checked), not yet in a block
        _order_json(so, snap.household, open_=clock.is_open(so.order.slot, now_s))
        for so in snap.gossip_orders
        if so.order.order_id not in committed
        and (only_slot is None or so.order.slot == only_slot)
        and (not mine or so.household == snap.household)
    ]
    body = {
        "now_ms": snap.now_ms,
        "height": ledger.height,
        "first_open_slot": snap.first_open_slot,
        "orders": listed,
        "pending": pending,
    }
    return web.json_response(body)


def _trade_slot(ledger: LedgerState, slot: int, me: str) -> dict[str, Any]:
    trades = ledger.trades.get(slot, ())
    price = ledger.clearing_prices.get(slot)
    rows = []
    for t in trades:
        side = "buy" if t.buyer == me else "sell" if t.seller == me else None
        rows.append(
            {
                "buyer": t.buyer,
                "seller": t.seller,
                "buy_order": t.buy_order,
                "sell_order": t.sell_order,
                "energy_wh": t.energy_wh,
                "price_micro_per_kwh": t.price_micro_per_kwh,
                "amount_micro": t.amount_micro,
                "mine": side is not None,
                "my_side": side,
            }
        )
    return {
        "slot": slot,
        "clearing_price_micro_per_kwh": price,
        "volume_wh": sum(t.energy_wh for t in trades),
        "awaiting_settlement": slot in ledger.trades,
        "trades": rows,
    }


async def trades(request: web.Request) -> web.Response:
    _check_params(request, ("slot", "limit"))
    only_slot = _int_param(request, "slot", None)
    limit = _int_param(request, "limit", DEFAULT_TRADE_SLOTS, low=1, high=MAX_TRADE_SLOTS)
    assert limit is not None
    snap = _snapshot(request)
    ledger = snap.ledger
    if only_slot is not None:
        if only_slot > ledger.last_cleared_slot:
            raise ApiError(
                404,
                ApiReason.NOT_CLEARED,
                f"slot {only_slot} is not cleared yet (last cleared: {ledger.last_cleared_slot})",
                field="slot",
            )
        slots = [only_slot]
    else:
        known = set(ledger.clearing_prices) | set(ledger.trades)
        slots = heapq.nlargest(limit, known)
    body = {
        "last_cleared_slot": ledger.last_cleared_slot,
        "height": ledger.height,
        "slots": [_trade_slot(ledger, s, snap.household) for s in slots],
    }
    return web.json_response(body)


async def blocks(request: web.Request) -> web.Response:
    _check_params(request, ("from", "limit"))
    limit = _int_param(request, "limit", DEFAULT_BLOCKS, low=1, high=MAX_BLOCKS)
    assert limit is not None
    snap = _snapshot(request)
    height = snap.ledger.height
    start = _int_param(request, "from", max(1, height - limit + 1), low=1)
    assert start is not None
    found = request.app[HANDLE_KEY].blocks(start, limit) if start <= height else []
    body = {
        "height": height,
        "from": start,
        "limit": limit,
        "blocks": [
            {
                "height": b.height,
                "hash": b.hash,
                "time_ms": b.time_ms,
                "proposer": b.proposer,
                "tx_count": b.tx_count,
            }
            for b in found
        ],
    }
    return web.json_response(body)


async def balance(request: web.Request) -> web.Response:
    _check_params(request, ())
    snap = _snapshot(request)
    ledger = snap.ledger
    genesis = ledger.genesis
    me = snap.household
    totals = ledger.totals.get(me)
    body = {
        "household": me,
        "member": me in genesis.members,
        "balance_micro": ledger.balances.get(me, 0),
        "bought_p2p_wh": totals.bought_p2p_wh if totals else 0,
        "sold_p2p_wh": totals.sold_p2p_wh if totals else 0,
        "grid_import_wh": totals.grid_import_wh if totals else 0,
        "grid_export_wh": totals.grid_export_wh if totals else 0,
        "bill_micro": totals.bill_micro if totals else 0,
        "grid_only_bill_micro": totals.grid_only_bill_micro if totals else 0,
        "savings_micro": totals.savings_micro if totals else 0,
        "slots_settled": totals.slots_settled if totals else 0,
        "retail_micro_per_kwh": genesis.retail_micro_per_kwh,
        "feed_in_micro_per_kwh": genesis.feed_in_micro_per_kwh,
        "grid_fee_micro_per_kwh": genesis.grid_fee_micro_per_kwh,
        "height": ledger.height,
    }
    return web.json_response(body)


async def forecast(request: web.Request) -> web.Response:
    _check_params(request, ())
    snap = _snapshot(request)
    body = {
        "now_ms": snap.now_ms,
        "forecast": [
            {"slot": slot, "p10_wh": p10, "p50_wh": p50, "p90_wh": p90}
            for slot, p10, p50, p90 in snap.forecast
        ],
    }
    return web.json_response(body)


# ------------------------------------------------------------------------------------------ writes


def _authorize(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            ApiReason.UNAUTHORIZED,
            "this endpoint needs 'Authorization: Bearer <token>' (DIR/api.token)",
        )
    expected = request.app[_TOKEN_KEY]
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
        raise ApiError(403, ApiReason.FORBIDDEN, "wrong API token")


class _NumberTooLong(Exception):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong(len(text))
    return int(text)


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(
            415,
            ApiReason.UNSUPPORTED_MEDIA_TYPE,
            f"send Content-Type: application/json, not {request.content_type[:64]!r}",
        )
    raw = await request.read()  # raises 413 past client_max_size
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_bounded_int)
    except _NumberTooLong:
        raise ApiError(
            400,
            ApiReason.NUMBER_TOO_LONG,
            f"a JSON integer has more than {MAX_INT_DIGITS} digits",
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError too
        raise ApiError(
            400, DataReason.MALFORMED_JSON, f"the body is not valid JSON: {str(exc)[:200]}"
        ) from None


def _field_int(doc: Mapping[str, Any], key: str, where: str) -> int:
    if key not in doc:
        raise ApiError(
            400, DataReason.MISSING_FIELD, f"{where}{key} is required", field=where + key
        )
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(
            400,
            WireReason.BAD_TYPE,
            f"{where}{key} must be an integer, got {type(value).__name__}",
            field=where + key,
        )
    return value


_ORDER_KEYS: Final = frozenset({"slot", "side", "steps"})
_STEP_KEYS: Final = frozenset({"price_micro_per_kwh", "price", "energy_wh"})


def _parse_order_request(doc: Any, household: str, order_id: str) -> Order:
    """The request body as an (unsigned, nonce 0) order; shape errors are 400s."""
    if not isinstance(doc, dict):
        raise ApiError(400, WireReason.BAD_SHAPE, "the body must be a JSON object")
    unknown = sorted(set(doc) - _ORDER_KEYS)
    if unknown:
        raise ApiError(
            400,
            DataReason.UNKNOWN_FIELD,
            f"unknown field {unknown[0][:64]!r} (known: slot, side, steps)",
            field=unknown[0][:64],
        )
    slot = _field_int(doc, "slot", "")
    side_raw = doc.get("side")
    if side_raw not in ("buy", "sell"):
        raise ApiError(
            400,
            OrderReason.BAD_SIDE,
            f"side must be 'buy' or 'sell', got {str(side_raw)[:64]!r}",
            field="side",
        )
    steps_raw = doc.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ApiError(
            400,
            ApiReason.BAD_STEPS,
            "steps must be a non-empty list of {price_micro_per_kwh, energy_wh}",
            field="steps",
        )
    steps = []
    for i, step in enumerate(steps_raw[:1000]):
        where = f"steps[{i}]."
        if not isinstance(step, dict):
            raise ApiError(
                400, WireReason.BAD_SHAPE, f"steps[{i}] must be an object", field=f"steps[{i}]"
            )
        extra = sorted(set(step) - _STEP_KEYS)
        if extra:
            raise ApiError(
                400,
                DataReason.UNKNOWN_FIELD,
                f"unknown field {where}{extra[0][:64]}",
                field=where + extra[0][:64],
            )
        if "price" in step and "price_micro_per_kwh" in step:
            raise ApiError(
                400,
                WireReason.BAD_SHAPE,
                f"{where}: give price_micro_per_kwh or price, not both",
                field=where + "price",
            )
        price_key = "price" if "price" in step else "price_micro_per_kwh"
        steps.append(Step(_field_int(step, price_key, where), _field_int(step, "energy_wh", where)))
    return Order(
        order_id=order_id,
        household=household,
        side=Side(side_raw),
        slot=slot,
        steps=tuple(steps),
        nonce=0,
    )


def _new_order_id(request: web.Request, snap: Snapshot, doc: Any) -> str:
    """A fresh id: a hash of who, when, what, and this API's request counter."""
    counter: itertools.count[int] = request.app[_IDS_KEY]
    n = next(counter)
    seed = json.dumps([snap.household, snap.now_ms, n, doc], sort_keys=True, default=str)
    return "api-" + hashlib.sha256(seed.encode()).hexdigest()[:20]


def _check_member(snap: Snapshot) -> None:
    if snap.household not in snap.ledger.genesis.members:
        raise ApiError(
            403,
            LedgerReason.NOT_A_MEMBER,
            "this node's household is not a member of the community: it cannot trade",
        )


def _submit_response(result: SubmitResult, status_ok: int = 202) -> web.Response:
    if result.accepted:
        body = {"accepted": True, "tx_id": result.tx_id, "order_id": result.order_id}
        return web.json_response(body, status=status_ok)
    reason = reason_of(result.reason) or ApiReason.REFUSED
    if reason is LedgerReason.NO_OPEN_ORDER:
        status = 404
    elif reason in REJECTION_REASONS:  # a market rule, seen by the ledger's clock
        status = 422
    else:  # the node's own refusal: stale nonce, duplicate, mempool full, ...
        status = 409
    raise ApiError(status, reason, f"the node refused it: {reason.value}")


async def place_order(request: web.Request) -> web.Response:
    _authorize(request)
    _check_params(request, ())
    doc = await _json_body(request)
    snap = _snapshot(request)
    _check_member(snap)
    genesis = snap.ledger.genesis
    order = _parse_order_request(doc, snap.household, _new_order_id(request, snap, doc))
    try:
        validate_order(order, limits=genesis.limits, clock=genesis.clock, now=snap.now_ms // 1000)
    except InvalidInput as exc:
        field = exc.field.replace(".price", ".price_micro_per_kwh")
        message = exc.describe().replace(f"field {exc.field!r}", f"field {field!r}")
        raise ApiError(422, exc.reason, message, field=field) from None
    try:
        result = await request.app[HANDLE_KEY].place_order(order)
    except (NetworkError, TimeoutError) as exc:
        raise ApiError(503, ApiReason.NETWORK, f"could not submit the order: {exc}") from None
    except InvalidInput as exc:
        raise ApiError(409, exc.reason, str(exc)) from None
    except UsageError as exc:
        raise ApiError(409, ApiReason.REFUSED, str(exc)) from None
    return _submit_response(result)


async def cancel_order(request: web.Request) -> web.Response:
    _authorize(request)
    _check_params(request, ())
    raw = request.match_info["slot"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(
            400, ApiReason.BAD_PARAMETER, f"slot must be an integer >= 0, got {raw!r}", field="slot"
        )
    slot = int(raw)
    snap = _snapshot(request)
    _check_member(snap)
    genesis = snap.ledger.genesis
    clock = genesis.clock
    now_s = snap.now_ms // 1000
    why = clock.window_error(slot, now_s, max_ahead_slots=genesis.max_order_ahead_slots)
    if why is not None:
        first = clock.first_open_slot(now_s)
        raise ApiError(
            422,
            why,
            f"slot {slot} takes no changes now (open: {first}..{first + genesis.max_order_ahead_slots})",
            field="slot",
        )
    try:
        result = await request.app[HANDLE_KEY].cancel_order(slot)
    except (NetworkError, TimeoutError) as exc:
        raise ApiError(503, ApiReason.NETWORK, f"could not submit the cancel: {exc}") from None
    except InvalidInput as exc:
        raise ApiError(409, exc.reason, str(exc)) from None
    except UsageError as exc:
        raise ApiError(409, ApiReason.REFUSED, str(exc)) from None
    return _submit_response(result)


# ------------------------------------------------------------------------------------------- page


def _load_pages() -> dict[str, tuple[bytes, str]]:
    root = resources.files("gridnode") / "web"
    return {
        path: (root.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in _STATIC.items()
    }


async def page(request: web.Request) -> web.Response:
    body, ctype = request.app[_PAGES_KEY][request.path]
    return web.Response(
        body=body,
        content_type=ctype,
        charset="utf-8",
        headers={"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"},
    )


# -------------------------------------------------------------------------------------- app & run


def make_app(
    handle: NodeHandle,
    *,
    token: str,
    allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS,
) -> web.Application:
    """The API and page for ``handle``; ``token`` guards the write endpoints (must be non-empty).

    Requests whose ``Host`` header names none of ``allowed_hosts`` get 403 ``host_not_allowed``
    (DNS-rebinding protection). Serving on another address, add its name or IP, or pass ``None``
    to accept any Host.
    """
    if not token or not token.strip():
        raise UsageError("the API token must not be empty")
    app = web.Application(middlewares=[_errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[_HOSTS_KEY] = frozenset(h.lower().strip("[]") for h in allowed_hosts or ())
    app[HANDLE_KEY] = handle
    app[_TOKEN_KEY] = token.strip().encode("utf-8")
    app[_DIGEST_KEY] = {}
    app[_PAGES_KEY] = _load_pages()
    app[_IDS_KEY] = itertools.count()
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/peers", peers)
    app.router.add_get("/api/orders", orders)
    app.router.add_post("/api/orders", place_order)
    app.router.add_delete("/api/orders/{slot}", cancel_order)
    app.router.add_get("/api/trades", trades)
    app.router.add_get("/api/blocks", blocks)
    app.router.add_get("/api/balance", balance)
    app.router.add_get("/api/forecast", forecast)
    for path in _STATIC:
        app.router.add_get(path, page)
    return app


class _QuietServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, minus the tracebacks for what clients do wrong: a malformed request
    (which aiohttp answers with a plain 400) or a connection lost mid-request is one debug line.
    Anything else aiohttp reports keeps its level and traceback."""

    def log(self, level: int, msg: object, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError | ConnectionError | asyncio.CancelledError):
            kw.pop("exc_info")
            text = str(msg) % args if args else str(msg)
            super().log(logging.DEBUG, "%s: %s", text, _one_line(exc), **kw)
            return
        super().log(level, msg, *args, **kw)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


_QUIET_SERVER_LOG: Final = _QuietServerLog(logging.getLogger("gridnode.api.http"), {})


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A started API: ``url`` is where it answers (the real port when started on port 0)."""

    runner: web.AppRunner
    site: web.TCPSite
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, let open requests finish (bounded by ``shutdown_timeout_s`` given to
        :func:`start_api`), release the socket. Idempotent."""
        await self.runner.cleanup()


async def start_api(
    app: web.Application,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    shutdown_timeout_s: float = 2.0,
    access_log: logging.Logger | None = None,
) -> RunningApi:
    """Serve ``app`` on ``host:port`` (port 0 picks a free one); stop it with :meth:`RunningApi.stop`.

    Raises :class:`UsageError` if the address is taken.
    """
    runner = web.AppRunner(
        app, access_log=access_log, shutdown_timeout=shutdown_timeout_s, logger=_QUIET_SERVER_LOG
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    return RunningApi(runner=runner, site=site, host=host, port=int(bound[1]))
