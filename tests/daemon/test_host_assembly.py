"""The daemon's libp2p host, assembled from py-libp2p's parts (:func:`gridnode.net.host.build_host`),
is the host ``libp2p.new_host`` builds for the same options, and the two talk to each other.

``build_host`` exists so that ``libp2p/__init__.py`` (which imports QUIC, TLS, SECIO, WebSocket and
the key store to offer them) never runs in a daemon. The first test compares every part the two
hosts are made of; the second connects one of each over real TCP (Noise, Yamux) both ways: a
request/response stream on a protocol of ours, identify and ping, and GossipSub in both directions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from gridnode.net.host import DEFAULT_MAX_CONNECTIONS, build_host

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
ECHO = TProtocol("/gridnode-test/echo/1")


def upstream_host(key_pair: Any, *, mdns: bool = False) -> Any:
    """``new_host`` with the options ``gridnode.net.host`` passed it before ``build_host``."""
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=[multiaddr.Multiaddr(LOOPBACK)],
        enable_mDNS=mdns,
    )


def parts(host: Any) -> dict[str, Any]:
    """What a host is made of, as comparable values."""
    net = host.get_network()
    security = net.upgrader.security_multistream.transports
    muxers = net.upgrader.muxer_multistream.transports
    rm = net._resource_manager
    return {
        "host": type(host),
        "network": type(net),
        "peer": net.get_peer_id(),
        "key in peerstore": net.peerstore.privkey(net.get_peer_id()).to_bytes(),
        "transports": [type(t) for t in net.transport_manager.get_transports()],
        "port sharing": dict(net.transport_manager._port_demuxers),
        "security": [(p, type(t)) for p, t in security.items()],
        "muxers": list(muxers.items()),
        "muxer negotiation s": net.upgrader.muxer_multistream.negotiate_timeout,
        "retry": net.retry_config,
        "connection": net.connection_config,
        "psk": net.psk,
        "metrics channel": net.metric_send_channel,
        "resource manager": type(rm),
        "resource limits": vars(rm.limits) if hasattr(rm, "limits") else None,
        "same resource manager in host and swarm": host._resource_manager is rm
        if hasattr(host, "_resource_manager")
        else None,
        "handlers": list(host.get_mux().handlers),
        "negotiation s": host.negotiate_timeout,
        "mdns": host.mDNS is not None,
        "upnp": host.upnp,
        "bootstrap": host.bootstrap,
        "addrs factory": type(host._addrs_factory),
        "identify address discovery off": host._disable_identify_address_discovery,
    }


@pytest.mark.parametrize("mdns", [False, True])
def test_build_host_makes_what_new_host_makes(mdns: bool) -> None:
    """The same host as upstream's ``new_host`` but for its connection limits (``build_host``)."""
    key_pair = create_new_key_pair()
    ours, theirs = parts(build_host(key_pair, mdns=mdns)), parts(upstream_host(key_pair, mdns=mdns))
    mine, upstream = ours.pop("connection"), theirs.pop("connection")
    limits, upstream_limits = ours.pop("resource limits"), theirs.pop("resource limits")
    assert ours == theirs
    assert (upstream.max_connections, upstream.min_connections) == (300, 50)  # 250 inbound
    assert (mine.max_connections, mine.min_connections) == (DEFAULT_MAX_CONNECTIONS, 0)
    assert (mine.low_watermark, mine.high_watermark) == (0, DEFAULT_MAX_CONNECTIONS)  # no pruning
    assert replace(mine, max_connections=300, min_connections=50, low_watermark=100,
                   high_watermark=300) == upstream  # fmt: skip
    assert limits == {**upstream_limits, "max_connections": 2 * DEFAULT_MAX_CONNECTIONS}
    counted = build_host(key_pair).get_network()._resource_manager.connection_limits
    established = (
        counted.max_established_inbound,
        counted.max_established_outbound,
        counted.max_established_total,
    )
    assert established == (DEFAULT_MAX_CONNECTIONS,) * 3  # upstream: 256, 256, 1024
    assert ours["security"] == [(NOISE_PROTOCOL_ID, NoiseTransport)]
    assert [p for p, _ in ours["muxers"]] == ["/yamux/1.0.0", "/mplex/6.7.0"]
    assert ours["mdns"] is mdns


async def _echo(stream: Any) -> None:
    data = await stream.read(1024)
    await stream.write(b"echo:" + data)
    await stream.close()


async def _exchange(a: Any, b: Any) -> None:
    """``a`` dials ``b``, asks it to echo, pings it; then the same the other way round."""
    await a.connect(PeerInfo(b.get_id(), b.get_addrs()))
    for src, dst in ((a, b), (b, a)):
        stream = await src.new_stream(dst.get_id(), [ECHO])
        await stream.write(b"hello " + src.get_id().to_bytes()[-4:])
        assert await stream.read(1024) == b"echo:hello " + src.get_id().to_bytes()[-4:]
        await stream.close()
        ping = await src.new_stream(dst.get_id(), [PING_PROTOCOL_ID])
        payload = bytes(range(32))
        await ping.write(payload)
        assert await ping.read(32) == payload
        await ping.close()


async def _next_with(sub: Any, data: bytes) -> Any:
    """The next message carrying ``data`` (a subscriber also receives what it published)."""
    while True:
        msg = await sub.get()
        if msg.data == data:
            return msg


async def _exchange_and_gossip(a: Any, b: Any) -> None:
    """Pubsub on both (started before they connect, as in the daemon), :func:`_exchange`, then
    GossipSub v1.1 messages in both directions."""
    topic = "gridnode-test"

    def router() -> GossipSub:
        return GossipSub(protocols=[PROTOCOL_ID_V11], degree=2, degree_low=1, degree_high=4)

    ra, rb = router(), router()
    pa, pb = Pubsub(a, ra, strict_signing=True), Pubsub(b, rb, strict_signing=True)
    async with (
        background_trio_service(pa),
        background_trio_service(pb),
        background_trio_service(ra),
        background_trio_service(rb),
    ):
        await pa.wait_until_ready()
        await pb.wait_until_ready()
        sa, sb = await pa.subscribe(topic), await pb.subscribe(topic)
        await _exchange(a, b)
        assert b.get_id() in a.get_connected_peers()
        for pub, sub, name in ((pa, sb, b"from a"), (pb, sa, b"from b")):
            got = None
            with trio.move_on_after(20):
                while got is None:  # until the peer's subscription has reached the publisher
                    await pub.publish(topic, name)
                    with trio.move_on_after(0.5):
                        got = await _next_with(sub, name)
            assert got is not None and got.data == name
        for p in (pa, pb):
            p.seen_messages.stop()
        for peer in list(a.get_connected_peers()):  # connections close before pubsub stops
            await a.disconnect(peer)


@pytest.mark.net
@pytest.mark.parametrize("dialer", ["built", "new_host"])
def test_a_built_host_and_a_new_host_talk_to_each_other(dialer: str) -> None:
    async def main() -> None:
        built = build_host(create_new_key_pair())
        upstream = upstream_host(create_new_key_pair())
        listen = [multiaddr.Multiaddr(LOOPBACK)]
        for h in (built, upstream):
            h.set_stream_handler(ECHO, _echo)
        async with built.run(listen_addrs=listen), upstream.run(listen_addrs=listen):
            a, b = (built, upstream) if dialer == "built" else (upstream, built)
            with trio.fail_after(30):
                await _exchange_and_gossip(a, b)

    trio.run(main)
