"""What the consensus core says to its driver: WAL records and the ordered effects.

Rules of this module (the types only; :mod:`gridnode.core.consensus` emits them and
:mod:`gridnode.node` carries them out, by its written driver contract):

* A :class:`SignedRecord` is the last ``(height, round, step)`` a validator signed and the value;
  it is persisted before the signature leaves the node. A :class:`LockRecord` is the locking state
  of Algorithm 1 at a height with its proof-of-lock (the prevotes for the valid value in the valid
  round). Both have a canonical, strictly decoded encoding (:func:`encode_wal_record`); the lock
  record is format version 2 (version 1, without the proof, is still read).
* Effects are frozen values, in the order the driver must carry them out: :class:`Persist`,
  :class:`Broadcast`, :class:`Send`, :class:`SetTimer`, :class:`Decided`, :class:`EvidenceFound`,
  :class:`ProposalRefused`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gridnode.core.consensus_messages import (
    MAX_MESSAGE_BYTES,
    Commit,
    ConsensusMessage,
    Evidence,
    Vote,
    decode_message,
    encode_message,
)
from market.codec import pack, unpack
from market.errors import InvalidInput

__all__ = [
    "Broadcast",
    "Decided",
    "Effect",
    "EvidenceFound",
    "LockRecord",
    "Persist",
    "ProposalRefused",
    "Send",
    "SetTimer",
    "SignedRecord",
    "Step",
    "TimerKind",
    "WalRecord",
    "decode_wal_record",
    "encode_wal_record",
]


class Step(enum.IntEnum):
    """Where a validator is within a round. ``NEW_HEIGHT`` is the wait after a decision."""

    NEW_HEIGHT = -1
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class TimerKind(enum.Enum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    NEW_HEIGHT = "new_height"
    SYNC = "sync"
    REBROADCAST = "rebroadcast"


# --- WAL records and effects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """The last (height, round, step) this validator signed, and for which value (hash)."""

    height: int
    round: int
    step: Step
    value: bytes


@dataclass(frozen=True, slots=True)
class LockRecord:
    """The locking state of Algorithm 1 at ``height`` (round -1 and empty block = none), with the
    proof-of-lock: the prevotes for the valid value in the valid round (restored at a restart and
    gossiped again, so peers that lost them can still accept a re-proposal of that value)."""

    height: int
    locked_round: int
    locked_block: bytes
    valid_round: int
    valid_block: bytes
    proof: tuple[Vote, ...] = ()


WalRecord = SignedRecord | LockRecord


def encode_wal_record(record: WalRecord) -> bytes:
    """Canonical bytes of a WAL record (tagged msgpack array)."""
    if isinstance(record, SignedRecord):
        return pack(["gn.signed", 1, record.height, record.round, int(record.step), record.value])
    return pack(
        [
            "gn.lock",
            2,
            record.height,
            record.locked_round,
            record.locked_block,
            record.valid_round,
            record.valid_block,
            [encode_message(v) for v in record.proof],
        ]
    )


def decode_wal_record(data: bytes) -> WalRecord:
    """Inverse of :func:`encode_wal_record`; strict."""
    value = unpack(data, what="wal record", max_bytes=MAX_MESSAGE_BYTES)
    if isinstance(value, list) and len(value) == 6 and value[:2] == ["gn.signed", 1]:
        _, _, h, r, step, v = value
        if (
            all(isinstance(x, int) and not isinstance(x, bool) for x in (h, r, step))
            and step in (0, 1, 2)
            and isinstance(v, bytes)
        ):
            return SignedRecord(h, r, Step(step), v)
    if isinstance(value, list) and value[:2] in (["gn.lock", 1], ["gn.lock", 2]):
        # version 1 (before the proof-of-lock was kept) has no proof
        proof: object = value[7] if len(value) == 8 and value[1] == 2 else []
        _, _, h, lr, lb, vr, vb = value[:7] if len(value) == 6 + value[1] else (None,) * 7
        if (
            all(isinstance(x, int) and not isinstance(x, bool) for x in (h, lr, vr))
            and isinstance(lb, bytes)
            and isinstance(vb, bytes)
            and isinstance(proof, list)
            and all(isinstance(x, bytes) for x in proof)
        ):
            votes = tuple(decode_message(x) for x in proof)
            if all(isinstance(v, Vote) for v in votes):
                return LockRecord(h, lr, lb, vr, vb, votes)  # type: ignore[arg-type]
    raise InvalidInput(reason="bad_wal_record", subject="wal record", found=repr(value)[:60])


@dataclass(frozen=True, slots=True)
class Persist:
    record: WalRecord


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every other validator (full nodes do not need votes)."""

    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    height: int
    round: int
    at: int


@dataclass(frozen=True, slots=True)
class Decided:
    height: int
    block: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class ProposalRefused:
    """This node refused to prevote, lock on or decide a proposed value: why (the app's reason).

    ``round`` and ``proposer`` are those of the first proposal of the value seen (-1 if none).
    """

    height: int
    round: int
    proposer: int
    block_hash: bytes
    reason: str
    detail: str


Effect = Persist | Broadcast | Send | SetTimer | Decided | EvidenceFound | ProposalRefused
