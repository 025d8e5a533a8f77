"""Fixtures: a real in-process node and the real API served on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from gridnode.api import RunningApi, make_app, start_api
from tests.api.node import LocalNode
from tests.api.server import TOKEN


@pytest.fixture
def node() -> LocalNode:
    return LocalNode()


@pytest_asyncio.fixture
async def api(node: LocalNode) -> AsyncIterator[RunningApi]:
    running = await start_api(make_app(node, token=TOKEN), "127.0.0.1", 0)
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture
async def http(api: RunningApi) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=api.url) as session:
        yield session
