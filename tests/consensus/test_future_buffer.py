"""Issue 11.2: next-height consensus messages are buffered only when a validator signed them, and
the buffer is bounded by bytes and per signer, so no flood can grow a validator's memory."""

from __future__ import annotations

import random

from gridnode.core.consensus import Consensus, Decided
from gridnode.core.consensus_messages import (
    FUTURE_BUFFER_BYTES,
    FUTURE_PER_SIGNER,
    MAX_MESSAGE_BYTES,
    Vote,
    VoteType,
    block_hash,
    sign_proposal,
    sign_vote,
)
from gridnode.core.crypto import KeyPair
from market.codec import pack
from tests.consensus.helpers import ListBlocks, TagApp, keys, validator_set

KEYS = keys(4)
VALS = validator_set(KEYS)


def machine() -> Consensus:
    m = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    m.start(0)
    return m


def test_an_outsiders_flood_for_the_next_height_is_not_kept() -> None:
    m = machine()
    outsider = KeyPair.from_rng(random.Random(99))
    for r in range(3_000):
        # signed by a key that is not a validator's, under a validator's index
        forged = sign_proposal(
            outsider,
            height=2,
            round_=r,
            block=pack([2, "x" * 4_000]),
            valid_round=-1,
            proposer=(2 + r) % 4,
        )
        m.on_message("outsider", forged, 1)
        vote = sign_vote(
            outsider, vote_type=VoteType.PREVOTE, height=2, round_=r, value=b"\1" * 32, validator=1
        )
        m.on_message("outsider", vote, 1)
    assert m.future_buffer == (0, 0, 0)
    assert m.refused_future == 6_000


def test_a_validators_flood_is_capped_per_signer_and_in_bytes() -> None:
    m = machine()
    # validator 3 signs many valid next-height votes and proposals (it may: it is Byzantine)
    for r in range(500):
        vote = sign_vote(
            KEYS[3], vote_type=VoteType.PREVOTE, height=2, round_=r, value=b"\2" * 32, validator=3
        )
        m.on_message("v3", vote, 1)
    count, size, dropped = m.future_buffer
    assert count == FUTURE_PER_SIGNER and dropped == 500 - FUTURE_PER_SIGNER
    big = pack([2, "y" * (MAX_MESSAGE_BYTES // 3)])
    for r in range(1, 40, 4):  # rounds where validator 3 proposes at height 2: (2 + r) % 4 == 3
        prop = sign_proposal(KEYS[3], height=2, round_=r, block=big, valid_round=-1, proposer=3)
        m.on_message("v3", prop, 1)
    count, size, dropped = m.future_buffer
    assert size <= MAX_MESSAGE_BYTES  # one signer never holds more than one largest message
    # an honest validator's messages still fit beside the flood
    honest = sign_vote(
        KEYS[1], vote_type=VoteType.PREVOTE, height=2, round_=0, value=b"\3" * 32, validator=1
    )
    m.on_message("v1", honest, 1)
    assert m.future_buffer[0] == count + 1
    assert size <= FUTURE_BUFFER_BYTES


def test_buffered_messages_are_replayed_at_the_next_height() -> None:
    m = machine()
    later = [
        sign_vote(KEYS[i], vote_type=VoteType.PREVOTE, height=2, round_=0, value=b"", validator=i)
        for i in (1, 2, 3)
    ]
    for v in later:
        m.on_message(f"v{v.validator}", v, 1)
        m.on_message(f"v{v.validator}", v, 1)  # a duplicate is kept once
    assert m.future_buffer[0] == 3
    # decide height 1: a proposal from validator 1 and everyone's precommits
    block = pack([1, "n1-r0"])
    m.on_message(
        "v1",
        sign_proposal(KEYS[1], height=1, round_=0, block=block, valid_round=-1, proposer=1),
        2,
    )
    out: list[object] = []
    for i in (1, 2, 3):
        pc = sign_vote(
            KEYS[i],
            vote_type=VoteType.PRECOMMIT,
            height=1,
            round_=0,
            value=block_hash(block),
            validator=i,
        )
        out += m.on_message(f"v{i}", pc, 3)
    assert any(isinstance(e, Decided) for e in out)
    assert m.height == 2 and m.future_buffer[:2] == (0, 0)
    assert m._h.count(VoteType.PREVOTE, 0, None) == 3  # replayed into height 2
    assert all(isinstance(v, Vote) for v in later)
