"""The daemon's community clock, on trio's clock.

Rules:

* The community clock reads ``epoch + (wall − epoch) × speedup`` in unix ms, with ``epoch`` the
  genesis time. Every node of a community must run the same speedup (demos use e.g. 60: a 15-minute
  slot in 15 s of wall time).
* ``wall`` is **trio's clock**, anchored once to the wall clock: :meth:`NodeClock.start` (on the trio
  thread, inside ``trio.run``) reads the running trio clock and the wall time together; afterwards
  ``wall = anchor_wall + (trio time − anchor_trio)``. So every timer of the daemon (its consensus
  timeouts, the household's slot boundaries) and every time it stamps run on one clock, and under
  ``trio.testing.MockClock(autojump_threshold=0)`` a test drives hours of community time in
  milliseconds.
* :meth:`NodeClock.now_ms` may be read from any thread (the API's asyncio thread does): it asks the
  trio clock object captured at start, whose reading is thread-safe.

Known limit: the wall clock is read once. A later step of the system clock (NTP correcting a wrong
clock) is followed after a restart only; start the daemon once the system clock is synchronised
(e.g. systemd's ``After=time-sync.target``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio

__all__ = ["NodeClock"]


@dataclass(frozen=True, slots=True)
class NodeClock:
    """The community clock: trio's clock anchored to wall time, optionally sped up around ``epoch_ms``."""

    epoch_ms: int
    speedup: float
    anchor_wall_ms: int  # wall time (unix ms) at the anchor
    anchor_s: float  # the trio clock's reading at the anchor
    source: trio.abc.Clock  # the trio run's clock

    @classmethod
    def start(
        cls, *, epoch_ms: int = 0, speedup: float = 1.0, wall_ms: int | None = None
    ) -> NodeClock:
        """The clock of the running trio run, anchored now to ``wall_ms`` (the system's wall time
        unless given: a test under a mock clock passes its own)."""
        source = trio.lowlevel.current_clock()
        wall = time.time_ns() // 1_000_000 if wall_ms is None else wall_ms
        return cls(epoch_ms, speedup, wall, source.current_time(), source)

    def wall_ms(self) -> int:
        """Wall time in unix ms, on trio's clock."""
        return self.anchor_wall_ms + int((self.source.current_time() - self.anchor_s) * 1000)

    def now_ms(self) -> int:
        """The community clock in unix ms."""
        wall = self.wall_ms()
        if self.speedup == 1.0:
            return wall
        return self.epoch_ms + int((wall - self.epoch_ms) * self.speedup)

    def seconds_until(self, at_ms: int) -> float:
        """Trio seconds until the community clock reads ``at_ms`` (0 if it has)."""
        return max(0.0, (at_ms - self.now_ms()) / 1000 / self.speedup)
