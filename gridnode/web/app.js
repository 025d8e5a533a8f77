// gridnode status page: live documents pushed by this node over server-sent events
// (GET /api/events: status, household, market, peers), rendered as text, tables and plotly charts.
// No external requests, no other libraries.
"use strict";

const state = { status: null, household: null, market: null, peers: null, day: "today", why: null, whyPinned: false };

function $(id) { return document.getElementById(id); }
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }
function setHtmlClass(id, cls) { const el = $(id); if (el) el.className = cls; }
function filled(id) { const el = $(id); if (el) el.dataset.filled = "yes"; }

// µ-units -> currency units with 4 decimals, exact (integer arithmetic).
function money(micro) {
  if (micro === null || micro === undefined) return "—";
  const neg = micro < 0, abs = Math.abs(micro);
  return (neg ? "−" : "") + Math.floor(abs / 1e6) + "." + String(Math.floor((abs % 1e6) / 100)).padStart(4, "0") + " ¤";
}
function price(p) { return p === null || p === undefined ? "—" : money(p) + "/kWh"; }
function energy(wh) {
  if (wh === null || wh === undefined) return "—";
  return Math.abs(wh) >= 1000 ? (wh / 1000).toFixed(Math.abs(wh) >= 10000 ? 1 : 2) + " kWh" : wh + " Wh";
}
// A bill: what is paid, or what is earned when it is negative.
function bill(micro) { return micro < 0 ? money(-micro) + " earned" : money(micro); }
function pct(x) { return x === null || x === undefined ? "—" : Math.round(x * 100) + " %"; }
function short(hex) { return hex ? hex.slice(0, 12) + "…" : "—"; }
// A slot's delivery as "13:15–13:30", with its date when it is not today (the offset is in the
// table's header).
function when(r) {
  const today = state.household ? state.household.today.day : null;
  return r.span + (r.date !== today ? " · " + r.date.slice(5).replace("-", "/") : "");
}
function ago(s) {
  if (s === null || s === undefined) return "never";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min ago";
}

function fillTable(id, rows, columns, empty) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = empty;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell && typeof cell === "object" && cell.node) {
        td.append(cell.node);
        if (cell.cls) td.className = cell.cls;
      } else if (cell && typeof cell === "object") {
        td.textContent = cell.text;
        if (cell.cls) td.className = cell.cls;
      } else {
        td.textContent = cell;
      }
    }
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ------------------------------------------------------------------------------------ health

function showHealth(s) {
  const h = s.health;
  const badge = $("health");
  badge.textContent = h.label;
  badge.className = "badge " + h.level;
  badge.dataset.level = h.level;
  const box = $("health-reasons");
  box.replaceChildren();
  const list = el("ul");
  for (const r of h.reasons.length ? h.reasons : ["all well: " + h.label]) list.append(el("li", "", r));
  box.append(list);
  const alert = $("alert");
  const missed = s.health.readings_missed;
  if (missed && s.member) {
    alert.hidden = false;
    alert.textContent = missed + " meter reading" + (missed === 1 ? " was" : "s were") + " missed in the last day: the ledger counted " +
      (missed === 1 ? "it" : "them") + " as 0 Wh, which cost " + money(s.health.missed_cost_micro) + ". See “Why this slot went as it did”.";
  } else {
    alert.hidden = true;
  }
}

// ------------------------------------------------------------------------------------ status

function showStatus(s) {
  state.status = s;
  document.body.dataset.role = s.role;
  document.body.dataset.member = s.member ? "yes" : "no";
  document.body.dataset.height = String(s.height);
  setText("community", s.community_id);
  setText("whoami", (s.role === "validator" ? (s.member ? "validator and household " : "validator ") : "household ") + short(s.household) + " · " + s.now_local);
  showHealth(s);
  const v = s.validators;
  setText("node-health", s.health.label);
  setHtmlClass("node-health", s.health.level === "ok" ? "ok" : s.health.level === "warn" ? "warn" : "bad");
  setText("node-time", s.now_local + (s.speedup !== 1 ? " (clock at " + s.speedup + "× speed)" : ""));
  setText("node-slot", s.current_delivery);
  setText("node-open", s.first_open_delivery + " · gate closes in " + Math.round(s.wall_s_to_gate_closure) + " s");
  setText("node-validators", v.connected + " of " + v.total + " reachable" + (v.quorum ? " — quorum" : " — NO QUORUM: no block can be decided"));
  setHtmlClass("node-validators", v.quorum ? "ok" : "bad");
  setText("node-head", "height " + s.height + ", " + ago(s.health.head_age_s));
  setText("node-tariff", "grid retail " + price(s.retail_micro_per_kwh) + " · feed-in " + price(s.feed_in_micro_per_kwh));
  setText("op-role", s.role + (s.member ? " (member household)" : " (not a member: does not trade)"));
  setText("op-household", s.household);
  setText("op-peer", s.peer_id);
  setText("op-height", String(s.height));
  setText("op-head", s.head_hash);
  setText("op-digest", s.state_digest);
  setText("op-genesis", s.genesis_hash);
  setText("op-mempool", s.mempool_size + " waiting");
  const reasons = Object.entries(s.misbehaviour).map(([k, n]) => k + " " + n).join(", ");
  setText("op-misbehaviour", s.misbehaviour_total + (reasons ? " (" + reasons + ")" : "") + (s.banned_peers ? " · " + s.banned_peers + " banned" : ""));
  fillTable("validators-table", v.members.map((m) => [
    { text: short(m.public_key) + (m.self ? " (this node)" : ""), cls: "mono" },
    m.self ? { text: "this node", cls: "ok" } : { text: m.connected ? "yes" : "no", cls: m.connected ? "ok" : "bad" },
    m.self ? "—" : ago(m.heard_s_ago),
  ]), 3, "no validator");
  filled("node");
  if (s.role === "validator") {
    setText("v-height", String(s.height));
    setText("v-head-age", "newest " + ago(s.health.head_age_s));
    setText("v-quorum", v.connected + " / " + v.total);
    setText("v-quorum-sub", v.quorum ? "quorum: blocks are decided" : "NO QUORUM: blocks stop");
    setText("v-mempool", String(s.mempool_size));
    setText("v-refused", String(s.misbehaviour_total));
    setText("v-refused-sub", reasons || "none");
    setText("v-settled", String(s.settled_slots));
    setText("v-cleared", "last cleared slot " + s.last_cleared_slot);
    setText("v-member", s.member ? "yes" : "no");
    filled("duties");
  }
  setText("updated", s.now_local);
}

// ------------------------------------------------------------------------------------ household

function showHousehold(h) {
  state.household = h;
  const t = h.today, y = h.yesterday;
  setText("today-date", t.day);
  setText("bill-today", bill(t.bill_micro));
  setText("bill-today-sub", "grid only: " + bill(t.grid_only_bill_micro) + " · " + t.slots_settled + " slots settled");
  const saved = $("saved-today");
  saved.textContent = money(t.savings_micro);
  saved.className = "value " + (t.savings_micro > 0 ? "ok" : t.savings_micro < 0 ? "bad" : "");
  setText("saved-yesterday", "yesterday " + money(y.savings_micro) + (t.readings_missed ? " · " + t.readings_missed + " readings missed" : ""));
  const shares = h.shares;
  setText("self-sufficiency", h.pv_known ? pct(shares.self_sufficiency) : "—");
  setText("self-consumption", h.pv_known ? pct(shares.self_consumption) : "—");
  setText("p2p-today", energy(t.sold_p2p_wh) + " / " + energy(t.bought_p2p_wh));
  const total = h.since_joining;
  const st = $("saved-total");
  st.textContent = money(total.savings_micro) + " saved";
  st.className = "value " + (total.savings_micro > 0 ? "ok" : total.savings_micro < 0 ? "bad" : "");
  setText("balance-sub", "bill " + bill(total.bill_micro) + " (grid only: " + bill(total.grid_only_bill_micro) + ") over " + total.slots_settled + " slots");
  filled("summary");

  const rows = h.slots.filter((r) => r.day === state.day);
  window.gridCharts.energyChart($("energy-chart"), rows);
  setText("energy-note", h.pv_known
    ? "Above zero: what covered your consumption (own PV, battery, neighbours, grid); below: where the rest of your PV went. Per " + (h.slots.length ? "slot" : "slot") + ", local time (" + h.utc_offset + ")."
    : "Your meter reports only the net at the grid connection: PV and consumption apart need a PV register (docs/meters.md).");
  if (h.slots.length) filled("energy");

  const today = h.slots.filter((r) => r.day === "today");
  window.gridCharts.forecastChart($("forecast-chart"), today, h.forecast);
  const withBoth = today.filter((r) => r.forecast && r.natural_wh !== null);
  const mae = withBoth.length ? Math.round(withBoth.reduce((a, r) => a + Math.abs(r.forecast[1] - r.natural_wh), 0) / withBoth.length) : null;
  const anyForecast = h.forecast.length || h.slots.some((r) => r.forecast);
  setText("forecast-note", h.forecaster === "warming"
    ? "The forecaster is warming up: the daemon loads the meter history and fits the model once it serves; the first forecast and quote follow."
    : !anyForecast
    ? "No forecast: this node does not bid automatically (bidding.enabled), or its meter has less than a day of history. Measured surplus shown."
    : (mae === null ? "No slot with both a forecast and a reading yet today." : "Mean error of the P50 today: " + mae + " Wh per slot over " + withBoth.length + " slots.") +
      (h.forecast.length ? " The next slots' forecast is shown ahead." : ""));
  if (today.length || h.forecast.length) filled("forecast");

  window.gridCharts.billsChart($("bills-chart"), h.days.slice(-14));
  setText("bills-note", "Since joining: bill " + money(total.bill_micro) + " against " + money(total.grid_only_bill_micro) + " with the grid alone — saved " + money(total.savings_micro) + ". A negative bill is money earned.");
  filled("bills");

  fillTable("orders-table", h.orders.map((o) => {
    const fate = el("span", "fate " + o.fate, o.fate.replace("_", " "));
    const box = el("span");
    box.append(fate, el("span", "fate-text", o.fate_text + (o.submissions > 1 ? " · re-quoted " + (o.submissions - 1) + "×" : "")));
    return [when(o), { text: o.side, cls: o.side }, { text: energy(o.energy_wh), cls: "num" }, { node: box }];
  }), 4, "no order submitted yet");
  if (h.orders.length) filled("orders");

  for (const th of document.querySelectorAll("th.delivery")) th.textContent = "Delivery (" + h.utc_offset + ")";
  fillTable("trades-table", h.trades.map((t) => [
    when(t), { text: t.side, cls: t.side }, { text: energy(t.energy_wh), cls: "num" },
    { text: price(t.price_micro_per_kwh), cls: "num" }, { text: money(t.amount_micro), cls: "num" },
    { text: short(t.counterparty), cls: "mono opt" },
    t.missed ? { text: "reading missed", cls: "bad" } : t.settled ? "yes" : { text: "awaiting readings", cls: "muted" },
  ]), 7, "no trade yet");
  if (h.trades.length) filled("trades");
  refreshWhyChoices();
}

// ------------------------------------------------------------------------------------ why

function refreshWhyChoices() {
  const select = $("why-select");
  const choices = new Map();
  if (state.market) for (const r of state.market.slots) choices.set(r.slot, r);
  if (state.household) for (const r of state.household.slots) if (!choices.has(r.slot) && r.price_micro_per_kwh !== null) choices.set(r.slot, r);
  if (state.status) choices.set(state.status.first_open_slot, { slot: state.status.first_open_slot, local: "", clock: "next open" });
  const slots = [...choices.keys()].sort((a, b) => b - a).slice(0, 96);
  const current = select.value;
  select.replaceChildren();
  for (const slot of slots) {
    const r = choices.get(slot);
    const label = (r.local ? r.local.slice(5, 16).replace("-", "/") : r.clock) + (state.status && slot === state.status.first_open_slot ? " (open now)" : "");
    const option = el("option", "", label);
    option.value = String(slot);
    select.append(option);
  }
  const want = state.whyPinned && current ? current : state.household && state.household.why_slot !== null ? String(state.household.why_slot) : current;
  if (want && slots.includes(Number(want))) select.value = want;
  loadWhy(Number(select.value));
}

async function loadWhy(slot) {
  if (!slot) return;
  const key = slot + ":" + (state.status ? state.status.height : 0);
  if (state.whyKey === key) return;
  state.whyKey = key;
  try {
    const response = await fetch("/api/slot?slot=" + slot, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) {
      showWhy(null, slot);
      return;
    }
    showWhy(await response.json(), slot);
  } catch (err) {
    state.whyKey = null;
  }
}

function showWhy(doc, slot) {
  if (Number($("why-select").value) !== slot) return; // an answer for a slot no longer chosen
  state.why = doc;
  window.gridCharts.whyChart($("why-chart"), doc);
  const list = $("why-text");
  list.replaceChildren();
  if (!doc) {
    setText("why-title", "Slot " + slot + ": this node knows nothing of it.");
    return;
  }
  const now = state.status ? state.status.now_ms : 0;
  const slotMs = state.status ? state.status.slot_seconds * 1000 : 900000;
  const cleared = doc.start_ms > now ? "cleared; delivery starts at " + doc.clock : doc.start_ms + slotMs > now ? "cleared; delivering now" : "cleared; waiting for the meter readings";
  const words = { open: "open for orders", waiting: "gate closed, clearing", empty: "no orders", cleared: cleared, settled: "settled" };
  setText("why-title", doc.delivery + " — " + (words[doc.state] || doc.state));
  for (const line of doc.explanation) list.append(el("li", /missed|never reached/.test(line) ? "bad" : "", line));
  filled("why");
}

// ------------------------------------------------------------------------------------ market

function showMarket(m) {
  state.market = m;
  window.gridCharts.marketChart($("market-chart"), m);
  const d = m.last_day;
  setText("market-note", "Last day: " + d.slots_cleared + " slots cleared, " + energy(d.volume_wh) + " traded in " + d.trades + " trades" +
    (d.mean_price_micro_per_kwh === null ? "" : " at " + price(d.mean_price_micro_per_kwh) + " on average") +
    " (grid: " + price(m.retail_micro_per_kwh) + " to buy, " + price(m.feed_in_micro_per_kwh) + " to sell). " + m.members + " member households, " + m.rule.replace(/_/g, " ") + ".");
  if (m.slots.length) filled("market");
  if (state.household || (state.status && state.status.role === "validator")) refreshWhyChoices();
}

function showPeers(p) {
  state.peers = p;
  fillTable("peers-table", p.peers.map((x) => [
    { text: short(x.peer_id), cls: "mono" },
    x.validator ? "validator" : x.member ? "member" : "—",
    x.banned ? { text: "banned", cls: "bad" } : x.connected ? { text: "connected", cls: "ok" } : { text: "not connected", cls: "muted" },
    { text: String(Math.round(x.score)), cls: "num" },
    { text: Object.entries(x.misbehaviour).map(([k, n]) => k + " " + n).join(", ") || "0", cls: "opt" },
  ]), 5, "no peer");
}

// ------------------------------------------------------------------------------------ wiring

function connect() {
  const source = new EventSource("/api/events");
  const on = (name, fn) => source.addEventListener(name, (e) => {
    try { fn(JSON.parse(e.data)); } catch (err) { console.warn("gridnode page: " + name + ": " + err); }
  });
  on("status", showStatus);
  on("household", showHousehold);
  on("market", showMarket);
  on("peers", showPeers);
  source.onerror = () => {
    const badge = $("health");
    badge.textContent = "daemon not answering — retrying";
    badge.className = "badge bad";
    badge.dataset.level = "bad";
  };
}

function wire() {
  $("health").addEventListener("click", () => {
    const box = $("health-reasons");
    box.hidden = !box.hidden;
    $("health").setAttribute("aria-expanded", String(!box.hidden));
  });
  for (const b of document.querySelectorAll(".toggle button")) {
    b.addEventListener("click", () => {
      state.day = b.dataset.day;
      for (const o of document.querySelectorAll(".toggle button")) o.classList.toggle("on", o === b);
      if (state.household) showHousehold(state.household);
    });
  }
  const select = $("why-select");
  select.addEventListener("change", () => { state.whyPinned = true; loadWhy(Number(select.value)); });
  const step = (d) => {
    const i = select.selectedIndex + d;
    if (i >= 0 && i < select.options.length) { select.selectedIndex = i; state.whyPinned = true; loadWhy(Number(select.value)); }
  };
  $("why-prev").addEventListener("click", () => step(1));
  $("why-next").addEventListener("click", () => step(-1));
  connect();
}

wire();
