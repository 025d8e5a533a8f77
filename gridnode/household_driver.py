"""The daemon's household driver: its meter, its agent, its submissions, on trio's clock.

The household's logic is the pure :class:`~gridnode.household.agent.HouseholdAgent`; this module is
the daemon's I/O around it (the in-process simulation engine drives the same agent). Rules:

* **When**: one step just after every slot boundary of the community clock
  (:data:`~gridnode.household.agent.BOUNDARY_DELAY_MS` after it), timed with ``trio.sleep`` on the
  node's :class:`~gridnode.clock.NodeClock` (trio's clock), so a test drives it under
  ``trio.testing.MockClock``. A step that fails (no validator answered, or a bug) is logged and the
  next boundary comes anyway: bidding must never stop the node's consensus work.
* **A step**: ask the agent what it needs (``needs``), read the meter's natural net of each
  delivered slot (:class:`~gridnode.meter.Meter`) and this household's committed contract for it
  (the node's ledger state; 0 if not cleared there) and the ledger's clearing prices (the agent's
  expected price), forecast the quoted slots from the meter history (one
  :class:`~gridnode.household.forecast.SlotForecaster` row: ``bidding.model``, by default
  profile-qr, told the household's site; fitted once a day on the year before the day began, so
  the fit is off the other slots' path; perfect foresight reads the meter ahead), hand all of it
  to the agent, sign what it returns as **one transaction** (a
  :class:`~gridnode.core.ledger.SignedBundle`: the reading of the slot just delivered and the
  orders, each with the node's next nonce, signed once; a reading re-sent from an earlier step
  goes alone, as a ``gn.tx.reading``) and submit everything of the step in **one** acknowledged
  request (``…/submit-batch/1.0.0``; a validator takes them into its own mempool). A bundle is
  admitted all or nothing: when it is refused for one of its orders (e.g. ``full``, or a slot
  that closed), its reading is sent again alone at once
  (:data:`~gridnode.core.ledger.READING_REFUSALS` says which refusals are the reading's own).
  The readings no validator answered go back to the agent and are re-sent unchanged at the next
  step: all of the step's when the step's request got no answer, only the bundle's when its
  reading sent alone got none (the others were answered: sent again they would only be refused
  as duplicates).
* **The page's history**: each delivered slot's natural net, signed reading, PV and load (where
  the meter measures them apart) and battery go to the node (``record_metered``) before the
  submission, so a slot whose reading could not be sent is still shown.
* **Log lines** (logger ``gridnode``): ``battery slot N: …`` at each dispatch, ``reading slot N: …``
  and ``quoted slot N: SIDE E Wh in K steps (result)`` after the submission's answer. The
  real-daemon simulation engine reads the ``quoted slot`` lines (their time stamps).
* **Provenance** (``training.mode = "federated"``, ``docs/federated.md``): once the node adopted a
  committed community model (:meth:`HouseholdDriver.use_community`), the household bids with the
  personal blend :class:`~forecasting.federated.FederatedForecaster` (that model + its local
  ``bidding.model``) and every order forecast by it carries the model's hash (signed, on the
  ledger); an order forecast otherwise carries none ("local model"). What made each order — the
  model hash or the local model's name, the slot's P10/P50/P90 and the policy with its expected
  clearing price — is kept in the node's local record (:attr:`HouseholdDriver.provenance`, the
  newest :data:`PROVENANCE_KEPT`, appended to ``DATA/provenance.jsonl``): ``gridnode explain``
  and ``/api/provenance`` read it.
* Only a member of the community reads and quotes; bidding off (``bidding.enabled = false``) still
  sends the meter readings.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from gridnode.clock import NodeClock
from gridnode.config import Config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    READING_REFUSALS,
    BundleReading,
    Genesis,
    SignedBundle,
    Tx,
    sign_reading,
)
from gridnode.files import json_lines
from gridnode.history import MeteredSlot
from gridnode.household.agent import (
    BOUNDARY_DELAY_MS,
    QUOTED_SLOTS,
    Actions,
    AgentConfig,
    Bidding,
    HouseholdAgent,
    Quote,
    Reading,
)
from gridnode.household.battery import Battery, battery_from_sizes, contract_wh
from gridnode.household.forecast import (
    Site,
    SlotForecast,
    SlotForecaster,
    bidding_forecaster,
    federated_forecaster,
    foresight,
)
from gridnode.meter import Meter
from gridnode.node import NodeRuntime
from gridnode.status import SubmitResult
from market.errors import InvalidInput, NetworkError, UsageError
from market.orders import Order
from market.slots import SlotClock

if TYPE_CHECKING:
    from forecasting.federated import CommunityModel

__all__ = [
    "PROVENANCE_FILE",
    "HouseholdDriver",
    "HouseholdNode",
    "battery_of",
    "forecaster_of",
    "foreseen",
    "read_provenance",
]

log = logging.getLogger("gridnode")

#: the local record of what made each order, in the node's data directory (JSON lines)
PROVENANCE_FILE: Final = "provenance.jsonl"
#: orders the local record keeps in memory
PROVENANCE_KEPT: Final = 4096


def read_provenance(data_dir: Path, order_id: str) -> dict[str, Any] | None:
    """The local record of ``order_id`` in ``data_dir``'s :data:`PROVENANCE_FILE` (the newest
    line for it), or ``None``. A damaged line is skipped."""
    found = None
    for row in json_lines(data_dir / PROVENANCE_FILE, containing=order_id):
        if row.get("order_id") == order_id:
            found = row
    return found


class HouseholdNode(Protocol):
    """What the driver uses of its node (:class:`gridnode.daemon.DaemonNode`)."""

    key: KeyPair
    genesis: Genesis
    clock: NodeClock
    runtime: NodeRuntime
    started_ms: int  # the node clock when the node started

    def sign_bundle(
        self, reading: BundleReading | None, orders: Sequence[Order], *, model: bytes | None = None
    ) -> SignedBundle:
        """``reading`` and ``orders`` as this household's one transaction, each order with its
        next nonce, signed once (``model``: the committed community model that produced them)."""
        ...

    async def submit_batch(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """One acknowledged request; :class:`NetworkError` when no validator answered."""
        ...

    def record_submission(self, order: Order, at_ms: int, result: SubmitResult) -> None:
        """Keep a submitted order and its answer for ``/api/submissions``."""
        ...

    def record_metered(self, metered: MeteredSlot) -> None:
        """Keep what the meter and agent saw of a delivered slot (the status page's history)."""
        ...


def battery_of(config: Config) -> Battery | None:
    """The household's battery from ``household.battery_kwh`` / ``battery_kw`` (rounded to Wh / W;
    :mod:`gridnode.household.battery`'s default 95 % each way, no reserve), or ``None``."""
    return battery_from_sizes(config.battery_kwh, config.battery_kw)


def site_of(config: Config) -> Site:
    """The household's site as its forecasters take it (``household.latitude``/``longitude``/
    ``holiday_country``/``holiday_subdiv``)."""
    return Site(config.latitude, config.longitude, config.holiday_country, config.holiday_subdiv)


def forecaster_of(config: Config) -> SlotForecaster:
    """The forecaster the household bids with: ``bidding.model`` for its :func:`site_of`."""
    return bidding_forecaster(config.bidding_model, site=site_of(config))


def foreseen(meter: Meter, slots: Sequence[int], clock: SlotClock) -> SlotForecast:
    """Perfect foresight (``bidding.policy``): each slot's net as the meter will measure it (a
    replay meter knows; the config allows this policy only with one)."""
    return foresight((s, meter.slot_net_wh(s, clock)) for s in slots)


class HouseholdDriver:
    """Drives one household's agent for a daemon node (see the module rules)."""

    def __init__(
        self,
        node: HouseholdNode,
        meter: Meter,
        config: Config,
        *,
        forecaster: SlotForecaster | None = None,
    ) -> None:
        self.node = node
        self.meter = meter
        self.member = node.key.public_hex in node.genesis.members
        clock = node.genesis.clock
        self.agent = HouseholdAgent(
            AgentConfig.of_member(
                node.genesis,
                node.key.public_hex,
                bidding=Bidding(config.bidding_policy),
                battery=battery_of(config),
                # the slot the node started in (its driver is built once the daemon serves)
                first_slot=clock.slot_at(node.started_ms // 1000),
                quoted_slots=QUOTED_SLOTS if config.bidding_enabled else 0,
            )
        )
        self.forecaster = forecaster if forecaster is not None else forecaster_of(config)
        self.config = config
        #: the committed community model the forecaster blends in (``None``: local only)
        self.model_hash: bytes | None = None
        #: order id -> what made it (module rules)
        self.provenance: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: the last forecast quoted from: ``(slot, P10, P50, P90)`` Wh (the status page shows it)
        self.forecast: tuple[tuple[int, int, int, int], ...] = ()

    def use_community(self, model: CommunityModel) -> None:
        """Bid from now on with ``model`` blended with the household's local model (module
        rules): the federation driver calls this once the model is committed and checked."""
        self.forecaster = federated_forecaster(
            model, self.config.bidding_model, site=site_of(self.config)
        )
        self.model_hash = model.hash

    def _record(self, order: Order, model: bytes | None, forecaster: str, q: Any) -> None:
        row = {
            "order_id": order.order_id,
            "slot": order.slot,
            "model": None if model is None else model.hex(),
            "forecaster": forecaster,
            "forecast_wh": {
                "p10": q.forecast.p10_wh,
                "p50": q.forecast.p50_wh,
                "p90": q.forecast.p90_wh,
            },
            "policy": {
                "name": self.agent.config.bidding.value,
                "expected_price_micro_per_kwh": q.expected_price_micro_per_kwh,
            },
        }
        self.provenance[order.order_id] = row
        while len(self.provenance) > PROVENANCE_KEPT:
            self.provenance.popitem(last=False)
        try:
            with (self.config.data_dir / PROVENANCE_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.warning("provenance record not written: %s", exc)

    async def run(self, on_step: Callable[[], None]) -> None:
        """Step after every slot boundary until cancelled; ``on_step`` after each step."""
        if not self.member:
            log.warning("this household is not a member of the community: no readings, no orders")
            return
        node, clock = self.node, self.node.genesis.clock
        while True:
            now_s = node.clock.now_ms() // 1000
            try:
                await self.step(now_s)
            except NetworkError as exc:  # no validator answered: the readings go again next slot
                log.warning("household step: %s", exc)
            except Exception:  # a bug in bidding must never stop the node's consensus work
                log.exception("household step failed")
            on_step()
            next_ms = (clock.slot_at(now_s) + 1) * clock.slot_seconds * 1000 + BOUNDARY_DELAY_MS
            await trio.sleep(node.clock.seconds_until(next_ms))

    async def step(self, now_s: int) -> Actions:
        """One boundary at community time ``now_s``: what the agent did (also when the submission
        failed: then :class:`NetworkError` is raised after the unanswered readings went back to the
        agent)."""
        node, agent = self.node, self.agent
        clock = node.genesis.clock
        needs = agent.needs(now_s)
        state = node.runtime.state
        trades = state.trades
        forecast = self._forecast(now_s, needs.quote)
        actions = agent.on_slot_boundary(
            now_s,
            natural_wh={s: self.meter.slot_net_wh(s, clock) for s in needs.read},
            contract_wh={
                s: contract_wh(trades.get(s, ()), node.key.public_hex) for s in needs.read
            },
            forecast=forecast,
            clearing_prices=state.clearing_prices,
        )
        for r in actions.readings:
            if r.slot not in needs.read:  # a re-sent one
                continue
            d = r.dispatch
            if d is not None:
                log.info(
                    "battery slot %d: charged %d Wh, discharged %d Wh, SoC %d Wh",
                    r.slot, d.charged_wh, d.discharged_wh, d.soc_wh,
                )  # fmt: skip
            split = self.meter.slot_pv_load_wh(r.slot, clock)
            node.record_metered(
                MeteredSlot(
                    r.slot,
                    natural_wh=r.natural_net_wh,
                    reading_wh=r.net_wh,
                    pv_wh=None if split is None else split[0],
                    load_wh=None if split is None else split[1],
                    charged_wh=0 if d is None else d.charged_wh,
                    discharged_wh=0 if d is None else d.discharged_wh,
                    soc_wh=None if d is None else d.soc_wh,
                )
            )
        if forecast is not None:
            self.forecast = tuple(
                (q.slot, q.forecast.p10_wh, q.forecast.p50_wh, q.forecast.p90_wh)
                for q in actions.quotes
            )
        # the newest reading (the slot just delivered) rides in the bundle; re-sent ones go alone
        newest = max(actions.readings, key=lambda r: r.slot, default=None)
        alone = [r for r in actions.readings if r is not newest]
        lone: list[Tx] = [
            sign_reading(node.key, node.genesis, slot=r.slot, net_wh=r.net_wh) for r in alone
        ]
        federated = forecast is not None and forecast.model == "federated"
        model = self.model_hash if federated else None
        quotes = [q for q in actions.quotes if q.order is not None]
        bundle = None
        if newest is not None or quotes:
            bundle = node.sign_bundle(
                None if newest is None else BundleReading(newest.slot, newest.net_wh),
                [q.order for q in quotes if q.order is not None],
                model=model,
            )
            for q, order in zip(quotes, bundle.orders, strict=True):
                self._record(order, model, q.model, q)
        if bundle is None:
            return actions
        at_ms = node.clock.now_ms()
        try:
            results = await node.submit_batch([*lone, bundle])
        except NetworkError:  # nothing of the step was answered: every reading goes again
            agent.readings_lost(actions.readings)
            raise
        result = results.pop(len(lone))  # the bundle's answer; the rest are the lone readings'
        if (
            not result.accepted
            and newest is not None
            and bundle.orders
            and result.reason not in READING_REFUSALS
        ):  # refused for an order: the reading goes alone (module rules)
            only = sign_reading(node.key, node.genesis, slot=newest.slot, net_wh=newest.net_wh)
            try:
                results += await node.submit_batch([only])
            except NetworkError:  # the lone readings were answered: only this one goes again
                agent.readings_lost([newest])
                self._log_answers(zip(alone, results, strict=False))
                self._log_quotes(quotes, bundle, at_ms, result)
                raise
            alone.append(newest)
        answers = list(zip(alone, results, strict=False))
        if newest is not None and newest not in alone:
            answers.append((newest, result))
        self._log_answers(answers)
        self._log_quotes(quotes, bundle, at_ms, result)
        return actions

    @staticmethod
    def _log_answers(answers: Iterable[tuple[Reading, SubmitResult]]) -> None:
        for r, answer in sorted(answers, key=lambda ra: ra[0].slot):
            log.info("reading slot %d: %+d Wh (%s)", r.slot, r.net_wh, answer.reason or "accepted")

    def _log_quotes(
        self, quotes: Sequence[Quote], bundle: SignedBundle, at_ms: int, result: SubmitResult
    ) -> None:
        """Record and log the bundle's orders with its answer ``result``."""
        for q, order in zip(quotes, bundle.orders, strict=True):
            self.node.record_submission(order, at_ms, result)
            log.info(
                "quoted slot %d: %s %d Wh in %d steps (%s)",
                q.slot, order.side.value, order.energy_wh, len(order.steps),
                result.reason or "accepted",
            )  # fmt: skip

    def _forecast(self, now_s: int, slots: Sequence[int]) -> SlotForecast | None:
        if not slots:
            return None
        clock = self.node.genesis.clock
        if self.agent.config.bidding is Bidding.PERFECT_FORESIGHT:
            return foreseen(self.meter, slots, clock)
        try:
            history = self.meter.history_before(now_s, days=self.forecaster.history_days)
            return self.forecaster.forecast(history, now_s=now_s, slots=slots, clock=clock)[0]
        except (InvalidInput, UsageError) as exc:
            log.warning("no forecast: %s", exc)
            return None
