"""Helpers: set a community up the way the README tells a user to, with real ``gridnode`` processes.

``gridnode init`` per household, ``gridnode community create`` once, the genesis copied into every
directory, per-node config edits, ``gridnode run`` — each a separate process, as typed in a shell.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridnode.config import update_config
from sims.daemons import free_port


def gridnode(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ok(*args: str) -> str:
    done = gridnode(*args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


@dataclass
class Node:
    dir: Path
    p2p_port: int
    api_port: int
    peer_id: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def start(self) -> None:
        log = (self.dir / "daemon.log").open("ab")
        (self.dir / "ready").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gridnode", "run", "--dir", str(self.dir),
             "--ready-file", str(self.dir / "ready")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.dir / "ready").exists():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError((self.dir / "daemon.log").read_text()[-3000:])
            assert time.monotonic() < deadline, f"{self.dir} not ready"
            time.sleep(0.1)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def init_node(d: Path, role: str) -> Node:
    p2p, api = free_port(), free_port()
    out = ok("init", "--dir", str(d), "--role", role, "--listen", f"/ip4/127.0.0.1/tcp/{p2p}",
             "--api-port", str(api))  # fmt: skip
    peer = next(line.split()[-1] for line in out.splitlines() if line.startswith("libp2p peer id"))
    return Node(d, p2p, api, peer)


def readme_community(root: Path, *, validators: int, full_nodes: int, speedup: int) -> list[Node]:
    """The README's "Run a household" steps for a small community on loopback."""
    nodes = [init_node(root / f"v{i}", "validator") for i in range(validators)]
    nodes += [init_node(root / f"h{i}", "full") for i in range(full_nodes)]
    create = ["community", "create", "--id", "readme-street", "--out", str(root / "genesis.toml"),
              "--clock-speedup", str(speedup)]  # fmt: skip
    for n in nodes:
        create += ["--member", str(n.dir)]
    for n in nodes[:validators]:
        create += ["--validator", str(n.dir)]
    ok(*create)
    boot = [n.multiaddr for n in nodes[:validators]]
    for n in nodes:
        shutil.copyfile(root / "genesis.toml", n.dir / "genesis.toml")  # cp genesis.toml DIR/
        update_config(  # $EDITOR DIR/gridnode.toml: bootstrap peers, no mDNS on a shared box
            n.dir,
            {"network.bootstrap": [a for a in boot if a != n.multiaddr], "network.mdns": False},
        )
    return nodes


def wait_for(cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(poll_s)
    return cond()
