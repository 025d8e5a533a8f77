"""GossipSub topics: subscribe with a validator, publish paced, never lose a message silently.

Rules of this module (``docs/protocol.md`` §3):

* GossipSub v1.1 (``/meshsub/1.1.0``, ``/meshsub/1.0.0``) or FloodSub, with settings that do not
  silently drop messages: spam protection and adaptive gossip off, heartbeat 1 s, short prune
  back-off, ``degree_high`` at least the community size (:func:`make_router`). Topic names are
  ``/gridnode/<community>/<name>/<version>``.
* Every incoming message passes our size limit and the topic's validator *before* it is delivered
  or forwarded. A validator refuses by raising :class:`~market.errors.InvalidInput` (returning
  accepts). A refusal is recorded against the **forwarder** — the peer that sent us the bytes, as
  GossipSub v1.1 does — once, and only if its reason is misbehaviour
  (:meth:`gridnode.net.peers.PeerBook.judge`); a message that raced a block (a stale nonce, a
  closed slot) is dropped without blame. Messages forwarded by, or authored by, a banned peer are
  dropped unread.
* :meth:`Gossip.publish` is paced: it waits (up to ``publish_wait_s``) until every pubsub peer's
  outbound queue is below ``publish_queue_limit`` of libp2p's 32, so a burst is never dropped by a
  full queue. Our own validator runs before publishing (libp2p would drop a refused message of
  ours silently): its :class:`~market.errors.InvalidInput` reaches the caller.
* :meth:`Gossip.publish_soon` never blocks, for sans-IO drivers: queued, published in order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.floodsub import FloodSub
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_V11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub

from gridnode.net.identity import topic_name
from gridnode.net.peers import PeerBook
from market.errors import InvalidInput, PeerMisbehaviour, UsageError, WireReason

if TYPE_CHECKING:
    from gridnode.net.host import NetConfig

__all__ = ["FLOODSUB_PROTOCOL", "Gossip", "GossipHandler", "Validator", "make_router"]

log = logging.getLogger("gridnode.net")

FLOODSUB_PROTOCOL: Final = TProtocol("/floodsub/1.0.0")

#: validate(origin_peer_id, data): raise InvalidInput to refuse. Runs before delivery/forwarding.
Validator = Callable[[str, bytes], None]
#: on gossip: handler(origin_peer_id, data)
GossipHandler = Callable[[str, bytes], None]


def make_router(config: NetConfig) -> Any:
    """The pubsub router ``config`` asks for, with the settings of the module rules."""
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


class Gossip:
    """The pubsub half of a host (see the module rules). Use it on the trio thread."""

    def __init__(
        self,
        *,
        pubsub: Pubsub,
        me: ID,
        config: NetConfig,
        nursery: trio.Nursery,
        peers: PeerBook,
    ) -> None:
        self._pubsub = pubsub
        self._me = me
        self.peer_id: str = me.to_base58()
        self._config = config
        self._nursery = nursery
        self._peers = peers
        self._subscriptions: dict[str, Any] = {}
        self._validators: dict[str, Validator | None] = {}
        self._handlers: dict[str, GossipHandler] = {}
        self._queue_in, self._queue_out = trio.open_memory_channel[tuple[str, bytes]](math.inf)

    def topic(self, name: str, version: int) -> str:
        return topic_name(self._config.community, name, version)

    def peers_of(self, topic: str) -> list[str]:
        """Peers known to be subscribed to ``topic`` (full topic name)."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic, ()))

    async def subscribe(
        self, name: str, handler: GossipHandler, *, validate: Validator | None, version: int
    ) -> str:
        topic = self.topic(name, version)
        if topic in self._subscriptions:
            raise UsageError(f"already subscribed to {topic}")
        limit = self._config.max_gossip_bytes
        me = self._me
        book = self._peers

        def libp2p_validator(forwarder: ID, msg: Any) -> bool:
            fwd = forwarder.to_base58()
            ours = forwarder == me
            origin = ID(msg.from_id).to_base58()
            if not ours and (book.is_banned(fwd) or book.is_banned(origin)):
                return False
            try:
                if len(msg.data) > limit:
                    raise InvalidInput(
                        reason=WireReason.OVERSIZE,
                        subject=f"gossip on {topic}",
                        expected=f"<= {limit} bytes",
                        found=f"{len(msg.data)} bytes",
                    )
                if validate is not None:
                    validate(origin, bytes(msg.data))
            except InvalidInput as exc:
                if not ours:
                    book.judge(fwd, exc)
                return False
            except PeerMisbehaviour as exc:
                if not ours:
                    book.report(PeerMisbehaviour(fwd, exc.cause))
                return False
            except Exception:
                log.exception("validator for %s failed", topic)
                return False
            return True

        self._validators[topic] = validate
        self._pubsub.set_topic_validator(topic, libp2p_validator, False)
        sub = await self._pubsub.subscribe(topic)
        self._subscriptions[topic] = sub
        self._handlers[topic] = handler
        self._nursery.start_soon(self._drain, topic, sub)
        return topic

    async def _drain(self, topic: str, sub: Any) -> None:
        # libp2p's subscription channel holds 32 messages: drain it without awaiting anything else.
        while True:
            try:
                msg = await sub.get()
            except Exception:
                return
            origin = ID(msg.from_id).to_base58()
            if origin != self.peer_id:
                self._peers.count(origin, "gossip_in")
            handler = self._handlers.get(topic)
            if handler is None:
                continue
            try:
                handler(origin, bytes(msg.data))
            except Exception:
                log.exception("gossip handler for %s failed", topic)

    def _max_peer_queue(self) -> int:
        queues = getattr(self._pubsub, "peer_queues", {})
        return max((len(q) for q in queues.values()), default=0)

    def check_publishable(self, topic: str, data: bytes) -> None:
        if len(data) > self._config.max_gossip_bytes:
            raise UsageError(
                f"gossip message of {len(data)} bytes exceeds {self._config.max_gossip_bytes}"
            )
        validate = self._validators.get(topic)
        if validate is not None:  # libp2p would drop our own refused message silently
            validate(self.peer_id, data)

    async def publish(self, name: str, data: bytes, *, version: int) -> None:
        topic = self.topic(name, version)
        self.check_publishable(topic, data)
        await self._publish_checked(topic, data)

    async def _publish_checked(self, topic: str, data: bytes) -> None:
        with trio.move_on_after(self._config.publish_wait_s):
            while self._max_peer_queue() >= self._config.publish_queue_limit:
                await trio.sleep(0.002)
        await self._pubsub.publish(topic, data)

    def publish_soon(self, name: str, data: bytes, *, version: int) -> None:
        topic = self.topic(name, version)
        self.check_publishable(topic, data)
        self._queue_in.send_nowait((topic, data))

    async def publisher(self) -> None:
        """The task that publishes what :meth:`publish_soon` queued, in order."""
        async for topic, data in self._queue_out:
            try:
                await self._publish_checked(topic, data)
            except Exception:
                log.exception("queued publish on %s failed", topic)
