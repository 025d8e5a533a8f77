"""The status page in a real headless Chromium: it shows what the node pushes over server-sent events.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``GRIDNODE_CHROMIUM``) and the ``playwright``
Python package (driving that browser; no browser is downloaded). Skipped, with the reason, where
either is missing — unless ``GRIDNODE_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridnode.status import Submission
from market.orders import Side
from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import AUTH, ServerThread

CHROMIUM = os.environ.get("GRIDNODE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_DIR = os.environ.get("GRIDNODE_SCREENSHOT_DIR")

#: CI sets this (after installing both) so that a missing browser fails instead of skipping.
REQUIRED = os.environ.get("GRIDNODE_REQUIRE_BROWSER") == "1"


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"GRIDNODE_REQUIRE_BROWSER=1 but {what}")
    pytest.skip(what)


@pytest.fixture
def page() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("no playwright package (pip install playwright)")
        raise
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1100})
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def wait_height(page: Any, height: int) -> None:
    """Wait (15 s deadline) until the page has shown the status of ``height`` (pushed to it)."""
    expect(page.locator("body")).to_have_attribute("data-height", str(height), timeout=15_000)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def test_page_follows_the_node_over_server_sent_events(page: Any, tmp_path: Path) -> None:
    """The page never polls: every change below reaches it over /api/events."""
    node = LocalNode()
    external: list[str] = []
    with ServerThread(node) as server:
        page.on(
            "request",
            lambda r: None if r.url.startswith(server.url) else external.append(r.url),
        )
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url.removeprefix(server.url)))
        server.on_loop(node.commit)
        page.goto(server.url + "/")
        wait_height(page, 1)
        status = server.get_json("/api/status")
        expect(page.locator("#health")).to_have_text("in sync · height 1")
        assert page.locator("#health").get_attribute("data-level") == "ok"
        assert text(page, "#community") == "api-test"
        assert text(page, "#node-validators") == "1 of 1 reachable — quorum"
        assert text(page, "#node-open").startswith(status["first_open_delivery"])
        assert text(page, "#orders-table tbody") == "no order submitted yet"

        # an order of ours, a bid from a neighbour: the order shows as open, then its fate
        body = (
            b'{"slot": %d, "side": "sell", "steps": [{"price": 100000, "energy_wh": 500}]}'
            % FIRST_OPEN
        )
        code, _, placed = server.request(
            "POST", "/api/orders", body=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert code == 202
        order_id = json.loads(placed)["order_id"]

        def progress() -> None:
            node.submissions = (
                Submission(FIRST_OPEN, node.now_ms, order_id, "00" * 32, "sell", 500, 1, True),
            )
            node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (250_000, 400)))
            node.misbehaviour = {"bad_signature": 2}
            node.commit()

        server.on_loop(progress)
        wait_height(page, 2)
        expect(page.locator("#orders-table tbody .fate")).to_have_text("open")
        assert "08:15–08:30" in text(page, "#orders-table tbody")
        page.locator("#operator summary").click()
        expect(page.locator("#op-misbehaviour")).to_contain_text("bad_signature 2")

        server.on_loop(lambda: node.commit(advance_ms=600_000))  # gate closes: cleared
        wait_height(page, 3)
        expect(page.locator("#orders-table tbody .fate")).to_have_text("partly")
        assert "sold 400 Wh of 500 Wh" in text(page, "#orders-table tbody")
        expect(page.locator("#trades-table tbody")).to_contain_text("awaiting readings")

        # delivered and settled: today's bill, the trade kept after settlement
        def settle() -> None:
            node.commit(advance_ms=1_200_000)
            node.metered(FIRST_OPEN, 500, pv_wh=700, load_wh=200)
            node.submit(node.reading(-1, FIRST_OPEN, 500))
            for i, wh in enumerate((-400, 0, 0)):
                node.submit(node.reading(i, FIRST_OPEN, wh))
            node.commit()

        server.on_loop(settle)
        wait_height(page, 5)
        totals = node.app.state.totals[node.key.public_hex]
        earned = -totals.bill_micro
        expect(page.locator("#bill-today")).to_have_text(
            f"{earned // 1_000_000}.{earned % 1_000_000 // 100:04d} ¤ earned"
        )
        row = text(page, "#trades-table tbody")
        assert "sell" in row and "400 Wh" in row and "yes" in row
        expect(page.locator("#why-text")).to_contain_text("You sold 400 Wh of it")
        if SCREENSHOT_DIR:
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / "status-page.png"), full_page=True)
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
        assert (tmp_path / "status-page.png").stat().st_size > 10_000

    # the daemon goes away: the page says so instead of showing stale values as live
    expect(page.locator("#health")).to_have_text("daemon not answering — retrying", timeout=15_000)
    polled = [
        r
        for r in requests
        if r.startswith("/api/") and not r.startswith(("/api/events", "/api/slot"))
    ]
    assert polled == [], polled  # everything came over the event stream
    assert [e for e in errors if "api/events" not in e and "ERR_CONNECTION_REFUSED" not in e] == []
    assert external == []
