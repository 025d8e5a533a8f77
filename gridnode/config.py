"""A household's data directory: identity, configuration, API token, genesis, lock.

Layout of ``DIR`` (made by ``gridnode init``)::

    DIR/identity.key     the Ed25519 seed, hex, mode 0600 (the household id and libp2p peer id)
    DIR/gridnode.toml    the commented configuration (below)
    DIR/api.token        the bearer token for the API's write endpoints, mode 0600
    DIR/genesis.toml     the community's genesis (``--genesis`` at init, or copied in later)
    DIR/data/            the node's SQLite store
    DIR/gridnode.lock    held while a daemon runs (a second daemon on DIR is refused)

Every problem with a file is a :class:`~market.errors.UsageError` that names the file, the key and
what was wrong, in one line.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import tomli_w

from forecasting.registry import DEFAULT_MODEL, MODEL_NAMES
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from market.errors import UsageError

__all__ = [
    "BIDDING_POLICIES",
    "CONFIG_NAME",
    "Config",
    "DirLock",
    "create_data_dir",
    "load_config",
    "load_genesis",
    "load_identity",
    "load_token",
    "update_config",
    "write_genesis",
]

CONFIG_NAME: Final = "gridnode.toml"
IDENTITY_NAME: Final = "identity.key"
TOKEN_NAME: Final = "api.token"
LOCK_NAME: Final = "gridnode.lock"
GENESIS_NAME: Final = "genesis.toml"
ROLES: Final = ("validator", "full")
#: ``meter.source``: none, a meter history file, the shipped replay, or a live meter (docs/meters.md)
METER_SOURCES: Final = ("none", "file", "replay", "dsmr", "mqtt")
#: ``meter.dsmr_version`` and ``meter.mqtt_format`` (the adapters in gridnode/meters/ use the same)
DSMR_VERSIONS: Final = ("4", "5", "5B")
MQTT_FORMATS: Final = ("tasmota", "shelly-gen1", "shelly-gen2", "homeassistant", "custom")
#: ``bidding.policy``: the same policies the in-process simulation engine runs (``docs/sims.md``)
BIDDING_POLICIES: Final = ("forecast", "naive-fixed-price", "perfect-foresight")


@dataclass(frozen=True, slots=True)
class Config:
    """The parsed ``gridnode.toml``. Paths are absolute."""

    dir: Path
    role: str = "full"
    genesis_path: Path = Path(GENESIS_NAME)
    data_dir: Path = Path("data")
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 8470
    pv_kwp: float = 0.0
    battery_kwh: float = 0.0
    battery_kw: float = 0.0
    bidding_enabled: bool = False
    bidding_policy: str = "forecast"
    bidding_model: str = DEFAULT_MODEL
    latitude: float | None = None
    longitude: float | None = None
    holiday_country: str | None = None
    holiday_subdiv: str | None = None
    meter_history: Path | None = None
    meter_source: str = "none"
    replay_day: str = "2009-06-01"
    replay_day_offset: int = 0
    replay_hour: float = 10.0
    pv_scale: float = 1.0
    load_scale: float = 1.0
    log_level: str = "info"
    clock_speedup: float = 1.0
    # -- live meters (meter.source = "dsmr" / "mqtt"; docs/meters.md) --
    dsmr_port: str = ""
    dsmr_url: str = ""
    dsmr_baud: int = 115_200
    dsmr_version: str = "5"
    mqtt_url: str = ""
    mqtt_format: str = "tasmota"
    mqtt_topic: tuple[str, ...] = ()
    mqtt_import_topic: tuple[str, ...] = ()
    mqtt_import_path: str | None = None
    mqtt_export_topic: tuple[str, ...] = ()
    mqtt_export_path: str | None = None
    mqtt_pv_topic: tuple[str, ...] = ()
    mqtt_pv_path: str | None = None
    mqtt_power_topic: tuple[str, ...] = ()
    mqtt_power_path: str | None = None
    mqtt_unit: str | None = None
    mqtt_power_unit: str = "W"
    meter_max_age_s: int = 600
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "") else self.api_host
        return f"http://{host}:{self.api_port}"


# (section, key) -> (attribute, type, help). The comments are written into the file by `init`.
_SCHEMA: Final[dict[tuple[str, str], tuple[str, type | tuple[type, ...], str]]] = {
    ("node", "role"): (
        "role",
        str,
        'what this node does: "validator" (votes on blocks) or "full" (verifies and applies)',
    ),
    ("node", "genesis"): (
        "genesis_path",
        str,
        "the community's genesis file, relative to this directory",
    ),
    ("node", "data_dir"): ("data_dir", str, "where the node keeps its SQLite store"),
    ("node", "clock_speedup"): (
        "clock_speedup",
        (int, float),
        "1 = real time; >1 runs the slot clock faster (demos, simulations)",
    ),
    ("network", "listen"): ("listen", list, "multiaddrs to listen on"),
    ("network", "bootstrap"): (
        "bootstrap",
        list,
        "peers to dial at start: multiaddrs ending in /p2p/<peer id>",
    ),
    ("network", "mdns"): ("mdns", bool, "find peers on the local network with mDNS"),
    ("api", "host"): (
        "api_host",
        str,
        "the local API and status page bind here; keep 127.0.0.1 unless you know why",
    ),
    ("api", "port"): ("api_port", int, "API and status page port"),
    ("household", "pv_kwp"): ("pv_kwp", (int, float), "rooftop PV peak power, kWp"),
    ("household", "battery_kwh"): ("battery_kwh", (int, float), "battery capacity, kWh (0 = none)"),
    ("household", "battery_kw"): ("battery_kw", (int, float), "battery charge/discharge power, kW"),
    ("bidding", "enabled"): (
        "bidding_enabled",
        bool,
        "forecast and place orders automatically every slot",
    ),
    ("bidding", "policy"): (
        "bidding_policy",
        str,
        '"forecast" (forecast quantiles -> order curve), "naive-fixed-price" (the P50 forecast in one step at the midpoint price), "perfect-foresight" (quotes the slot\'s actual net; needs meter.source = "replay": simulations only)',
    ),
    ("bidding", "model"): (
        "bidding_model",
        str,
        'the forecaster it bids with: "profile-qr" (the default, the best measured) or another name of forecasting.registry (docs/forecasting.md)',
    ),
    ("household", "latitude"): (
        "latitude",
        (int, float),
        "the site's latitude, degrees (clear-sky PV in the forecaster; with longitude)",
    ),
    ("household", "longitude"): ("longitude", (int, float), "the site's longitude, degrees"),
    ("household", "holiday_country"): (
        "holiday_country",
        str,
        'the public holidays the household keeps, a country code such as "US" or "DE"',
    ),
    ("household", "holiday_subdiv"): (
        "holiday_subdiv",
        str,
        'and its subdivision, e.g. "CA" (needs holiday_country)',
    ),
    ("bidding", "meter_history"): (
        "meter_history",
        str,
        "CSV of this household's meter history (docs/forecasting.md)",
    ),
    ("meter", "source"): (
        "meter_source",
        str,
        '"none"; "file" (bidding.meter_history, kept current by a meter adapter); "replay" (replays the shipped real household data in node time: demos, simulations); "dsmr" (a P1 port: dsmr_port or dsmr_url); "mqtt" (Tasmota, Shelly, Home Assistant via a broker: mqtt_*). See docs/meters.md',
    ),
    ("meter", "replay_day"): (
        "replay_day",
        str,
        "replay: the data day (YYYY-MM-DD) that the genesis day maps to",
    ),
    ("meter", "replay_day_offset"): (
        "replay_day_offset",
        int,
        "replay: days added to replay_day (gives households different days)",
    ),
    ("meter", "replay_hour"): (
        "replay_hour",
        (int, float),
        "replay: the data's local hour at the genesis time",
    ),
    ("meter", "pv_scale"): ("pv_scale", (int, float), "replay: PV scale factor (0 = no PV)"),
    ("meter", "load_scale"): ("load_scale", (int, float), "replay: consumption scale factor"),
    # -- live meters: meter.source = "dsmr" / "mqtt" (docs/meters.md) --
    ("meter", "dsmr_port"): (
        "dsmr_port",
        str,
        'dsmr: the P1 cable\'s serial device, e.g. "/dev/ttyUSB0"',
    ),
    ("meter", "dsmr_url"): (
        "dsmr_url",
        str,
        'dsmr: telegrams over TCP (ser2net), "tcp://host:port"',
    ),
    ("meter", "dsmr_baud"): ("dsmr_baud", int, "dsmr: serial speed (DSMR 4 and 5: 115200)"),
    ("meter", "dsmr_version"): (
        "dsmr_version",
        str,
        'dsmr: "5" (8N1), "4" (7E1) or "5B" (Belgium, Fluvius)',
    ),
    ("meter", "mqtt_url"): (
        "mqtt_url",
        str,
        'mqtt: the broker, "mqtt://[user:password@]host[:port]" (mqtts:// for TLS)',
    ),
    ("meter", "mqtt_format"): (
        "mqtt_format",
        str,
        'mqtt: "tasmota", "shelly-gen1", "shelly-gen2", "homeassistant" or "custom"',
    ),
    ("meter", "mqtt_topic"): (
        "mqtt_topic",
        (str, list),
        "mqtt: the device's topic (tasmota: tele/<device>/SENSOR; shelly-gen1: shellies/<id>/emeter/<i>; shelly-gen2: the topic prefix)",
    ),
    ("meter", "mqtt_import_topic"): (
        "mqtt_import_topic",
        (str, list),
        "mqtt: topic(s) of the grid import register (several are summed)",
    ),
    ("meter", "mqtt_import_path"): (
        "mqtt_import_path",
        str,
        'mqtt: dotted JSON path of the import register in the message ("" = the payload itself)',
    ),
    ("meter", "mqtt_export_topic"): (
        "mqtt_export_topic",
        (str, list),
        "mqtt: topic(s) of the grid export register",
    ),
    ("meter", "mqtt_export_path"): (
        "mqtt_export_path",
        str,
        "mqtt: dotted JSON path of the export register",
    ),
    ("meter", "mqtt_pv_topic"): (
        "mqtt_pv_topic",
        (str, list),
        "mqtt: topic(s) of a PV production register (optional)",
    ),
    ("meter", "mqtt_pv_path"): (
        "mqtt_pv_path",
        str,
        "mqtt: dotted JSON path of the PV production register",
    ),
    ("meter", "mqtt_power_topic"): (
        "mqtt_power_topic",
        (str, list),
        "mqtt: power-only meters: topic of the signed grid power (+ import), integrated (less exact)",
    ),
    ("meter", "mqtt_power_path"): (
        "mqtt_power_path",
        str,
        "mqtt: dotted JSON path of the signed grid power",
    ),
    ("meter", "mqtt_unit"): (
        "mqtt_unit",
        str,
        'mqtt: unit of the registers, "Wh", "kWh" or "Wmin" (default: the format\'s)',
    ),
    ("meter", "mqtt_power_unit"): (
        "mqtt_power_unit",
        str,
        'mqtt: unit of the power field, "W" or "kW"',
    ),
    ("meter", "max_sample_age_s"): (
        "meter_max_age_s",
        int,
        "dsmr/mqtt: a slot boundary takes the last register sample at most this old (node seconds)",
    ),
    ("logging", "level"): ("log_level", str, "debug, info, warning or error"),
}


def _default_doc(
    role: str, listen: str, api_port: int, bootstrap: list[str], genesis: str
) -> dict[str, dict[str, Any]]:
    return {
        "node": {"role": role, "genesis": genesis, "data_dir": "data", "clock_speedup": 1.0},
        "network": {"listen": [listen], "bootstrap": bootstrap, "mdns": True},
        "api": {"host": "127.0.0.1", "port": api_port},
        "household": {"pv_kwp": 0.0, "battery_kwh": 0.0, "battery_kw": 0.0},
        "bidding": {"enabled": False, "policy": "forecast", "meter_history": "meter.csv"},
        "meter": {
            "source": "none",
            "replay_day": "2009-06-01",
            "replay_day_offset": 0,
            "replay_hour": 10.0,
            "pv_scale": 1.0,
            "load_scale": 1.0,
        },
        "logging": {"level": "info"},
    }


#: written under [meter] by `init`: how a real meter is connected (every key: docs/meters.md)
_LIVE_METER_EXAMPLE: Final = (
    "# A real meter (docs/meters.md). A DSMR P1 port, on a serial cable or served by ser2net:",
    '#   source = "dsmr"',
    '#   dsmr_port = "/dev/ttyUSB0"            # or: dsmr_url = "tcp://192.168.1.20:2001"',
    "# or an MQTT broker that a Tasmota / Shelly / Home Assistant meter publishes to:",
    '#   source = "mqtt"',
    '#   mqtt_url = "mqtt://192.168.1.10:1883"',
    '#   mqtt_format = "tasmota"               # shelly-gen1, shelly-gen2, homeassistant, custom',
    '#   mqtt_topic = "tele/p1meter/SENSOR"',
    '#   mqtt_import_path = "SML.Total_in"     # override a format\'s field; mqtt_unit = "kWh"',
    '#   mqtt_export_path = "SML.Total_out"',
)


def _render_commented(doc: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "# gridnode household daemon configuration. `gridnode run --help` explains the daemon.",
        "",
    ]
    for section, values in doc.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            help_text = _SCHEMA[(section, key)][2]
            lines.append(f"# {help_text}")
            rendered = tomli_w.dumps({key: value}).strip()
            lines.append(rendered)
        if section == "meter":
            lines.extend(_LIVE_METER_EXAMPLE)
        lines.append("")
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def create_data_dir(
    directory: Path,
    *,
    role: str = "full",
    listen: str = "/ip4/0.0.0.0/tcp/4001",
    api_port: int = 8470,
    bootstrap: list[str] | None = None,
    genesis: Path | None = None,
    key: KeyPair | None = None,
) -> KeyPair:
    """Create DIR with a new identity, a commented config and an API token; refuse to overwrite."""
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if not 0 < api_port < 65536:
        raise UsageError(f"--api-port must be 1..65535, got {api_port}")
    directory.mkdir(parents=True, exist_ok=True)
    ident = directory / IDENTITY_NAME
    if ident.exists():
        raise UsageError(f"{ident} already exists: refusing to overwrite a household identity")
    if (directory / CONFIG_NAME).exists():
        raise UsageError(f"{directory / CONFIG_NAME} already exists: refusing to overwrite it")
    genesis_name = GENESIS_NAME
    if genesis is not None:
        g = load_genesis(genesis)  # validate before writing anything
        write_genesis(directory / GENESIS_NAME, g)
    key = key or KeyPair.generate()
    _write_private(ident, key.seed.hex() + "\n")
    if not (directory / TOKEN_NAME).exists():
        _write_private(directory / TOKEN_NAME, secrets.token_urlsafe(32) + "\n")
    doc = _default_doc(role, listen, api_port, bootstrap or [], genesis_name)
    (directory / CONFIG_NAME).write_text(_render_commented(doc), encoding="utf-8")
    (directory / "data").mkdir(exist_ok=True)
    return key


def update_config(directory: Path, changes: Mapping[str, Any]) -> None:
    """Set ``section.key`` values in ``DIR/gridnode.toml`` (rewritten with its comments), then
    check the result loads. Unknown keys raise :class:`UsageError`."""
    path = directory / CONFIG_NAME
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if (section, key) not in _SCHEMA:
            raise UsageError(f"unknown config key {dotted!r}")
        doc.setdefault(section, {})[key] = value
    path.write_text(_render_commented(doc), encoding="utf-8")
    load_config(directory)


def load_identity(directory: Path) -> KeyPair:
    path = directory / IDENTITY_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no identity; run `gridnode init --dir {directory}` first"
        ) from None
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{path}: not a hex Ed25519 seed") from None
    if len(seed) != 32:
        raise UsageError(f"{path}: an Ed25519 seed is 32 bytes, found {len(seed)}")
    return KeyPair(seed)


def load_token(directory: Path) -> str:
    path = directory / TOKEN_NAME
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"{path}: no API token; run `gridnode init --dir {directory}`") from None


def load_config(directory: Path) -> Config:
    """Parse and check ``DIR/gridnode.toml``; every error names the file and the key."""
    path = directory / CONFIG_NAME
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no config; run `gridnode init --dir {directory}` first"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            spec = _SCHEMA.get((section, key))
            if spec is None:
                known = sorted(k for s, k in _SCHEMA if s == section)
                hint = (
                    f" (known in [{section}]: {', '.join(known)})"
                    if known
                    else " (unknown section)"
                )
                raise UsageError(f"{path}: unknown key {section}.{key}{hint}")
            attr, typ, _ = spec
            if isinstance(value, bool) and typ is not bool:
                raise UsageError(
                    f"{path}: {section}.{key} must be {_type_words(typ)}, got {value!r}"
                )
            if not isinstance(value, typ):
                raise UsageError(
                    f"{path}: {section}.{key} must be {_type_words(typ)}, got {value!r}"
                )
            values[attr] = value
    role = values.get("role", "full")
    if role not in ROLES:
        raise UsageError(f"{path}: node.role must be one of {', '.join(ROLES)}, got {role!r}")
    port = values.get("api_port", 8470)
    if not 0 < port < 65536:
        raise UsageError(f"{path}: api.port must be 1..65535, got {port}")
    for name in ("listen", "bootstrap"):
        items = values.get(name)
        if items is not None:
            if not all(isinstance(x, str) and x.startswith("/") for x in items):
                raise UsageError(
                    f"{path}: network.{name} must be a list of multiaddrs like /ip4/…/tcp/…"
                )
            values[name] = tuple(items)
    if values.get("log_level", "info") not in ("debug", "info", "warning", "error"):
        raise UsageError(f"{path}: logging.level must be debug, info, warning or error")
    speed = values.get("clock_speedup", 1.0)
    if not speed > 0:
        raise UsageError(f"{path}: node.clock_speedup must be > 0, got {speed}")
    for name in ("pv_kwp", "battery_kwh", "battery_kw"):
        if values.get(name, 0.0) < 0:
            raise UsageError(f"{path}: household.{name} must be >= 0")
    for name in ("pv_scale", "load_scale"):
        if values.get(name, 1.0) < 0:
            raise UsageError(f"{path}: meter.{name} must be >= 0")
    if values.get("meter_source", "none") not in METER_SOURCES:
        raise UsageError(
            f"{path}: meter.source must be one of {', '.join(METER_SOURCES)}, got {values['meter_source']!r}"
        )
    _check_live_meter(path, values)
    policy = values.get("bidding_policy", "forecast")
    if policy not in BIDDING_POLICIES:
        raise UsageError(
            f"{path}: bidding.policy must be one of {', '.join(BIDDING_POLICIES)}, got {policy!r}"
        )
    if policy == "perfect-foresight" and values.get("meter_source", "none") not in (
        "replay",
        "file",
    ):
        raise UsageError(
            f"{path}: bidding.policy 'perfect-foresight' reads the slot's actual net ahead, which "
            f"only a replay meter (or a meter file written ahead, in a simulation) can: it needs "
            f"meter.source = 'replay' or 'file', got {values.get('meter_source', 'none')!r}"
        )
    _check_site(path, values)
    directory = directory.resolve()
    for name in ("genesis_path", "data_dir", "meter_history"):
        if name in values:
            values[name] = directory / values[name]
    values.setdefault("genesis_path", directory / GENESIS_NAME)
    values.setdefault("data_dir", directory / "data")
    for name in (
        "clock_speedup",
        "pv_kwp",
        "battery_kwh",
        "battery_kw",
        "replay_hour",
        "pv_scale",
        "load_scale",
    ):
        if name in values:
            values[name] = float(values[name])
    return Config(dir=directory, **values)


def _check_site(path: Path, values: dict[str, Any]) -> None:
    """``bidding.model`` and the household's site (the bidding forecaster's inputs)."""
    model = values.get("bidding_model", DEFAULT_MODEL)
    if model not in MODEL_NAMES:
        raise UsageError(
            f"{path}: bidding.model must be one of {', '.join(MODEL_NAMES)}, got {model!r}"
        )
    lat, lon = values.get("latitude"), values.get("longitude")
    if (lat is None) != (lon is None):
        raise UsageError(f"{path}: household.latitude and household.longitude go together")
    if lat is not None and not -90 <= lat <= 90:
        raise UsageError(f"{path}: household.latitude must lie in [-90, 90], got {lat}")
    if lon is not None and not -180 <= lon <= 180:
        raise UsageError(f"{path}: household.longitude must lie in [-180, 180], got {lon}")
    country, subdiv = values.get("holiday_country"), values.get("holiday_subdiv")
    if subdiv is not None and country is None:
        raise UsageError(f"{path}: household.holiday_subdiv needs household.holiday_country")
    if country is not None:
        import holidays  # noqa: PLC0415 - only a household that names its country needs it

        try:
            holidays.country_holidays(country, subdiv=subdiv)
        except NotImplementedError:
            raise UsageError(
                f"{path}: household.holiday_country/holiday_subdiv: no public-holiday calendar "
                f"for {country!r}/{subdiv!r} (the holidays package's codes, e.g. 'US'/'CA')"
            ) from None
    for name in ("latitude", "longitude"):
        if values.get(name) is not None:
            values[name] = float(values[name])


def _check_live_meter(path: Path, values: dict[str, Any]) -> None:
    """The ``[meter]`` keys of the DSMR and MQTT adapters (``docs/meters.md``): one line per problem,
    naming the file and the key. Topic keys become tuples."""
    for name in (
        "mqtt_topic",
        "mqtt_import_topic",
        "mqtt_export_topic",
        "mqtt_pv_topic",
        "mqtt_power_topic",
    ):
        if name in values:
            raw = values[name]
            topics = (raw,) if isinstance(raw, str) else tuple(raw)
            key = f"meter.{name}"
            if not topics or not all(
                isinstance(t, str) and t and not set(t) & {"#", "+"} for t in topics
            ):
                raise UsageError(
                    f"{path}: {key} must be a topic or a list of topics (no wildcards), got {raw!r}"
                )
            values[name] = topics
    source = values.get("meter_source", "none")
    if values.get("meter_max_age_s", 600) < 0:
        raise UsageError(f"{path}: meter.max_sample_age_s must be >= 0")
    if source == "dsmr":
        port, url = values.get("dsmr_port", ""), values.get("dsmr_url", "")
        if bool(port) == bool(url):
            raise UsageError(
                f"{path}: meter.source 'dsmr' needs exactly one of meter.dsmr_port (a serial device) "
                f"or meter.dsmr_url (tcp://host:port)"
            )
        if url and not re.fullmatch(r"tcp://[^\s/:]+:\d{1,5}", url):
            raise UsageError(f"{path}: meter.dsmr_url must be tcp://host:port, got {url!r}")
        if values.get("dsmr_version", "5") not in DSMR_VERSIONS:
            raise UsageError(
                f"{path}: meter.dsmr_version must be one of {', '.join(DSMR_VERSIONS)}, got {values['dsmr_version']!r}"
            )
        if values.get("dsmr_baud", 115_200) <= 0:
            raise UsageError(f"{path}: meter.dsmr_baud must be > 0, got {values['dsmr_baud']}")
    if source == "mqtt":
        url = values.get("mqtt_url", "")
        if not re.fullmatch(r"mqtts?://([^@/\s]+@)?[^@/:\s]+(:\d{1,5})?/?", url):
            raise UsageError(
                f"{path}: meter.source 'mqtt' needs meter.mqtt_url = 'mqtt://[user:password@]host[:port]', got {url!r}"
            )
        fmt = values.get("mqtt_format", "tasmota")
        if fmt not in MQTT_FORMATS:
            raise UsageError(
                f"{path}: meter.mqtt_format must be one of {', '.join(MQTT_FORMATS)}, got {fmt!r}"
            )
        if values.get("mqtt_unit", "kWh") not in ("Wh", "kWh", "Wmin"):
            raise UsageError(
                f"{path}: meter.mqtt_unit must be Wh, kWh or Wmin, got {values['mqtt_unit']!r}"
            )
        if values.get("mqtt_power_unit", "W") not in ("W", "kW"):
            raise UsageError(
                f"{path}: meter.mqtt_power_unit must be W or kW, got {values['mqtt_power_unit']!r}"
            )
        power = "mqtt_power_topic" in values or "mqtt_power_path" in values
        if power and any(
            f"mqtt_{r}_{k}" in values for r in ("import", "export", "pv") for k in ("topic", "path")
        ):
            raise UsageError(
                f"{path}: meter.mqtt_power_* integrates power into the registers: leave mqtt_import_*, mqtt_export_* and mqtt_pv_* unset"
            )
        if (
            fmt in ("tasmota", "shelly-gen1", "shelly-gen2")
            and "mqtt_topic" not in values
            and "mqtt_import_topic" not in values
        ):
            raise UsageError(
                f"{path}: meter.mqtt_format {fmt!r} needs meter.mqtt_topic (the device's topic)"
            )
        if (
            fmt in ("homeassistant", "custom")
            and not power
            and "mqtt_import_topic" not in values
            and "mqtt_topic" not in values
        ):
            raise UsageError(f"{path}: meter.mqtt_format {fmt!r} needs meter.mqtt_import_topic")
        if fmt == "custom" and not power and "mqtt_import_path" not in values:
            raise UsageError(
                f"{path}: meter.mqtt_format 'custom' needs meter.mqtt_import_path ('' = the payload itself)"
            )


def _type_words(typ: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
    }
    if isinstance(typ, tuple):
        return "a number" if set(typ) == {int, float} else " or ".join(names[t] for t in typ)
    return names[typ]


def load_genesis(path: Path) -> Genesis:
    """Read a genesis TOML file; errors name the file and the key."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such genesis file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Genesis.from_dict(doc.get("genesis", doc))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def write_genesis(path: Path, genesis: Genesis) -> None:
    header = (
        "# gridnode community genesis. Every node of the community needs this exact file:\n"
        f"# its hash ({genesis.hash.hex()[:16]}…) names the chain. Prices are µ-units per kWh.\n"
    )
    path.write_text(header + tomli_w.dumps({"genesis": genesis.to_dict()}), encoding="utf-8")


class DirLock:
    """An exclusive lock on ``DIR/gridnode.lock`` (flock): one daemon per data dir."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text(encoding="utf-8").strip() or "another process"
            raise UsageError(
                f"{self.path}: a daemon is already running on this directory (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
