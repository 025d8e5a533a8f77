"""The daemon's start-up and shutdown: the store, the host and the node on the trio thread, the API
on the asyncio loop, signals and fatal errors.

Rules of this module (``docs/daemon.md``):

* :func:`run_daemon` (``gridnode run``) serves until SIGINT/SIGTERM (exit 0) or a fatal error
  (exit 1). Start-up refusals raise :class:`UsageError` before anything is written (the CLI prints
  one line and exits 2; :mod:`gridnode.startup` lists what is checked).
* :func:`open_daemon_node` opens the store and the host on the trio thread, runs the node and closes
  everything on exit. After start, an error the node cannot go on from (its store failed, a
  committed block broke a rule, any exception out of its tasks, its thread ending) cancels the
  node's tasks and goes to ``on_fatal``.
* The API (asyncio) reaches the node only through :class:`BridgeHandle`: the latest immutable
  snapshot, and commands awaited over the bridge onto the trio thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from gridnode.api import make_app, start_api
from gridnode.bills import ProofKeeper
from gridnode.clock import NodeClock
from gridnode.config import CONFIG_NAME, Config, DirLock, write_atomic
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from gridnode.daemon.node import DaemonNode, raise_fatal
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host
from gridnode.node import LedgerHalted
from gridnode.startup import (
    LIVE_SOURCES,
    FatalLatch,
    Plan,
    chain_refusal,
    check_chain,
    check_listening,
    describe,
    open_node_store,
    root_cause,
    settle_after_start,
    setup_logging,
    store_binding,
    tune_malloc,
)
from gridnode.status import BlockInfo, Snapshot, SubmitResult
from gridnode.store import NodeStore, bind
from market.errors import GridnodeError, InvalidInput, UsageError
from market.orders import Order

if TYPE_CHECKING:
    from gridnode.meter import Meter

__all__ = ["BridgeHandle", "open_daemon_node", "run_daemon"]

log = logging.getLogger("gridnode")


class BridgeHandle:
    """The API's :class:`~gridnode.status.NodeHandle`: snapshot reads and commands over the bridge."""

    def __init__(self, bridge: TrioBridge, node: DaemonNode) -> None:
        self._bridge = bridge
        self._node = node

    def snapshot(self) -> Snapshot:
        snap = self._node.latest
        return replace(snap, now_ms=self._node.clock.now_ms())

    async def place_order(self, order: Order) -> SubmitResult:
        return await self._bridge.call(self._node.place_order, order)

    async def cancel_order(self, slot: int) -> SubmitResult:
        return await self._bridge.call(self._node.cancel_order, slot)

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return self._node.blocks(from_height, limit)

    def provenance(self, order_id: str) -> dict[str, Any] | None:
        """This node's record of what made ``order_id`` (its household driver's), or ``None``."""
        household = self._node.household
        if household is None:
            return None
        found = household.provenance.get(order_id)
        if found is None:
            from gridnode.household_driver import read_provenance  # noqa: PLC0415 - a household's

            found = read_provenance(self._node.config.data_dir, order_id)
        return found

    @property
    def proofs(self) -> ProofKeeper:
        """Bill proofs for ``/api/proof`` (read from the API's thread: see gridnode/bills.py)."""
        return self._node.proofs


def _build_node(
    *,
    config: Config,
    genesis: Genesis,
    key: KeyPair,
    store: NodeStore,
    net: NetHost,
    clock: NodeClock,
    meter: Meter | None,
) -> DaemonNode:
    """The node over ``store``, which must hold a chain that replays on ``genesis`` up to its head
    (:func:`gridnode.startup.check_chain`); a store made before bindings existed is bound now."""
    try:
        node = DaemonNode(
            config=config, genesis=genesis, key=key, store=store, net=net, clock=clock, meter=meter
        )
    except (InvalidInput, LedgerHalted) as exc:  # a stored block the ledger refuses on replay
        raise chain_refusal(config, store, f"it does not replay ({exc})") from None
    check_chain(config, store, node.runtime.state)
    bind(store, store_binding(genesis))
    return node


@asynccontextmanager
async def open_daemon_node(
    config: Config,
    genesis: Genesis,
    key: KeyPair,
    *,
    meter: Meter | None = None,
    on_fatal: Callable[[BaseException], None] = raise_fatal,
    household_gate: trio.Event | None = None,
) -> AsyncIterator[DaemonNode]:
    """On the trio thread: open the store and the host, run the node, close everything on exit.

    ``household_gate``: the node builds and runs its household driver (a meter's) once it is set
    (``None``: at once); :func:`run_daemon` sets it once the daemon serves.

    Start-up refusals are :class:`UsageError` (one line each, :mod:`gridnode.startup`). After
    start, an error the node cannot go on from (its store failed, a committed block broke a rule,
    any exception out of its tasks) cancels the node's tasks and goes to ``on_fatal``.
    """
    clock = NodeClock.start(epoch_ms=genesis.genesis_time_ms, speedup=float(genesis.clock_speedup))
    work = trio.CancelScope()  # the node's tasks; cancelled on a fatal error

    def halt(exc: BaseException) -> None:
        work.cancel()
        on_fatal(exc)

    # the network settings are checked before the store is opened: a refusal changes nothing
    try:
        net_config = NetConfig(
            community=genesis.community_id,
            listen_addrs=config.listen,
            bootstrap=config.bootstrap,
            mdns=config.mdns,
            gossip_degree_high=max(64, len(genesis.members) + len(genesis.validators)),
        )
    except UsageError as exc:  # the addresses come from the config file: name it, as preflight does
        raise UsageError(f"{config.dir / CONFIG_NAME}: [network] {exc}") from None
    store = open_node_store(config, genesis, on_failure=halt)
    try:
        async with open_net_host(key, net_config) as net:
            check_listening(config, net.addrs)
            if meter is None and config.meter_source in LIVE_SOURCES:  # stamped on the node clock
                from gridnode.meters import open_live_meter  # noqa: PLC0415 - a live meter's only

                meter = open_live_meter(
                    config, slot_seconds=genesis.slot_seconds, now_ms=clock.now_ms
                )
            node = _build_node(
                config=config, genesis=genesis, key=key, store=store, net=net, clock=clock,
                meter=meter,
            )  # fmt: skip
            node.on_fatal = halt
            node.household_gate = household_gate
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_run_node, node, work, halt)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        store.close()


async def _run_node(
    node: DaemonNode, work: trio.CancelScope, halt: Callable[[BaseException], None]
) -> None:
    with work:
        try:
            await node.run()
        except BaseException as exc:  # incl. trio's exception groups: any end of the node is fatal
            if not isinstance(root_cause(exc), trio.Cancelled):
                halt(exc)
            else:
                raise


async def _watch(bridge: TrioBridge, fatal: FatalLatch) -> None:
    """The node's thread must outlive the daemon's wait: if it ends, that is fatal too (the API
    would otherwise serve its last snapshot for ever)."""
    while bridge.running:
        await asyncio.sleep(1.0)
    fatal.report(RuntimeError("the node's trio thread stopped unexpectedly"))


def _settle_household() -> None:
    """A household's :func:`~gridnode.startup.settle_after_start`, once its forecaster fitted:
    first the process stops keeping profile-qr's fit features for a refit (its one household is
    refitted once a day, where the memo saved ≈ 3 ms of a ≈ 45 ms refit and held ≈ 2 MB for it;
    the fits are bit for bit the same: :func:`forecasting.profile_qr.keep_fit_features`)."""
    from forecasting.profile_qr import keep_fit_features  # noqa: PLC0415 - loaded by the driver

    keep_fit_features(0)
    settle_after_start()


async def run_daemon(plan: Plan, *, ready_file: Path | None = None) -> int:
    """``gridnode run``: serve until SIGINT/SIGTERM (exit 0) or a fatal error (exit 1).

    ``plan`` is :func:`gridnode.startup.preflight`'s. Start-up refusals raise :class:`UsageError`
    before anything is written (the CLI prints one line and exits 2; :mod:`gridnode.startup` lists
    what is checked).
    """
    config, key, genesis, meter = plan.config, plan.key, plan.genesis, plan.meter
    if meter is not None or config.meter_source in LIVE_SOURCES:  # a household driver will run
        tune_malloc()
    setup_logging(config.log_level)
    lock = DirLock(config.dir).acquire()
    if config.holiday_country is not None:  # its forecaster reads the calendar file the config
        from gridnode import holidaycache  # noqa: PLC0415 - check made: the package stays out

        holidaycache.install(config.data_dir)  # after the refusals: it writes the file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    fatal = FatalLatch(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = TrioBridge().start()
    gate = trio.Event()  # the household driver starts once the daemon serves (docs/daemon.md)
    live = config.meter_source in LIVE_SOURCES  # gridnode.meters is imported only for one
    if live:
        from gridnode.meters import start_meter_reader, stop_meter_reader  # noqa: PLC0415

    api = None
    reader = None
    node: DaemonNode | None = None
    code = 0
    try:
        try:
            node = await bridge.enter(
                lambda: open_daemon_node(
                    config, genesis, key, meter=meter, on_fatal=fatal.report, household_gate=gate
                )
            )
        except BaseExceptionGroup as group:  # a refusal raised inside trio's nurseries
            raise root_cause(group) from None
        if live:  # a live meter's reader runs on this asyncio loop
            reader = start_meter_reader(node.meter)
        api = await start_api(
            make_app(BridgeHandle(bridge, node), token=plan.token), config.api_host, config.api_port
        )
        log.info(
            "household %s peer %s role %s, community %r at %gx",
            key.public_hex[:16], node.net.peer_id, config.role, genesis.community_id,
            genesis.clock_speedup,
        )  # fmt: skip
        for addr in node.net.addrs:
            log.info("listening on %s", addr)
        log.info("status page and API at %s/", api.url)
        lock.record_pid()
        if ready_file is not None:
            write_atomic(ready_file, f"{api.url}\n" + "\n".join(node.net.addrs) + "\n")
        if node.meter is None:
            settle_after_start()
        else:  # a household: its start-up ends once its driver warmed up (the forecaster fitted)
            node.on_household_warm = _settle_household
        await bridge.run_sync(gate.set)  # a household's driver and forecaster warm up now
        waiters = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(fatal.wait()),
            asyncio.ensure_future(_watch(bridge, fatal)),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if fatal.error is not None:
            code = 1
            log.critical("fatal: %s; the daemon stops (exit 1)", describe(fatal.error))
            if not isinstance(fatal.error, GridnodeError):
                log.debug("the fatal error's traceback", exc_info=fatal.error)
        else:
            log.info("stopping")
    finally:
        if api is not None:
            await api.stop()
        await bridge.aclose()
        if live:
            await stop_meter_reader(reader, node.meter if node is not None else meter)
        lock.release()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code
