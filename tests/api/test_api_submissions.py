"""``GET /api/submissions``: the orders this node submitted and the answers, read-only."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gridnode.status import Submission
from tests.api.node import FIRST_OPEN, LocalNode

pytestmark = pytest.mark.asyncio


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(path) as response:
        return response.status, json.loads(await response.text())


async def test_submissions_list_what_the_node_sent_and_filter_by_slot(
    node: LocalNode, http: aiohttp.ClientSession
) -> None:
    status, body = await get(http, "/api/submissions")
    assert status == 200 and body["submissions"] == []
    node.submissions = (
        Submission(FIRST_OPEN, node.now_ms - 5, "q-1", "ab" * 32, "sell", 800, 2, True),
        Submission(FIRST_OPEN + 1, node.now_ms, "q-2", "cd" * 32, "buy", 300, 1, False, "late"),
    )
    status, body = await get(http, "/api/submissions")
    assert status == 200
    assert body["household"] == node.key.public_hex and body["now_ms"] == node.now_ms
    assert body["submissions"] == [
        {"slot": FIRST_OPEN, "at_ms": node.now_ms - 5, "order_id": "q-1", "tx_id": "ab" * 32,
         "side": "sell", "energy_wh": 800, "steps": 2, "accepted": True, "reason": ""},
        {"slot": FIRST_OPEN + 1, "at_ms": node.now_ms, "order_id": "q-2", "tx_id": "cd" * 32,
         "side": "buy", "energy_wh": 300, "steps": 1, "accepted": False, "reason": "late"},
    ]  # fmt: skip
    _, one = await get(http, f"/api/submissions?slot={FIRST_OPEN + 1}")
    assert [s["order_id"] for s in one["submissions"]] == ["q-2"]
    status, bad = await get(http, "/api/submissions?slot=soon")
    assert (status, bad["error"]["reason"], bad["error"]["field"]) == (400, "bad_parameter", "slot")
    status, bad = await get(http, "/api/submissions?since=1")
    assert (status, bad["error"]["reason"]) == (400, "unknown_parameter"), bad
