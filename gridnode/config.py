"""A household's data directory: identity, configuration, API token, genesis, lock.

Layout of ``DIR`` (made by ``gridnode init``)::

    DIR/identity.key     the Ed25519 seed, hex, mode 0600 (the household id and libp2p peer id)
    DIR/gridnode.toml    the commented configuration (below)
    DIR/api.token        the bearer token for the API's write endpoints, mode 0600
    DIR/genesis.toml     the community's genesis (``--genesis`` at init, or copied in later)
    DIR/data/            the node's SQLite store
    DIR/gridnode.lock    held while a daemon runs (a second daemon on DIR is refused)

Where DIR is when a command is given no ``--dir``: :func:`gridnode.cli.default_dir`
(``$GRIDNODE_DIR``, else ``$XDG_DATA_HOME/gridnode``, else ``~/.local/share/gridnode``).

Rules of this module:

* Every problem with a file is a :class:`~market.errors.UsageError` that names the file, the key and
  what was wrong, in one line: a missing file, a directory where the file belongs (or a file where
  DIR belongs), an unreadable or non-UTF-8 file, bad TOML, an unknown key, a wrong type or value.
* A config must name what the node exposes: ``node.role``, ``network.listen`` and
  ``network.mdns`` are required (an empty file used to run a full node listening on every
  interface with mDNS on); every other key has a documented default.
* Files are written atomically: a temporary file in the same directory, fsynced, renamed (or, for
  the identity and token, which are never overwritten, hard-linked) into place, then the directory
  fsynced. A crash leaves the old file or the new one, never a mix; a refused ``init`` or
  ``community create`` writes nothing.
"""

from __future__ import annotations

import math
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import tomli_w

from forecasting.names import DEFAULT_MODEL, MODEL_NAMES
from gridnode.files import LOCK_NAME, DirLock, read_text, write_atomic
from market.errors import UsageError

# the ledger (numpy), keys (libsodium), zones and token randomness are imported where they are used:
# the client commands, which only read the API address and token, start fast (docs/api.md)
if TYPE_CHECKING:
    from gridnode.core.crypto import KeyPair
    from gridnode.core.ledger import Genesis

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
    "read_text",
    "update_config",
    "write_atomic",
    "write_genesis",
]

CONFIG_NAME: Final = "gridnode.toml"
IDENTITY_NAME: Final = "identity.key"
TOKEN_NAME: Final = "api.token"
GENESIS_NAME: Final = "genesis.toml"
ROLES: Final = ("validator", "full")
#: ``meter.source``: none, a meter history file, the shipped replay, or a live meter (docs/meters.md)
METER_SOURCES: Final = ("none", "file", "replay", "dsmr", "mqtt")
#: ``meter.dsmr_version`` and ``meter.mqtt_format`` (the adapters in gridnode/meters/ use the same)
DSMR_VERSIONS: Final = ("4", "5", "5B")
MQTT_FORMATS: Final = ("tasmota", "shelly-gen1", "shelly-gen2", "homeassistant", "custom")
#: ``bidding.policy``: the same policies the in-process simulation engine runs (``docs/sims.md``)
BIDDING_POLICIES: Final = ("forecast", "naive-fixed-price", "perfect-foresight")
#: ``training.mode``: fit the forecaster alone, or with the community (docs/federated.md)
TRAINING_MODES: Final = ("local", "federated")
#: keys a config must set: what the node exposes is never a silent default
REQUIRED_KEYS: Final = (("node", "role"), ("network", "listen"), ("network", "mdns"))


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
    #: deprecated (the genesis sets the clock): when set it must equal the genesis' clock_speedup
    clock_speedup: float | None = None
    #: the household's time zone for everything people read (gridnode/localtime.py)
    timezone: str = "local"
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
    # -- federated training (docs/federated.md, "Rounds over libp2p") --
    training_mode: str = "local"
    round_every_s: int = 86_400
    #: differential privacy of the rounds (docs/federated.md, "Differential privacy"): the
    #: household's total (epsilon, delta) over dp_rounds rounds (0: a year of rounds); None: off
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_rounds: int = 0
    dp_clip_norm: float = 1e9
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
        "deprecated: the genesis sets the community clock (clock_speedup); if set here it must "
        "equal the genesis' value",
    ),
    ("node", "timezone"): (
        "timezone",
        str,
        'times on the status page and in the client commands: "local" (this machine\'s), an IANA name like "Europe/Amsterdam", or an offset like "-07:00"',
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
    ("training", "mode"): (
        "training_mode",
        str,
        '"local" (the household fits its forecaster alone) or "federated" (it also trains the community model in rounds over libp2p and bids with the personal blend; docs/federated.md)',
    ),
    ("training", "round_every_s"): (
        "round_every_s",
        int,
        "seconds of node time between federated rounds (86400: daily)",
    ),
    ("training", "dp_epsilon"): (
        "dp_epsilon",
        (int, float),
        "differential privacy (off unless set): this household's TOTAL epsilon over dp_rounds rounds, 0 < epsilon <= 100; rounds this node aggregates add the noise that spends it, and it stops contributing once it is spent (docs/federated.md)",
    ),
    ("training", "dp_delta"): (
        "dp_delta",
        (int, float),
        "the delta of the DP budget, 0 < delta <= 0.01 (default 1e-5)",
    ),
    ("training", "dp_rounds"): (
        "dp_rounds",
        int,
        "rounds the DP budget covers (default: a year of rounds at round_every_s)",
    ),
    ("training", "dp_clip_norm"): (
        "dp_clip_norm",
        (int, float),
        "L2 norm each pre-scaled update is clipped to (update units; default 1e9)",
    ),
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
        "node": {"role": role, "genesis": genesis, "data_dir": "data"},
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


def _check_dir(directory: Path, *, create: bool) -> None:
    """DIR must be a directory (made when ``create``): a file there is a one-line error."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: is a file, where the data directory belongs")
    if not create and not directory.exists():
        raise UsageError(
            f"{directory}: no such household directory; run `gridnode init --dir {directory}` "
            "(commands take --dir, or $GRIDNODE_DIR)"
        )
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{directory}: cannot create it: {exc.strerror or exc}") from None


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
    """Create DIR with a new identity (or ``key``), a commented config and an API token.

    Everything is checked before anything is written: an existing identity or config, a bad role,
    port or genesis is refused with DIR untouched.
    """
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if not 0 < api_port < 65536:
        raise UsageError(f"--api-port must be 1..65535, got {api_port}")
    if not listen.startswith("/") or any(not b.startswith("/") for b in bootstrap or []):
        raise UsageError("--listen and --bootstrap take multiaddrs like /ip4/…/tcp/…")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: is a file, where the data directory belongs")
    ident = directory / IDENTITY_NAME
    for path in (ident, directory / CONFIG_NAME):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} already exists: refusing to overwrite a household's files")
    g = load_genesis(genesis) if genesis is not None else None  # validate before writing
    data = directory / "data"
    if data.exists() and not data.is_dir():
        raise UsageError(f"{data}: is a file, where the data directory belongs")
    _check_dir(directory, create=True)
    from gridnode.core.crypto import KeyPair  # noqa: PLC0415  # not on the client path

    key = key or KeyPair.generate()
    write_atomic(ident, key.seed.hex() + "\n", mode=0o600, overwrite=False)
    if not (directory / TOKEN_NAME).exists():
        write_atomic(
            directory / TOKEN_NAME, secrets.token_urlsafe(32) + "\n", mode=0o600, overwrite=False
        )
    if g is not None:
        write_genesis(directory / GENESIS_NAME, g)
    doc = _default_doc(role, listen, api_port, bootstrap or [], GENESIS_NAME)
    write_atomic(directory / CONFIG_NAME, _render_commented(doc))
    (directory / LOCK_NAME).touch()
    data.mkdir(exist_ok=True)
    return key


def update_config(directory: Path, changes: Mapping[str, Any]) -> None:
    """Set ``section.key`` values in ``DIR/gridnode.toml`` (rewritten with its comments,
    atomically) if the result loads; unknown keys and bad values raise :class:`UsageError` and
    leave the file as it was."""
    path = directory / CONFIG_NAME
    doc = _parse_toml(path, read_text(path, missing="no config"))
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if (section, key) not in _SCHEMA:
            raise UsageError(f"unknown config key {dotted!r}")
        doc.setdefault(section, {})[key] = value
    text = _render_commented(doc)
    _parse_config(directory, path, tomllib.loads(text))  # refuse before writing
    write_atomic(path, text)


def load_identity(directory: Path, *, name: str = IDENTITY_NAME) -> KeyPair:
    _check_dir(directory, create=False)
    path = directory / name
    text = read_text(
        path, missing=f"no identity; run `gridnode init --dir {directory}` first"
    ).strip()
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{path}: not a hex Ed25519 seed") from None
    if len(seed) != 32:
        raise UsageError(f"{path}: an Ed25519 seed is 32 bytes, found {len(seed)}")
    from gridnode.core.crypto import KeyPair  # noqa: PLC0415

    return KeyPair(seed)


def load_token(directory: Path) -> str:
    path = directory / TOKEN_NAME
    token = read_text(path, missing=f"no API token; run `gridnode init --dir {directory}`").strip()
    if not token:
        raise UsageError(f"{path}: empty API token; delete it and run `gridnode init` again")
    return token


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def load_config(directory: Path) -> Config:
    """Parse and check ``DIR/gridnode.toml``; every error names the file and the key."""
    _check_dir(directory, create=False)
    path = directory / CONFIG_NAME
    text = read_text(path, missing=f"no config; run `gridnode init --dir {directory}` first")
    return _parse_config(directory, path, _parse_toml(path, text))


def _parse_config(directory: Path, path: Path, doc: Mapping[str, Any]) -> Config:
    missing = [
        f"{s}.{k}" for s, k in REQUIRED_KEYS if not isinstance(doc.get(s), dict) or k not in doc[s]
    ]
    if missing:
        raise UsageError(
            f"{path}: missing {', '.join(missing)}: say what this node is and exposes "
            f'(`gridnode init` writes a complete file; e.g. role = "full", '
            f'listen = ["/ip4/127.0.0.1/tcp/4001"], mdns = false)'
        )
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
    speed = values.get("clock_speedup")
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise UsageError(
            f"{path}: node.clock_speedup must be a finite number > 0, got {speed} (better: "
            "remove it; the genesis sets the community clock)"
        )
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
    if "timezone" in values:
        try:
            from gridnode.localtime import LocalTime  # noqa: PLC0415

            LocalTime.parse(values["timezone"])
        except UsageError as exc:
            raise UsageError(f"{path}: node.timezone: {exc}") from None
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
    _check_site(path, values, data_dir=directory.resolve() / values.get("data_dir", "data"))
    if values.get("training_mode", "local") not in TRAINING_MODES:
        raise UsageError(
            f"{path}: training.mode must be one of {', '.join(TRAINING_MODES)}, "
            f"got {values['training_mode']!r}"
        )
    if values.get("round_every_s", 86_400) < 60:
        raise UsageError(
            f"{path}: training.round_every_s must be >= 60 (seconds of node time), "
            f"got {values['round_every_s']}"
        )
    _check_dp(path, values)
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


#: DP keys of [training] (all need dp_epsilon and training.mode = "federated")
_DP_KEYS: Final = ("dp_epsilon", "dp_delta", "dp_rounds", "dp_clip_norm")


def _check_dp(path: Path, values: dict[str, Any]) -> None:
    """``[training] dp_*``: ranges, and that they come with ``dp_epsilon`` and federated mode. The
    default horizon (``dp_rounds = 0``) becomes a year of rounds."""
    given = [k for k in _DP_KEYS if k in values]
    if not given:
        return
    if "dp_epsilon" not in values:
        raise UsageError(f"{path}: training.{given[0]} needs training.dp_epsilon (the budget)")
    if values.get("training_mode", "local") != "federated":
        raise UsageError(f'{path}: training.dp_epsilon needs training.mode = "federated"')
    checks = (
        ("dp_epsilon", lambda v: 0 < v <= 100, "in (0, 100]"),
        ("dp_delta", lambda v: 0 < v <= 0.01, "in (0, 0.01]"),
        ("dp_rounds", lambda v: 0 <= v <= 10**6, "in 0..1000000 (0: a year of rounds)"),
        ("dp_clip_norm", lambda v: 1 <= v <= 1e15, "in [1, 1e15]"),
    )
    for name, ok, words in checks:
        if name in values and not (math.isfinite(values[name]) and ok(values[name])):
            raise UsageError(f"{path}: training.{name} must be {words}, got {values[name]!r}")
    for name in ("dp_epsilon", "dp_delta", "dp_clip_norm"):
        if name in values:
            values[name] = float(values[name])
    if not values.get("dp_rounds"):
        every = values.get("round_every_s", 86_400)
        values["dp_rounds"] = max(1, -(-365 * 86_400 // every))


def _check_site(path: Path, values: dict[str, Any], *, data_dir: Path) -> None:
    """``bidding.model`` and the household's site (the bidding forecaster's inputs); the holiday
    calendar is checked through its file in ``data_dir`` (:mod:`gridnode.holidaycache`)."""
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
        # through the calendar file in the data directory (the first start builds it in a child
        # process, later ones read it): the holidays package stays out of this process
        from gridnode import holidaycache  # noqa: PLC0415 - only a household that names its country

        try:
            holidaycache.check(country, subdiv, cache_dir=data_dir)
        except UsageError:
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
    from gridnode.core.ledger import Genesis  # noqa: PLC0415  # numpy: not on the client path

    doc = _parse_toml(path, read_text(path, missing="no such genesis file"))
    try:
        return Genesis.from_dict(doc.get("genesis", doc))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def write_genesis(path: Path, genesis: Genesis) -> None:
    """Write ``genesis`` to ``path`` atomically (replacing a file there)."""
    header = (
        "# gridnode community genesis. Every node of the community needs this exact file:\n"
        f"# its hash ({genesis.hash.hex()[:16]}…) names the chain. Prices are µ-units per kWh.\n"
    )
    write_atomic(path, header + tomli_w.dumps({"genesis": genesis.to_dict()}))
