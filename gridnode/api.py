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
* How a request is read and refused — the error body, the ``Host`` rule, query parameters, JSON
  bodies and their bounds, quiet logs for a client's mistakes — is :mod:`gridnode.api_requests`.
* Energy and money are integers with the unit in the key: ``*_wh``, ``*_micro``,
  ``*_micro_per_kwh``; times are unix ``*_ms`` (or ``*_s``); hashes and keys are lowercase hex.
* Orders are checked with :func:`market.orders.validate_order` (price cap = the genesis retail
  price, at most ``max_steps`` steps, slot still open at the snapshot's ``now_ms`` and at most
  ``max_order_ahead_slots`` beyond the first open slot) before the handle
  sees them; the ledger re-checks everything anyway.
* The status page (``/``) is static HTML + JS + CSS shipped in ``gridnode/web`` and the plotly.js
  that the ``plotly`` package ships (``/static/plotly.min.js``, gzip, cached); it makes no request
  outside this origin (a Content-Security-Policy header enforces it). Live updates are pushed over
  server-sent events (``GET /api/events``: ``status`` every second, ``household`` and ``market``
  when they change), not polled. The owner's views (``/api/household``, ``/api/market``,
  ``/api/slot``) are :mod:`gridnode.api_views`; ``/metrics`` is Prometheus text
  (:func:`gridnode.metrics.render_metrics`).

Documented for users in ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from gridnode.api_audit import evidence, model, proof, provenance
from gridnode.api_page import (
    PAGES_KEY,
    PLOTLY_PATH,
    STATIC,
    load_pages,
    page,
    plotly_page,
)
from gridnode.api_requests import (
    HANDLE_KEY,
    HOSTS_KEY,
    MAX_BODY_BYTES,
    QUIET_SERVER_LOG,
    ApiError,
    bool_param,
    check_params,
    errors_middleware,
    int_param,
    json_body,
    parse_order_request,
    snapshot_of,
)
from gridnode.api_views import (
    account_totals,
    household_view,
    market_view,
    slot_view,
    status_extras,
    validator_rows,
)
from gridnode.chain import trade_row
from gridnode.core.ledger import LedgerState, OpenOrder
from gridnode.localtime import LocalTime, zone_named
from gridnode.metrics import render_metrics
from gridnode.status import NodeHandle, Snapshot, SubmitResult
from market.errors import (
    ApiReason,
    InvalidInput,
    LedgerReason,
    NetworkError,
    UsageError,
    reason_of,
)
from market.orders import REJECTION_REASONS, validate_order

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
MAX_BLOCKS: Final = 100
DEFAULT_BLOCKS: Final = 20
DEFAULT_TRADE_SLOTS: Final = 8
MAX_TRADE_SLOTS: Final = 96

_TOKEN_KEY: Final = web.AppKey("gridnode_token", bytes)
_DIGEST_KEY: Final = web.AppKey("gridnode_digest_cache", dict)
_IDS_KEY: Final[web.AppKey[itertools.count[int]]] = web.AppKey("gridnode_order_ids")
_VIEWS_KEY: Final = web.AppKey("gridnode_view_cache", dict)
_STOP_KEY: Final = web.AppKey("gridnode_stop_streams", asyncio.Event)

#: how often the event stream looks at the snapshot (wall seconds)
EVENT_PERIOD_S: Final = 1.0

#: Host names accepted by default: a page on another site that resolves its own name to 127.0.0.1
#: (DNS rebinding) sends its own name as Host and is refused.
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")


# ----------------------------------------------------------------------------------------- views


def _digest(app: web.Application, ledger: LedgerState) -> str:
    """The state digest, computed once per ledger state (it re-encodes the whole state)."""
    cache: dict[str, Any] = app[_DIGEST_KEY]
    if cache.get("state") is not ledger:
        cache["state"] = ledger
        cache["digest"] = ledger.digest().hex()
    digest: str = cache["digest"]
    return digest


def _delivery(snap: Snapshot, slot: int) -> str:
    """The slot's delivery interval in the household's local time, with the offset."""
    clock = snap.ledger.genesis.clock
    return zone_named(snap.timezone).interval(clock.start(slot), clock.end(slot))


def _order_json(so: OpenOrder, snap: Snapshot, *, open_: bool) -> dict[str, Any]:
    o = so.order
    return {
        "order_id": o.order_id,
        "household": o.household,
        "mine": o.household == snap.household,
        "side": o.side.value,
        "slot": o.slot,
        "delivery": _delivery(snap, o.slot),
        "nonce": o.nonce,
        "open": open_,
        "energy_wh": o.energy_wh,
        "steps": [
            {"price_micro_per_kwh": s.price_micro_per_kwh, "energy_wh": s.energy_wh}
            for s in o.steps
        ],
    }


def _zone(app: web.Application, snap: Snapshot) -> LocalTime:
    """The household's zone (parsed once per name)."""
    return zone_named(snap.timezone)


def _cached(
    app: web.Application, name: str, key: object, build: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``build()``, or the document built last for the same ``key`` (one per view name)."""
    cache: dict[Any, Any] = app[_VIEWS_KEY]
    held = cache.get(name)
    if held is not None and held[0] == key:
        doc: dict[str, Any] = held[1]
        return doc
    doc = build()
    cache[name] = (key, doc)
    return doc


def _history_key(snap: Snapshot) -> object:
    """What the household and market views depend on besides the clock's slot."""
    last = snap.submissions[-1] if snap.submissions else None
    version = snap.history.version if snap.history is not None else -1
    clock = snap.ledger.genesis.clock
    return (
        snap.household,
        snap.ledger.height,
        version,
        len(snap.submissions),
        last,
        clock.slot_at(snap.now_ms // 1000),
        clock.first_open_slot(snap.now_ms // 1000),
        snap.forecast,
        snap.forecaster_state,
    )


def household_doc(app: web.Application, snap: Snapshot) -> dict[str, Any]:
    return _cached(
        app, "household", _history_key(snap), lambda: household_view(snap, _zone(app, snap))
    )


def market_doc(app: web.Application, snap: Snapshot) -> dict[str, Any]:
    key = (snap.history.version if snap.history is not None else -1, snap.ledger.height)
    return _cached(app, "market", key, lambda: market_view(snap, _zone(app, snap)))


async def status(request: web.Request) -> web.Response:
    check_params(request, ())
    return web.json_response(status_doc(request.app, snapshot_of(request)))


def status_doc(app: web.Application, snap: Snapshot) -> dict[str, Any]:
    """``/api/status`` (also the event stream's ``status`` event)."""
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
        "state_digest": _digest(app, ledger),
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
            "members": validator_rows(snap),
        },
        "mempool_size": snap.mempool_size,
        "misbehaviour": dict(sorted(snap.misbehaviour.items())),
        "misbehaviour_total": sum(snap.misbehaviour.values()),
        "banned_peers": (
            snap.banned_peers
            if snap.banned_peers is not None
            else sum(1 for p in snap.peers if p.banned)
        ),
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
        **status_extras(snap, _zone(app, snap)),
        "evidence_total": snap.evidence_total,
    }
    return body


async def peers(request: web.Request) -> web.Response:
    check_params(request, ())
    return web.json_response(peers_doc(request.app, snapshot_of(request)))


def peers_doc(app: web.Application, snap: Snapshot) -> dict[str, Any]:
    """``/api/peers`` (also the event stream's ``peers`` event)."""
    return _cached(app, "peers", snap.peers, lambda: _peers_view(snap))


def _peers_view(snap: Snapshot) -> dict[str, Any]:
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
    return body


async def orders(request: web.Request) -> web.Response:
    check_params(request, ("mine", "slot"))
    mine = bool_param(request, "mine")
    only_slot = int_param(request, "slot", None)
    snap = snapshot_of(request)
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
            listed.append(_order_json(ledger.orders[slot][household], snap, open_=open_))
    committed = {o["order_id"] for o in listed}
    pending = [  # seen on the orders topic (signature-checked), not yet in a block
        _order_json(so, snap, open_=clock.is_open(so.order.slot, now_s))
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


def _trade_slot(snap: Snapshot, slot: int) -> dict[str, Any]:
    """A cleared slot's trades: the ledger's while they await settlement, then the node's history
    (``trades_kept``: false once the history dropped them, or for a slot before it)."""
    ledger, me = snap.ledger, snap.household
    record = None if snap.history is None else snap.history.slot(slot)
    if slot in ledger.trades:
        trades: tuple[Any, ...] | None = tuple(ledger.trades[slot])
    elif record is not None and record.cleared_height:
        trades = record.trades
    else:
        trades = ()
    price = ledger.clearing_prices.get(slot)
    if price is None and record is not None:
        price = record.price_micro_per_kwh
    rows = []
    for t in trades or ():
        side = "buy" if t.buyer == me else "sell" if t.seller == me else None
        rows.append({**trade_row(t), "mine": side is not None, "my_side": side})
    if trades is not None:
        volume = sum(t.energy_wh for t in trades)
    else:
        volume = record.volume_wh if record is not None else 0
    return {
        "slot": slot,
        "delivery": _delivery(snap, slot),
        "clearing_price_micro_per_kwh": price,
        "volume_wh": volume,
        "awaiting_settlement": slot in ledger.trades,
        "settled": record is not None and record.settled,
        "trades_kept": trades is not None,
        "trades": rows,
    }


async def trades(request: web.Request) -> web.Response:
    check_params(request, ("slot", "limit"))
    only_slot = int_param(request, "slot", None)
    limit = int_param(request, "limit", DEFAULT_TRADE_SLOTS, low=1, high=MAX_TRADE_SLOTS)
    assert limit is not None
    snap = snapshot_of(request)
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
        if snap.history is not None:
            known |= {r.slot for r in snap.history.slots if r.cleared_height}
        slots = heapq.nlargest(limit, known)
    body = {
        "last_cleared_slot": ledger.last_cleared_slot,
        "height": ledger.height,
        "slots": [_trade_slot(snap, s) for s in slots],
    }
    return web.json_response(body)


async def blocks(request: web.Request) -> web.Response:
    check_params(request, ("from", "limit"))
    limit = int_param(request, "limit", DEFAULT_BLOCKS, low=1, high=MAX_BLOCKS)
    assert limit is not None
    snap = snapshot_of(request)
    height = snap.ledger.height
    start = int_param(request, "from", max(1, height - limit + 1), low=1)
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
    check_params(request, ())
    snap = snapshot_of(request)
    ledger = snap.ledger
    genesis = ledger.genesis
    me = snap.household
    body = {
        "household": me,
        "member": me in genesis.members,
        "balance_micro": ledger.balances.get(me, 0),
        **account_totals(ledger, me),
        "retail_micro_per_kwh": genesis.retail_micro_per_kwh,
        "feed_in_micro_per_kwh": genesis.feed_in_micro_per_kwh,
        "grid_fee_micro_per_kwh": genesis.grid_fee_micro_per_kwh,
        "height": ledger.height,
    }
    return web.json_response(body)


async def forecast(request: web.Request) -> web.Response:
    check_params(request, ())
    snap = snapshot_of(request)
    body = {
        "now_ms": snap.now_ms,
        "forecaster": snap.forecaster_state,
        "forecast": [
            {"slot": slot, "p10_wh": p10, "p50_wh": p50, "p90_wh": p90}
            for slot, p10, p50, p90 in snap.forecast
        ],
    }
    return web.json_response(body)


async def submissions(request: web.Request) -> web.Response:
    """The orders this node submitted lately (its bidding loop's and the API's), with the answer
    each got; ``slot`` keeps one slot's. Read-only."""
    check_params(request, ("slot",))
    only_slot = int_param(request, "slot", None)
    snap = snapshot_of(request)
    body = {
        "now_ms": snap.now_ms,
        "household": snap.household,
        "submissions": [
            {
                "slot": s.slot,
                "at_ms": s.at_ms,
                "order_id": s.order_id,
                "tx_id": s.tx_id,
                "side": s.side,
                "energy_wh": s.energy_wh,
                "steps": s.steps,
                "accepted": s.accepted,
                "reason": s.reason,
            }
            for s in snap.submissions
            if only_slot is None or s.slot == only_slot
        ],
    }
    return web.json_response(body)


async def household(request: web.Request) -> web.Response:
    """The owner's view: energy per slot, bills per day, shares, orders and their fate, trades
    kept after settlement, missed readings (:func:`gridnode.api_views.household_view`)."""
    check_params(request, ())
    return web.json_response(household_doc(request.app, snapshot_of(request)))


async def market(request: web.Request) -> web.Response:
    """The community's clearing prices and volumes (:func:`gridnode.api_views.market_view`)."""
    check_params(request, ())
    return web.json_response(market_doc(request.app, snapshot_of(request)))


async def slot_detail(request: web.Request) -> web.Response:
    """Why a slot went as it did: the book's curves, my steps, the clearing point, my bill."""
    check_params(request, ("slot",))
    slot = int_param(request, "slot", None)
    snap = snapshot_of(request)
    if slot is None:
        slot = household_doc(request.app, snap)["why_slot"]
        if slot is None:
            raise ApiError(404, ApiReason.NOT_CLEARED, "no slot cleared yet", field="slot")
    doc = slot_view(snap, _zone(request.app, snap), slot)
    if doc is None:
        raise ApiError(
            404, ApiReason.NOT_FOUND, f"this node knows nothing of slot {slot}", field="slot"
        )
    return web.json_response(doc)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (:func:`gridnode.metrics.render_metrics`)."""
    check_params(request, ())
    body = render_metrics(snapshot_of(request))
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``status`` every :data:`EVENT_PERIOD_S`, ``household``, ``market`` and
    ``peers`` whenever their document changed (each first sent at once). Ends when the client goes away or
    the API stops."""
    check_params(request, ())
    app = request.app
    stop = app[_STOP_KEY]
    response = EventSourceResponse(ping_interval=15, send_timeout=30)
    await response.prepare(request)
    sent: dict[str, Any] = {}
    async with response:  # on the way out: stop the pings, wait for them
        try:
            while not stop.is_set() and response.is_connected():
                snap = snapshot_of(request)
                await response.send(json.dumps(status_doc(app, snap)), event="status")
                for name, build in (
                    ("household", household_doc),
                    ("market", market_doc),
                    ("peers", peers_doc),
                ):
                    doc = build(app, snap)
                    if sent.get(name) is not doc:
                        sent[name] = doc
                        await response.send(json.dumps(doc), event=name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), EVENT_PERIOD_S)
        except (ConnectionError, TimeoutError):  # the client went away or stalled
            pass
    return response


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


def _submit_response(
    result: SubmitResult, status_ok: int = 202, *, delivery: str = ""
) -> web.Response:
    if result.accepted:
        body = {"accepted": True, "tx_id": result.tx_id, "order_id": result.order_id}
        if delivery:
            body["delivery"] = delivery
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
    check_params(request, ())
    doc = await json_body(request)
    snap = snapshot_of(request)
    _check_member(snap)
    genesis = snap.ledger.genesis
    order = parse_order_request(doc, snap.household, _new_order_id(request, snap, doc))
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
    return _submit_response(result, delivery=_delivery(snap, order.slot))


async def cancel_order(request: web.Request) -> web.Response:
    _authorize(request)
    check_params(request, ())
    raw = request.match_info["slot"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(
            400, ApiReason.BAD_PARAMETER, f"slot must be an integer >= 0, got {raw!r}", field="slot"
        )
    slot = int(raw)
    snap = snapshot_of(request)
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
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[HOSTS_KEY] = frozenset(h.lower().strip("[]") for h in allowed_hosts or ())
    app[HANDLE_KEY] = handle
    app[_TOKEN_KEY] = token.strip().encode("utf-8")
    app[_DIGEST_KEY] = {}
    app[PAGES_KEY] = load_pages()
    app[_IDS_KEY] = itertools.count()
    app[_VIEWS_KEY] = {}
    app[_STOP_KEY] = asyncio.Event()

    async def end_streams(app: web.Application) -> None:
        app[_STOP_KEY].set()

    app.on_shutdown.append(end_streams)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/peers", peers)
    app.router.add_get("/api/orders", orders)
    app.router.add_post("/api/orders", place_order)
    app.router.add_delete("/api/orders/{slot}", cancel_order)
    app.router.add_get("/api/trades", trades)
    app.router.add_get("/api/blocks", blocks)
    app.router.add_get("/api/balance", balance)
    app.router.add_get("/api/forecast", forecast)
    app.router.add_get("/api/submissions", submissions)
    app.router.add_get("/api/household", household)
    app.router.add_get("/api/market", market)
    app.router.add_get("/api/slot", slot_detail)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(PLOTLY_PATH, plotly_page)
    app.router.add_get("/api/proof", proof)
    app.router.add_get("/api/evidence", evidence)
    app.router.add_get("/api/model", model)
    app.router.add_get("/api/provenance", provenance)
    for path in STATIC:
        app.router.add_get(path, page)
    return app


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
        app, access_log=access_log, shutdown_timeout=shutdown_timeout_s, logger=QUIET_SERVER_LOG
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
