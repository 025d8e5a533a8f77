"""The daemon starts light: what ``gridnode run`` imports excludes the heavy libraries it does not
run (issue 16). Checked in a fresh interpreter (``sys.modules``), not timed: the figures are in
``benchmarks/daemon_footprint.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.data import SHIPPED_ARRAYS, SHIPPED_FILE, load_shipped

ROOT = Path(__file__).resolve().parents[2]
#: libraries a daemon does not need at run time: data frames and Parquet (the shipped data are read
#: from numpy arrays), plots (the report), statistical models and PV physics (offline tools)
HEAVY = ("pandas", "pyarrow", "plotly", "statsmodels", "scipy", "pvlib", "sklearn", "prophet")


def _loaded_after(code: str) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_the_run_command_imports_no_heavy_library() -> None:
    # what `gridnode run` loads before serving: its command line (only the run command's module),
    # the start-up checks, the daemon with its household driver, and a replay meter's data
    loaded = _loaded_after(
        "from gridnode.cli import build_parser\n"
        "build_parser(['run', '--dir', 'x'])\n"
        "import gridnode.startup, gridnode.daemon\n"
        "from gridnode.meter import shipped_replay\n"
        "shipped_replay(node_anchor_s=1_800_000_000)\n"
    )
    assert "gridnode.daemon" in loaded and "libp2p" in loaded and "numpy" in loaded
    assert _heavy(loaded) == []
    assert [m for m in loaded if m.startswith("gridnode.cli.")] == ["gridnode.cli.run"]
    assert not [m for m in loaded if m == "sims" or m.startswith("sims.")]


def test_a_validator_loads_no_household_forecasting_or_federation_code() -> None:
    # a validator (no meter, no federated training) runs no household driver: those modules are
    # imported by the daemon only when a household's config needs them
    loaded = set(_loaded_after("import gridnode.startup, gridnode.daemon\n"))
    assert "gridnode.daemon.node" in loaded
    lazy = {
        "gridnode.household_driver",
        "gridnode.daemon.federation",
        "gridnode.meter",
        "gridnode.meters",
        "forecasting.models",
        "forecasting.secagg",
    }
    assert loaded & lazy == set()


def test_the_whole_command_line_still_loads_every_command() -> None:
    # the control: without a command named, every command's module is loaded (so the check above
    # is about the run command's path, not a broken probe)
    loaded = _loaded_after("from gridnode.cli import build_parser\nbuild_parser([])\n")
    assert {"gridnode.cli.sim", "gridnode.cli.forecast", "gridnode.cli.run"} <= set(loaded)


def test_the_shipped_arrays_are_the_shipped_parquet_file() -> None:
    # the daemons read numpy arrays written beside the published Parquet file; they must agree
    table = pd.read_parquet(SHIPPED_FILE)
    with np.load(SHIPPED_ARRAYS) as arrays:
        assert int(arrays["time_s0"]) == int(table["time_s"].iloc[0])
        assert (np.diff(table["time_s"].to_numpy()) == 900).all()
        assert np.array_equal(arrays["pv_w"], table["pv_w"].to_numpy())
        assert np.array_equal(arrays["load_w"], table["load_w"].to_numpy())
    h = load_shipped()
    assert h.steps == len(table) and h.start_s == int(table["time_s"].iloc[0])


def test_a_household_with_its_site_forecasts_without_heavy_libraries() -> None:
    # a PV household that names its site (clear-sky PV in profile-qr) fits and predicts with the
    # daemon's forecaster: the sun's geometry is numpy only (forecasting/solar.py), so neither
    # pvlib nor the pandas and scipy it brings are loaded (a site used to cost ≈ 120 MB of RSS)
    loaded = _loaded_after(
        "import numpy as np\n"
        "from forecasting.registry import build_model\n"
        "from forecasting.series import MeterHistory\n"
        "t = np.arange(40 * 96)\n"
        "pv = np.clip(np.sin((t % 96 - 24) / 48 * np.pi), 0, None) * 3000\n"
        "load = 400 + 200 * np.cos(t % 96 / 96 * 2 * np.pi)\n"
        "h = MeterHistory.from_components(pv, load, start_s=1_243_814_400, step_s=900)\n"
        "m = build_model('profile-qr', latitude=36.0, longitude=-80.0).fit(h)\n"
        "f = m.predict(h, 8)\n"
        "assert f is not None\n"
    )
    assert "forecasting.solar" in loaded and "forecasting.profile_qr" in loaded
    assert _heavy(loaded) == []


def test_a_household_steps_without_numpy_ma() -> None:
    # a household's forecaster (profile-qr with a year of history: its calibrated bands) fits and
    # predicts as the daemon runs it, with the daemon's finder installed: numpy.ma (≈ 1.6 MB in a
    # daemon, imported by np.unique's and so np.quantile's check for a masked array) is not run
    loaded = _loaded_after(
        "from gridnode.lazyimports import install\n"
        "install()\n"
        "import gridnode.startup, gridnode.daemon\n"
        "from gridnode.household.forecast import bidding_forecaster\n"
        "from gridnode.meter import ShippedReplay\n"
        "from market.slots import SlotClock\n"
        "now = 1_800_000_000 - 1_800_000_000 % 900\n"
        "meter = ShippedReplay.of(node_anchor_s=now, hour=11.0)\n"
        "fc = bidding_forecaster()\n"
        "h = meter.history_before(now + 5, days=fc.history_days)\n"
        "q = fc.forecast(h, now_s=now + 5, slots=[now // 900 + 2], clock=SlotClock(900))\n"
        "assert fc.name == 'profile-qr' and q[0].quantiles, (fc.name, q)\n"
    )
    assert "forecasting.profile_qr" in loaded and "numpy.linalg" in loaded
    assert [m for m in loaded if m == "numpy.ma" or m.startswith("numpy.ma.")] == []


def test_a_replay_meters_histories_are_views_of_its_series() -> None:
    # the daemon's replay meter scales the shipped series once; each step's history is a window
    # of it (read-only views), not new arrays the forecaster's memos would keep alive
    from gridnode.meter import ShippedReplay

    now = 1_800_000_000 - 1_800_000_000 % 900
    for scales in ({}, {"pv_scale": 1.5, "load_scale": 0.7}):
        replay = ShippedReplay.of(node_anchor_s=now, hour=11.0, **scales)
        data = replay.loaded().data
        assert data.pv_w is not None and data.load_w is not None
        h = replay.history_before(now + 3 * 86_400, days=366)
        assert h.pv_w is not None and h.load_w is not None
        for got, series in ((h.net_w, data.net_w), (h.pv_w, data.pv_w), (h.load_w, data.load_w)):
            assert np.shares_memory(got, series) and not got.flags.writeable
        shipped = load_shipped()
        assert shipped.pv_w is not None
        pv_scale = scales.get("pv_scale", 1.0)
        first = shipped.index_at(h.start_s - (replay.node_anchor_s - replay.data_anchor_s))
        want = shipped.pv_w[0, first : first + h.steps] * pv_scale
        assert h.pv_w[0].view(np.int64).tolist() == want.view(np.int64).tolist()
