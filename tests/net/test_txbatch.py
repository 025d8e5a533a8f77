"""The batch wire format (``gridnode.txbatch``): strict decoding, ids kept, size splitting."""

from __future__ import annotations

import random

import pytest

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, SignedOrder, sign_order, sign_reading
from gridnode.net.host import topic_name
from gridnode.txbatch import (
    MAX_BATCH_TXS,
    decode_tx_batch,
    decode_tx_results,
    encode_tx_batch,
    encode_tx_results,
    split_for,
)
from market.codec import pack
from market.errors import (
    InvalidInput,
    LedgerReason,
    OrderReason,
    Reason,
    UsageError,
    WireReason,
)
from market.orders import Order, Side, Step
from tests.refusals import refused

KEY = KeyPair.from_rng(random.Random(3))
GENESIS = Genesis(
    community_id="batch-test",
    genesis_time_ms=0,
    members=(KEY.public_hex,),
    validators=(KEY.public_hex,),
)


def orders(n: int) -> list[SignedOrder]:
    return [
        sign_order(
            KEY,
            GENESIS,
            Order(f"o{i}", KEY.public_hex, Side.BUY, 10 + i, (Step(100_000, 100 + i),), i + 1),
        )
        for i in range(n)
    ]


def test_a_batch_round_trips_and_keeps_every_transaction_id() -> None:
    txs = [*orders(3), sign_reading(KEY, GENESIS, slot=4, net_wh=-250)]
    back = decode_tx_batch(encode_tx_batch(txs), max_bytes=1 << 20)
    assert [tx.id for tx in back] == [tx.id for tx in txs]
    assert back == tuple(txs)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["gn.txbatch", 1, []], "bad_batch_size"),
        (["gn.txbatch", 2, [b"x"]], "bad_shape"),
        (["gn.other", 1, [b"x"]], "bad_shape"),
        (["gn.txbatch", 1, ["not bytes"]], "bad_type"),
        (["gn.txbatch", 1, [b"\xc1"]], "malformed"),
        (["gn.txbatch", 1, [b"x"] * (MAX_BATCH_TXS + 1)], "bad_batch_size"),
    ],
)
def test_malformed_batches_are_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidInput) as err:
        decode_tx_batch(pack(value), max_bytes=1 << 20)
    assert err.value.reason == reason


def test_a_repeated_transaction_or_an_oversize_batch_is_refused() -> None:
    one = orders(1)[0]
    with pytest.raises(InvalidInput) as err:
        decode_tx_batch(pack(["gn.txbatch", 1, [one.encode(), one.encode()]]), max_bytes=1 << 20)
    assert err.value.reason == "duplicate_in_batch"
    data = encode_tx_batch(orders(5))
    with pytest.raises(InvalidInput) as err:
        decode_tx_batch(data, max_bytes=len(data) - 1)
    assert err.value.reason == "oversize"
    with pytest.raises(UsageError):
        encode_tx_batch([])


def test_items_the_caller_holds_are_taken_as_held_not_decoded_again() -> None:
    txs = orders(3)
    held = {txs[1].id: txs[1]}
    asked: list[bytes] = []

    def known(tid: bytes) -> SignedOrder | None:
        asked.append(tid)
        return held.get(tid)

    got = decode_tx_batch(encode_tx_batch(txs), max_bytes=1 << 20, known=known)
    assert got == tuple(txs) and got[1] is txs[1] and got[0] is not txs[0]
    assert asked == [tx.id for tx in txs]


def test_split_for_keeps_order_and_every_batch_fits() -> None:
    txs = orders(40)
    limit = 2_000
    runs = split_for(txs, limit)
    assert len(runs) > 1
    assert [tx for run in runs for tx in run] == txs
    assert all(len(encode_tx_batch(run)) <= limit for run in runs)
    with pytest.raises(UsageError):
        split_for(txs, 100)  # not even one transaction fits


def test_results_round_trip_and_must_match_the_request() -> None:
    rows: list[tuple[bytes, Reason | None]] = [
        (bytes(range(32)), None),
        (bytes(32), LedgerReason.BAD_SIGNATURE),
        (b"\x01" * 32, OrderReason.SLOT_CLOSED),
    ]
    data = encode_tx_results(rows)
    assert b"bad_signature" in data and b"slot_closed" in data  # codes on the wire
    back = decode_tx_results(data, expected=3)
    assert back == rows and back[1][1] is LedgerReason.BAD_SIGNATURE
    # a code this node does not know (a newer peer's) reads as unknown_reason
    newer = pack(["gn.txresults", 1, [[bytes(32), "some_new_rule"]]])
    assert decode_tx_results(newer, expected=1) == [(bytes(32), WireReason.UNKNOWN_REASON)]
    with refused(WireReason.BAD_SHAPE):
        decode_tx_results(data, expected=4)
    with refused(WireReason.BAD_SHAPE):
        decode_tx_results(pack(["gn.txresults", 1, [[b"short", ""]]]), expected=1)


def test_topic_names_carry_a_version() -> None:
    assert topic_name("c", "orders") == "/gridnode/c/orders/1"
    assert topic_name("c", "orders", 2) == "/gridnode/c/orders/2"
    with pytest.raises(UsageError):
        topic_name("c", "orders", 0)
