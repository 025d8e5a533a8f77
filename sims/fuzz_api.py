"""API fuzzing: what a local user (or a page on another site) can send a daemon's HTTP API.

:func:`request_bytes` draws one HTTP/1.1 request from a seeded :class:`random.Random`: any method,
the API's paths and others (long, percent-encoded, traversal, NUL), query parameters (the
documented ones with odd values: huge and negative integers, floats, repeats, bad escapes),
``Host`` headers (loopback names, other names, ``localhost:80@evil.com``, none), authorization
(none, malformed, wrong, right), content types and lengths (missing, lying, chunked), and bodies
(near-valid orders, JSON of any shape, 5,000-digit integers, deep nesting, invalid UTF-8, truncated
JSON, over the size limit); a share are raw garbage lines. :func:`fuzz_api` sends them over a few
keep-alive connections (asyncio streams, so malformed requests reach the server as written) and
tallies the answers (:class:`ApiTally`).

**Checks**: no answer is a 5xx (a 500 is a bug by the API's own rule; a 503 is allowed only for
``POST``/``DELETE`` of orders, when no validator answered), every JSON error names a reason of the
closed set, no answer carries a traceback, and the daemon is alive and committing afterwards (the
caller checks its log for tracebacks).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from market.errors import REASONS

__all__ = ["ApiTally", "fuzz_api", "request_bytes"]

PATHS: Final = (
    "/api/status", "/api/peers", "/api/orders", "/api/trades", "/api/blocks", "/api/balance",
    "/api/forecast", "/api/submissions", "/api/evidence", "/", "/static/app.js",
    "/static/style.css", "/api/orders/1", "/api/",
)  # fmt: skip
PARAMS: Final = ("mine", "slot", "limit", "from", "x", "", "slot[]")
METHODS: Final = ("GET", "GET", "GET", "GET", "POST", "POST", "POST", "DELETE", "DELETE", "PUT",
                  "PATCH", "HEAD", "OPTIONS", "TRACE")  # fmt: skip


def _int_text(rng: random.Random) -> str:
    return rng.choice(
        [
            str(rng.randint(-5, 10**6)),
            str(2**63),
            str(2**64),
            str(-(2**63) - 1),
            "9" * rng.choice((18, 19, 20, 21, 400, 5_000)),
            "1e9",
            "1.5",
            "0x10",
            "",
            " 1",
            "NaN",
            "true",
            "%00",
            "٣",  # an Arabic-Indic digit: isdigit() but not ASCII
        ]
    )


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.35:
        return rng.choice(
            [
                None, True, False, 0, -1, 2**63, 2**64, -(2**70), 1.5, -0.0, 1e308,
                "", "buy", "sell", "x" * rng.randint(0, 300), "\u0000", "\ud83d\ude00",
            ]
        )  # fmt: skip
    if r < 0.7:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["slot", "side", "steps", "price", "energy_wh", "price_micro_per_kwh", "x"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _order_body(rng: random.Random, first_open: int) -> Any:
    steps = [
        {
            rng.choice(("price", "price_micro_per_kwh")): rng.choice(
                (rng.randint(-1, 300_001), 80_000, 2**63, "100", 1.0, None)
            ),
            "energy_wh": rng.choice((rng.randint(-1, 5_000), 0, 10**9, 2**64, "5", 2.5)),
        }
        for _ in range(rng.choice((0, 1, 1, 2, 16, 17)))
    ]
    body: dict[str, Any] = {
        "slot": rng.choice(
            (first_open, first_open + 1, first_open - 1, first_open + 10_000, 2**64, -1, "1", None)
        ),
        "side": rng.choice(("buy", "sell", "BUY", "", None, 1)),
        "steps": steps,
    }
    for key in list(body):
        if rng.random() < 0.1:
            del body[key]
    if rng.random() < 0.1:
        body[rng.choice(("extra", "nonce", "household"))] = _json_value(rng)
    return body


def _valid_order(rng: random.Random, first_open: int) -> dict[str, Any]:
    return {
        "slot": first_open + rng.randint(0, 3),
        "side": rng.choice(("buy", "sell")),
        "steps": [
            {"price": rng.randint(80_000, 300_000), "energy_wh": rng.randint(1, 2_000)}
            for _ in range(rng.randint(1, 3))
        ],
    }


def _body(rng: random.Random, first_open: int) -> bytes:
    r = rng.random()
    if r < 0.2:
        return json.dumps(_valid_order(rng, first_open)).encode()
    if r < 0.45:
        return json.dumps(_order_body(rng, first_open)).encode()
    if r < 0.6:
        return json.dumps(_json_value(rng)).encode()
    if r < 0.65:
        return b'{"slot": ' + b"9" * rng.choice((21, 4_301, 10_000)) + b', "side": "buy"}'
    if r < 0.7:
        return b"[" * rng.choice((100, 1_000, 5_000)) + b"]" * rng.choice((0, 100))
    if r < 0.75:
        return b'{"side": "\xff\xfe", "slot": 1}'  # not UTF-8
    if r < 0.8:
        return json.dumps(_order_body(rng, first_open)).encode()[: rng.randint(0, 40)]
    if r < 0.85:
        return b'{"steps": [' + b'{"price": 1, "energy_wh": 1},' * 1_000 + b"]}"  # > 16 KiB
    if r < 0.9:
        return b"NaN" if rng.random() < 0.5 else b'{"slot": NaN, "side": Infinity}'
    return rng.randbytes(rng.randint(0, 200))


def _path(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.7:
        path = rng.choice(PATHS)
    elif r < 0.8:
        path = "/api/orders/" + rng.choice(
            ("1", "-1", "99999999999999999999", "1.5", "%31", "abc", "٣", "", "1/2", "%00")
        )
    elif r < 0.9:
        path = rng.choice(("/../../etc/passwd", "/static/../api.token", "/static/%2e%2e/x",
                           "//api/status", "/api/status/", "/API/STATUS", "/%00", "/x" * 2_000,
                           "/static/app.js%00.html", "*"))  # fmt: skip
    else:
        path = "/" + "".join(rng.choice("abc/%.~_-é") for _ in range(rng.randint(0, 30)))
    if rng.random() < 0.5:
        pairs = []
        for _ in range(rng.randint(1, 4)):
            value = _int_text(rng) if rng.random() < 0.8 else rng.choice(("true", "false", "1", "0", "yes", "%zz", ""))  # fmt: skip
            pairs.append(f"{rng.choice(PARAMS)}={value}")
        path += "?" + "&".join(pairs)
    if rng.random() < 0.9:  # mostly well-formed URLs, so requests get past the HTTP parser
        path = quote(path, safe="/?&=%*~")
    return path


def request_bytes(
    rng: random.Random, *, host: str, token: str, first_open: int
) -> tuple[str, str, bytes]:
    """One request: ``(method, path, raw bytes)`` (see the module docstring)."""
    if rng.random() < 0.03:  # not HTTP at all, or a broken request line
        raw = rng.choice(
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40),  # TLS hello
                b"GET /api/status HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
                b"GET /api/status HTTP/1.1\r\n" + b"X: " + b"a" * 20_000 + b"\r\n\r\n",
                rng.randbytes(rng.randint(1, 100)) + b"\r\n\r\n",
            )
        )
        return "RAW", "", raw
    method = rng.choice(METHODS) if rng.random() < 0.98 else rng.choice(("get", "GÉT", "G\tT"))
    path = _path(rng)
    if method in ("POST", "DELETE") and rng.random() < 0.5:
        path = (
            "/api/orders" if method == "POST" else f"/api/orders/{first_open + rng.randint(-1, 3)}"
        )
    headers: list[tuple[str, str]] = []
    h = rng.random()
    if h < 0.8:
        headers.append(("Host", host))
    elif h < 0.95:
        headers.append(("Host", rng.choice(("evil.com", "localhost:80@evil.com", "127.0.0.1:0",
                                            "[::1]", "localhost:99999", "LOCALHOST", ""))))  # fmt: skip
    a = rng.random()
    if a < 0.6:
        headers.append(("Authorization", f"Bearer {token}"))
    elif a < 0.8:
        headers.append(("Authorization", rng.choice(("Bearer", "Bearer x", "Basic abc", "bearer " + token, "Bearer  " + token + " ", "Bearer é"))))  # fmt: skip
    body = (
        _body(rng, first_open) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.05 else b""
    )
    c = rng.random()
    if c < 0.8:
        headers.append(("Content-Type", "application/json"))
    elif c < 0.9:
        headers.append(("Content-Type", rng.choice(("text/plain", "application/json; charset=latin-1", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"))))  # fmt: skip
    chunked = body and rng.random() < 0.05
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        length = len(body)
        if body and rng.random() < 0.03:
            length = max(0, length + rng.choice((-5, -1, 1)))
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(length)))
        payload = body
        if length > len(body):  # the server would wait for the rest: send what was promised
            payload = body + b" " * (length - len(body))
    if rng.random() < 0.02:
        headers.append(("Origin", "https://evil.com"))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return method, path, head.encode("utf-8", "surrogateescape") + payload


@dataclass
class ApiTally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # error reason -> answers
    #: 4xx answers aiohttp wrote itself for malformed HTTP (plain text), and dropped connections
    plain_4xx: int = 0
    no_answer: int = 0
    plain_examples: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # 5xx not allowed by the rules
    unknown_reasons: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def http_500(self) -> int:
        return self.statuses.get(500, 0)

    @property
    def ok(self) -> bool:
        return not (self.server_errors or self.unknown_reasons or self.tracebacks)

    def lines(self) -> list[str]:
        rate = self.requests / self.seconds if self.seconds else 0.0
        return [
            f"API requests: {self.requests:,} in {self.seconds:.0f} s ({rate:,.0f}/s)",
            f"statuses: {dict(sorted(self.statuses.items()))}",
            f"refusals by reason: {dict(sorted(self.reasons.items()))}",
            f"HTTP 500: {self.http_500}; other 5xx not allowed: {len(self.server_errors)}; "
            f"reasons outside the closed set: {len(self.unknown_reasons)}; tracebacks in "
            f"answers: {len(self.tracebacks)}; plain 4xx from the HTTP parser: {self.plain_4xx}; "
            f"closed without an answer: {self.no_answer}",
            "OK" if self.ok else "FAILED",
        ]


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    parts = line.split(b" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if method == "HEAD" or status in (204, 304):
        return status, headers, body
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return status, headers, body


def _judge(
    tally: ApiTally, method: str, path: str, answer: tuple[int, dict[str, str], bytes]
) -> None:
    status, headers, body = answer
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    if b"Traceback" in body:
        tally.tracebacks.append(f"{method} {path}: {body[:300]!r}")
    if status >= 500:
        allowed = status == 503 and method in ("POST", "DELETE") and path.startswith("/api/orders")
        if not allowed:
            tally.server_errors.append(f"{status} {method} {path[:200]}: {body[:300]!r}")
    if status >= 400 and method != "HEAD":
        if "application/json" not in headers.get("content-type", ""):
            tally.plain_4xx += 1
            if len(tally.plain_examples) < 20:
                tally.plain_examples.append(f"{status} {method} {path[:120]}: {body[:120]!r}")
            return
        try:
            reason = json.loads(body)["error"]["reason"]
        except (ValueError, KeyError, TypeError):
            tally.unknown_reasons.append(f"{status} {method} {path[:100]}: {body[:200]!r}")
            return
        tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
        if reason not in REASONS:
            tally.unknown_reasons.append(f"{status} {method} {path[:100]}: {reason}")


async def fuzz_api(
    address: tuple[str, int],
    *,
    requests: int,
    seed: int,
    token: str,
    first_open: Callable[[], int],
    connections: int = 8,
    progress: Callable[[ApiTally], None] | None = None,
) -> ApiTally:
    """Send ``requests`` fuzzed requests to the API at ``address`` (see the module docstring)."""
    tally = ApiTally()
    started = time.monotonic()
    rng = random.Random(seed)
    todo = [request_bytes(rng, host="127.0.0.1", token=token, first_open=first_open()) for _ in range(min(requests, 2_000))]  # fmt: skip
    made = len(todo)
    lock = asyncio.Lock()

    async def next_request() -> tuple[str, str, bytes] | None:
        nonlocal made
        async with lock:
            if tally.requests >= requests:
                return None
            tally.requests += 1
            if not todo:
                batch = min(2_000, requests - made)
                start = first_open()
                todo.extend(request_bytes(rng, host="127.0.0.1", token=token, first_open=start) for _ in range(batch))  # fmt: skip
                made += batch
            if progress is not None and tally.requests % 10_000 == 0:
                tally.seconds = time.monotonic() - started
                progress(tally)
            return todo.pop()

    async def worker() -> None:
        reader = writer = None
        while True:
            item = await next_request()
            if item is None:
                break
            method, path, raw = item
            for _attempt in range(3):
                if writer is None:
                    reader, writer = await asyncio.open_connection(*address)
                assert reader is not None
                try:
                    writer.write(raw)
                    await writer.drain()
                    answer = await asyncio.wait_for(_read_response(reader, method), 30)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                    answer = None
                except TimeoutError:
                    tally.server_errors.append(f"no answer within 30 s: {method} {path[:200]}")
                    answer = None
                if answer is not None:
                    _judge(tally, method, path, answer)
                    headers = answer[1]
                    if headers.get("connection", "").lower() == "close" or method == "RAW":
                        writer.close()
                        reader = writer = None
                    break
                writer.close()
                reader = writer = None
                if method == "RAW":  # the server may close a garbage connection unanswered
                    tally.no_answer += 1
                    break
            else:
                tally.no_answer += 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    tally.seconds = time.monotonic() - started
    return tally
