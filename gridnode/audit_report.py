"""The audit's outputs: the summary printed on the terminal, ``audit.json`` and a self-contained
``audit.html`` (inline CSS, no scripts, no external resources: it opens offline and can be mailed).

Everything shown is :meth:`gridnode.audit.AuditResult.to_json`; nothing is computed here.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from gridnode.audit import AuditResult

__all__ = ["summary_lines", "write_reports"]


def _kwh(wh: int) -> str:
    return f"{wh / 1000:,.1f} kWh"


def _money(micro: int) -> str:
    return f"{micro / 1e6:,.2f} ¤"


def summary_lines(result: AuditResult) -> list[str]:
    doc = result.to_json()
    c, m, k = doc["chain"], doc["market"], doc["checked"]
    tx = doc["transactions"]
    lines = [
        f"audit of {result.source} ({result.kind}); genesis {result.genesis_hash[:16]}… "
        f"({result.community_id}, {result.members} members, {result.validators} validators; "
        f"genesis from {result.genesis_from})",
        f"heights {c['first_height']}…{c['last_height']} ({c['blocks']:,} blocks"
        + (f", resumed after {c['resumed_from']}" if c["resumed_from"] else "")
        + f"), head {c['head_id'][:16]}…, state root {c['state_root'][:16]}…",
        f"verified: {k['commits']:,} commit certificates ({k['commit_signatures']:,} signatures), "
        f"{k['transactions']:,} transactions (orders {tx['orders']:,}, cancels {tx['cancels']:,}, "
        f"readings {tx['readings']:,}) with their signatures and rules, {k['state_roots']:,} "
        "state roots",
        f"market: {m['slots_cleared']:,} slots cleared ({m['slots_with_trades']:,} with trades, "
        f"{m['trades']:,} trades), {_kwh(m['energy_traded_wh'])} traded for "
        f"{_money(m['trade_value_micro'])}; {m['slots_settled']:,} slots settled, "
        f"{m['bills']:,} bills ({m['missing_readings_settled_as_0_wh']:,} without a reading)",
        f"money moved {_money(m['money_moved_micro'])} in {m['transfers']:,} transfers; "
        f"grid import {_kwh(m['grid_import_wh'])}, export {_kwh(m['grid_export_wh'])}; "
        f"households' bills {_money(m['bills_micro'])} vs grid-only "
        f"{_money(m['grid_only_bills_micro'])} (saved {_money(m['savings_micro'])})",
        "conservation: "
        + ", ".join(
            f"{name.replace('_', ' ')} {'yes' if ok else 'NO'}"
            for name, ok in doc["conservation"].items()
        ),
    ]
    for a in result.agreement:
        lines.append(f"agrees with {a}")
    t = doc["timing"]
    lines.append(
        f"{t['wall_seconds']:.1f} s wall, {t['cpu_seconds']:.1f} s CPU in this process, "
        f"{t['jobs']} signature worker(s)"
    )
    if result.discrepancy is not None:
        lines.append(f"DISCREPANCY at {result.discrepancy.describe()}")
    lines.append("AUDIT PASSED" if result.ok else "AUDIT FAILED")
    return lines


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25em .6em;
border-bottom:1px solid #eee;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em;word-break:break-all}.ok{color:#17692c;font-weight:600}
.bad{color:#a30f0f;font-weight:600}.verdict{font-size:1.3em;padding:.5em 1em;border-radius:.3em}
.pass{background:#e6f4ea}.fail{background:#fbe9e9}
"""


def _rows(items: list[tuple[str, Any]]) -> str:
    out = []
    for name, value in items:
        cell = (
            f'<td class="n">{value:,}</td>'
            if isinstance(value, int) and not isinstance(value, bool)
            else f"<td><code>{html.escape(str(value))}</code></td>"
        )
        out.append(f"<tr><th>{html.escape(name)}</th>{cell}</tr>")
    return "<table>" + "".join(out) + "</table>"


def render_html(result: AuditResult) -> str:
    doc = result.to_json()
    verdict = (
        '<p class="verdict pass">Audit passed: every certificate, signature, rule, clearing, '
        "settlement, balance and state root verified.</p>"
        if result.ok
        else '<p class="verdict fail">Audit FAILED: '
        + html.escape(
            result.discrepancy.describe()
            if result.discrepancy is not None
            else "a conservation check failed"
        )
        + "</p>"
    )
    sections = [
        (
            "Source",
            [*doc["genesis"].items(), ("source", doc["source"]), ("kind", doc["kind"])],
        ),
        ("Chain", list(doc["chain"].items())),
        ("What was verified", list(doc["checked"].items()) + list(doc["transactions"].items())),
        ("Market, settlement and money", list(doc["market"].items())),
        ("Blocks proposed, by validator", list(doc["proposers"].items())),
        ("Timing", list(doc["timing"].items())),
    ]
    body = [f"<h1>gridnode audit — {html.escape(result.community_id)}</h1>", verdict]
    body.append("<h2>Summary</h2><ul>")
    body += [f"<li>{html.escape(line)}</li>" for line in summary_lines(result)]
    body.append("</ul><h2>Conservation</h2><table>")
    for name, ok in doc["conservation"].items():
        mark = '<span class="ok">yes</span>' if ok else '<span class="bad">NO</span>'
        body.append(f"<tr><th>{html.escape(name.replace('_', ' '))}</th><td>{mark}</td></tr>")
    body.append("</table>")
    if doc["agreement"]:
        body.append("<h2>Agrees with</h2><ul>")
        body += [f"<li>{html.escape(a)}</li>" for a in doc["agreement"]]
        body.append("</ul>")
    if doc["discrepancy"]:
        body.append("<h2>First discrepancy</h2>" + _rows(list(doc["discrepancy"].items())))
    for title, items in sections:
        body.append(f"<h2>{html.escape(title)}</h2>" + _rows(items))
    body.append(
        "<p>Rules checked: docs/audit.md. Re-run: <code>gridnode audit "
        + html.escape(result.source)
        + "</code>.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>gridnode audit {html.escape(result.community_id)}</title><style>{_CSS}</style>"
        "</head><body>" + "".join(body) + "</body></html>\n"
    )


def write_reports(result: AuditResult, out: Path) -> tuple[Path, Path]:
    """``out/audit.json`` and ``out/audit.html``."""
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "audit.json", out / "audit.html"
    j.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    h.write_text(render_html(result))
    return j, h
