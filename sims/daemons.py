"""Launch a real local community: N ``gridnode run`` processes on loopback talking libp2p.

Used by ``gridnode demo`` (the README's main job), by the integration tests and by the simulation
harness's daemon engine. Each household gets its own data directory (``gridnode init`` layout), its own
TCP port for libp2p and for its API; the genesis names the validators; every node bootstraps to the
validators. The community clock may be sped up (``speedup``), which also scales the genesis clock-drift
bound. Nothing here is a fake: these are the same processes a household runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridnode.config import (
    create_data_dir,
    load_genesis,
    load_identity,
    load_token,
    update_config,
    write_genesis,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from gridnode.net.host import peer_id_of
from market.clearing import Rule
from market.errors import UsageError
from market.settlement import Netting

__all__ = ["Household", "LocalCommunity", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Household:
    index: int
    dir: Path
    key: KeyPair
    role: str
    p2p_port: int
    api_port: int
    process: subprocess.Popen[bytes] | None = None
    #: the address it listens on (libp2p and API); another than loopback in a network lab
    host: str = "127.0.0.1"
    #: what runs its daemon command, e.g. ``ip netns exec NS`` (:mod:`sims.netns`)
    command_prefix: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{'v' if self.role == 'validator' else 'h'}{self.index}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def multiaddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{peer_id_of(self.key.public_key)}"


@dataclass
class LocalCommunity:
    """A community of real daemons under ``root`` (see the module docstring)."""

    root: Path
    validators: int = 4
    full_nodes: int = 2
    speedup: float = 60.0
    slot_seconds: int = 900
    gate_lead_seconds: int = 300
    rule: Rule = Rule.PAY_AS_CLEAR
    netting: Netting = Netting.NONE
    community_id: str = "demo"
    #: public keys of members that run no daemon here (benchmark clients, remote households)
    extra_members: tuple[str, ...] = ()
    #: the nodes' identities in node order (validators first); empty: fresh keys
    keys: tuple[KeyPair, ...] = ()
    households: list[Household] = field(default_factory=list)
    genesis: Genesis | None = None

    def create(self) -> None:
        """Make every household's directory and the shared genesis (fresh keys, free ports)."""
        if self.validators < 1:
            raise UsageError("a community needs at least one validator")
        self.root.mkdir(parents=True, exist_ok=True)
        roles = ["validator"] * self.validators + ["full"] * self.full_nodes
        if self.keys and len(self.keys) != len(roles):
            raise UsageError(f"{len(self.keys)} keys for {len(roles)} nodes")
        for i, role in enumerate(roles):
            d = self.root / f"node{i}"
            p2p, api = free_port(), free_port()
            key = create_data_dir(
                d,
                role=role,
                listen=f"/ip4/127.0.0.1/tcp/{p2p}",
                api_port=api,
                key=self.keys[i] if self.keys else None,
            )
            self.households.append(Household(i, d, key, role, p2p, api))
        now_ms = time.time_ns() // 1_000_000
        self.genesis = Genesis(
            community_id=self.community_id,
            genesis_time_ms=now_ms,
            members=tuple(h.key.public_hex for h in self.households) + self.extra_members,
            validators=tuple(h.key.public_hex for h in self.households if h.role == "validator"),
            slot_seconds=self.slot_seconds,
            gate_lead_seconds=self.gate_lead_seconds,
            rule=self.rule,
            netting=self.netting,
            reading_deadline_seconds=self.slot_seconds,
            max_drift_ms=int(5_000 * self.speedup),
        )
        boot = [h.multiaddr() for h in self.households if h.role == "validator"]
        for h in self.households:
            write_genesis(h.dir / "genesis.toml", self.genesis)
            me = h.multiaddr()
            update_config(
                h.dir,
                {
                    "network.bootstrap": [a for a in boot if a != me],
                    "network.mdns": False,
                    "node.clock_speedup": float(self.speedup),
                },
            )

    @classmethod
    def load(cls, root: Path) -> LocalCommunity:
        """Re-open a community made by :meth:`create` (to restart daemons)."""
        households = []
        for d in sorted(root.glob("node*"), key=lambda p: int(p.name[4:])):
            cfg = tomllib.loads((d / "gridnode.toml").read_text(encoding="utf-8"))
            listen = cfg["network"]["listen"][0].split("/")  # /ip4/HOST/tcp/PORT
            households.append(
                Household(
                    int(d.name[4:]),
                    d,
                    load_identity(d),
                    cfg["node"]["role"],
                    int(listen[4]),
                    cfg["api"]["port"],
                    host=listen[2],
                )
            )
        genesis = load_genesis(households[0].dir / "genesis.toml")
        return cls(root=root, households=households, genesis=genesis)

    # ------------------------------------------------------------------ processes
    def start(self, which: list[int] | None = None, *, env: dict[str, str] | None = None) -> None:
        for h in self.households:
            if which is not None and h.index not in which:
                continue
            if h.process is not None and h.process.poll() is None:
                continue
            (h.dir / "ready").unlink(missing_ok=True)
            log = (h.dir / "daemon.log").open("ab")
            h.process = subprocess.Popen(
                [
                    *h.command_prefix,
                    sys.executable,
                    "-m",
                    "gridnode",
                    "run",
                    "--dir",
                    str(h.dir),
                    "--ready-file",
                    str(h.dir / "ready"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
            log.close()

    def wait_ready(self, timeout_s: float = 60.0, which: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        for h in self.households:
            if which is not None and h.index not in which:
                continue
            while not (h.dir / "ready").exists():
                if h.process is not None and h.process.poll() is not None:
                    tail = (h.dir / "daemon.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{h.name} exited with {h.process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{h.name} not ready after {timeout_s} s")
                time.sleep(0.1)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        h = self.households[index]
        if h.process is not None:
            h.process.send_signal(sig)
            h.process.wait(timeout=30)

    def stop(self, timeout_s: float = 15.0) -> dict[int, int]:
        """SIGTERM every daemon, wait, SIGKILL stragglers; return exit codes."""
        for h in self.households:
            if h.process is not None and h.process.poll() is None:
                h.process.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout_s
        for h in self.households:
            if h.process is None:
                continue
            try:
                codes[h.index] = h.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                h.process.kill()
                codes[h.index] = h.process.wait()
        return codes

    # ------------------------------------------------------------------ API
    def api(
        self, index: int, path: str, *, method: str = "GET", body: Any = None, timeout_s: float = 10
    ) -> Any:
        h = self.households[index]
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(h.api_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Host", "127.0.0.1")  # the API answers loopback names only (DNS rebinding)
        if method != "GET":
            req.add_header("Authorization", f"Bearer {load_token(h.dir)}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return {"http_status": exc.code, **json.loads(exc.read() or b"{}")}

    def wait_for(self, cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            time.sleep(poll_s)
        return cond()
