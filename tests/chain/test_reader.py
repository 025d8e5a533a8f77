"""The one chain reader: facts equal to what the ledger did, from any store; every refusal named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest

import sims.inproc
from gridnode.chain import (
    BlockFacts,
    ChainError,
    ChainReader,
    SlotCleared,
    stored_blocks,
    trade_row,
)
from gridnode.core.consensus_messages import block_hash
from gridnode.core.ledger import (
    Genesis,
    HouseholdTotals,
    LedgerState,
    Tx,
    decode_block,
    settle_slot,
    sign_cancel,
    sign_reading,
    tx_id,
)
from gridnode.store import Durability, MemoryStore, NodeStore
from market.clearing import clear
from market.errors import ChainReason, LedgerReason
from market.orders import Side
from market.settlement import GRID, POOL
from sims.fullnode import SampleFullNode
from sims.inproc import run_inproc
from sims.scenario import load_scenario
from tests.chain.helpers import commit_for
from tests.ledger.helpers import T0_MS, Community

SLOT = T0_MS // 1000 // 900 + 1  # open at T0: its gate closes 600 s after T0
Chain = list[tuple[int, bytes, bytes]]


def _small_chain() -> tuple[Community, Chain, LedgerState, dict[str, Tx]]:
    """Five blocks: orders (m0 sells, m1 and m2 buy, m3 sells); m0 replaces its order and m2
    cancels; the slot clears; m1, m3 and m4 read (m0, who sold, does not); the deadline passes."""
    c = Community(seed=3, n_members=5)
    m = [k.public_hex for k in c.members]
    state = c.state()
    chain: Chain = []
    tx: dict[str, Tx] = {
        "o0": c.order(0, Side.SELL, SLOT, (100_000, 800)),
        "o1": c.order(1, Side.BUY, SLOT, (200_000, 500)),
        "o2": c.order(2, Side.BUY, SLOT, (250_000, 400)),
        "o3": c.order(3, Side.SELL, SLOT, (190_000, 300)),
    }
    tx["o0b"] = c.order(0, Side.SELL, SLOT, (90_000, 600))  # replaces o0 (higher nonce)
    c.nonce[m[2]] += 1
    tx["x2"] = sign_cancel(c.members[2], c.genesis, slot=SLOT, nonce=c.nonce[m[2]])
    readings = [
        sign_reading(c.members[i], c.genesis, slot=SLOT, net_wh=w)
        for i, w in ((1, -450), (3, 120), (4, -60))
    ]
    gate_ms = (SLOT * 900 - 300) * 1000
    for time_ms, txs in (
        (T0_MS + 1_000, [tx["o0"], tx["o1"], tx["o2"], tx["o3"]]),
        (T0_MS + 2_000, [tx["o0b"], tx["x2"]]),
        (gate_ms + 1_000, []),  # clears the slot
        ((SLOT + 1) * 900_000 + 1_000, readings),  # delivered
        ((SLOT + 2) * 900_000 + 1_000, []),  # the reading deadline passed: settled
    ):
        block, state = c.block(state, time_ms, txs)
        assert len(block.txs) == len(txs)
        data = block.encode()
        chain.append((block.height, data, commit_for(c.validators, block.height, data)))
    return c, chain, state, tx


def _stores(chain: Chain, tmp_path: Path) -> dict[str, Any]:
    memory = MemoryStore()
    sqlite = NodeStore.open(tmp_path / "node.sqlite", durability=Durability.NORMAL)
    for store in (memory, sqlite):
        for height, block, commit in chain:
            store.put_block(height, block_hash(block), block, commit)
    return {"memory": memory, "sqlite": sqlite}


def _balances(facts: list[BlockFacts]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in facts:
        for s in f.settled:
            for t in s.settlement.transfers:
                out[t.payer] = out.get(t.payer, 0) - t.amount_micro
                out[t.payee] = out.get(t.payee, 0) + t.amount_micro
    return out


def _totals(facts: list[BlockFacts]) -> dict[str, HouseholdTotals]:
    sums: dict[str, list[int]] = {}
    for f in facts:
        for s in f.settled:
            for b in s.settlement.bills:
                acc = sums.setdefault(b.household, [0] * 7)
                for i, v in enumerate(
                    (b.bought_p2p_wh, b.sold_p2p_wh, b.grid_import_wh, b.grid_export_wh,
                     b.bill_micro, b.grid_only_bill_micro, 1)
                ):  # fmt: skip
                    acc[i] += v
    return {h: HouseholdTotals(*v) for h, v in sums.items()}


def test_the_facts_are_what_the_ledger_did_from_any_store(tmp_path: Path) -> None:
    c, chain, final, tx = _small_chain()
    m = [k.public_hex for k in c.members]
    stores = _stores(chain, tmp_path)
    read: dict[str, list[BlockFacts]] = {}
    try:
        for name, source in (("list", chain), *((n, stored_blocks(s)) for n, s in stores.items())):
            reader = ChainReader(c.genesis)
            read[name] = list(reader.read_all(source))
            assert reader.state.digest() == final.digest(), name
            assert reader.state.head_hash == final.head_hash
    finally:
        stores["sqlite"].close()
    facts = read["list"]
    assert read["memory"] == read["sqlite"] == facts
    assert [f.height for f in facts] == [1, 2, 3, 4, 5]
    assert facts[-1].block_hash == final.head_hash
    # orders as committed, the book as the ledger held it at gate closure: o0 replaced, o2 cancelled
    assert facts[0].orders == (tx["o0"], tx["o1"], tx["o2"], tx["o3"])
    assert facts[1].orders == (tx["o0b"],) and facts[1].cancels == (tx["x2"],)
    assert [f.cleared for f in facts[:2]] == [(), ()]
    (cleared,) = facts[2].cleared
    assert isinstance(cleared, SlotCleared) and cleared.slot == SLOT
    assert dict(cleared.book) == {m[0]: tx["o0b"], m[1]: tx["o1"], m[3]: tx["o3"]}
    expected = clear([so.order for so in cleared.book.values()], slot=SLOT)
    assert cleared.trades == tuple(expected.trades) and cleared.trades
    assert cleared.clearing_price_micro_per_kwh == expected.clearing_price_micro_per_kwh
    assert cleared.volume_wh == expected.volume_wh == 500
    # readings as signed; the settlement is the ledger's rule: m0 (sold, sent no reading) read 0 Wh
    assert {(r.household, r.net_wh) for r in facts[3].readings} == {
        (m[1], -450), (m[3], 120), (m[4], -60)
    }  # fmt: skip
    assert facts[3].settled == ()
    (settled,) = facts[4].settled
    assert dict(settled.readings) == {m[1]: -450, m[3]: 120, m[4]: -60}
    assert settled.settlement == settle_slot(c.genesis, SLOT, cleared.trades, settled.readings)
    seller = settled.settlement.bill(m[0])
    assert seller.measured_net_wh == 0 and seller.sold_p2p_wh > 0
    assert seller.grid_import_wh == seller.sold_p2p_wh  # bought its contract back at retail
    # equal to the ledger's final state: totals, balances (households, grid, pool), nothing left
    assert _totals(facts) == dict(final.totals)
    balances = _balances(facts)
    assert {k: v for k, v in balances.items() if v or k in (GRID, POOL)} == dict(final.balances)
    assert final.settled_slots == 1 and not final.trades and not final.readings


def test_signatures_checked_elsewhere_give_the_same_facts_and_only_for_those_bytes() -> None:
    c, chain, final, _ = _small_chain()
    plain = list(ChainReader(c.genesis).read_all(chain))
    checked = {tx_id(tx) for _, block, _ in chain for tx in decode_block(block).txs}
    with_cache = ChainReader(c.genesis, verified=set(checked))
    assert list(with_cache.read_all(chain)) == plain
    assert with_cache.state.digest() == final.digest()
    # an id vouches for its exact bytes only: a forged signature is still refused
    parsed = decode_block(chain[1][1])
    forged = dataclasses.replace(parsed.txs[0], signature=bytes(64))
    bad = dataclasses.replace(parsed, txs=(forged, *parsed.txs[1:])).encode()
    reader = ChainReader(c.genesis, verified=set(checked))
    reader.read(*chain[0])
    with pytest.raises(ChainError) as caught:
        reader.read(2, bad, commit_for(c.validators, 2, bad))
    assert caught.value.reason == ChainReason.BROKEN_RULE
    assert caught.value.cause is not None and caught.value.cause.reason == "bad_signature"


def test_every_refusal_is_named_and_nothing_of_it_is_applied() -> None:
    c, chain, _, _ = _small_chain()
    h2, block2, commit2 = chain[1]
    forged = bytearray(commit2)
    forged[-1] ^= 1  # the last signature's last byte

    def committed(block: bytes, height: int = 2) -> tuple[int, bytes, bytes]:
        return height, block, commit_for(c.validators, height, block)

    parsed = decode_block(block2)
    wrong_root = dataclasses.replace(parsed, state_root=bytes(32)).encode()
    tampered_tx = dataclasses.replace(parsed.txs[0], signature=bytes(64))
    bad_signature = dataclasses.replace(parsed, txs=(tampered_tx, *parsed.txs[1:])).encode()
    cases: list[tuple[tuple[int, bytes, bytes], ChainReason, str]] = [
        ((3, chain[2][1], chain[2][2]), LedgerReason.WRONG_HEIGHT, ""),
        ((h2, block2, bytes(forged)), ChainReason.BAD_COMMIT, "bad_signature"),
        ((h2, chain[2][1], commit2), ChainReason.BAD_COMMIT, ""),  # another block, this commit
        ((h2, block2, chain[2][2]), ChainReason.BAD_COMMIT, ""),  # this block, another commit
        (committed(b"\x93garbage"), ChainReason.BAD_BLOCK, ""),
        (committed(wrong_root), ChainReason.BROKEN_RULE, "wrong_state_root"),
        (committed(bad_signature), ChainReason.BROKEN_RULE, "bad_signature"),
    ]
    for fed, reason, cause in cases:
        reader = ChainReader(c.genesis)
        first = reader.read(*chain[0])
        with pytest.raises(ChainError) as caught:
            reader.read(*fed)
        err = caught.value
        assert err.reason == reason, (reason, err)
        assert err.height == fed[0]
        if cause:
            assert err.cause is not None and err.cause.reason == cause, err
        assert reader.height == 1 and reader.state.head_hash == first.block_hash
        reader.read(*chain[1])  # the right block still reads
        assert reader.height == 2


# ------------------------------------------------------------------- a real in-process chain


class _Recorder(SampleFullNode):
    chains: ClassVar[list[tuple[Genesis, Chain]]] = []

    def __init__(self, genesis: Genesis, slots: tuple[int, int]) -> None:
        super().__init__(genesis, slots)
        _Recorder.chains.append((genesis, []))

    def feed(self, height: int, block: bytes, commit: bytes) -> BlockFacts | None:
        _Recorder.chains[-1][1].append((height, block, commit))
        return super().feed(height, block, commit)


def test_a_simulated_communitys_chain_read_from_a_sqlite_store(tmp_path: Path) -> None:
    """The chain of an in-process run (4 validators, 12 households, orders, readings, clearing
    and settlement), stored as a daemon stores it and read back: the reader's trades are the run's
    trade table, its settlements sum to the validators' totals and balances."""
    scenario = load_scenario(Path(sims.inproc.__file__).parent / "scenarios" / "small.toml")
    scenario = dataclasses.replace(scenario, days=0.125, start_hour=10.0, block_interval_s=120)
    trades_out: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sims.inproc, "SampleFullNode", _Recorder)
        result = run_inproc(scenario, full_node="inline", trades_out=trades_out)
    genesis, chain = _Recorder.chains[-1]
    assert result.ledger_agreement and len(chain) == result.blocks_committed > 0
    store = NodeStore.open(tmp_path / "node.sqlite", durability=Durability.NORMAL)
    try:
        for height, block, commit in chain:
            store.put_block(height, block_hash(block), block, commit)
        reader = ChainReader(genesis)
        facts = list(reader.read_all(stored_blocks(store)))
    finally:
        store.close()
    final = reader.state
    assert final.digest().hex() == result.state_digest
    rows = [
        {"slot": cl.slot, **trade_row(t), "height": f.height}
        for f in facts
        for cl in f.cleared
        for t in cl.trades
    ]
    keys = (
        "slot",
        *trade_row(next(t for f in facts for cl in f.cleared for t in cl.trades)),
        "height",
    )
    assert rows == [{k: r[k] for k in keys} for r in trades_out] and rows
    assert sum(len(f.settled) for f in facts) == final.settled_slots > 0
    assert _totals(facts) == dict(final.totals)
    balances = _balances(facts)
    assert {k: v for k, v in balances.items() if v or k in (GRID, POOL)} == dict(final.balances)
    assert sum(len(f.readings) for f in facts) == sum(
        len(s.readings) for f in facts for s in f.settled
    )  # every reading was settled
