"""A network lab for real daemons: each node in its own network namespace, faults between them.

Used by the chaos suite (:mod:`sims.chaos`). Linux only, and root only (``ip netns``); all
addresses are the lab's own (a free ``10.77.X.0/24``); nothing outside the lab is changed except
one veth pair in the root namespace, so the harness can reach every node.

Layout::

    root ns ── gn<tag>gw (10.77.X.1) ═══ veth ═══╗
                                                 ║  switch ns gn<tag>sw: bridge br0
    node ns gn<tag>n0: eth0 (10.77.X.10) ═══ veth ╣
    node ns gn<tag>n1: eth0 (10.77.X.11) ═══ veth ╝ …

The bridge lives in its own namespace so the host's firewall (a ``FORWARD`` policy of ``DROP``,
bridge netfilter) never sees the lab's traffic. A daemon runs in its node's namespace through the
command prefix :meth:`NetLab.prefix` (``ip netns exec gn<tag>n<i>``) and listens on its node's
address.

Faults, per node, on what it **sends** (its namespace's ``OUTPUT`` chain; traffic to and from the
harness's gateway address is exempt, so the harness measures without being slowed):

* **partitions** — :meth:`NetLab.partition` (groups that cannot reach each other), :meth:`cut`
  (single pairs, both directions); :meth:`heal` lifts them. Packets are dropped (a cable cut: TCP
  sees silence, not resets);
* **loss** — a fraction of packets dropped at random (``iptables -m statistic``);
* **latency** — each packet held for a fixed delay before it leaves (:meth:`set_link`).

Why not ``tc netem``: it is the usual tool, but kernels built without ``CONFIG_NET_SCH_NETEM``
(this project's CI VMs among them) have no netem qdisc, and no other qdisc delays packets. So loss
and partitions are netfilter rules (``iptables-legacy``), and latency is netfilter's packet queue
(``NFQUEUE``): the kernel holds each packet while a small userspace process (the *delayer*,
``python -m sims.netns delayer``, one for the whole lab) gives its verdict after the delay, in the
order packets arrived. The queue rule has ``--queue-bypass``: if the delayer dies, packets pass
undelayed rather than being lost. Rules are replaced atomically per node (``iptables-restore``).

Known limits: IPv4 only; one delay and one loss rate per node's egress (a packet from A to B
sees A's); the delay is constant (no jitter, so no reordering); ARP is never dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from market.errors import UsageError

__all__ = ["LinkFaults", "NetLab", "netlab_unavailable"]

_MARKERS = Path("/run/gridnode-netlab")
_IPTABLES = ("iptables-legacy", "iptables")


def _run(*args: str, input_: str | None = None) -> None:
    done = subprocess.run(args, input=input_, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")


def _output(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def _iptables() -> str | None:
    for name in _IPTABLES:
        if shutil.which(name) and shutil.which(name + "-restore"):
            return name
    return None


def netlab_unavailable() -> str | None:
    """Why a :class:`NetLab` cannot run here (a sentence), or ``None`` if it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip",):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    if _iptables() is None:
        return "`iptables` is not installed (apt-get install iptables)"
    probe = f"gnprobe{os.getpid() % 100_000}"
    try:
        _run("ip", "netns", "add", probe)
    except UsageError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ipt = _iptables()
        assert ipt is not None
        _run("ip", "netns", "exec", probe, ipt, "-A", "OUTPUT", "-j", "NFQUEUE", "--queue-bypass")
        _run("ip", "netns", "exec", probe, ipt, "-A", "OUTPUT", "-m", "statistic",
             "--mode", "random", "--probability", "0.5", "-j", "DROP")  # fmt: skip
    except UsageError as exc:
        return f"the kernel lacks netfilter queue/statistic support: {exc}"
    finally:
        with contextlib.suppress(UsageError):
            _run("ip", "netns", "del", probe)
    return None


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """What one node's outgoing packets suffer: a fixed delay and a random loss."""

    delay_ms: int = 0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= 10_000 or not 0.0 <= self.loss_pct <= 100.0:
            raise UsageError(f"delay 0..10000 ms and loss 0..100 %, got {self}")


@dataclass
class NetLab:
    """``nodes`` namespaces joined by a bridge (see the module docstring). Use as a context
    manager or call :meth:`open` / :meth:`close`."""

    nodes: int
    tag: str = field(default_factory=lambda: _tag(os.getpid()))
    subnet: int = 0  # X of 10.77.X.0/24; 0: pick a free one
    faults: dict[int, LinkFaults] = field(default_factory=dict)
    #: node pairs that cannot reach each other (both directions)
    cuts: set[frozenset[int]] = field(default_factory=set)
    _delayer: subprocess.Popen[str] | None = None
    _opened: bool = False

    # ------------------------------------------------------------------ names and addresses
    def ns(self, i: int) -> str:
        return f"gn{self.tag}n{i}"

    @property
    def switch(self) -> str:
        return f"gn{self.tag}sw"

    @property
    def gateway(self) -> str:
        """The root namespace's address in the lab (the harness talks to nodes from it)."""
        return f"10.77.{self.subnet}.1"

    def address(self, i: int) -> str:
        return f"10.77.{self.subnet}.{10 + i}"

    def prefix(self, i: int) -> tuple[str, ...]:
        """The command prefix that runs a program in node ``i``'s namespace."""
        return ("ip", "netns", "exec", self.ns(i))

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> NetLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> NetLab:
        why = netlab_unavailable()
        if why is not None:
            raise UsageError(why)
        if not 1 <= self.nodes <= 200:
            raise UsageError(f"a lab holds 1..200 nodes, got {self.nodes}")
        sweep_stale_labs()
        if not self.subnet:
            self.subnet = _free_subnet()
        _MARKERS.mkdir(parents=True, exist_ok=True)
        (_MARKERS / self.tag).write_text(f"{os.getpid()}\n", encoding="utf-8")
        self._opened = True
        try:
            self._build()
            self._delayer = _start_delayer([self.ns(i) for i in range(self.nodes)])
            for i in range(self.nodes):
                self._apply(i)
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        sw, gw = self.switch, f"gn{self.tag}gw"
        _run("ip", "netns", "add", sw)
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        _run("ip", "link", "add", gw, "type", "veth", "peer", "name", "gw", "netns", sw)
        _run("ip", "-n", sw, "link", "set", "gw", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", gw)
        _run("ip", "link", "set", gw, "up")
        for i in range(self.nodes):
            ns = self.ns(i)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                 "netns", ns)  # fmt: skip
            _run("ip", "-n", sw, "link", "set", f"v{i}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def close(self) -> None:
        """Stop the delayer, delete the namespaces and the gateway link. Idempotent."""
        if self._delayer is not None:
            with contextlib.suppress(OSError):
                self._delayer.kill()
            self._delayer.wait()
            for pipe in (self._delayer.stdin, self._delayer.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._delayer = None
        if self._opened:
            _remove_lab(self.tag)
            self._opened = False

    # ------------------------------------------------------------------ faults
    def set_link(self, i: int, faults: LinkFaults) -> None:
        """Node ``i``'s outgoing packets get ``faults`` from now on."""
        self.faults[i] = faults
        self._apply(i)

    def set_links(self, faults: dict[int, LinkFaults]) -> None:
        for i, f in faults.items():
            self.set_link(i, f)

    def cut(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Nodes of each pair can no longer reach each other (both directions)."""
        touched: set[int] = set()
        for a, b in pairs:
            if a != b:
                self.cuts.add(frozenset((a, b)))
                touched |= {a, b}
        for i in sorted(touched):
            self._apply(i)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Nodes in different groups cannot reach each other; nodes in no group are untouched."""
        self.cut(
            (a, b)
            for gi, ga in enumerate(groups)
            for gb in groups[gi + 1 :]
            for a in ga
            for b in gb
        )

    def heal(self) -> None:
        """Lift every cut (latency and loss stay)."""
        touched = {i for pair in self.cuts for i in pair}
        self.cuts.clear()
        for i in sorted(touched):
            self._apply(i)

    def _apply(self, i: int) -> None:
        ipt = _iptables()
        assert ipt is not None
        f = self.faults.get(i, LinkFaults())
        rules = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        rules += [f"-A OUTPUT -d {self.gateway}/32 -j ACCEPT", "-A OUTPUT -o lo -j ACCEPT"]
        for pair in sorted(self.cuts, key=sorted):
            if i in pair:
                (other,) = pair - {i}
                rules.append(f"-A OUTPUT -d {self.address(other)}/32 -j DROP")
        if f.loss_pct > 0:
            p = f"{f.loss_pct / 100:.6f}"
            rules.append(f"-A OUTPUT -m statistic --mode random --probability {p} -j DROP")
        if f.delay_ms > 0:
            rules.append("-A OUTPUT -j NFQUEUE --queue-num 0 --queue-bypass")
        rules.append("COMMIT")
        _run(*self.prefix(i), ipt + "-restore", input_="\n".join(rules) + "\n")
        if self._delayer is not None and self._delayer.stdin is not None:
            self._delayer.stdin.write(f"{self.ns(i)} {f.delay_ms}\n")
            self._delayer.stdin.flush()


def _tag(pid: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    n = pid % 36**4
    for _ in range(4):
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def _free_subnet() -> int:
    used = {
        int(m.group(1))
        for m in re.finditer(
            r"10\.77\.(\d+)\.",
            _output("ip", "-4", "-o", "addr"),
        )
    }
    for x in range(1 + os.getpid() % 200, 255):
        if x not in used:
            return x
    for x in range(1, 255):
        if x not in used:
            return x
    raise UsageError("no free 10.77.X.0/24 subnet for a network lab")


def _remove_lab(tag: str) -> None:
    names = _output("ip", "netns", "list")
    for line in names.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"gn{tag}"):
            with contextlib.suppress(UsageError):
                _run("ip", "netns", "del", name)
    with contextlib.suppress(UsageError):
        _run("ip", "link", "del", f"gn{tag}gw")
    (_MARKERS / tag).unlink(missing_ok=True)


def sweep_stale_labs() -> list[str]:
    """Remove labs whose owner process is gone (a harness killed before it could clean up)."""
    removed: list[str] = []
    if not _MARKERS.is_dir():
        return removed
    for marker in _MARKERS.iterdir():
        try:
            pid = int(marker.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and Path(f"/proc/{pid}").exists():
            continue
        _remove_lab(marker.name)
        removed.append(marker.name)
    return removed


# ------------------------------------------------------------------------------------ the delayer


def _start_delayer(namespaces: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sims.netns", "delayer", *namespaces],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise UsageError(f"the packet delayer did not start: {line.strip() or proc.wait()}")
    return proc


_NETLINK_NETFILTER = 12
_CLONE_NEWNET = 0x40000000
_QUEUE = 3 << 8  # NFNL_SUBSYS_QUEUE
_MSG_PACKET, _MSG_VERDICT, _MSG_CONFIG = _QUEUE | 0, _QUEUE | 1, _QUEUE | 2
_NLM_F_REQUEST = 1
_NF_ACCEPT = 1


def _nlattr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def _nlmsg(kind: int, queue: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST, 0, 0) + body


def _queue_socket(ns: str) -> socket.socket:
    """A netlink socket bound to queue 0 of namespace ``ns`` (created inside it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    finally:
        libc.setns(home, _CLONE_NEWNET)
        os.close(target)
        os.close(home)
    s.bind((0, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    # bind queue 0 (NFQNL_CFG_CMD_BIND), copy metadata only, a long queue, fail open when full
    s.send(_nlmsg(_MSG_CONFIG, 0, _nlattr(1, struct.pack("!BBH", 1, 0, socket.AF_INET))))
    s.send(_nlmsg(_MSG_CONFIG, 0, _nlattr(2, struct.pack("!IB", 0, 1))))
    s.send(_nlmsg(_MSG_CONFIG, 0, _nlattr(3, struct.pack("!I", 16_384))))
    s.send(
        _nlmsg(_MSG_CONFIG, 0, _nlattr(5, struct.pack("!I", 1)) + _nlattr(6, struct.pack("!I", 1)))
    )
    return s


def _packet_ids(data: bytes) -> Iterable[int]:
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            return
        if kind == _MSG_PACKET:
            a, end = off + 20, off + length
            while a + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR: packet id first
                    yield struct.unpack_from("!I", data, a + 4)[0]
                a += (alen + 3) & ~3
        off += (length + 3) & ~3


def run_delayer(namespaces: list[str], commands: IO[str], out: IO[str]) -> None:
    """Hold every packet queued in each namespace for its delay, then accept it (in order).
    ``commands``: lines ``<namespace> <delay_ms>``; ends at EOF."""
    sockets = {ns: _queue_socket(ns) for ns in namespaces}
    by_fd = {s.fileno(): (ns, s) for ns, s in sockets.items()}
    delay_s = dict.fromkeys(namespaces, 0.0)
    held: list[tuple[float, int, str, int]] = []  # (release at, seq, namespace, packet id)
    seq = 0
    out.write("ready\n")
    out.flush()
    cmd_fd = commands.fileno()
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        ready, _, _ = select.select([cmd_fd, *by_fd], [], [], timeout)
        for fd in ready:
            if fd == cmd_fd:
                line = commands.readline()
                if not line:
                    return
                ns, _, ms = line.strip().partition(" ")
                if ns in delay_s:
                    delay_s[ns] = int(ms) / 1000
                continue
            ns, s = by_fd[fd]
            try:
                data = s.recv(1 << 16)
            except OSError:  # ENOBUFS: the kernel dropped messages (fail-open accepts them)
                continue
            now = time.monotonic()
            for pid in _packet_ids(data):
                seq += 1
                heapq.heappush(held, (now + delay_s[ns], seq, ns, pid))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, ns, pid = heapq.heappop(held)
            verdict = _nlattr(2, struct.pack("!II", _NF_ACCEPT, pid))
            with contextlib.suppress(OSError):
                sockets[ns].send(_nlmsg(_MSG_VERDICT, 0, verdict))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "delayer":
        run_delayer(sys.argv[2:], sys.stdin, sys.stdout)
    elif len(sys.argv) == 2 and sys.argv[1] == "sweep":
        print("\n".join(sweep_stale_labs()))
    else:
        sys.exit("usage: python -m sims.netns delayer NS... | sweep")
