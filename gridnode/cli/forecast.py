"""``gridnode forecast``: backtests, policy evaluation and order planning on real meter data.

Subcommands (each has ``--help``):

* ``backtest`` — rolling-origin backtest of forecasters; a table on stdout, JSON with ``--json``.
* ``evaluate`` — compare bidding policies on a community built from real data, settled by the
  market's own rules; a table on stdout, JSON with ``--json``.
* ``plan`` — the orders the automatic bidder would place at ``--now`` from a meter history (JSON).

Without ``--history`` the shipped real data set is used (UCI household load + NREL PVDAQ system 50
PV, see ``forecasting/data/README.md``). Dates are local calendar dates of the history's site: for a
file, at the UTC offset its timestamps carry (the smallest one, i.e. standard time) unless
``--utc-offset-hours`` says otherwise. Every failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forecasting.backtest import backtest, format_table
from forecasting.data import (
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    SHIPPED_UTC_OFFSET_S,
    load_meter_history,
    load_shipped,
)
from forecasting.evaluate import POLICIES, community_from, evaluate_policies
from forecasting.models import Forecaster, min_history_days
from forecasting.policy import PolicyConfig, plan_orders
from forecasting.registry import DEFAULT_MODEL, DEFAULT_MODELS, MODEL_NAMES, build_model
from forecasting.series import SECONDS_PER_DAY, MeterHistory
from market.errors import GridnodeError, InvalidInput, UsageError
from market.orders import Order
from market.settlement import Netting, Tariff
from market.slots import SlotClock


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "forecast",
        help="forecast backtests, bidding-policy evaluation and order planning",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fsub = p.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND", required=True)

    b = fsub.add_parser(
        "backtest",
        help="rolling-origin backtest: MAE, RMSE, pinball, P10-P90 coverage, skill vs naive",
        description=(
            "Rolling-origin backtest of forecasters over [--start, --end) of a real series: one "
            "origin per day at local midnight (or every --every intervals), horizons 1..--horizon "
            "intervals, refit every --refit-days on the past only. Prints a table; --json FILE "
            "(or -) writes the full report including per-horizon MAE. With --history, --start "
            "defaults to the first day with enough history before it for every model and --end "
            "to the file's last whole day; a file too short for some of the default models "
            "backtests the others (a note names those left out and the days each needs)."
        ),
    )
    _history_args(b)
    b.add_argument(
        "--start", help="first origin date (default 2009-01-01, or the file's first usable day)"
    )
    b.add_argument("--end", help="end date, exclusive (default 2010-01-01, or the file's end)")
    b.add_argument("--horizon", type=int, help="intervals ahead (default: a day)")
    b.add_argument(
        "--every", type=int, default=None, help="intervals between origins (default: a day)"
    )
    b.add_argument("--refit-days", type=int, default=28, help="refit period (default %(default)s)")
    b.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from: {', '.join(MODEL_NAMES)} (default %(default)s)",
    )
    b.add_argument("--json", metavar="FILE", help="write the report as JSON (- for stdout)")
    b.set_defaults(func=run_backtest)

    e = fsub.add_parser(
        "evaluate",
        help="compare bidding policies by household cost, settled by the market's rules",
        description=(
            "Builds a community from one real metered household (load shifted by 7 days and PV by "
            "1 day per household, PV scaled by --pv-scales; 0 = no PV), runs each policy day by day "
            "(day-ahead forecasts, refit every 28 days), clears every slot with the market engine "
            "and settles it against the measured energy. Reports community cost against grid-only "
            "and perfect foresight."
        ),
    )
    _history_args(e)
    e.add_argument("--start", default="2009-01-01", help="first day (default %(default)s)")
    e.add_argument("--days", type=int, default=28, help="days to run (default %(default)s)")
    e.add_argument(
        "--pv-scales",
        default="1,0,1.5,0,0.7,0,1.2,0,2,0",
        help="PV scale per household (default %(default)s)",
    )
    e.add_argument("--retail", type=int, default=300_000, help="µ¤/kWh (default %(default)s)")
    e.add_argument("--feed-in", type=int, default=80_000, help="µ¤/kWh (default %(default)s)")
    e.add_argument("--netting", choices=[n.value for n in Netting], default="none")
    e.add_argument("--policies", default=",".join(POLICIES), help="default %(default)s")
    e.add_argument("--json", metavar="FILE", help="write the results as JSON (- for stdout)")
    e.set_defaults(func=run_evaluate)

    pl = fsub.add_parser(
        "plan",
        help="print the orders the automatic bidder would place now (JSON)",
        description=(
            f"Fits the default forecaster ({DEFAULT_MODEL}) on the meter history known before --now, "
            "forecasts the next --horizon intervals and prints the orders for every open slot."
        ),
    )
    _history_args(pl)
    pl.add_argument("--now", required=True, help="local date-time, e.g. 2009-06-01T00:00")
    pl.add_argument("--household", default="me", help="household id (default %(default)s)")
    pl.add_argument("--horizon", type=int, default=24, help="intervals ahead (default %(default)s)")
    pl.add_argument("--slot-seconds", type=int, default=900, help="default %(default)s")
    pl.add_argument("--gate-lead", type=int, default=300, help="seconds (default %(default)s)")
    pl.add_argument("--retail", type=int, default=300_000, help="µ¤/kWh (default %(default)s)")
    pl.add_argument("--feed-in", type=int, default=80_000, help="µ¤/kWh (default %(default)s)")
    pl.set_defaults(func=run_plan)


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--history",
        metavar="FILE",
        help="meter history CSV/Parquet (schema: docs/forecasting.md); default: shipped data set",
    )
    p.add_argument(
        "--step", type=int, help="forecast step, s (default 3600, or the file's if coarser)"
    )
    p.add_argument(
        "--utc-offset-hours",
        type=float,
        default=None,
        help="site's local standard time offset (default: -7 for the shipped data; for a file, "
        "the offset its timestamps carry, else 0)",
    )
    p.add_argument("--latitude", type=float, help="site latitude (clear-sky PV; default: shipped)")
    p.add_argument("--longitude", type=float, help="site longitude (default: shipped site's)")
    p.add_argument(
        "--holidays", metavar="COUNTRY", help="public holidays of this country (e.g. US, FR)"
    )


def _site(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """The site's coordinates: given, else the shipped site's for the shipped data, else none."""
    if args.history is None:
        return (
            SHIPPED_LATITUDE if args.latitude is None else args.latitude,
            SHIPPED_LONGITUDE if args.longitude is None else args.longitude,
        )
    if (args.latitude is None) != (args.longitude is None):
        raise UsageError("give both --latitude and --longitude, or neither")
    return args.latitude, args.longitude


def _load(args: argparse.Namespace) -> MeterHistory:
    if args.history is None:
        history = load_shipped(step_s=900)
    else:
        offset = None if args.utc_offset_hours is None else round(args.utc_offset_hours * 3600)
        history = load_meter_history(args.history, utc_offset_s=offset)
    step = args.step
    if step is None:
        step = 3600 if 3600 % history.step_s == 0 else history.step_s
    if step <= 0 or SECONDS_PER_DAY % step:
        raise UsageError(f"--step {step}: must divide a day (e.g. 900 or 3600)")
    if step % history.step_s:
        raise UsageError(
            f"--step {step}: not a multiple of the history's {history.step_s}-s intervals"
        )
    if step != history.step_s:
        start = -(-history.start_s // step) * step
        end = history.end_s - (history.end_s - start) % step
        if end - start < step:
            raise InvalidInput(reason="too_short", subject=args.history or "history",
                               expected=f"at least one {step}-s interval")  # fmt: skip
        history = history.window(start, end).resample(step)
    return history


def _offset(args: argparse.Namespace, history: MeterHistory) -> int:
    if args.utc_offset_hours is not None:
        return round(args.utc_offset_hours * 3600)
    return SHIPPED_UTC_OFFSET_S if args.history is None else history.utc_offset_s


def _local_date(unix_s: int, offset_s: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(unix_s + offset_s))


def _midnight_at_or_after(unix_s: int, offset_s: int) -> int:
    local = unix_s + offset_s
    return -(-local // SECONDS_PER_DAY) * SECONDS_PER_DAY - offset_s


def _one_line(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a subcommand so that any failure is one line (a GridnodeError as is, anything else
    named by its type): a user's file must never produce a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (GridnodeError, KeyboardInterrupt):
            raise
        except OSError as exc:
            raise InvalidInput(
                reason="unreadable", subject=str(exc.filename or args.history or ""),
                found=exc.strerror or str(exc),
            ) from exc  # fmt: skip
        except Exception as exc:  # the promise is one line, never a traceback
            detail = " ".join(str(exc).split())[:200]
            raise UsageError(f"{type(exc).__name__}: {detail}") from exc

    return run


def _local_to_utc(text: str, offset_s: int, what: str) -> int:
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            parsed = time.strptime(text, fmt)
        except ValueError:
            continue
        return calendar.timegm(parsed) - offset_s
    raise InvalidInput(reason="bad_date", subject=what, expected="YYYY-MM-DD[THH:MM]", found=text)


def _emit_json(doc: Any, target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(doc, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")


def _first_origin(history: MeterHistory, need_days: int, offset: int) -> int:
    """The first local midnight with ``need_days`` days of ``history`` before it."""
    return _midnight_at_or_after(history.start_s + need_days * SECONDS_PER_DAY, offset)


def _span(where: str, history: MeterHistory, offset: int) -> str:
    return (
        f"{where} runs {_local_date(history.start_s, offset)} -> "
        f"{_local_date(history.end_s - 1, offset)}"
    )


def _too_short(  # noqa: PLR0917 - the history, where it is from, and what it lacks
    where: str, history: MeterHistory, offset: int, need_days: int, whom: str, more: str = ""
) -> InvalidInput:
    """The refusal of a history with fewer than ``need_days`` days before a first origin and one
    to score (``whom``: the models that need them; ``more``: said after)."""
    days = (history.end_s - history.start_s) / SECONDS_PER_DAY
    return InvalidInput(
        reason="history_too_short", subject=where,
        expected=f"at least {need_days + 1} days of meter history ({need_days} before the "
        f"first origin for {whom}, 1 to score{more})",
        found=f"{days:.1f} days ({_span(where, history, offset)})",
    )  # fmt: skip


def _fits(history: MeterHistory, model: Forecaster, offset: int) -> bool:
    """Whether ``history`` holds ``model``'s minimum before a first origin and a day to score."""
    first = _first_origin(history, min_history_days(model), offset)
    return first + SECONDS_PER_DAY <= history.end_s


def _models_that_fit(
    history: MeterHistory, models: list[Forecaster], offset: int, *, where: str
) -> list[Forecaster]:
    """The default models a file is long enough for (a note on stderr names the others and what
    they need); refused when the default bidding model (:data:`DEFAULT_MODEL`, one of them) is
    not one of those (naive baselines alone would say nothing of the forecaster), naming its
    minimum."""
    fit = [m for m in models if _fits(history, m, offset)]
    if len(fit) == len(models):
        return models
    main = next(m for m in models if m.name == DEFAULT_MODEL)
    if main not in fit:
        every = max(map(min_history_days, models)) + 1
        raise _too_short(
            where, history, offset, min_history_days(main), DEFAULT_MODEL,
            f"; every default model: {every}",
        )  # fmt: skip
    days = (history.end_s - history.start_s) / SECONDS_PER_DAY
    left = ", ".join(f"{m.name} {min_history_days(m)}" for m in models if m not in fit)
    print(
        f"gridnode forecast: note: {where} holds {days:.1f} days, too few for some of the default "
        f"models; left out (days each needs before its first origin): {left}",
        file=sys.stderr,
    )
    return fit


def _backtest_span(
    args: argparse.Namespace, history: MeterHistory, models: list[Forecaster], offset: int
) -> tuple[int, int]:
    """``[start, end)`` of the backtest's origins: given, or from the history's span; refuses a
    start with too little history before it, naming the minimum and a usable start."""
    need_days = max(min_history_days(m) for m in models)
    where = args.history or "the shipped data"
    first_ok = _first_origin(history, need_days, offset)
    if args.history is None:
        start_text, end_text = args.start or "2009-01-01", args.end or "2010-01-01"
        start = _local_to_utc(start_text, offset, "--start")
        end = _local_to_utc(end_text, offset, "--end")
    else:
        start = first_ok if args.start is None else _local_to_utc(args.start, offset, "--start")
        end = history.end_s if args.end is None else _local_to_utc(args.end, offset, "--end")
    end = min(end, history.end_s)
    span = _span(where, history, offset)
    if first_ok + SECONDS_PER_DAY > history.end_s:
        raise _too_short(where, history, offset, need_days, ", ".join(m.name for m in models))
    if start < first_ok:
        raise InvalidInput(
            reason="history_too_short", subject="--start",
            expected=f"{need_days} days of history before the first origin: use --start "
            f"{_local_date(first_ok, offset)} or later ({span})",
            found=f"{max(0.0, (start - history.start_s) / SECONDS_PER_DAY):.1f} days before "
            f"{_local_date(start, offset)}",
        )  # fmt: skip
    start += (history.start_s - start) % history.step_s  # onto the history's grid
    horizon_s = (history.steps_per_day if args.horizon is None else args.horizon) * history.step_s
    if end - start < horizon_s:
        raise UsageError(
            f"no forecast fits between {_local_date(start, offset)} and "
            f"{_local_date(end - 1, offset)} (one needs {horizon_s / 3600:g} h; {span})"
        )
    return start, end


@_one_line
def run_backtest(args: argparse.Namespace) -> int:
    history = _load(args)
    offset = _offset(args, history)
    if offset != history.utc_offset_s:
        history = MeterHistory(
            history.start_s, history.step_s, history.net_w, history.pv_w, history.load_w, offset
        )
    latitude, longitude = _site(args)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.models == ",".join(DEFAULT_MODELS) and (latitude is None or not history.has_components):
        names = [n for n in names if n != "components"]  # needs coordinates and PV + load
    horizon = history.steps_per_day if args.horizon is None else args.horizon
    if not 1 <= horizon <= history.steps_per_day:
        raise UsageError(f"--horizon must be 1..{history.steps_per_day} intervals")
    models = [
        build_model(n, horizon=horizon, latitude=latitude, longitude=longitude,
                    holiday_country=args.holidays)
        for n in names
    ]  # fmt: skip
    if "components" in names and not history.has_components:
        raise UsageError("the components model needs a history with pv_w and load_w")
    if args.history is not None and args.start is None and args.models == ",".join(DEFAULT_MODELS):
        models = _models_that_fit(history, models, offset, where=args.history)
    start, end = _backtest_span(args, history, models, offset)
    report = backtest(
        history,
        models,
        start_s=start,
        end_s=end,
        horizon=horizon,
        origin_every_steps=args.every,
        refit_every_days=args.refit_days,
        clock=time.perf_counter,
    )
    if args.json != "-":
        print(format_table(report))
    _emit_json(report.to_json(), args.json)
    return 0


@_one_line
def run_evaluate(args: argparse.Namespace) -> int:
    history = _load(args)
    if not history.has_components:
        raise UsageError("evaluate needs a history with pv_w and load_w to build a community")
    scales = [float(x) for x in args.pv_scales.split(",") if x.strip()]
    community = community_from(history, scales)
    tariff = Tariff(retail_micro_per_kwh=args.retail, feed_in_micro_per_kwh=args.feed_in)
    results = evaluate_policies(
        community,
        start_s=_local_to_utc(args.start, _offset(args, history), "--start"),
        days=args.days,
        tariff=tariff,
        policies=[p.strip() for p in args.policies.split(",") if p.strip()],
        netting=Netting(args.netting),
    )
    if args.json != "-":
        grid = results[0].grid_only_bill_micro
        print(f"{len(scales)} households, {args.days} days, retail {args.retail}, feed-in "
              f"{args.feed_in} µ¤/kWh, netting {args.netting}")  # fmt: skip
        print(f"{'policy':<20}{'cost ¤':>12}{'saved ¤':>10}{'saved':>8}{'traded kWh':>12}")
        for r in results:
            pct = 100 * r.savings_micro / grid if grid else 0.0
            print(
                f"{r.policy:<20}{r.community_bill_micro / 1e6:>12.2f}{r.savings_micro / 1e6:>10.2f}"
                f"{pct:>7.2f}%{r.traded_wh / 1000:>12.1f}"
            )
    _emit_json([r.to_json() for r in results], args.json)
    return 0


def _order_json(order: Order) -> dict[str, Any]:
    """An order in the JSON book format of ``docs/clear.md``, plus its slot."""
    return {
        "id": order.order_id,
        "household": order.household,
        "side": order.side.value,
        "slot": order.slot,
        "nonce": order.nonce,
        "steps": [{"price": s.price_micro_per_kwh, "energy_wh": s.energy_wh} for s in order.steps],
    }


@_one_line
def run_plan(args: argparse.Namespace) -> int:
    history = _load(args)
    now = _local_to_utc(args.now, _offset(args, history), "--now")
    known_until = now - now % history.step_s
    past = history.until(known_until).select([0])
    latitude, longitude = _site(args)
    model = build_model(
        DEFAULT_MODEL, latitude=latitude, longitude=longitude, holiday_country=args.holidays
    )
    fitted = model.fit(past)
    orders = plan_orders(
        past,
        fitted,
        now=now,
        clock=SlotClock(slot_seconds=args.slot_seconds, gate_lead_seconds=args.gate_lead),
        config=PolicyConfig(args.feed_in, args.retail),
        household=args.household,
        horizon=args.horizon,
    )
    doc = {"now": now, "orders": [_order_json(o) for o in orders]}
    print(json.dumps(doc, indent=2))
    return 0
