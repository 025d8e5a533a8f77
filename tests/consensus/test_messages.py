"""Consensus messages: canonical encoding, signatures, commits and evidence."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridnode.core.consensus import (
    LockRecord,
    SignedRecord,
    Step,
    decode_wal_record,
    encode_wal_record,
)
from gridnode.core.consensus_messages import (
    NIL,
    BlockRequest,
    BlockResponse,
    Commit,
    CommitSig,
    DuplicateProposal,
    DuplicateVote,
    Proposal,
    SyncedBlock,
    ValidatorSet,
    VoteType,
    block_hash,
    commit_from_votes,
    commit_is_valid,
    decode_commit,
    decode_message,
    encode_commit,
    encode_message,
    evidence_is_valid,
    sign_proposal,
    sign_vote,
    verify_commit,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import verify_counts
from market.errors import ConsensusReason, InvalidInput, WireReason
from tests.consensus.helpers import keys, validator_set
from tests.refusals import refused

KEYS = keys(4)
VALS = validator_set(KEYS)
BLOCK = b"block at height 5"
HASH = block_hash(BLOCK)

heights = st.integers(min_value=0, max_value=2**40)
rounds = st.integers(min_value=0, max_value=1000)


def commit_by(
    signers: list[int], *, height: int = 5, round_: int = 1, value: bytes = HASH
) -> Commit:
    votes = [
        sign_vote(
            KEYS[i],
            vote_type=VoteType.PRECOMMIT,
            height=height,
            round_=round_,
            value=value,
            validator=i,
        )
        for i in signers
    ]
    return commit_from_votes(height, round_, value, votes)


@given(
    vt=st.sampled_from(VoteType),
    h=heights,
    r=rounds,
    value=st.sampled_from([NIL, HASH]),
    idx=st.integers(0, 3),
)
def test_votes_round_trip_and_verify(vt: VoteType, h: int, r: int, value: bytes, idx: int) -> None:
    vote = sign_vote(KEYS[idx], vote_type=vt, height=h, round_=r, value=value, validator=idx)
    assert decode_message(encode_message(vote)) == vote
    assert verify_vote(VALS, vote)
    assert not verify_vote(
        VALS,
        sign_vote(
            KEYS[idx], vote_type=vt, height=h, round_=r, value=value, validator=(idx + 1) % 4
        ),
    )


@given(h=heights, r=rounds, block=st.binary(max_size=200))
def test_proposals_round_trip_and_only_the_rounds_proposer_may_propose(
    h: int, r: int, block: bytes
) -> None:
    p = VALS.proposer(h, r)
    prop = sign_proposal(KEYS[p], height=h, round_=r, block=block, valid_round=-1, proposer=p)
    assert decode_message(encode_message(prop)) == prop
    assert verify_proposal(VALS, prop)
    # the block hash is computed once, at construction: the same as computing it when read
    decoded = decode_message(encode_message(prop))
    assert isinstance(decoded, Proposal)
    assert prop.block_hash == decoded.block_hash == block_hash(block)
    other = dataclasses.replace(prop, block=block + b"x")
    assert other.block_hash == block_hash(block + b"x") != prop.block_hash
    q = (p + 1) % 4
    forged = sign_proposal(KEYS[q], height=h, round_=r, block=block, valid_round=-1, proposer=q)
    assert not verify_proposal(VALS, forged)
    bad_vr = sign_proposal(KEYS[p], height=h, round_=r, block=block, valid_round=r, proposer=p)
    assert not verify_proposal(VALS, bad_vr)


def test_block_sync_messages_round_trip() -> None:
    c = commit_by([0, 1, 3])
    resp = BlockResponse((SyncedBlock(5, BLOCK, c),))
    assert decode_message(encode_message(resp)) == resp
    assert decode_message(encode_message(BlockRequest(9, 32))) == BlockRequest(9, 32)
    assert decode_commit(encode_commit(c)) == c


@given(data=st.binary(max_size=64))
def test_decoding_garbage_raises_invalid_input_or_parses_canonically(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except InvalidInput:
        return
    assert encode_message(msg) == data


def test_decode_rejects_wrong_tag_and_shape() -> None:
    from market.codec import pack

    with refused(WireReason.BAD_TAG):
        decode_message(pack(["gn.nope", 1]))
    with refused(ConsensusReason.BAD_VOTE_TYPE):
        decode_message(pack(["gn.vote", 1, 3, 1, 0, b"", 0, b"x" * 64]))  # vote type 3


def test_commit_with_two_thirds_plus_one_is_valid_and_less_is_not() -> None:
    verify_commit(VALS, commit_by([0, 2, 3]), BLOCK, height=5)
    assert commit_is_valid(VALS, commit_by([0, 1, 2, 3]), BLOCK, height=5)
    with pytest.raises(InvalidInput) as e:
        verify_commit(VALS, commit_by([0, 2]), BLOCK, height=5)
    assert e.value.reason == "no_quorum"


@pytest.mark.parametrize(
    ("commit", "block", "height", "reason"),
    [
        (commit_by([0, 1, 2]), BLOCK, 6, "wrong_height"),
        (commit_by([0, 1, 2]), b"another block", 5, "wrong_block_hash"),
        (commit_by([0, 1, 2], value=NIL), BLOCK, 5, "wrong_block_hash"),
        (
            Commit(5, 1, HASH, tuple(reversed(commit_by([0, 1, 2]).signatures))),
            BLOCK,
            5,
            "unordered_signatures",
        ),
        (
            Commit(5, 1, HASH, (*commit_by([0, 1]).signatures, CommitSig(2, b"\x00" * 64))),
            BLOCK,
            5,
            "bad_signature",
        ),
        # signatures made for round 1 do not prove round 2
        (Commit(5, 2, HASH, commit_by([0, 1, 2]).signatures), BLOCK, 5, "bad_signature"),
    ],
)
def test_bad_commits_are_rejected_with_a_reason(
    commit: Commit, block: bytes, height: int, reason: str
) -> None:
    with pytest.raises(InvalidInput) as e:
        verify_commit(VALS, commit, block, height=height)
    assert e.value.reason == reason


def test_duplicate_signer_cannot_pad_a_commit() -> None:
    c = commit_by([0, 1])
    padded = Commit(5, 1, HASH, (*c.signatures, c.signatures[1]))
    assert not commit_is_valid(VALS, padded, BLOCK, height=5)


def test_equivocation_evidence_is_checkable() -> None:
    a = sign_vote(KEYS[2], vote_type=VoteType.PREVOTE, height=3, round_=0, value=HASH, validator=2)
    b = sign_vote(KEYS[2], vote_type=VoteType.PREVOTE, height=3, round_=0, value=NIL, validator=2)
    c = sign_vote(KEYS[2], vote_type=VoteType.PREVOTE, height=3, round_=1, value=NIL, validator=2)
    assert evidence_is_valid(VALS, DuplicateVote(a, b))
    assert not evidence_is_valid(VALS, DuplicateVote(a, a))
    assert not evidence_is_valid(VALS, DuplicateVote(a, c))  # different rounds: no equivocation
    p = VALS.proposer(3, 0)
    x = sign_proposal(KEYS[p], height=3, round_=0, block=b"x", valid_round=-1, proposer=p)
    y = sign_proposal(KEYS[p], height=3, round_=0, block=b"y", valid_round=-1, proposer=p)
    assert evidence_is_valid(VALS, DuplicateProposal(x, y))
    assert not evidence_is_valid(VALS, DuplicateProposal(x, x))


@given(
    h=heights,
    r=rounds,
    step=st.sampled_from([Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT]),
    value=st.sampled_from([NIL, HASH]),
    lr=st.integers(-1, 50),
    vr=st.integers(-1, 50),
    blk=st.binary(max_size=40),
)
def test_wal_records_round_trip(
    h: int, r: int, step: Step, value: bytes, lr: int, vr: int, blk: bytes
) -> None:
    s = SignedRecord(h, r, step, value)
    lock = LockRecord(h, lr, blk, vr, blk)
    assert decode_wal_record(encode_wal_record(s)) == s
    assert decode_wal_record(encode_wal_record(lock)) == lock


def test_validator_set_thresholds() -> None:
    for n, q, skip in [(1, 1, 1), (4, 3, 2), (7, 5, 3), (10, 7, 4)]:
        vs = validator_set(keys(n))
        assert (vs.quorum, vs.skip_threshold) == (q, skip)
        assert 3 * vs.quorum > 2 * n and 3 * (vs.quorum - 1) <= 2 * n


def test_a_shared_vote_cache_never_accepts_what_does_not_verify() -> None:
    cache: set[tuple[int, str, bytes, bytes]] = set()
    vals = ValidatorSet(VALS.public_keys, verified=cache)
    assert vals == VALS  # the cache is not part of the set's identity
    vote = sign_vote(
        KEYS[1], vote_type=VoteType.PRECOMMIT, height=5, round_=0, value=HASH, validator=1
    )
    assert verify_vote(vals, vote) and len(cache) == 1
    assert verify_vote(vals, vote)  # a cache hit
    # the cached signature on other content, or claimed by another validator, still fails
    assert not verify_vote(vals, dataclasses.replace(vote, height=6))
    assert not verify_vote(vals, dataclasses.replace(vote, block_hash=NIL))
    assert not verify_vote(vals, dataclasses.replace(vote, validator=2))
    assert not verify_vote(vals, dataclasses.replace(vote, signature=bytes(64)))
    assert len(cache) == 1
    prop = sign_proposal(KEYS[1], height=4, round_=1, block=BLOCK, valid_round=-1, proposer=1)
    assert verify_proposal(vals, prop) and len(cache) == 2
    assert not verify_proposal(vals, dataclasses.replace(prop, valid_round=0))


def test_a_message_signed_here_skips_only_the_ed25519_check() -> None:
    cache: set[tuple[int, str, bytes, bytes]] = set()
    vals = ValidatorSet(VALS.public_keys, verified=cache)
    vote = sign_vote(
        KEYS[2], vote_type=VoteType.PREVOTE, height=3, round_=0, value=HASH, validator=2
    )
    before = verify_counts().get("vote", 0)
    assert verify_vote(vals, vote, signed_here=True) and len(cache) == 1
    assert verify_vote(vals, vote)  # another node of the process: a cache hit
    assert verify_counts().get("vote", 0) == before  # no Ed25519 verification ran
    # the message's own rules still apply to what is signed here
    assert not verify_vote(vals, dataclasses.replace(vote, validator=9), signed_here=True)
    prop = sign_proposal(KEYS[1], height=4, round_=1, block=BLOCK, valid_round=-1, proposer=1)
    assert not verify_proposal(vals, dataclasses.replace(prop, proposer=2), signed_here=True)
    assert verify_proposal(vals, prop, signed_here=True) and len(cache) == 2
