"""DSMR P1 telegrams (Dutch and Belgian smart meters, DSMR 4 / 5) → register samples.

A smart meter's P1 port sends a **telegram** every second (DSMR 5) or ten seconds (DSMR 4): text lines
from ``/`` to ``!`` and a CRC16, one OBIS object per line. ``dsmr-parser`` frames the stream
(``TelegramBuffer``), checks the CRC and parses the objects (``TelegramParser``); this module takes
from each telegram:

* **import** = the sum of the delivered-to-client tariff registers ``1-0:1.8.1`` + ``1-0:1.8.2``
  (kWh with three decimals = exact Wh), or ``1-0:1.8.0`` on meters that only send a total;
* **export** = ``1-0:2.8.1`` + ``1-0:2.8.2`` (delivered by client), or ``1-0:2.8.0``;
* the **meter's identity** ``0-0:96.1.1`` (DSMR 5B: ``0-0:96.1.1`` as Fluvius sends it): a telegram from another meter (a replaced one) starts a new
  register segment, so no slot is counted across a meter swap.

A telegram with a bad CRC or that does not parse is dropped and counted (``dropped:bad_crc``,
``dropped:unparsable``, ``dropped:no_registers``), never raised: a P1 cable picks up noise.

Transports (:func:`read_dsmr`, asyncio): a serial device (``/dev/ttyUSB0``: a P1 cable; DSMR 5 is
115200 8N1, DSMR 4 115200 7E1; opened with ``serialx``, which ``dsmr-parser`` brings) or a TCP stream
``tcp://host:port`` as ``ser2net`` (or a network P1 reader) serves it raw. :class:`TelegramDecoder`
is the sans-IO part: bytes in, register values out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from gridnode.meters.live import LiveMeter
from gridnode.meters.registers import to_mwh
from market.errors import InvalidInput, UsageError

__all__ = ["SPECS", "DsmrSource", "TelegramDecoder", "read_dsmr", "telegram_registers"]

log = logging.getLogger(__name__)

#: ``meter.dsmr_version`` (:data:`gridnode.config.DSMR_VERSIONS`) → (telegram specification, serial
#: data bits, parity)
SPECS: Final[dict[str, tuple[dict[str, Any], int, str]]] = {
    "4": (telegram_specifications.V4, 7, "E"),
    "5": (telegram_specifications.V5, 8, "N"),
    "5B": (telegram_specifications.BELGIUM_FLUVIUS, 8, "N"),
}
_IMPORT = (("ELECTRICITY_USED_TARIFF_1", "ELECTRICITY_USED_TARIFF_2"), "ELECTRICITY_IMPORTED_TOTAL")
_EXPORT = (
    ("ELECTRICITY_DELIVERED_TARIFF_1", "ELECTRICITY_DELIVERED_TARIFF_2"),
    "ELECTRICITY_EXPORTED_TOTAL",
)
_MAX_BUFFER_CHARS: Final = 64_000  # a telegram is ~1 kB; more without a frame is noise


@dataclass(frozen=True, slots=True)
class DsmrSource:
    """Where telegrams come from: ``tcp://host:port`` or a serial device path, and the framing."""

    where: str
    version: str = "5"
    baud: int = 115_200

    def __post_init__(self) -> None:
        if self.version not in SPECS:
            raise UsageError(
                f"dsmr version must be one of {', '.join(SPECS)}, got {self.version!r}"
            )

    @property
    def tcp(self) -> tuple[str, int] | None:
        if not self.where.startswith("tcp://"):
            return None
        parts = urlsplit(self.where)
        if not parts.hostname or parts.port is None:
            raise UsageError(f"{self.where!r} is not tcp://host:port")
        return parts.hostname, parts.port


def _register(telegram: Any, names: tuple[tuple[str, str], str]) -> int | None:
    tariffs, total = names
    objs = [getattr(telegram, n, None) for n in tariffs]
    if any(o is not None for o in objs):
        present = [o for o in objs if o is not None]
    else:
        single = getattr(telegram, total, None)
        present = [] if single is None else [single]
    if not present:
        return None
    return sum(to_mwh(Decimal(o.value), str(o.unit or "kWh")) for o in present)


def telegram_registers(telegram: Any) -> tuple[dict[str, int], str]:
    """(register values in mWh, the meter's identity) of a parsed telegram; :class:`InvalidInput`
    ``no_registers`` when it carries no import register."""
    imported = _register(telegram, _IMPORT)
    if imported is None:
        raise InvalidInput(reason="no_registers", subject="dsmr telegram", expected="1-0:1.8.x")
    values = {"import": imported}
    exported = _register(telegram, _EXPORT)
    if exported is not None:
        values["export"] = exported
    ident = getattr(telegram, "EQUIPMENT_IDENTIFIER", None) or getattr(
        telegram, "BELGIUM_EQUIPMENT_IDENTIFIER", None
    )
    return values, "" if ident is None else str(ident.value)


class TelegramDecoder:
    """Sans-IO: feed bytes from the P1 stream, get the register values of each complete telegram
    (or the reason a telegram was dropped)."""

    def __init__(self, version: str = "5") -> None:
        spec = SPECS[version][0]
        self._parser = TelegramParser(spec)
        self._buffer = TelegramBuffer()
        self._pending = 0

    def feed(self, data: bytes) -> list[tuple[dict[str, int], str] | str]:
        self._buffer.append(data.decode("latin-1"))
        self._pending += len(data)
        out: list[tuple[dict[str, int], str] | str] = []
        for text in self._buffer.get_all():
            self._pending = 0
            try:
                telegram = self._parser.parse(text)
                out.append(telegram_registers(telegram))
            except InvalidChecksumError:
                out.append("bad_crc")
            except (ParseError, UnicodeError, ValueError, ArithmeticError):
                out.append("unparsable")
            except InvalidInput as exc:
                out.append(exc.reason)
        if self._pending > _MAX_BUFFER_CHARS:  # no telegram end in sight: start afresh
            self._buffer = TelegramBuffer()
            self._pending = 0
            out.append("unframed")
        return out


async def _open(source: DsmrSource) -> tuple[asyncio.StreamReader, Callable[[], None]]:
    tcp = source.tcp
    if tcp is not None:
        reader, writer = await asyncio.open_connection(*tcp)
        return reader, writer.close
    import serialx  # noqa: PLC0415  # only for a serial P1 cable

    _, bits, parity = SPECS[source.version]
    reader, swriter = await serialx.open_serial_connection(
        url=source.where,
        baudrate=source.baud,
        byte_size=bits,
        parity=serialx.Parity(parity),
        stopbits=1,
    )
    return reader, swriter.close


async def read_dsmr(meter: LiveMeter, source: DsmrSource) -> None:
    """Read telegrams into ``meter`` until the stream ends (:class:`ConnectionError`) or the task is
    cancelled. The caller reconnects (:func:`gridnode.meters.run_reader`)."""
    reader, close = await _open(source)
    log.info("dsmr: reading P1 telegrams from %s (DSMR %s)", source.where, source.version)
    decoder = TelegramDecoder(source.version)
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError(f"{source.where}: the telegram stream closed")
            for item in decoder.feed(data):
                if isinstance(item, str):
                    meter.drop(item)
                    continue
                values, ident = item
                meter.record(
                    {k: v for k, v in values.items() if k in meter.registers}, source=ident
                )
    finally:
        close()
