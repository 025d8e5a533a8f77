"""Direct streams: framed request/response and one-way messages between two peers.

Rules of this module (``docs/protocol.md`` §4):

* Our protocol ids are ``/gridnode/<community>/<name>/1.0.0``; every stream carries varint-framed
  bodies (:mod:`gridnode.net.framing`). One persistent outbound stream per (peer, protocol) is
  reused; everything queued while a write is in flight goes out in the next single write, and a
  writer woken by a first body gathers for ``_GATHER_S`` (1 ms) before writing, so a burst of
  handlers (hundreds of submissions a second, each sharing its transaction with every validator)
  costs a few writes, not one per body: py-libp2p spends its CPU per write (Yamux frame, Noise
  encryption, a syscall), not per byte.
* Requests on a stream are answered in order, one response frame each: ``0x00`` OK + data, or
  ``0x01`` REJECTED + the refusal's **reason code** (ASCII, a :data:`~market.errors.Reason`
  member's code — never a sentence). A request that times out resets its stream.
* Handlers refuse by raising :class:`~market.errors.InvalidInput` (answered REJECTED with its
  code) or :class:`~market.errors.PeerMisbehaviour`. Whether the sender is to blame is decided
  here, once, by the reason (:meth:`gridnode.net.peers.PeerBook.judge`): a late order is answered
  ``slot_closed`` and not counted, a forged one ``bad_signature`` and counted. Any other exception
  is our bug: logged, answered ``handler_failed``, never blamed on the peer.
* A peer that sends an oversize or malformed frame, or a response nobody asked for, gets its
  stream reset and the fault recorded; no peer input can raise out of a stream task. Responses
  that arrive on a stream we closed (a request on it timed out, so the rest were abandoned) are
  not the peer's fault: a slow validator is not banned for answering late.
* A banned peer's streams are reset as they open, and nothing is sent to it.
* A sans-IO driver that cannot await uses :meth:`Streams.send_soon`: it never blocks and keeps
  the order of messages per (peer, protocol).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from gridnode.net.framing import FrameDecoder, encode_frames
from gridnode.net.identity import stream_protocol
from gridnode.net.peers import PeerBook
from market.errors import (
    InvalidInput,
    NetworkError,
    PeerMisbehaviour,
    Rejected,
    UsageError,
    WireReason,
)

__all__ = [
    "STATUS_OK",
    "STATUS_REJECTED",
    "MessageHandler",
    "RequestHandler",
    "Streams",
]

log = logging.getLogger("gridnode.net")

STATUS_OK: Final = 0x00
STATUS_REJECTED: Final = 0x01
_READ_CHUNK: Final = 64 * 1024
#: a woken writer waits this long for more bodies before it writes (see the module rules)
_GATHER_S: Final = 0.001

#: on request: handler(peer_id, body) -> response body (may be async)
RequestHandler = Callable[[str, bytes], bytes | Awaitable[bytes]]
#: on one-way message: handler(peer_id, body) (may be async)
MessageHandler = Callable[[str, bytes], Awaitable[None] | None]


async def reset_quietly(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()


class _Pending:
    __slots__ = ("abandoned", "done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: bytes | None = None
        self.abandoned = False


class _Outbound:
    """One persistent stream to a peer for one protocol: batched writes, in-order responses."""

    def __init__(self, streams: Streams, peer: str, protocol: str, stream: Any) -> None:
        self.streams = streams
        self.peer = peer
        self.protocol = protocol
        self.stream = stream
        self.outbox: list[bytes] = []
        self.pending: deque[_Pending] = deque()
        self.wake = trio.Event()
        self.closed = False
        self.writes = 0

    def enqueue(self, body: bytes, pending: _Pending | None) -> None:
        if self.closed:
            raise NetworkError(f"stream {self.protocol} to {self.peer} is closed")
        self.outbox.append(body)
        if pending is not None:
            self.pending.append(pending)
        self.wake.set()

    async def writer(self) -> None:
        try:
            while not self.closed:
                await self.wake.wait()
                await trio.sleep(_GATHER_S)
                self.wake = trio.Event()
                if not self.outbox:
                    continue
                batch, self.outbox = self.outbox, []
                await self.stream.write(encode_frames(batch))
                self.writes += 1
        except Exception as exc:
            log.debug("write to %s on %s failed: %r", self.peer, self.protocol, exc)
        finally:
            await self.close()

    async def reader(self) -> None:
        book = self.streams.peers
        decoder = FrameDecoder(max_frame_bytes=self.streams.max_frame_bytes)
        try:
            while not self.closed:
                data = await self.stream.read(_READ_CHUNK)
                if not data or self.closed:  # closed meanwhile (a request timed out): the
                    break  # responses left are for requests we abandoned, not the peer's fault
                for frame in decoder.feed(data):
                    book.count(self.peer, "frames_in")
                    if not self.pending:  # a response nobody asked for
                        book.judge(
                            self.peer,
                            InvalidInput(
                                reason=WireReason.UNSOLICITED_RESPONSE, subject=self.protocol
                            ),
                        )
                        return
                    waiter = self.pending.popleft()
                    waiter.response = frame
                    waiter.done.set()
                if decoder.error is not None:
                    book.judge(self.peer, decoder.error)
                    return
        except Exception as exc:
            log.debug("read from %s on %s ended: %r", self.peer, self.protocol, exc)
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake.set()
        while self.pending:
            self.pending.popleft().done.set()  # response None = failed
        self.streams.outbound.pop((self.peer, self.protocol), None)
        await reset_quietly(self.stream)


class Streams:
    """The direct-stream half of a host (see the module rules). Use it on the trio thread."""

    def __init__(
        self,
        *,
        host: Any,
        community: str,
        nursery: trio.Nursery,
        peers: PeerBook,
        max_frame_bytes: int,
        request_timeout_s: float,
    ) -> None:
        self._host = host
        self._community = community
        self._nursery = nursery
        self.peers = peers
        self.max_frame_bytes = max_frame_bytes
        self.request_timeout_s = request_timeout_s
        self._requests: dict[str, RequestHandler] = {}
        self._messages: dict[str, MessageHandler] = {}
        self.outbound: dict[tuple[str, str], _Outbound] = {}
        self._open_locks: dict[tuple[str, str], trio.Lock] = {}
        self._send_backlog: dict[tuple[str, str], list[bytes]] = {}

    def protocol(self, name: str) -> str:
        return stream_protocol(self._community, name)

    # ---- serving ----

    def on_request(self, name: str, handler: RequestHandler) -> str:
        protocol = self.protocol(name)
        self._requests[protocol] = handler
        self._host.set_stream_handler(TProtocol(protocol), self._serve_requests)
        return protocol

    def on_message(self, name: str, handler: MessageHandler) -> str:
        protocol = self.protocol(name)
        self._messages[protocol] = handler
        self._host.set_stream_handler(TProtocol(protocol), self._serve_messages)
        return protocol

    async def _serve_requests(self, stream: Any) -> None:
        await self._serve(stream, respond=True)

    async def _serve_messages(self, stream: Any) -> None:
        await self._serve(stream, respond=False)

    async def _serve(self, stream: Any, *, respond: bool) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        protocol = str(stream.get_protocol())
        decoder = FrameDecoder(max_frame_bytes=self.max_frame_bytes)
        try:
            if self.peers.is_banned(peer):
                return
            while True:
                data = await stream.read(_READ_CHUNK)
                if not data:
                    return
                frames = decoder.feed(data)
                if frames:
                    self.peers.count(peer, "frames_in", len(frames))
                    replies = []
                    for body in frames:
                        if self.peers.is_banned(peer):  # banned by an earlier frame: stop reading
                            return
                        if respond:
                            replies.append(await self._answer(peer, protocol, body))
                        else:
                            await self._deliver(peer, protocol, body)
                    if replies:
                        await stream.write(encode_frames(replies))
                if decoder.error is not None:
                    self.peers.judge(peer, decoder.error)
                    log.debug("peer %s on %s: %s; resetting stream", peer, protocol, decoder.error)
                    return
        except Exception as exc:
            log.debug("stream %s from %s ended: %r", protocol, peer, exc)
        finally:
            await reset_quietly(stream)

    def _refused(self, peer: str, error: InvalidInput | PeerMisbehaviour) -> bytes:
        """Record ``error`` if it is the peer's fault; the REJECTED answer with its reason code."""
        if isinstance(error, PeerMisbehaviour):
            self.peers.report(error)
        else:
            self.peers.judge(peer, error)
        return bytes([STATUS_REJECTED]) + error.reason.value.encode("ascii")

    async def _answer(self, peer: str, protocol: str, body: bytes) -> bytes:
        handler = self._requests.get(protocol)
        if handler is None:
            return bytes([STATUS_REJECTED]) + WireReason.NO_HANDLER.value.encode("ascii")
        try:
            result = handler(peer, body)
            if inspect.isawaitable(result):
                result = await result
            return bytes([STATUS_OK]) + bytes(result)
        except (InvalidInput, PeerMisbehaviour) as exc:
            return self._refused(peer, exc)
        except Exception:
            log.exception("request handler for %s failed", protocol)
            return bytes([STATUS_REJECTED]) + WireReason.HANDLER_FAILED.value.encode("ascii")

    async def _deliver(self, peer: str, protocol: str, body: bytes) -> None:
        handler = self._messages.get(protocol)
        if handler is None:
            return
        try:
            result = handler(peer, body)
            if inspect.isawaitable(result):
                await result
        except (InvalidInput, PeerMisbehaviour) as exc:
            self._refused(peer, exc)
        except Exception:
            log.exception("message handler for %s failed", protocol)

    # ---- sending ----

    async def _channel(self, peer: str, protocol: str) -> _Outbound:
        key = (peer, protocol)
        existing = self.outbound.get(key)
        if existing is not None and not existing.closed:
            return existing
        if self.peers.is_banned(peer):
            raise NetworkError(f"peer {peer} is banned")
        lock = self._open_locks.setdefault(key, trio.Lock())
        async with lock:
            existing = self.outbound.get(key)
            if existing is not None and not existing.closed:
                return existing
            try:
                stream = await self._host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])
            except Exception as exc:
                raise NetworkError(f"cannot open {protocol} to {peer}: {exc}") from exc
            channel = _Outbound(self, peer, protocol, stream)
            self.outbound[key] = channel
            self._nursery.start_soon(channel.writer)
            self._nursery.start_soon(channel.reader)
            return channel

    async def close_peer(self, peer: str) -> None:
        """Close our outbound streams to ``peer`` (it was banned)."""
        for (p, _), channel in list(self.outbound.items()):
            if p == peer:
                await channel.close()

    async def close_all(self) -> None:
        for channel in list(self.outbound.values()):
            await channel.close()

    def _check_sizes(self, bodies: Sequence[bytes], what: str) -> None:
        for body in bodies:
            if len(body) > self.max_frame_bytes:
                raise UsageError(f"{what} of {len(body)} bytes exceeds max_frame_bytes")

    async def request(
        self, peer: str, name: str, body: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """See :meth:`gridnode.net.host.NetHost.request`."""
        protocol = self.protocol(name)
        self._check_sizes([body], "request")
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        waiter = _Pending()
        channel: _Outbound | None = None
        with trio.move_on_after(timeout) as scope:
            channel = await self._channel(peer, protocol)
            channel.enqueue(body, waiter)
            await waiter.done.wait()
        if scope.cancelled_caught:
            waiter.abandoned = True
            self.peers.count(peer, "timeouts")
            if channel is not None:
                await channel.close()  # responses would no longer line up
            raise NetworkError(f"request {protocol} to {peer} timed out after {timeout} s")
        reply = waiter.response
        if reply is None:
            raise NetworkError(f"stream {protocol} to {peer} closed before the response")
        if reply[:1] == bytes([STATUS_OK]):
            return reply[1:]
        if reply[:1] == bytes([STATUS_REJECTED]):
            raise Rejected(
                peer=peer, protocol=protocol, code=reply[1:65].decode("ascii", "replace")
            )
        self.peers.judge(
            peer,
            InvalidInput(reason=WireReason.BAD_STATUS, subject=protocol, found=reply[:1].hex()),
        )
        if channel is not None:
            await channel.close()
        raise NetworkError(f"peer {peer} answered {protocol} with a malformed response")

    async def send(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """See :meth:`gridnode.net.host.NetHost.send`."""
        protocol = self.protocol(name)
        self._check_sizes(bodies, "message")
        with trio.move_on_after(self.request_timeout_s) as scope:
            channel = await self._channel(peer, protocol)
        if scope.cancelled_caught:
            self.peers.count(peer, "timeouts")
            raise NetworkError(f"opening {protocol} to {peer} timed out")
        for body in bodies:
            channel.enqueue(body, None)

    def send_soon(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """See :meth:`gridnode.net.host.NetHost.send_soon`."""
        protocol = self.protocol(name)
        self._check_sizes(bodies, "message")
        key = (peer, protocol)
        channel = self.outbound.get(key)
        if channel is not None and not channel.closed:
            for body in bodies:
                channel.enqueue(body, None)
            return
        backlog = self._send_backlog.get(key)
        if backlog is not None:
            backlog.extend(bodies)
            return
        self._send_backlog[key] = list(bodies)
        try:
            self._nursery.start_soon(self._open_and_flush, peer, protocol)
        except RuntimeError:  # the nursery closed: the host is stopping, nothing more goes out
            self._send_backlog.pop(key, None)
            log.debug(
                "host stopping: dropping %d messages to %s on %s", len(bodies), peer, protocol
            )

    async def _open_and_flush(self, peer: str, protocol: str) -> None:
        key = (peer, protocol)
        channel: _Outbound | None = None
        try:
            with trio.move_on_after(self.request_timeout_s) as scope:
                channel = await self._channel(peer, protocol)
            if scope.cancelled_caught:
                self.peers.count(peer, "timeouts")
        except NetworkError as exc:
            log.debug("send to %s failed: %s", peer, exc)
        backlog = self._send_backlog.pop(key, [])
        if channel is None or channel.closed:
            log.debug("dropping %d messages to %s on %s", len(backlog), peer, protocol)
            return
        for body in backlog:
            channel.enqueue(body, None)

    async def submit(
        self,
        peers: Sequence[str],
        name: str,
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> tuple[str, bytes]:
        """See :meth:`gridnode.net.host.NetHost.submit`."""
        if not peers:
            raise UsageError("submit() needs at least one peer")
        failures: list[str] = []
        for peer in peers:
            try:
                return peer, await self.request(peer, name, body, timeout_s=timeout_s)
            except NetworkError as exc:
                failures.append(str(exc))
        raise NetworkError("no peer acknowledged: " + "; ".join(failures))
