// gridnode status page: polls this node's JSON API every 2 s. No external requests, no libraries.
"use strict";

const POLL_MS = 2000;

function $(id) { return document.getElementById(id); }
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }

// µ-units -> currency units with 4 decimals; integer arithmetic for the digits (no float rounding).
function money(micro) {
  if (micro === null || micro === undefined) return "—";
  const neg = micro < 0;
  const abs = Math.abs(micro);
  const whole = Math.floor(abs / 1000000);
  const frac = String(Math.floor((abs % 1000000) / 100)).padStart(4, "0");
  return (neg ? "−" : "") + whole + "." + frac + " ¤";
}
function price(microPerKwh) { return microPerKwh === null || microPerKwh === undefined ? "—" : money(microPerKwh) + "/kWh"; }
function energy(wh) { return wh + " Wh"; }
function short(hex) { return hex ? hex.slice(0, 16) + "…" : "—"; }
function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? m + " min " + (s % 60) + " s" : s + " s";
}
function iso(ms) { return new Date(ms).toISOString().replace(".000Z", "Z"); }

function fillTable(id, rows, columns, empty) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = empty;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell && typeof cell === "object") {
        td.textContent = cell.text;
        if (cell.cls) td.className = cell.cls;
      } else {
        td.textContent = cell;
      }
    }
  }
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function showStatus(s) {
  setText("community", s.community_id);
  setText("current-slot", String(s.current_slot));
  setText("open-slot", String(s.first_open_slot));
  setText("gate", duration(s.ms_to_gate_closure) + " (slot " + s.first_open_slot + ")");
  setText("now", iso(s.now_ms));
  setText("tariff", price(s.retail_micro_per_kwh) + " / " + price(s.feed_in_micro_per_kwh));
  setText("height", String(s.height));
  setText("head-hash", s.head_hash);
  setText("digest", s.state_digest);
  setText("last-cleared", String(s.last_cleared_slot));
  setText("mempool", s.mempool_size + " pending tx");
  setText("role", s.role);
  setText("household", s.household);
  setText("peer-id", s.peer_id);
  setText("peers", String(s.peers_count));
  const v = s.validators;
  const health = $("validators");
  health.textContent = v.connected + " of " + v.total + " reachable" + (v.quorum ? " — quorum" : " — NO QUORUM");
  health.className = v.quorum ? "ok" : "bad";
  fillTable("validator-table", v.members.map((m) => [
    { text: short(m.public_key), cls: "mono" },
    { text: m.connected ? "yes" : "no", cls: m.connected ? "ok" : "bad" },
    m.age_ms === null ? "never" : duration(m.age_ms) + " ago",
  ]), 3, "no validator seen yet");
  setText("misbehaviour-total", String(s.misbehaviour_total));
  const reasons = Object.entries(s.misbehaviour).map(([k, n]) => k + ": " + n);
  setText("misbehaviour", reasons.length ? "(" + reasons.join(", ") + ")" : "");
}

function showOrders(o) {
  fillTable("orders", o.orders.map((x) => [
    String(x.slot),
    { text: x.side, cls: x.side },
    x.steps.map((st) => price(st.price_micro_per_kwh) + " × " + energy(st.energy_wh)).join("; "),
    energy(x.energy_wh),
    { text: x.order_id, cls: "mono" },
  ]), 5, "no open orders");
}

function showTrades(t) {
  fillTable("trades", t.slots.map((s) => {
    const mine = s.trades.filter((x) => x.mine);
    const myText = mine.length === 0 ? "—" : mine.map((x) => x.my_side + " " + energy(x.energy_wh) + " for " + money(x.amount_micro)).join("; ");
    if (!s.awaiting_settlement) {
      // the ledger keeps a slot's trades only until the slot settles
      return [String(s.slot), price(s.clearing_price_micro_per_kwh), { text: "settled (or no trades)", cls: "muted" }, "—", "see balance"];
    }
    return [String(s.slot), price(s.clearing_price_micro_per_kwh), energy(s.volume_wh), String(s.trades.length), myText];
  }), 5, "no slot cleared yet");
}

function showBalance(b) {
  setText("balance", money(b.balance_micro));
  const savings = $("savings");
  savings.textContent = money(b.savings_micro);
  savings.className = b.savings_micro > 0 ? "ok" : b.savings_micro < 0 ? "bad" : "";
  setText("bill", money(b.bill_micro) + " / " + money(b.grid_only_bill_micro));
  setText("p2p", energy(b.bought_p2p_wh) + " / " + energy(b.sold_p2p_wh));
  setText("grid", energy(b.grid_import_wh) + " / " + energy(b.grid_export_wh));
  setText("settled", String(b.slots_settled));
}

async function refresh() {
  const conn = $("conn");
  try {
    const [s, o, t, b] = await Promise.all([
      getJson("/api/status"),
      getJson("/api/orders?mine=1"),
      getJson("/api/trades?limit=6"),
      getJson("/api/balance"),
    ]);
    showStatus(s);
    showOrders(o);
    showTrades(t);
    showBalance(b);
    conn.textContent = "live · height " + s.height;
    conn.className = "badge ok";
    setText("updated", new Date().toISOString());
    document.body.dataset.height = String(s.height);
  } catch (err) {
    conn.textContent = "daemon not answering";
    conn.className = "badge bad";
  }
}

refresh();
setInterval(refresh, POLL_MS);
