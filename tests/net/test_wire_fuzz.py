"""Whatever bytes a peer sends, every decoder it can reach either decodes them or refuses them with
a reason from the closed set — never another exception — and the refusal is blamed exactly when
the reason is misbehaviour."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.core.consensus_messages import decode_message
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, admission_error, decode_block, decode_tx, genesis_state
from gridnode.net.framing import FrameDecoder
from gridnode.net.peers import PeerBook
from gridnode.txbatch import decode_tx_batch, decode_tx_results
from market.codec import pack
from market.errors import MISBEHAVIOUR, REASONS, InvalidInput, is_misbehaviour

KEY = KeyPair.from_rng(random.Random(1))
GENESIS = Genesis(
    community_id="fuzz", genesis_time_ms=0, members=(KEY.public_hex,), validators=(KEY.public_hex,)
)
STATE = genesis_state(GENESIS)

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "tx": decode_tx,
    "batch": lambda d: decode_tx_batch(d, max_bytes=1 << 20),
    "results": lambda d: decode_tx_results(d, expected=1),
    "consensus": decode_message,
    "block": decode_block,
}

# msgpack values shaped like our records: arrays led by a known tag and version, odd leaves
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=70)
    | st.text(max_size=12)
    | st.sampled_from(["gn.tx.order", "gn.order", "gn.vote", "gn.txbatch", "buy", "sell"])
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=9), max_leaves=30)
TAGS = [
    *("gn.tx.order", "gn.tx.cancel", "gn.tx.reading", "gn.txbatch", "gn.txresults", "gn.vote"),
    *("gn.proposal", "gn.blockreq", "gn.blockresp", "gn.block", "gn.order", "gn.cancel"),
]
tagged = st.tuples(
    st.sampled_from(TAGS),
    st.sampled_from([1, 1, 1, 2]),
    st.lists(values, max_size=8),
).map(lambda t: pack([t[0], t[1], *t[2]]))


def _check(data: bytes) -> None:
    book = PeerBook(clock=lambda: 0.0)
    for name, decode in DECODERS.items():
        try:
            decoded = decode(data)
        except InvalidInput as exc:
            assert exc.reason in REASONS.values(), (name, exc)
            assert book.judge(name, exc) == (exc.reason in MISBEHAVIOUR)
            continue
        if name == "tx":  # a decoded transaction is judged by the ledger: again, only reasons
            error = admission_error(STATE, decoded, time_ms=1_000)
            assert error is None or error.reason in REASONS.values()
    counted = book.stats()
    for stats in counted.values():
        assert all(is_misbehaviour(r) for r in stats.misbehaviour)


@settings(max_examples=400)
@given(st.binary(max_size=512))
def test_any_bytes_are_decoded_or_refused_with_a_reason(data: bytes) -> None:
    _check(data)


@settings(max_examples=400)
@given(tagged)
def test_any_record_shaped_value_is_decoded_or_refused_with_a_reason(data: bytes) -> None:
    _check(data)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_the_frame_decoder_refuses_only_with_its_two_reasons(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    for i in range(0, len(data), chunk):
        try:
            decoder.feed(data[i : i + chunk])
        except InvalidInput as exc:  # fed after failing
            assert exc.reason == "decoder_failed"
            break
    if decoder.error is not None:
        assert decoder.error.reason in ("oversize", "malformed_varint")
        assert is_misbehaviour(decoder.error.reason)
