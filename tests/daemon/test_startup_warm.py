"""A household daemon is ready before its forecaster: it warms once it serves, and still bids with it.

``gridnode run`` checks a replay meter's settings at start without reading its data
(:class:`gridnode.meter.ShippedReplay`), and the node builds its household driver — meter data,
forecasting code, numpy, the first fit — only once the daemon serves (``household_gate``;
``docs/daemon.md``, "Start-up"). Until its first forecast the status says ``warming``. These tests
hold the three promises: a replay is the same meter whether read at start or later; nothing of
the forecaster runs before the daemon is ready; and the first quote comes from the real model
(profile-qr on the replayed year), for the first open slot, as soon as the gate opens.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data import load_shipped
from gridnode.cli.run import BLAS_THREADS_ENV
from gridnode.config import Config, update_config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from gridnode.household.forecast import bidding_forecaster
from gridnode.household_driver import PROVENANCE_FILE
from gridnode.meter import (
    SHIPPED_END_S,
    SHIPPED_START_S,
    SHIPPED_STEP_S,
    SHIPPED_UTC_OFFSET_S,
    ShippedReplay,
    shipped_replay,
)
from gridnode.store import NodeStore
from market.errors import UsageError
from market.slots import SlotClock
from sims.daemons import LocalCommunity
from tests.daemon.single_node import open_single_node

ROOT = Path(__file__).resolve().parents[2]
NODE_ANCHOR_S = 1_800_000_123
#: what a household's forecaster and meter data run: none of it before the daemon is ready
WARM_MODULES = (
    "numpy",
    "forecasting.series",
    "forecasting.profile_qr",
    "gridnode.household_driver",
)


def test_the_shipped_replay_span_is_the_shipped_data() -> None:
    data = load_shipped()
    assert (data.start_s, data.end_s, data.step_s, data.utc_offset_s) == (
        SHIPPED_START_S,
        SHIPPED_END_S,
        SHIPPED_STEP_S,
        SHIPPED_UTC_OFFSET_S,
    )


@settings(max_examples=15, deadline=None)
@given(
    node_anchor_s=st.integers(1_600_000_000, 2_000_000_000),
    day_offset=st.integers(-700, 200),
    hour=st.floats(0.0, 23.75),
    pv_scale=st.floats(0.0, 3.0),
    load_scale=st.floats(0.0, 3.0),
    later_slots=st.integers(0, 200),
)
def test_a_replay_checked_at_start_and_read_later_is_the_replay_read_at_once(
    node_anchor_s: int,
    day_offset: int,
    hour: float,
    pv_scale: float,
    load_scale: float,
    later_slots: int,
) -> None:
    settings_ = {
        "node_anchor_s": node_anchor_s, "day_offset": day_offset, "hour": hour,
        "pv_scale": pv_scale, "load_scale": load_scale,
    }  # fmt: skip
    try:
        loaded = shipped_replay(**settings_)  # type: ignore[arg-type]
    except UsageError as exc:  # the same refusal, without reading the data
        with pytest.raises(UsageError) as refused:
            ShippedReplay.of(**settings_)  # type: ignore[arg-type]
        assert str(refused.value) == str(exc)
        return
    deferred = ShippedReplay.of(**settings_)  # type: ignore[arg-type]
    assert (deferred.data_anchor_s, deferred.node_anchor_s) == (
        loaded.data_anchor_s,
        loaded.node_anchor_s,
    )
    clock = SlotClock(900, 300)
    now_s = node_anchor_s + later_slots * 900
    slot = clock.slot_at(now_s) - 1
    assert deferred.slot_net_wh(slot, clock) == loaded.slot_net_wh(slot, clock)
    assert deferred.slot_pv_load_wh(slot, clock) == loaded.slot_pv_load_wh(slot, clock)
    a, b = deferred.history_before(now_s, days=3), loaded.history_before(now_s, days=3)
    assert (a.start_s, a.step_s, a.utc_offset_s) == (b.start_s, b.step_s, b.utc_offset_s)
    assert np.array_equal(a.net_w, b.net_w)


@pytest.mark.parametrize(
    ("day", "found"),
    [("2009-13-01", "is not YYYY-MM-DD"), ("2006-01-01", "outside the shipped data")],
)
def test_a_bad_replay_day_is_refused_at_start_without_reading_the_data(
    day: str, found: str
) -> None:
    with pytest.raises(UsageError, match=found):
        ShippedReplay.of(node_anchor_s=NODE_ANCHOR_S, day=day)
    with pytest.raises(UsageError, match="must be >= 0"):
        ShippedReplay.of(node_anchor_s=NODE_ANCHOR_S, pv_scale=-1.0)


def _probe(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def _preflight_modules(home: Path, meter: str) -> list[str]:
    """The modules a daemon's start-up checks (``preflight``) ran for ``home``, whose meter is
    checked to be a ``meter`` (its class name), in a fresh interpreter with the lazy imports."""
    return json.loads(  # type: ignore[no-any-return]
        _probe(
            "import json\n"
            "from gridnode.lazyimports import install, loaded_modules\n"
            "install()\n"
            "from pathlib import Path\n"
            "from gridnode.startup import preflight\n"
            f"plan = preflight(Path({str(home)!r}))\n"
            f"assert type(plan.meter).__name__ == {meter!r}, plan.meter\n"
            "print(json.dumps(loaded_modules()))\n"
        )
    )


def test_the_start_up_checks_of_a_replay_household_run_no_numpy(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=False)
    lc.create()
    household = lc.households[1]
    update_config(household.dir, {"meter.source": "replay", "bidding.enabled": True})
    ran = _preflight_modules(household.dir, "ShippedReplay")
    assert "gridnode.meter" in ran
    assert set(WARM_MODULES) & set(ran) == set()
    # the config's model names (forecasting.names: no numpy) and nothing else of forecasting
    assert {m for m in ran if m.startswith("forecasting")} <= {"forecasting", "forecasting.names"}


def test_the_start_up_checks_of_a_file_meter_household_run_no_numpy(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=False)
    lc.create()
    household = lc.households[1]
    write_meter_csv(household.dir / "meter.csv", lc.genesis.genesis_time_ms // 1000, days=30)
    update_config(
        household.dir,
        {"meter.source": "file", "bidding.meter_history": "meter.csv", "bidding.enabled": True},
    )
    ran = _preflight_modules(household.dir, "FileMeter")
    assert "gridnode.meter" in ran and "pandas" not in ran
    assert set(WARM_MODULES) & set(ran) == set()
    # its header and newest rows checked by the pure cell rules (forecasting.meter_rows) alone
    assert {m for m in ran if m.startswith("forecasting")} <= {
        "forecasting",
        "forecasting.names",
        "forecasting.meter_rows",
    }


def test_a_live_meter_household_opens_its_meter_without_numpy() -> None:
    # a DSMR or MQTT household opens its meter (gridnode.meters) before it serves; the meter's
    # history (numpy, forecasting.series) is built at the forecaster's first use
    ran = json.loads(
        _probe(
            "import json\n"
            "from gridnode.lazyimports import install, loaded_modules\n"
            "install()\n"
            "import gridnode.startup, gridnode.daemon, gridnode.meters, gridnode.meters.live\n"
            "print(json.dumps(loaded_modules()))\n"
        )
    )
    assert "gridnode.meters.live" in ran
    assert set(WARM_MODULES) & set(ran) == set()


def test_one_blas_thread_fits_the_forecaster_bit_for_bit_as_the_default() -> None:
    # gridnode run holds OpenBLAS to one thread (gridnode.cli.run): the same fitted coefficients
    code = (
        "import hashlib\n"
        "from gridnode.meter import shipped_replay\n"
        "from gridnode.household.forecast import bidding_forecaster\n"
        f"m = shipped_replay(node_anchor_s={NODE_ANCHOR_S}, hour=11.0)\n"
        "fc = bidding_forecaster()\n"
        f"now = {NODE_ANCHOR_S} + 3600\n"
        "fc.fit(m.history_before(now, days=fc.history_days), now_s=now)\n"
        "f = fc._fitted\n"
        "print(fc.name, hashlib.sha256(f.coefs.tobytes() + f.band_scales.tobytes()).hexdigest())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREADS_ENV}
    outs = []
    for extra in ({}, BLAS_THREADS_ENV, {"OPENBLAS_NUM_THREADS": "2"}):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**env, **extra, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        outs.append(out.stdout.strip())
    assert outs[0].startswith("profile-qr ") and outs[1] == outs[0] == outs[2]
    assert bidding_forecaster().name == "profile-qr"


# --------------------------------------------------------------- the node, on a virtual clock

SPEEDUP = 60.0
WALL0_MS = 1_750_000_100_000


@pytest.mark.net
def test_a_household_node_warms_its_forecaster_once_the_gate_opens(tmp_path: Path) -> None:
    key = KeyPair.from_rng(random.Random("warm-household"))
    genesis = Genesis(
        community_id="warm-test",
        genesis_time_ms=WALL0_MS - 1_000,
        members=(key.public_hex,),
        validators=(key.public_hex,),
    )
    config = Config(
        dir=tmp_path, data_dir=tmp_path, role="validator", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
        bidding_enabled=True, meter_source="replay", replay_hour=11.0, clock_speedup=SPEEDUP,
    )  # fmt: skip
    store = NodeStore.open(tmp_path / "node.sqlite")
    seen: dict[str, object] = {}

    async def main() -> None:
        node_at = open_single_node(config, genesis, key, store, speedup=SPEEDUP, wall_ms=WALL0_MS)
        async with node_at as (node, clock):
            gate = node.household_gate = trio.Event()
            warmed: list[str] = []  # what the daemon settles its start-up at (run_daemon)
            node.on_household_warm = lambda: warmed.append(node.forecaster_state)
            slots = genesis.clock
            seen["start_slot"] = start_slot = slots.slot_at(clock.now_ms() // 1000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.run)
                # the node serves (blocks, API), the household waits — here past a slot boundary
                await trio.sleep(clock.seconds_until(slots.start(start_slot + 1) * 1000) + 2.0)
                seen["closed"] = (
                    node.household,
                    node.forecaster_state,
                    node.latest.forecaster_state,
                    warmed[:],
                )
                seen["quotes_closed"] = (tmp_path / PROVENANCE_FILE).exists()
                seen["open_slot"] = genesis.clock.first_open_slot(clock.now_ms() // 1000)
                gate.set()
                for _ in range(200):  # the first step: at once on trio's (virtual) clock
                    await trio.sleep(0.01)
                    if node.forecaster_state != "warming":
                        break
                seen["warm"] = (node.forecaster_state, node.forecast)
                assert node.household is not None
                seen["first_slot"] = node.household.agent.config.first_slot
                await trio.sleep(1.0)  # the next snapshot
                seen["snapshot"] = node.latest.forecaster_state
                seen["warmed"] = warmed
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    store.close()
    assert seen["closed"] == (None, "warming", "warming", [])
    assert seen["quotes_closed"] is False
    forecaster, forecast = seen["warm"]  # type: ignore[misc]
    assert forecaster == "profile-qr" and seen["snapshot"] == "profile-qr"
    assert seen["warmed"] == ["profile-qr"]  # once, after the first step
    # it reads from the slot the node started in, though built in a later one
    assert seen["first_slot"] == seen["start_slot"] and seen["open_slot"] > seen["start_slot"] + 1
    # the first quote: the real model's, for the first open slot when the gate opened
    rows = [json.loads(line) for line in (tmp_path / PROVENANCE_FILE).read_text().splitlines()]
    assert rows[0]["forecaster"] == "profile-qr" and rows[0]["slot"] == seen["open_slot"]
    assert forecast[0][0] == seen["open_slot"]
    p10, p50, p90 = forecast[0][1:]
    assert p10 <= p50 <= p90 and p10 < p90  # a forecast distribution, not a constant


# --------------------------------------------------------------- real daemons over libp2p

#: runs ``gridnode run ARGS`` as ``python -m gridnode`` does, after making the daemon write the
#: modules that have run when it writes its ready file (before it opens the household gate) to
#: the file named first
AT_READY = """\
import sys
from gridnode.lazyimports import install, loaded_modules
install()
import gridnode.daemon.run as run
write = run.write_atomic
def at_ready(path, text):
    with open(sys.argv[1], "w") as f:
        f.write("\\n".join(loaded_modules()))
    write(path, text)
run.write_atomic = at_ready
from gridnode.cli import main
sys.exit(main(sys.argv[2:]))
"""


def write_meter_csv(path: Path, node_anchor_s: int, *, days: int) -> None:
    """``days`` of the shipped household's readings in node time up to a day after
    ``node_anchor_s``, as a meter adapter writes them (``time_s``, ``pv_w``, ``load_w``)."""
    h = shipped_replay(node_anchor_s=node_anchor_s, hour=11.0).history_before(
        node_anchor_s + 86_400, days=days
    )
    assert h.pv_w is not None and h.load_w is not None
    rows = zip(h.pv_w[0], h.load_w[0], strict=True)
    path.write_text(
        "time_s,pv_w,load_w\n"
        + "".join(f"{h.start_s + i * h.step_s},{p:.1f},{q:.1f}\n" for i, (p, q) in enumerate(rows))
    )


@pytest.mark.net
@pytest.mark.timeout(240)
@pytest.mark.parametrize("source", ["replay", "file"])
def test_a_household_daemon_is_ready_before_its_forecaster_and_bids_with_it(
    tmp_path: Path, source: str
) -> None:
    """With a replay meter or a meter file (checked at start without numpy: its header and
    newest rows; read whole once the daemon serves)."""
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=False)
    lc.create()
    household = lc.households[1]
    if source == "replay":
        meter: dict[str, object] = {"meter.source": "replay", "meter.replay_hour": 11.0}
    else:
        write_meter_csv(household.dir / "meter.csv", lc.genesis.genesis_time_ms // 1000, days=60)
        meter = {"meter.source": "file", "bidding.meter_history": "meter.csv"}
    update_config(household.dir, {**meter, "bidding.enabled": True})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for h in lc.households:
        with (h.dir / "daemon.log").open("ab") as log:
            h.process = subprocess.Popen(
                [sys.executable, "-c", AT_READY, str(h.dir / "at-ready"), "run", "--dir",
                 str(h.dir), "--ready-file", str(h.dir / "ready")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
    try:
        lc.wait_ready(120)
        # it bids with the real model once warm, and the validator takes its order
        assert lc.wait_for(lambda: lc.api(1, "/api/status")["forecaster"] == "profile-qr", 60)
        assert lc.wait_for(
            lambda: any(s["accepted"] for s in lc.api(1, "/api/submissions")["submissions"]), 120
        )
        assert lc.api(0, "/api/status")["forecaster"] == "none"  # a validator has no meter
        assert lc.api(1, "/api/forecast")["forecaster"] == "profile-qr"
    finally:
        codes = lc.stop(timeout_s=60)  # SIGTERM both; a daemon still running then is killed
    assert codes == {0: 0, 1: 0}
    at_ready = set((household.dir / "at-ready").read_text().split())
    assert {"gridnode.daemon", "gridnode.meter", "libp2p.pubsub.gossipsub"} <= at_ready
    assert at_ready & set(WARM_MODULES) == set(), "ran before the household daemon was ready"
    assert {m for m in at_ready if m.startswith("forecasting")} <= {
        "forecasting",
        "forecasting.names",
        "forecasting.meter_rows",  # a meter file's start-up check: pure Python
    }
    assert "pandas" not in at_ready
    rows = [
        json.loads(line)
        for line in (household.dir / "data" / PROVENANCE_FILE).read_text().splitlines()
    ]
    assert rows and rows[0]["forecaster"] == "profile-qr"
