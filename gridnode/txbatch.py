"""Batches of transactions on the wire: one message carrying many signed transactions.

py-libp2p spends milliseconds of CPU per message on every host (``docs/protocol.md`` §8), so the
daemon sends few, larger messages: a household submits its transactions of a slot (its bundle:
reading and orders signed once, and any reading re-sent alone) in one request (``…/submit-batch/1.0.0``) and validators gossip the orders they accepted as batches
(topic ``/gridnode/<community>/orders/2``). Formats (``docs/protocol.md`` §7.4):

* batch = ``["gn.txbatch", 1, [tx_record_bytes, …]]`` — each item is one transaction's canonical
  bytes exactly as signed (§7.3), so a transaction's id is the same inside and outside a batch;
* results = ``["gn.txresults", 1, [[tx_id(32 bytes), reason], …]]`` — one per transaction of the
  request, in its order; ``reason`` is ``""`` when the validator holds the transaction (also when
  it already did), else the refusal's reason code (a :data:`~market.errors.Reason` member's code,
  never a sentence). A code the receiver does not know reads as ``unknown_reason``.

Rules: decoding is strict (canonical msgpack, exact shapes, 1..``MAX_BATCH_TXS`` items, no
transaction twice); a batch with any undecodable item is refused as a whole. Which transactions a
batch may carry and whether they are admissible is the caller's business (the daemon's topic
validator requires every item to be an admissible order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from gridnode.core.ledger import Tx, decode_tx
from market.codec import pack, unpack
from market.errors import REASONS, InvalidInput, Reason, UsageError, WireReason

__all__ = [
    "BATCH_TAG",
    "MAX_BATCH_TXS",
    "RESULTS_TAG",
    "decode_tx_batch",
    "decode_tx_results",
    "encode_tx_batch",
    "encode_tx_results",
    "split_for",
]

BATCH_TAG: Final = "gn.txbatch"
RESULTS_TAG: Final = "gn.txresults"
_VERSION: Final = 1
MAX_BATCH_TXS: Final = 512
#: msgpack overhead of the batch envelope beyond its items' own bytes (tag, version, array and bin
#: headers): a generous upper bound used by :func:`split_for`.
_ENVELOPE_BYTES: Final = 32
_ITEM_HEADER_BYTES: Final = 5


def encode_tx_batch(txs: Sequence[Tx]) -> bytes:
    """The canonical bytes of a batch of ``txs`` (1..``MAX_BATCH_TXS``)."""
    if not 0 < len(txs) <= MAX_BATCH_TXS:
        raise UsageError(f"a batch holds 1..{MAX_BATCH_TXS} transactions, not {len(txs)}")
    return pack([BATCH_TAG, _VERSION, [tx.encode() for tx in txs]])


def decode_tx_batch(
    data: bytes, *, max_bytes: int, known: Callable[[bytes], Tx | None] | None = None
) -> tuple[Tx, ...]:
    """Strictly parse a batch: every item must decode as a transaction, none may repeat.
    ``known(id)``: a transaction the caller already holds under that id (SHA-256 of its bytes,
    hence of the item's bytes), taken instead of decoding the item again (a validator's mempool)."""
    value = unpack(data, what="tx batch", max_bytes=max_bytes)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != BATCH_TAG
        or value[1] != _VERSION
        or not isinstance(value[2], list)
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE,
            subject="tx batch",
            expected=f'["{BATCH_TAG}", 1, [bytes, ...]]',
        )
    items: list[Any] = value[2]
    if not 0 < len(items) <= MAX_BATCH_TXS:
        raise InvalidInput(
            reason=WireReason.BAD_BATCH_SIZE,
            subject="tx batch",
            expected=f"1..{MAX_BATCH_TXS} transactions",
            found=str(len(items)),
        )
    txs: list[Tx] = []
    seen: set[bytes] = set()
    for item in items:
        if not isinstance(item, bytes):
            raise InvalidInput(
                reason=WireReason.BAD_TYPE, subject="tx batch", field="item", expected="bytes"
            )
        held = None if known is None else known(hashlib.sha256(item).digest())
        tx = decode_tx(item) if held is None else held
        if tx.id in seen:
            raise InvalidInput(
                reason=WireReason.DUPLICATE_IN_BATCH,
                subject="tx batch",
                expected="each transaction once",
                found=tx.id.hex()[:16],
            )
        seen.add(tx.id)
        txs.append(tx)
    return tuple(txs)


def split_for(txs: Sequence[Tx], max_bytes: int) -> list[list[Tx]]:
    """``txs`` in order, cut into consecutive runs whose batch encodes within ``max_bytes``."""
    runs: list[list[Tx]] = []
    run: list[Tx] = []
    size = _ENVELOPE_BYTES
    for tx in txs:
        item = len(tx.encode()) + _ITEM_HEADER_BYTES
        if _ENVELOPE_BYTES + item > max_bytes:
            raise UsageError(f"a transaction of {item} bytes does not fit a {max_bytes}-byte batch")
        if run and (size + item > max_bytes or len(run) == MAX_BATCH_TXS):
            runs.append(run)
            run, size = [], _ENVELOPE_BYTES
        run.append(tx)
        size += item
    if run:
        runs.append(run)
    return runs


def encode_tx_results(results: Sequence[tuple[bytes, Reason | None]]) -> bytes:
    """The answer to a batch: ``(tx_id, reason)`` per transaction, ``None`` if accepted."""
    rows = [[tid, "" if reason is None else reason.value] for tid, reason in results]
    return pack([RESULTS_TAG, _VERSION, rows])


def decode_tx_results(data: bytes, *, expected: int) -> list[tuple[bytes, Reason | None]]:
    """Strictly parse an answer to a batch of ``expected`` transactions: ``(tx_id, reason)`` per
    transaction, ``None`` when accepted (a code we do not know is ``unknown_reason``)."""
    value = unpack(data, what="tx results", max_bytes=64 * (MAX_BATCH_TXS + 1) + 1024 * expected)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != RESULTS_TAG
        or value[1] != _VERSION
        or not isinstance(value[2], list)
        or len(value[2]) != expected
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE,
            subject="tx results",
            expected=f'["{RESULTS_TAG}", 1, [[tx_id, reason] x {expected}]]',
        )
    out: list[tuple[bytes, Reason | None]] = []
    for row in value[2]:
        if (
            not isinstance(row, list)
            or len(row) != 2
            or not isinstance(row[0], bytes)
            or len(row[0]) != 32
            or not isinstance(row[1], str)
        ):
            raise InvalidInput(
                reason=WireReason.BAD_SHAPE,
                subject="tx results",
                expected="[32-byte tx id, reason]",
            )
        code = row[1]
        out.append((row[0], None if not code else REASONS.get(code, WireReason.UNKNOWN_REASON)))
    return out
