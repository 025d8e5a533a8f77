"""A host that stops serving a protocol while a peer is negotiating a stream for it resets the
stream; it does not crash (CI, stop 28: a peer opened a ``/meshsub`` stream while the fuzzer's host
stopped, and py-libp2p's multiselect raised ``KeyError`` in the connection's task, which tore the
host down). The negotiation below is py-libp2p's own, on a host :func:`build_host` makes; the
peer's side is a scripted multiselect communicator that lets the host stop between the acceptance
and the handler's look-up, the window the race needs."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID

from gridnode.core.crypto import KeyPair
from gridnode.net.host import _refuse_stream, _stop_serving, build_host
from gridnode.net.identity import libp2p_key_pair

MESHSUB = TProtocol("/meshsub/1.1.0")


class _PeerOpening:
    """The dialling peer: multiselect's handshake, then a request for ``MESHSUB``; when the host
    writes its acceptance of it, ``on_accept`` runs (the host stopping at that moment)."""

    def __init__(self, on_accept: Any) -> None:
        self._script = [MULTISELECT_PROTOCOL_ID, MESHSUB]
        self._on_accept = on_accept
        self.written: list[str] = []

    async def read(self) -> str:
        await trio.lowlevel.checkpoint()
        return self._script.pop(0)

    async def write(self, msg_str: str) -> None:
        self.written.append(msg_str)
        if msg_str == MESHSUB:
            self._on_accept()
        await trio.lowlevel.checkpoint()


class _Stream:
    def __init__(self) -> None:
        self.reset_called = False

    async def reset(self) -> None:
        self.reset_called = True


def test_a_stream_negotiated_while_the_host_stops_serving_is_reset_not_a_crash() -> None:
    host = build_host(libp2p_key_pair(KeyPair.generate()))

    async def serve(stream: Any) -> None:
        raise AssertionError("the stopped protocol's old handler ran")

    host.set_stream_handler(MESHSUB, serve)
    peer = _PeerOpening(lambda: _stop_serving(host, [MESHSUB]))

    async def main() -> tuple[Any, Any]:
        return await host.multiselect.negotiate(peer)

    protocol, handler = trio.run(main)
    assert protocol == MESHSUB and peer.written[-1] == MESHSUB
    assert handler is _refuse_stream
    stream = _Stream()
    trio.run(handler, stream)
    assert stream.reset_called
    # and a peer that asks after the stop is answered the same way
    assert host.get_mux().handlers[MESHSUB] is _refuse_stream
