"""The live-meter keys of gridnode.toml: bad values are one line naming the file and the key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridnode.config import CONFIG_NAME, create_data_dir, load_config, update_config
from gridnode.core.ledger import Genesis
from gridnode.meters import open_live_meter
from gridnode.meters.live import LiveMeter
from gridnode.startup import make_meter
from market.errors import UsageError

MQTT = {
    "meter.source": "mqtt",
    "meter.mqtt_url": "mqtt://127.0.0.1:1883",
    "meter.mqtt_topic": "tele/x/SENSOR",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    create_data_dir(tmp_path / "h")
    return tmp_path / "h"


def _set(home: Path, changes: dict[str, Any]) -> None:
    """Write keys into the file as a user would (no load check), to test what load_config says."""
    import tomllib

    import tomli_w

    path = home / CONFIG_NAME
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        doc.setdefault(section, {})[key] = value
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")


def test_the_template_shows_how_to_connect_a_real_meter(home: Path) -> None:
    text = (home / CONFIG_NAME).read_text(encoding="utf-8")
    assert '#   source = "dsmr"' in text and "docs/meters.md" in text
    assert load_config(home).meter_source == "none"


def test_valid_live_meter_configs_load(home: Path) -> None:
    update_config(
        home,
        {
            **MQTT,
            "meter.mqtt_import_path": "SML.Total_in",
            "meter.mqtt_export_topic": ["a/b", "a/c"],
        },
    )
    cfg = load_config(home)
    assert cfg.mqtt_topic == ("tele/x/SENSOR",) and cfg.mqtt_export_topic == ("a/b", "a/c")
    update_config(
        home,
        {
            "meter.source": "dsmr",
            "meter.dsmr_url": "tcp://p1.local:2001",
            "meter.dsmr_version": "5B",
        },
    )
    assert load_config(home).dsmr_url == "tcp://p1.local:2001"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"meter.source": "dsmr"}, "needs exactly one of meter.dsmr_port"),
        (
            {"meter.source": "dsmr", "meter.dsmr_url": "p1.local:2001"},
            "meter.dsmr_url must be tcp://host:port",
        ),
        (
            {
                "meter.source": "dsmr",
                "meter.dsmr_port": "/dev/ttyUSB0",
                "meter.dsmr_version": "2.2",
            },
            "meter.dsmr_version must be",
        ),
        ({"meter.source": "mqtt"}, "needs meter.mqtt_url"),
        ({**MQTT, "meter.mqtt_format": "zigbee"}, "meter.mqtt_format must be"),
        ({**MQTT, "meter.mqtt_unit": "MWh"}, "meter.mqtt_unit must be"),
        ({**MQTT, "meter.mqtt_topic": "tele/+/SENSOR"}, "meter.mqtt_topic must be a topic"),
        ({**MQTT, "meter.mqtt_topic": []}, "meter.mqtt_topic must be a topic"),
        (
            {**MQTT, "meter.mqtt_format": "homeassistant", "meter.mqtt_topic": []},
            "meter.mqtt_topic must be",
        ),
        (
            {
                "meter.source": "mqtt",
                "meter.mqtt_url": "mqtt://h",
                "meter.mqtt_format": "homeassistant",
            },
            "needs meter.mqtt_import_topic",
        ),
        (
            {**MQTT, "meter.mqtt_format": "custom", "meter.mqtt_import_topic": "a"},
            "needs meter.mqtt_import_path",
        ),
        (
            {**MQTT, "meter.mqtt_power_path": "P", "meter.mqtt_import_path": "E"},
            "leave mqtt_import_*",
        ),
        ({**MQTT, "meter.max_sample_age_s": -1}, "meter.max_sample_age_s must be >= 0"),
        ({**MQTT, "meter.dsmr_baud": "fast"}, "meter.dsmr_baud must be an integer"),
    ],
)
def test_bad_live_meter_keys_name_the_file_and_the_key(
    home: Path, changes: dict[str, Any], message: str
) -> None:
    _set(home, changes)
    with pytest.raises(UsageError) as exc:
        load_config(home)
    text = str(exc.value)
    assert message in text and str(home / CONFIG_NAME) in text and "\n" not in text


def test_gridnode_run_refuses_a_bad_meter_key_with_one_line_and_exit_2(home: Path) -> None:
    _set(home, {"meter.source": "mqtt", "meter.mqtt_url": "http://broker"})
    proc = subprocess.run(
        [sys.executable, "-m", "gridnode", "run", "--dir", str(home)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "meter.mqtt_url" in lines[0] and CONFIG_NAME in lines[0]


def test_make_meter_builds_a_live_meter_in_the_data_directory(home: Path) -> None:
    update_config(home, {**MQTT, "meter.mqtt_import_path": "ENERGY.Total"})
    cfg = load_config(home)
    genesis = Genesis(
        community_id="t", genesis_time_ms=0, members=("a" * 64,), validators=("a" * 64,)
    )
    assert make_meter(cfg, genesis) is None  # the daemon opens a live meter on its own clock
    meter = open_live_meter(cfg, slot_seconds=genesis.slot_seconds, now_ms=lambda: 0)
    try:
        assert isinstance(meter, LiveMeter) and meter.reader is not None and meter.exact
        assert (cfg.data_dir / "meter.sqlite").exists()
    finally:
        assert isinstance(meter, LiveMeter)
        meter.close()
