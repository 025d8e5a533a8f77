"""Fuzzing a real daemon of a running community over real sockets: libp2p frames from many
identities on every stream protocol (counted exactly, per reason, and nobody banned), HTTP
requests of every kind on its API (no 5xx, every refusal with a reason of the closed set), and the
equivocation evidence a double-voting validator leaves (``/api/evidence``). Its log stays free of
tracebacks and handler failures, and it keeps committing.

The long runs (``python benchmarks/fuzz.py``) send 30,000 frames and 100,000 requests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import trio

from gridnode.config import load_token
from gridnode.core.consensus_messages import (
    ValidatorSet,
    Vote,
    VoteType,
    encode_message,
    sign_vote,
    verify_vote,
)
from gridnode.net.host import NetConfig, open_net_host
from sims.fuzz_api import fuzz_api
from sims.fuzz_wire import FuzzCommunity, fuzz_community

pytestmark = pytest.mark.net


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzCommunity]:
    with fuzz_community(tmp_path_factory.mktemp("fuzz")) as community:
        yield community


def test_fuzzed_libp2p_frames_are_each_counted_once_by_reason(fc: FuzzCommunity) -> None:
    h0 = fc.lc.api(0, "/api/status")["height"]
    tally = fc.run_wire(300, seed=int(os.environ.get("GRIDNODE_FUZZ_SEED", "1")))
    assert tally.ok, "\n".join(tally.lines() + tally.failures[:5])
    assert tally.frames == 300 and tally.identities > 10
    assert {"submit", "submit-batch", "tx", "consensus", "framing"} <= set(tally.sent)
    assert {"malformed", "not_permitted"} <= set(tally.counted)
    assert fc.tracebacks(0) == []
    assert fc.lc.wait_for(lambda: fc.lc.api(0, "/api/status")["height"] > h0 + 2, 60)


def test_fuzzed_api_requests_get_no_5xx(fc: FuzzCommunity) -> None:
    h = fc.lc.households[0]
    tally = asyncio.run(
        fuzz_api(
            ("127.0.0.1", h.api_port),
            requests=3_000,
            seed=int(os.environ.get("GRIDNODE_FUZZ_SEED", "1")),
            token=load_token(h.dir),
            first_open=lambda: int(fc.lc.api(0, "/api/status")["first_open_slot"]),
        )
    )
    assert tally.ok, "\n".join(tally.lines() + tally.server_errors[:5] + tally.unknown_reasons[:5])
    assert tally.http_500 == 0
    assert tally.statuses.get(202, 0) > 0 and tally.statuses.get(200, 0) > 0  # valid ones too
    assert fc.tracebacks(0) == []


def test_a_double_vote_shows_in_the_evidence_api(fc: FuzzCommunity) -> None:
    lc = fc.lc
    assert lc.genesis is not None
    v4 = fc.validator  # validator index 4: its daemon does not run; we sign as it
    index = list(lc.genesis.validators).index(v4.public_hex)
    peer, addr = fc.victim(0)
    config = NetConfig(community=lc.genesis.community_id)

    async def equivocate() -> None:
        async with open_net_host(v4, config) as host:
            await host.connect(addr)
            for attempt in range(20):  # the height may move between reading it and voting
                height = lc.api(0, "/api/status")["height"] + 1
                votes = [
                    sign_vote(v4, vote_type=VoteType.PREVOTE, height=height, round_=0,
                              value=bytes([attempt, k]) * 16, validator=index)
                    for k in (1, 2)
                ]  # fmt: skip
                await host.send(peer, "consensus", [encode_message(v) for v in votes])
                with trio.move_on_after(3):
                    while lc.api(0, "/api/evidence")["total"] == 0:
                        await trio.sleep(0.1)
                if lc.api(0, "/api/evidence")["total"]:
                    return

    assert lc.api(0, "/api/evidence") == {"total": 0, "evidence": []}
    trio.run(equivocate)
    body = lc.api(0, "/api/evidence")
    assert body["total"] >= 1 and lc.api(0, "/api/status")["evidence_total"] == body["total"]
    ev = body["evidence"][0]
    assert ev["kind"] == "duplicate_vote" and ev["step"] == "prevote"
    assert ev["validator"] == v4.public_hex and ev["validator_index"] == index
    validators = ValidatorSet(tuple(bytes.fromhex(v) for v in lc.genesis.validators))
    for side in (ev["first"], ev["second"]):  # anyone can check the two signatures
        vote = Vote(VoteType.PREVOTE, ev["height"], ev["round"], bytes.fromhex(side["block_hash"]),
                    index, bytes.fromhex(side["signature"]))  # fmt: skip
        assert verify_vote(validators, vote)
    assert ev["first"]["block_hash"] != ev["second"]["block_hash"]
    # the equivocator is a genesis validator and sent nothing malformed: not counted, not banned
    assert lc.api(0, "/api/status")["banned_peers"] == 0
