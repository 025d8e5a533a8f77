"""Simulate a whole community from a scenario file, or compare two runs.

  gridnode sim SCENARIO [--households N] [--days D] [--seed S] [--engine inproc|daemons] [--out DIR]
  gridnode sim SCENARIO --policies forecast,naive-fixed-price,perfect-foresight [--out DIR]
  gridnode sim compare A B

The in-process engine (default) is deterministic: the same scenario and seed give the same
results.json (apart from wall_seconds). The daemons engine launches real `gridnode run` processes on
loopback. A progress bar on stderr shows simulated time, slots/s and an ETA; Ctrl-C stops the run
cleanly and still writes what was done (marked interrupted). Outputs go to --out (default
sim-runs/NAME-ENGINE-sSEED): results.json, tables, and the HTML report, whose path is printed.
With --policies the scenario runs once per policy (same households and data) into DIR/POLICY/, and
the policies' economics (savings, share of perfect foresight's, imbalance, P2P gains,
household-weeks worse off than grid-only) are printed and written to DIR/economics.json and into
every run's results.json and report.
Scenario format: docs/sims.md; shipped examples in sims/scenarios/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from market.errors import UsageError
from sims.results import SimResult
from sims.scenario import load_scenario

__all__ = ["register", "run"]


class _Help(argparse.Action):
    """``-h/--help``: ``sim``'s help, or ``sim compare``'s own after the word ``compare``."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, *_: Any) -> None:
        if getattr(namespace, "scenario", None) == "compare":
            _compare_parser().print_help()
        else:
            parser.print_help()
        parser.exit()


def _compare_parser() -> argparse.ArgumentParser:
    compare = importlib.import_module("sims.compare")
    parser = argparse.ArgumentParser(prog="gridnode sim")
    sub = parser.add_subparsers(dest="command", required=True)
    compare.register(sub)
    chosen: argparse.ArgumentParser = sub.choices["compare"]
    return chosen


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sim",
        help="simulate a community from a scenario file (or: sim compare A B)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument(
        "-h", "--help", action=_Help, help="show this help (sim compare --help: its own)"
    )
    p.add_argument("scenario", help="scenario TOML file (or the word 'compare', then two runs)")
    p.add_argument("runs", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--households", type=int, help="override the number of households")
    p.add_argument("--days", type=float, help="override the simulated days")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument(
        "--engine", choices=("inproc", "daemons"), default="inproc", help="default %(default)s"
    )
    p.add_argument("--out", type=Path, help="output directory (default sim-runs/NAME-ENGINE-sSEED)")
    p.add_argument(
        "--chain",
        type=Path,
        metavar="FILE",
        help="inproc engine: also write the committed chain as an export file (gridnode audit FILE)",
    )
    p.add_argument(
        "--policies",
        help="comma-separated bidding policies to run one after the other and compare "
        "(forecast, naive-fixed-price, perfect-foresight)",
    )
    p.add_argument(
        "--speedup",
        type=float,
        default=60.0,
        help="daemons engine: clock speed-up (default %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.scenario == "compare":
        return _compare(args.runs)
    if args.runs:
        raise UsageError(f"unexpected arguments after the scenario: {' '.join(args.runs)}")
    scenario = load_scenario(
        args.scenario, households=args.households, days=args.days, seed=args.seed
    )
    out: Path = args.out or Path("sim-runs") / f"{scenario.name}-{args.engine}-s{scenario.seed}"
    if args.chain is not None and args.engine != "inproc":
        raise UsageError(
            "--chain: only the inproc engine (a daemon run's chain: gridnode chain export)"
        )
    if args.engine == "daemons" or args.policies is not None:
        from gridnode.launcher import launcher_enabled

        launcher_enabled()  # a bad $GRIDNODE_LAUNCHER is refused before anything is written
    if args.policies is not None:
        return _run_policies(scenario, args, out)
    if args.engine == "inproc":
        result, trades = _run_inproc(scenario, out, args.chain)
        offset_s = None  # slots are numbered on the data's calendar
    else:
        result, trades, offset_s = _run_daemons(scenario, out, args.speedup)
    report = _write(result, out, trades, offset_s)
    c = result.community()
    state = "INTERRUPTED after" if result.interrupted else "done:"
    print(
        f"{state} {result.slots_done}/{result.slots_planned} slots, {c['households']} households, "
        f"{result.blocks_committed} blocks in {result.wall_seconds:.1f} s; "
        f"community savings {c['savings_micro'] / 1e6:,.2f} ({c['savings_pct']:.1f} %), "
        f"ledger agreement {result.ledger_agreement}, conservation {result.conservation_ok}"
    )
    print(f"report: {report}")
    return 130 if result.interrupted else 0


def _run_policies(scenario: Any, args: argparse.Namespace, out: Path) -> int:
    """Run ``scenario`` once per policy of ``--policies`` and compare them (module docstring)."""
    from sims.economics import comparison, table
    from sims.scenario import POLICIES

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if not policies or bad or len(set(policies)) != len(policies):
        raise UsageError(
            f"--policies: expected distinct names among {', '.join(POLICIES)}; "
            f"found {args.policies!r}"
        )
    results: dict[str, SimResult] = {}
    runs: dict[str, list[dict[str, Any]] | None] = {}
    offsets: dict[str, int | None] = {}
    for policy in policies:
        sc = dataclasses.replace(scenario, policy=policy)
        print(f"policy {policy}: running", file=sys.stderr)
        if args.engine == "inproc":
            results[policy], runs[policy] = _run_inproc(sc, out / policy)
            offsets[policy] = None
        else:
            results[policy], runs[policy], offsets[policy] = _run_daemons(
                sc, out / policy, args.speedup
            )
        if results[policy].interrupted:
            break
    comp = comparison(results)
    for policy, result in results.items():
        result.policies = comp
        _write(result, out / policy, runs[policy], offsets[policy])
    (out / "economics.json").write_text(json.dumps(comp, indent=2) + "\n", encoding="utf-8")
    print(f"{scenario.name}, {args.engine} engine, {len(scenario.household_specs())} households, "
          f"{scenario.slots} slots of {scenario.slot_seconds // 60} min:")  # fmt: skip
    print(table(comp))
    print(f"runs and reports: {out}/POLICY/, the table: {out / 'economics.json'}")
    return 130 if any(r.interrupted for r in results.values()) else 0


def _compare(runs: list[str]) -> int:
    cargs = _compare_parser().parse_args(runs)
    code: int = cargs.func(cargs)
    return code


def _bar(total: int) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # no tqdm stubs in the venv

    return tqdm(total=total, unit="slot", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def _run_inproc(scenario: Any, out: Path, chain: Path | None = None) -> tuple[SimResult, None]:
    """The run; its trades are streamed into ``out``'s trade table as the engine collects them
    (:class:`sims.report.TradeTable`: bounded memory however many trades), hence ``None``."""
    from forecasting.data import SHIPPED_UTC_OFFSET_S
    from gridnode.chainfile import write_chain_file
    from gridnode.localtime import format_offset
    from sims.inproc import Progress, run_inproc
    from sims.report import TradeTable

    def chain_out(genesis: Any, store: Any) -> None:
        if chain is not None:
            chain.parent.mkdir(parents=True, exist_ok=True)
            end = write_chain_file(chain, genesis, store)
            print(f"chain: {chain} ({end.blocks} blocks)", file=sys.stderr)

    stop = _StopOnSigint()
    with stop, TradeTable(out) as trades:
        bar = _bar(scenario.slots)

        def progress(p: Progress) -> None:
            local = dt.datetime.fromtimestamp(p.sim_s + SHIPPED_UTC_OFFSET_S, dt.UTC)
            bar.set_postfix_str(
                f"sim {local:%Y-%m-%d %H:%M} {format_offset(SHIPPED_UTC_OFFSET_S)}, "
                f"height {p.height}",
                refresh=False,
            )
            bar.update(p.slots_done - bar.n)

        try:
            result = run_inproc(
                scenario,
                progress=progress,
                should_stop=stop.requested,
                trades_out=trades,
                chain_out=chain_out,
            )
        finally:
            bar.close()
    return result, None


class _StopOnSigint:
    """First Ctrl-C: stop at the next slot boundary (the run is then collected and written).
    A second Ctrl-C interrupts at once (the engine still returns what it can)."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self._flag

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        if self._flag:
            raise KeyboardInterrupt
        self._flag = True
        print("\nstopping at the next slot boundary (Ctrl-C again to stop now)", file=sys.stderr)

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run_daemons(
    scenario: Any, out: Path, speedup: float
) -> tuple[SimResult, list[dict[str, Any]], int]:
    """The run, its trades, and the offset that turns its node times into the data's local time
    (the daemons' replay meters map the genesis time to ``start_day`` at ``start_hour``)."""
    engine = importlib.import_module("sims.daemon_engine")
    bar = _bar(scenario.slots)

    def progress(done: int, planned: int) -> None:
        bar.total = planned
        bar.update(done - bar.n)

    try:
        run_ = engine.run_daemons(scenario, out / "daemons", speedup=speedup, progress=progress)
    finally:
        bar.close()
    result: SimResult = run_.result
    trades: list[dict[str, Any]] = run_.trades
    if run_.local_offset_s is not None:  # real homes: their meter files' own clock
        return result, trades, int(run_.local_offset_s)
    from forecasting.data import SHIPPED_UTC_OFFSET_S
    from gridnode.config import load_genesis
    from gridnode.meter import shipped_replay

    genesis = load_genesis(run_.root / "node0" / "genesis.toml")
    meter = shipped_replay(
        node_anchor_s=genesis.genesis_time_ms // 1000,
        day=scenario.start_day,
        hour=scenario.start_hour,
    )
    offset_s = SHIPPED_UTC_OFFSET_S + meter.data_anchor_s - meter.node_anchor_s
    return result, trades, offset_s


def _write(
    result: SimResult, out: Path, trades: list[dict[str, Any]] | None, offset_s: int | None
) -> Path:
    """The outputs and the report (times in the data's local time: ``offset_s`` from the slots'
    unix times, or the shipped data's own offset; ``trades``: ``None`` when already streamed)."""
    report = importlib.import_module("sims.report")
    extra = {} if offset_s is None else {"utc_offset_s": offset_s}
    written: Path = report.write_outputs(result, out, trades=trades, **extra)
    return written
