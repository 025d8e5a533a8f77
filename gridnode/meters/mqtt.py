"""MQTT meters (Tasmota, Shelly, Home Assistant, or any JSON) → register samples.

:class:`MqttSource` says which topics carry which register and where in the message it is; the
formats fill in what each device publishes (``docs/meters.md`` has the examples):

================  =========================================  ===============================  =======
``mqtt_format``   topics (``mqtt_topic`` = T)                import / export path             unit
================  =========================================  ===============================  =======
``tasmota``       T (``tele/<device>/SENSOR``)               ``ENERGY.Total`` / none          kWh
``shelly-gen1``   ``T/total``, ``T/total_returned``          the payload itself               Wh
                  (T = ``shellies/<id>/emeter/<i>``)
``shelly-gen2``   ``T/events/rpc`` (``NotifyStatus``)        ``params.emdata:0.total_act`` /  Wh
                  (T = the device's topic prefix)            ``params.emdata:0.total_act_ret``
``homeassistant`` ``mqtt_import_topic`` (statestream:        the payload itself               kWh
                  ``<base>/sensor/<entity>/state``)
``custom``        every topic and path given explicitly
================  =========================================  ===============================  =======

Any of them can be overridden by ``mqtt_import_topic`` / ``mqtt_import_path`` (and ``export``,
``pv``) and ``mqtt_unit`` (``Wh``, ``kWh``, ``Wmin``). Rules of decoding (:class:`MessageDecoder`,
sans-IO):

* A **path** is dotted keys into the JSON message (a numeric key indexes a list); ``""`` means the
  payload itself is the number (plain text such as Home Assistant's ``1234.567``). A value that is a
  list of numbers is summed (Tasmota's per-phase arrays). Strings such as ``unavailable`` are
  dropped and counted (``dropped:not_a_number``), as are non-JSON payloads and messages without the
  path (``dropped:no_field``: Shelly's ``NotifyStatus`` carries only what changed).
* A register given by **several topics** (one per phase: a Shelly 3EM Gen1's three emeters) is their
  sum, once each topic has been heard.
* **Carry.** Every message that updates a register records *all* configured registers: the others
  with their last value. Devices that publish on change (Shelly Gen2, Home Assistant) stay silent
  about a register that did not change, so a message from the device also says the others are still
  what they were. (The slot sums stay exact either way: only the register's own values are
  differenced.)
* **Retained** messages (what the broker kept from before we subscribed) give a register its last
  value but are not a sample now: their time is unknown. The next live message carries them.
* **Power-only** (``mqtt_power_path``, unit ``W`` or ``kW``, ``+`` = import): the power is integrated
  into import/export registers (:class:`~gridnode.meters.registers.PowerIntegrator`); the meter is
  then flagged ``exact = False``.

:func:`read_mqtt` subscribes with ``aiomqtt`` (asyncio) and feeds a :class:`LiveMeter`.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from gridnode.config import MQTT_FORMATS
from gridnode.meters.live import LiveMeter
from gridnode.meters.registers import ENERGY_UNITS, POWER_UNITS, to_mwh, to_w
from market.errors import InvalidInput, UsageError

__all__ = [
    "MQTT_FORMATS",
    "Field",
    "MessageDecoder",
    "MqttSource",
    "mqtt_source",
    "read_mqtt",
    "value_at",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Field:
    """A register (or power) in MQTT messages: the topics it is published on (summed) and its path."""

    topics: tuple[str, ...]
    path: str = ""


@dataclass(frozen=True, slots=True)
class MqttSource:
    """The broker, and where each register is found (see the module docstring)."""

    url: str
    registers: dict[str, Field] = field(default_factory=dict)
    unit: str = "kWh"
    power: Field | None = None
    power_unit: str = "W"

    def __post_init__(self) -> None:
        if self.unit not in ENERGY_UNITS:
            raise UsageError(
                f"mqtt unit must be one of {', '.join(ENERGY_UNITS)}, got {self.unit!r}"
            )
        if self.power_unit not in POWER_UNITS:
            raise UsageError(
                f"mqtt power unit must be one of {', '.join(POWER_UNITS)}, got {self.power_unit!r}"
            )
        if self.power is None and "import" not in self.registers:
            raise UsageError("an MQTT meter needs an import register or a power field")
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(
                f"mqtt url must be mqtt://[user:password@]host[:port], got {self.url!r}"
            )

    @property
    def topics(self) -> tuple[str, ...]:
        fields = [*self.registers.values(), *([self.power] if self.power else [])]
        return tuple(dict.fromkeys(t for f in fields for t in f.topics))

    @property
    def identity(self) -> str:
        """Names this configuration: another configuration is another meter (a segment break)."""
        fields = sorted((r, f.topics, f.path) for r, f in self.registers.items())
        power = (self.power.topics, self.power.path) if self.power else None
        return f"mqtt:{fields}:{self.unit}:{power}"


def _topics(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def mqtt_source(
    *,
    url: str,
    format: str,
    topic: str | list[str] | tuple[str, ...] | None = None,
    import_topic: str | list[str] | tuple[str, ...] | None = None,
    import_path: str | None = None,
    export_topic: str | list[str] | tuple[str, ...] | None = None,
    export_path: str | None = None,
    pv_topic: str | list[str] | tuple[str, ...] | None = None,
    pv_path: str | None = None,
    power_topic: str | list[str] | tuple[str, ...] | None = None,
    power_path: str | None = None,
    unit: str | None = None,
    power_unit: str = "W",
) -> MqttSource:
    """The source a configuration describes: the format's defaults, overridden by what is given.
    :class:`UsageError` names the missing setting (``mqtt_topic``, ``mqtt_import_topic``, …)."""
    if format not in MQTT_FORMATS:
        raise UsageError(f"mqtt_format must be one of {', '.join(MQTT_FORMATS)}, got {format!r}")
    base = _topics(topic)
    defaults: dict[str, Field] = {}
    default_unit = "kWh"
    if format in ("tasmota", "shelly-gen1", "shelly-gen2") and not base and not import_topic:
        raise UsageError(f"mqtt_format {format!r} needs mqtt_topic (the device's topic)")
    if format == "tasmota":
        defaults = {"import": Field(base, "ENERGY.Total")}
    elif format == "shelly-gen1":
        defaults = {
            "import": Field(tuple(f"{t}/total" for t in base)),
            "export": Field(tuple(f"{t}/total_returned" for t in base)),
        }
        default_unit = "Wh"
    elif format == "shelly-gen2":
        rpc = tuple(f"{t}/events/rpc" for t in base)
        defaults = {
            "import": Field(rpc, "params.emdata:0.total_act"),
            "export": Field(rpc, "params.emdata:0.total_act_ret"),
        }
        default_unit = "Wh"
    registers: dict[str, Field] = {}
    given = {
        "import": (import_topic, import_path),
        "export": (export_topic, export_path),
        "pv": (pv_topic, pv_path),
    }
    for name, (topics, path) in given.items():
        d = defaults.get(name)
        if topics is None and path is None and d is None:
            continue
        t = _topics(topics) or (d.topics if d else base)
        if not t:
            raise UsageError(f"mqtt: the {name} register needs mqtt_{name}_topic (or mqtt_topic)")
        registers[name] = Field(t, path if path is not None else (d.path if d else ""))
    power = None
    if power_topic is not None or power_path is not None:
        t = _topics(power_topic) or base
        if not t:
            raise UsageError("mqtt: the power field needs mqtt_power_topic (or mqtt_topic)")
        power = Field(t, power_path or "")
        registers = {}  # power-only: import and export are integrated from it
    elif "import" not in registers:
        raise UsageError(f"mqtt_format {format!r} needs mqtt_import_topic (and mqtt_import_path)")
    return MqttSource(url, registers, unit or default_unit, power, power_unit)


def value_at(payload: bytes, path: str) -> object:
    """The value at dotted ``path`` in a JSON ``payload`` (``""``: the payload itself, JSON or plain
    text). :class:`InvalidInput` ``not_json`` / ``no_field``."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        doc: Any = json.loads(text)
    except ValueError:
        if path:
            raise InvalidInput(reason="not_json", subject="mqtt message", expected="JSON") from None
        return text
    for key in path.split(".") if path else ():
        if isinstance(doc, dict) and key in doc:
            doc = doc[key]
        elif isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        else:
            raise InvalidInput(reason="no_field", subject="mqtt message", field=path)
    if isinstance(doc, list):
        return sum((v for v in doc if isinstance(v, int | float) and not isinstance(v, bool)), 0)
    return doc


@dataclass
class MessageDecoder:
    """Sans-IO: MQTT messages in, what to record out (see the module docstring)."""

    source: MqttSource
    _parts: dict[str, dict[str, int]] = field(default_factory=dict)
    _latest: dict[str, int] = field(default_factory=dict)

    def feed(
        self, topic: str, payload: bytes, *, retained: bool = False
    ) -> list[dict[str, int] | int | str]:
        """What ``payload`` on ``topic`` means: a dict of register values (mWh) to record, an int
        power (W) to integrate, or a string: the reason it was dropped. Retained messages only
        update the last values (nothing to record)."""
        out: list[dict[str, int] | int | str] = []
        power = self.source.power
        if power is not None and topic in power.topics:
            try:
                watts = to_w(value_at(payload, power.path), self.source.power_unit)
            except InvalidInput as exc:
                return [exc.reason]
            return [] if retained else [watts]
        updated = False
        for name, f in self.source.registers.items():
            if topic not in f.topics:
                continue
            try:
                mwh = to_mwh(value_at(payload, f.path), self.source.unit)
            except InvalidInput as exc:
                out.append(exc.reason)
                continue
            parts = self._parts.setdefault(name, {})
            parts[topic] = mwh
            if len(parts) == len(f.topics):
                self._latest[name] = sum(parts.values())
                updated = True
        if updated and not retained:
            out.append(dict(self._latest))
        return out


def _client_args(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    args: dict[str, Any] = {
        "hostname": parts.hostname,
        "port": parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    if parts.scheme == "mqtts":
        args["tls_context"] = ssl.create_default_context()
    return args


async def read_mqtt(meter: LiveMeter, source: MqttSource) -> None:
    """Subscribe and record until the connection drops (``aiomqtt.MqttError``) or the task is
    cancelled. The caller reconnects (:func:`gridnode.meters.run_reader`)."""
    import aiomqtt  # noqa: PLC0415  # only for an MQTT meter

    decoder = MessageDecoder(source)
    async with aiomqtt.Client(**_client_args(source.url), keepalive=30) as client:
        for topic in source.topics:
            await client.subscribe(topic, qos=1)
        log.info(
            "mqtt: subscribed to %s at %s", ", ".join(source.topics), urlsplit(source.url).hostname
        )
        async for message in client.messages:
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
            for item in decoder.feed(message.topic.value, payload, retained=message.retain):
                if isinstance(item, str):
                    meter.drop(item)
                elif isinstance(item, int):
                    meter.record_power(item)
                else:
                    meter.record(item)
