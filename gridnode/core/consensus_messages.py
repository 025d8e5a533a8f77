"""Consensus messages, their signatures, commits and their canonical wire encoding.

Rules of this module:

* Validators are named by their **index** in the genesis validator list (a small int); a message's
  authority comes from its Ed25519 signature, never from the peer that delivered it.
* A block is opaque bytes; its id is ``block_hash(block)`` (32 bytes): SHA-256 of its header
  (:mod:`gridnode.core.block_id`; bytes not shaped like a ledger block are their own header). The
  empty byte string :data:`NIL` is the "nil" value of a vote.
* A vote signs ``pack(["gn.vote", 1, type, height, round, block_hash])`` in the domain ``"vote"``;
  a proposal signs ``pack(["gn.proposal", 1, height, round, block_hash, valid_round])`` in the
  domain ``"proposal"``. The signer's index is not in the signed bytes (the key is the identity).
* A :class:`Commit` for (height, round, hash) is a list of precommit signatures ordered by strictly
  increasing validator index; it is valid when more than 2/3 of the validators (``3·k > 2·n``)
  signed a precommit for exactly that (height, round, hash), and the hash is not nil.
* Every record on the wire is a msgpack array with a tag and a format version (see
  :mod:`market.codec`); decoding is strict and rejects anything that does not re-encode to itself.
* :class:`DuplicateVote` / :class:`DuplicateProposal` are equivocation evidence: two validly signed
  messages by one validator for the same (height, round, type) with different values.
* :class:`FutureBuffer` holds messages for a later height with bounded memory: one copy of each,
  at most :data:`FUTURE_PER_SIGNER` messages and :data:`MAX_MESSAGE_BYTES` bytes per signer (its
  oldest dropped beyond), :data:`FUTURE_BUFFER_BYTES` in all (the oldest dropped beyond).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gridnode.core.block_id import block_id
from gridnode.core.crypto import KeyPair, verify
from market.codec import pack, unpack
from market.errors import InvalidInput

__all__ = [
    "FUTURE_BUFFER_BYTES",
    "FUTURE_PER_SIGNER",
    "MAX_MESSAGE_BYTES",
    "NIL",
    "BlockRequest",
    "BlockResponse",
    "Commit",
    "CommitSig",
    "ConsensusMessage",
    "DuplicateProposal",
    "DuplicateVote",
    "Evidence",
    "FutureBuffer",
    "Proposal",
    "SyncedBlock",
    "ValidatorSet",
    "Vote",
    "VoteType",
    "block_hash",
    "commit_from_votes",
    "commit_is_valid",
    "decode_commit",
    "decode_message",
    "encode_commit",
    "encode_message",
    "evidence_is_valid",
    "proposal_sign_bytes",
    "sign_proposal",
    "sign_vote",
    "verify_commit",
    "verify_proposal",
    "verify_vote",
    "vote_sign_bytes",
]

NIL: Final = b""
FORMAT_VERSION: Final = 1
#: Upper bound on one encoded consensus message (a proposal carries a whole block).
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
_VERIFIED_LIMIT: Final = 100_000  # a shared vote cache is cleared when it holds this many
VOTE_DOMAIN: Final = "vote"
PROPOSAL_DOMAIN: Final = "proposal"


class VoteType(enum.IntEnum):
    """The two voting steps; the values are also the step numbers of the double-sign record."""

    PREVOTE = 1
    PRECOMMIT = 2


def block_hash(block: bytes) -> bytes:
    """The id of a block: SHA-256 of its header (:func:`gridnode.core.block_id.block_id`)."""
    return block_id(block)


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """The ordered validator public keys from genesis; index = position in this tuple."""

    public_keys: tuple[bytes, ...]
    #: optional cache of (signer index, domain, signed bytes, signature) that verified; a simulation
    #: running many nodes in one process shares one so each vote is verified once, not once per
    #: node (same answers; per-node CPU is then not modelled). Not part of the set's identity.
    verified: set[tuple[int, str, bytes, bytes]] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.public_keys:
            raise InvalidInput(reason="empty_validator_set", subject="validators", expected=">= 1")
        if len(set(self.public_keys)) != len(self.public_keys):
            raise InvalidInput(reason="duplicate_validator", subject="validators")

    @property
    def n(self) -> int:
        return len(self.public_keys)

    @property
    def quorum(self) -> int:
        """Smallest k with 3k > 2n: the 2f+1 of the paper when n = 3f+1."""
        return 2 * self.n // 3 + 1

    @property
    def skip_threshold(self) -> int:
        """Smallest k with 3k > n: the f+1 of the paper (at least one honest sender)."""
        return self.n // 3 + 1

    def proposer(self, height: int, round_: int) -> int:
        """Round-robin proposer: index ``(height + round) mod n``."""
        return (height + round_) % self.n

    def index_of(self, public_key: bytes) -> int | None:
        try:
            return self.public_keys.index(public_key)
        except ValueError:
            return None


def vote_sign_bytes(vote_type: VoteType, height: int, round_: int, value: bytes) -> bytes:
    return pack(["gn.vote", FORMAT_VERSION, int(vote_type), height, round_, value])


def proposal_sign_bytes(height: int, round_: int, value: bytes, valid_round: int) -> bytes:
    return pack(["gn.proposal", FORMAT_VERSION, height, round_, value, valid_round])


@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit; ``block_hash == NIL`` is a nil vote."""

    vote_type: VoteType
    height: int
    round: int
    block_hash: bytes
    validator: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Proposal:
    """The proposer's block for (height, round); ``valid_round`` is -1 or an earlier round."""

    height: int
    round: int
    block: bytes
    valid_round: int
    proposer: int
    signature: bytes
    #: :func:`block_hash` of ``block``, computed once (the core reads it on every vote it counts)
    block_hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_hash", block_hash(self.block))


@dataclass(frozen=True, slots=True)
class CommitSig:
    validator: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Precommit signatures (> 2/3 of validators) for ``block_hash`` at (height, round)."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]


@dataclass(frozen=True, slots=True)
class SyncedBlock:
    height: int
    block: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for committed blocks from ``from_height`` on (at most ``max_blocks``)."""

    from_height: int
    max_blocks: int


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """Committed blocks with their commits, in increasing height order (possibly empty)."""

    blocks: tuple[SyncedBlock, ...]


@dataclass(frozen=True, slots=True)
class DuplicateVote:
    first: Vote
    second: Vote


@dataclass(frozen=True, slots=True)
class DuplicateProposal:
    first: Proposal
    second: Proposal


ConsensusMessage = Proposal | Vote | BlockRequest | BlockResponse
Evidence = DuplicateVote | DuplicateProposal


def sign_vote(
    key: KeyPair, *, vote_type: VoteType, height: int, round_: int, value: bytes, validator: int
) -> Vote:
    sig = key.sign(VOTE_DOMAIN, vote_sign_bytes(vote_type, height, round_, value))
    return Vote(vote_type, height, round_, value, validator, sig)


def sign_proposal(
    key: KeyPair, *, height: int, round_: int, block: bytes, valid_round: int, proposer: int
) -> Proposal:
    msg = proposal_sign_bytes(height, round_, block_hash(block), valid_round)
    return Proposal(height, round_, block, valid_round, proposer, key.sign(PROPOSAL_DOMAIN, msg))


def verify_vote(validators: ValidatorSet, vote: Vote, *, signed_here: bool = False) -> bool:
    """Whether ``vote`` is well-formed and signed by its validator. ``signed_here``: this process
    just made the signature with that validator's key (a node recording its own vote), so the
    Ed25519 check is skipped (it cannot fail) and the signature goes into the shared cache, if
    any, for the other nodes of a simulation."""
    if not 0 <= vote.validator < validators.n:
        return False
    if vote.block_hash != NIL and len(vote.block_hash) != 32:
        return False
    msg = vote_sign_bytes(vote.vote_type, vote.height, vote.round, vote.block_hash)
    return _verify_cached(
        validators, vote.validator, VOTE_DOMAIN, msg, vote.signature, signed_here=signed_here
    )


def _verify_cached(
    validators: ValidatorSet,
    signer: int,
    domain: str,
    msg: bytes,
    signature: bytes,
    *,
    signed_here: bool = False,
) -> bool:
    cache = validators.verified
    key = (signer, domain, msg, signature)
    if cache is not None and key in cache:
        return True
    if not signed_here and not verify(validators.public_keys[signer], domain, msg, signature):
        return False
    if cache is not None:
        if len(cache) >= _VERIFIED_LIMIT:
            cache.clear()
        cache.add(key)
    return True


def verify_proposal(
    validators: ValidatorSet, proposal: Proposal, *, signed_here: bool = False
) -> bool:
    """Signature check plus: signed by the round's proposer, ``-1 <= valid_round < round``
    (``signed_here``: as :func:`verify_vote`'s)."""
    if proposal.proposer != validators.proposer(proposal.height, proposal.round):
        return False
    if not -1 <= proposal.valid_round < proposal.round or proposal.round < 0:
        return False
    msg = proposal_sign_bytes(
        proposal.height, proposal.round, proposal.block_hash, proposal.valid_round
    )
    return _verify_cached(
        validators,
        proposal.proposer,
        PROPOSAL_DOMAIN,
        msg,
        proposal.signature,
        signed_here=signed_here,
    )


def verify_commit(
    validators: ValidatorSet,
    commit: Commit,
    block: bytes,
    *,
    height: int,
    quorum: int | None = None,
) -> None:
    """Raise :class:`InvalidInput` unless ``commit`` proves ``block`` at ``height``.

    ``quorum`` defaults to the validator set's (> 2/3); only the campaign's negative control
    passes a weaker one.
    """
    need = validators.quorum if quorum is None else quorum
    subject = f"commit for height {height}"
    if commit.height != height:
        raise InvalidInput(
            reason="wrong_height", subject=subject, expected=str(height), found=str(commit.height)
        )
    if commit.block_hash == NIL or commit.block_hash != block_hash(block):
        raise InvalidInput(reason="wrong_block_hash", subject=subject, field="block_hash")
    last = -1
    for cs in commit.signatures:
        if cs.validator <= last:
            raise InvalidInput(
                reason="unordered_signatures", subject=subject, expected="strictly increasing"
            )
        last = cs.validator
        vote = Vote(
            VoteType.PRECOMMIT, height, commit.round, commit.block_hash, cs.validator, cs.signature
        )
        if not verify_vote(validators, vote):
            raise InvalidInput(
                reason="bad_signature", subject=subject, field=f"validator {cs.validator}"
            )
    if len(commit.signatures) < need:
        raise InvalidInput(
            reason="no_quorum",
            subject=subject,
            expected=f">= {need} precommits",
            found=str(len(commit.signatures)),
        )


def commit_is_valid(validators: ValidatorSet, commit: Commit, block: bytes, *, height: int) -> bool:
    try:
        verify_commit(validators, commit, block, height=height)
    except InvalidInput:
        return False
    return True


def evidence_is_valid(validators: ValidatorSet, evidence: Evidence) -> bool:
    """Whether ``evidence`` proves a validator signed two different values for one step."""
    if isinstance(evidence, DuplicateVote):
        a, b = evidence.first, evidence.second
        same_slot = (a.vote_type, a.height, a.round, a.validator) == (
            b.vote_type,
            b.height,
            b.round,
            b.validator,
        )
        return (
            same_slot
            and a.block_hash != b.block_hash
            and verify_vote(validators, a)
            and verify_vote(validators, b)
        )
    p, q = evidence.first, evidence.second
    return (
        (p.height, p.round, p.proposer) == (q.height, q.round, q.proposer)
        and (p.block_hash, p.valid_round) != (q.block_hash, q.valid_round)
        and verify_proposal(validators, p)
        and verify_proposal(validators, q)
    )


# ---------------------------------------------------------------------------------------------
# Wire encoding


def _commit_wire(c: Commit) -> list[Any]:
    return [c.height, c.round, c.block_hash, [[s.validator, s.signature] for s in c.signatures]]


def encode_message(msg: ConsensusMessage) -> bytes:
    """Canonical bytes of one consensus message."""
    if isinstance(msg, Vote):
        body: list[Any] = [
            "gn.vote",
            FORMAT_VERSION,
            int(msg.vote_type),
            msg.height,
            msg.round,
            msg.block_hash,
            msg.validator,
            msg.signature,
        ]
    elif isinstance(msg, Proposal):
        body = [
            "gn.proposal",
            FORMAT_VERSION,
            msg.height,
            msg.round,
            msg.block,
            msg.valid_round,
            msg.proposer,
            msg.signature,
        ]
    elif isinstance(msg, BlockRequest):
        body = ["gn.blockreq", FORMAT_VERSION, msg.from_height, msg.max_blocks]
    else:
        body = [
            "gn.blockresp",
            FORMAT_VERSION,
            [[b.height, b.block, _commit_wire(b.commit)] for b in msg.blocks],
        ]
    return pack(body)


def _int(v: Any, field: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput(
            reason="bad_type", subject="message", field=field, expected="int", found=repr(v)[:40]
        )
    return v


def _bytes(v: Any, field: str) -> bytes:
    if not isinstance(v, bytes):
        raise InvalidInput(
            reason="bad_type", subject="message", field=field, expected="bytes", found=repr(v)[:40]
        )
    return v


def _shape(v: Any, n: int, what: str) -> list[Any]:
    if not isinstance(v, list) or len(v) != n:
        raise InvalidInput(
            reason="bad_shape", subject=what, expected=f"array of {n}", found=repr(v)[:60]
        )
    return v


def _commit_from(v: Any) -> Commit:
    h, r, bh, sigs = _shape(v, 4, "commit")
    if not isinstance(sigs, list):
        raise InvalidInput(reason="bad_shape", subject="commit", field="signatures")
    out = []
    for s in sigs:
        idx, sig = _shape(s, 2, "commit signature")
        out.append(CommitSig(_int(idx, "validator"), _bytes(sig, "signature")))
    return Commit(_int(h, "height"), _int(r, "round"), _bytes(bh, "block_hash"), tuple(out))


def decode_message(data: bytes) -> ConsensusMessage:
    """Parse bytes made by :func:`encode_message`; strict. Signatures are *not* checked here."""
    value = unpack(data, what="consensus message", max_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidInput(reason="bad_shape", subject="consensus message")
    tag, version = value[0], value[1]
    if version != FORMAT_VERSION:
        raise InvalidInput(
            reason="bad_version", subject="consensus message", found=repr(version)[:20]
        )
    if tag == "gn.vote":
        _, _, vt, h, r, bh, idx, sig = _shape(value, 8, "vote")
        if vt not in (1, 2):
            raise InvalidInput(reason="bad_vote_type", subject="vote", found=repr(vt)[:20])
        return Vote(
            VoteType(vt),
            _int(h, "height"),
            _int(r, "round"),
            _bytes(bh, "block_hash"),
            _int(idx, "validator"),
            _bytes(sig, "signature"),
        )
    if tag == "gn.proposal":
        _, _, h, r, block, vr, idx, sig = _shape(value, 8, "proposal")
        return Proposal(
            _int(h, "height"),
            _int(r, "round"),
            _bytes(block, "block"),
            _int(vr, "valid_round"),
            _int(idx, "proposer"),
            _bytes(sig, "signature"),
        )
    if tag == "gn.blockreq":
        _, _, h, m = _shape(value, 4, "block request")
        return BlockRequest(_int(h, "from_height"), _int(m, "max_blocks"))
    if tag == "gn.blockresp":
        _, _, blocks = _shape(value, 3, "block response")
        if not isinstance(blocks, list):
            raise InvalidInput(reason="bad_shape", subject="block response")
        out = []
        for b in blocks:
            h, block, c = _shape(b, 3, "synced block")
            out.append(SyncedBlock(_int(h, "height"), _bytes(block, "block"), _commit_from(c)))
        return BlockResponse(tuple(out))
    raise InvalidInput(reason="bad_tag", subject="consensus message", found=repr(tag)[:40])


def encode_commit(commit: Commit) -> bytes:
    """Canonical bytes of a commit (what the store keeps next to the block)."""
    return pack(["gn.commit", FORMAT_VERSION, *_commit_wire(commit)])


def decode_commit(data: bytes) -> Commit:
    value = unpack(data, what="commit", max_bytes=MAX_MESSAGE_BYTES)
    tag, version, *rest = _shape(value, 6, "commit")
    if tag != "gn.commit" or version != FORMAT_VERSION:
        raise InvalidInput(reason="bad_tag", subject="commit", found=repr(tag)[:40])
    return _commit_from(rest)


def commit_from_votes(height: int, round_: int, value: bytes, votes: Sequence[Vote]) -> Commit:
    """Build a commit from precommits (any order); keeps the ones for exactly this value."""
    sigs = sorted(
        (
            CommitSig(v.validator, v.signature)
            for v in votes
            if v.vote_type is VoteType.PRECOMMIT
            and (v.height, v.round, v.block_hash) == (height, round_, value)
        ),
        key=lambda s: s.validator,
    )
    return Commit(height, round_, value, tuple(sigs))


# --- a bounded buffer of signed messages -------------------------------------------------------

#: Messages for the next height kept per signing validator (a correct one sends a proposal and
#: two votes per round, so this covers ~10 rounds of the next height).
FUTURE_PER_SIGNER: Final = 32
#: Bytes of next-height messages kept in all (each signer also at most MAX_MESSAGE_BYTES).
FUTURE_BUFFER_BYTES: Final = 32 * 1024 * 1024


def _message_bytes(msg: Proposal | Vote) -> int:
    """Memory a buffered message holds, roughly (its block, signature and fields)."""
    return 160 + (len(msg.block) if isinstance(msg, Proposal) else 0)


class FutureBuffer:
    """Messages for a later height, bounded: at most :data:`FUTURE_PER_SIGNER` messages and
    :data:`MAX_MESSAGE_BYTES` bytes per signer (its oldest dropped beyond), :data:`FUTURE_BUFFER_BYTES`
    in all (the oldest dropped beyond); one copy of each (by signature). The caller checks the
    signatures before it adds a message."""

    def __init__(self) -> None:
        # signature -> message, oldest first (a signature identifies one signed message)
        self._msgs: dict[bytes, Proposal | Vote] = {}
        self._count: dict[int, int] = {}
        self._bytes: dict[int, int] = {}
        self.total_bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._msgs)

    def has(self, msg: Proposal | Vote) -> bool:
        return msg.signature in self._msgs

    def add(self, msg: Proposal | Vote) -> None:
        signer, size = _signer(msg), _message_bytes(msg)
        if size > MAX_MESSAGE_BYTES:
            self.dropped += 1
            return
        while self._msgs and (
            self._count.get(signer, 0) >= FUTURE_PER_SIGNER
            or self._bytes.get(signer, 0) + size > MAX_MESSAGE_BYTES
        ):
            self._drop(next(s for s, m in self._msgs.items() if _signer(m) == signer))
        while self._msgs and self.total_bytes + size > FUTURE_BUFFER_BYTES:
            self._drop(next(iter(self._msgs)))
        self._msgs[msg.signature] = msg
        self._count[signer] = self._count.get(signer, 0) + 1
        self._bytes[signer] = self._bytes.get(signer, 0) + size
        self.total_bytes += size

    def _drop(self, signature: bytes) -> None:
        msg = self._msgs.pop(signature)
        signer, size = _signer(msg), _message_bytes(msg)
        self._count[signer] -= 1
        self._bytes[signer] -= size
        self.total_bytes -= size
        self.dropped += 1

    def take(self) -> list[Proposal | Vote]:
        """Every buffered message, oldest first; the buffer is empty afterwards."""
        out = list(self._msgs.values())
        self._msgs.clear()
        self._count.clear()
        self._bytes.clear()
        self.total_bytes = 0
        return out


def _signer(msg: Proposal | Vote) -> int:
    return msg.proposer if isinstance(msg, Proposal) else msg.validator
