"""``gridnode run``'s start-up checks and fatal latch, on real stores and sockets (gridnode.startup).

The end-to-end table is ``test_bad_inputs.py``; these reach the paths a user rarely can: a state
rebuilt from a snapshot that is not its head block's, a libp2p host that listens nowhere after the
port check passed, the first of two fatal errors winning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
from pathlib import Path

import pytest
import trio

from gridnode.config import Config
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, LedgerState, build_block, genesis_state
from gridnode.startup import (
    FatalLatch,
    check_chain,
    check_listening,
    check_ports,
    describe,
    root_cause,
    store_binding,
)
from gridnode.store import NodeStore, StoreFailed
from market.errors import UsageError

KEY = KeyPair(bytes(range(32)))
GENESIS = Genesis("t", 1_700_000_000_000, members=(KEY.public_hex,), validators=(KEY.public_hex,))


def chain(store: NodeStore, blocks: int) -> LedgerState:
    state = genesis_state(GENESIS)
    for h in range(1, blocks + 1):
        block, state = build_block(
            state, time_ms=GENESIS.genesis_time_ms + 1_000 * h, proposer=KEY.public_hex, txs=[]
        )
        store.put_block(h, block.hash, block.encode(), b"commit")
    return state


def test_the_rebuilt_state_must_be_exactly_the_head_blocks(tmp_path: Path) -> None:
    config = Config(dir=tmp_path, data_dir=tmp_path)
    with NodeStore.open(tmp_path / "node.sqlite", binding=store_binding(GENESIS)) as store:
        check_chain(config, store, genesis_state(GENESIS))  # an empty store: nothing to check
        state = chain(store, 3)
        check_chain(config, store, state)
        # what a damaged snapshot at the head rebuilds: no block left to replay over it
        for bad in (
            dataclasses.replace(state, time_ms=state.time_ms + 1),
            dataclasses.replace(state, height=2),
            dataclasses.replace(state, head_hash=bytes(32)),
        ):
            with pytest.raises(UsageError, match="head block 3 differs from the state rebuilt"):
                check_chain(config, store, bad)
    with NodeStore.open(tmp_path / "other.sqlite") as store:
        state = chain(store, 1)
        store.put_block(2, b"h" * 32, b"\x93not a block", b"commit")
        with pytest.raises(UsageError, match="head block 2 does not decode"):
            check_chain(config, store, state)


def test_a_host_listening_nowhere_is_refused(tmp_path: Path) -> None:
    config = Config(dir=tmp_path, listen=("/ip4/127.0.0.1/tcp/4001",))
    check_listening(config, ["/ip4/127.0.0.1/tcp/4001/p2p/x"])
    with pytest.raises(
        UsageError, match=re.escape("libp2p could listen on none of /ip4/127.0.0.1/tcp/4001")
    ):
        check_listening(config, [])


def test_ports_and_listen_addresses_are_checked_before_start(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        for listen, message in (
            (f"/ip4/127.0.0.1/tcp/{port}", "Address already in use"),
            ("/ip4/10.255.255.1/tcp/4001", "the address is not this machine's"),
            ("tcp://127.0.0.1:4001", "is not a multiaddr like /ip4/0.0.0.0/tcp/4001"),
        ):
            config = Config(dir=tmp_path, listen=(listen,), api_port=0)
            with pytest.raises(UsageError, match=re.escape(message)):
                check_ports(config)
        with pytest.raises(
            UsageError, match=re.escape("api.port: cannot resolve 'no-such-host.invalid'")
        ):
            check_ports(Config(dir=tmp_path, listen=(), api_host="no-such-host.invalid"))
    check_ports(Config(dir=tmp_path, listen=(f"/ip4/127.0.0.1/tcp/{port}",), api_port=0))


def test_the_first_fatal_error_wins_from_any_thread() -> None:
    async def main() -> BaseException:
        latch = FatalLatch(asyncio.get_running_loop())
        first = StoreFailed(Path("n.sqlite"), "append_signed", "database or disk is full")
        t = threading.Thread(target=latch.report, args=(ExceptionGroup("nursery", [first]),))
        t.start()
        t.join()
        latch.report(RuntimeError("later"))
        return await asyncio.wait_for(latch.wait(), 5)

    error = asyncio.run(main())
    assert isinstance(error, StoreFailed)
    assert describe(error) == "store n.sqlite: append_signed failed: database or disk is full"
    assert describe(KeyError("x")) == "internal error KeyError: 'x'"


def test_root_cause_skips_cancellation() -> None:
    async def cancelled() -> BaseException:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("not cancelled")

    cancel = trio.run(cancelled)
    real = ValueError("bad")
    assert root_cause(BaseExceptionGroup("g", [cancel, ExceptionGroup("h", [real])])) is real
    assert root_cause(real) is real
