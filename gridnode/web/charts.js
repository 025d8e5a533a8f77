// gridnode status page: the charts, drawn with the plotly.js the daemon serves (no CDN).
// Each function takes the API's documents and draws into one element with Plotly.react.
"use strict";

const COLORS = {
  pv: "#f2b705", load: "#4f5b66", own: "#f7cf4a", bought: "#2e9e6a", sold: "#7cc8a3",
  gridIn: "#8a99a6", gridOut: "#c3ccd4", charge: "#b69ce6", discharge: "#8e6bd8",
  supply: "#2e9e6a", demand: "#0b5cad", mine: "#e4572e", price: "#e4572e", volume: "#9fb8cf",
  bill: "#0b5cad", gridOnly: "#b8c2cc", bad: "#cf222e",
};
const PLOT_CONFIG = { responsive: true, displayModeBar: false };

function narrow() { return window.innerWidth < 600; }

function baseLayout(extra) {
  const phone = narrow();
  return Object.assign({
    margin: { l: phone ? 44 : 56, r: phone ? 8 : 16, t: 8, b: 30 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: phone ? 11 : 12 },
    // below the plot; plotly makes room for it (automargin), at most half the chart's height
    legend: { orientation: "h", x: 0, y: phone ? -0.1 : -0.12, yanchor: "top", font: { size: phone ? 10 : 11 }, maxheight: 0.5 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    hovermode: "x unified",
    xaxis: { type: "date", tickformat: "%H:%M", gridcolor: "#eef1f4" },
    yaxis: { gridcolor: "#eef1f4", zerolinecolor: "#9aa5ae" },
  }, extra || {});
}

function draw(el, traces, layout) {
  if (!window.Plotly || !el) return false;
  window.Plotly.react(el, traces, layout, PLOT_CONFIG);
  return true;
}

function emptyChart(el, text) {
  return draw(el, [], baseLayout({
    xaxis: { visible: false }, yaxis: { visible: false },
    annotations: [{ text: text, showarrow: false, x: 0.5, y: 0.5, xref: "paper", yref: "paper", font: { color: "#5f6b76", size: 13 } }],
  }));
}

// Energy per slot: what covered the consumption above zero (own PV, battery, neighbours, grid),
// where the rest of the PV went below zero (battery, neighbours, grid); PV and load as lines.
function energyChart(el, rows) {
  if (!rows.length) return emptyChart(el, "no delivered slot yet on this day");
  const x = rows.map((r) => r.local);
  const withPv = rows.some((r) => r.pv_wh !== null); // the meter measures PV and load apart
  const panels = rows.some((r) => r.pv_wh); // ... and there is PV to draw
  const num = (v) => (v === null || v === undefined ? 0 : v);
  const gridIn = rows.map((r) => r.grid_import_wh !== null ? r.grid_import_wh
    : r.reading_wh === null ? 0 : Math.max(0, -r.reading_wh - r.bought_p2p_wh));
  const gridOut = rows.map((r) => r.grid_export_wh !== null ? r.grid_export_wh
    : r.reading_wh === null ? 0 : Math.max(0, r.reading_wh - r.sold_p2p_wh));
  const traces = [];
  const short = narrow();
  const n = (long, brief) => (short ? brief : long);
  const bar = (name, y, color, hover) => traces.push({
    type: "bar", name: name, x: x, y: y, marker: { color: color }, hovertemplate: (hover || "%{y:.0f} Wh") + "<extra>" + name + "</extra>",
    showlegend: y.some((v) => v), // a series that is zero all day stays out of the legend
  });
  if (withPv) {
    const own = rows.map((r, i) => Math.max(0, num(r.load_wh) - r.battery_discharged_wh - r.bought_p2p_wh - gridIn[i]));
    bar(n("own PV used", "own PV"), own, COLORS.own);
  }
  if (rows.some((r) => r.battery_discharged_wh || r.battery_charged_wh)) {
    bar(n("from battery", "battery out"), rows.map((r) => r.battery_discharged_wh), COLORS.discharge);
    bar(n("into battery", "battery in"), rows.map((r) => -r.battery_charged_wh), COLORS.charge, "%{customdata} Wh");
    traces[traces.length - 1].customdata = rows.map((r) => r.battery_charged_wh);
  }
  bar(n("bought from neighbours", "neighbours"), rows.map((r) => r.bought_p2p_wh), COLORS.bought);
  bar(n("from the grid", "grid"), gridIn, COLORS.gridIn);
  bar(n("sold to neighbours", "to neighbours"), rows.map((r) => -r.sold_p2p_wh), COLORS.sold, "%{customdata} Wh");
  traces[traces.length - 1].customdata = rows.map((r) => r.sold_p2p_wh);
  bar(n("to the grid", "to grid"), gridOut.map((v) => -v), COLORS.gridOut, "%{customdata} Wh");
  traces[traces.length - 1].customdata = gridOut;
  if (withPv) {
    // markers too: a slot between two without data is a lone point, which a line does not draw
    if (panels) traces.push({ type: "scatter", mode: "lines+markers", name: "PV", x: x, y: rows.map((r) => r.pv_wh), line: { color: COLORS.pv, width: 2.5, shape: "hvh" }, marker: { size: 5 }, hovertemplate: "%{y:.0f} Wh<extra>PV</extra>" });
    traces.push({ type: "scatter", mode: "lines+markers", name: n("consumption", "use"), x: x, y: rows.map((r) => r.load_wh), line: { color: COLORS.load, width: 2, shape: "hvh" }, marker: { size: 4 }, hovertemplate: "%{y:.0f} Wh<extra>consumption</extra>" });
  } else {
    traces.push({ type: "scatter", mode: "lines", name: "meter net (+ export)", x: x, y: rows.map((r) => r.reading_wh), line: { color: COLORS.load, width: 2, shape: "hvh" } });
  }
  const missed = rows.filter((r) => r.missed);
  if (missed.length) {
    traces.push({ type: "scatter", mode: "markers", name: n("reading missed (counted as 0 Wh)", "missed"), x: missed.map((r) => r.local), y: missed.map(() => 0), marker: { color: COLORS.bad, symbol: "x", size: 13, line: { width: 2 } }, hovertemplate: "reading missed: the ledger counted 0 Wh<extra></extra>" });
  }
  const silent = rows.filter((r) => r.no_reading && !r.missed);
  if (silent.length) {
    traces.push({ type: "scatter", mode: "markers", name: n("no meter reading", "no reading"), x: silent.map((r) => r.local), y: silent.map(() => 0), marker: { color: "#9aa5ae", symbol: "x-thin", size: 12, line: { width: 2, color: "#9aa5ae" } }, hovertemplate: "the meter gave no reading<extra></extra>" });
  }
  return draw(el, traces, baseLayout({ barmode: "relative", bargap: 0.12, yaxis: { title: { text: "Wh per slot" }, gridcolor: "#eef1f4", zerolinecolor: "#9aa5ae" } }));
}

// Forecast (P10–P90 band and P50) of the natural net against what the meter measured.
function forecastChart(el, rows, upcoming) {
  const points = rows.filter((r) => r.forecast || r.natural_wh !== null).map((r) => ({
    x: r.local, p10: r.forecast ? r.forecast[0] : null, p50: r.forecast ? r.forecast[1] : null, p90: r.forecast ? r.forecast[2] : null, actual: r.natural_wh,
  }));
  for (const f of upcoming) {
    if (!points.some((p) => p.x === f.local)) points.push({ x: f.local, p10: f.p10_wh, p50: f.p50_wh, p90: f.p90_wh, actual: null });
  }
  points.sort((a, b) => (a.x < b.x ? -1 : 1));
  if (!points.length) return emptyChart(el, "no forecast yet");
  const x = points.map((p) => p.x);
  return draw(el, [
    { type: "scatter", mode: "lines", name: "P10", x: x, y: points.map((p) => p.p10), line: { width: 0, color: COLORS.demand }, showlegend: false, hovertemplate: "P10 %{y:.0f} Wh<extra></extra>", connectgaps: false },
    { type: "scatter", mode: "lines", name: "P10–P90", x: x, y: points.map((p) => p.p90), fill: "tonexty", fillcolor: "rgba(11,92,173,0.16)", line: { width: 0, color: COLORS.demand }, hovertemplate: "P90 %{y:.0f} Wh<extra></extra>", connectgaps: false },
    { type: "scatter", mode: "lines", name: "forecast P50", x: x, y: points.map((p) => p.p50), line: { color: COLORS.demand, dash: "dash", width: 2 }, hovertemplate: "P50 %{y:.0f} Wh<extra></extra>", connectgaps: false },
    { type: "scatter", mode: "markers", name: "measured", x: x, y: points.map((p) => p.actual), marker: { color: COLORS.mine, size: 7 }, hovertemplate: "measured %{y:.0f} Wh<extra></extra>" },
  ], baseLayout({ yaxis: { title: { text: "Wh surplus (+) per slot" }, gridcolor: "#eef1f4", zerolinecolor: "#9aa5ae", rangemode: "tozero" } }));
}

// Bill against grid-only per local day (¤; a negative bill is money earned).
function billsChart(el, days) {
  if (!days.length) return emptyChart(el, "no settled slot yet");
  const x = days.map((d) => d.label === "today" || d.label === "yesterday" ? d.label : d.day.slice(5));
  const cur = (v) => v / 1e6;
  return draw(el, [
    { type: "bar", name: "grid only", x: x, y: days.map((d) => cur(d.grid_only_bill_micro)), marker: { color: COLORS.gridOnly }, hovertemplate: "%{y:.4f} ¤<extra>grid only</extra>" },
    { type: "bar", name: "your bill", x: x, y: days.map((d) => cur(d.bill_micro)), marker: { color: COLORS.bill }, hovertemplate: "%{y:.4f} ¤<extra>your bill</extra>" },
  ], baseLayout({ barmode: "group", xaxis: { type: "category" }, yaxis: { title: { text: "¤" }, gridcolor: "#eef1f4", zerolinecolor: "#9aa5ae" } }));
}

function steps(levels) { // [(price, Wh)] in curve order -> cumulative step line
  const xs = [0], ys = [];
  let total = 0;
  for (const [p, wh] of levels) { ys.push(p / 1e6); total += wh; xs.push(total); }
  if (ys.length) ys.push(ys[ys.length - 1]);
  return { x: xs, y: ys };
}

// A slot's supply and demand curves, this household's steps, and the clearing point.
function whyChart(el, doc) {
  if (!doc || (!doc.supply.length && !doc.demand.length)) return emptyChart(el, doc && doc.orders ? "the book's curves are no longer kept for this slot" : "no orders in this slot");
  const s = steps(doc.supply), d = steps(doc.demand);
  const traces = [
    { type: "scatter", mode: "lines", name: "offers (supply)", x: s.x, y: s.y, line: { shape: "hv", color: COLORS.supply, width: 2.5 }, hovertemplate: "%{y:.4f} ¤/kWh up to %{x} Wh<extra>supply</extra>" },
    { type: "scatter", mode: "lines", name: "bids (demand)", x: d.x, y: d.y, line: { shape: "hv", color: COLORS.demand, width: 2.5 }, hovertemplate: "%{y:.4f} ¤/kWh up to %{x} Wh<extra>demand</extra>" },
  ];
  if (doc.my_order) {
    const levels = doc.my_order.side === "sell" ? doc.supply : doc.demand;
    const mx = [], my = [];
    for (const st of doc.my_order.steps) {
      let before = 0;
      for (const [p, wh] of levels) {
        if (p === st.price_micro_per_kwh) break;
        before += wh;
      }
      mx.push(before, before + st.energy_wh, null);
      my.push(st.price_micro_per_kwh / 1e6, st.price_micro_per_kwh / 1e6, null);
    }
    traces.push({ type: "scatter", mode: "lines", name: "your " + (doc.my_order.side === "sell" ? "offer" : "bid"), x: mx, y: my, line: { color: COLORS.mine, width: 7 }, opacity: 0.75, hovertemplate: "your step: %{y:.4f} ¤/kWh<extra></extra>" });
  }
  if (doc.price_micro_per_kwh !== null && doc.price_micro_per_kwh !== undefined) {
    traces.push({ type: "scatter", mode: "markers+text", name: "clearing point", x: [doc.volume_wh], y: [doc.price_micro_per_kwh / 1e6], marker: { color: "#111", size: 11, symbol: "diamond" }, text: [(doc.price_micro_per_kwh / 1e6).toFixed(4) + " ¤/kWh"], textposition: "top right", hovertemplate: "%{x} Wh at %{y:.4f} ¤/kWh<extra>cleared</extra>" });
  }
  return draw(el, traces, baseLayout({
    hovermode: "closest",
    xaxis: { ticksuffix: " Wh", gridcolor: "#eef1f4", rangemode: "tozero" }, // cumulative energy
    yaxis: { title: { text: "¤/kWh" }, gridcolor: "#eef1f4" },
  }));
}

// The community's clearing prices and traded volume per slot, with the grid's prices for scale.
function marketChart(el, doc) {
  const rows = doc.slots;
  if (!rows.length) return emptyChart(el, "no slot cleared yet");
  const x = rows.map((r) => r.local);
  const first = x[0], last = x[x.length - 1];
  return draw(el, [
    { type: "bar", name: "traded (Wh)", x: x, y: rows.map((r) => r.volume_wh), marker: { color: COLORS.volume }, hovertemplate: "%{y} Wh<extra>traded</extra>" },
    { type: "scatter", mode: "lines+markers", name: "clearing price", x: x, y: rows.map((r) => r.price_micro_per_kwh === null ? null : r.price_micro_per_kwh / 1e6), yaxis: "y2", line: { color: COLORS.price, width: 2 }, marker: { size: 5 }, hovertemplate: "%{y:.4f} ¤/kWh<extra>price</extra>" },
    { type: "scatter", mode: "lines", name: "grid retail", x: [first, last], y: [doc.retail_micro_per_kwh / 1e6, doc.retail_micro_per_kwh / 1e6], yaxis: "y2", line: { color: "#888", dash: "dot", width: 1 }, hoverinfo: "skip" },
    { type: "scatter", mode: "lines", name: "grid feed-in", x: [first, last], y: [doc.feed_in_micro_per_kwh / 1e6, doc.feed_in_micro_per_kwh / 1e6], yaxis: "y2", line: { color: "#bbb", dash: "dot", width: 1 }, hoverinfo: "skip" },
  ], baseLayout({
    yaxis: { title: { text: "Wh" }, gridcolor: "#eef1f4", rangemode: "tozero" },
    yaxis2: { title: { text: "¤/kWh" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
    margin: { l: 50, r: 52, t: 8, b: 30 },
  }));
}

window.gridCharts = { energyChart, forecastChart, billsChart, whyChart, marketChart };
