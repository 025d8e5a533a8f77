"""In-process engine scaling (household-slots/s); validators share caches, full node not in cpu s.

**What it shares and skips** (printed as the first line of the output too): the simulated
validators share one cache of verified signatures and checked order rules, one of verified votes and
proposals, one of checked blocks and one of mempool admission answers (:mod:`sims.inproc`), so each
signature is verified and each transaction admission-checked about once per process, not once per
validator — per-validator CPU is not modelled and the figure says nothing
about a real validator's speed (``benchmarks/ledger.py`` measures that). Households' consensus cores
are not run. On big runs (``--full-node auto``) the sample full node, which re-verifies everything
on its own, is a child process on the second core: ``cpu s`` is this process only; ``wall s``
includes waiting for it.

For each community size N (households drawn from ``sims/scenarios/town.toml``: 7 validators,
forecast bidding, 15-minute slots), runs ``--hours`` of simulated daytime with
:func:`sims.inproc.run_inproc` and prints one row: wall seconds, the engine process's CPU seconds
(robust to other jobs on the machine; the sample full node's child process is not counted), household-
slots per second, blocks, the share of wall time spent in Ed25519 signature verification and in the
ledger's per-transaction admission check (measured with cProfile when ``--profile`` is given, which
slows the run ~1.3x), and the extrapolated wall time of the full scenario (N households × 7 days).

    python benchmarks/sims.py [--households 12,100,300,1000] [--hours 2] [--validators 7] [--profile]
                              [--full-node auto|process|inline]

The real-daemon engine's curve is ``benchmarks/sims_daemons.py``.

``--year`` instead runs ``sims/scenarios/year.toml`` (100 households, 4 validators, 365 days of
15-minute slots; ``--days N`` cuts it to its first N days) as ``gridnode sim`` does and prints one
row: wall seconds, the engine's CPU seconds, its child processes' together (the sample full node
and the forecaster-fit workers, :mod:`sims.fitpool`; ``--fit-workers 0`` fits in the engine) and
each role's share of them (read from ``/proc`` at the last slot boundary), the
peak RSS of the engine and of the largest child, household-slots per second of wall time, the forecaster's period (``refit_days``),
the results digest (:func:`sims.inproc.results_digest`: compare two runs' KPIs without the wall
times) and the load average before and after (the machine is shared: read the figures with it).
A run shorter than the year also prints the year's wall time extrapolated linearly.

    python benchmarks/sims.py --year [--days 30] [--out results.json] [--fit-workers N]

``--town`` prints the same row for ``sims/scenarios/town.toml`` (1,000 households × 7 days, 7
validators; ``--days`` cuts it).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import json
import os
import pstats
import resource
import sys
import time
from pathlib import Path

# this file is named like the ``sims`` package: when run as a script, its own folder must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from sims.inproc import run_inproc  # noqa: E402 - after the path fix above
from sims.scenario import load_scenario  # noqa: E402 - after the path fix above

TOWN = Path(__file__).resolve().parents[1] / "sims" / "scenarios" / "town.toml"
YEAR = Path(__file__).resolve().parents[1] / "sims" / "scenarios" / "year.toml"


def _cum(stats: pstats.Stats, suffix: str) -> float:
    total = 0.0
    for (file, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if f"{file}:{name}".endswith(suffix):
            total += row[3]
    return total


def one(
    households: int, hours: float, validators: int, profile: bool, full_node: str = "auto"
) -> dict[str, object]:
    base = load_scenario(TOWN, households=households, days=hours / 24)
    sc = dataclasses.replace(base, start_hour=9.0, validators=validators)
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof is not None:
        prof.enable()
    r = run_inproc(sc, full_node=full_node)
    if prof is not None:
        prof.disable()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    hh_slots = households * r.slots_done
    row: dict[str, object] = {
        "households": households,
        "validators": validators,
        "slots": r.slots_done,
        "wall_s": round(wall, 2),
        "engine_cpu_s": round(cpu, 2),
        "household_slots_per_s": round(hh_slots / wall, 1),
        "blocks": r.blocks_committed,
        "agreement": r.ledger_agreement,
        "committed_share": r.community()["orders_committed_share"],
        "extrapolated_7d_min": round(wall * (7 * 96) / max(1, r.slots_done) / 60, 1),
    }
    if prof is not None:
        stats = pstats.Stats(prof)
        row["share_sig_verify"] = round(_cum(stats, "crypto.py:verify") / wall, 3)
        row["share_admission_check"] = round(_cum(stats, "ledger.py:admission_error") / wall, 3)
        row["share_block_check"] = round(_cum(stats, "ledger.py:check") / wall, 3)
    return row


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _rss_mb(pid: int | str = "self") -> int:
    """A process's resident set now, MB (``/proc/PID/statm``'s resident pages: ``VmRSS``, read
    without formatting the whole status file); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(int(f.read().split()[1]) * _PAGE_MB)
    except (OSError, IndexError, ValueError):
        return 0


def _children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children", "rb") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """A child's CPU seconds so far (user + system, ``/proc/PID/stat``), ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_S
    except (OSError, IndexError, ValueError):
        return None


def _role(pid: int) -> str:
    """``"full node"`` (``python -m sims.fullnode``), ``"fit"`` (``-m sims.fitpool``) or ``""``."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return "full node" if b"sims.fullnode" in cmd else "fit" if b"sims.fitpool" in cmd else ""


@dataclasses.dataclass(slots=True)
class _Memory:
    """The run's resident memory, sampled at every slot boundary from ``/proc``: the engine, the
    full node's child, the fit workers together, and the peak of their sum at one moment."""

    per_day: int
    last_slot: int = 0  # the run's slots: the children's CPU is read at its end too
    by_day: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    peak_total_mb: int = 0
    peak_at_day: float = 0.0
    peak_fit_mb: int = 0  # the fit workers' sum, at most
    # each child's role, read once (a child's command line does not change; a pid is not reused
    # while its parent has not waited for it)
    roles: dict[int, str] = dataclasses.field(default_factory=dict)
    # each child's CPU seconds at the last simulated day's end (and the run's last slot) it lived
    # to (read there only: ≈ 10 µs a child): the split of ``children_cpu_s`` by role
    cpu: dict[int, float] = dataclasses.field(default_factory=dict)

    def sample(self, slots_done: int) -> None:
        """(≈ 0.1 ms at every slot boundary, ≈ 3.5 s of the engine's CPU over a year; twice that
        before statm and the roles kept.)"""
        engine, full, fit = _rss_mb(), 0, 0
        roles = self.roles
        for pid in _children():
            role = roles.get(pid)
            if role is None:
                role = roles[pid] = _role(pid)
            if role == "full node":
                full += _rss_mb(pid)
            elif role == "fit":
                fit += _rss_mb(pid)
        total = engine + full + fit
        self.peak_fit_mb = max(self.peak_fit_mb, fit)
        if total > self.peak_total_mb:
            self.peak_total_mb, self.peak_at_day = total, round(slots_done / self.per_day, 2)
        if slots_done % self.per_day == 0 and slots_done:
            self.by_day.append((slots_done // self.per_day, engine, full, fit))
        if (slots_done % self.per_day == 0 and slots_done) or slots_done == self.last_slot:
            for pid, role in roles.items():
                if role:
                    cpu_s = _cpu_s(pid)
                    if cpu_s is not None:
                        self.cpu[pid] = cpu_s

    def cpu_by_role(self, role: str) -> float:
        return round(sum(v for pid, v in self.cpu.items() if self.roles.get(pid) == role), 1)

    def year_peak_mb(self) -> int | None:
        """The year's peak of the sum, projected: the engine's and the full node's growth per
        day over the run's second half carried on to day 365, plus the fit workers' peak."""
        if len(self.by_day) < 2:
            return None
        last = self.by_day[-1]
        mid = min(self.by_day, key=lambda r: abs(r[0] - last[0] / 2))
        if mid[0] >= last[0]:
            return None
        slope = (last[1] + last[2] - mid[1] - mid[2]) / (last[0] - mid[0])
        return round(last[1] + last[2] + max(0.0, slope) * (365 - last[0]) + self.peak_fit_mb)


def year(
    days: float | None, out: Path | None, fit_workers: int | None, path: Path = YEAR
) -> dict[str, object]:
    """One run of ``year.toml`` (the module's ``--year``; ``--town``: ``town.toml``)."""
    from sims.inproc import Progress, results_digest  # noqa: PLC0415 - only --year uses them

    sc = load_scenario(path, days=days)
    memory = _Memory(86_400 // sc.slot_seconds, last_slot=sc.slots)

    def sample(p: Progress) -> None:
        memory.sample(p.slots_done)

    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    r = run_inproc(
        sc, progress=sample, **({} if fit_workers is None else {"fit_workers": fit_workers})
    )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    households = len(r.households)
    row: dict[str, object] = {
        "scenario": path.name,
        "days": sc.days,
        "households": households,
        "validators": sc.validators,
        "refit_days": sc.refit_days,
        "slots": r.slots_done,
        "wall_s": round(wall, 1),
        "engine_cpu_s": round(cpu, 1),
        # what the children cost the engine's core (it is the critical path): steadier than the
        # wall when the host's speed swings (docs/sims.md, "Stop 31")
        "wall_over_engine_cpu": round(wall / max(cpu, 1e-9), 3),
        "fit_workers": "auto" if fit_workers is None else fit_workers,
        "children_cpu_s": round(child.ru_utime + child.ru_stime, 1),
        # of them, as read at the last slot boundary (the fit workers are done by then; the full
        # node's work after it, on the blocks that settle the last slots, is not counted)
        "full_node_cpu_s": memory.cpu_by_role("full node"),
        "fit_workers_cpu_s": memory.cpu_by_role("fit"),
        "engine_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "child_peak_rss_mb": child.ru_maxrss // 1024,
        "household_slots_per_s": round(households * r.slots_done / wall, 1),
        "ms_per_household_slot": round(1000 * wall / max(1, households * r.slots_done), 3),
        "blocks": r.blocks_committed,
        "agreement": r.ledger_agreement,
        "digest": results_digest(r),
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        # (day, engine MB, full node MB, fit workers MB) at the end of every 7th simulated day
        # and the last; the peak of their sum (sampled at every slot boundary) and its day
        "rss_by_day_mb": [x for x in memory.by_day if x[0] % 7 == 0 or x is memory.by_day[-1]],
        "peak_total_rss_mb": memory.peak_total_mb,
        "peak_total_at_day": memory.peak_at_day,
        "peak_fit_workers_rss_mb": memory.peak_fit_mb,
    }
    if path == YEAR and r.slots_done < 365 * 96:
        row["year_peak_total_mb_projected"] = memory.year_peak_mb()
        row["year_wall_min_extrapolated"] = round(wall * 365 * 96 / max(1, r.slots_done) / 60, 1)
    if out is not None:
        r.write_json(out)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", default="12,100,300,1000")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--validators", type=int, default=7)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--full-node", default="auto", choices=("auto", "process", "inline"),
        help="where the sample full node runs (see sims.fullnode)",
    )  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    ap.add_argument("--year", action="store_true", help="run sims/scenarios/year.toml instead")
    ap.add_argument(
        "--town", action="store_true", help="run sims/scenarios/town.toml like --year (its figures)"
    )
    ap.add_argument("--days", type=float, default=None, help="--year: only the first N days")
    ap.add_argument("--out", type=Path, default=None, help="--year: also write results.json here")
    ap.add_argument(
        "--fit-workers", type=int, default=None,
        help="--year: forecaster fit worker processes (0: in the engine; default: the engine's choice)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.year or args.town:
        row = year(args.days, args.out, args.fit_workers, TOWN if args.town else YEAR)
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"# sims/scenarios/{row['scenario']} in process (validators share caches, see the module "
                "docstring); the sample full node and the forecaster-fit workers are child processes: "
                "children_cpu_s is theirs together, child_peak_rss_mb the largest child's"
            )
            for k, v in row.items():
                print(f"{k:>28} {v}")
        return
    header = (
        f"{'households':>10} {'slots':>5} {'wall s':>8} {'cpu s':>7} {'hh·slot/s':>10} {'blocks':>6} "
        f"{'7-day min':>9} {'sig':>5} {'admit':>5} agree"
    )
    if not args.json:
        print(
            f"# in-process engine, {args.validators} validators sharing verified-signature, vote, "
            "block-check and admission caches (each signature verified ~once per process, not per "
            "validator); "
            "households' consensus cores not run; cpu s = this process only (the sample full node "
            f"runs {'in a child process on big runs' if args.full_node == 'auto' else args.full_node})"
        )
        print(header)
    for n in (int(x) for x in args.households.split(",")):
        row = one(n, args.hours, args.validators, args.profile, args.full_node)
        if args.json:
            print(json.dumps(row))
            continue
        print(
            f"{n:>10} {row['slots']:>5} {row['wall_s']:>8} {row['engine_cpu_s']:>7} "
            f"{row['household_slots_per_s']:>10} "
            f"{row['blocks']:>6} {row['extrapolated_7d_min']:>9} "
            f"{row.get('share_sig_verify', '-'):>5} {row.get('share_admission_check', '-'):>5} "
            f"{row['agreement']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
