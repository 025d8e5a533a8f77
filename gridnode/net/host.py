"""The daemon's libp2p shell: one host, GossipSub topics, and framed request/message streams.

Everything here runs on trio (see :mod:`gridnode.net.bridge` for reaching it from asyncio). Open a
host with :func:`open_net_host` and drive it through :class:`NetHost`; the wire format is
specified in ``docs/protocol.md``.

Rules:

* Identity: the libp2p key *is* the household's Ed25519 key (:class:`gridnode.core.crypto.KeyPair`
  seed), so the peer id derives from the household key and :func:`public_key_of` recovers the
  32-byte key from a peer id. Transport: TCP + Noise + Yamux, nothing else offered.
* GossipSub v1.1 (``/meshsub/1.1.0``, ``/meshsub/1.0.0``) or FloodSub, with settings that do not
  silently drop messages: spam protection and adaptive gossip off, heartbeat 1 s, short prune
  back-off, ``degree_high`` at least the community size. Topic names are
  ``/gridnode/<community>/<name>/1``. Every incoming gossip message passes our size limit and the
  topic's validator *before* it is delivered or forwarded; rejections are counted per forwarder.
* :meth:`NetHost.publish` is paced: it waits (up to ``publish_wait_s``) until every pubsub peer's
  outbound queue is below ``publish_queue_limit`` of libp2p's 32, so a burst is never dropped by
  a full queue.
* Direct streams use our protocol ids ``/gridnode/<community>/<name>/1.0.0`` and varint-framed
  bodies (:mod:`gridnode.net.framing`). One persistent outbound stream per (peer, protocol) is
  reused; everything queued while a write is in flight goes out in the next single write (batching).
  Requests on a stream are answered in order; a response body starts with a status byte
  (``0x00`` ok, ``0x01`` rejected + UTF-8 reason). A request that times out resets its stream.
* A sans-IO driver that cannot await uses :meth:`NetHost.send_soon` / :meth:`NetHost.publish_soon`:
  they never block and keep the order of messages per (peer, protocol) and per host respectively.
* A peer that sends an oversize or malformed frame gets its stream reset and a counter bumped; no
  peer input can raise out of a handler task. Counters are visible via :meth:`NetHost.peer_stats`.
* Wanted peers (bootstrap, :meth:`NetHost.add_peer`, mDNS finds) are dialled in parallel and
  re-dialled with exponential back-off whenever they are not connected.
* Shutdown order (``notes/py-libp2p.md``): cancel our tasks, disconnect every peer, stop GossipSub
  and Pubsub, stop the host, then stop Pubsub's cache thread. No thread of ours survives.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.floodsub import FloodSub
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_V11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from gridnode.core.crypto import KeyPair
from gridnode.net.framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frames
from market.errors import InvalidInput, NetworkError, PeerMisbehaviour, UsageError

__all__ = [
    "FLOODSUB_PROTOCOL",
    "STATUS_OK",
    "STATUS_REJECTED",
    "GossipHandler",
    "MessageHandler",
    "NetConfig",
    "NetHost",
    "PeerStats",
    "RequestHandler",
    "Validator",
    "libp2p_key_pair",
    "open_net_host",
    "peer_id_of",
    "peer_id_of_hex",
    "public_hex_of",
    "public_key_of",
    "stream_protocol",
    "topic_name",
]

log = logging.getLogger(__name__)

FLOODSUB_PROTOCOL: Final = TProtocol("/floodsub/1.0.0")
STATUS_OK: Final = 0x00
STATUS_REJECTED: Final = 0x01
_READ_CHUNK: Final = 64 * 1024
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# identity multihash (0x00, len 36) of the protobuf PublicKey {Type: Ed25519, Data: 32 bytes}
_ED25519_PEER_ID_PREFIX: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])

#: validate(origin_peer_id, data) -> accept?  Runs before a gossip message is delivered/forwarded.
Validator = Callable[[str, bytes], bool]
#: on gossip: handler(origin_peer_id, data)
GossipHandler = Callable[[str, bytes], None]
#: on request: handler(peer_id, body) -> response body (may be async)
RequestHandler = Callable[[str, bytes], bytes | Awaitable[bytes]]
#: on one-way message: handler(peer_id, body) (may be async)
MessageHandler = Callable[[str, bytes], Awaitable[None] | None]


# -- names and identities -------------------------------------------------------------------------


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"{kind} {name!r}: expected 1-64 chars of [a-z0-9._-] starting with a letter or digit"
        )
    return name


def _check_community(community: str) -> str:
    # the same rule as the ledger's Genesis.community_id: printable ASCII, <= 64, no '/' or space
    if (
        not community
        or len(community) > 64
        or not community.isascii()
        or not community.isprintable()
        or "/" in community
        or " " in community
    ):
        raise UsageError(
            f"community {community!r}: expected 1-64 printable ASCII chars without '/' or spaces"
        )
    return community


def topic_name(community: str, name: str, version: int = 1) -> str:
    """The GossipSub topic for ``name`` in ``community``: ``/gridnode/<community>/<name>/<version>``.

    A topic's payload format changes only with a new version (a new topic)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 1000:
        raise UsageError(f"topic version {version!r}: expected an int 1..999")
    return f"/gridnode/{_check_community(community)}/{_check_name('topic', name)}/{version}"


def stream_protocol(community: str, name: str) -> str:
    """The stream protocol id: ``/gridnode/<community>/<name>/1.0.0``."""
    return f"/gridnode/{_check_community(community)}/{_check_name('protocol', name)}/1.0.0"


def libp2p_key_pair(keys: KeyPair) -> Libp2pKeyPair:
    """The libp2p key pair for our household key (same Ed25519 seed, same public key)."""
    private = Ed25519PrivateKey.new(keys.seed)
    return Libp2pKeyPair(private, private.get_public_key())


def peer_id_of(public_key: bytes) -> str:
    """The base58 libp2p peer id of a 32-byte Ed25519 public key."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58()


def peer_id_of_hex(public_hex: str) -> str:
    """:func:`peer_id_of` for a key given as 64 lowercase hex chars (as in genesis and ledger)."""
    try:
        return peer_id_of(bytes.fromhex(public_hex))
    except Exception as exc:
        raise InvalidInput(
            reason="malformed_public_key", subject="public key", found=public_hex[:80]
        ) from exc


def public_hex_of(peer_id: str) -> str:
    """:func:`public_key_of` as 64 lowercase hex chars."""
    return public_key_of(peer_id).hex()


def public_key_of(peer_id: str) -> bytes:
    """The 32-byte Ed25519 key inside a peer id; :class:`InvalidInput` for anything else."""
    try:
        raw = ID.from_base58(peer_id).to_bytes()
    except Exception as exc:
        raise InvalidInput(reason="malformed_peer_id", subject="peer id", found=peer_id) from exc
    if len(raw) != 38 or not raw.startswith(_ED25519_PEER_ID_PREFIX):
        raise InvalidInput(
            reason="not_ed25519_peer_id",
            subject="peer id",
            expected="identity multihash of an Ed25519 key",
            found=peer_id,
        )
    return raw[len(_ED25519_PEER_ID_PREFIX) :]


# -- configuration and counters -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Network settings. Durations in seconds; sizes in bytes."""

    community: str
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    router: Literal["gossipsub", "floodsub"] = "gossipsub"
    #: mesh target/low: with fewer peers than ``gossip_degree_low`` the mesh holds every peer.
    gossip_degree: int = 8
    gossip_degree_low: int = 6
    #: >= the community size, so GossipSub never prunes a member out of the mesh.
    gossip_degree_high: int = 64
    heartbeat_interval_s: int = 1
    prune_back_off_s: int = 10
    max_gossip_bytes: int = 64 * 1024
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    request_timeout_s: float = 5.0
    dial_timeout_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    publish_queue_limit: int = 16
    publish_wait_s: float = 5.0

    def __post_init__(self) -> None:
        _check_community(self.community)
        if self.router not in ("gossipsub", "floodsub"):
            raise UsageError(f"router {self.router!r}: expected 'gossipsub' or 'floodsub'")
        if not 0 < self.gossip_degree_low <= self.gossip_degree <= self.gossip_degree_high:
            raise UsageError("expected 0 < gossip_degree_low <= gossip_degree <= degree_high")
        if not 0 < self.publish_queue_limit <= 32:
            raise UsageError("publish_queue_limit: expected 1..32 (libp2p's queue holds 32)")
        for addr in (*self.listen_addrs, *self.bootstrap):
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:
                raise UsageError(f"address {addr!r} is not a multiaddr: {exc}") from exc
        for addr in self.bootstrap:
            if "/p2p/" not in addr:
                raise UsageError(f"bootstrap address {addr!r} must end in /p2p/<peer id>")


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What one peer did to us (counts since the host started)."""

    malformed: int = 0
    oversize: int = 0
    rejected: int = 0
    timeouts: int = 0
    frames_in: int = 0
    gossip_in: int = 0

    @property
    def misbehaviour(self) -> int:
        """Faults that are the peer's doing (timeouts may be the network's)."""
        return self.malformed + self.oversize + self.rejected


_COUNTERS: Final = ("malformed", "oversize", "rejected", "timeouts", "frames_in", "gossip_in")


async def _reset_quietly(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()


# -- outbound persistent streams ------------------------------------------------------------------


class _Pending:
    __slots__ = ("abandoned", "done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: bytes | None = None
        self.abandoned = False


class _Outbound:
    """One persistent stream to a peer for one protocol: batched writes, in-order responses."""

    def __init__(self, host: NetHost, peer: str, protocol: str, stream: Any) -> None:
        self.host = host
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
        decoder = FrameDecoder(max_frame_bytes=self.host.config.max_frame_bytes)
        try:
            while not self.closed:
                data = await self.stream.read(_READ_CHUNK)
                if not data:
                    break
                frames = decoder.feed(data)
                for frame in frames:
                    self.host._count(self.peer, "frames_in")
                    if not self.pending:  # a response nobody asked for
                        self.host._count(self.peer, "malformed")
                        return
                    waiter = self.pending.popleft()
                    waiter.response = frame
                    waiter.done.set()
                if decoder.error is not None:
                    fault = "oversize" if decoder.error.reason == "oversize" else "malformed"
                    self.host._count(self.peer, fault)
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
        self.host._outbound.pop((self.peer, self.protocol), None)
        await _reset_quietly(self.stream)


# -- the host -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Wanted:
    addr: str
    backoff_s: float
    next_try: float = 0.0


@dataclass(slots=True)
class _Handlers:
    requests: dict[str, RequestHandler] = field(default_factory=dict)
    messages: dict[str, MessageHandler] = field(default_factory=dict)
    gossip: dict[str, GossipHandler] = field(default_factory=dict)


class NetHost:
    """A running libp2p host. Obtain one from :func:`open_net_host`; use it on the trio thread."""

    def __init__(
        self, *, config: NetConfig, host: Any, pubsub: Pubsub, router: Any, nursery: trio.Nursery
    ) -> None:
        self.config = config
        self._host = host
        self._pubsub = pubsub
        self._router = router
        self._nursery = nursery
        self._handlers = _Handlers()
        self._outbound: dict[tuple[str, str], _Outbound] = {}
        self._open_locks: dict[tuple[str, str], trio.Lock] = {}
        self._stats: dict[str, dict[str, int]] = {}
        self._wanted: dict[str, _Wanted] = {}
        self._wanted_changed = trio.Event()
        self._subscriptions: dict[str, Any] = {}
        self._validators: dict[str, Validator | None] = {}
        self._send_backlog: dict[tuple[str, str], list[bytes]] = {}
        self._publish_queue_in, self._publish_queue_out = trio.open_memory_channel[
            tuple[str, bytes]
        ](math.inf)
        self.peer_id: str = host.get_id().to_base58()

    # ---- identity, addresses, peers ----

    @property
    def addrs(self) -> list[str]:
        """Our listen addresses, each ending in ``/p2p/<peer id>`` (give these to other peers)."""
        out = []
        for addr in self._host.get_addrs():
            text = str(addr)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{self.peer_id}")
        return out

    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection."""
        return sorted(p.to_base58() for p in self._host.get_connected_peers())

    def gossip_peers(self, topic: str) -> list[str]:
        """Peers known to be subscribed to ``topic`` (full topic name)."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic, ()))

    async def connect(self, addr: str) -> str:
        """Dial ``addr`` (a multiaddr ending in ``/p2p/<id>``) once; return the peer id."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise UsageError(f"address {addr!r}: expected a multiaddr ending in /p2p/<id>") from exc
        with trio.move_on_after(self.config.dial_timeout_s) as scope:
            try:
                await self._host.connect(info)
            except Exception as exc:
                raise NetworkError(f"dial {addr} failed: {exc}") from exc
        if scope.cancelled_caught:
            raise NetworkError(f"dial {addr} timed out after {self.config.dial_timeout_s} s")
        peer: str = info.peer_id.to_base58()
        return peer

    def add_peer(self, addr: str) -> None:
        """Keep a connection to ``addr``: dial it now (in the background) and whenever it drops."""
        try:
            peer = info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id.to_base58()
        except Exception as exc:
            raise UsageError(f"address {addr!r}: expected a multiaddr ending in /p2p/<id>") from exc
        if peer == self.peer_id:
            return
        self._wanted[peer] = _Wanted(addr, self.config.reconnect_min_s)
        self._wanted_changed.set()

    def remove_peer(self, peer: str) -> None:
        """Stop re-dialling ``peer`` (an open connection stays until it drops)."""
        self._wanted.pop(peer, None)

    async def disconnect(self, peer: str) -> None:
        with contextlib.suppress(Exception):
            await self._host.disconnect(ID.from_base58(peer))

    async def wait_connected(self, peers: Sequence[str], timeout_s: float) -> bool:
        """Poll until every peer in ``peers`` is connected or ``timeout_s`` passes."""
        with trio.move_on_after(timeout_s):
            while not set(peers) <= set(self.connected_peers()):
                await trio.sleep(0.02)
        return set(peers) <= set(self.connected_peers())

    async def _maintain_peers(self) -> None:
        """Dial wanted-but-unconnected peers in parallel; back off exponentially per peer."""
        while True:
            now = trio.current_time()
            connected = set(self.connected_peers())
            due = [
                (peer, want)
                for peer, want in self._wanted.items()
                if peer not in connected and want.next_try <= now
            ]
            for peer, want in self._wanted.items():
                if peer in connected:
                    want.backoff_s = self.config.reconnect_min_s
            if due:
                async with trio.open_nursery() as nursery:
                    for peer, want in due:
                        nursery.start_soon(self._dial_wanted, peer, want)
            with trio.move_on_after(0.25):
                await self._wanted_changed.wait()
                self._wanted_changed = trio.Event()

    async def _dial_wanted(self, peer: str, want: _Wanted) -> None:
        try:
            await self.connect(want.addr)
            want.backoff_s = self.config.reconnect_min_s
            want.next_try = trio.current_time() + want.backoff_s
        except (NetworkError, UsageError) as exc:
            log.debug("dial %s failed: %s", peer, exc)
            want.next_try = trio.current_time() + want.backoff_s
            want.backoff_s = min(want.backoff_s * 2, self.config.reconnect_max_s)

    async def _mdns_dialer(self) -> None:
        """mDNS fills the peerstore but never dials: dial what it found (once per peer)."""
        store = self._host.get_peerstore()
        seen: set[str] = set()
        while True:
            for pid in list(store.peers_with_addrs()):
                peer = pid.to_base58()
                if peer == self.peer_id or peer in seen or peer in self._wanted:
                    continue
                seen.add(peer)
                addrs = store.addrs(pid)
                if addrs:
                    self.add_peer(f"{addrs[0]}/p2p/{peer}")
            await trio.sleep(1.0)

    # ---- counters ----

    def _count(self, peer: str, what: str, n: int = 1) -> None:
        row = self._stats.get(peer)
        if row is None:
            row = self._stats[peer] = dict.fromkeys(_COUNTERS, 0)
        row[what] += n

    def peer_stats(self) -> dict[str, PeerStats]:
        """A snapshot of every peer's counters (a copy: safe to hand to another thread)."""
        return {peer: PeerStats(**row) for peer, row in self._stats.items()}

    def report_misbehaviour(self, error: PeerMisbehaviour) -> None:
        """Let the daemon count a fault it found in a peer's payload (bad signature, replay...)."""
        self._count(error.peer, "rejected")

    # ---- gossip ----

    async def subscribe(
        self,
        name: str,
        handler: GossipHandler,
        *,
        validate: Validator | None = None,
        version: int = 1,
    ) -> str:
        """Join topic ``name`` (``version``) of our community; return the full topic name.

        ``validate(origin_peer_id, data)`` runs on every message (ours included) before it is
        delivered or forwarded; ``handler(origin_peer_id, data)`` gets each accepted message once.
        Messages above ``max_gossip_bytes`` are rejected before ``validate`` runs.
        """
        topic = topic_name(self.config.community, name, version)
        if topic in self._subscriptions:
            raise UsageError(f"already subscribed to {topic}")
        limit = self.config.max_gossip_bytes
        me = self._host.get_id()

        def libp2p_validator(forwarder: ID, msg: Any) -> bool:
            fwd = forwarder.to_base58()
            if len(msg.data) > limit:
                if forwarder != me:
                    self._count(fwd, "oversize")
                return False
            try:
                origin = ID(msg.from_id).to_base58()
                accepted = validate(origin, bytes(msg.data)) if validate is not None else True
            except Exception:
                log.debug("validator for %s raised", topic, exc_info=True)
                accepted = False
                if forwarder != me:
                    self._count(fwd, "malformed")
                return False
            if not accepted and forwarder != me:
                self._count(fwd, "rejected")
            return bool(accepted)

        self._validators[topic] = validate
        self._pubsub.set_topic_validator(topic, libp2p_validator, False)
        sub = await self._pubsub.subscribe(topic)
        self._subscriptions[topic] = sub
        self._handlers.gossip[topic] = handler
        self._nursery.start_soon(self._drain_subscription, topic, sub)
        return topic

    async def _drain_subscription(self, topic: str, sub: Any) -> None:
        # libp2p's subscription channel holds 32 messages: drain it without awaiting anything else.
        while True:
            try:
                msg = await sub.get()
            except Exception:
                return
            origin = ID(msg.from_id).to_base58()
            if origin != self.peer_id:
                self._count(origin, "gossip_in")
            handler = self._handlers.gossip.get(topic)
            if handler is None:
                continue
            try:
                handler(origin, bytes(msg.data))
            except Exception:
                log.exception("gossip handler for %s failed", topic)

    def _max_peer_queue(self) -> int:
        queues = getattr(self._pubsub, "peer_queues", {})
        return max((len(q) for q in queues.values()), default=0)

    async def publish(self, name: str, data: bytes, *, version: int = 1) -> None:
        """Publish ``data`` on our community's topic ``name`` (paced: never overruns a queue).

        Raises :class:`InvalidInput` (``rejected_by_own_validator``) if our own topic validator
        rejects ``data`` (libp2p would drop it silently) and :class:`UsageError` when oversize.
        """
        topic = topic_name(self.config.community, name, version)
        self._check_publishable(topic, data)
        await self._publish_checked(topic, data)

    def _check_publishable(self, topic: str, data: bytes) -> None:
        if len(data) > self.config.max_gossip_bytes:
            raise UsageError(
                f"gossip message of {len(data)} bytes exceeds {self.config.max_gossip_bytes}"
            )
        validate = self._validators.get(topic)
        # libp2p runs our own validator on our own message and drops it silently: say so instead
        if validate is not None and not validate(self.peer_id, data):
            raise InvalidInput(
                reason="rejected_by_own_validator", subject=f"gossip on {topic}", field="data"
            )

    async def _publish_checked(self, topic: str, data: bytes) -> None:
        with trio.move_on_after(self.config.publish_wait_s):
            while self._max_peer_queue() >= self.config.publish_queue_limit:
                await trio.sleep(0.002)
        await self._pubsub.publish(topic, data)

    def publish_soon(self, name: str, data: bytes, *, version: int = 1) -> None:
        """:meth:`publish` without waiting, for sans-IO drivers: queued, published in order.

        Checks size and our own validator immediately (raising like :meth:`publish`); a later
        failure to publish is logged, never raised.
        """
        topic = topic_name(self.config.community, name, version)
        self._check_publishable(topic, data)
        self._publish_queue_in.send_nowait((topic, data))

    async def _publisher(self) -> None:
        async for topic, data in self._publish_queue_out:
            try:
                await self._publish_checked(topic, data)
            except Exception:
                log.exception("queued publish on %s failed", topic)

    # ---- direct streams: handlers ----

    def on_request(self, name: str, handler: RequestHandler) -> str:
        """Answer requests on protocol ``name``; return the full protocol id.

        ``handler(peer_id, body)`` returns the response body (sync or async). Raising
        :class:`InvalidInput` or :class:`PeerMisbehaviour` answers "rejected" with the reason and
        counts a rejection against the peer; any other exception answers "rejected: internal".
        """
        protocol = stream_protocol(self.config.community, name)
        self._handlers.requests[protocol] = handler
        self._host.set_stream_handler(TProtocol(protocol), self._serve_requests)
        return protocol

    def on_message(self, name: str, handler: MessageHandler) -> str:
        """Receive one-way messages on protocol ``name``: ``handler(peer_id, body)``."""
        protocol = stream_protocol(self.config.community, name)
        self._handlers.messages[protocol] = handler
        self._host.set_stream_handler(TProtocol(protocol), self._serve_messages)
        return protocol

    async def _serve_requests(self, stream: Any) -> None:
        await self._serve(stream, respond=True)

    async def _serve_messages(self, stream: Any) -> None:
        await self._serve(stream, respond=False)

    async def _serve(self, stream: Any, *, respond: bool) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        protocol = str(stream.get_protocol())
        decoder = FrameDecoder(max_frame_bytes=self.config.max_frame_bytes)
        try:
            while True:
                data = await stream.read(_READ_CHUNK)
                if not data:
                    return
                frames = decoder.feed(data)
                if frames:
                    self._count(peer, "frames_in", len(frames))
                    if respond:
                        replies = [await self._answer(peer, protocol, body) for body in frames]
                        await stream.write(encode_frames(replies))
                    else:
                        for body in frames:
                            await self._deliver(peer, protocol, body)
                if decoder.error is not None:
                    fault = "oversize" if decoder.error.reason == "oversize" else "malformed"
                    self._count(peer, fault)
                    log.debug("peer %s on %s: %s; resetting stream", peer, protocol, decoder.error)
                    return
        except Exception as exc:
            log.debug("stream %s from %s ended: %r", protocol, peer, exc)
        finally:
            await _reset_quietly(stream)

    async def _answer(self, peer: str, protocol: str, body: bytes) -> bytes:
        handler = self._handlers.requests.get(protocol)
        if handler is None:
            return bytes([STATUS_REJECTED]) + b"no handler"
        try:
            result = handler(peer, body)
            if inspect.isawaitable(result):
                result = await result
            return bytes([STATUS_OK]) + bytes(result)
        except (InvalidInput, PeerMisbehaviour) as exc:
            self._count(peer, "rejected")
            return bytes([STATUS_REJECTED]) + str(exc).encode("utf-8", "replace")[:1024]
        except Exception:
            log.exception("request handler for %s failed", protocol)
            return bytes([STATUS_REJECTED]) + b"internal"

    async def _deliver(self, peer: str, protocol: str, body: bytes) -> None:
        handler = self._handlers.messages.get(protocol)
        if handler is None:
            return
        try:
            result = handler(peer, body)
            if inspect.isawaitable(result):
                await result
        except (InvalidInput, PeerMisbehaviour):
            self._count(peer, "rejected")
        except Exception:
            log.exception("message handler for %s failed", protocol)

    # ---- direct streams: sending ----

    async def _channel(self, peer: str, protocol: str) -> _Outbound:
        key = (peer, protocol)
        existing = self._outbound.get(key)
        if existing is not None and not existing.closed:
            return existing
        lock = self._open_locks.setdefault(key, trio.Lock())
        async with lock:
            existing = self._outbound.get(key)
            if existing is not None and not existing.closed:
                return existing
            try:
                stream = await self._host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])
            except Exception as exc:
                raise NetworkError(f"cannot open {protocol} to {peer}: {exc}") from exc
            channel = _Outbound(self, peer, protocol, stream)
            self._outbound[key] = channel
            self._nursery.start_soon(channel.writer)
            self._nursery.start_soon(channel.reader)
            return channel

    async def request(
        self, peer: str, name: str, body: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Send one request on protocol ``name`` and return the response body.

        Raises :class:`NetworkError` on timeout or a lost stream (the caller may retry elsewhere)
        and :class:`InvalidInput` (``rejected_by_peer``) when the peer answered "rejected".
        Concurrent requests to the same peer share one stream and are batched into few writes.
        """
        protocol = stream_protocol(self.config.community, name)
        if len(body) > self.config.max_frame_bytes:
            raise UsageError(f"request of {len(body)} bytes exceeds max_frame_bytes")
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        waiter = _Pending()
        channel: _Outbound | None = None
        with trio.move_on_after(timeout) as scope:
            channel = await self._channel(peer, protocol)
            channel.enqueue(body, waiter)
            await waiter.done.wait()
        if scope.cancelled_caught:
            waiter.abandoned = True
            self._count(peer, "timeouts")
            if channel is not None:
                await channel.close()  # responses would no longer line up
            raise NetworkError(f"request {protocol} to {peer} timed out after {timeout} s")
        reply = waiter.response
        if reply is None or not reply:
            raise NetworkError(f"stream {protocol} to {peer} closed before the response")
        if reply[0] == STATUS_OK:
            return reply[1:]
        raise InvalidInput(
            reason="rejected_by_peer",
            subject=f"peer {peer}",
            field=protocol,
            found=reply[1:].decode("utf-8", "replace"),
        )

    async def send(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """Queue one-way messages to ``peer`` on protocol ``name`` (written as one batch).

        Returns once they are queued on the persistent stream; delivery is not acknowledged
        (use :meth:`request`/:meth:`submit` for that).
        """
        protocol = stream_protocol(self.config.community, name)
        for body in bodies:
            if len(body) > self.config.max_frame_bytes:
                raise UsageError(f"message of {len(body)} bytes exceeds max_frame_bytes")
        with trio.move_on_after(self.config.request_timeout_s) as scope:
            channel = await self._channel(peer, protocol)
        if scope.cancelled_caught:
            self._count(peer, "timeouts")
            raise NetworkError(f"opening {protocol} to {peer} timed out")
        for body in bodies:
            channel.enqueue(body, None)

    def send_soon(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """:meth:`send` without waiting, for sans-IO drivers (e.g. the node's ``Outbox``).

        Messages to one (peer, protocol) keep their order, also while the stream is being opened.
        If the stream cannot be opened within ``request_timeout_s`` they are dropped (logged, and
        a timeout counted): one-way messages are not acknowledged; the protocols above re-send.
        """
        protocol = stream_protocol(self.config.community, name)
        for body in bodies:
            if len(body) > self.config.max_frame_bytes:
                raise UsageError(f"message of {len(body)} bytes exceeds max_frame_bytes")
        key = (peer, protocol)
        channel = self._outbound.get(key)
        if channel is not None and not channel.closed:
            for body in bodies:
                channel.enqueue(body, None)
            return
        backlog = self._send_backlog.get(key)
        if backlog is not None:
            backlog.extend(bodies)
            return
        self._send_backlog[key] = list(bodies)
        self._nursery.start_soon(self._open_and_flush, peer, protocol)

    async def _open_and_flush(self, peer: str, protocol: str) -> None:
        key = (peer, protocol)
        channel: _Outbound | None = None
        try:
            with trio.move_on_after(self.config.request_timeout_s) as scope:
                channel = await self._channel(peer, protocol)
            if scope.cancelled_caught:
                self._count(peer, "timeouts")
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
        """Acknowledged delivery: request ``peers[0]``, on timeout/loss re-send to the next one.

        Returns ``(peer that acknowledged, its response)``. A peer that *rejects* the request ends
        the attempt (another validator would reject it too): :class:`InvalidInput` propagates.
        Raises :class:`NetworkError` when every peer failed.
        """
        if not peers:
            raise UsageError("submit() needs at least one peer")
        failures: list[str] = []
        for peer in peers:
            try:
                return peer, await self.request(peer, name, body, timeout_s=timeout_s)
            except NetworkError as exc:
                failures.append(str(exc))
        raise NetworkError("no peer acknowledged: " + "; ".join(failures))


# -- lifecycle ------------------------------------------------------------------------------------


async def _close_connections(host: Any, router: Any, net: NetHost) -> None:
    """Stop inbound traffic, then close every connection, before Pubsub's service stops.

    Otherwise a pubsub stream still being read schedules work on the stopped Pubsub service
    ("Nursery is closed to new arrivals"), which tears down the host with an error.
    """
    for protocol in router.get_protocols():
        with contextlib.suppress(Exception):
            host.remove_stream_handler(protocol)
    network = host.get_network()
    for channel in list(net._outbound.values()):
        await channel.close()

    async def close_quietly(conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()

    for _ in range(3):  # connections that were being set up may register late: sweep again
        conns = [c for cs in list(network.connections.values()) for c in list(cs)]
        if not conns:
            break
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(close_quietly, conn)
        for peer in list(host.get_connected_peers()):
            with contextlib.suppress(Exception):
                await host.disconnect(peer)


def _make_router(config: NetConfig) -> Any:
    if config.router == "floodsub":
        return FloodSub([FLOODSUB_PROTOCOL])
    return GossipSub(
        protocols=[MESHSUB_V11, MESHSUB_V10],
        degree=config.gossip_degree,
        degree_low=config.gossip_degree_low,
        degree_high=config.gossip_degree_high,
        heartbeat_interval=config.heartbeat_interval_s,
        heartbeat_initial_delay=0.1,
        prune_back_off=config.prune_back_off_s,
        unsubscribe_back_off=config.prune_back_off_s,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
    )


@asynccontextmanager
async def open_net_host(keys: KeyPair, config: NetConfig) -> AsyncIterator[NetHost]:
    """Start a host for ``keys`` with ``config``; stop it cleanly on exit (see module rules)."""
    key_pair = libp2p_key_pair(keys)
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=[multiaddr.Multiaddr(a) for a in config.listen_addrs],
        enable_mDNS=config.mdns,
    )
    router = _make_router(config)
    pubsub = Pubsub(host, router, strict_signing=True)
    try:
        router_cm: Any = (
            background_trio_service(router)
            if isinstance(router, GossipSub)
            else contextlib.nullcontext()
        )
        listen = [multiaddr.Multiaddr(a) for a in config.listen_addrs]
        # Pubsub and its router run *outside* host.run(): the network service (and with it every
        # connection's stream tasks) stops before they do (notes: shutdown order).
        async with background_trio_service(pubsub), router_cm, host.run(listen_addrs=listen):
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                net = NetHost(
                    config=config, host=host, pubsub=pubsub, router=router, nursery=nursery
                )
                nursery.start_soon(net._maintain_peers)
                nursery.start_soon(net._publisher)
                if config.mdns:
                    nursery.start_soon(net._mdns_dialer)
                for addr in config.bootstrap:
                    net.add_peer(addr)
                try:
                    yield net
                finally:
                    nursery.cancel_scope.cancel()
            # every connection closes before pubsub/gossipsub stop (notes: shutdown order)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await _close_connections(host, router, net)
    finally:
        pubsub.seen_messages.stop()
        with trio.CancelScope(shield=True), trio.move_on_after(3), contextlib.suppress(Exception):
            await host.close()
