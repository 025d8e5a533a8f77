"""The network lab itself: daemons' namespaces reach each other through the bridge, a partition
cuts exactly the pairs it names (TCP sees silence), heal restores them, a delay holds every packet
at least that long, total loss passes nothing; the harness's own address is never faulted."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from sims.netns import LinkFaults, NetLab, netlab_unavailable
from tests.chaos import needs_netlab

pytestmark = [pytest.mark.net, needs_netlab]

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(); print("up", flush=True)
while True:
    c, _ = s.accept()
    while (d := c.recv(64)):
        c.sendall(d)
    c.close()
"""
_CLIENT = """
import socket, sys, time
try:
    c = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2]))
except OSError as exc:
    print("unreachable", type(exc).__name__); sys.exit(0)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
best = 1e9
for _ in range(5):
    t = time.monotonic(); c.sendall(b"x"); c.recv(8); best = min(best, time.monotonic() - t)
print("rtt_ms", round(best * 1000, 1))
"""


def _client(lab: NetLab, src: int, dst: int, timeout_s: float = 2.0) -> str:
    done = subprocess.run(
        [*lab.prefix(src), sys.executable, "-c", _CLIENT, lab.address(dst), str(timeout_s)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_partitions_heal_delay_and_loss_between_namespaces() -> None:
    with NetLab(3) as lab:
        servers = [
            subprocess.Popen(
                [*lab.prefix(i), sys.executable, "-c", _SERVER, lab.address(i)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        try:
            for s in servers:
                assert s.stdout is not None and s.stdout.readline().strip() == "up"
            assert _client(lab, 0, 1).startswith("rtt_ms")
            lab.partition([[0], [1, 2]])
            assert _client(lab, 0, 1).startswith("unreachable")
            assert _client(lab, 1, 0).startswith("unreachable")
            assert _client(lab, 1, 2).startswith("rtt_ms")  # same side: untouched
            lab.heal()
            assert _client(lab, 0, 1).startswith("rtt_ms")
            lab.cut([(0, 2)])  # one pair only: both still reach node 1
            assert _client(lab, 0, 2).startswith("unreachable")
            assert _client(lab, 0, 1).startswith("rtt_ms") and _client(lab, 2, 1).startswith(
                "rtt_ms"
            )
            lab.heal()
            lab.set_link(0, LinkFaults(delay_ms=120))
            lab.set_link(1, LinkFaults(delay_ms=60))
            rtt = float(_client(lab, 0, 1).split()[1])
            assert rtt >= 180  # each side holds its packets: 120 ms out, 60 ms back
            lab.set_link(1, LinkFaults(loss_pct=100.0))
            assert _client(lab, 0, 1, timeout_s=1.5).startswith("unreachable")
            lab.set_links({0: LinkFaults(), 1: LinkFaults()})
            # the harness (root namespace, the gateway address) is exempt from every fault
            lab.set_link(2, LinkFaults(delay_ms=300, loss_pct=100.0))
            t = time.monotonic()
            with socket.create_connection((lab.address(2), 7000), timeout=5) as c:
                c.sendall(b"y")
                assert c.recv(8) == b"y"
            assert time.monotonic() - t < 5
        finally:
            for s in servers:
                s.kill()
                s.wait()
                if s.stdout is not None:
                    s.stdout.close()
    assert netlab_unavailable() is None  # and the lab left nothing behind
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert f"gn{lab.tag}" not in names.stdout
