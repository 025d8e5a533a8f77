"""Write a finished run to disk: ``results.json``, Parquet + CSV tables, a self-contained HTML report.

:func:`write_outputs` reads only a :class:`~sims.results.SimResult` (whichever engine filled it), plus
optionally the run's individual trades, and writes into ``out_dir``:

* ``results.json`` — :meth:`SimResult.to_json` (``SimResult.read_json`` reads it back);
* ``slots.parquet`` / ``slots.csv`` — one row per delivery slot (:class:`~sims.results.SlotRecord`);
* ``households.parquet`` / ``households.csv`` — one row per household with its KPIs and savings;
* ``trades.parquet`` / ``trades.csv`` — one row per trade, when the engine passed them (or
  :class:`TradeTable` streamed them during the run);
* ``faults.csv`` — the fault plan as it happened;
* ``report.html`` — one file that opens offline: plotly.js is embedded inline (no CDN), every
  figure's element id is fixed, so the same result always gives the same bytes.

Energy and money stay integers (Wh, µ¤) in the tables; the report shows kWh and ¤ for people.
Times in the report are the data's local time with its offset (``utc_offset_s``: the shipped data's
UTC−7 by default; the daemon engine's caller passes the offset that maps its node clock onto the
data's calendar), so the sun peaks at noon; the tables keep unix ``start_s``.

Memory: the trade table — a year's run has millions of trades — is never held whole.
:class:`TradeTable` takes the rows a slot at a time (``extend``, what the engines call on their
``trades_out``), buffers them as columns, and writes every :data:`TRADE_ROW_GROUP` rows as one
Parquet row group (pyarrow's ``ParquetWriter``) and one CSV chunk; it never buffers more than one
row group. The files hold the same content as writing the whole table at once (same columns,
dtypes, row order and values; the same CSV bytes; tested).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.parquet as pq
from plotly.subplots import make_subplots

from forecasting.data import SHIPPED_UTC_OFFSET_S
from gridnode.localtime import format_offset
from market.kpis import self_consumption, self_sufficiency
from sims import economics
from sims.results import HouseholdKPI, SimResult

__all__ = ["TRADE_ROW_GROUP", "TradeTable", "kpi_rows", "write_outputs"]

REPORT_NAME = "report.html"


def write_outputs(
    result: SimResult,
    out_dir: Path,
    *,
    trades: Sequence[Mapping[str, Any]] | None = None,
    utc_offset_s: int = SHIPPED_UTC_OFFSET_S,
) -> Path:
    """Write every output of ``result`` into ``out_dir`` (created if needed); return the report's path.

    ``trades``: optional rows (``slot``, ``buyer``, ``seller``, ``energy_wh``,
    ``price_micro_per_kwh``, ``amount_micro``, …) for the trades table, written through
    :class:`TradeTable` (``None``: no trade table, or one already streamed into ``out_dir``).
    ``utc_offset_s``: what to add to the slots' unix start times to get the data's local
    wall-clock time (the report's axis).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result.write_json(out_dir / "results.json")
    doc = result.to_json()
    _table(pd.DataFrame(doc["slots"], columns=_SLOT_COLUMNS), out_dir, "slots")
    _table(pd.DataFrame(doc["households"], columns=_HOUSEHOLD_COLUMNS), out_dir, "households")
    if trades is not None:
        with TradeTable(out_dir) as table:
            table.extend(trades)
    pd.DataFrame(doc["faults"], columns=["at_s", "kind", "detail"]).to_csv(
        out_dir / "faults.csv", index=False
    )
    path = out_dir / REPORT_NAME
    path.write_text(render_html(result, utc_offset_s=utc_offset_s), encoding="utf-8")
    return path


_SLOT_COLUMNS = [
    "slot",
    "start_s",
    "clearing_price_micro_per_kwh",
    "volume_wh",
    "trades",
    "orders",
    "orders_submitted",
    "pv_wh",
    "load_wh",
    "net_wh",
    "grid_import_wh",
    "grid_export_wh",
    "imbalance_wh",
    "imbalance_cost_micro",
    "forecast_abs_error_wh",
    "commit_height",
    "battery_charged_wh",
    "battery_discharged_wh",
]
_HOUSEHOLD_COLUMNS = [
    "household",
    "name",
    "pv_kwp",
    "battery_kwh",
    "bought_p2p_wh",
    "sold_p2p_wh",
    "grid_import_wh",
    "grid_export_wh",
    "pv_wh",
    "load_wh",
    "bill_micro",
    "grid_only_bill_micro",
    "savings_micro",
    "imbalance_wh",
    "imbalance_cost_micro",
    "over_contracted_wh",
    "over_contract_cost_micro",
    "home",
    "battery_kw",
    "battery_charged_wh",
    "battery_discharged_wh",
    "battery_loss_wh",
    "battery_soc_start_wh",
    "battery_soc_end_wh",
]


def _table(frame: pd.DataFrame, out_dir: Path, name: str) -> None:
    if "clearing_price_micro_per_kwh" in frame:  # None → a nullable integer column, not float
        frame["clearing_price_micro_per_kwh"] = frame["clearing_price_micro_per_kwh"].astype(
            "Int64"
        )
    frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    frame.to_csv(out_dir / f"{name}.csv", index=False)


#: rows per Parquet row group (and CSV chunk) of the streamed trade table: tens of MB of buffered
#: columns at most (estimated), and few enough groups that readers stay fast
TRADE_ROW_GROUP: Final = 65_536


class TradeTable:
    """``trades.parquet`` / ``trades.csv`` in ``out_dir``, written one row group at a time (module
    rules). Use as a context manager: leaving it writes the last group (or, with no rows at all,
    the same empty table as before); leaving it on an exception removes the partial files.

    Every row must have the first row's keys, in the same order (one row per trade:
    :func:`sims.ledger_kpis.trade_rows`)."""

    def __init__(self, out_dir: Path, *, rows_per_group: int = TRADE_ROW_GROUP) -> None:
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be at least 1, not {rows_per_group}")
        self._dir = out_dir
        self._group = rows_per_group
        self._names: tuple[str, ...] = ()
        self._columns: list[list[Any]] = []
        self._buffered = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: IO[str] | None = None
        self._closed = False
        self.rows = 0  # written so far
        self.max_buffered = 0  # the most rows ever held at once (at most one group)

    def __enter__(self) -> TradeTable:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
            return
        self._close_files()
        for name in ("trades.parquet", "trades.csv"):
            (self._dir / name).unlink(missing_ok=True)

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows (a slot's trades) in order; full row groups go to disk at once."""
        if self._closed:
            raise ValueError("the trade table is closed")
        for row in rows:
            if not self._names:
                self._names = tuple(row)
                self._columns = [[] for _ in self._names]
            elif tuple(row) != self._names:
                raise ValueError(f"trade row with columns {tuple(row)}, expected {self._names}")
            for column, value in zip(self._columns, row.values(), strict=True):
                column.append(value)
            self._buffered += 1
            self.max_buffered = max(self.max_buffered, self._buffered)
            if self._buffered == self._group:
                self._flush()

    def close(self) -> None:
        """Write what is buffered and close the files (idempotent)."""
        if self._closed:
            return
        if self._buffered:
            self._flush()
        if self._parquet is None:  # no trade at all: the same empty table as a whole-table write
            self._dir.mkdir(parents=True, exist_ok=True)
            _table(pd.DataFrame([]), self._dir, "trades")
        self._close_files()

    def _flush(self) -> None:
        frame = pd.DataFrame(dict(zip(self._names, self._columns, strict=True)))
        self._columns = [[] for _ in self._names]
        self._buffered = 0
        if self._parquet is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._parquet = pq.ParquetWriter(self._dir / "trades.parquet", table.schema)
            self._csv = open(self._dir / "trades.csv", "w", encoding="utf-8", newline="")  # noqa: SIM115
            header = True
        else:
            table = pa.Table.from_pandas(frame, schema=self._parquet.schema, preserve_index=False)
            header = False
        self._parquet.write_table(table)
        frame.to_csv(self._csv, header=header, index=False)
        self.rows += len(frame)

    def _close_files(self) -> None:
        self._closed = True
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()


# ----------------------------------------------------------------------------------------- KPIs


def _money(micro: float) -> str:
    return f"{micro / 1_000_000:,.2f} ¤"


def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.1f} kWh"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _yes_no(x: bool | None) -> str:
    return "not checked" if x is None else ("yes" if x else "NO")


def kpi_rows(result: SimResult) -> list[tuple[str, str]]:
    """The KPI summary as (label, formatted value) rows: the report's table and ``compare``'s."""
    c = result.community()
    price = c["mean_clearing_price_micro_per_kwh"]
    mae = c["forecast_mae_wh_per_household_slot"]
    with_battery = sum(1 for h in result.households if h.battery_kwh > 0)
    battery_rows = (
        [
            (
                "battery throughput: charged / discharged (losses)",
                f"{_kwh(c['battery_charged_wh'])} / {_kwh(c['battery_discharged_wh'])} "
                f"({_kwh(c['battery_loss_wh'])}) in {with_battery} households",
            )
        ]
        if with_battery
        else []
    )
    return [
        ("households", str(c["households"])),
        ("slots done / planned", f"{result.slots_done} / {result.slots_planned}"),
        ("community bill", _money(c["bill_micro"])),
        ("grid-only bill", _money(c["grid_only_bill_micro"])),
        ("savings vs grid-only", f"{_money(c['savings_micro'])} ({c['savings_pct']:.1f} %)"),
        ("self-sufficiency", _pct(c["self_sufficiency"])),
        ("self-consumption", _pct(c["self_consumption"])),
        ("P2P volume", _kwh(c["p2p_volume_wh"])),
        ("grid import / export", f"{_kwh(c['grid_import_wh'])} / {_kwh(c['grid_export_wh'])}"),
        (
            "imbalance of traders: energy / cost vs market price",
            f"{_kwh(c['imbalance_wh'])} / {_money(c['imbalance_cost_micro'])}",
        ),
        (
            "P2P gains (savings + imbalance cost) / imbalance cost's share",
            f"{_money(c['p2p_gains_micro'])} / {_pct(c['imbalance_share_of_gains'])}",
        ),
        (
            "over-contracted (seller short, buyer long): energy / cost",
            f"{_kwh(c['over_contracted_wh'])} / {_money(c['over_contract_cost_micro'])}",
        ),
        (
            "household-weeks worse off than grid-only",
            f"{c['household_weeks_worse_off']} of {c['household_weeks']}"
            + (
                ""
                if c["worst_household_week_micro"] is None
                else f" (worst week {_money(c['worst_household_week_micro'])})"
            ),
        ),
        ("distinct homes (meter data)", str(c["homes"])),
        ("load / PV", f"{_kwh(c['load_wh'])} / {_kwh(c['pv_wh'])}"),
        *battery_rows,
        (
            "mean clearing price",
            "–" if price is None else f"{price / 1_000_000:.4f} ¤/kWh",
        ),
        ("orders committed in their slot", _pct(c["orders_committed_share"])),
        ("forecast MAE", "–" if mae is None else f"{mae:.0f} Wh per household-slot"),
        ("blocks committed", str(result.blocks_committed)),
        (
            "commit latency p50 / p99",
            "–"
            if result.commit_latency_ms_p50 is None
            else f"{result.commit_latency_ms_p50:.0f} / {result.commit_latency_ms_p99 or 0:.0f} ms",
        ),
        ("ledger agreement (head hash + state digest)", _yes_no(result.ledger_agreement)),
        ("conservation (Σ balances = 0, Σ bought = Σ sold)", _yes_no(result.conservation_ok)),
    ]


# ----------------------------------------------------------------------------------------- figures


def _times(starts: Sequence[int], offset_s: int) -> list[dt.datetime]:
    """Unix seconds as naive local wall-clock times (the axis says the offset)."""
    return [dt.datetime.fromtimestamp(s + offset_s, tz=dt.UTC).replace(tzinfo=None) for s in starts]


def _layout(
    fig: go.Figure, title: str, *, height: int = 380, offset_s: int | None = None
) -> go.Figure:
    if offset_s is not None:
        title = f"{title} · local time ({format_offset(offset_s)})"
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 60, "r": 30, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        template="plotly_white",
    )
    return fig


def _price_volume(result: SimResult, offset_s: int) -> go.Figure:
    s = result.slots
    t = _times([r.start_s for r in s], offset_s)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(x=t, y=[r.volume_wh / 1000 for r in s], name="P2P volume (kWh)", opacity=0.6),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=t,
            y=[
                None
                if r.clearing_price_micro_per_kwh is None
                else r.clearing_price_micro_per_kwh / 1_000_000
                for r in s
            ],
            name="clearing price (¤/kWh)",
            mode="lines+markers",
            connectgaps=False,
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="kWh per slot", secondary_y=False)
    fig.update_yaxes(title_text="¤/kWh", secondary_y=True)
    return _layout(fig, "Clearing price and P2P volume per slot", offset_s=offset_s)


def _energy_stack(result: SimResult, offset_s: int) -> go.Figure:
    s = result.slots
    t = _times([r.start_s for r in s], offset_s)
    fig = go.Figure()
    own = [
        max(0, r.load_wh - r.grid_import_wh - r.volume_wh - r.battery_discharged_wh) / 1000
        for r in s
    ]
    batteries = any(r.battery_charged_wh or r.battery_discharged_wh for r in s)
    fig.add_trace(go.Bar(x=t, y=own, name="own PV used (kWh)"))
    if batteries:
        y = [r.battery_discharged_wh / 1000 for r in s]
        fig.add_trace(go.Bar(x=t, y=y, name="from batteries (kWh)"))
    fig.add_trace(go.Bar(x=t, y=[r.volume_wh / 1000 for r in s], name="P2P (kWh)"))
    fig.add_trace(go.Bar(x=t, y=[r.grid_import_wh / 1000 for r in s], name="grid import (kWh)"))
    fig.add_trace(go.Bar(x=t, y=[-r.grid_export_wh / 1000 for r in s], name="grid export (kWh)"))
    if batteries:
        y = [-r.battery_charged_wh / 1000 for r in s]
        fig.add_trace(go.Bar(x=t, y=y, name="into batteries (kWh)"))
    fig.add_trace(
        go.Scatter(x=t, y=[r.load_wh / 1000 for r in s], name="community load", mode="lines")
    )
    fig.add_trace(go.Scatter(x=t, y=[r.pv_wh / 1000 for r in s], name="community PV", mode="lines"))
    fig.update_layout(barmode="relative")
    fig.update_yaxes(title_text="kWh per slot (export and charging below 0)")
    return _layout(fig, "Community energy: load, PV, P2P and grid", offset_s=offset_s)


def _savings(result: SimResult) -> go.Figure:
    hh = sorted(result.households, key=lambda h: h.savings_micro, reverse=True)
    fig = go.Figure(
        go.Bar(
            x=[h.name or h.household[:8] for h in hh],
            y=[h.savings_micro / 1_000_000 for h in hh],
            marker={"color": [h.pv_kwp for h in hh], "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": "PV kWp"}},
            customdata=[
                [h.bill_micro / 1e6, h.grid_only_bill_micro / 1e6, h.bought_p2p_wh / 1e3,
                 h.sold_p2p_wh / 1e3] for h in hh
            ],
            hovertemplate="%{x}<br>saved %{y:.3f} ¤<br>bill %{customdata[0]:.3f} ¤, grid-only "
            "%{customdata[1]:.3f} ¤<br>bought %{customdata[2]:.1f} kWh, sold %{customdata[3]:.1f} kWh"
            "<extra></extra>",
        )
    )  # fmt: skip
    fig.update_yaxes(title_text="savings vs grid-only (¤)")
    return _layout(fig, "Savings per household (colour: PV size)")


def _forecast(result: SimResult, offset_s: int) -> go.Figure:
    s = result.slots
    t = _times([r.start_s for r in s], offset_s)
    err = [r.forecast_abs_error_wh / 1000 for r in s]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=t, y=err, name="Σ |P50 forecast − measured| (kWh)", opacity=0.6))
    net = [r.net_wh / 1000 for r in s]
    fig.add_trace(go.Scatter(x=t, y=net, name="community net (kWh, + export)", mode="lines"))
    fig.update_yaxes(title_text="kWh per slot")
    return _layout(fig, "Forecast error over time (all households that quoted)", offset_s=offset_s)


def _faults(result: SimResult, offset_s: int) -> go.Figure:
    s = result.slots
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=_times([r.start_s for r in s], offset_s),
            y=[r.commit_height for r in s],
            name="ledger height at clearing",
            mode="lines+markers",
        )
    )
    height_at = {r.start_s: r.commit_height for r in s}
    starts = sorted(height_at)
    for f in result.faults:
        before = [x for x in starts if x <= f.at_s]
        y = height_at[before[-1]] if before else 0
        fig.add_trace(
            go.Scatter(
                x=_times([f.at_s], offset_s),
                y=[y],
                mode="markers+text",
                marker={"size": 12, "symbol": "x"},
                text=[f.kind],
                textposition="top center",
                name=f"{f.kind}: {f.detail}"[:60],
            )
        )
    fig.update_yaxes(title_text="block height")
    return _layout(fig, "Faults and commit heights", offset_s=offset_s)


# ----------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f3b57;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:1.5em} header p{margin:0;opacity:.85}
main{max-width:1200px;margin:0 auto;padding:16px 32px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:16px 0;padding:12px 16px}
table{border-collapse:collapse;width:100%} td,th{padding:5px 10px;border-bottom:1px solid #eee;text-align:left}
td.v{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:bold} .good{color:#1b7f3a;font-weight:bold}
.notes li{margin:3px 0}
.scroll{overflow-x:auto} #households td,#households th{white-space:nowrap}
"""


def _kpi_table(result: SimResult) -> str:
    rows = []
    for label, value in kpi_rows(result):
        cls = ""
        if value == "NO":
            cls = " bad"
        elif value == "yes":
            cls = " good"
        rows.append(
            f"<tr><th>{html.escape(label)}</th><td class='v{cls}'>{html.escape(value)}</td></tr>"
        )
    return "<table id='kpis'>" + "".join(rows) + "</table>"


def _household_table(result: SimResult) -> str:
    """One row per household: its sizes, energy, money and shares (:mod:`market.kpis`: energy
    from and to the grid; neighbours' PV counts as local supply)."""

    def row(h: HouseholdKPI) -> str:
        cells = [
            h.name or h.household[:8],
            f"{h.pv_kwp:g}",
            f"{h.battery_kwh:g}",
            _kwh(h.load_wh),
            _kwh(h.pv_wh),
            f"{_kwh(h.bought_p2p_wh)} / {_kwh(h.sold_p2p_wh)}",
            f"{_kwh(h.grid_import_wh)} / {_kwh(h.grid_export_wh)}",
            _money(h.bill_micro),
            _money(h.grid_only_bill_micro),
            _money(h.savings_micro),
            _pct(self_sufficiency(load_wh=h.load_wh, import_wh=h.grid_import_wh)),
            _pct(self_consumption(pv_wh=h.pv_wh, export_wh=h.grid_export_wh)),
        ]
        cls = " class='bad'" if h.savings_micro < 0 else ""
        return (
            f"<tr{cls}><td>{html.escape(cells[0])}</td>"
            + "".join(f"<td class='v'>{html.escape(c)}</td>" for c in cells[1:])
            + "</tr>"
        )

    head = (
        "household", "PV kWp", "battery kWh", "load", "PV", "P2P bought / sold",
        "grid import / export", "bill", "grid-only bill", "saved", "self-sufficiency",
        "self-consumption",
    )  # fmt: skip
    hh = sorted(result.households, key=lambda h: (h.name, h.household))
    return (
        "<div class='scroll'><table id='households'><tr>"
        + "".join(f"<th>{html.escape(x)}</th>" for x in head)
        + "</tr>"
        + "".join(row(h) for h in hh)
        + "</table></div>"
    )


def _num(x: float | None, fmt: str, unit: str = "") -> str:
    return "–" if x is None else f"{x:{fmt}}{unit}"


def _training_section(result: SimResult) -> str:
    """Training (``docs/sims.md``): the KPIs per history group (established, cold-start) and,
    under federated training, the rounds."""
    rows = []
    for label, g in result.groups().items():
        cells = [
            str(g["households"]),
            _num(g["forecast_mae_wh"], ".0f"),
            _money(g["savings_micro"]),
            _num(g["savings_pct"], ".1f", " %"),
            _money(g["imbalance_cost_micro"]),
        ]
        rows.append(
            f"<tr><td>{html.escape(label)}</td>"
            + "".join(f"<td class='v'>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    out = (
        f"<section id='training'><h2>Training: {html.escape(result.training)}</h2>"
        "<table id='groups'><tr><th>group</th><th>households</th>"
        "<th>forecast MAE (Wh per household-slot, P50 vs net)</th><th>savings vs grid-only</th>"
        "<th>savings %</th><th>imbalance cost</th></tr>" + "".join(rows) + "</table>"
    )
    if result.rounds:
        t = result.training_summary()
        out += (
            f"<p id='rounds-summary'>{t['rounds_completed']} of {t['rounds']} rounds completed; "
            f"{_num(t['bytes_per_member_per_round'], ',.0f')} bytes sent per member per round "
            f"({_num(t['bytes_per_round'], ',.0f')} per round in all); round CPU "
            f"{_num(t['round_cpu_s_mean'], '.3f', ' s')} mean (the whole round, in process); "
            f"last model {html.escape((t['last_model_hash'] or '–')[:16])}</p>"
        )
        head = ("round", "contributors / members", "bytes / member", "CPU s",
                "held-back skill", "model")  # fmt: skip
        body = "".join(
            f"<tr><td>{r.round}</td><td class='v'>{r.contributors} / {r.members}</td>"
            f"<td class='v'>{r.bytes_per_member:,}</td><td class='v'>{r.cpu_s:.3f}</td>"
            f"<td class='v'>{_pct(r.validation_skill)}</td>"
            f"<td>{html.escape(r.model_hash[:16] or 'aborted')}</td></tr>"
            for r in result.rounds
        )
        out += (
            "<div class='scroll'><table id='rounds'><tr>"
            + "".join(f"<th>{html.escape(x)}</th>" for x in head)
            + "</tr>"
            + body
            + "</table></div>"
        )
    return out + "</section>"


def render_html(result: SimResult, *, utc_offset_s: int = SHIPPED_UTC_OFFSET_S) -> str:
    """The report as one HTML string (plotly.js inline; deterministic for a given result)."""
    off = utc_offset_s
    figures = [
        ("price-volume", _price_volume(result, off)),
        ("energy-stack", _energy_stack(result, off)),
        ("savings", _savings(result)),
        ("forecast", _forecast(result, off)),
        ("faults", _faults(result, off)),
    ]
    parts = []
    for i, (name, fig) in enumerate(figures):
        parts.append(
            "<section>"
            + fig.to_html(
                full_html=False,
                include_plotlyjs=i == 0,  # plotly.js inline once, before the first figure
                div_id=f"fig-{name}",
                config={"displaylogo": False},
            )
            + "</section>"
        )
    interrupted = " — INTERRUPTED, partial results" if result.interrupted else ""
    subtitle = (
        f"engine {result.engine} · rule {result.rule} · policy {result.policy} · seed {result.seed}"
        f" · {result.slots_done} slots of {result.slot_seconds // 60} min · "
        f"{len(result.households)} households · {result.wall_seconds:.1f} s wall{interrupted}"
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    policies = (
        "<section><h2>Policies on this scenario</h2><pre id='policies'>"
        + html.escape(economics.table(result.policies))
        + "</pre></section>"
        if result.policies
        else ""
    )
    faults = "".join(
        f"<tr><td>{_times([f.at_s], off)[0]:%Y-%m-%d %H:%M}</td>"
        f"<td>{html.escape(f.kind)}</td><td>{html.escape(f.detail)}</td></tr>"
        for f in result.faults
    )
    head = (
        f"<p>head {html.escape(result.head_hash[:16] or '–')} · state digest "
        f"{html.escape(result.state_digest[:16] or '–')}</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>gridnode simulation — {html.escape(result.scenario)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(result.scenario)}</h1><p>{html.escape(subtitle)}</p>{head}"
        "</header><main>"
        f"<section><h2>Key figures</h2>{_kpi_table(result)}</section>"
        + policies
        + _training_section(result)
        + parts[0]
        + parts[1]
        + f"<section><h2>Households</h2>{_household_table(result)}"
        "<p>Self-sufficiency: the share of a household's consumption not bought from the grid "
        "(its own PV, its battery, its neighbours' PV); self-consumption: the share of its PV not "
        "sold to the grid.</p></section>"
        + "".join(parts[2:])
        + (
            f"<section><h2>Fault plan</h2><table><tr><th>time ({format_offset(off)})</th><th>kind</th>"
            f"<th>detail</th></tr>{faults}</table></section>"
            if faults
            else ""
        )
        + (f"<section><h2>Notes</h2><ul class='notes'>{notes}</ul></section>" if notes else "")
        + "</main></body></html>\n"
    )
