"""gridnode's network shell: py-libp2p on a trio thread (see ``docs/protocol.md``)."""

from gridnode.net.bridge import TrioBridge
from gridnode.net.framing import FrameDecoder, encode_frame, encode_frames
from gridnode.net.host import (
    NetConfig,
    NetHost,
    PeerStats,
    open_net_host,
    peer_id_of,
    peer_id_of_hex,
    public_hex_of,
    public_key_of,
    stream_protocol,
    topic_name,
)

__all__ = [
    "FrameDecoder",
    "NetConfig",
    "NetHost",
    "PeerStats",
    "TrioBridge",
    "encode_frame",
    "encode_frames",
    "open_net_host",
    "peer_id_of",
    "peer_id_of_hex",
    "public_hex_of",
    "public_key_of",
    "stream_protocol",
    "topic_name",
]
