"""Varint framing: known vectors, round trips under any chunking, and the size/format limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridnode.net.framing import (
    FrameDecoder,
    decode_uvarint,
    encode_frame,
    encode_frames,
    encode_uvarint,
)
from market.errors import WireReason
from tests.refusals import refused

# multiformats/unsigned-varint test vectors
VECTORS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (255, "ff01"),
    (300, "ac02"),
    (16384, "808001"),
    (2**63 - 1, "ffffffffffffffff7f"),
]


@pytest.mark.parametrize(("value", "hexed"), VECTORS)
def test_known_vectors(value: int, hexed: str) -> None:
    assert encode_uvarint(value).hex() == hexed
    assert decode_uvarint(bytes.fromhex(hexed)) == (value, len(hexed) // 2)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_uvarint_round_trip(value: int) -> None:
    data = encode_uvarint(value)
    assert decode_uvarint(data + b"\xff") == (value, len(data))
    assert decode_uvarint(data[:-1]) is None


def test_out_of_range_and_malformed_varints() -> None:
    with refused(WireReason.OUT_OF_RANGE):
        encode_uvarint(-1)
    with refused(WireReason.OUT_OF_RANGE):
        encode_uvarint(2**63)
    with refused(WireReason.MALFORMED_VARINT):
        decode_uvarint(bytes.fromhex("8000"))  # 0 in two bytes: not minimal
    with refused(WireReason.MALFORMED_VARINT):
        decode_uvarint(b"\x80" * 9 + b"\x01")  # ten bytes


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
)
def test_decoder_yields_the_same_frames_under_any_chunking(
    bodies: list[bytes], cuts: list[int]
) -> None:
    wire = encode_frames(bodies)
    assert wire == b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder(max_frame_bytes=300)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += decoder.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert out == bodies
    assert decoder.buffered_bytes == 0


def test_oversize_is_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    assert decoder.feed(encode_frame(b"a" * 100)) == [b"a" * 100]
    assert decoder.error is None
    # no body sent yet: rejected before buffering it; the frame before it still comes out
    assert decoder.feed(encode_frame(b"b") + encode_uvarint(101)) == [b"b"]
    assert decoder.error is not None
    assert decoder.error.reason == "oversize"
    assert decoder.buffered_bytes == 0
    with refused(WireReason.DECODER_FAILED):
        decoder.feed(encode_frame(b"ok"))


def test_malformed_length_fails_the_decoder() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x80" * 12) == []
    assert decoder.error is not None
    assert decoder.error.reason == "malformed_varint"
