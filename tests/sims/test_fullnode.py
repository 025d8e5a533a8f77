"""The sample full node: the same answer in a second process as inline; it refuses a forged chain."""

from __future__ import annotations

import dataclasses
import gc
import types
from pathlib import Path
from typing import ClassVar

import pytest

import sims.inproc
from gridnode.chain import BlockFacts
from gridnode.core.ledger import Genesis, LedgerState, apply, decode_block, genesis_state
from market.errors import UsageError
from sims.fullnode import SampleFullNode, SampleFullNodeProcess
from sims.inproc import results_digest, run_inproc
from sims.results import SimResult
from sims.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _short() -> Scenario:
    base = load_scenario(SCENARIOS / "small.toml")
    return dataclasses.replace(base, days=0.125, start_hour=10.0, block_interval_s=120)


class _Recorder(SampleFullNode):
    """A full node that also keeps what it was fed, so a test can feed it to another one."""

    genesis_seen: ClassVar[list[Genesis]] = []
    chains: ClassVar[list[list[tuple[int, bytes, bytes]]]] = []

    def __init__(self, genesis: Genesis, slots: tuple[int, int]) -> None:
        super().__init__(genesis, slots)
        _Recorder.genesis_seen.append(genesis)
        _Recorder.chains.append([])

    def feed(self, height: int, block: bytes, commit: bytes) -> BlockFacts | None:
        _Recorder.chains[-1].append((height, block, commit))
        return super().feed(height, block, commit)


@pytest.fixture(scope="module")
def recorded() -> tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sims.inproc, "SampleFullNode", _Recorder)
        result = run_inproc(_short(), full_node="inline")
    return result, _Recorder.genesis_seen[-1], _Recorder.chains[-1]


def test_a_full_node_in_a_second_process_gives_the_same_results(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    inline, _, chain = recorded
    process = run_inproc(_short(), full_node="process")
    assert inline.ledger_agreement and process.ledger_agreement
    assert len(chain) == inline.blocks_committed > 0
    assert results_digest(process) == results_digest(inline)


def _window(result: SimResult) -> tuple[int, int]:
    return result.slots[0].slot, result.slots[-1].slot


def test_the_recorded_chain_replays_to_the_validators_state_and_records(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    result, genesis, chain = recorded
    node = SampleFullNode(genesis, _window(result))
    node.feed_all(chain)
    out = node.summary([len(chain)])
    assert out.problem == ""
    assert out.final_digest.hex() == result.state_digest
    assert out.digests == {len(chain): out.final_digest}
    market = out.market
    assert market.totals_agree and all(m.settled for m in market.slots)
    assert [(m.slot, m.height, m.clearing_price_micro_per_kwh, len(m.trades), m.orders,
             sum(t.energy_wh for t in m.trades), m.grid_import_wh, m.imbalance_cost_micro)
            for m in market.slots] == [
        (r.slot, r.commit_height, r.clearing_price_micro_per_kwh, r.trades, r.orders, r.volume_wh,
         r.grid_import_wh, r.imbalance_cost_micro)
        for r in result.slots
    ]  # fmt: skip
    assert sum(len(m.trades) for m in market.slots) > 0


def test_a_problem_stops_the_full_node(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    """What the reader refuses (tested in tests/chain) is the node's problem; later blocks are
    ignored and the summary says so."""
    result, genesis, chain = recorded
    node = SampleFullNode(genesis, _window(result))
    node.feed_all([chain[0], chain[2], *chain[1:4]])
    out = node.summary([])
    assert "block 3: wrong_height" in out.problem, out.problem
    assert out.height == node.state.height == 1


def test_digests_are_kept_only_for_recent_heights(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    result, genesis, chain = recorded
    node = SampleFullNode(genesis, _window(result), keep=2)
    node.feed_all(chain[:4])
    out = node.summary([1, 4])
    assert 4 in out.digests and 1 not in out.digests
    assert "no state kept for height 1" in out.problem
    ahead = node.summary([4, 9])
    assert "a validator is at height 9, the full node at 4" in ahead.problem


def _reachable(root: object, kind: type) -> int:
    """How many ``kind`` objects ``root`` holds, directly or through the objects it references
    (modules, classes and functions are not followed: they are shared, not held)."""
    seen: set[int] = set()
    todo, found = [root], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        found += isinstance(obj, kind)
        todo.extend(gc.get_referents(obj))
    return found


def test_a_full_node_holds_one_state_however_long_the_chain(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    """Its memory does not grow with the chain by states: it keeps the reader's state and the
    last ``keep`` digests (each state carries a copy of every clearing price so far: 64 of them
    were ≈ 80 MB at the end of a year's run)."""
    result, genesis, chain = recorded
    assert len(chain) > 8
    node = SampleFullNode(genesis, _window(result), keep=4)
    node.feed_all(chain)
    assert _reachable(node, LedgerState) == 1
    out = node.summary(range(len(chain) - 3, len(chain) + 1))
    assert out.problem == "" and out.digests[len(chain)] == node.state.digest()
    assert sorted(out.digests) == list(range(len(chain) - 3, len(chain) + 1))


def test_a_bad_full_node_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="full_node"):
        run_inproc(_short(), full_node="threads")


def test_a_dead_full_node_process_is_an_error_not_a_hang(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    result, genesis, chain = recorded
    node = SampleFullNodeProcess(genesis, _window(result))
    node.feed_all(chain[:2])
    node.flush()
    node._proc.kill()
    node.feed_all(chain[2:4])
    node.flush()  # the pipe is broken: nothing raised yet
    with pytest.raises(RuntimeError, match="full-node process ended"):
        node.summary([2])


def test_the_memoised_state_encoding_is_the_plain_one_at_every_height(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    """Along a real chain (orders, readings, clearing, settlement), the state encoding assembled
    from memoised parts equals the plain definition, and so does a fresh state's."""
    _, genesis, chain = recorded
    state = genesis_state(genesis)
    for _, block, _ in chain:
        before = state
        state = apply(state, decode_block(block))
        assert state.encode() == state._encode_plain()
        assert dataclasses.replace(state, memo={}).digest() == state.digest()
        assert before.encode() == before._encode_plain()  # the shared memo moved on: still right
    assert state.settled_slots > 0 and state.height == len(chain)
