"""Chaos on real daemons: kill -9 storms, restarts at random points, partitions, latency and loss.

A community of real ``gridnode run`` processes (4 validators and a household by default, set up by
:class:`sims.daemons.LocalCommunity`), each in its own network namespace (:class:`sims.netns.NetLab`),
is put through a **fault schedule drawn from a seed** (:func:`plan_events`) while the harness places
orders through the daemons' APIs:

* **kill events** — one validator, **two of four at once** (a storm: the committee has no quorum
  until they return), or the household; ``kill -9`` after a random pause (a random point in the
  consensus round), a random time down, then a restart; sometimes the restarted node is killed
  again while it boots or catches up, and restarted once more;
* **partition events** — every node's link gets a fresh latency (50–200 ms) and loss (1–5 %),
  then a partition for a random time: one validator isolated, a 2|2 split of the validators (no
  quorum on either side), the household isolated, a validator with the household cut off, or a
  single validator pair cut (non-transitive: both still reach everyone else); then it heals.

**What is checked** (:class:`ChaosReport`):

* **safety** — after the run every node's store is read from genesis with the one chain reader
  (:class:`gridnode.chain.ChainReader`: every commit's signatures, every ledger rule), and every
  height held by two nodes holds the same block;
* **no double votes** — every validator's ``/api/evidence`` (equivocation it saw: two different
  signed values of one validator for one step) is polled throughout and must stay empty;
* **nothing acknowledged is lost** — an order is *acknowledged as committed* when a node's API
  lists it among the ledger's orders (``/api/orders``, not ``pending``); each one must be in every
  node's chain at the end;
* **liveness** — after every heal (a partition lifted; killed nodes restarted and serving again)
  every validator must reach a height above the highest height at the heal within
  ``liveness_bound_s`` (30 s). For a restart the time the daemons took to start (from the command
  until each served its API: process start, imports, store checks, chain replay) is reported
  apart (:attr:`Heal.ready_s`): it is the heal itself, and on a loaded machine it is what varies;
* **memory** — every validator's resident set (``VmRSS``) is sampled twice a second and must stay
  within ``rss_bound_mb`` (300 MB);
* **no crash** — no daemon exits unless killed, SIGTERM ends each with exit 0, and no daemon log
  holds a traceback.

Reproducible by seed: the schedule (which nodes, when, how long, which partition, which latency
and loss) is a pure function of the seed and the counts; the daemons' own timing is real and
varies from run to run. The command: ``python benchmarks/chaos.py --seed S --kills 300
--partitions 50`` (``docs/chaos.md``).
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gridnode.chain import ChainError, ChainReader, stored_blocks
from gridnode.config import load_config, update_config
from gridnode.core.ledger import tx_id
from gridnode.store import NodeStore
from market.errors import InvalidInput, UsageError
from sims.daemons import LocalCommunity
from sims.netns import LinkFaults, NetLab

__all__ = [
    "ChaosConfig",
    "ChaosReport",
    "ChaosRun",
    "KillEvent",
    "PartitionEvent",
    "place_in_lab",
    "plan_events",
]

#: partition shapes (see the module docstring)
SHAPES = ("isolate_validator", "split_validators", "isolate_household", "validator_and_household",
          "cut_pair")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seed: int
    kills: int = 300  # kill -9 of daemons, at least (a storm counts each node it kills)
    partitions: int = 50
    validators: int = 4
    full_nodes: int = 1
    speedup: int = 60
    storm_share: float = 0.4  # of kill events, the share that kills two validators at once
    rekill_share: float = 0.15  # of kill events, the share that kills a restarted node again
    household_share: float = 0.1  # of kill events, the share that kills the household
    delay_ms: tuple[int, int] = (50, 200)
    loss_pct: tuple[float, float] = (1.0, 5.0)
    partition_s: tuple[float, float] = (2.0, 15.0)
    down_s: tuple[float, float] = (0.0, 5.0)
    order_every_s: float = 1.0
    liveness_bound_s: float = 30.0
    rss_bound_mb: float = 300.0
    #: how long to wait for a heal before giving up on it (then a liveness violation is recorded)
    give_up_s: float = 120.0

    def __post_init__(self) -> None:
        if self.validators != 4 and self.storm_share > 0:
            raise UsageError("storms kill two of four validators: run 4 validators")
        if self.kills < 0 or self.partitions < 0:
            raise UsageError("kills and partitions must be >= 0")


@dataclass(frozen=True, slots=True)
class KillEvent:
    victims: tuple[int, ...]  # node indices (validators first, then households)
    pause_s: float  # before the kill: a random point in the round
    down_s: float
    rekill_after_s: float | None  # kill the restarted nodes again this long after the restart

    @property
    def kills(self) -> int:
        return len(self.victims) * (1 if self.rekill_after_s is None else 2)


@dataclass(frozen=True, slots=True)
class PartitionEvent:
    shape: str
    groups: tuple[tuple[int, ...], ...]  # nodes in different groups cannot talk
    duration_s: float
    links: tuple[tuple[int, float], ...]  # per node: (delay ms, loss %) from now on


Event = KillEvent | PartitionEvent


def plan_events(config: ChaosConfig) -> list[Event]:
    """The fault schedule of ``config.seed``: kill events until ``kills`` nodes were killed and
    ``partitions`` partition events, interleaved at random (a pure function of the config)."""
    rng = random.Random(config.seed)
    nv, n = config.validators, config.validators + config.full_nodes
    validators, households = list(range(nv)), list(range(nv, n))
    kills: list[Event] = []
    killed = 0
    while killed < config.kills:
        r = rng.random()
        if households and r < config.household_share:
            victims: tuple[int, ...] = (rng.choice(households),)
        elif r < config.household_share + config.storm_share:
            victims = tuple(sorted(rng.sample(validators, 2)))
        else:
            victims = (rng.choice(validators),)
        rekill = rng.uniform(0.2, 3.0) if rng.random() < config.rekill_share else None
        event = KillEvent(victims, rng.uniform(0.0, 2.0), rng.uniform(*config.down_s), rekill)
        kills.append(event)
        killed += event.kills
    parts: list[Event] = []
    for _ in range(config.partitions):
        shape = rng.choice(SHAPES if households else SHAPES[:2] + SHAPES[4:])
        v = rng.sample(validators, nv)
        if shape == "isolate_validator":
            groups: tuple[tuple[int, ...], ...] = ((v[0],), tuple(sorted(v[1:] + households)))
        elif shape == "split_validators":
            side = [h for h in households if rng.random() < 0.5]
            half = nv // 2
            groups = (tuple(sorted(v[:half] + side)), tuple(sorted(v[half:] + [h for h in households if h not in side])))  # fmt: skip
        elif shape == "isolate_household":
            h = rng.choice(households)
            groups = ((h,), tuple(x for x in range(n) if x != h))
        elif shape == "validator_and_household":
            h = rng.choice(households)
            groups = (tuple(sorted((v[0], h))), tuple(x for x in range(n) if x not in (v[0], h)))
        else:  # cut_pair
            groups = ((v[0],), (v[1],))
        links = tuple(
            (rng.randint(*config.delay_ms), round(rng.uniform(*config.loss_pct), 2))
            for _ in range(n)
        )
        parts.append(PartitionEvent(shape, groups, rng.uniform(*config.partition_s), links))
    # interleave: each partition at a random position among the kill events
    events = list(kills)
    for p in parts:
        events.insert(rng.randint(0, len(events)), p)
    return events


def place_in_lab(lc: LocalCommunity, lab: NetLab) -> None:
    """Move a created (not started) community into ``lab``: each node listens on its namespace's
    address, serves its API there, bootstraps to the validators' new addresses, and runs inside
    its namespace."""
    for h in lc.households:
        h.host = lab.address(h.index)
        h.command_prefix = lab.prefix(h.index)
    boot = [h.multiaddr() for h in lc.households if h.role == "validator"]
    for h in lc.households:
        me = h.multiaddr()
        update_config(
            h.dir,
            {
                "network.listen": [f"/ip4/{h.host}/tcp/{h.p2p_port}"],
                "network.bootstrap": [a for a in boot if a != me],
                "api.host": h.host,
            },
        )


@dataclass
class Heal:
    """One heal and how long the committee took to decide again after it."""

    kind: str  # "restart" | "partition"
    detail: str
    height: int  # the highest height when it healed
    recovered_s: float | None  # None: not within give_up_s
    #: a restart: seconds from starting the killed daemons until each served again (process start,
    #: imports, store checks and replay: the heal itself); liveness is counted from then
    ready_s: float | None = None


@dataclass
class ChaosReport:
    seed: int
    events: int = 0
    kills: int = 0
    storms: int = 0  # two validators killed at once
    rekills: int = 0  # a restarted node killed again while booting or catching up
    partitions: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    heals: list[Heal] = field(default_factory=list)
    rss_max_mb: dict[str, float] = field(default_factory=dict)
    rss_over: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    safety_violations: list[str] = field(default_factory=list)
    orders_placed: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    heights: dict[str, int] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)
    #: py-libp2p's own warnings with a trace (a connection added during shutdown), not crashes
    library_warnings: int = 0
    duration_s: float = 0.0
    liveness_bound_s: float = 30.0
    rss_bound_mb: float = 300.0

    @property
    def max_recovery_s(self) -> float | None:
        done = [h.recovered_s for h in self.heals if h.recovered_s is not None]
        return max(done) if done else None

    @property
    def max_ready_s(self) -> float | None:
        done = [h.ready_s for h in self.heals if h.ready_s is not None]
        return max(done) if done else None

    @property
    def liveness_violations(self) -> list[Heal]:
        return [
            h for h in self.heals if h.recovered_s is None or h.recovered_s > self.liveness_bound_s
        ]

    @property
    def ok(self) -> bool:
        return not (
            self.safety_violations
            or self.evidence
            or self.lost
            or self.liveness_violations
            or self.rss_over
            or self.crashes
        )

    def lines(self) -> list[str]:
        rss = max(self.rss_max_mb.values(), default=0.0)
        slow = self.liveness_violations
        return [
            f"seed {self.seed}: {self.events} events in {self.duration_s:.0f} s",
            f"kill -9: {self.kills} ({self.storms} storms of 2 of 4 validators, "
            f"{self.rekills} re-kills while booting)",
            f"partitions: {self.partitions} {dict(sorted(self.shapes.items()))}",
            f"safety violations: {len(self.safety_violations)}; double votes (evidence): "
            f"{len(self.evidence)}",
            f"orders acknowledged as committed: {self.acknowledged} of {self.orders_placed} "
            f"placed; lost: {len(self.lost)}",
            f"liveness after {len(self.heals)} heals: max {self.max_recovery_s or 0:.1f} s "
            f"(bound {self.liveness_bound_s:.0f} s; over: {len(slow)}); killed daemons serving "
            f"again after their restart: max {self.max_ready_s or 0:.1f} s",
            f"validator RSS max {rss:.0f} MB (bound {self.rss_bound_mb:.0f} MB)",
            f"crashes: {len(self.crashes)} (py-libp2p shutdown warnings: {self.library_warnings}); "
            f"final heights {self.heights}",
            "OK" if self.ok else "FAILED",
        ]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["max_recovery_s"] = self.max_recovery_s
        out["max_ready_s"] = self.max_ready_s
        out["ok"] = self.ok
        return out


def _rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


class ChaosRun:
    """One chaos run under ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        config: ChaosConfig,
        *,
        events: Sequence[Event] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.root = root
        self.config = config
        self.events = list(events) if events is not None else plan_events(config)
        self.log = log
        self.report = ChaosReport(
            config.seed,
            liveness_bound_s=config.liveness_bound_s,
            rss_bound_mb=config.rss_bound_mb,
        )
        self.lc = LocalCommunity(
            root,
            validators=config.validators,
            full_nodes=config.full_nodes,
            speedup=config.speedup,
            community_id=f"chaos-{config.seed}",
        )
        self._lock = threading.Lock()
        self._down: set[int] = set()  # nodes the harness killed and has not restarted yet
        self._stop = threading.Event()
        self._orders_stop = threading.Event()
        self._orders_thread = threading.Thread(
            target=self._orders, name="chaos-orders", daemon=True
        )
        self._evidence: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, tuple[str, int, float]] = {}  # order id -> (tx id, slot, at)
        self._acked: dict[str, str] = {}  # tx id -> order id
        self._started = 0.0

    # ------------------------------------------------------------------ the run
    def run(self) -> ChaosReport:
        cfg = self.config
        t0 = time.monotonic()
        n = cfg.validators + cfg.full_nodes
        with NetLab(n) as lab:
            self.lab = lab
            self.lc.create()
            place_in_lab(self.lc, lab)
            self.lc.start()
            try:
                self.lc.wait_ready(180)
                if not self._wait(
                    lambda: min(self._heights(validators_only=True).values()) >= 2, 180
                ):
                    raise TimeoutError("the community did not start committing within 180 s")
                self.log(f"started: {n} daemons in lab {lab.tag} (10.77.{lab.subnet}.0/24)")
                monitor = threading.Thread(target=self._monitor, name="chaos-monitor", daemon=True)
                monitor.start()
                self._orders_thread.start()
                for i, event in enumerate(self.events):
                    if isinstance(event, KillEvent):
                        self._kill_event(event)
                    else:
                        self._partition_event(event)
                    self.report.events = i + 1
                    self.log(
                        f"[{i + 1}/{len(self.events)}] {time.monotonic() - t0:6.0f} s {self._progress()}"
                    )
                self._finish()
                self._stop.set()
                monitor.join(timeout=30)
            finally:
                self._stop.set()
                self._orders_stop.set()
                codes = self.lc.stop()
                for i, code in codes.items():
                    if code != 0 and i not in self._down:
                        self.report.crashes.append(f"{self._name(i)} exited {code} on SIGTERM")
        self._check_stores()
        self._check_logs()
        self.report.duration_s = time.monotonic() - t0
        return self.report

    # ------------------------------------------------------------------ events
    def _kill(self, victims: Sequence[int]) -> None:
        with self._lock:
            self._down |= set(victims)
        for i in victims:
            self.lc.kill(i, signal.SIGKILL)
        self.report.kills += len(victims)

    def _restart(self, victims: Sequence[int]) -> None:
        self.lc.start(list(victims))
        with self._lock:
            self._down -= set(victims)

    def _kill_event(self, event: KillEvent) -> None:
        time.sleep(event.pause_s)
        self._kill(event.victims)
        nv = self.config.validators
        if sum(1 for v in event.victims if v < nv) == 2:
            self.report.storms += 1
        time.sleep(event.down_s)
        self._restart(event.victims)
        if event.rekill_after_s is not None:
            time.sleep(event.rekill_after_s)
            self._kill(event.victims)
            self.report.rekills += 1
            time.sleep(event.down_s / 2)
            self._restart(event.victims)
        detail = f"restart {','.join(self._name(v) for v in event.victims)}"
        started = time.monotonic()
        try:
            self.lc.wait_ready(self.config.give_up_s, which=list(event.victims))
        except (RuntimeError, TimeoutError) as exc:
            self.report.crashes.append(f"{detail}: {exc}")
        self._await_liveness("restart", detail, ready_s=round(time.monotonic() - started, 2))

    def _partition_event(self, event: PartitionEvent) -> None:
        self.lab.set_links({i: LinkFaults(d, loss) for i, (d, loss) in enumerate(event.links)})
        self.lab.partition(event.groups)
        self.report.partitions += 1
        self.report.shapes[event.shape] = self.report.shapes.get(event.shape, 0) + 1
        time.sleep(event.duration_s)
        self.lab.heal()
        groups = "|".join(",".join(self._name(i) for i in g) for g in event.groups)
        self._await_liveness("partition", f"{event.shape} {groups} {event.duration_s:.1f} s")

    def _await_liveness(self, kind: str, detail: str, *, ready_s: float | None = None) -> None:
        """From now (the heal), how long until every validator is above the highest height now."""
        healed = time.monotonic()
        top = max(self._heights(validators_only=True).values(), default=0)

        def decided() -> bool:
            heights = self._heights(validators_only=True)
            return len(heights) == self.config.validators and min(heights.values()) > top

        ok = self._wait(decided, self.config.give_up_s, poll_s=0.2)
        took = time.monotonic() - healed if ok else None
        took = None if took is None else round(took, 2)
        self.report.heals.append(Heal(kind, detail, top, took, ready_s))
        if took is None or took > self.config.liveness_bound_s:
            self.log(f"LIVENESS: {kind} {detail}: {took} s; heights {self._heights()}")

    def _finish(self) -> None:
        """Lift every fault, restart anything down, stop placing orders, and wait until every node
        holds every block that any acknowledged order can be in."""
        self.lab.heal()
        self.lab.set_links({i: LinkFaults() for i in range(len(self.lc.households))})
        down = sorted(self._down)
        if down:
            self._restart(down)
        self._orders_stop.set()
        self._orders_thread.join(timeout=60)
        # the orders still pending get a last chance to be acknowledged (one not acknowledged is
        # not checked: only what the API said was committed must be in every chain)
        self._wait(self._nothing_pending, 10, poll_s=1.0)
        top = max(self._heights().values(), default=0)  # every acknowledged order is at or below

        def caught_up() -> bool:
            heights = self._heights()
            return len(heights) == len(self.lc.households) and min(heights.values()) >= top

        if not self._wait(caught_up, 180):
            self.log(f"nodes did not reach height {top} within 180 s: {self._heights()}")
        self._poll_evidence()

    # ------------------------------------------------------------------ background: RSS, evidence, crashes
    def _monitor(self) -> None:
        last_evidence = 0.0
        while not self._stop.is_set():
            for h in self.lc.households:
                if h.role != "validator" or h.process is None:
                    continue
                mb = _rss_mb(h.process.pid)
                if mb is not None:
                    key = h.name
                    if mb > self.report.rss_max_mb.get(key, 0.0):
                        self.report.rss_max_mb[key] = round(mb, 1)
                    if mb > self.config.rss_bound_mb:
                        self.report.rss_over.append(f"{key} {mb:.0f} MB")
            with self._lock:
                down = set(self._down)
            for h in self.lc.households:
                if h.index in down or h.process is None:
                    continue
                code = h.process.poll()
                if code is not None:
                    self.report.crashes.append(f"{h.name} exited {code} on its own")
                    with self._lock:
                        self._down.add(h.index)  # restarted at the next restart or the finish
            if time.monotonic() - last_evidence > 1.0:
                self._poll_evidence()
                last_evidence = time.monotonic()
            self._stop.wait(0.5)

    def _poll_evidence(self) -> None:
        for h in self.lc.households:
            if h.role != "validator" or h.index in self._down:
                continue
            body = self._api(h.index, "/api/evidence")
            if body is None:
                continue
            for ev in body.get("evidence", []):
                key = json.dumps(ev, sort_keys=True)
                if key not in self._evidence:
                    self._evidence[key] = {"seen_by": h.name, **ev}
                    self.report.evidence.append(self._evidence[key])
                    self.log(f"EVIDENCE seen by {h.name}: {ev}")

    # ------------------------------------------------------------------ background: orders
    def _orders(self) -> None:
        rng = random.Random(self.config.seed ^ 0x5EED)
        next_at = time.monotonic()
        while not self._orders_stop.is_set():
            if time.monotonic() >= next_at:
                next_at += self.config.order_every_s
                self._place(rng)
            self._check_pending()
            self._orders_stop.wait(0.25)

    def _place(self, rng: random.Random) -> None:
        up = [h.index for h in self.lc.households if h.index not in self._down]
        if not up:
            return
        i = rng.choice(up)
        status = self._api(i, "/api/status")
        if status is None:
            return
        slot = int(status["first_open_slot"]) + rng.randint(1, 3)
        body = {
            "slot": slot,
            "side": rng.choice(["buy", "sell"]),
            "steps": [{"price": rng.randint(80_000, 300_000), "energy_wh": rng.randint(1, 2_000)}],
        }
        answer = self._api(i, "/api/orders", method="POST", body=body)
        self.report.orders_placed += 1
        if answer is not None and answer.get("accepted"):
            self._pending[answer["order_id"]] = (answer["tx_id"], slot, time.monotonic())

    def _nothing_pending(self) -> bool:
        self._check_pending()
        return not self._pending

    def _check_pending(self) -> None:
        if not self._pending:
            return
        up = [h.index for h in self.lc.households if h.index not in self._down]
        if not up:
            return
        i = random.choice(up)
        listed = self._api(i, "/api/orders")
        if listed is None:
            return
        committed = {o["order_id"] for o in listed.get("orders", [])}
        first_open = int(listed.get("first_open_slot", 0))
        now = time.monotonic()
        for order_id, (tid, slot, at) in list(self._pending.items()):
            if order_id in committed:
                self._acked[tid] = order_id
                del self._pending[order_id]
            elif slot < first_open or now - at > 120:  # its gate closed: never acknowledged
                del self._pending[order_id]
        self.report.acknowledged = len(self._acked)

    # ------------------------------------------------------------------ final checks
    def _check_stores(self) -> None:
        genesis = self.lc.genesis
        assert genesis is not None
        by_height: dict[int, dict[str, str]] = {}
        txs: dict[str, set[str]] = {}
        for h in self.lc.households:
            seen: set[str] = set()
            reader = ChainReader(genesis)
            path = load_config(h.dir).data_dir / "node.sqlite"
            if not path.is_file():
                self.report.safety_violations.append(f"{h.name}: no store at {path}")
                continue
            store = NodeStore.open(path)
            try:
                for height, block, commit in stored_blocks(store):
                    try:
                        facts = reader.read(height, block, commit)
                    except ChainError as exc:
                        self.report.safety_violations.append(f"{h.name}: {exc}")
                        break
                    by_height.setdefault(height, {})[h.name] = facts.block_hash.hex()
                    seen.update(tx_id(tx).hex() for tx in facts.block.txs)
            except InvalidInput as exc:
                self.report.safety_violations.append(f"{h.name}: store does not read: {exc}")
            finally:
                store.close()
            txs[h.name] = seen
            self.report.heights[h.name] = reader.height
        for height, hashes in sorted(by_height.items()):
            if len(set(hashes.values())) > 1:
                self.report.safety_violations.append(f"height {height}: different blocks {hashes}")
        for tid, order_id in sorted(self._acked.items()):
            missing = [name for name, seen in txs.items() if tid not in seen]
            if missing:
                self.report.lost.append(f"order {order_id} (tx {tid[:16]}) missing on {missing}")

    def _check_logs(self) -> None:
        """A traceback in a daemon's log is a crash, except py-libp2p's own warning when a
        connection arrives while its swarm shuts down (``[ADDCONN_FAIL]``: it logs the trace
        of the task it could no longer start), which is counted apart."""
        marker = "Traceback (most recent call last)"
        for h in self.lc.households:
            log = h.dir / "daemon.log"
            lines = (
                log.read_text(encoding="utf-8", errors="replace").splitlines()
                if log.exists()
                else []
            )
            for at, line in enumerate(lines):
                if marker not in line:
                    continue
                before = lines[at - 1] if at else ""
                if before.startswith("[ADDCONN_FAIL]"):
                    self.report.library_warnings += 1
                    continue
                trace = "\n".join(lines[max(0, at - 1) : at + 25])
                self.report.crashes.append(f"{h.name}: traceback in its log:\n{trace}")

    # ------------------------------------------------------------------ helpers
    def _progress(self) -> str:
        r = self.report
        last = r.heals[-1] if r.heals else None
        took = (
            "-"
            if last is None
            else "NOT RECOVERED"
            if last.recovered_s is None
            else f"{last.recovered_s:.1f} s"
        )
        rss = max(r.rss_max_mb.values(), default=0.0)
        return (
            f"kills {r.kills} partitions {r.partitions} last heal "
            f"{last.kind if last else '-'} {took} rss {rss:.0f} MB"
        )

    def _name(self, i: int) -> str:
        return self.lc.households[i].name

    def _api(
        self, i: int, path: str, *, method: str = "GET", body: Any = None
    ) -> dict[str, Any] | None:
        try:
            out = self.lc.api(i, path, method=method, body=body, timeout_s=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return None
        return out if isinstance(out, dict) and "http_status" not in out else None

    def _heights(self, *, validators_only: bool = False) -> dict[int, int]:
        out = {}
        for h in self.lc.households:
            if validators_only and h.role != "validator":
                continue
            if h.index in self._down:
                continue
            status = self._api(h.index, "/api/status")
            if status is not None:
                out[h.index] = int(status["height"])
        return out

    def _wait(self, cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except (ValueError, KeyError):
                pass
            time.sleep(poll_s)
        return False
