"""The daemon's libp2p shell: one host, its connections, and the peers it refuses.

Everything here runs on trio (see :mod:`gridnode.net.bridge` for reaching it from asyncio). Open a
host with :func:`open_net_host` and drive it through :class:`NetHost`; the wire format is
specified in ``docs/protocol.md``. The host is put together from four parts:

* :mod:`gridnode.net.identity` — the household key is the libp2p key; names of topics and
  protocols; peer id <-> public key.
* :mod:`gridnode.net.streams` — framed request/response and one-way message streams.
* :mod:`gridnode.net.pubsub` — GossipSub topics with validators, paced publishing.
* :mod:`gridnode.net.peers` — counters, misbehaviour by reason and the decaying peer score
  (:mod:`gridnode.core.peerscore`).

Rules of this module:

* Transport: TCP + Noise + Yamux (Mplex as the fallback muxer), nothing else offered; listen
  addresses must be TCP (:func:`build_host`). Yamux acknowledges received data the way
  go-yamux does — a window update once half the window was read — instead of py-libp2p's default
  of one update per read (``PY_YAMUX_RELEASE_ON_READ=0``, set for this process when a host opens
  unless the environment says otherwise): an update is a frame written, encrypted and sent, and
  was one for every message a validator received.
* Wanted peers (bootstrap, :meth:`NetHost.add_peer`, mDNS finds) are dialled in parallel and
  re-dialled with exponential back-off whenever they are not connected. Nothing else is dialled:
  py-libp2p's auto-connector, which dials every peer it has heard of, is off (:class:`_NoAutoDials`).
* **Bans.** When a peer's score falls below the threshold (``NetConfig.score``) the host closes its
  streams and connections and, until the ban ends, closes every new connection from it, resets its
  streams, drops gossip it forwards or authored, neither dials it nor sends to it. Genesis
  validators are given a ten times higher threshold (:meth:`NetHost.protect`).
* Misbehaviour is recorded in one place, :class:`gridnode.net.peers.PeerBook`, by the parts that
  decode a peer's bytes; a handler that must still answer reports through
  :meth:`NetHost.report_misbehaviour`. Counters and scores: :meth:`NetHost.peer_stats`.
* Shutdown order (``notes/py-libp2p.md``): cancel our tasks, answer new pubsub streams with a reset
  (their handlers are replaced, never removed: :func:`_stop_serving`), disconnect every peer, stop
  GossipSub and Pubsub, stop the host, then stop Pubsub's cache thread. No thread of ours survives.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import multiaddr
import trio
from libp2p.abc import INotifee
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.rcmgr.connection_limits import new_connection_limits_with_defaults
from libp2p.rcmgr.manager import ResourceLimits, new_resource_manager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.manager import TransportManager
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader

from gridnode.core.crypto import KeyPair
from gridnode.core.peerscore import ScoreParams
from gridnode.net.framing import DEFAULT_MAX_FRAME_BYTES
from gridnode.net.identity import (
    check_community,
    libp2p_key_pair,
    peer_id_of,
    peer_id_of_hex,
    public_hex_of,
    public_key_of,
    stream_protocol,
    topic_name,
)
from gridnode.net.peers import PeerBook, PeerStats
from gridnode.net.pubsub import FLOODSUB_PROTOCOL, Gossip, GossipHandler, Validator, make_router
from gridnode.net.streams import (
    STATUS_OK,
    STATUS_REJECTED,
    MessageHandler,
    RequestHandler,
    Streams,
)
from market.errors import NetworkError, PeerMisbehaviour, UsageError

#: py-libp2p's Yamux tuning switch (see the module rules)
_YAMUX_RELEASE_ON_READ = "PY_YAMUX_RELEASE_ON_READ"

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
    "build_host",
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


#: a host's connection limit: a validator holds one connection per member of its community. py-libp2p's
#: default (300 in all, of which 250 inbound: ``max_connections - min_connections``) refused a
#: validator's 251st member without a word (``benchmarks/fan_in.py``)
DEFAULT_MAX_CONNECTIONS = 2000


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
    #: how misbehaviour is weighed, forgiven and punished (``docs/protocol.md`` §6)
    score: ScoreParams = field(default_factory=ScoreParams)
    #: connections held at most, inbound and outbound together (:func:`build_host`)
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        check_community(self.community)
        if self.router not in ("gossipsub", "floodsub"):
            raise UsageError(f"router {self.router!r}: expected 'gossipsub' or 'floodsub'")
        if not 0 < self.gossip_degree_low <= self.gossip_degree <= self.gossip_degree_high:
            raise UsageError("expected 0 < gossip_degree_low <= gossip_degree <= degree_high")
        if not 1 <= self.max_connections <= 100_000:
            raise UsageError(f"max_connections {self.max_connections}: expected 1..100000")
        if not 0 < self.publish_queue_limit <= 32:
            raise UsageError("publish_queue_limit: expected 1..32 (libp2p's queue holds 32)")
        for addr in (*self.listen_addrs, *self.bootstrap):
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:
                raise UsageError(f"address {addr!r} is not a multiaddr: {exc}") from exc
        for addr in self.listen_addrs:  # the host offers TCP only (build_host)
            names = {p.name for p in multiaddr.Multiaddr(addr).protocols()}
            if "tcp" not in names or names & {"ws", "wss"}:
                raise UsageError(f"listen address {addr!r}: expected a TCP address (/ip4/…/tcp/…)")
        for addr in self.bootstrap:
            if "/p2p/" not in addr:
                raise UsageError(f"bootstrap address {addr!r} must end in /p2p/<peer id>")


@dataclass(slots=True)
class _Wanted:
    addr: str
    backoff_s: float
    next_try: float = 0.0


class _BanGate(INotifee):
    """Closes every new connection from a banned peer (py-libp2p gates only by address)."""

    def __init__(self, net: NetHost) -> None:
        self._net = net

    async def connected(self, network: Any, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        if self._net.is_banned(peer):
            log.debug("refusing a connection from banned peer %s", peer)
            with contextlib.suppress(RuntimeError):  # our nursery is closing: so is the host
                self._net._nursery.start_soon(_close_quietly, conn)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def disconnected(self, network: Any, conn: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


async def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


class NetHost:
    """A running libp2p host. Obtain one from :func:`open_net_host`; use it on the trio thread."""

    def __init__(
        self, *, config: NetConfig, host: Any, pubsub: Pubsub, router: Any, nursery: trio.Nursery
    ) -> None:
        self.config = config
        self._host = host
        self._router = router
        self._nursery = nursery
        self.peer_id: str = host.get_id().to_base58()
        self.peers = PeerBook(config.score)
        self.peers.on_ban = self._on_ban
        self.streams = Streams(
            host=host,
            community=config.community,
            nursery=nursery,
            peers=self.peers,
            max_frame_bytes=config.max_frame_bytes,
            request_timeout_s=config.request_timeout_s,
        )
        self.gossip = Gossip(
            pubsub=pubsub, me=host.get_id(), config=config, nursery=nursery, peers=self.peers
        )
        self._wanted: dict[str, _Wanted] = {}
        self._wanted_changed = trio.Event()

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
        return self.gossip.peers_of(topic)

    async def connect(self, addr: str) -> str:
        """Dial ``addr`` (a multiaddr ending in ``/p2p/<id>``) once; return the peer id.

        Raises :class:`NetworkError` if the dial fails or the peer is banned."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise UsageError(f"address {addr!r}: expected a multiaddr ending in /p2p/<id>") from exc
        peer: str = info.peer_id.to_base58()
        if self.is_banned(peer):
            raise NetworkError(f"peer {peer} is banned")
        with trio.move_on_after(self.config.dial_timeout_s) as scope:
            try:
                await self._host.connect(info)
            except Exception as exc:
                raise NetworkError(f"dial {addr} failed: {exc}") from exc
        if scope.cancelled_caught:
            raise NetworkError(f"dial {addr} timed out after {self.config.dial_timeout_s} s")
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
                if peer not in connected and want.next_try <= now and not self.is_banned(peer)
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

    # ---- misbehaviour, scores, bans ----

    def peer_stats(
        self, *, peers: Collection[str] | None = None, recent: int | None = None
    ) -> dict[str, PeerStats]:
        """A snapshot of peers' counters and scores (a copy: safe to hand to another thread): all
        the book keeps, or those of ``peers`` and the ``recent`` most recently active ones."""
        return self.peers.stats(peers=peers, recent=recent)

    def banned_count(self) -> int:
        """How many peers are banned now."""
        return self.peers.banned_count()

    def misbehaviour_totals(self) -> dict[str, int]:
        """Misbehaviour by reason of every peer since the host started (each refusal once)."""
        return self.peers.totals()

    def report_misbehaviour(self, error: PeerMisbehaviour) -> None:
        """Record a fault a handler found in ``error.peer``'s payload while it still answers (e.g.
        forged transactions inside a ``submit-batch`` request); may ban the peer."""
        self.peers.report(error)

    def protect(self, peers: Iterable[str]) -> None:
        """Give ``peers`` (the genesis validators' peer ids) the protected ban threshold."""
        self.peers.protect(frozenset(peers))

    def is_banned(self, peer: str) -> bool:
        return self.peers.is_banned(peer)

    def _on_ban(self, peer: str) -> None:
        with contextlib.suppress(RuntimeError):  # our nursery is closing: so is the host
            self._nursery.start_soon(self._enforce_ban, peer)

    async def _enforce_ban(self, peer: str) -> None:
        await self.streams.close_peer(peer)
        await self.disconnect(peer)

    # ---- gossip (see gridnode.net.pubsub) ----

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
        delivered or forwarded and refuses it by raising :class:`~market.errors.InvalidInput`;
        ``handler(origin_peer_id, data)`` gets each accepted message once. Messages above
        ``max_gossip_bytes`` are refused (``oversize``) before ``validate`` runs.
        """
        return await self.gossip.subscribe(name, handler, validate=validate, version=version)

    async def publish(self, name: str, data: bytes, *, version: int = 1) -> None:
        """Publish ``data`` on our community's topic ``name`` (paced: never overruns a queue).

        Our own topic validator's :class:`~market.errors.InvalidInput` propagates (libp2p would
        drop the message silently); :class:`UsageError` when oversize.
        """
        await self.gossip.publish(name, data, version=version)

    def publish_soon(self, name: str, data: bytes, *, version: int = 1) -> None:
        """:meth:`publish` without waiting, for sans-IO drivers: queued, published in order.

        Checks size and our own validator immediately (raising like :meth:`publish`); a later
        failure to publish is logged, never raised.
        """
        self.gossip.publish_soon(name, data, version=version)

    # ---- direct streams (see gridnode.net.streams) ----

    def on_request(self, name: str, handler: RequestHandler) -> str:
        """Answer requests on protocol ``name``; return the full protocol id.

        ``handler(peer_id, body)`` returns the response body (sync or async). Raising
        :class:`~market.errors.InvalidInput` answers REJECTED with its reason code (the sender is
        blamed only if the reason is misbehaviour); any other exception answers
        ``handler_failed`` and is logged.
        """
        return self.streams.on_request(name, handler)

    def on_message(self, name: str, handler: MessageHandler) -> str:
        """Receive one-way messages on protocol ``name``: ``handler(peer_id, body)``; raising
        :class:`~market.errors.InvalidInput` refuses the message (blamed as for requests)."""
        return self.streams.on_message(name, handler)

    async def request(
        self, peer: str, name: str, body: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        """Send one request on protocol ``name`` and return the response body.

        Raises :class:`NetworkError` on timeout, a lost stream or a malformed response (the caller
        may retry elsewhere) and :class:`~market.errors.Rejected` — whose ``reason`` is the peer's
        reason code — when the peer answered REJECTED. Concurrent requests to the same peer share
        one stream and are batched into few writes.
        """
        return await self.streams.request(peer, name, body, timeout_s=timeout_s)

    async def send(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """Queue one-way messages to ``peer`` on protocol ``name`` (written as one batch).

        Returns once they are queued on the persistent stream; delivery is not acknowledged
        (use :meth:`request`/:meth:`submit` for that).
        """
        await self.streams.send(peer, name, bodies)

    def send_soon(self, peer: str, name: str, bodies: Sequence[bytes]) -> None:
        """:meth:`send` without waiting, for sans-IO drivers (e.g. the node's ``Outbox``).

        Messages to one (peer, protocol) keep their order, also while the stream is being opened.
        If the stream cannot be opened within ``request_timeout_s`` they are dropped (logged, and
        a timeout counted): one-way messages are not acknowledged; the protocols above re-send.
        """
        self.streams.send_soon(peer, name, bodies)

    async def submit(
        self,
        peers: Sequence[str],
        name: str,
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> tuple[str, bytes]:
        """Acknowledged delivery: request ``peers[0]``, on timeout/loss re-send to the next one.

        Returns ``(peer that acknowledged, its response)``. A peer that *refuses* the request ends
        the attempt (another validator would refuse it too): :class:`~market.errors.Rejected`
        propagates. Raises :class:`NetworkError` when every peer failed.
        """
        return await self.streams.submit(peers, name, body, timeout_s=timeout_s)


# -- lifecycle ------------------------------------------------------------------------------------


async def _refuse_stream(stream: Any) -> None:
    """The handler of a protocol the host no longer serves (it is stopping): reset the stream."""
    with contextlib.suppress(Exception):
        await stream.reset()


def _stop_serving(host: Any, protocols: Iterable[str]) -> None:
    """Answer every new stream for ``protocols`` with a reset, from now on.

    The handlers are replaced, not removed: py-libp2p's multiselect checks that a protocol has a
    handler, writes its acceptance (a suspension point) and only then looks the handler up, so a
    handler removed in between raised ``KeyError`` in the connection's task and tore the host
    down with it (seen in CI: a peer opening a ``/meshsub`` stream while the host stopped).
    """
    for protocol in protocols:
        with contextlib.suppress(Exception):
            host.set_stream_handler(TProtocol(protocol), _refuse_stream)


async def _close_connections(host: Any, router: Any, net: NetHost) -> None:
    """Stop inbound traffic, then close every connection, before Pubsub's service stops.

    Otherwise a pubsub stream still being read schedules work on the stopped Pubsub service
    ("Nursery is closed to new arrivals"), which tears down the host with an error.
    """
    _stop_serving(host, router.get_protocols())
    network = host.get_network()
    await net.streams.close_all()
    for _ in range(3):  # connections that were being set up may register late: sweep again
        conns = [c for cs in list(network.connections.values()) for c in list(cs)]
        if not conns:
            break
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(_close_quietly, conn)
        for peer in list(host.get_connected_peers()):
            with contextlib.suppress(Exception):
                await host.disconnect(peer)


class _NoAutoDials(AutoConnector):
    """py-libp2p's auto-connector, switched off: the host dials only the peers it wants.

    Upstream's swarm dials every peer in its peer store whenever it holds fewer connections than
    its watermark (100), on a timer and after every disconnect. For us that is wrong three ways:
    it re-dials a peer we closed on purpose (a ban), it dials peers the daemon never asked for,
    and it dials during shutdown: our sweep closes every connection, each close schedules a new
    round of dials, and a dial still in flight when the swarm stops left its socket unclosed
    (CI: ``ResourceWarning`` for a loopback socket in ``tests/net/test_net_hosts.py``). Whom to
    dial is :meth:`NetHost.add_peer`'s decision, with its own back-off.
    """

    async def maybe_connect(self) -> None:
        return None

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return None


def build_host(
    key_pair: Libp2pKeyPair, *, mdns: bool = False, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> BasicHost:
    """The host ``new_host`` builds for our options, assembled from py-libp2p's own classes.

    Our options to ``libp2p.new_host`` were: this key pair, Noise as the only security protocol
    (a fresh X25519 static key), Yamux then Mplex as muxers, TCP listen addresses, mDNS on or off,
    everything else at its default. For those, ``new_host`` (and the ``new_swarm`` it calls)
    makes exactly these objects: one default resource manager shared by the swarm and the host, a
    transport upgrader over the security and muxer choices, one TCP transport (a plain TCP listen
    address selects TCP; nothing else is offered), a peer store holding our key pair, a transport
    manager without port sharing (that is only for TCP and WebSocket on one port), the swarm with
    default retry and connection settings, and a :class:`BasicHost` with its default protocols
    (identify, identify-push, ping) and a negotiation timeout of 30 s (``new_host``'s default,
    also ``BasicHost``'s). What is different is only what is *imported*: ``libp2p/__init__.py``,
    which imports the QUIC, TLS, SECIO, WebSocket and key-store modules to offer them, never
    runs (:mod:`gridnode.lazyimports` defers it). What is different in the host: the swarm's
    auto-connector is switched off (:class:`_NoAutoDials`), and the host holds up to
    ``max_connections`` connections, all of them inbound if need be (upstream's default: 300, of
    which 250 inbound), never pruned (upstream prunes idle ones above its high watermark); its
    resource manager allows as many established connections in each direction (upstream: 256
    inbound, checked after the handshake, silently for the dialler) and twice as many in its
    overall count (at the same limit it closed an established connection when one more was being
    refused). ``tests/daemon/test_host_assembly.py`` checks the two agree otherwise — same
    protocols, muxers, transports and handlers — and talk to each other.
    """
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    upgrader = TransportUpgrader(
        secure_transports_by_protocol={NOISE_PROTOCOL_ID: noise},
        muxer_transports_by_protocol={
            TProtocol(YAMUX_PROTOCOL_ID): Yamux,
            TProtocol(MPLEX_PROTOCOL_ID): Mplex,
        },
    )
    peer_id = ID.from_pubkey(key_pair.public_key)
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)
    resources = new_resource_manager(
        limits=ResourceLimits(max_connections=2 * max_connections),
        connection_limits=new_connection_limits_with_defaults()  # but the established counts
        .with_max_established_inbound(max_connections)
        .with_max_established_outbound(max_connections)
        .with_max_established_total(max_connections),
    )
    swarm = Swarm(
        peer_id,
        peerstore,
        upgrader,
        transports=[TCP()],
        transport_manager=TransportManager(port_demuxers={}),
        connection_config=ConnectionConfig(
            max_connections=max_connections,
            min_connections=0,  # upstream's inbound cap is max_connections - min_connections
            low_watermark=0,
            high_watermark=max_connections,
        ),
    )
    swarm.set_resource_manager(resources)
    swarm.auto_connector = _NoAutoDials(swarm)
    return BasicHost(network=swarm, enable_mDNS=mdns, resource_manager=resources)


@asynccontextmanager
async def open_net_host(keys: KeyPair, config: NetConfig) -> AsyncIterator[NetHost]:
    """Start a host for ``keys`` with ``config``; stop it cleanly on exit (see module rules)."""
    os.environ.setdefault(_YAMUX_RELEASE_ON_READ, "0")  # read by py-libp2p's Yamux on every read
    host = build_host(
        libp2p_key_pair(keys), mdns=config.mdns, max_connections=config.max_connections
    )
    router = make_router(config)
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
                host.get_network().register_notifee(_BanGate(net))
                nursery.start_soon(net._maintain_peers)
                nursery.start_soon(net.gossip.publisher)
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
