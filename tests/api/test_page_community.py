"""The status page of real daemons fed by real meter inputs, in a real headless Chromium.

One community for every check (it takes ~2-3 minutes of wall time at 60×):

* ``v0`` — the only validator, **not** a member (a grid company's node): its page must say what a
  validator does and show no household panels (no "My balance 0.0000 ¤").
* ``h1`` — a household whose meter is a Tasmota-style device publishing its grid import, export and
  PV registers to a **real Mosquitto broker** (the values are a real measured household's, the
  shipped data, accumulated into registers). It sells through manual orders placed on its API (as
  an owner would with ``gridnode order place``). The test stops its meter for a while around one
  traded slot: the reading never reaches the ledger, which counts 0 Wh, and the page must say so
  and what it cost.
* ``h2`` — a household on the **replay** meter (the shipped real data), forecasting and bidding by
  itself: it buys what ``h1`` offers.

Checked: every panel has real content (figures, chart traces, table rows, explanations) matching
the API; no console error and no request outside the node; no horizontal scroll at 390 px wide;
the favicon is served; ``/metrics`` parses with ``prometheus_client``'s parser and moves. Screenshots
of a household's and the validator's page go to ``$GRIDNODE_ARTIFACTS`` (else the test's tmp dir;
the path is printed); ``docs/page.md`` shows copies in ``docs/img/``.

Needs Chromium + playwright (see ``test_page_browser.py``) and Mosquitto (``tests/meters``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gridnode.cli.demo import DEMO_TIMEZONE, start_in_the_morning
from gridnode.config import update_config, write_genesis
from gridnode.meter import shipped_replay
from sims.daemons import LocalCommunity
from tests.api.test_page_browser import CHROMIUM
from tests.api.test_page_browser import REQUIRED as BROWSER_REQUIRED
from tests.meters.conftest import Broker, running_broker

pytestmark = [pytest.mark.net]

SPEEDUP = 60
V0, H1, H2 = 0, 1, 2
TOPIC = "tele/h1meter/SENSOR"
#: h1's sell order every slot: (µ¤/kWh, Wh) steps
H1_STEPS = [
    {"price_micro_per_kwh": 90_000, "energy_wh": 150},
    {"price_micro_per_kwh": 140_000, "energy_wh": 150},
]
DEADLINE_S = 300


def _need_browser() -> Any:
    if shutil.which(CHROMIUM) is None:
        if BROWSER_REQUIRED:
            pytest.fail(f"GRIDNODE_REQUIRE_BROWSER=1 but no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    try:
        from playwright import sync_api
    except ImportError:
        if BROWSER_REQUIRED:
            pytest.fail("GRIDNODE_REQUIRE_BROWSER=1 but no playwright package")
        pytest.skip("no playwright package")
    return sync_api


# ------------------------------------------------------------------------------------ the meter


@dataclass
class MqttMeter:
    """h1's meter: registers accumulated from a real household's slots, published every 15 s of
    node time, except while ``paused`` covers node time (the meter is off the network)."""

    broker: Broker
    epoch_ms: int
    replay: Any  # a ReplayMeter of the shipped data: PV and load per slot
    clock: Any  # the community's SlotClock
    paused: tuple[int, int] | None = None  # node seconds [from, to)
    published: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _slots: dict[int, tuple[int, int]] = field(default_factory=dict)

    def node_s(self) -> float:
        wall = time.time_ns() // 1_000_000
        return (self.epoch_ms + (wall - self.epoch_ms) * SPEEDUP) / 1000

    def _slot(self, slot: int) -> tuple[int, int]:
        if slot not in self._slots:
            split = self.replay.slot_pv_load_wh(slot, self.clock)
            self._slots[slot] = split if split is not None else (0, 300)
        return self._slots[slot]

    def registers(self, t: float, origin: int) -> tuple[int, int, int]:
        """(import, export, PV) Wh at node time ``t``: every slot from ``origin`` on, the current
        one pro rata (net metering inside a slot, so each slot's differences are its own)."""
        imp, exp, pv = 4_321_000, 1_000_000, 2_000_000
        slot = self.clock.slot_at(int(t))
        for s in range(origin, slot + 1):
            p, load = self._slot(s)
            frac = 1.0 if s < slot else (t - self.clock.start(s)) / self.clock.slot_seconds
            net = p - load
            imp += int(max(0, -net) * frac)
            exp += int(max(0, net) * frac)
            pv += int(p * frac)
        return imp, exp, pv

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="mqtt-meter")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        import aiomqtt

        origin = self.clock.slot_at(int(self.node_s()))
        try:
            async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
                while not self._stop.is_set():
                    t = self.node_s()
                    if self.paused is None or not self.paused[0] <= t < self.paused[1]:
                        imp, exp, pv = self.registers(t, origin)
                        doc = {
                            "Time": "t",
                            "SML": {"Total_in": imp / 1000, "Total_out": exp / 1000},
                            "PV": {"Total": pv / 1000},
                        }
                        await client.publish(TOPIC, json.dumps(doc), qos=1)
                        self.published += 1
                    await asyncio.sleep(0.25)  # 15 s of node time
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))


# ------------------------------------------------------------------------------------ the community


@dataclass
class Community:
    lc: LocalCommunity
    meter: MqttMeter
    artifacts: Path
    missed_slot: int
    traded_h1: list[int]

    def api(self, index: int, path: str) -> Any:
        return self.lc.api(index, path)

    def url(self, index: int) -> str:
        return self.lc.households[index].api_url + "/"


def _wait(what: str, cond: Any, timeout_s: float, lc: LocalCommunity) -> None:
    if not lc.wait_for(cond, timeout_s, poll_s=0.5):
        logs = {
            h.name: (h.dir / "daemon.log").read_text(errors="replace")[-1500:]
            for h in lc.households
        }
        raise AssertionError(f"timed out waiting for {what}; logs: {logs}")


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    _need_browser()
    root = tmp_path_factory.mktemp("page-community")
    artifacts = Path(os.environ.get("GRIDNODE_ARTIFACTS") or root / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    with running_broker(root) as broker:
        lc = LocalCommunity(root / "c", validators=1, full_nodes=2, speedup=SPEEDUP)
        lc.create()
        replay_hour = start_in_the_morning(lc, SPEEDUP, hour=10.5)
        assert lc.genesis is not None
        households = tuple(h.key.public_hex for h in lc.households if h.role == "full")
        lc.genesis = replace(lc.genesis, members=households)  # the validator does not trade
        for h in lc.households:
            write_genesis(h.dir / "genesis.toml", lc.genesis)
            update_config(h.dir, {"node.timezone": DEMO_TIMEZONE})
        update_config(
            lc.households[H1].dir,
            {
                "meter.source": "mqtt",
                "meter.mqtt_url": broker.url,
                "meter.mqtt_format": "tasmota",
                "meter.mqtt_topic": TOPIC,
                "meter.mqtt_import_path": "SML.Total_in",
                "meter.mqtt_export_path": "SML.Total_out",
                "meter.mqtt_pv_path": "PV.Total",
            },
        )
        update_config(
            lc.households[H2].dir,
            {
                "meter.source": "replay",
                "meter.replay_hour": replay_hour,
                "meter.replay_day_offset": 2,
                "meter.pv_scale": 0.0,  # no panels: it buys from its neighbour
                "meter.load_scale": 1.2,
                "bidding.enabled": True,
            },
        )
        genesis = lc.genesis
        meter = MqttMeter(
            broker,
            genesis.genesis_time_ms,
            shipped_replay(
                node_anchor_s=genesis.genesis_time_ms // 1000,
                day_offset=5,
                hour=replay_hour,
                pv_scale=1.5,
            ),
            genesis.clock,
        )
        lc.start()
        try:
            meter.start()
            lc.wait_ready(120)
            yield _run(lc, meter, artifacts)
        finally:
            meter.stop()
            lc.stop()


def _run(lc: LocalCommunity, meter: MqttMeter, artifacts: Path) -> Community:
    """Trade until h1 sold in a few settled slots, one of them without its reading."""
    clock = meter.clock
    placed: set[int] = set()
    missed_slot: int | None = None
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        status = lc.api(H1, "/api/status")
        slot = status["first_open_slot"]
        if slot not in placed and status["wall_s_to_gate_closure"] > 2:
            body = {"slot": slot, "side": "sell", "steps": H1_STEPS}
            answer = lc.api(H1, "/api/orders", method="POST", body=body)
            if answer.get("accepted"):
                placed.add(slot)
        h1 = lc.api(H1, "/api/household")
        traded = sorted({t["slot"] for t in h1["trades"]})
        if missed_slot is None and traded:
            # the meter goes quiet around h1's next traded slot: its end boundary has no sample
            upcoming = [s for s in placed if s > status["current_slot"]]
            if upcoming:
                missed_slot = min(upcoming)
                meter.paused = (clock.start(missed_slot) + 60, clock.end(missed_slot) + 120)
        settled = {t["slot"] for t in h1["trades"] if t["settled"]}
        if missed_slot is not None and missed_slot in settled and len(settled) >= 3:
            h2 = lc.api(H2, "/api/household")
            if h2["forecast"] and any(r["forecast"] for r in h2["slots"]):
                assert not meter.errors, meter.errors
                return Community(lc, meter, artifacts, missed_slot, traded)
        time.sleep(0.5)
    raise AssertionError(
        f"no community state to check after {DEADLINE_S} s: placed {sorted(placed)}, "
        f"missed {missed_slot}, meter {meter.published} messages {meter.errors}; "
        + str(
            {
                h.name: (h.dir / "daemon.log").read_text(errors="replace")[-1500:]
                for h in lc.households
            }
        )
    )


# ------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser(community: Community) -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            yield b
        finally:
            b.close()


@dataclass
class Page:
    page: Any
    console: list[str]
    external: list[str]
    favicon: list[int]


def open_page(browser: Any, url: str, width: int, height: int = 1000) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    seen = Page(page, [], [], [])
    origin = url.rstrip("/")
    page.on(
        "console",
        lambda m: (
            seen.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: seen.console.append(f"pageerror: {e}"))
    page.on("request", lambda r: None if r.url.startswith(origin) else seen.external.append(r.url))
    page.on("response", lambda r: seen.favicon.append(r.status) if "/favicon" in r.url else None)
    page.goto(url)
    return seen


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as _expect

    return _expect(locator)


def filled(page: Any, section: str) -> None:
    expect(page.locator(f"#{section}")).to_have_attribute("data-filled", "yes", timeout=20_000)


def traces(page: Any, chart: str, kind: str = "") -> int:
    """Plotly traces drawn in ``#chart`` (``kind``: "bars" or "scatter" layers only)."""
    layer = {"bars": ".barlayer .trace", "scatter": ".scatterlayer .trace"}.get(kind, ".trace")
    return int(page.evaluate(f"document.querySelectorAll('#{chart} {layer}').length"))


def bar_points(page: Any, chart: str) -> int:
    return int(page.evaluate(f"document.querySelectorAll('#{chart} .barlayer .point').length"))


def no_horizontal_scroll(page: Any, width: int) -> None:
    scroll = page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    )
    assert scroll <= width, f"the page is {scroll} px wide at a {width} px viewport"


def shoot(community: Community, page: Any, name: str, *, full_page: bool = True) -> Path:
    path = community.artifacts / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


# ------------------------------------------------------------------------------------ the checks


def test_household_page_answers_the_owner(community: Community, browser: Any) -> None:
    """h2 (replay meter, automatic bidding): every household panel has real content."""
    seen = open_page(browser, community.url(H2), 1280, 1100)
    page = seen.page
    for section in (
        "summary",
        "energy",
        "forecast",
        "bills",
        "why",
        "orders",
        "trades",
        "market",
        "node",
    ):
        filled(page, section)
    status = community.api(H2, "/api/status")
    household = community.api(H2, "/api/household")
    assert page.locator("body").get_attribute("data-role") == "full"
    badge = page.locator("#health")
    assert badge.get_attribute("data-level") in ("ok", "warn")
    assert "quorum" in page.locator("#node-validators").inner_text()
    # summary: figures from the ledger's bills, local day
    t = household["today"]
    assert t["slots_settled"] > 0
    assert page.locator("#today-date").inner_text() == t["day"]
    assert page.locator("#self-sufficiency").inner_text().endswith("%")
    assert page.locator("#self-consumption").inner_text() == "—"  # no panels
    assert "saved" in page.locator("#saved-total").inner_text()
    # energy per slot: PV, consumption, P2P and grid bars for today's slots, in local time
    assert bar_points(page, "energy-chart") >= 4
    assert traces(page, "energy-chart", "scatter") >= 1  # consumption (no panels: no PV line)
    assert household["utc_offset"] == "UTC−07:00"
    assert "UTC−07:00" in page.locator("#energy-note").inner_text()
    # forecast band vs measured
    assert traces(page, "forecast-chart", "scatter") >= 4
    assert "Mean error" in page.locator("#forecast-note").inner_text()
    # bills per day
    assert bar_points(page, "bills-chart") >= 2
    # orders and their fate; trades kept after settlement
    fates = page.locator("#orders-table tbody .fate").all_inner_texts()
    assert fates and set(fates) & {"cleared", "partly"}, fates
    assert "Delivery (UTC−07:00)" in page.locator("#orders-table thead").inner_text()
    assert (
        household["orders"][0]["span"] in page.locator("#orders-table tbody tr").first.inner_text()
    )
    settled_rows = [
        r for r in page.locator("#trades-table tbody tr").all_inner_texts() if "yes" in r
    ]
    assert settled_rows, page.locator("#trades-table").inner_text()
    # why this slot went as it did: curves, the clearing point, words
    assert traces(page, "why-chart", "scatter") >= 3
    assert page.locator("#why-text li").count() >= 3
    # community market
    assert bar_points(page, "market-chart") >= 2
    assert "traded" in page.locator("#market-note").inner_text()
    # operator detail one click away
    assert not page.locator("#op-head").is_visible()
    page.locator("#operator summary").click()
    assert page.locator("#op-head").is_visible()
    assert len(page.locator("#op-head").inner_text()) == 64
    assert page.locator("#op-genesis").inner_text() == status["genesis_hash"]
    assert "(this node)" not in page.locator("#validators-table").inner_text()
    shoot(community, page, "page-household.png")
    assert seen.console == [], seen.console
    assert seen.external == []
    assert 200 in seen.favicon


def test_household_page_at_phone_width(community: Community, browser: Any) -> None:
    seen = open_page(browser, community.url(H2), 390, 844)
    page = seen.page
    for section in ("summary", "energy", "why", "orders", "market"):
        filled(page, section)
    page.wait_for_timeout(500)  # plotly's responsive relayout
    no_horizontal_scroll(page, 390)
    page.locator("#operator summary").click()
    no_horizontal_scroll(page, 390)
    page.evaluate("window.scrollTo(0, 0)")
    shoot(community, page, "page-household-phone.png", full_page=False)  # the first screen
    assert seen.console == [], seen.console


def test_mqtt_household_sees_its_pv_and_the_missed_reading(
    community: Community, browser: Any
) -> None:
    """h1 (MQTT meter with a PV register): PV and consumption per slot from its registers; the
    slot whose reading was missed is flagged with what it cost."""
    household = community.api(H1, "/api/household")
    missed = {m["slot"]: m for m in household["missed"]}
    assert community.missed_slot in missed, household["missed"]
    assert missed[community.missed_slot]["basis"] == "contract"
    assert (
        missed[community.missed_slot]["cost_micro"] > 0
    )  # a seller buys its contract back at retail
    rows = {r["slot"]: r for r in household["slots"]}
    pv_rows = [r for r in rows.values() if r["pv_wh"] is not None and r["settled"]]
    assert pv_rows and any(r["pv_wh"] > 0 for r in pv_rows)
    status = community.api(H1, "/api/status")
    assert status["health"]["readings_missed"] >= 1 and status["health"]["level"] == "warn"

    seen = open_page(browser, community.url(H1), 1280, 1100)
    page = seen.page
    filled(page, "energy")
    filled(page, "summary")
    assert page.locator("#self-consumption").inner_text().endswith("%")
    names = page.evaluate(
        "[...document.querySelectorAll('#energy-chart .legendtext')].map(e => e.textContent)"
    )
    assert "PV" in names and "consumption" in names, names
    alert = page.locator("#alert")
    expect(alert).to_be_visible(timeout=10_000)
    assert "missed" in alert.inner_text() and "0 Wh" in alert.inner_text()
    expect(page.locator("#health")).to_have_attribute("data-level", "warn", timeout=10_000)
    page.locator("#why-select").select_option(str(community.missed_slot))
    expect(page.locator("#why-text")).to_contain_text("never reached the ledger", timeout=10_000)
    assert page.locator("#why-text li.bad").count() >= 1
    fates = page.locator("#orders-table tbody .fate").all_inner_texts()
    assert fates, "no order rows"
    shoot(community, page, "page-household-meter.png")
    assert seen.console == [], seen.console


def test_validator_page_says_what_it_does(community: Community, browser: Any) -> None:
    seen = open_page(browser, community.url(V0), 1280, 1000)
    page = seen.page
    filled(page, "duties")
    filled(page, "market")
    filled(page, "node")
    assert page.locator("body").get_attribute("data-role") == "validator"
    assert page.locator("body").get_attribute("data-member") == "no"
    assert page.locator("#duties").is_visible()
    assert "votes on each new block" in page.locator("#duties-text").inner_text()
    for section in ("summary", "energy", "orders", "trades", "why"):
        assert not page.locator(f"#{section}").is_visible(), section
    assert "balance" not in page.locator("main").inner_text().lower()
    page.locator("#operator summary").click()
    table = page.locator("#validators-table").inner_text()
    assert "this node" in table and "never" not in table
    shoot(community, page, "page-validator.png")
    phone = open_page(browser, community.url(V0), 390, 844)
    filled(phone.page, "duties")
    no_horizontal_scroll(phone.page, 390)
    assert seen.console == [] and phone.console == [], seen.console + phone.console
    assert seen.external == []


def test_metrics_parse_and_move(community: Community) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(index: int) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(community.lc.households[index].api_url + "/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(
                    f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())
                )
                values[key] = sample.value
        return values

    first = scrape(H2)
    for name in (
        "gridnode_height", "gridnode_sync_lag_seconds", "gridnode_peers",
        "gridnode_mempool_transactions", "gridnode_commit_latency_seconds_count",
        "gridnode_savings_micro", "gridnode_forecast_abs_error_wh", "gridnode_submit_failures",
    ):  # fmt: skip
        assert name in first, (name, sorted(first))
    assert first["gridnode_commit_latency_seconds_count"] > 0
    assert first["gridnode_quorum"] == 1
    assert (
        first["gridnode_commit_latency_seconds_bucket{le=+Inf}"]
        == first["gridnode_commit_latency_seconds_count"]
    )
    community.lc.wait_for(lambda: scrape(H2)["gridnode_height"] > first["gridnode_height"] + 2, 30)
    later = scrape(H2)
    assert later["gridnode_height"] > first["gridnode_height"]
    assert scrape(V0)["gridnode_height"] >= first["gridnode_height"]
    assert "gridnode_savings_micro" not in scrape(V0)  # a validator that is no member has no bill
