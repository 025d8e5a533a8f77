"""The local API against a real in-process node: every endpoint, auth, every 4xx path, no leaks."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from gridnode.api import MAX_BODY_BYTES, make_app
from gridnode.status import PeerInfo
from market.errors import InvalidInput, NetworkError, UsageError
from market.orders import Side
from tests.api.node import FIRST_OPEN, T0_MS, LocalNode
from tests.api.server import AUTH, TOKEN

pytestmark = pytest.mark.asyncio

SELL = {"slot": FIRST_OPEN, "side": "sell", "steps": [{"price": 100_000, "energy_wh": 500}]}


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text)
        return response.status, json.loads(text)


def assert_error(status: int, body: Any, expected_status: int, reason: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"reason", "field", "message"}
    assert body["error"]["reason"] == reason, body
    assert "Traceback" not in body["error"]["message"]


# ------------------------------------------------------------------------------------------ reads


async def test_status_reports_the_snapshot(node: LocalNode, http: aiohttp.ClientSession) -> None:
    node.misbehaviour = {"bad_signature": 3, "replayed": 1}
    node.peers = (PeerInfo("12D3KooWpeer", node.others[0].public_hex, connected=True),)
    node.commit()
    status, s = await call(http, "GET", "/api/status")
    assert status == 200
    ledger = node.app.state
    assert s["height"] == ledger.height == 1
    assert s["head_hash"] == ledger.head_hash.hex()
    assert s["state_digest"] == ledger.digest().hex()
    assert s["household"] == node.key.public_hex and s["role"] == "validator"
    assert s["community_id"] == "api-test" and s["peer_id"] == node.peer_id
    assert s["now_ms"] == node.now_ms
    assert s["current_slot"] == node.now_ms // 900_000
    assert s["first_open_slot"] == FIRST_OPEN
    assert s["gate_closure_ms"] == (FIRST_OPEN * 900 - 300) * 1000
    assert s["ms_to_gate_closure"] == s["gate_closure_ms"] - node.now_ms
    assert s["peers_count"] == 1
    assert s["validators"]["total"] == 1 and s["validators"]["quorum"] is True
    assert s["misbehaviour"] == {"bad_signature": 3, "replayed": 1}
    assert s["misbehaviour_total"] == 4
    assert s["mempool_size"] == 0
    node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (200_000, 100)))
    _, s = await call(http, "GET", "/api/status")
    assert s["mempool_size"] == 1 and s["state_digest"] == ledger.digest().hex()
    node.commit()
    _, s = await call(http, "GET", "/api/status")
    assert s["height"] == 2 and s["state_digest"] == node.app.state.digest().hex()
    assert s["open_orders"] == 1 and s["my_open_orders"] == 0


async def test_place_list_clear_settle_balance(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    status, placed = await call(http, "POST", "/api/orders", json=SELL, headers=AUTH)
    assert status == 202 and placed["accepted"] is True
    assert placed["order_id"].startswith("api-") and len(placed["tx_id"]) == 64
    node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (250_000, 400)))
    node.commit()
    _, mine = await call(http, "GET", "/api/orders?mine=1")
    assert [o["order_id"] for o in mine["orders"]] == [placed["order_id"]]
    (o,) = mine["orders"]
    assert o["side"] == "sell" and o["slot"] == FIRST_OPEN and o["open"] is True and o["mine"]
    assert o["steps"] == [{"price_micro_per_kwh": 100_000, "energy_wh": 500}]
    assert o["energy_wh"] == 500 and o["nonce"] == 1
    _, s = await call(http, "GET", "/api/status")
    assert s["open_orders"] == 2 and s["my_open_orders"] == 1
    _, every = await call(http, "GET", "/api/orders")
    assert sorted(x["mine"] for x in every["orders"]) == [False, True]
    _, by_slot = await call(http, "GET", f"/api/orders?slot={FIRST_OPEN + 1}")
    assert by_slot["orders"] == []
    # not cleared yet
    status, body = await call(http, "GET", f"/api/trades?slot={FIRST_OPEN}")
    assert_error(status, body, 404, "not_cleared")
    # past gate closure: the next block clears the slot
    node.commit(advance_ms=600_000)
    _, t = await call(http, "GET", f"/api/trades?slot={FIRST_OPEN}")
    (slot,) = t["slots"]
    price = node.app.state.clearing_prices[FIRST_OPEN]
    assert slot["clearing_price_micro_per_kwh"] == price and 100_000 <= price <= 250_000
    assert slot["volume_wh"] == 400 and slot["awaiting_settlement"] is True
    (trade,) = slot["trades"]
    assert trade["mine"] is True and trade["my_side"] == "sell"
    assert trade["seller"] == node.key.public_hex and trade["energy_wh"] == 400
    assert trade["amount_micro"] == node.app.state.trades[FIRST_OPEN][0].amount_micro
    _, recent = await call(http, "GET", "/api/trades")
    assert recent["slots"][0]["slot"] == FIRST_OPEN
    _, after = await call(http, "GET", "/api/orders?mine=1")
    assert after["orders"] == []
    # delivery ends; every meter reports; the slot settles
    node.commit(advance_ms=1_200_000)
    node.submit(node.reading(-1, FIRST_OPEN, 500))
    node.submit(node.reading(0, FIRST_OPEN, -400))
    node.submit(node.reading(1, FIRST_OPEN, 0))
    node.submit(node.reading(2, FIRST_OPEN, 0))
    node.commit()
    _, b = await call(http, "GET", "/api/balance")
    totals = node.app.state.totals[node.key.public_hex]
    assert b["sold_p2p_wh"] == totals.sold_p2p_wh == 400
    assert b["grid_export_wh"] == totals.grid_export_wh == 100
    assert b["bill_micro"] == totals.bill_micro
    assert b["grid_only_bill_micro"] == totals.grid_only_bill_micro
    assert b["savings_micro"] == totals.savings_micro > 0
    assert b["balance_micro"] == node.app.state.balances[node.key.public_hex] > 0
    assert b["slots_settled"] == 1 and b["member"] is True
    # the ledger dropped the slot's trades at settlement; the node's history keeps them
    assert FIRST_OPEN not in node.app.state.trades
    _, t = await call(http, "GET", f"/api/trades?slot={FIRST_OPEN}")
    (kept,) = t["slots"]
    assert kept["awaiting_settlement"] is False and kept["settled"] is True
    assert kept["trades_kept"] is True and kept["volume_wh"] == 400
    assert [(x["my_side"], x["energy_wh"]) for x in kept["trades"]] == [("sell", 400)]


async def test_cancel(node: LocalNode, http: aiohttp.ClientSession) -> None:
    status, _ = await call(http, "POST", "/api/orders", json=SELL, headers=AUTH)
    assert status == 202
    node.commit()
    status, body = await call(http, "DELETE", f"/api/orders/{FIRST_OPEN}", headers=AUTH)
    assert status == 202 and body["accepted"] is True
    node.commit()
    _, mine = await call(http, "GET", "/api/orders?mine=1")
    assert mine["orders"] == []
    status, body = await call(http, "DELETE", f"/api/orders/{FIRST_OPEN}", headers=AUTH)
    assert_error(status, body, 404, "no_open_order")


async def test_blocks_window(node: LocalNode, http: aiohttp.ClientSession) -> None:
    _, empty = await call(http, "GET", "/api/blocks")
    assert empty["blocks"] == [] and empty["height"] == 0
    for _ in range(5):
        node.commit()
    _, page = await call(http, "GET", "/api/blocks?from=2&limit=2")
    assert [b["height"] for b in page["blocks"]] == [2, 3]
    assert page["blocks"][0]["hash"] == node.blocks(2, 1)[0].hash
    assert page["blocks"][0]["proposer"] == node.key.public_hex
    _, last = await call(http, "GET", "/api/blocks?limit=3")
    assert [b["height"] for b in last["blocks"]] == [3, 4, 5]
    assert last["blocks"][-1]["hash"] == node.app.state.head_hash.hex()
    _, beyond = await call(http, "GET", "/api/blocks?from=9")
    assert beyond["blocks"] == []


async def test_peers_and_forecast(node: LocalNode, http: aiohttp.ClientSession) -> None:
    node.peers = (
        PeerInfo("12D3KooWgone", "", connected=False),
        PeerInfo("12D3KooWbad", node.others[1].public_hex, True, {"malformed": 2}),
    )
    node.forecast = ((FIRST_OPEN, -100, 250, 600),)
    _, p = await call(http, "GET", "/api/peers")
    assert [x["peer_id"] for x in p["peers"]] == ["12D3KooWbad", "12D3KooWgone"]
    assert p["peers"][0]["misbehaviour"] == {"malformed": 2} and p["peers"][0]["member"]
    assert p["connected"] == 1 and p["peers"][1]["household"] == ""
    _, f = await call(http, "GET", "/api/forecast")
    assert f["forecast"] == [{"slot": FIRST_OPEN, "p10_wh": -100, "p50_wh": 250, "p90_wh": 600}]


async def test_orders_seen_on_gossip_are_listed_as_pending(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    from gridnode.core.ledger import sign_order
    from market.orders import Order, Side, Step

    other = node.others[0]
    seen = sign_order(
        other,
        node.genesis,
        Order("gossiped", other.public_hex, Side.SELL, FIRST_OPEN, (Step(90_000, 400),), 1),
    )
    node.gossip_orders = (seen,)
    _, o = await call(http, "GET", "/api/orders")
    assert [x["order_id"] for x in o["pending"]] == ["gossiped"]
    assert o["pending"][0]["household"] == other.public_hex and not o["pending"][0]["mine"]
    _, mine = await call(http, "GET", "/api/orders?mine=1")
    assert mine["pending"] == []


# ------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "expected", "reason"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": ""}, 401, "unauthorized"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "unauthorized"),
        ({"Authorization": "Bearer "}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-token"}, 403, "forbidden"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403, "forbidden"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403, "forbidden"),
    ],
)
async def test_writes_need_the_token(
    node: LocalNode,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    expected: int,
    reason: str,
) -> None:
    for method, path, kwargs in (
        ("POST", "/api/orders", {"json": SELL}),
        ("DELETE", f"/api/orders/{FIRST_OPEN}", {}),
    ):
        async with http.request(method, path, headers=headers, **kwargs) as response:
            body = await response.json()
            assert_error(response.status, body, expected, reason)
            if expected == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert node.placed == [] and len(node.app.mempool) == 0


async def test_token_must_not_be_empty(node: LocalNode) -> None:
    with pytest.raises(UsageError, match="token"):
        make_app(node, token="  ")


# ------------------------------------------------------------------------------------ bad requests

CLOSED = FIRST_OPEN - 1
BAD_ORDERS: list[tuple[object, int, str, str]] = [
    ([], 400, "bad_shape", ""),
    ("sell", 400, "bad_shape", ""),
    ({"side": "sell", "steps": [{"price": 1, "energy_wh": 1}]}, 400, "missing_field", "slot"),
    ({**SELL, "slot": "5"}, 400, "bad_type", "slot"),
    ({**SELL, "slot": True}, 400, "bad_type", "slot"),
    ({**SELL, "slot": 1.5}, 400, "bad_type", "slot"),
    ({**SELL, "side": "hold"}, 400, "bad_side", "side"),
    ({**SELL, "side": None}, 400, "bad_side", "side"),
    ({**SELL, "steps": []}, 400, "bad_steps", "steps"),
    ({**SELL, "steps": {"price": 1}}, 400, "bad_steps", "steps"),
    ({**SELL, "steps": [7]}, 400, "bad_shape", "steps[0]"),
    ({**SELL, "steps": [{"price": "1", "energy_wh": 1}]}, 400, "bad_type", "steps[0].price"),
    ({**SELL, "steps": [{"price": 1, "energy_wh": 1.0}]}, 400, "bad_type", "steps[0].energy_wh"),
    ({**SELL, "steps": [{"price": 1}]}, 400, "missing_field", "steps[0].energy_wh"),
    ({**SELL, "steps": [{"energy_wh": 1}]}, 400, "missing_field", "steps[0].price_micro_per_kwh"),
    (
        {**SELL, "steps": [{"price": 1, "price_micro_per_kwh": 1, "energy_wh": 1}]},
        400,
        "bad_shape",
        "steps[0].price",
    ),
    ({**SELL, "steps": [{"price": 1, "energy_wh": 1, "x": 0}]}, 400, "unknown_field", "steps[0].x"),
    ({**SELL, "household": "ff" * 32}, 400, "unknown_field", "household"),
    (
        {**SELL, "steps": [{"price": 300_001, "energy_wh": 1}]},
        422,
        "price_out_of_range",
        "steps[0].price_micro_per_kwh",
    ),
    (
        {**SELL, "steps": [{"price": -1, "energy_wh": 1}]},
        422,
        "price_out_of_range",
        "steps[0].price_micro_per_kwh",
    ),
    (
        {**SELL, "steps": [{"price": 1, "energy_wh": 0}]},
        422,
        "non_positive_energy",
        "steps[0].energy_wh",
    ),
    ({**SELL, "steps": [{"price": 1, "energy_wh": 1}] * 17}, 422, "too_many_steps", "steps"),
    ({**SELL, "slot": CLOSED}, 422, "slot_closed", "slot"),
    ({**SELL, "slot": -1}, 422, "bad_slot", "slot"),
]


@pytest.mark.parametrize(("doc", "expected", "reason", "field"), BAD_ORDERS)
async def test_bad_orders_are_4xx_with_a_reason(
    node: LocalNode,
    http: aiohttp.ClientSession,
    doc: object,
    expected: int,
    reason: str,
    field: str,
) -> None:
    status, body = await call(http, "POST", "/api/orders", json=doc, headers=AUTH)
    assert_error(status, body, expected, reason)
    assert body["error"]["field"] == field
    assert node.placed == []


async def test_price_cap_is_the_retail_price(node: LocalNode, http: aiohttp.ClientSession) -> None:
    retail = node.genesis.retail_micro_per_kwh
    at_cap = {**SELL, "steps": [{"price_micro_per_kwh": retail, "energy_wh": 10}]}
    status, _ = await call(http, "POST", "/api/orders", json=at_cap, headers=AUTH)
    assert status == 202


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected", "reason"),
    [
        (
            "POST",
            "/api/orders",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/orders",
            {"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/orders",
            {"data": b"[" * 100_00, "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/orders",
            {"data": b"slot=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
            "unsupported_media_type",
        ),
        ("POST", "/api/orders", {"data": b"{}"}, 415, "unsupported_media_type"),
        (
            "POST",
            "/api/orders",
            {
                "data": b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}',
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "body_too_large",
        ),
        ("POST", "/api/orders?x=1", {"json": SELL}, 400, "unknown_parameter"),
        ("DELETE", "/api/orders/abc", {}, 400, "bad_parameter"),
        ("DELETE", "/api/orders/-3", {}, 400, "bad_parameter"),
        ("DELETE", "/api/orders/１２", {}, 400, "bad_parameter"),
        ("DELETE", f"/api/orders/{CLOSED}", {}, 422, "slot_closed"),
        ("GET", "/api/nope", {}, 404, "not_found"),
        ("GET", "/api/orders/5", {}, 405, "method_not_allowed"),
        ("PUT", "/api/status", {}, 405, "method_not_allowed"),
        ("POST", "/api/status", {}, 405, "method_not_allowed"),
        ("GET", "/nope.html", {}, 404, "not_found"),
        ("GET", "/api/orders?mine=maybe", {}, 400, "bad_parameter"),
        ("GET", "/api/orders?slot=x", {}, 400, "bad_parameter"),
        ("GET", "/api/orders?limit=3", {}, 400, "unknown_parameter"),
        ("GET", "/api/status?verbose=1", {}, 400, "unknown_parameter"),
        ("GET", "/api/trades?limit=0", {}, 400, "bad_parameter"),
        ("GET", "/api/trades?limit=97", {}, 400, "bad_parameter"),
        ("GET", "/api/trades?slot=99999999999999999999", {}, 400, "bad_parameter"),
        ("GET", f"/api/trades?slot={FIRST_OPEN + 5}", {}, 404, "not_cleared"),
        ("GET", "/api/blocks?from=0", {}, 400, "bad_parameter"),
        ("GET", "/api/blocks?limit=101", {}, 400, "bad_parameter"),
        ("GET", "/api/blocks?limit=1e3", {}, 400, "bad_parameter"),
    ],
)
async def test_bad_requests_are_json_4xx(
    node: LocalNode,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    expected: int,
    reason: str,
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    status, body = await call(http, method, path, headers=headers, **kwargs)
    assert_error(status, body, expected, reason)
    assert node.placed == []


async def test_not_a_member_cannot_trade(http: aiohttp.ClientSession, node: LocalNode) -> None:
    outsider = LocalNode(member=False)
    from gridnode.api import start_api

    running = await start_api(make_app(outsider, token=TOKEN), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=running.url) as other:
            status, body = await call(other, "POST", "/api/orders", json=SELL, headers=AUTH)
            assert_error(status, body, 403, "not_a_member")
            _, b = await call(other, "GET", "/api/balance")
            assert b["member"] is False and b["balance_micro"] == 0
    finally:
        await running.stop()
    assert outsider.placed == []


@pytest.mark.parametrize(
    ("exc", "expected", "reason"),
    [
        (NetworkError("no validator answered"), 503, "network"),
        (TimeoutError(), 503, "network"),
        (InvalidInput(reason="stale_nonce", subject="order"), 409, "stale_nonce"),
        (UsageError("node is shutting down"), 409, "refused"),
    ],
)
async def test_handle_errors_map_to_statuses(
    node: LocalNode, http: aiohttp.ClientSession, exc: Exception, expected: int, reason: str
) -> None:
    node.fail_next = exc
    status, body = await call(http, "POST", "/api/orders", json=SELL, headers=AUTH)
    assert_error(status, body, expected, reason)


async def test_unexpected_errors_are_a_json_500_without_traceback(
    node: LocalNode, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    node.fail_next = RuntimeError("secret internals /etc/passwd")
    with caplog.at_level(logging.ERROR, logger="gridnode.api"):
        async with http.post("/api/orders", json=SELL, headers=AUTH) as response:
            text = await response.text()
            assert response.status == 500
    assert json.loads(text) == {
        "error": {
            "reason": "internal",
            "field": "",
            "message": "internal error; see the daemon's log",
        }
    }
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)
    # the server keeps serving
    status, _ = await call(http, "GET", "/api/status")
    assert status == 200


# ------------------------------------------------------------------------------------------- page


async def test_page_and_assets_are_served_same_origin_only(http: aiohttp.ClientSession) -> None:
    texts = {}
    for path, ctype in (
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/charts.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ):
        async with http.get(path) as response:
            assert response.status == 200
            assert response.content_type == ctype
            texts[path] = await response.text()
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    for script in ("plotly.min.js", "charts.js", "app.js"):
        assert f'<script src="/static/{script}"' in texts["/"]
    for text in texts.values():
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    for endpoint in ("/api/events", "/api/slot"):  # pushed over SSE; a slot's detail on demand
        assert endpoint in texts["/static/app.js"]
    for path in ("/favicon.ico", "/favicon.svg"):
        async with http.get(path) as response:
            assert response.status == 200 and response.content_type == "image/svg+xml"
            assert (await response.read()).startswith(b"<svg")


async def test_plotly_is_served_from_the_python_package_gzipped(
    http: aiohttp.ClientSession,
) -> None:
    from gridnode.api_page import plotly_js

    shipped = plotly_js().read_bytes()
    async with http.get("/static/plotly.min.js") as response:  # aiohttp asks for gzip
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Cache-Control"] == "max-age=86400"
        assert await response.read() == shipped


async def test_api_stops_and_releases_the_port(node: LocalNode) -> None:
    from gridnode.api import start_api

    running = await start_api(make_app(node, token=TOKEN), "127.0.0.1", 0)
    port = running.port
    with pytest.raises(UsageError, match="cannot serve the API"):
        await start_api(make_app(node, token=TOKEN), "127.0.0.1", port)
    await running.stop()
    again = await start_api(make_app(node, token=TOKEN), "127.0.0.1", port)
    await again.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/api/status")


async def test_now_is_the_node_clock_not_ours(node: LocalNode, http: aiohttp.ClientSession) -> None:
    node.now_ms = T0_MS + 600_000  # exactly the gate closure of FIRST_OPEN
    status, body = await call(http, "POST", "/api/orders", json=SELL, headers=AUTH)
    assert_error(status, body, 422, "slot_closed")
    later = {**SELL, "slot": FIRST_OPEN + 1}
    status, _ = await call(http, "POST", "/api/orders", json=later, headers=AUTH)
    assert status == 202


async def test_stop_does_not_hang_on_a_request_in_flight(node: LocalNode) -> None:
    """A write stuck in the node (its queue never answers) does not keep the API from stopping."""
    import asyncio

    from gridnode.api import start_api

    entered = asyncio.Event()

    async def stuck(order: object) -> None:
        entered.set()
        await asyncio.Event().wait()  # never answers

    node.place_order = stuck  # type: ignore[assignment,method-assign]
    running = await start_api(make_app(node, token=TOKEN), "127.0.0.1", 0, shutdown_timeout_s=0.5)
    async with aiohttp.ClientSession(base_url=running.url) as session:
        pending = asyncio.ensure_future(session.post("/api/orders", json=SELL, headers=AUTH))
        await asyncio.wait_for(entered.wait(), timeout=10)
        await asyncio.wait_for(running.stop(), timeout=10)  # a deadline, not a timing assertion
        with pytest.raises(aiohttp.ClientError):
            response = await asyncio.wait_for(pending, timeout=10)
            response.release()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("evil.example", 403),
        ("evil.example:8470", 403),
        ("127.0.0.1.evil.example", 403),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("127.0.0.1:8470", 200),
        ("[::1]:8470", 200),
    ],
)
async def test_foreign_host_names_are_refused(
    http: aiohttp.ClientSession, host: str, expected: int
) -> None:
    for path in ("/api/status", "/"):
        async with http.get(path, headers={"Host": host}) as response:
            assert response.status == expected
            if expected == 403:
                body = await response.json()
                assert_error(response.status, body, 403, "host_not_allowed")


async def test_any_host_when_allowed_hosts_is_none(node: LocalNode) -> None:
    from gridnode.api import start_api

    running = await start_api(make_app(node, token=TOKEN, allowed_hosts=None), "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession(base_url=running.url) as session,
            session.get("/api/status", headers={"Host": "gridbox.lan"}) as response,
        ):
            assert response.status == 200
    finally:
        await running.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    ],
)
async def test_malformed_http_is_a_400_without_traceback(api: Any, raw: bytes) -> None:
    """Broken HTTP never reaches our handlers: aiohttp's parser answers a plain-text 400."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:80]
    assert b"Traceback" not in answer and b".py" not in answer


async def test_ledger_refusals_keep_their_reason(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    """The ledger re-checks with its own clock: a slot the API still thought open is a 422 too."""
    node.commit(advance_ms=600_000)  # the ledger's time passes FIRST_OPEN's gate closure
    node.now_ms = T0_MS + 1_000  # ... while this node's clock lags behind the proposer's
    status, body = await call(http, "POST", "/api/orders", json=SELL, headers=AUTH)
    assert_error(status, body, 422, "slot_closed")
    assert len(node.placed) == 1 and len(node.app.mempool) == 0
