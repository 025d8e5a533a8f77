"""The asyncio -> trio bridge: calls, errors, cancellation, contexts, and a clean stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from gridnode.net.bridge import TrioBridge
from market.errors import UsageError


def trio_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gridnode-trio")]


async def double(x: int) -> int:
    await trio.sleep(0)
    trio.lowlevel.current_trio_token()  # raises outside trio: proves we run on the trio side
    return 2 * x


async def fail() -> None:
    await trio.sleep(0)
    raise ValueError("boom")


@pytest.mark.asyncio
async def test_call_returns_results_and_raises_errors() -> None:
    async with TrioBridge() as bridge:
        assert await bridge.call(double, 21) == 42
        results = await asyncio.gather(*(bridge.call(double, i) for i in range(50)))
        assert results == [2 * i for i in range(50)]
        with pytest.raises(ValueError, match="boom"):
            await bridge.call(fail)
    assert trio_threads() == []


@pytest.mark.asyncio
async def test_cancelling_the_asyncio_side_cancels_the_trio_task() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with TrioBridge() as bridge:
        task = asyncio.create_task(bridge.call(forever))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not cancelled.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert cancelled.is_set()


@pytest.mark.asyncio
async def test_spawn_survives_failures_and_stop_cancels_it() -> None:
    ran = threading.Event()
    ended = threading.Event()

    async def background() -> None:
        ran.set()
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    bridge = TrioBridge().start()
    bridge.spawn(fail)
    bridge.spawn(background)
    assert await bridge.call(double, 1) == 2  # the failed task did not take the bridge down
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (not ran.is_set() or bridge.task_errors < 1) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert bridge.task_errors == 1
    await bridge.aclose()
    assert ended.is_set()
    assert trio_threads() == []
    with pytest.raises(UsageError):
        await bridge.call(double, 1)


def test_call_sync_from_a_plain_thread() -> None:
    with TrioBridge() as bridge:
        assert bridge.call_sync(double, 5) == 10
        with pytest.raises(ValueError, match="boom"):
            bridge.call_sync(fail)
    assert trio_threads() == []
    bridge.stop()  # idempotent


@pytest.mark.asyncio
async def test_enter_keeps_a_context_open_until_stop_and_closes_it_gracefully() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def service(name: str) -> AsyncIterator[str]:
        log.append(f"open {name}")
        try:
            yield name.upper()
        finally:
            await trio.sleep(0.01)  # a graceful close may await: stop() is not a hard cancel
            log.append(f"close {name}")

    bridge = TrioBridge().start()
    assert await bridge.enter(lambda: service("a")) == "A"
    assert await bridge.enter(lambda: service("b")) == "B"
    assert log == ["open a", "open b"]
    await bridge.aclose()
    assert log == ["open a", "open b", "close b", "close a"]
    assert trio_threads() == []


@pytest.mark.asyncio
async def test_enter_propagates_a_failure_to_open() -> None:
    @asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise OSError("port in use")
        yield

    async with TrioBridge() as bridge:
        with pytest.raises(OSError, match="port in use"):
            await bridge.enter(broken)
