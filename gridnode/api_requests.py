"""How the local API reads a request and refuses a bad one (see :mod:`gridnode.api`).

Rules of this module:

* A refused request is an :class:`ApiError`: a 4xx status, a reason code from the closed set of
  :mod:`market.errors` (an :class:`~market.errors.ApiReason`, or the order/ledger/data rule that
  refused it), the offending field and a message. :func:`errors_middleware` turns it — and
  aiohttp's own HTTP errors — into ``{"error": {"reason", "field", "message"}}``; anything
  unexpected is a JSON 500 ``internal`` with the traceback in the log only. A client that goes
  away mid-request is one info line, not an error.
* ``Host`` must be ``name`` or ``name:port`` (decimal port 1-65535; ``[v6]`` and ``[v6]:port`` for
  IPv6) with ``name`` one of the allowed hosts (DNS-rebinding protection, :func:`host_name`).
* Query parameters: only the documented ones; integers are ASCII digits, at most 18 of them.
* JSON bodies: ``application/json``, at most :data:`MAX_BODY_BYTES`, UTF-8, integers of at most
  :data:`MAX_INT_DIGITS` digits (``number_too_long``; Python itself refuses past 4,300 digits with a
  ``ValueError`` that was a 500). An order request has exactly ``slot``, ``side``, ``steps``.
* aiohttp's server log (:data:`QUIET_SERVER_LOG`) reports a malformed HTTP request (which aiohttp
  answers with a plain 400 itself) or a lost connection as one debug line, not an ERROR traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gridnode.status import NodeHandle, Snapshot
from market.errors import ApiReason, DataReason, OrderReason, Reason, WireReason
from market.orders import Order, Side, Step

__all__ = [
    "HANDLE_KEY",
    "HOSTS_KEY",
    "MAX_BODY_BYTES",
    "MAX_INT_DIGITS",
    "QUIET_SERVER_LOG",
    "ApiError",
    "bool_param",
    "check_params",
    "errors_middleware",
    "field_int",
    "host_name",
    "int_param",
    "json_body",
    "parse_order_request",
    "snapshot_of",
]

#: the node the API serves (a :class:`~gridnode.status.NodeHandle`), set by ``make_app``
HANDLE_KEY: Final = web.AppKey("gridnode_handle", NodeHandle)


def snapshot_of(request: web.Request) -> Snapshot:
    """The node's latest snapshot, as the request's handlers read it."""
    return request.app[HANDLE_KEY].snapshot()


log = logging.getLogger("gridnode.api")

#: The largest request body accepted (an order with 16 steps is ~1 KiB of JSON).
MAX_BODY_BYTES: Final = 16 * 1024
#: The longest JSON integer accepted, in digits (every integer field fits in 63 bits: 19 digits).
MAX_INT_DIGITS: Final = 20
#: the host names the API answers to (empty: any)
HOSTS_KEY: Final = web.AppKey("gridnode_allowed_hosts", frozenset)


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
async def errors_middleware(
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
    allowed: frozenset[str] = request.app[HOSTS_KEY]
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


def check_params(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise ApiError(
                400,
                ApiReason.UNKNOWN_PARAMETER,
                f"unknown query parameter {name[:64]!r} (known: {known})",
            )


def int_param(
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


def bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "0").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(400, ApiReason.BAD_PARAMETER, f"{name} must be 0 or 1, got {raw!r}", field=name)


class _NumberTooLong(Exception):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong(len(text))
    return int(text)


async def json_body(request: web.Request) -> Any:
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


def field_int(doc: Mapping[str, Any], key: str, where: str) -> int:
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


def parse_order_request(doc: Any, household: str, order_id: str) -> Order:
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
    slot = field_int(doc, "slot", "")
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
        steps.append(Step(field_int(step, price_key, where), field_int(step, "energy_wh", where)))
    return Order(
        order_id=order_id,
        household=household,
        side=Side(side_raw),
        slot=slot,
        steps=tuple(steps),
        nonce=0,
    )


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


QUIET_SERVER_LOG: Final = _QuietServerLog(logging.getLogger("gridnode.api.http"), {})
