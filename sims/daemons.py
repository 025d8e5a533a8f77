"""Launch a real local community: N ``gridnode run`` processes on loopback talking libp2p.

Used by ``gridnode demo`` (the README's main job), by the integration tests and by the simulation
harness's daemon engine. A community is set up exactly the way the README tells a user to, through the
same command-line code (:func:`gridnode.cli.main`, in process): ``gridnode init`` per household (its own
data directory, libp2p port and API port), ``gridnode community create`` once (the genesis names the
members and validators and, with ``--clock-speedup``, the community clock and its drift bound), the
genesis copied into every directory, then per-node config edits (every node bootstraps to the
validators; no mDNS). So every test that starts daemons through this launcher exercises the CLI path.
Nothing here is a fake: the daemons are the same processes a household runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gridnode.cli import main as gridnode_main
from gridnode.config import (
    GENESIS_NAME,
    IDENTITY_NAME,
    load_genesis,
    load_identity,
    load_token,
    update_config,
    write_atomic,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis
from gridnode.launcher import LaunchedProcess, Launcher, default_launcher
from gridnode.net.host import peer_id_of
from market.clearing import Rule
from market.errors import UsageError
from market.settlement import Netting

__all__ = ["Household", "LocalCommunity", "free_port", "gridnode_cli"]


#: listen ports come from here: below the kernel's ephemeral range (32768+), which it hands out for
#: outgoing connections, so a daemon dialling out never takes a port another has yet to bind
_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range, never the same twice per process."""
    rng = random.SystemRandom()
    while True:
        port = rng.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def gridnode_cli(*args: str) -> str:
    """Run one ``gridnode`` command in this process, as a user would type it; its stdout, or
    :class:`UsageError` with its one-line error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = gridnode_main(list(args))
    if code != 0:
        raise UsageError(err.getvalue().strip() or f"gridnode {args[0]} exited {code}")
    return out.getvalue()


@dataclass
class Household:
    index: int
    dir: Path
    key: KeyPair
    role: str
    p2p_port: int
    api_port: int
    process: subprocess.Popen[bytes] | LaunchedProcess | None = None
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
    #: start daemons forked from this pre-imported launcher (not those with a command prefix);
    #: ``None``: the process-wide one unless ``$GRIDNODE_LAUNCHER=0``; ``False``: exec each one
    launcher: Launcher | Literal[False] | None = None

    def create(self) -> None:
        """Set the community up the README's way (see the module docstring): fresh keys (or
        :attr:`keys`), free ports, the shared genesis, per-node config edits."""
        if self.validators < 1:
            raise UsageError("a community needs at least one validator")
        if self.speedup != int(self.speedup) or self.speedup < 1:
            raise UsageError(f"the clock speed-up must be a whole number >= 1, got {self.speedup}")
        self.root.mkdir(parents=True, exist_ok=True)
        roles = ["validator"] * self.validators + ["full"] * self.full_nodes
        if self.keys and len(self.keys) != len(roles):
            raise UsageError(f"{len(self.keys)} keys for {len(roles)} nodes")
        for i, role in enumerate(roles):
            d = self.root / f"node{i}"
            p2p, api = free_port(), free_port()
            init = ["init", "--dir", str(d), "--role", role, "--api-port", str(api)]
            init += ["--listen", f"/ip4/127.0.0.1/tcp/{p2p}"]
            with self._identity_file(i) as identity:
                gridnode_cli(*init, *(["--identity", str(identity)] if identity else []))
            self.households.append(Household(i, d, load_identity(d), role, p2p, api))
        genesis_file = self.root / GENESIS_NAME
        create = ["community", "create", f"--id={self.community_id}", "--out", str(genesis_file)]
        create += ["--genesis-time-ms", str(time.time_ns() // 1_000_000)]
        create += ["--clock-speedup", str(int(self.speedup))]
        create += ["--slot-seconds", str(self.slot_seconds)]
        create += ["--gate-lead-seconds", str(self.gate_lead_seconds)]
        create += ["--reading-deadline-seconds", str(self.slot_seconds)]
        create += ["--rule", self.rule.value, "--netting", self.netting.value, "--force"]
        for h in self.households:
            create += ["--member", str(h.dir)]
            if h.role == "validator":
                create += ["--validator", str(h.dir)]
        for extra in self.extra_members:
            create += ["--member", extra]
        gridnode_cli(*create)
        self.genesis = load_genesis(genesis_file)
        boot = [h.multiaddr() for h in self.households if h.role == "validator"]
        for h in self.households:
            shutil.copyfile(genesis_file, h.dir / GENESIS_NAME)  # "cp genesis.toml ~/gridnode/"
            me = h.multiaddr()
            update_config(
                h.dir,
                {"network.bootstrap": [a for a in boot if a != me], "network.mdns": False},
            )

    @contextlib.contextmanager
    def _identity_file(self, index: int) -> Iterator[Path | None]:
        """The given key of node ``index`` as an identity file for ``init --identity`` (removed
        after), or ``None`` for a fresh key."""
        if not self.keys:
            yield None
            return
        path = self.root / f".node{index}.{IDENTITY_NAME}"
        write_atomic(path, self.keys[index].seed.hex() + "\n", mode=0o600)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

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
    def start(
        self, which: list[int] | None = None, *, env: dict[str, str] | None = None, nice: int = 0
    ) -> None:
        """Start the daemons ``which`` (all by default) that are not running. ``nice`` > 0 runs
        them at that lower CPU priority (``nice -n``): on one shared machine, households niced
        leave the committee its share of the cores, as validators on their own machines have."""
        if nice < 0:
            raise UsageError(f"nice must be >= 0 (never above other users' jobs), got {nice}")
        lower = ("nice", "-n", str(nice)) if nice else ()
        for h in self.households:
            if which is not None and h.index not in which:
                continue
            if h.process is not None and h.process.poll() is None:
                continue
            (h.dir / "ready").unlink(missing_ok=True)
            run = ["run", "--dir", str(h.dir), "--ready-file", str(h.dir / "ready")]
            launcher = default_launcher() if self.launcher is None else self.launcher
            if launcher and not h.command_prefix:  # forked from a pre-imported parent: launcher.py
                h.process = launcher.spawn(
                    run, log=h.dir / "daemon.log", env={**os.environ, **(env or {})}, nice=nice
                )
                continue
            log = (h.dir / "daemon.log").open("ab")
            h.process = subprocess.Popen(
                [*h.command_prefix, *lower, sys.executable, "-m", "gridnode", *run],
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
