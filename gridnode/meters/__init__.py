"""Real meters: DSMR P1 telegrams and MQTT (Tasmota, Shelly, Home Assistant) → exact Wh per slot.

* :mod:`gridnode.meters.registers` — the pure rules: register samples → boundary values → slot Wh.
* :mod:`gridnode.meters.live` — :class:`~gridnode.meters.live.LiveMeter`, the node's
  :class:`~gridnode.meter.Meter`, which keeps what it measured in ``DIR/data/meter.sqlite``.
* :mod:`gridnode.meters.dsmr`, :mod:`gridnode.meters.mqtt` — the adapters' readers (asyncio).

The daemon (``gridnode run``) builds the meter with :func:`open_live_meter` (from ``make_meter``) and
runs its reader on the asyncio loop that also serves the API (:func:`start_meter_reader` /
:func:`stop_meter_reader`): aiomqtt and the serial/TCP streams are asyncio, and the node on the trio
thread only reads the meter's state under its lock. The reader reconnects forever, with a back-off
from 1 s to 60 s (wall time); an outage is logged once (a warning), each new connection at info.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gridnode.meters.live import LiveMeter, MeterStore
from gridnode.meters.registers import Rules
from market.errors import UsageError

if TYPE_CHECKING:
    from gridnode.config import Config

__all__ = [
    "LiveMeter",
    "open_live_meter",
    "run_reader",
    "start_meter_reader",
    "stop_meter_reader",
]

log = logging.getLogger(__name__)

METER_FILE = "meter.sqlite"


def _local_standard_offset_s() -> int:
    """The machine's local standard-time offset (the forecaster's calendar; no DST)."""
    return -time.timezone


def open_live_meter(config: Config, *, slot_seconds: int, now_ms: Callable[[], int]) -> LiveMeter:
    """The live meter ``config`` describes (``meter.source`` = ``dsmr`` or ``mqtt``), its store
    opened in the data directory and its reader ready for :func:`start_meter_reader`."""
    rules = Rules(slot_seconds=slot_seconds, max_age_s=config.meter_max_age_s)
    if config.meter_source == "dsmr":
        from gridnode.meters.dsmr import DsmrSource, read_dsmr  # noqa: PLC0415  # dsmr-parser

        dsmr = DsmrSource(
            config.dsmr_url or config.dsmr_port, version=config.dsmr_version, baud=config.dsmr_baud
        )
        meter = LiveMeter(
            store=MeterStore.open(config.data_dir / METER_FILE),
            rules=rules,
            now_ms=now_ms,
            registers=("import", "export"),
            source_id=f"dsmr:{dsmr.where}",
            utc_offset_s=_local_standard_offset_s(),
        )
        meter.reader = lambda: read_dsmr(meter, dsmr)
        return meter
    if config.meter_source == "mqtt":
        from gridnode.meters.mqtt import mqtt_source, read_mqtt  # noqa: PLC0415  # aiomqtt

        def topics(value: tuple[str, ...]) -> tuple[str, ...] | None:
            return value or None

        source = mqtt_source(
            url=config.mqtt_url,
            format=config.mqtt_format,
            topic=list(config.mqtt_topic) or None,
            import_topic=topics(config.mqtt_import_topic),
            import_path=config.mqtt_import_path,
            export_topic=topics(config.mqtt_export_topic),
            export_path=config.mqtt_export_path,
            pv_topic=topics(config.mqtt_pv_topic),
            pv_path=config.mqtt_pv_path,
            power_topic=topics(config.mqtt_power_topic),
            power_path=config.mqtt_power_path,
            unit=config.mqtt_unit,
            power_unit=config.mqtt_power_unit,
        )
        registers = ("import", "export") if source.power else tuple(source.registers)
        meter = LiveMeter(
            store=MeterStore.open(config.data_dir / METER_FILE),
            rules=rules,
            now_ms=now_ms,
            registers=registers,
            source_id=source.identity,
            exact=source.power is None,
            utc_offset_s=_local_standard_offset_s(),
        )
        if not meter.exact:
            log.warning("meter: power-only source: readings are integrated power (less exact)")
        meter.reader = lambda: read_mqtt(meter, source)
        return meter
    raise UsageError(f"meter.source {config.meter_source!r} is not a live meter")


async def run_reader(
    connect: Callable[[], Awaitable[None]],
    *,
    name: str,
    min_wait_s: float = 1.0,
    max_wait_s: float = 60.0,
) -> None:
    """Run ``connect`` (one connection's reading loop) forever: when it ends or fails, wait (doubling
    from ``min_wait_s`` to ``max_wait_s``, reset after a connection that lasted a minute) and run it
    again. Only cancellation stops it."""
    wait = min_wait_s
    down = False
    while True:
        started = time.monotonic()
        try:
            await connect()
            problem = "the connection ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reader must outlive any meter or network fault
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started > 60:
            wait = min_wait_s
        if not down:
            log.warning(
                "meter %s: %s; reconnecting (every %.0f-%.0f s)", name, problem, wait, max_wait_s
            )
            down = True
        else:
            log.debug("meter %s: %s", name, problem)
        await asyncio.sleep(wait)
        wait = min(max_wait_s, wait * 2)
        down = down and time.monotonic() - started < 60


def start_meter_reader(meter: object) -> asyncio.Task[None] | None:
    """On the daemon's asyncio loop: start ``meter``'s reader if it is a live meter."""
    if not isinstance(meter, LiveMeter) or meter.reader is None:
        return None
    return asyncio.get_running_loop().create_task(
        run_reader(meter.reader, name=meter.source_id.split(":")[0]), name="meter-reader"
    )


async def stop_meter_reader(task: asyncio.Task[None] | None, meter: object) -> None:
    """Cancel the reader and close the meter's store (after the node stopped asking it)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if isinstance(meter, LiveMeter):
        meter.close()
