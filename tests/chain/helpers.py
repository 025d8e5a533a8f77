"""Chains for the reader's tests: blocks built by the ledger, committed by the genesis validators."""

from __future__ import annotations

from gridnode.core.consensus_messages import (
    VoteType,
    block_hash,
    commit_from_votes,
    encode_commit,
    sign_vote,
)
from gridnode.core.crypto import KeyPair


def commit_for(validators: list[KeyPair], height: int, block: bytes) -> bytes:
    """The commit certificate all ``validators`` (in genesis order) sign for ``block``."""
    value = block_hash(block)
    votes = [
        sign_vote(k, vote_type=VoteType.PRECOMMIT, height=height, round_=0, value=value,
                  validator=i)
        for i, k in enumerate(validators)
    ]  # fmt: skip
    return encode_commit(commit_from_votes(height, 0, value, votes))
