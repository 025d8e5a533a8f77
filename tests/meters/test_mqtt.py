"""MQTT meters: the devices' message shapes, and a real Mosquitto broker between publisher and meter."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiomqtt
import pytest

from gridnode.meters import run_reader
from gridnode.meters.live import LiveMeter, MeterStore
from gridnode.meters.mqtt import MessageDecoder, mqtt_source, read_mqtt, value_at
from gridnode.meters.registers import Rules
from market.errors import InvalidInput, UsageError
from market.slots import SlotClock
from tests.meters.conftest import Broker
from tests.meters.test_live import FakeClock

URL = "mqtt://127.0.0.1:1883"


def test_tasmota_sensor_messages_including_per_phase_arrays_and_sml_paths() -> None:
    dec = MessageDecoder(mqtt_source(url=URL, format="tasmota", topic="tele/plug/SENSOR"))
    msg = {
        "Time": "2024-01-01T12:00:00",
        "ENERGY": {"TotalStartTime": "x", "Total": 12.345, "Power": 50},
    }
    assert dec.feed("tele/plug/SENSOR", json.dumps(msg).encode()) == [{"import": 12_345_000}]
    msg["ENERGY"]["Total"] = [1.0, 2.5, 0.001]  # type: ignore[index]
    assert dec.feed("tele/plug/SENSOR", json.dumps(msg).encode()) == [{"import": 3_501_000}]
    sml = MessageDecoder(
        mqtt_source(
            url=URL,
            format="tasmota",
            topic="tele/p1/SENSOR",
            import_path="SML.Total_in",
            export_path="SML.Total_out",
        )
    )
    doc = {"Time": "t", "SML": {"Total_in": 4521.0123, "Total_out": 1200.5, "Power_curr": 320}}
    assert sml.feed("tele/p1/SENSOR", json.dumps(doc).encode()) == [
        {"import": 4_521_012_300, "export": 1_200_500_000}
    ]
    assert sml.feed("tele/p1/STATE", b"{}") == []  # not a configured topic


def test_shelly_gen1_totals_per_phase_are_summed_once_every_phase_was_heard() -> None:
    bases = [f"shellies/shellyem3-ABC/emeter/{i}" for i in range(3)]
    src = mqtt_source(url=URL, format="shelly-gen1", topic=bases)
    dec = MessageDecoder(src)
    assert src.unit == "Wh" and src.registers["export"].topics[2] == f"{bases[2]}/total_returned"
    assert dec.feed(f"{bases[0]}/total", b"1000.5") == []
    assert dec.feed(f"{bases[1]}/total", b"2000") == []
    assert dec.feed(f"{bases[2]}/total", b"3000") == [{"import": 6_000_500}]
    # the export register arrives: the import register is carried with its last value
    for i, v in enumerate((b"10", b"0", b"0")):
        out = dec.feed(f"{bases[i]}/total_returned", v)
    assert out == [{"import": 6_000_500, "export": 10_000}]
    # watt-minute counters (energy / returned_energy) with mqtt_unit = "Wmin"
    wmin = MessageDecoder(
        mqtt_source(
            url=URL,
            format="shelly-gen1",
            topic=bases[0],
            import_topic=f"{bases[0]}/energy",
            unit="Wmin",
        )
    )
    assert wmin.feed(f"{bases[0]}/energy", b"600") == [{"import": 10_000}]


def test_shelly_gen2_notify_status_carries_only_what_changed() -> None:
    dec = MessageDecoder(mqtt_source(url=URL, format="shelly-gen2", topic="shellypro3em-x"))
    topic = "shellypro3em-x/events/rpc"

    def notify(**emdata: float) -> bytes:
        return json.dumps(
            {
                "src": "shellypro3em-x",
                "method": "NotifyStatus",
                "params": {"ts": 1.0, "emdata:0": {"id": 0, **emdata}},
            }
        ).encode()

    assert dec.feed(topic, notify(total_act=5000.25, total_act_ret=100.0)) == [
        {"import": 5_000_250, "export": 100_000}
    ]
    assert dec.feed(topic, notify(total_act=5010.0)) == [
        "no_field",
        {"import": 5_010_000, "export": 100_000},
    ]
    other = json.dumps(
        {"method": "NotifyStatus", "params": {"ts": 2.0, "em:0": {"id": 0}}}
    ).encode()
    assert dec.feed(topic, other) == ["no_field", "no_field"]


def test_home_assistant_statestream_values_and_unavailable_states() -> None:
    dec = MessageDecoder(
        mqtt_source(
            url=URL,
            format="homeassistant",
            import_topic="homeassistant/sensor/grid_import/state",
            export_topic="homeassistant/sensor/grid_export/state",
            pv_topic="homeassistant/sensor/pv_total/state",
        )
    )
    assert dec.feed("homeassistant/sensor/grid_import/state", b"1234.5678") == [
        {"import": 1_234_567_800}
    ]
    assert dec.feed("homeassistant/sensor/grid_import/state", b"unavailable") == ["not_a_number"]
    # a retained value (from before we subscribed) is a last value, not a sample now
    assert dec.feed("homeassistant/sensor/grid_export/state", b"10", retained=True) == []
    assert dec.feed("homeassistant/sensor/pv_total/state", b"20") == [
        {"import": 1_234_567_800, "export": 10_000_000, "pv": 20_000_000}
    ]


def test_power_only_sources_and_paths() -> None:
    dec = MessageDecoder(
        mqtt_source(
            url=URL, format="custom", power_topic="house/grid", power_path="power", power_unit="kW"
        )
    )
    assert dec.feed("house/grid", b'{"power": -1.25}') == [-1250]
    assert value_at(b'{"a": {"b": [1, {"c": 7}]}}', "a.b.1.c") == 7
    with pytest.raises(InvalidInput) as exc:
        value_at(b"not json", "a")
    assert exc.value.reason == "not_json"


@pytest.mark.parametrize(
    ("kwargs", "needs"),
    [
        ({"format": "tasmota"}, "needs mqtt_topic"),
        ({"format": "homeassistant"}, "needs mqtt_import_topic"),
        ({"format": "custom", "topic": "a", "import_path": "x", "unit": "MWh"}, "mqtt unit"),
        ({"format": "nope"}, "mqtt_format must be"),
    ],
)
def test_a_source_names_what_is_missing(kwargs: dict[str, str], needs: str) -> None:
    with pytest.raises(UsageError, match=needs):
        mqtt_source(url=URL, **kwargs)  # type: ignore[arg-type]


async def _until(cond: object, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_tasmota_messages_through_a_real_broker_become_exact_slot_readings(
    broker: Broker, tmp_path: Path
) -> None:
    clock = FakeClock(1_700_000_000)
    source = mqtt_source(
        url=broker.url,
        format="tasmota",
        topic="tele/p1/SENSOR",
        import_path="SML.Total_in",
        export_path="SML.Total_out",
    )
    meter = LiveMeter(
        store=MeterStore.open(tmp_path / "meter.sqlite"),
        rules=Rules(slot_seconds=60, max_age_s=30),
        now_ms=clock.now_ms,
        registers=tuple(source.registers),
        source_id=source.identity,
    )
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        # a retained message from before: a last value, never a sample
        await pub.publish(
            "tele/p1/SENSOR", json.dumps({"SML": {"Total_in": 1.0, "Total_out": 0.5}}), retain=True
        )
        reader = asyncio.create_task(
            run_reader(lambda: read_mqtt(meter, source), name="mqtt", min_wait_s=0.05)
        )
        try:
            start = 1_700_000_040
            imp, exp = 100_000, 50_000  # Wh
            clock.at(start - 20)
            while not meter.counts["samples"]:  # until subscribed: live messages get through
                await pub.publish(
                    "tele/p1/SENSOR",
                    json.dumps({"SML": {"Total_in": imp / 1000, "Total_out": exp / 1000}}),
                )
                await asyncio.sleep(0.1)
            for k in range(-1, 19):  # the last one on the third boundary
                clock.at(start + 10 * k)
                imp += 7
                exp += 3 * (k % 2)
                before = meter.counts["samples"]
                doc = {"Time": "t", "SML": {"Total_in": imp / 1000, "Total_out": exp / 1000}}
                await pub.publish("tele/p1/SENSOR", json.dumps(doc), qos=1)
                await _until(lambda b=before: meter.counts["samples"] >= b + 2)
            clock.at(start + 3 * 60 + 1)
            readings = [meter.slot_net_wh(start // 60 + k, SlotClock(60, 10)) for k in range(3)]
            # samples on the boundaries: each slot is six messages' increments, 6 x 7 Wh import and
            # 3 x 3 Wh export: exactly the register differences
            assert readings == [9 - 42, 9 - 42, 9 - 42]
            assert meter.counts["break:first"] == 2 and "break:decrease" not in meter.counts
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            meter.close()
