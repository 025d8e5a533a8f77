"""Varint length-prefixed frames for gridnode's direct streams.

Rules of this module:

* A frame on the wire is ``uvarint(len(body)) || body``: the length is an unsigned LEB128 varint as
  in multiformats (7 bits per byte, least significant group first, high bit = "more bytes follow").
  This is the same framing go-libp2p's ``msgio/protoio`` and js-libp2p's ``it-length-prefixed`` use.
* A length must use its shortest encoding and fit in 9 bytes (< 2**63); anything else is
  ``malformed_varint``. A length above the receiver's ``max_frame_bytes`` is ``oversize`` and is
  rejected *before* the body is buffered, so a peer cannot make us allocate more than the limit.
* Empty frames (length 0) are legal.
* :class:`FrameDecoder` is incremental: feed it whatever a stream read returned and it yields every
  complete frame, in order; partial frames stay buffered. A violation is recorded in
  ``decoder.error`` (frames before it are still returned); the decoder then stays failed.
* Pure: no I/O, no clock. The stream drivers in :mod:`gridnode.net.host` own the sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from market.errors import InvalidInput, WireReason

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_VARINT_BYTES",
    "FrameDecoder",
    "decode_uvarint",
    "encode_frame",
    "encode_frames",
    "encode_uvarint",
]

#: Direct-stream frames above this are a protocol violation (blocks are split below this).
DEFAULT_MAX_FRAME_BYTES: Final = 1024 * 1024
#: multiformats caps unsigned varints at 9 bytes (63 bits).
MAX_VARINT_BYTES: Final = 9


def encode_uvarint(value: int) -> bytes:
    """The shortest unsigned LEB128 encoding of ``value`` (0 <= value < 2**63)."""
    if value < 0 or value >= 1 << 63:
        raise InvalidInput(
            reason=WireReason.OUT_OF_RANGE,
            subject="uvarint",
            expected="0 <= n < 2**63",
            found=str(value),
        )
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``offset``: ``(value, next_offset)``, or ``None`` if ``data`` ends first.

    Raises :class:`InvalidInput` (``malformed_varint``) for a varint longer than 9 bytes or one that
    is not minimally encoded (a trailing ``0x00`` continuation group).
    """
    value = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= len(data):
            return None
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise InvalidInput(
                    reason=WireReason.MALFORMED_VARINT,
                    subject="frame length",
                    expected="minimal encoding",
                    found=bytes(data[offset : pos + 1]).hex(),
                )
            return value, pos + 1
        shift += 7
    raise InvalidInput(
        reason=WireReason.MALFORMED_VARINT,
        subject="frame length",
        expected=f"<= {MAX_VARINT_BYTES} bytes",
        found=f"more than {MAX_VARINT_BYTES} bytes",
    )


def encode_frame(body: bytes) -> bytes:
    """One frame: ``uvarint(len(body)) || body``."""
    return encode_uvarint(len(body)) + body


def encode_frames(bodies: Iterable[bytes]) -> bytes:
    """Many frames concatenated: what a batched write sends."""
    parts: list[bytes] = []
    for body in bodies:
        parts.append(encode_uvarint(len(body)))
        parts.append(body)
    return b"".join(parts)


class FrameDecoder:
    """Incremental frame parser with a size limit (see the module rules).

    :meth:`feed` returns the complete frames that precede any violation; the violation itself is
    left in :attr:`error` (the caller then resets the stream). Feeding a failed decoder raises.
    """

    __slots__ = ("_buf", "error", "max_frame_bytes")

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self.error: InvalidInput | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame it completes, in order (see :attr:`error`)."""
        if self.error is not None:
            raise InvalidInput(
                reason=WireReason.DECODER_FAILED, subject="frame stream", found=str(self.error)
            )
        self._buf += data
        frames: list[bytes] = []
        pos = 0
        try:
            while True:
                head = decode_uvarint(self._buf, pos)
                if head is None:
                    break
                length, start = head
                if length > self.max_frame_bytes:
                    raise InvalidInput(
                        reason=WireReason.OVERSIZE,
                        subject="frame",
                        expected=f"<= {self.max_frame_bytes} bytes",
                        found=f"{length} bytes",
                    )
                end = start + length
                if end > len(self._buf):
                    break
                frames.append(bytes(self._buf[start:end]))
                pos = end
        except InvalidInput as exc:
            self.error = exc
            self._buf.clear()
            return frames
        del self._buf[:pos]
        return frames
