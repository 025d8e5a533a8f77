"""The status page's files, served by the local API: the page itself (``gridnode/web``: HTML, JS,
CSS, icon) under a strict Content-Security-Policy (this origin only: no external request), and the
plotly.js bundle the ``plotly`` package ships, read and gzipped once. Split from
:mod:`gridnode.api`, which routes them (docs/page.md)."""

from __future__ import annotations

import asyncio
import gzip
from importlib import resources
from pathlib import Path
from typing import Any, Final

from aiohttp import web

__all__ = ["PAGES_KEY", "PLOTLY_PATH", "STATIC", "load_pages", "page", "plotly_js", "plotly_page"]

#: the page's files (URL path -> bytes, content type), loaded by ``make_app``
PAGES_KEY: Final = web.AppKey("gridnode_pages", dict)

#: Only this origin. plotly.js sets inline styles on the elements it draws ('unsafe-inline' for
#: styles only: a style cannot fetch anything that img-src / default-src do not allow).
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
STATIC: Final = {  # URL path -> (file in gridnode/web, content type)
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/charts.js": ("charts.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
PLOTLY_PATH: Final = "/static/plotly.min.js"


def load_pages() -> dict[str, tuple[bytes, str]]:
    root = resources.files("gridnode") / "web"
    return {
        path: (root.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()
    }


def plotly_js() -> Path:
    """The plotly.js bundle the ``plotly`` Python package ships (no CDN, no download)."""
    import plotly  # noqa: PLC0415  # only its file is needed

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


async def page(request: web.Request) -> web.Response:
    body, ctype = request.app[PAGES_KEY][request.path]
    return web.Response(
        body=body,
        content_type=ctype,
        charset="utf-8" if ctype.startswith("text/") else None,
        headers={"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"},
    )


async def plotly_page(request: web.Request) -> web.Response:
    """plotly.js, read and gzipped once (4.8 MB → 1.4 MB), cached by the browser for a day."""
    pages: dict[str, Any] = request.app[PAGES_KEY]
    held = pages.get(PLOTLY_PATH)
    if held is None:
        raw = await asyncio.to_thread(plotly_js().read_bytes)
        held = pages[PLOTLY_PATH] = (raw, await asyncio.to_thread(gzip.compress, raw, 6))
    raw, packed = held
    headers = {"Cache-Control": "max-age=86400", "Content-Type": "text/javascript; charset=utf-8"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=packed, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=raw, headers=headers)
