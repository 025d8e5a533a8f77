"""A host that is stopping drops what is sent to it quietly: a consensus message that arrives while
the daemon shuts down makes the node answer, and that answer must not die with a traceback in the
log ("Nursery is closed to new arrivals", seen in the README-path test under load)."""

from __future__ import annotations

import logging

import pytest
import trio

from gridnode.net.peers import PeerBook
from gridnode.net.streams import Streams


def test_sending_after_the_nursery_closed_drops_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Streams:
        async with trio.open_nursery() as nursery:
            streams = Streams(
                host=None,
                community="street",
                nursery=nursery,
                peers=PeerBook(clock=lambda: 0.0),
                max_frame_bytes=1 << 20,
                request_timeout_s=1.0,
            )
        # its nursery is closed now, as when the host stops; the node still answers a message
        streams.send_soon("12D3KooWpeer", "consensus", [b"vote"])
        return streams

    with caplog.at_level(logging.DEBUG, logger="gridnode"):
        streams = trio.run(main)
    assert not streams._send_backlog  # nothing held for a sender that will never run
    assert "host stopping: dropping 1 messages" in caplog.text
    assert "Traceback" not in caplog.text
