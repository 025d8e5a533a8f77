"""Serve the real API for a :class:`LocalNode` from a background thread's asyncio loop.

Sync tests (the CLI, Hypothesis, the browser) talk to it over real HTTP. The node is single-owner:
tests change it only through :meth:`ServerThread.on_loop`, which runs a function on the server's loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from gridnode.api import RunningApi, make_app, start_api
from tests.api.node import LocalNode

T = TypeVar("T")
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ServerThread:
    def __init__(self, node: LocalNode, *, token: str = TOKEN) -> None:
        self.node = node
        self.token = token
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="api-test-loop")
        self.api: RunningApi | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        app = make_app(self.node, token=self.token)
        self.api = asyncio.run_coroutine_threadsafe(
            start_api(app, "127.0.0.1", 0), self.loop
        ).result(timeout=30)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.api is not None:
            asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        self.loop.close()

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    @property
    def port(self) -> int:
        assert self.api is not None
        return self.api.port

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (where the node lives) and return its result."""
        done: Future[T] = Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return done.result(timeout=30)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)
