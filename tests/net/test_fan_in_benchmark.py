"""``benchmarks/fan_in.py`` counts what it says: dials, connections the hub holds, answers."""

from __future__ import annotations

import pytest
import trio

from tests.benchscripts import load_benchmark

pytestmark = pytest.mark.net


def test_the_fan_in_benchmark_counts_every_member_held_and_answered() -> None:
    fan_in = load_benchmark("fan_in")
    result = trio.run(fan_in.fan_in, 5, 2000)
    assert (result["dialled"], result["failed"], result["held"], result["answered"]) == (5, 0, 5, 5)
