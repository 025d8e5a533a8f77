"""The sample full node: the same answer in a second process as inline; it refuses a forged chain."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import pytest

import sims.inproc
from gridnode.core.consensus_messages import (
    VoteType,
    block_hash,
    commit_from_votes,
    decode_commit,
    encode_commit,
    sign_vote,
)
from gridnode.core.ledger import Genesis, apply, decode_block, genesis_state
from market.errors import UsageError
from sims.fullnode import FullNode, FullNodeProcess
from sims.inproc import results_digest, run_inproc
from sims.results import SimResult
from sims.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _short() -> Scenario:
    base = load_scenario(SCENARIOS / "small.toml")
    return dataclasses.replace(base, days=0.125, start_hour=10.0, block_interval_s=120)


class _Recorder(FullNode):
    """A full node that also keeps what it was fed, so a test can feed it to another one."""

    fed: list[tuple[int, bytes, bytes]]
    genesis_seen: ClassVar[list[Genesis]] = []
    chains: ClassVar[list[list[tuple[int, bytes, bytes]]]] = []

    def __init__(self, genesis: Genesis) -> None:
        super().__init__(genesis)
        self.fed = []
        _Recorder.genesis_seen.append(genesis)
        _Recorder.chains.append(self.fed)

    def feed(self, height: int, block: bytes, commit: bytes) -> None:
        self.fed.append((height, block, commit))
        super().feed(height, block, commit)


@pytest.fixture(scope="module")
def recorded() -> tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sims.inproc, "FullNode", _Recorder)
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


def test_the_recorded_chain_replays_to_the_validators_state(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    result, genesis, chain = recorded
    node = FullNode(genesis)
    node.feed_all(chain)
    out = node.chain([len(chain)])
    assert out.problem == ""
    assert out.final_digest.hex() == result.state_digest
    assert out.digests == {len(chain): out.final_digest}
    assert sum(len(v) for v in out.readings.values()) > 0 and out.cleared


def test_a_forged_commit_a_gap_and_a_swapped_block_are_problems(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    _, genesis, chain = recorded
    h, block, commit = chain[1]
    c = decode_commit(commit)
    sig = c.signatures[0]
    bad_sig = dataclasses.replace(sig, signature=bytes(64))
    forged = encode_commit(dataclasses.replace(c, signatures=(bad_sig, *c.signatures[1:])))
    cases = {
        "does not verify": [chain[0], (h, block, forged)],
        "expected block 2": [chain[0], chain[2]],
        "does not verify ": [chain[0], (h, chain[2][1], commit)],  # another block under this commit
    }
    # the validators (whose keys the scenario derives from its seed) commit bytes that are no block
    _, v_keys = _short().node_keys()
    garbage = b"\x93garbage"
    votes = [
        sign_vote(k, vote_type=VoteType.PRECOMMIT, height=2, round_=0, value=block_hash(garbage),
                  validator=i)
        for i, k in enumerate(v_keys)
    ]  # fmt: skip
    node = FullNode(genesis)
    node.feed_all(
        [chain[0], (2, garbage, encode_commit(commit_from_votes(2, 0, block_hash(garbage), votes)))]
    )
    assert "committed block 2 breaks a ledger rule" in node.problem
    assert node.state.height == 1
    for needle, fed in cases.items():
        node = FullNode(genesis)
        node.feed_all(fed)
        out = node.chain([])
        assert needle.strip() in out.problem, (needle, out.problem)
        assert out.height == 1  # nothing after the problem was applied
        node.feed_all(chain[1:3])
        assert node.state.height == 1


def test_digests_are_kept_only_for_recent_heights(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    _, genesis, chain = recorded
    node = FullNode(genesis, keep=2)
    node.feed_all(chain[:4])
    out = node.chain([1, 4])
    assert 4 in out.digests and 1 not in out.digests
    assert "no state kept for height 1" in out.problem
    ahead = node.chain([4, 9])
    assert "a validator is at height 9, the full node at 4" in ahead.problem


def test_a_bad_full_node_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="full_node"):
        run_inproc(_short(), full_node="threads")


def test_a_dead_full_node_process_is_an_error_not_a_hang(
    recorded: tuple[SimResult, Genesis, list[tuple[int, bytes, bytes]]],
) -> None:
    _, genesis, chain = recorded
    node = FullNodeProcess(genesis)
    node.feed_all(chain[:2])
    node.flush()
    node._proc.kill()
    node.feed_all(chain[2:4])
    node.flush()  # the pipe is broken: nothing raised yet
    with pytest.raises(RuntimeError, match="full-node process ended"):
        node.chain([2])


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
