"""The status page in a real headless Chromium: it shows live values from the API and follows changes.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``GRIDNODE_CHROMIUM``) and the ``playwright``
Python package (driving that browser; no browser is downloaded). Skipped, with the reason, where
either is missing — unless ``GRIDNODE_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    """Wait (polling, 15 s deadline) until the page has shown data for ``height``."""
    expect(page.locator("body")).to_have_attribute("data-height", str(height), timeout=15_000)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def test_page_shows_live_values(page: Any, tmp_path: Path) -> None:
    node = LocalNode()
    external: list[str] = []
    with ServerThread(node) as server:
        page.on(
            "request",
            lambda r: None if r.url.startswith(server.url) else external.append(r.url),
        )
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        server.on_loop(node.commit)
        page.goto(server.url + "/")
        wait_height(page, 1)
        status = server.get_json("/api/status")
        assert text(page, "#height") == "1"
        assert text(page, "#head-hash") == status["head_hash"]
        assert text(page, "#digest") == status["state_digest"]
        assert text(page, "#current-slot") == str(status["current_slot"])
        assert text(page, "#open-slot") == str(FIRST_OPEN)
        assert text(page, "#gate").endswith(f"(slot {FIRST_OPEN})")
        assert text(page, "#community") == "api-test"
        assert text(page, "#validators") == "1 of 1 reachable — quorum"
        assert text(page, "#orders tbody") == "no open orders"
        assert text(page, "#misbehaviour-total") == "0"
        assert text(page, "#conn") == "live · height 1"

        # the node moves on: an order of ours, a trade, a rejected peer message
        body = (
            b'{"slot": %d, "side": "sell", "steps": [{"price": 100000, "energy_wh": 500}]}'
            % FIRST_OPEN
        )
        code, _, _ = server.request(
            "POST", "/api/orders", body=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert code == 202

        def progress() -> None:
            node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (250_000, 400)))
            node.misbehaviour = {"bad_signature": 2}
            node.commit()

        server.on_loop(progress)
        wait_height(page, 2)
        order_row = text(page, "#orders tbody")
        assert str(FIRST_OPEN) in order_row and "sell" in order_row
        assert "0.1000 ¤/kWh × 500 Wh" in order_row and node.placed[0].order_id in order_row
        assert text(page, "#misbehaviour-total") == "2"
        assert "bad_signature: 2" in text(page, "#misbehaviour")

        server.on_loop(lambda: node.commit(advance_ms=600_000))  # gate closes: cleared
        wait_height(page, 3)
        price = node.app.state.clearing_prices[FIRST_OPEN]
        trade_row = text(page, "#trades tbody")
        assert trade_row.split("\t")[0] == str(FIRST_OPEN)
        assert f"0.{price // 100:04d} ¤/kWh" in trade_row and "400 Wh" in trade_row
        assert "sell 400 Wh for" in trade_row
        assert text(page, "#orders tbody") == "no open orders"

        # settle: the balance and savings appear
        def settle() -> None:
            node.commit(advance_ms=1_200_000)
            node.submit(node.reading(-1, FIRST_OPEN, 500))
            for i, wh in enumerate((-400, 0, 0)):
                node.submit(node.reading(i, FIRST_OPEN, wh))
            node.commit()

        server.on_loop(settle)
        wait_height(page, 5)
        balance = server.get_json("/api/balance")
        assert balance["savings_micro"] > 0
        savings = balance["savings_micro"]
        assert (
            text(page, "#savings") == f"{savings // 1_000_000}.{savings % 1_000_000 // 100:04d} ¤"
        )
        assert text(page, "#p2p") == "0 Wh / 400 Wh"
        assert text(page, "#settled") == "1"
        assert "settled (or no trades)" in text(page, "#trades tbody")
        if SCREENSHOT_DIR:
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / "status-page.png"), full_page=True)
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
        assert (tmp_path / "status-page.png").stat().st_size > 10_000

    # the daemon goes away: the page says so instead of showing stale values as live
    expect(page.locator("#conn")).to_have_text("daemon not answering", timeout=15_000)
    assert errors == []
    assert external == []
