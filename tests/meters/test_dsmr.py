"""DSMR P1: real-format DSMR 5 telegrams with CRCs over a real TCP stream (as ser2net serves a P1
port) and over a pseudo-terminal (a serial device), parsed by dsmr-parser into the live meter."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gridnode.config import DSMR_VERSIONS
from gridnode.meters import run_reader
from gridnode.meters.dsmr import SPECS, DsmrSource, TelegramDecoder, read_dsmr
from gridnode.meters.live import LiveMeter, MeterStore
from gridnode.meters.registers import Rules
from market.slots import SlotClock
from tests.meters.conftest import dsmr5_telegram
from tests.meters.test_live import FakeClock

SLOT = 60


def test_the_adapter_knows_every_configurable_version() -> None:
    assert set(SPECS) == set(DSMR_VERSIONS)


def test_a_telegram_gives_the_tariff_sums_in_mwh_and_the_meter_identity() -> None:
    decoder = TelegramDecoder("5")
    telegram = dsmr5_telegram(import_wh=(1_234_567, 2_000_001), export_wh=(10, 20_005))
    # split anywhere: the stream arrives in pieces
    assert decoder.feed(telegram[:100]) == []
    [(values, ident)] = decoder.feed(telegram[100:])  # type: ignore[misc]
    assert values == {"import": 3_234_568_000, "export": 20_015_000}
    assert ident == "4530303435303033383833343439303137"


def test_a_bad_crc_or_noise_is_dropped_and_counted_not_raised() -> None:
    decoder = TelegramDecoder("5")
    good = dsmr5_telegram(import_wh=(1, 2), export_wh=(3, 4))
    bad = good.replace(b"1-0:1.8.1(000000.001", b"1-0:1.8.1(000000.009")
    assert decoder.feed(b"\x00\xffgarbage" + bad + good) == [
        "bad_crc",
        ({"import": 3_000, "export": 7_000}, "4530303435303033383833343439303137"),
    ]
    assert decoder.feed(b"x" * 70_000) == ["unframed"]


async def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _run_stream(
    meter: LiveMeter, clock: FakeClock, send: Callable[[bytes], Awaitable[None]], *, start_s: int
) -> list[int]:
    """Send one telegram per 10 s of node time for 3 slots; import grows 5 Wh per telegram."""
    imp = 7_000_000
    sent = []
    for k in range(19):
        clock.at(start_s - 5 + 10 * k)
        before = meter.counts["samples"]
        await send(dsmr5_telegram(import_wh=(imp, 1000), export_wh=(0, 0)))
        await _until(lambda b=before: meter.counts["samples"] >= b + 2)  # type: ignore[misc]
        sent.append(imp)
        imp += 5
    return sent


def _meter(tmp_path: Path, clock: FakeClock) -> LiveMeter:
    return LiveMeter(
        store=MeterStore.open(tmp_path / "meter.sqlite"),
        rules=Rules(slot_seconds=SLOT, max_age_s=30),
        now_ms=clock.now_ms,
        source_id="dsmr:test",
    )


@pytest.mark.asyncio
async def test_telegrams_over_tcp_as_ser2net_serves_them(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000)
    meter = _meter(tmp_path, clock)
    writers: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        connected.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = asyncio.create_task(
        run_reader(
            lambda: read_dsmr(meter, DsmrSource(f"tcp://127.0.0.1:{port}")),
            name="dsmr",
            min_wait_s=0.05,
        )
    )
    try:
        await asyncio.wait_for(connected.wait(), 10)

        async def send(data: bytes) -> None:
            writers[-1].write(data)
            await writers[-1].drain()

        start = 1_700_000_040  # a slot boundary (60-s slots)
        await _run_stream(meter, clock, send, start_s=start)
        clock.at(start + 3 * SLOT + 1)
        slot = start // SLOT
        # each slot holds six telegrams' increments (5 Wh each): exactly the register difference
        assert [meter.slot_net_wh(slot + k, SlotClock(SLOT, 10)) for k in range(3)] == [
            -30,
            -30,
            -30,
        ]
        assert meter.counts["dropped:bad_crc"] == 0

        # the stream drops (ser2net restarted): the reader reconnects and carries on
        writers[-1].close()
        connected.clear()
        await asyncio.wait_for(connected.wait(), 10)
        clock.at(start + 3 * SLOT + 5)
        before = meter.counts["samples"]
        await send(dsmr5_telegram(import_wh=(7_000_200, 1000), export_wh=(0, 0)))
        await _until(lambda: meter.counts["samples"] >= before + 2)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for w in writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        server.close()
        await server.wait_closed()
        meter.close()


@pytest.mark.asyncio
async def test_telegrams_from_a_serial_device(tmp_path: Path) -> None:
    """A pseudo-terminal is a real serial device to the reader (termios, serialx), like a P1 cable."""
    master, slave = os.openpty()
    clock = FakeClock(1_700_000_000)
    meter = _meter(tmp_path, clock)
    task = asyncio.create_task(read_dsmr(meter, DsmrSource(os.ttyname(slave))))
    try:

        async def send(data: bytes) -> None:
            os.write(master, data)

        start = 1_700_000_040
        clock.at(start - 30)
        while not meter.counts["samples"]:  # until the reader has the port open (it flushes input)
            os.write(master, dsmr5_telegram(import_wh=(6_999_000, 1000), export_wh=(0, 0)))
            await asyncio.sleep(0.2)
        sent = await _run_stream(meter, clock, send, start_s=start)
        clock.at(start + SLOT + 1)
        assert meter.slot_net_wh(start // SLOT, SlotClock(SLOT, 10)) == -30
        assert sent[-1] - sent[0] == 90
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
        os.close(master)
        os.close(slave)
        meter.close()


@pytest.mark.parametrize("where", ["tcp://127.0.0.1", "tcp://:80"])
def test_a_tcp_source_needs_host_and_port(where: str) -> None:
    from market.errors import UsageError

    with pytest.raises(UsageError, match="tcp://host:port"):
        _ = DsmrSource(where).tcp
