"""Requests that used to get a 500, pass a check they should fail, or fill the log with tracebacks
(issue 11, items 4 and 7): each is now a 4xx with a reason code, and a client's mistake is one
quiet log line."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from gridnode.api import RunningApi
from gridnode.api_requests import host_name
from gridnode.status import PeerInfo
from market.errors import REASONS
from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import AUTH

SELL = {"slot": FIRST_OPEN, "side": "sell", "steps": [{"price": 100_000, "energy_wh": 500}]}
AHEAD = 672  # the genesis default of max_order_ahead_slots


async def post_order(http: aiohttp.ClientSession, body: bytes) -> tuple[int, Any]:
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post("/api/orders", data=body, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("slot", "status", "reason"),
    [
        (2**64, 422, "bad_slot"),  # was a 500: OverflowError while signing
        (2**63, 422, "bad_slot"),  # was accepted and held forever
        (10**18, 422, "slot_too_far_ahead"),  # was accepted and held forever
        (FIRST_OPEN + AHEAD + 1, 422, "slot_too_far_ahead"),
        (FIRST_OPEN + AHEAD, 202, ""),  # the last slot of the window
    ],
)
@pytest.mark.asyncio
async def test_a_slot_far_ahead_is_refused_with_its_reason(
    node: LocalNode, http: aiohttp.ClientSession, slot: int, status: int, reason: str
) -> None:
    got, body = await post_order(http, json.dumps({**SELL, "slot": slot}).encode())
    assert got == status, body
    if reason:
        assert body["error"]["reason"] == reason and body["error"]["field"] == "slot"
        assert node.placed == []
    else:
        assert body["accepted"] and node.placed[-1].slot == slot


@pytest.mark.asyncio
async def test_a_cancel_far_ahead_is_refused_with_its_reason(
    http: aiohttp.ClientSession,
) -> None:
    slot = FIRST_OPEN + AHEAD + 1
    async with http.delete(f"/api/orders/{slot}", headers=AUTH) as response:
        body = await response.json()
    assert response.status == 422 and body["error"]["reason"] == "slot_too_far_ahead"


@pytest.mark.parametrize(
    "number", ["9" * 4_301, "-" + "9" * 5_000, "1" + "0" * 21, "123456789012345678901"]
)
@pytest.mark.asyncio
async def test_a_json_integer_too_long_is_a_400(
    node: LocalNode, http: aiohttp.ClientSession, number: str
) -> None:
    """Python refuses to parse integers over 4,300 digits with a ValueError (was a 500)."""
    for body in (
        f'{{"slot": {number}, "side": "sell", "steps": []}}',
        f'{{"slot": 1, "side": "sell", "steps": [{{"price": {number}, "energy_wh": 1}}]}}',
        f"[{number}]",
    ):
        status, answer = await post_order(http, body.encode())
        assert status == 400 and answer["error"]["reason"] == "number_too_long", answer
    assert node.placed == []


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8470", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:65535", "::1"),
        ("localhost:80@evil.com", None),
        ("localhost:80/evil", None),
        ("localhost:", None),
        ("localhost:0", None),
        ("localhost:65536", None),
        ("localhost:123456", None),
        ("localhost: 80", None),
        ("[::1]x", None),
        ("[::1", None),
        ("user@localhost", None),
        ("", None),
    ],
)
def test_a_host_header_is_a_name_and_a_decimal_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("host", ["localhost:80@evil.com", "127.0.0.1:8470@x", "localhost:x"])
@pytest.mark.asyncio
async def test_a_host_with_junk_after_the_port_is_refused(
    http: aiohttp.ClientSession, host: str
) -> None:
    async with http.get("/api/status", headers={"Host": host}) as response:
        body = await response.json()
    assert response.status == 403 and body["error"]["reason"] == "host_not_allowed"


@pytest.mark.asyncio
async def test_every_reason_the_api_answers_is_a_known_code(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    bodies = [b"{", b"[]", b'{"slot": "x"}', json.dumps({**SELL, "slot": -1}).encode(), b"\xff"]
    for body in bodies:
        status, answer = await post_order(http, body)
        assert 400 <= status < 500 and answer["error"]["reason"] in REASONS, answer


async def _raw(api: RunningApi, data: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout=10) if read else b""
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_client_mistakes_are_one_quiet_line_not_an_error_traceback(
    api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    ):
        assert (await _raw(api, raw)).startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    # a client that goes away in the middle of its body
    headers = (
        b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {AUTH['Authorization']}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    await _raw(api, headers + b'{"slot": ', read=False)

    def left() -> bool:
        return any("client left" in r.getMessage() for r in caplog.records)

    for _ in range(100):  # the server notices the lost connection on its own loop
        if left():
            break
        await asyncio.sleep(0.05)
    assert left()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("gridnode"))
    quiet = [r for r in caplog.records if r.name == "gridnode.api.http"]
    assert len(quiet) == 3 and all("\n" not in r.getMessage() for r in quiet)


@pytest.mark.asyncio
async def test_peers_show_their_score_and_ban(node: LocalNode, http: aiohttp.ClientSession) -> None:
    node.peers = (
        PeerInfo("12D3KooWbad", "", False, {"bad_signature": 2}, score=-120.0, banned=True),
        PeerInfo("12D3KooWlate", "", True, {}, score=0.0, banned=False),
    )
    async with http.get("/api/peers") as response:
        peers = {p["peer_id"]: p for p in (await response.json())["peers"]}
    assert peers["12D3KooWbad"]["banned"] and peers["12D3KooWbad"]["score"] == -120.0
    assert not peers["12D3KooWlate"]["banned"] and peers["12D3KooWlate"]["misbehaviour"] == {}
    async with http.get("/api/status") as response:
        assert (await response.json())["banned_peers"] == 1
