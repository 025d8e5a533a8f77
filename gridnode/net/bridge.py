"""A trio event loop in its own thread, driven from asyncio.

Why this bridge: py-libp2p runs only on trio, while the daemon's API and status page (aiohttp) and
the test-suite (pytest-asyncio) run on asyncio. ``shared/notes/py-libp2p.md`` measured three ways
to combine them: trio in its own thread (cross-loop call p50 0.1–0.2 ms, works under
pytest-asyncio), trio guest mode on the asyncio loop (similar speed, but one guest run per asyncio
loop and the two schedulers share one thread, so a CPU-heavy libp2p burst stalls the HTTP side),
and trio-asyncio (crashes under pytest-asyncio). A dedicated thread is the simplest to reason about,
keeps libp2p's CPU bursts off the asyncio loop's latency, and its whole lifetime is one object with
an explicit :meth:`TrioBridge.stop`.

Rules:

* Everything libp2p-related runs on the bridge's trio thread; asyncio code reaches it only through
  :meth:`~TrioBridge.call` (awaitable), :meth:`~TrioBridge.run_sync` (a plain function, awaitable),
  :meth:`~TrioBridge.call_sync` (blocking, for non-async code
  such as a CLI), :meth:`~TrioBridge.spawn` (fire and forget) and :meth:`~TrioBridge.enter`
  (keep an async context manager — e.g. a libp2p host — open until :meth:`~TrioBridge.stop`).
* Results and exceptions cross back unchanged. Cancelling an asyncio ``call`` cancels the trio task.
* :meth:`~TrioBridge.stop` first closes entered contexts gracefully (newest first, each within
  ``grace_s``), then cancels every remaining task and joins the thread: after it returns no thread
  of ours is left. It is idempotent. A bridge that was never stopped would keep the process alive at
  exit, so the class is also a context manager (sync and async).
* An exception escaping a :meth:`~TrioBridge.spawn` task is logged and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import trio

from market.errors import UsageError

__all__ = ["TrioBridge"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class TrioBridge:
    """Owns one trio thread. Start with :meth:`start` (or ``with``/``async with``)."""

    def __init__(self, *, name: str = "gridnode-trio", grace_s: float = 3.0) -> None:
        self._name = name
        self._grace_s = grace_s
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._stop_requested: trio.Event | None = None
        self._contexts: list[trio.Event] = []
        self._contexts_done: list[trio.Event] = []
        self._startup_error: BaseException | None = None
        self._stopped = False
        self.task_errors = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> TrioBridge:
        """Start the trio thread and wait until it accepts calls."""
        if self._thread is not None:
            raise UsageError("TrioBridge.start() called twice")
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # pragma: no cover - only on a broken trio install
            self._startup_error = exc
            self._ready.set()

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop_requested = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop_requested.wait()
            # graceful: close entered contexts newest first, each within the grace period
            pairs = list(zip(self._contexts, self._contexts_done, strict=True))
            for release, done in reversed(pairs):
                release.set()
                with trio.move_on_after(self._grace_s):
                    await done.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def _request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close entered contexts, cancel all tasks, join the thread. Idempotent; blocks."""
        if self._thread is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._request_stop)
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # pragma: no cover - a task ignoring cancellation
            log.error("trio bridge thread did not stop within %.1f s", timeout_s)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """:meth:`stop` for asyncio code: the event loop keeps running while trio shuts down."""
        if self._thread is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._request_stop)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._thread.is_alive() and loop.time() < deadline:
            await asyncio.sleep(0.005)
        self._thread.join(0.1)

    def __enter__(self) -> TrioBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> TrioBridge:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls -----------------------------------------------------------------------------------

    def _live_token(self) -> trio.lowlevel.TrioToken:
        if self._token is None or self._stopped:
            raise UsageError("the trio bridge is not running (start() it, and not after stop())")
        return self._token

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the trio thread; await its result from asyncio."""
        token = self._live_token()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        def deliver(outcome: tuple[bool, Any]) -> None:
            if fut.done():
                return
            ok, value = outcome
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        async def runner() -> None:
            outcome: tuple[bool, Any]
            with scope:
                try:
                    outcome = (True, await fn(*args))
                except Exception as exc:
                    outcome = (False, exc)
            if scope.cancelled_caught:
                outcome = (False, asyncio.CancelledError())
            with contextlib.suppress(RuntimeError):  # asyncio loop already closed
                loop.call_soon_threadsafe(deliver, outcome)

        def start_in_trio() -> None:
            if self._nursery is None:
                loop.call_soon_threadsafe(deliver, (False, UsageError("trio bridge stopped")))
                return
            self._nursery.start_soon(runner)

        try:
            token.run_sync_soon(start_in_trio)
        except trio.RunFinishedError as exc:
            raise UsageError("the trio bridge has stopped") from exc
        try:
            return await fut
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``fn(*args)`` on the trio thread (e.g. to register a handler)."""

        async def wrapper() -> T:
            return fn(*args)

        return await self.call(wrapper)

    def call_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the trio thread and block this (non-trio) thread for it."""
        token = self._live_token()
        if self._thread is threading.current_thread():
            raise UsageError("call_sync() from the trio thread itself would deadlock")
        try:
            return trio.from_thread.run(fn, *args, trio_token=token)
        except trio.RunFinishedError as exc:
            raise UsageError("the trio bridge has stopped") from exc

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` on the trio thread without waiting; errors are logged, not raised."""
        token = self._live_token()

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception:
                self.task_errors += 1
                log.exception("task %r on the trio bridge failed", fn)

        def start_in_trio() -> None:
            if self._nursery is not None:
                self._nursery.start_soon(guarded)

        try:
            token.run_sync_soon(start_in_trio)
        except trio.RunFinishedError as exc:
            raise UsageError("the trio bridge has stopped") from exc

    async def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Enter ``factory()`` on the trio thread and keep it open until :meth:`stop`.

        Returns what the context manager yields (e.g. a :class:`~gridnode.net.host.NetHost`). The
        context is exited gracefully by :meth:`stop`, newest first.
        """
        self._live_token()
        got: dict[str, Any] = {}

        async def open_it() -> None:
            release_evt = trio.Event()
            done_evt = trio.Event()
            entered = trio.Event()
            self._contexts.append(release_evt)
            self._contexts_done.append(done_evt)

            async def holder() -> None:
                try:
                    async with factory() as value:
                        got["value"] = value
                        entered.set()
                        await release_evt.wait()
                except Exception as exc:
                    if not entered.is_set():
                        got["error"] = exc
                        entered.set()
                    else:
                        log.exception("closing %r failed", factory)
                finally:
                    entered.set()
                    done_evt.set()

            assert self._nursery is not None
            self._nursery.start_soon(holder)
            await entered.wait()

        await self.call(open_it)
        if "error" in got:
            raise got["error"]
        if "value" not in got:
            raise UsageError("the trio bridge stopped before the context was entered")
        value: T = got["value"]
        return value
