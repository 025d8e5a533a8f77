"""The store's rules, checked the same way by both implementations (:mod:`.sqlite`, :mod:`.memory`).

Each ``_check_*`` validates an argument (type, range, non-empty) and each ``_*_is_new`` decides,
from what is stored, whether a write inserts (``True``), is an idempotent repeat (``False``) or
breaks a rule (raises :class:`~market.errors.InvalidInput` with the rule's reason). The rules
themselves are listed in :mod:`gridnode.store`.
"""

from __future__ import annotations

from typing import Final

from gridnode.store.records import LastSigned, StateSnapshot, StoredBlock, WalRow
from market.errors import InvalidInput, UsageError

#: The largest value SQLite stores in an INTEGER column; heights, rounds and steps stay below it.
MAX_INT: Final = 2**63 - 1
_MAX_META_KEY_CHARS: Final = 200


def check_int(value: object, *, field: str, subject: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            reason="bad_type",
            subject=subject,
            field=field,
            expected="int",
            found=type(value).__name__,
        )
    if not 0 <= value <= MAX_INT:
        raise InvalidInput(
            reason="out_of_range",
            subject=subject,
            field=field,
            expected=f"0 <= {field} <= 2**63-1",
            found=str(value),
        )
    return value


def check_bytes(value: object, *, field: str, subject: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(
            reason="bad_type",
            subject=subject,
            field=field,
            expected="bytes",
            found=type(value).__name__,
        )
    if not value:
        raise InvalidInput(
            reason="empty", subject=subject, field=field, expected="non-empty bytes", found="b''"
        )
    return value


def check_meta_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInput(
            reason="bad_type", subject="meta", field="key", expected="str", found=type(key).__name__
        )
    if not 0 < len(key) <= _MAX_META_KEY_CHARS:
        raise InvalidInput(
            reason="bad_length",
            subject="meta",
            field="key",
            expected=f"1..{_MAX_META_KEY_CHARS} chars",
            found=f"{len(key)} chars",
        )
    return key


def new_block(height: object, block_hash: object, block: object, commit: object) -> StoredBlock:
    subject = f"block {height!r}"
    return StoredBlock(
        height=check_int(height, field="height", subject=subject),
        block_hash=check_bytes(block_hash, field="block_hash", subject=subject),
        block=check_bytes(block, field="block", subject=subject),
        commit=check_bytes(commit, field="commit", subject=subject),
    )


def block_is_new(new: StoredBlock, existing: StoredBlock | None, head: StoredBlock | None) -> bool:
    """Whether to insert ``new`` (``False``: an idempotent repeat); raises on a broken rule."""
    subject = f"block {new.height}"
    if existing is not None:
        if existing.block_hash != new.block_hash:
            raise InvalidInput(
                reason="conflicting_block",
                subject=subject,
                field="block_hash",
                expected=existing.block_hash.hex(),
                found=new.block_hash.hex(),
            )
        if existing.block != new.block:
            raise InvalidInput(
                reason="conflicting_block",
                subject=subject,
                field="block",
                expected="the stored block's bytes",
                found="other bytes under the same hash",
            )
        return False
    if head is None:
        return True
    if new.height != head.height + 1:
        raise InvalidInput(
            reason="height_gap" if new.height > head.height else "below_first_block",
            subject=subject,
            field="height",
            expected=str(head.height + 1),
            found=str(new.height),
        )
    return True


def snapshot_is_new(
    new: StateSnapshot,
    existing: StateSnapshot | None,
    latest: StateSnapshot | None,
    head: StoredBlock | None,
) -> bool:
    subject = f"snapshot {new.height}"
    if existing is not None:
        if existing.state != new.state:
            raise InvalidInput(
                reason="conflicting_snapshot",
                subject=subject,
                field="state",
                expected="the stored state's bytes",
                found="other bytes",
            )
        return False
    head_height = head.height if head is not None else 0
    if new.height > head_height:
        raise InvalidInput(
            reason="snapshot_ahead_of_head",
            subject=subject,
            field="height",
            expected=f"<= {head_height}",
            found=str(new.height),
        )
    if latest is not None and new.height < latest.height:
        raise InvalidInput(
            reason="snapshot_regression",
            subject=subject,
            field="height",
            expected=f">= {latest.height}",
            found=str(new.height),
        )
    return True


def check_wal_height(height: int, floor: int) -> None:
    if height < floor:
        raise InvalidInput(
            reason="wal_regression",
            subject=f"wal record at height {height}",
            field="height",
            expected=f">= {floor}",
            found=str(height),
        )


def check_truncate(below: int, head: StoredBlock | None) -> None:
    limit = head.height + 1 if head is not None else 0
    if below > limit:
        raise InvalidInput(
            reason="truncate_uncommitted",
            subject="wal",
            field="below",
            expected=f"<= {limit} (head + 1)",
            found=str(below),
        )


def new_last_signed(height: object, round: object, step: object, vote: object) -> LastSigned:
    subject = f"vote at {height!r}/{round!r}/{step!r}"
    return LastSigned(
        height=check_int(height, field="height", subject=subject),
        round=check_int(round, field="round", subject=subject),
        step=check_int(step, field="step", subject=subject),
        vote=check_bytes(vote, field="vote", subject=subject),
    )


def last_signed_is_new(new: LastSigned, current: LastSigned | None) -> bool:
    if current is None or new.key > current.key:
        return True
    subject = f"vote at {new.height}/{new.round}/{new.step}"
    if new.key == current.key:
        if new.vote == current.vote:
            return False
        raise InvalidInput(
            reason="double_sign",
            subject=subject,
            field="vote",
            expected="the vote already signed at this height/round/step",
            found="a different vote",
        )
    raise InvalidInput(
        reason="last_signed_regression",
        subject=subject,
        field="height/round/step",
        expected=f"> {current.height}/{current.round}/{current.step}",
        found=f"{new.height}/{new.round}/{new.step}",
    )


def check_limit(limit: object) -> int:
    return check_int(limit, field="limit", subject="blocks_from")


def check_keep_snapshots(keep_snapshots: object) -> int:
    if (
        isinstance(keep_snapshots, bool)
        or not isinstance(keep_snapshots, int)
        or keep_snapshots < 1
    ):
        raise UsageError(f"keep_snapshots must be an int >= 1, got {keep_snapshots!r}")
    return keep_snapshots


def check_meta_value(key: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(
            reason="bad_type",
            subject="meta",
            field=key,
            expected="bytes",
            found=type(value).__name__,
        )
    return value


def new_snapshot(height: object, state: object) -> StateSnapshot:
    subject = f"snapshot {height!r}"
    return StateSnapshot(
        height=check_int(height, field="height", subject=subject),
        state=check_bytes(state, field="state", subject=subject),
    )


def new_wal_row(seq: int, height: object, record: object) -> WalRow:
    subject = f"wal record at height {height!r}"
    return WalRow(
        seq=seq,
        height=check_int(height, field="height", subject=subject),
        record=check_bytes(record, field="record", subject=subject),
    )
