"""A household's meter file as its daemon reads it (``gridnode.meter.FileMeter``): checked cheaply
at start, read whole once, then only the lines an adapter appends; a file that turns bad costs a
log line and the readings it cannot give, never the node.

Real files on disk throughout. The properties hold the two promises the start-up and the cache
make: the start-up check refuses nothing the whole read accepts, and names a bad newest row as the
whole read does; and a file read as it grows is the file read whole at the end."""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.data import read_meter_file
from gridnode.meter import CHECKED_ROWS, FileMeter
from market.errors import InvalidInput
from market.slots import SlotClock

T0 = 1_700_000_100 - 1_700_000_100 % 3600
DEFECTS = ("not_a_number", "bad_time", "negative_value", "unsorted_time", "unparseable",
           "gap_too_long", "missing_rows")  # fmt: skip
ROW_DEFECTS = DEFECTS[:5]  # what a single row breaks: the start-up check sees it in its rows


@st.composite
def meter_files(draw: st.DrawFn) -> tuple[str, str | None, int | None]:
    """(the text of a meter CSV, its defect, the 0-based data row it is in)."""
    n = draw(st.integers(2, 2 * CHECKED_ROWS + 60))
    step = draw(st.sampled_from([300, 900, 3600]))
    iso = draw(st.booleans())
    zone = draw(st.sampled_from(["+01:00", "Z", ""]))
    split = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    times = [T0 + step * i for i in range(n)]
    if draw(st.booleans()) and n > 10:  # a few short gaps (missing rows, filled)
        for i in sorted(rng.choice(np.arange(2, n - 2), size=min(3, n // 5), replace=False))[::-1]:
            del times[i]
    pv = np.round(rng.uniform(0, 900, len(times)), 1)
    load = np.round(rng.uniform(50, 900, len(times)), 1)

    def stamp(t: int) -> str:
        if not iso:
            return str(t)
        shift = 3600 if zone == "+01:00" else 0
        text = np.datetime_as_string(np.datetime64(t + shift, "s"), unit="s")
        return text + zone

    header = ("timestamp" if iso else "time_s") + (",pv_w,load_w" if split else ",net_w")
    rows = [
        [stamp(t), f"{p}", f"{lo}"] if split else [stamp(t), f"{p - lo:.1f}"]
        for t, p, lo in zip(times, pv, load, strict=True)
    ]
    defect = draw(st.none() | st.sampled_from(DEFECTS))
    at = None
    if defect is not None and len(rows) >= 3:
        at = draw(st.integers(1, len(rows) - 2))
        if defect == "not_a_number":
            rows[at][1] = "12,5kW"
        elif defect == "bad_time":
            rows[at][0] = "soon"
        elif defect == "negative_value" and split:
            rows[at][1] = "-3.5"
        elif defect == "unsorted_time":
            rows[at][0] = rows[at - 1][0]
        elif defect == "unparseable":
            rows[at].append("extra")
        elif defect == "gap_too_long" and not iso:  # 9 intervals missing before row ``at``
            for r in rows[at:]:
                r[0] = str(int(r[0]) + 10 * step)
        elif defect == "missing_rows":  # 2 missing: filled, not a defect
            del rows[at : at + 2]
            defect = None
        else:
            defect = None
    else:
        defect = None
    text = header + "\n" + "".join(",".join(r) + "\n" for r in rows)
    return text, defect, at


def _outcome(call: object) -> tuple[str, str, str] | None:
    try:
        call()  # type: ignore[operator]
    except InvalidInput as exc:
        return (exc.reason.value, exc.subject, exc.field)
    return None


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=meter_files())
def test_the_start_up_check_refuses_only_what_the_whole_read_refuses(
    tmp_path: Path, drawn: tuple[str, str | None, int | None]
) -> None:
    text, defect, at = drawn
    path = tmp_path / "meter.csv"
    path.write_text(text)
    whole = _outcome(lambda: read_meter_file(path))
    check = _outcome(lambda: FileMeter.checked(path))
    if whole is None:
        assert check is None, (check, defect, at)
    if check is not None:
        assert whole is not None
    rows = text.count("\n") - 1
    if defect in ROW_DEFECTS and at is not None and at >= rows - CHECKED_ROWS:
        assert check is not None and whole is not None
        if defect == "unparseable":
            assert check[0] == whole[0] == "unparseable"
        else:  # the same row and column, named the same way
            assert check == whole, (defect, at)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=meter_files(), cuts=st.lists(st.floats(0.0, 1.0), max_size=6))
def test_a_file_read_as_it_grows_is_the_file_read_whole(
    tmp_path: Path, drawn: tuple[str, str | None, int | None], cuts: list[float]
) -> None:
    text, _, _ = drawn
    data = text.encode()
    path = tmp_path / "meter.csv"
    header = data.index(b"\n") + 1
    ends = [*sorted({header + int(c * (len(data) - header)) for c in cuts}), len(data)]
    path.write_bytes(b"")
    meter = FileMeter(path)
    written = 0
    for end in ends:  # the adapter appends, sometimes stopping half-way through a line
        with path.open("ab") as f:
            f.write(data[written:end])
        written = end
        _outcome(meter.meter_file)
    whole = _outcome(lambda: read_meter_file(path))
    if whole is not None:
        return  # a bad file: the meter keeps what it read before (tested below)
    got, want = meter.meter_file(), read_meter_file(path)
    assert got.filled_steps == want.filled_steps and got.columns == want.columns
    h, w = got.history, want.history
    assert (h.start_s, h.step_s, h.steps, h.utc_offset_s) == (
        w.start_s,
        w.step_s,
        w.steps,
        w.utc_offset_s,
    )
    np.testing.assert_array_equal(h.net_w, w.net_w)


def _write(path: Path, n: int, *, start: int = 0, mode: str = "w") -> None:
    with path.open(mode) as f:
        if mode == "w":
            f.write("time_s,pv_w,load_w\n")
        f.writelines(f"{T0 + 900 * i},{100 + 4 * (i % 7)},{200}\n" for i in range(start, start + n))


CLOCK = SlotClock(slot_seconds=900)


def test_appended_rows_are_read_and_a_half_written_line_once_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "meter.csv"
    _write(path, 200)
    meter = FileMeter.checked(path)
    last = T0 // 900 + 199
    assert meter.slot_net_wh(last, CLOCK) == (100 + 4 * (199 % 7) - 200) // 4
    assert meter.slot_net_wh(last + 1, CLOCK) is None
    with path.open("a") as f:
        f.write(f"{T0 + 900 * 200},5")  # the adapter is writing it
    assert meter.slot_net_wh(last + 1, CLOCK) is None
    assert meter.slot_pv_load_wh(last + 1, CLOCK) is None
    with path.open("a") as f:
        f.write("00,1000\n")
    assert meter.slot_pv_load_wh(last + 1, CLOCK) == (500 // 4, 1000 // 4)
    assert meter.history_before(2**62, days=1).end_s == T0 + 900 * 201


def test_a_file_that_turns_bad_is_one_log_line_and_its_later_slots_have_no_reading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "meter.csv"
    _write(path, 300)
    meter = FileMeter.checked(path)
    first = T0 // 900
    assert meter.slot_net_wh(first + 299, CLOCK) is not None
    with path.open("a") as f:
        f.write(f"{T0 + 900 * 300},oops,200\n")  # the adapter wrote junk
    _write(path, 2, start=301, mode="a")
    with caplog.at_level(logging.WARNING, logger="gridnode"):
        for _ in range(3):  # every slot asks; the file did not change: logged once
            assert meter.slot_net_wh(first + 301, CLOCK) is None
            assert meter.slot_net_wh(first + 10, CLOCK) is not None  # the rows read before
            assert meter.history_before(2**62, days=1).end_s == T0 + 900 * 300
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"{path} row 302 field 'pv_w': not_a_number" in lines[0]
    assert "the rows read before are kept" in lines[0]
    # fixed (the row rewritten): read again, every slot has its reading
    path.write_text(path.read_text().replace(",oops,", ",50,"))
    assert meter.slot_pv_load_wh(first + 300, CLOCK) == (50 // 4, 200 // 4)
    assert meter.slot_net_wh(first + 302, CLOCK) is not None


def test_a_bad_row_above_the_checked_rows_starts_and_is_logged_at_the_first_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "meter.csv"
    _write(path, CHECKED_ROWS + 50)
    path.write_text(path.read_text().replace(f"{T0 + 900 * 10},", f"{T0 + 900 * 10 + 1},"))
    meter = FileMeter.checked(path)  # its header and newest rows are good
    with caplog.at_level(logging.WARNING, logger="gridnode"):
        with pytest.raises(InvalidInput) as info:
            meter.history_before(2**62, days=1)
        assert meter.slot_net_wh(T0 // 900 + 20, CLOCK) is None
    assert info.value.reason == "irregular_time" and info.value.subject == f"{path} row 12"
    assert [r.getMessage() for r in caplog.records] == [
        f"meter file not read: {info.value} (no history and no readings until it is fixed)"
    ]


def test_a_vanished_file_keeps_what_was_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "meter.csv"
    _write(path, 10)
    meter = FileMeter.checked(path)
    assert meter.slot_net_wh(T0 // 900 + 3, CLOCK) is not None
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="gridnode"):
        assert meter.slot_net_wh(T0 // 900 + 3, CLOCK) is not None
        assert meter.slot_net_wh(T0 // 900 + 3, CLOCK) is not None
    assert len(caplog.records) == 1 and "unreadable" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("m.csv", "time_s,power\n0,1\n900,2\n", "missing_column"),
        ("m.csv", "time_s,net_w\n0,1\n", "too_few_rows"),
        ("m.csv", "time_s,net_w\n0,1\n900,2\n1800,x\n", "not_a_number"),
        ("m.csv", b"time_s,net_w\n0,1\n900,\xff\n", "unparseable"),
        ("m.csv.gz", b"not gzip", "unparseable"),
        ("m.parquet", b"time_s,net_w\n", "unparseable"),
        ("m.xlsx", b"", "unknown_format"),
    ],
)
def test_the_start_up_check_refuses_a_file_in_one_line(
    tmp_path: Path, name: str, content: str | bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(InvalidInput) as info:
        FileMeter.checked(path)
    assert info.value.reason == reason and str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["meter.csv.gz", "meter.parquet"])
def test_gzip_and_parquet_files_are_read_whole_when_they_change(tmp_path: Path, name: str) -> None:
    import pandas as pd  # the test writes Parquet with pandas, as exports do

    path = tmp_path / name

    def write(n: int) -> None:
        frame = pd.DataFrame({"time_s": T0 + 900 * np.arange(n), "net_w": np.arange(n) * 4.0})
        if name.endswith(".gz"):
            with gzip.open(path, "wt") as f:
                frame.to_csv(f, index=False)
        else:
            frame.to_parquet(path, index=False)

    write(20)
    meter = FileMeter.checked(path)
    assert meter.slot_net_wh(T0 // 900 + 19, CLOCK) == 19
    assert meter.slot_net_wh(T0 // 900 + 20, CLOCK) is None
    write(30)
    assert meter.slot_net_wh(T0 // 900 + 29, CLOCK) == 29
    assert not math.isnan(meter.history_before(2**62, days=1).net_w.sum())


def test_a_parquet_file_is_read_in_a_child_process_with_the_same_rows_and_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's file meter reads Parquet in a child process (so the daemon never imports
    pandas): the rows are those of the in-process read, and a bad file's refusal is the same one
    line naming file, row and column."""
    import pandas as pd  # the test writes Parquet with pandas, as exports do

    from forecasting.data.meter_files import meter_file_of, read_meter_rows
    from gridnode.parquet_child import read_cells

    good = tmp_path / "good.parquet"
    stamps = [f"2024-03-{1 + i // 96:02d}T{(i % 96) // 4:02d}:{15 * (i % 4):02d}:00+01:00"
              for i in range(300)]  # fmt: skip
    pd.DataFrame({"Timestamp": stamps, "pv_kw": np.linspace(0, 3, 300),
                  "load_kwh": np.linspace(0.1, 0.4, 300), "other": "x"}).to_parquet(good)  # fmt: skip
    here, there = read_meter_rows(good), read_meter_rows(good, parquet=read_cells)
    assert (there.layout, there.first_row, there.offsets) == (here.layout, 1, here.offsets)
    assert np.array_equal(there.time_s, here.time_s)
    assert there.values.keys() == here.values.keys()
    assert all(np.array_equal(there.values[k], here.values[k]) for k in here.values)
    assert there.time_s[1] - there.time_s[0] == 900
    bad = tmp_path / "bad.parquet"
    pd.DataFrame(
        {"time_s": T0 + 900 * np.arange(10), "net_w": ["1"] * 5 + ["x"] + ["2"] * 4}
    ).to_parquet(bad)
    refusals = []
    for isolate in (False, True):
        with pytest.raises(InvalidInput) as info:
            read_meter_file(bad) if not isolate else FileMeter(bad).meter_file()
        refusals.append(str(info.value))
    assert refusals[0] == refusals[1] and "row 6" in refusals[0], refusals
    monkeypatch.chdir(tmp_path)  # a path relative to the caller's directory, not the child's
    relative = []
    for reader in (None, read_cells):
        with pytest.raises(InvalidInput) as info:
            meter_file_of(read_meter_rows(Path("bad.parquet"), parquet=reader))
        relative.append(str(info.value))
    assert relative[0] == relative[1] and relative[0].startswith("bad.parquet"), relative
    nocols = tmp_path / "nocols.parquet"
    pd.DataFrame({"when": [1, 2], "power": [3, 4]}).to_parquet(nocols)
    with pytest.raises(InvalidInput) as info:
        read_meter_rows(nocols, parquet=read_cells)
    assert info.value.reason == "missing_column" and str(nocols) in str(info.value)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really PAR1")
    with pytest.raises(InvalidInput) as info:
        read_meter_rows(junk, parquet=read_cells)
    assert info.value.reason == "unparseable" and "\n" not in str(info.value)


def test_a_daemon_reading_a_parquet_meter_file_imports_no_pandas(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pandas as pd

    path = tmp_path / "meter.parquet"
    pd.DataFrame({"time_s": T0 + 900 * np.arange(200), "net_w": np.arange(200) * 2.0}).to_parquet(
        path
    )
    probe = (
        "import sys; from pathlib import Path; from gridnode.meter import FileMeter\n"
        f"m = FileMeter.checked(Path({str(path)!r})); f = m.meter_file()\n"
        "print(len(f.history.net_w[0]), sorted(k for k in ('pandas', 'pyarrow') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["200", "[]"], out


# ------------------------------------------------------ a real node whose meter file turns bad

SPEEDUP = 60.0
WALL0_MS = 1_750_000_100_000


@pytest.mark.net
def test_a_node_whose_meter_file_turns_bad_keeps_running_and_skips_those_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real :class:`~gridnode.daemon.DaemonNode` (libp2p host, SQLite store, household driver)
    on trio's virtual clock, its meter a file: the slots the file covers are read and committed;
    once the adapter writes a junk row, one warning line, no reading for the slots after it, no
    failed step; the node goes on committing blocks."""
    import random

    import trio
    import trio.testing

    from gridnode.chain import BlockFacts
    from gridnode.config import Config
    from gridnode.core.crypto import KeyPair
    from gridnode.core.ledger import Genesis, decode_block
    from gridnode.store import NodeStore
    from tests.daemon.single_node import open_single_node

    key = KeyPair.from_rng(random.Random("file-meter-node"))
    genesis = Genesis(
        community_id="file-meter-test", genesis_time_ms=WALL0_MS - 1_000,
        members=(key.public_hex,), validators=(key.public_hex,),
    )  # fmt: skip
    slots = genesis.clock
    now_s = (WALL0_MS - 1_000) // 1000 + 60  # node time ~ a minute after genesis
    start_slot = slots.slot_at(now_s)
    path = tmp_path / "meter.csv"

    def rows(first: int, last: int) -> str:  # 15-minute rows, 400 W net: 100 Wh per slot
        return "".join(f"{slots.start(first) + 900 * i},400\n" for i in range(last - first))

    path.write_text("time_s,net_w\n" + rows(start_slot - 96, start_slot + 2))  # to slot +1's end
    config = Config(
        dir=tmp_path, role="validator", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
        bidding_enabled=False, meter_source="file", meter_history=path, clock_speedup=SPEEDUP,
    )  # fmt: skip
    store = NodeStore.open(tmp_path / "node.sqlite")

    async def main() -> None:
        node_at = open_single_node(config, genesis, key, store, speedup=SPEEDUP, wall_ms=WALL0_MS)
        async with node_at as (node, clock):
            assert slots.slot_at(clock.now_ms() // 1000) == start_slot
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.run)
                await trio.sleep(clock.seconds_until(slots.start(start_slot + 2) * 1000 + 60_000))
                with path.open("a") as f:  # the adapter writes junk, then good rows again
                    f.write(f"{slots.start(start_slot + 2)},junk\n")
                    f.write(rows(start_slot + 3, start_slot + 6))
                await trio.sleep(clock.seconds_until(slots.start(start_slot + 6) * 1000 + 120_000))
                nursery.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="gridnode"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    readings: dict[int, int] = {}
    height = 0
    for sb in store.blocks_from(1, 100_000):
        facts = BlockFacts(decode_block(sb.block), sb.block_hash, (), ())
        readings |= {r.slot: r.net_wh for r in facts.readings}
        height = sb.height
    store.close()
    assert readings == {start_slot: 100, start_slot + 1: 100}  # none after the junk row
    assert height >= 6  # the node went on committing
    messages = [r.getMessage() for r in caplog.records]
    bad = [m for m in messages if m.startswith("meter file not read")]
    assert len(bad) == 1 and f"{path} row " in bad[0] and "field 'net_w': not_a_number" in bad[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], messages
