"""Wire fuzzing: malformed frames from outsiders, members and validators, on every channel a peer
can reach, through the daemon's own handlers — and the check that every refusal is counted once.

**Frames** (:class:`WireCorpus`, :func:`mutate`): valid frames of each channel are built with the
real encoders and keys (signed orders, cancels and readings — from members, from outsiders, with
forged signatures, for closed, open and far slots —, transaction batches, votes, proposals, block
requests and responses, gossip order batches), then mutated: bits flipped, bytes set to msgpack
type markers and boundary values, ranges cut, repeated or spliced from another frame, integers
replaced by huge ones, tails appended or truncated; a share of frames are random bytes. Every
frame is a pure function of the seed.

**Channels**: ``submit`` and ``submit-batch`` (request/response), ``tx`` and ``consensus``
(one-way), gossip on ``orders/2`` (the topic validator), and the varint framing itself.

**In-process target** (:class:`InProcessTarget`): a real :class:`~gridnode.daemon.DaemonNode`
(store, ledger, consensus, libp2p host) opened with :func:`~gridnode.daemon.open_daemon_node`,
single validator of its own community, committing blocks as it goes. Frames enter exactly where a
stream's bytes do after framing: the stream server's request and message dispatch (which judges
and counts) and the libp2p topic validator of the orders topic; framing is fed to the frame
decoder. Nothing is faked; only the socket is skipped, which is what lets a million frames pass in
minutes (the real-socket slice is :mod:`sims.fuzz_wire`).

**Checks** (:class:`FuzzTally`): no handler fails (no ``handler_failed`` answer, no error logged by
a handler or validator), every refusal names a reason of the closed set, and the node's peer book
counts, per reason, exactly the refusals that are misbehaviour — each once: for a request the
answer's code (or, for a batch answered OK, each misbehaviour reason among its rows, once per
reason), for a one-way message or gossip the reason the handler raised.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from gridnode.config import create_data_dir, load_config, write_genesis
from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    SyncedBlock,
    VoteType,
    decode_commit,
    encode_message,
    sign_proposal,
    sign_vote,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, Tx, sign_cancel, sign_order, sign_reading
from gridnode.daemon import DaemonNode, open_daemon_node
from gridnode.net.framing import FrameDecoder, encode_frames
from gridnode.net.identity import peer_id_of
from gridnode.net.streams import STATUS_OK, STATUS_REJECTED
from gridnode.txbatch import decode_tx_results, encode_tx_batch
from market.codec import unpack
from market.errors import REASONS, InvalidInput, PeerMisbehaviour, is_misbehaviour
from market.orders import Order, Side, Step
from sims.daemons import free_port

__all__ = [
    "CHANNELS",
    "FuzzTally",
    "InProcessTarget",
    "WireCorpus",
    "fuzz_in_process",
    "mutate",
]

CHANNELS: Final = ("submit", "submit-batch", "tx", "consensus", "gossip", "framing")

#: bytes a mutation likes to write: msgpack type markers and integer boundaries
_INTERESTING: Final = bytes.fromhex(
    "00017f808f909fa0bfc0c1c2c3c4c5c6c7cacbcccdcecfd0d3d9dadbdcdddedfe0ff"
)
_HUGE_INTS: Final = (
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # 2**64 - 1
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # -2**63
    b"\xce\xff\xff\xff\xff",
    b"\xd2\x80\x00\x00\x00",
    b"\xcd\xff\xff",
    b"\xff",
    b"\xc0",
)


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One to four random edits of ``data`` (see the module docstring); never returns ``data``."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(11)
        n = len(out)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            out[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2 and n:  # a random byte
            out[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:  # insert random bytes
            i = rng.randint(0, n)
            out[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and n > 1:  # cut a range
            i = rng.randrange(n)
            del out[i : i + rng.randint(1, max(1, n // 4))]
        elif op == 5 and n:  # repeat a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 16))
            out[j:j] = out[i:j]
        elif op == 6 and n:  # truncate
            del out[rng.randrange(n) :]
        elif op == 7:  # append junk
            out += rng.randbytes(rng.randint(1, 32))
        elif op == 8 and pool:  # splice with another frame
            other = rng.choice(pool)
            i, j = rng.randint(0, n), rng.randint(0, len(other))
            out = out[:i] + other[j:]
        elif op == 9 and n:  # an integer made huge (or a nil/invalid marker)
            i = rng.randrange(n)
            out[i : i + 1] = rng.choice(_HUGE_INTS)
        elif n > 1:  # swap two bytes
            i, j = rng.randrange(n), rng.randrange(n)
            out[i], out[j] = out[j], out[i]
    if bytes(out) == data:
        out += b"\x00"
    return bytes(out)


def _key(rng: random.Random) -> KeyPair:
    return KeyPair.from_rng(rng)


@dataclass
class WireCorpus:
    """Valid frames of every channel for ``genesis`` (see the module docstring)."""

    genesis: Genesis
    validator: KeyPair  # the community's only validator (the target node)
    members: list[KeyPair]
    outsiders: list[KeyPair]
    first_open: int
    frames: dict[str, list[bytes]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        genesis: Genesis,
        validator: KeyPair,
        members: list[KeyPair],
        outsiders: list[KeyPair],
        *,
        first_open: int,
        seed: int,
        blocks: list[SyncedBlock] | None = None,
    ) -> WireCorpus:
        corpus = cls(genesis, validator, members, outsiders, first_open)
        corpus._fill(random.Random(seed), blocks or [])
        return corpus

    def _txs(self, rng: random.Random) -> list[Tx]:
        g, first = self.genesis, self.first_open
        txs: list[Tx] = []
        nonce = 10**6  # above any nonce the target's own activity reaches
        for i, key in enumerate(self.members + self.outsiders[:3]):
            for slot in (first, first + 1, first + 3, first - 2, first + 10_000, 0, 2**40):
                nonce += 1
                steps = tuple(
                    Step(rng.choice((0, 1, 80_000, 150_000, 300_000, 300_001)), rng.choice((1, 500, 10**7)))
                    for _ in range(rng.choice((1, 1, 2, 17)))
                )  # fmt: skip
                order = Order(f"fz-{i}-{nonce}", key.public_hex, rng.choice(list(Side)), slot,
                              steps, nonce)  # fmt: skip
                txs.append(sign_order(key, g, order))
            txs.append(sign_cancel(key, g, slot=first + 1, nonce=nonce + 1))
            txs.append(sign_reading(key, g, slot=first - 3, net_wh=rng.randint(-5_000, 5_000)))
            nonce += 2
        forged = [replace(tx, signature=bytes(64)) for tx in txs[::5]]
        return txs + forged

    def _fill(self, rng: random.Random, blocks: list[SyncedBlock]) -> None:
        txs = self._txs(rng)
        records = [tx.encode() for tx in txs]
        self.frames["submit"] = records
        self.frames["tx"] = records
        batches = []
        for _ in range(60):
            k = rng.choice((1, 1, 2, 3, 5))
            batches.append(encode_tx_batch(rng.sample(txs, k)))
        self.frames["submit-batch"] = batches
        orders = [tx for tx in txs if hasattr(tx, "order")]
        self.frames["gossip"] = [
            encode_tx_batch(rng.sample(orders, rng.choice((1, 2, 4)))) for _ in range(60)
        ]
        v = self.validator
        msgs: list[bytes] = []
        for height in (1, 2, 3, 1_000, 2**31):
            for r in (0, 1, 7):
                for vt in VoteType:
                    value = rng.choice((b"", rng.randbytes(32)))
                    vote = sign_vote(
                        v, vote_type=vt, height=height, round_=r, value=value, validator=0
                    )
                    msgs.append(encode_message(vote))
                    # a vote by a key that is no validator, claiming index 0 and 1
                    other = rng.choice(self.outsiders)
                    fake = sign_vote(
                        other,
                        vote_type=vt,
                        height=height,
                        round_=r,
                        value=value,
                        validator=rng.choice((0, 1)),
                    )
                    msgs.append(encode_message(fake))  # fmt: skip
        for sb in blocks[:5]:
            msgs.append(encode_message(BlockResponse((sb,))))
            p = sign_proposal(
                v, height=sb.height, round_=0, block=sb.block, valid_round=-1, proposer=0
            )
            msgs.append(encode_message(p))  # fmt: skip
        msgs.append(encode_message(BlockResponse(tuple(blocks[:3]))))
        msgs.append(encode_message(BlockResponse(())))
        for fh, mb in ((1, 1), (1, 100), (2**40, 5), (0, 0)):
            msgs.append(encode_message(BlockRequest(fh, mb)))
        self.frames["consensus"] = msgs
        self.frames["framing"] = [encode_frames([f]) for f in records[:20] + msgs[:20]]

    def pool(self) -> list[bytes]:
        return [f for frames in self.frames.values() for f in frames]


@dataclass
class FuzzTally:
    """What was sent and how it was refused (see the module docstring's checks)."""

    sent: dict[str, int] = field(default_factory=dict)  # channel -> frames
    accepted: dict[str, int] = field(default_factory=dict)  # channel -> frames taken as valid
    refused: dict[str, int] = field(default_factory=dict)  # reason -> frames refused with it
    expected_counted: dict[str, int] = field(default_factory=dict)  # misbehaviour by reason
    counted: dict[str, int] = field(default_factory=dict)  # what the node's peer book holds
    #: frames of a peer banned meanwhile, dropped unread (as the stream server does)
    unread: int = 0
    crashes: list[str] = field(default_factory=list)
    unknown_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(self.sent.values())

    @property
    def counts_match(self) -> bool:
        return self.counted == self.expected_counted

    @property
    def ok(self) -> bool:
        return not self.crashes and not self.unknown_reasons and self.counts_match

    def refuse(self, reason: str, *, counted: bool) -> None:
        if reason not in REASONS:
            self.unknown_reasons.append(reason)
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if counted:
            self.expected_counted[reason] = self.expected_counted.get(reason, 0) + 1

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return [
            f"frames: {self.frames:,} in {self.seconds:.0f} s ({rate:,.0f}/s) "
            f"{dict(sorted(self.sent.items()))}",
            f"accepted as valid: {dict(sorted(self.accepted.items()))}; dropped unread (sender "
            f"banned): {self.unread:,}",
            f"refused by reason: {dict(sorted(self.refused.items()))}",
            f"misbehaviour counted by the node: {dict(sorted(self.counted.items()))}",
            f"counts match what was refused as misbehaviour: {self.counts_match}",
            f"crashes: {len(self.crashes)}; reasons outside the closed set: "
            f"{len(self.unknown_reasons)}",
            "OK" if self.ok else "FAILED",
        ]


class _ErrorLog(logging.Handler):
    """Collects ERROR records (a handler or validator that failed logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class InProcessTarget:
    """A real daemon node in this process (see the module docstring); use :meth:`open`."""

    def __init__(self, node: DaemonNode, members: list[KeyPair], outsiders: list[KeyPair]) -> None:
        self.node = node
        self.members = members
        self.outsiders = outsiders
        self._raised: list[InvalidInput | PeerMisbehaviour] = []
        self._member_peers = [peer_id_of(k.public_key) for k in members]
        self._outsider_peers = [peer_id_of(k.public_key) for k in outsiders]
        streams = node.net.streams
        for name in ("tx", "consensus"):  # record what the one-way handlers raise
            protocol = streams.protocol(name)
            streams._messages[protocol] = self._recording(streams._messages[protocol])
        topic = node.net.gossip.topic("orders", 2)
        self._gossip_validator = node.net.gossip._pubsub.topic_validators[topic].validator
        self._topic = topic
        self.errors = _ErrorLog()
        logging.getLogger("gridnode").addHandler(self.errors)

    def _recording(self, handler: Callable[[str, bytes], Any]) -> Callable[[str, bytes], Any]:
        def wrapped(peer: str, body: bytes) -> Any:
            try:
                return handler(peer, body)
            except (InvalidInput, PeerMisbehaviour) as exc:
                self._raised.append(exc)
                raise

        return wrapped

    @classmethod
    @asynccontextmanager
    async def open(
        cls, directory: Path, *, seed: int, members: int = 6, outsiders: int = 200
    ) -> AsyncIterator[InProcessTarget]:
        rng = random.Random(seed)
        me = _key(rng)
        member_keys = [_key(rng) for _ in range(members)]
        outsider_keys = [_key(rng) for _ in range(outsiders)]
        genesis = Genesis(
            community_id="fuzz",
            genesis_time_ms=_wall_ms(),
            members=(me.public_hex, *(k.public_hex for k in member_keys)),
            validators=(me.public_hex,),
        )
        d = directory / "node"
        create_data_dir(d, role="validator", listen=f"/ip4/127.0.0.1/tcp/{free_port()}",
                        api_port=free_port(), key=me)  # fmt: skip
        write_genesis(d / "genesis.toml", genesis)
        config = load_config(d)
        async with open_daemon_node(config, genesis, me) as node:
            with trio.fail_after(30):  # the node registers its handlers as it starts
                while node.runtime.state.height < 1 or not node.net.streams._messages:
                    await trio.sleep(0.05)
            target = cls(node, member_keys, outsider_keys)
            try:
                yield target
            finally:
                logging.getLogger("gridnode").removeHandler(target.errors)

    # ------------------------------------------------------------------ sending
    def corpus(self, seed: int) -> WireCorpus:
        state = self.node.runtime.state
        clock = state.genesis.clock
        first = clock.first_open_slot(self.node.clock.now_ms() // 1000)
        store = self.node.runtime.store
        blocks = [
            SyncedBlock(sb.height, sb.block, decode_commit(sb.commit))
            for sb in store.blocks_from(1, 5)
        ]
        return WireCorpus.build(
            state.genesis, self.node.key, self.members, self.outsiders,
            first_open=first, seed=seed, blocks=blocks,
        )  # fmt: skip

    def sender(self, rng: random.Random, channel: str) -> str:
        """A peer id that is not banned: for ``tx`` often the validator (the only peer it is
        permitted from), else a member's or an outsider's. An outsider that got banned is replaced
        by a fresh identity (an attacker's keys cost nothing); a banned member or validator sits
        out its ban (its frames would be dropped unread)."""
        book = self.node.net.peers
        r = rng.random()
        if channel == "tx" and r < 0.5 and not book.is_banned(self.node.net.peer_id):
            return self.node.net.peer_id
        if r < 0.75:
            for _ in range(4):
                peer = rng.choice(self._member_peers)
                if not book.is_banned(peer):
                    return peer
        i = rng.randrange(len(self._outsider_peers))
        peer = self._outsider_peers[i]
        if book.is_banned(peer):
            peer = self._outsider_peers[i] = peer_id_of(KeyPair.from_rng(rng).public_key)
        return peer

    async def send(self, channel: str, peer: str, body: bytes, tally: FuzzTally) -> None:
        """``body`` from ``peer`` on ``channel``, as the stream server or the topic validator
        takes it (a banned peer's frames are dropped unread, as they are there)."""
        tally.sent[channel] = tally.sent.get(channel, 0) + 1
        streams = self.node.net.streams
        if channel != "framing" and streams.peers.is_banned(peer):
            tally.unread += 1
            return
        streams.peers.count(peer, "frames_in")
        if channel in ("submit", "submit-batch"):
            answer = await streams._answer(peer, streams.protocol(channel), body)
            self._judge_answer(channel, answer, tally)
        elif channel in ("tx", "consensus"):
            self._raised.clear()
            await streams._deliver(peer, streams.protocol(channel), body)
            if self._raised:
                error = self._raised[-1]
                tally.refuse(error.reason.value, counted=is_misbehaviour(error.reason))
            else:
                tally.accepted[channel] = tally.accepted.get(channel, 0) + 1
        elif channel == "gossip":
            self._gossip(peer, body, tally)
        else:
            self._framing(body, tally)

    def _judge_answer(self, channel: str, answer: bytes, tally: FuzzTally) -> None:
        status, data = answer[0], answer[1:]
        if status == STATUS_REJECTED:
            code = data.decode("ascii", "replace")
            if code == "handler_failed":
                tally.crashes.append(f"{channel}: handler_failed")
            tally.refuse(code, counted=is_misbehaviour(code))
            return
        assert status == STATUS_OK
        tally.accepted[channel] = tally.accepted.get(channel, 0) + 1
        if channel == "submit-batch":
            n = _batch_len(data)
            rows = decode_tx_results(data, expected=n)
            for reason in sorted(
                {r.value for _, r in rows if r is not None and is_misbehaviour(r)}
            ):
                tally.expected_counted[reason] = tally.expected_counted.get(reason, 0) + 1
            for _, r in rows:
                if r is not None:
                    tally.refused[r.value] = tally.refused.get(r.value, 0) + 1

    def _gossip(self, forwarder: str, body: bytes, tally: FuzzTally) -> None:
        origin = forwarder
        try:  # the reason the daemon's payload check gives (the validator below asks it again)
            self.node.gossip._validate(origin, body)
            reason = None
        except InvalidInput as exc:
            reason = exc.reason.value
        size_limit = self.node.net.config.max_gossip_bytes
        if len(body) > size_limit:
            reason = "oversize"
        msg = rpc_pb2.Message(
            from_id=ID.from_base58(origin).to_bytes(), data=body, seqno=b"\x00" * 8,
            topicIDs=[self._topic],
        )  # fmt: skip
        ok = self._gossip_validator(ID.from_base58(forwarder), msg)
        if ok != (reason is None):
            tally.crashes.append(
                f"gossip: validator said {ok} where the payload check said {reason}"
            )
        if reason is None:
            tally.accepted["gossip"] = tally.accepted.get("gossip", 0) + 1
        else:
            tally.refuse(reason, counted=is_misbehaviour(reason))

    def _framing(self, data: bytes, tally: FuzzTally) -> None:
        decoder = FrameDecoder(max_frame_bytes=self.node.net.config.max_frame_bytes)
        try:
            decoder.feed(data)
        except Exception as exc:  # the decoder must keep its refusals as decoder.error
            tally.crashes.append(f"framing: {exc!r}")
            return
        if decoder.error is not None:
            reason = decoder.error.reason.value
            if reason not in ("oversize", "malformed_varint"):
                tally.crashes.append(f"framing: unexpected reason {reason}")
            tally.refuse(reason, counted=False)  # counted by the stream server (the real slice)
        else:
            tally.accepted["framing"] = tally.accepted.get("framing", 0) + 1

    def collect(self, tally: FuzzTally) -> None:
        """Read the node's counters and the errors its handlers logged into ``tally``."""
        tally.counted = {k: v for k, v in self.node.net.misbehaviour_totals().items() if v}
        tally.crashes += [f"logged: {r[:300]}" for r in self.errors.records]
        self.errors.records.clear()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _batch_len(results: bytes) -> int:
    value = unpack(results, what="tx results")
    return len(value[2])


async def fuzz_in_process(
    frames: int,
    *,
    seed: int,
    directory: Path | None = None,
    channels: tuple[str, ...] = CHANNELS,
    random_share: float = 0.1,
    progress: Callable[[FuzzTally], None] | None = None,
) -> FuzzTally:
    """Send ``frames`` fuzzed frames through a fresh :class:`InProcessTarget` (on trio)."""
    rng = random.Random(seed)
    tally = FuzzTally()
    started = trio.current_time()
    with tempfile.TemporaryDirectory(prefix="gn-fuzz-") as tmp:
        async with InProcessTarget.open(directory or Path(tmp), seed=seed) as target:
            corpus = target.corpus(seed)
            pool = corpus.pool()
            for i in range(frames):
                channel = channels[i % len(channels)]
                base = rng.choice(corpus.frames[channel])
                if rng.random() < random_share:
                    body = rng.randbytes(rng.randint(0, 300))
                else:
                    body = mutate(base, rng, pool)
                await target.send(channel, target.sender(rng, channel), body, tally)
                if i % 200 == 199:
                    await trio.sleep(0)  # let the node's own tasks (timers, blocks) run
                if progress is not None and i % 50_000 == 49_999:
                    tally.seconds = trio.current_time() - started
                    target.collect(tally)
                    progress(tally)
            await trio.sleep(0)
            target.collect(tally)
            if target.node.runtime.state.height < 1:
                tally.crashes.append("the node committed no block while it was fuzzed")
    tally.seconds = trio.current_time() - started
    return tally
