"""The sample full node: the same answer in a second process as inline; it refuses a forged chain."""

from __future__ import annotations

import dataclasses
import gc
import random
import types
from pathlib import Path
from typing import ClassVar

import pytest

import sims.inproc
import tests.test_crypto_edges as edges
from gridnode.chain import BlockFacts
from gridnode.core.crypto import KeyPair, signing_bytes
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    SignedReading,
    apply,
    decode_block,
    genesis_state,
    sign_reading,
)
from gridnode.core.ledger.transactions import signed_body, verify_signature
from market.errors import UsageError
from sims.fullnode import SampleFullNode, SampleFullNodeProcess
from sims.inproc import results_digest, run_inproc
from sims.results import SimResult
from sims.scenario import Scenario, load_scenario
from tests.chain.helpers import commit_for
from tests.ledger.helpers import T0_MS, Community

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


# ------------------------------------------- a real full node: what it must refuse, by reason


def _edge_signed(c: Community, member: int, tx: SignedReading, case: str) -> SignedReading:
    """``tx`` re-signed by ``member``'s own key so that libsodium's strict rules refuse it while
    ZIP-215's (ed25519-zebra, batch verifiers) accept it, or just wrongly (``case``)."""
    key = c.members[member]
    signed = signing_bytes(c.genesis.domain("gn.tx.reading"), signed_body(tx))
    a, pub, r = edges._scalar(key.seed), key.public_key, 424242
    if case == "mixed_order_r":  # R = rB + T: the cofactored equation holds, the strict one not
        sig = edges._sign(a, pub, r, edges._add(edges._mul(r, edges.B), edges.T8), signed)
    elif case == "s_plus_l":  # S + L: the equation holds mod L, S is not canonical
        sig = edges._sign(a, pub, r, edges._mul(r, edges.B), signed, s_plus=edges.L)
    elif case == "small_order_r":
        sig = edges.SMALL_ORDER[3] + tx.signature[32:]
    else:  # another household's signature over the same bytes
        sig = c.members[member + 1].sign(c.genesis.domain("gn.tx.reading"), signed_body(tx))
    return SignedReading(tx.household, tx.slot, tx.net_wh, sig)


@pytest.mark.parametrize("case", ["mixed_order_r", "s_plus_l", "small_order_r", "other_key"])
def test_the_full_node_refuses_a_signature_strict_ed25519_refuses(case: str) -> None:
    """A committed block (commit by every validator, the right state root: a reading's
    signature is not in the state) whose one transaction's signature only a permissive verifier
    would accept: the full node stops there, naming the transaction's ``bad_signature``."""
    c = Community(seed=5, n_members=4)
    slot = T0_MS // 1000 // 900 + 1
    state = c.state()
    good = sign_reading(c.members[1], c.genesis, slot=slot, net_wh=-321)
    block, _ = c.block(state, (slot + 1) * 900_000 + 1_000, [good])
    bad = _edge_signed(c, 1, good, case)
    assert verify_signature(c.genesis, good) and not verify_signature(c.genesis, bad)
    forged = dataclasses.replace(block, txs=(bad,)).encode()
    assert decode_block(forged).state_root == block.state_root
    node = SampleFullNode(c.genesis, (slot, slot))
    assert node.feed(1, forged, commit_for(c.validators, 1, forged)) is None
    assert "block 1: broken_rule" in node.problem and "bad_signature" in node.problem
    assert node.state.height == 0
    fine = SampleFullNode(c.genesis, (slot, slot))  # the block as signed reads
    assert fine.feed(1, block.encode(), commit_for(c.validators, 1, block.encode())) is not None


def test_the_full_node_refuses_invalid_transactions_and_wrong_roots() -> None:
    """Each block below is committed by every validator and well formed: the full node refuses
    it for the ledger rule it breaks, and nothing of it is applied."""
    c = Community(seed=6, n_members=4)
    slot = T0_MS // 1000 // 900 + 1
    read_ms = (slot + 1) * 900_000 + 1_000
    state = c.state()
    r1 = sign_reading(c.members[1], c.genesis, slot=slot, net_wh=10)
    r1b = sign_reading(c.members[1], c.genesis, slot=slot, net_wh=11)
    block, _ = c.block(state, read_ms, [r1])
    outsider = KeyPair.from_rng(random.Random(77))
    cases = {
        "duplicate_reading": dataclasses.replace(block, txs=(r1, r1b)),
        "slot_not_delivered": dataclasses.replace(block, time_ms=T0_MS + 1_000),
        "not_a_member": dataclasses.replace(
            block, txs=(sign_reading(outsider, c.genesis, slot=slot, net_wh=1),)
        ),
        "wrong_state_root": dataclasses.replace(block, state_root=bytes(32)),
    }
    for reason, bad in cases.items():
        data = bad.encode()
        node = SampleFullNode(c.genesis, (slot, slot))
        assert node.feed(1, data, commit_for(c.validators, 1, data)) is None
        assert "broken_rule" in node.problem and reason in node.problem, (reason, node.problem)
        assert node.state.height == 0
