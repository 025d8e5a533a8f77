"""The daemon's start-up checks, its logging, and the latch that stops it on a fatal error.

Rules of this module (``gridnode run`` obeys them through :func:`gridnode.daemon.run_daemon`):

* **Refuse before writing.** Everything a user can fix is found before anything on disk changes and
  reported as one :class:`~market.errors.UsageError` line that names the file or key, the problem
  and the fix (the CLI prints it and exits 2): the config, identity, token and genesis files; the
  role; the genesis' clock against a config that still sets one; the meter and bidding settings
  (a file meter's history must exist, and its header and newest rows parse: the whole file is
  read once the daemon serves, :class:`gridnode.meter.FileMeter`; a replay meter's day must lie
  in the shipped data, checked without reading it: :class:`gridnode.meter.ShippedReplay`); the
  data directory; the API port and every
  libp2p listen port (bound the way the servers bind them, so a taken port is a refusal, not a
  daemon running without a listener); the directory lock; the store (checked on open:
  :mod:`gridnode.store`) and the chain in it (bound to this community and genesis, and replayed:
  its head block must be exactly the state rebuilt from it).
* **Fail-stop after start.** An error the node cannot go on from — the store failed (disk full, an
  I/O error), a committed block broke a ledger rule, a bug in one of the node's tasks — is reported
  once to the :class:`FatalLatch`; the daemon then stops serving (API first), logs one CRITICAL
  line and exits 1. Nothing keeps serving a frozen state.
* **Large blocks go back to the system — in a household.** When the daemon will run a household
  driver (a meter is configured), :func:`tune_malloc` (first thing in
  :func:`gridnode.daemon.run_daemon`) fixes glibc's mmap threshold at 128 KiB: every allocation
  that large (numpy's arrays while the household fits its forecaster) gets its own mapping,
  unmapped when freed. By default glibc raises the threshold after the first such free (up to
  32 MiB) and serves later large arrays from a heap it rarely shrinks: an idle household kept
  ≈ 13 MB more (``benchmarks/daemon_footprint.py``). Validators keep glibc's default: their memory
  does not change with it, and a fresh mapping per large array made clearing a 100,000-step book
  ≈ 10 ms slower (``benchmarks/clearing.py``). No effect off glibc.
* **Free pages go back after each household step.** The forecaster's fit (once a day of community
  time) frees megabytes of smaller blocks scattered among live ones, which glibc keeps; after
  every step of the household driver the daemon calls ``malloc_trim(0)`` (:func:`trim_malloc`),
  which returns every wholly free page of every arena: an idle household ≈ 7 MB less RSS
  (``benchmarks/daemon_footprint.py``); ≈ 0.5 ms after a fit, 0.02 ms otherwise. Every daemon
  also trims once serving and after a block, at most every 5 s (a trim walks every free chunk,
  which a busy validator's heap has many of): an idle validator ≈ 3 MB less.
* **A household syncs its store less.** A validator's store runs at SQLite ``synchronous=FULL``
  (every block, consensus record and signed vote fsynced before it is acted on: what it signed
  must survive power loss, or it could sign twice). A household (a full node) signs no votes and
  writes no consensus log; everything in its store is the community's chain, which it re-fetches
  from the validators by height. So it runs at ``NORMAL`` (:func:`store_durability`): in WAL mode
  that still survives a crash or ``kill -9`` of the daemon; a power loss may cut the newest
  blocks off the end (never a block in the middle: the WAL is a log), and the node fetches them
  again when it restarts. Its nonces come from the ledger state and the validators refuse a stale
  one, as after any restart. One fsync less per block on a small always-on box.
* **No collections during start-up, frozen start-up objects.** ``gridnode run`` turns the cyclic
  garbage collector off before its first import: the imports alone would trigger ~260
  collections, each walking the objects made so far (≈ 0.1 s of start-up CPU at load 11, 14 %).
  Right after the daemon is ready, :func:`settle_after_start` collects garbage once (what those
  collections would have found), moves every object made by the imports and the start-up out
  of the collector's reach (``gc.freeze``: a full collection otherwise walks ~120,000 of them,
  ≈ 40 ms that stall the node's thread, and every submission waiting on it, each time) and
  turns the collector back on. Those objects live as long as the process; what the node makes
  later is collected as before — a household's warm-up too (its meter data, forecasting code and
  first fit, loaded once the daemon serves: ``docs/daemon.md``). A start-up that fails ends the
  process before that.
* **Quiet, timestamped logs.** Every line carries a timestamp, level and logger; py-libp2p's own
  records (e.g. "Failed to open TCP stream" every time a peer is down) are shown only at
  ``logging.level = "debug"``, as DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gridnode import codecache
from gridnode.config import (
    CONFIG_NAME,
    Config,
    load_config,
    load_genesis,
    load_identity,
    load_token,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import ZERO_HASH, Genesis, LedgerState, decode_block
from gridnode.store import Durability, NodeStore, StoreBinding, StoreFailed
from market.errors import GridnodeError, InvalidInput, UsageError

if TYPE_CHECKING:
    from gridnode.meter import Meter

__all__ = [
    "LIVE_SOURCES",
    "FatalLatch",
    "Plan",
    "chain_refusal",
    "check_chain",
    "check_clock",
    "check_listening",
    "check_ports",
    "check_role",
    "make_meter",
    "open_node_store",
    "preflight",
    "root_cause",
    "settle_after_start",
    "setup_logging",
    "store_binding",
    "store_durability",
    "trim_malloc",
    "tune_malloc",
]

log = logging.getLogger("gridnode")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------------------------- logging


#: glibc's ``mallopt`` parameter for the mmap threshold, and the value :func:`tune_malloc` sets
_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD_BYTES: Final = 128 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The process's C library on Linux (where glibc's allocator is tuned), else ``None``."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:  # no C library to ask
        return None


def tune_malloc() -> None:
    """Fix glibc's mmap threshold (see the module rules); nothing where there is no glibc."""
    mallopt = getattr(_libc(), "mallopt", None)  # musl and others may not have it
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def trim_malloc() -> None:
    """Hand glibc's free pages back to the system (see the module rules); nothing off glibc."""
    trim = getattr(_libc(), "malloc_trim", None)  # musl and others may not have it
    if trim is not None:
        trim(0)


def settle_after_start() -> None:
    """Once the daemon serves: collect, freeze what start-up made, turn the collector on (``gridnode
    run`` turned it off for the start-up; see the module rules)."""
    codecache.save()
    gc.collect()
    gc.freeze()
    gc.enable()
    trim_malloc()


class _Libp2pAsDebug(logging.Filter):
    """py-libp2p's records become DEBUG records, dropped unless the daemon logs at debug."""

    def __init__(self, *, show: bool) -> None:
        super().__init__()
        self._show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "libp2p" or record.name.startswith("libp2p."):
            if not self._show:
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def setup_logging(level: str) -> None:
    """Timestamped lines on stderr at ``level``; py-libp2p's records at debug only."""
    numeric = getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_Libp2pAsDebug(show=numeric <= logging.DEBUG))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # py-libp2p detaches its logger at import (no handler, no propagation: Python's last-resort
    # handler then prints its warnings bare, without a timestamp); route it through ours
    libp2p = logging.getLogger("libp2p")
    libp2p.handlers.clear()
    libp2p.propagate = True
    libp2p.setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.CRITICAL)


# ----------------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``gridnode run`` starts from, every part read and checked by :func:`preflight`."""

    config: Config
    key: KeyPair
    genesis: Genesis
    token: str
    meter: Meter | None


def preflight(directory: Path) -> Plan:
    """The checks that need no network stack (fast, before the daemon's heavy imports): the
    files, role, clock, meter and ports. The store and the lock are checked by the daemon."""
    config = load_config(directory)
    key = load_identity(directory)
    genesis = load_genesis(config.genesis_path)
    token = load_token(directory)
    check_role(config, key, genesis)
    check_clock(config, genesis)
    meter = make_meter(config, genesis)
    check_ports(config)
    return Plan(config=config, key=key, genesis=genesis, token=token, meter=meter)


#: meters read live from a device or broker (:mod:`gridnode.meters`)
LIVE_SOURCES: Final = ("dsmr", "mqtt")


def make_meter(config: Config, genesis: Genesis) -> Meter | None:
    """The meter the config asks for (``[meter] source``), checked at start: a file meter's history
    must exist and its header and newest rows parse (:meth:`gridnode.meter.FileMeter.checked`;
    it used to start anyway and log a traceback every slot). A live meter
    (:data:`LIVE_SOURCES`) is ``None`` here: the daemon opens it on its own clock
    (:func:`gridnode.daemon.open_daemon_node`)."""
    path = config.dir / CONFIG_NAME
    # the meter code is imported only by a node that has a meter; a replay's settings are checked
    # here and its data (numpy) read once the daemon serves (its first use: docs/daemon.md)
    if config.meter_source == "replay":
        from gridnode.meter import ShippedReplay  # noqa: PLC0415

        return ShippedReplay.of(
            node_anchor_s=genesis.genesis_time_ms // 1000,
            day=config.replay_day,
            day_offset=config.replay_day_offset,
            hour=config.replay_hour,
            pv_scale=config.pv_scale,
            load_scale=config.load_scale,
        )
    if config.meter_source == "file":
        history = config.meter_history
        if history is None:
            raise UsageError(
                f"{path}: meter.source is 'file' but bidding.meter_history is not set: name the "
                "meter history CSV your meter adapter writes (docs/forecasting.md)"
            )
        if not history.is_file():
            what = "is a directory" if history.is_dir() else "does not exist"
            raise UsageError(
                f"{path}: meter.source = 'file' reads bidding.meter_history {history}, which "
                f"{what}: start your meter adapter first, or set meter.source = 'none'"
            )
        from gridnode.meter import FileMeter  # noqa: PLC0415

        try:  # its header and newest rows now (no numpy); read whole once the daemon serves
            return FileMeter.checked(history)
        except (ValueError, OSError, UsageError) as exc:  # InvalidInput is a ValueError
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"{history}: not a usable meter history: {text}") from None
    if config.meter_source in LIVE_SOURCES:  # opened by the daemon once its store and clock are
        return None  # up (its keys were checked with the config; docs/meters.md)
    if config.bidding_enabled:
        raise UsageError(
            f"{path}: bidding.enabled = true needs a meter to forecast from and to read each "
            'slot: set meter.source ("file", "replay", "dsmr" or "mqtt"), or bidding.enabled = false'
        )
    return None


def check_role(config: Config, key: KeyPair, genesis: Genesis) -> None:
    if config.role == "validator" and key.public_hex not in genesis.validators:
        raise UsageError(
            f"{config.dir / CONFIG_NAME}: node.role is 'validator' but this household "
            f"({key.public_hex[:16]}…) is not in {config.genesis_path.name}'s validators: set "
            'node.role = "full", or ask the operator to add it'
        )


def check_clock(config: Config, genesis: Genesis) -> None:
    """The genesis sets the community clock; a config that still sets one must agree with it."""
    if config.clock_speedup is not None and config.clock_speedup != genesis.clock_speedup:
        raise UsageError(
            f"{config.dir / CONFIG_NAME}: node.clock_speedup = {config.clock_speedup:g} but "
            f"{config.genesis_path.name} runs the community clock at {genesis.clock_speedup}x: "
            "delete node.clock_speedup (the genesis sets it for every node; "
            "`gridnode community create --clock-speedup N` writes it)"
        )


def _tcp_endpoint(addr: str) -> tuple[str, int] | None:
    """``(host, port)`` of an ``/ip4|ip6/…/tcp/…`` multiaddr, ``None`` for other transports."""
    parts = addr.split("/")
    if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
        try:
            return parts[2], int(parts[4])
        except ValueError:
            return None
    return None


def check_ports(config: Config) -> None:
    """Bind the API address and every libp2p TCP listen address the way the servers will
    (``SO_REUSEADDR``), all at once, then let go: a taken port is a one-line refusal."""
    path = config.dir / CONFIG_NAME
    wanted: list[tuple[str, str, int]] = [("api.port", config.api_host, config.api_port)]
    for addr in config.listen:
        endpoint = _tcp_endpoint(addr)
        if endpoint is None:
            if not addr.startswith(("/ip4/", "/ip6/", "/dns")):
                raise UsageError(
                    f"{path}: network.listen {addr!r} is not a multiaddr like /ip4/0.0.0.0/tcp/4001"
                )
            continue
        wanted.append((f"network.listen {addr}", *endpoint))
    held: list[socket.socket] = []
    try:
        for what, host, port in wanted:
            if port == 0:
                continue
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise UsageError(f"{path}: {what}: cannot resolve {host!r}: {exc}") from None
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
                sock.listen(1)
            except OSError as exc:
                raise UsageError(
                    f"{path}: {what}: cannot listen on {host}:{port} ({exc.strerror or exc}): "
                    "another gridnode daemon or program has it, or the address is not this "
                    "machine's; choose another port"
                ) from None
    finally:
        for sock in held:
            sock.close()


def check_listening(config: Config, addrs: list[str]) -> None:
    """After the libp2p host started: it must listen somewhere (py-libp2p logs a failed listen and
    goes on without a listener, which no peer could then reach)."""
    if config.listen and not addrs:
        raise UsageError(
            f"{config.dir / CONFIG_NAME}: network.listen: libp2p could listen on none of "
            f"{', '.join(config.listen)} (a port taken since the check?); choose another port"
        )


def store_durability(config: Config) -> Durability:
    """``FULL`` for a validator, ``NORMAL`` for a household (see the module rules)."""
    return Durability.FULL if config.role == "validator" else Durability.NORMAL


def store_binding(genesis: Genesis) -> StoreBinding:
    return StoreBinding(community_id=genesis.community_id, genesis_hash=genesis.hash)


def open_node_store(
    config: Config, genesis: Genesis, *, on_failure: Callable[[StoreFailed], None] | None = None
) -> NodeStore:
    """Open (or create) the node's store for ``genesis``; every refusal is one line with the fix."""
    data = config.data_dir
    if data.exists() and not data.is_dir():
        raise UsageError(f"{data}: is a file, where node.data_dir (a directory) belongs")
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{data}: cannot create node.data_dir: {exc.strerror or exc}") from None
    path = data / "node.sqlite"
    try:
        return NodeStore.open(
            path,
            durability=store_durability(config),
            binding=store_binding(genesis),
            on_failure=on_failure,
        )
    except InvalidInput as exc:
        raise UsageError(_store_refusal(config, genesis, path, exc)) from None


def _store_refusal(config: Config, genesis: Genesis, path: Path, exc: InvalidInput) -> str:
    g = config.genesis_path.name
    start_afresh = _start_afresh(config)
    if exc.reason == "empty_file":
        return (
            f"{path} is empty (0 bytes): this node's store is lost (a new node has no file); "
            f"restore it from a backup, or {start_afresh}"
        )
    if exc.reason == "other_community":
        return (
            f"{path} holds the chain of community {exc.found!r}, but {g} is community "
            f"{exc.expected!r}: use that community's genesis, or give this one another "
            "node.data_dir"
        )
    if exc.reason == "other_genesis":
        return (
            f"{path} holds a chain of another genesis of {genesis.community_id!r} "
            f"({exc.found[:16]}…; {g} hashes to {exc.expected[:16]}…): the genesis was edited or "
            f"re-issued; put back the genesis the store was made with, or {start_afresh}"
        )
    if exc.reason == "damaged_store":
        return f"{path} is damaged ({exc.found}): restore it from a backup, or {start_afresh}"
    if exc.reason == "schema_too_new":
        return f"{path} was written by a newer gridnode (schema {exc.found}): upgrade gridnode"
    return f"{path} is not this node's store ({exc.found or exc.reason}): check node.data_dir"


def chain_refusal(config: Config, store: NodeStore, problem: str) -> UsageError:
    """The one line for a stored chain that is not this genesis' (or is damaged)."""
    return UsageError(
        f"{store.path}: the stored chain is not {config.genesis_path.name}'s: {problem}; the store "
        f"is damaged or was made for another genesis: restore it from a backup, or "
        f"{_start_afresh(config)}"
    )


def _start_afresh(config: Config) -> str:
    """The last-resort fix for a store that cannot be used, with the validator's caveat."""
    return (
        f"move {config.data_dir} away to start this node afresh and resync from peers (a "
        "validator: only if its votes are no longer needed, or it may sign a conflicting block)"
    )


def check_chain(config: Config, store: NodeStore, state: LedgerState) -> None:
    """The state rebuilt from the store (snapshot + blocks) must be exactly its head block's: the
    same height and hash, and the block's ``state_root``. Catches bit-flipped blocks, a damaged
    snapshot, and a chain that does not follow from this genesis."""
    head = store.head()
    if head is None:
        return
    try:
        block = decode_block(head.block)
    except InvalidInput as exc:
        raise chain_refusal(
            config, store, f"head block {head.height} does not decode ({exc})"
        ) from None
    root = replace(state, head_hash=ZERO_HASH).digest()
    if (
        block.hash != head.block_hash
        or state.height != head.height
        or state.head_hash != head.block_hash
        or block.state_root != root
    ):
        raise chain_refusal(
            config, store, f"head block {head.height} differs from the state rebuilt from the store"
        )


# ----------------------------------------------------------------------------------- fatal


def root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, as trio's nurseries wrap them."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not _is_cancelled(e)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _is_cancelled(exc: BaseException) -> bool:
    return type(exc).__name__ == "Cancelled" or isinstance(exc, asyncio.CancelledError)


def describe(exc: BaseException) -> str:
    """One line for a fatal error: ours as they say, anything else named as an internal error."""
    if isinstance(exc, GridnodeError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class FatalLatch:
    """Where the node reports an error it cannot go on from (from any thread; the first wins);
    the asyncio side awaits :meth:`wait`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def report(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = root_cause(exc)
        with contextlib.suppress(RuntimeError):  # the loop already closed: we are stopping anyway
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> BaseException:
        await self._event.wait()
        assert self.error is not None
        return self.error
