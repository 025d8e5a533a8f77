"""``GET /api/proof``: the real API serves a node's bill proofs (kept by gridnode.bills.ProofKeeper
from its commits), and what it serves verifies against the genesis alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio

from gridnode.api import RunningApi, make_app, start_api
from gridnode.bills import ProofKeeper
from gridnode.core.consensus_messages import block_hash
from gridnode.core.ledger import decode_block
from gridnode.core.ledger.proofs import verify_bill_proof
from gridnode.node import Committed
from gridnode.status import Snapshot
from gridnode.store import MemoryStore
from tests.audit.helpers import SLOT, SmallChain, small_chain


@dataclass
class Handle:
    """What the API reads of a node here: its snapshot and its proof keeper."""

    chain: SmallChain
    proofs: ProofKeeper

    def snapshot(self) -> Snapshot:
        state = self.chain.states[-1]
        me = self.chain.community.members[1].public_hex
        return Snapshot("peer", me, "full", state.genesis.community_id, state.time_ms, state)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[tuple[aiohttp.ClientSession, SmallChain]]:
    chain = small_chain()
    store = MemoryStore()
    keeper = ProofKeeper(store, keep=1)  # keeps the last settlement height and the head
    for height, data, commit in chain.chain:
        store.put_block(height, block_hash(data), data, commit)
        keeper.on_commit(
            Committed(height, block_hash(data), chain.states[height], decode_block(data))
        )
    assert keeper.heights == [8, 9]  # the last settlement height kept (keep=1), and the head
    running: RunningApi = await start_api(
        make_app(Handle(chain, keeper), token="t"), "127.0.0.1", 0
    )
    try:
        async with aiohttp.ClientSession(base_url=running.url) as session:
            yield session, chain
    finally:
        await running.stop()


@pytest.mark.asyncio
async def test_a_settled_slots_bill_and_the_head_are_served_and_verify(
    http: tuple[aiohttp.ClientSession, SmallChain],
) -> None:
    session, chain = http
    g = chain.community.genesis
    m1 = chain.community.members[1].public_hex
    async with session.get("/api/proof", params={"slot": str(SLOT)}) as r:  # this node's household
        assert r.status == 200
        doc = await r.json()
    bill = verify_bill_proof(g, bytes.fromhex(doc["proof_hex"]))
    assert bill.household == m1 and doc["bytes"] == len(doc["proof_hex"]) // 2
    assert bill.height == doc["height"] == 8 and bill.slots[0].bill is not None  # SLOT settled at 8
    async with session.get("/api/proof", params={"household": g.members[4]}) as r:
        doc = await r.json()
    assert verify_bill_proof(g, bytes.fromhex(doc["proof_hex"])).height == len(chain.chain)


@pytest.mark.asyncio
async def test_what_is_not_kept_or_not_a_member_is_refused_with_its_reason(
    http: tuple[aiohttp.ClientSession, SmallChain],
) -> None:
    session, _ = http
    for params, status, reason in (
        ({"slot": "123"}, 404, "not_found"),
        ({"height": "2"}, 404, "not_found"),
        ({"household": "ab" * 32}, 404, "not_found"),
        ({"household": "xyz"}, 400, "bad_parameter"),
        ({"slot": "-1"}, 400, "bad_parameter"),
        ({"other": "1"}, 400, "unknown_parameter"),
    ):
        async with session.get("/api/proof", params=params) as r:
            assert r.status == status, params
            assert (await r.json())["error"]["reason"] == reason
