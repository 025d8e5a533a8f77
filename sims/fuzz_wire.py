"""Wire fuzzing over real libp2p against a real daemon: the slice that exercises the host itself.

The in-process fuzz (:mod:`sims.fuzz`) skips the socket; this slice sends its frames the way a
peer does: attacker hosts (real py-libp2p, Noise, Yamux, TCP) with their own identities connect
to one daemon of a running community and send fuzzed frames (:mod:`sims.fuzz`'s corpus and
mutations) on ``submit`` and ``submit-batch`` (requests), ``tx`` and ``consensus`` (one-way), and
raw bytes with bad length prefixes on fresh streams.

**Exact accounting.** For every frame the slice knows the reason the daemon must count, if any:
a request's answer carries it (a batch answered OK: each misbehaviour reason among its rows, once
per reason); a one-way frame is sent only when its outcome does not depend on the daemon's state
(the decoders are deterministic: a frame that fails to decode fails the same way there; ``tx``
from a peer that is no validator is always ``not_permitted``; a vote or proposal only for a height
the daemon no longer or not yet checks); raw framing only when the frame decoder refuses it before
any frame. At the end the daemon's misbehaviour totals (``/api/status``) must have grown by exactly
the expected counts, per reason.

**No bans.** A banned peer's frames are dropped unread, which would make the count unknowable, so
each identity stays below the ban threshold: before a frame it must have room for the heaviest
penalty the frame can cost (decay is not counted on: the estimate only errs high). Outsiders are
replaced by fresh keys when they run out (a key costs nothing); member keys (in the genesis) and
the one validator key that runs no daemon (its threshold is ten times higher) are used while they
have room. The daemon must end with no banned peer.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from gridnode.config import load_identity
from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    Proposal,
    Vote,
    decode_message,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, decode_tx
from gridnode.core.peerscore import ScoreParams
from gridnode.net.framing import FrameDecoder, encode_frames
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from gridnode.txbatch import decode_tx_batch, decode_tx_results
from market.errors import InvalidInput, NetworkError, Rejected, is_misbehaviour
from sims.daemons import LocalCommunity
from sims.fuzz import WireCorpus, mutate

__all__ = ["FuzzCommunity", "WireTally", "fuzz_community", "fuzz_wire"]

_PARAMS = ScoreParams()
_HEAVIEST = max(_PARAMS.weight(r) for r in ("bad_signature", "not_a_member", "malformed"))


def _weight(reason: str) -> float:
    return _PARAMS.weight(reason)


@dataclass
class WireTally:
    sent: dict[str, int] = field(default_factory=dict)  # channel -> frames
    by_sender: dict[str, int] = field(default_factory=dict)  # outsider/member/validator -> frames
    expected: dict[str, int] = field(default_factory=dict)  # reason -> counts the daemon owes
    counted: dict[str, int] = field(default_factory=dict)  # what its totals grew by
    answered: dict[str, int] = field(default_factory=dict)  # request answers by code ("" = OK)
    skipped: int = 0  # drawn, but its outcome would depend on the daemon's state
    identities: int = 0
    failures: list[str] = field(default_factory=list)
    banned_after: int = 0
    rss_mb: tuple[float, float] = (0.0, 0.0)  # the daemon's before and after
    seconds: float = 0.0
    #: seconds spent per identity, summed: opening its host, connecting, sending, closing
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @property
    def frames(self) -> int:
        return sum(self.sent.values())

    @property
    def ok(self) -> bool:
        return self.expected == self.counted and not self.failures and self.banned_after == 0

    def expect(self, reason: str | None) -> None:
        if reason is not None and is_misbehaviour(reason):
            code = str(reason)
            self.expected[code] = self.expected.get(code, 0) + 1

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return [
            f"real-libp2p frames: {self.frames:,} in {self.seconds:.0f} s ({rate:,.0f}/s) from "
            f"{self.identities:,} identities {dict(sorted(self.by_sender.items()))}; by channel "
            f"{dict(sorted(self.sent.items()))}; skipped (state-dependent): {self.skipped:,}",
            f"answers: {dict(sorted(self.answered.items()))}",
            f"expected counts: {dict(sorted(self.expected.items()))}",
            f"daemon counted:  {dict(sorted(self.counted.items()))}",
            f"counts match: {self.expected == self.counted}; banned peers after: "
            f"{self.banned_after}; daemon RSS {self.rss_mb[0]:.0f} -> {self.rss_mb[1]:.0f} MB; "
            f"failures: {len(self.failures)}",
            "seconds per identity: "
            + ", ".join(f"{k} {v / max(1, self.identities):.2f}" for k, v in self.phases.items()),
            "OK" if self.ok else "FAILED",
        ]


@dataclass
class _Identity:
    key: KeyPair
    kind: str  # outsider | member | validator
    threshold: float
    penalty: float = 0.0

    def room(self, cost: float) -> bool:
        return self.penalty + cost < self.threshold


class _Slice:
    def __init__(
        self,
        *,
        genesis: Genesis,
        victim: str,
        victim_addr: str,
        corpus: WireCorpus,
        members: list[KeyPair],
        validator: KeyPair | None,
        rng: random.Random,
        tally: WireTally,
    ) -> None:
        self.genesis = genesis
        self.victim = victim
        self.victim_addr = victim_addr
        self.corpus = corpus
        self.pool = corpus.pool()
        self.rng = rng
        self.tally = tally
        self.members = [_Identity(k, "member", _PARAMS.threshold(protected=False)) for k in members]
        self.validator = (
            _Identity(validator, "validator", _PARAMS.threshold(protected=True))
            if validator is not None
            else None
        )
        self.config = NetConfig(community=genesis.community_id, max_gossip_bytes=1 << 20)

    # ------------------------------------------------------------------ frames and their outcome
    def draw(self) -> tuple[str, bytes]:
        channel = self.rng.choice(("submit", "submit", "submit-batch", "submit-batch", "tx",
                                   "consensus", "consensus", "framing"))  # fmt: skip
        base = self.rng.choice(self.corpus.frames[channel])
        if channel == "framing":  # a length prefix the frame decoder refuses, then anything
            prefix = self.rng.choice(
                (
                    b"\xff" * self.rng.randint(9, 12),  # a varint longer than 9 bytes
                    b"\x80\x00",  # not minimal
                    b"\x81\x80\x00",
                    b"\x80\x80\x80\x01",  # 2 MiB: over the frame limit
                    bytes([0xFF, 0xFF, 0xFF, 0x7F]),
                )
            )
            return channel, prefix + self.rng.randbytes(self.rng.randint(0, 64))
        if self.rng.random() < 0.1:
            return channel, self.rng.randbytes(self.rng.randint(0, 200))
        return channel, mutate(base, self.rng, self.pool)

    def cost(self, channel: str, body: bytes, sender: _Identity) -> tuple[float, str | None] | None:
        """(the heaviest penalty the frame can cost, the reason the daemon will count if it is
        known in advance), or ``None`` if the outcome would depend on the daemon's state."""
        if channel == "submit":
            return _HEAVIEST, None
        if channel == "submit-batch":
            try:
                rows = len(decode_tx_batch(body, max_bytes=1 << 20))
            except InvalidInput as exc:
                return _weight(exc.reason), None
            order_rules = 12.0 * max(0, rows - 2)
            return (60.0 if rows == 1 else 90.0 + order_rules), None
        if channel == "tx":
            if sender.kind != "validator":
                return _weight("not_permitted"), "not_permitted"
            try:
                decode_tx(body)
            except InvalidInput as exc:
                return _weight(exc.reason), exc.reason.value
            return None
        if channel == "consensus":
            try:
                msg = decode_message(body)
            except InvalidInput as exc:
                return _weight(exc.reason), exc.reason.value
            if isinstance(msg, BlockRequest | BlockResponse):
                return 0.0, None
            assert isinstance(msg, Vote | Proposal)
            if msg.height <= 2 or msg.height >= 10**9:  # never the height being decided
                return 0.0, None
            return None
        decoder = FrameDecoder(max_frame_bytes=self.config.max_frame_bytes)
        frames = decoder.feed(body)
        if frames or decoder.error is None:
            return None
        return _weight(decoder.error.reason), decoder.error.reason.value

    # ------------------------------------------------------------------ sending
    async def run_identity(self, identity: _Identity, budget: Callable[[], bool]) -> None:
        """Connect as ``identity`` and send frames while it has room and ``budget()`` allows."""
        self.tally.identities += 1
        t0 = time.monotonic()
        async with open_net_host(identity.key, self.config) as host:
            t1 = time.monotonic()
            try:
                await host.connect(self.victim_addr)
            except NetworkError as exc:
                self.tally.failures.append(f"connect as {identity.kind}: {exc}")
                return
            self.tally.phase("open", t1 - t0)
            self.tally.phase("connect", time.monotonic() - t1)
            t2 = time.monotonic()
            misses = 0
            streams: dict[str, Any] = {}  # one-way streams of this identity, per protocol
            while budget() and misses < 20:
                channel, body = self.draw()
                outcome = self.cost(channel, body, identity)
                if outcome is None:
                    self.tally.skipped += 1
                    continue
                heaviest, known = outcome
                if not identity.room(heaviest):
                    misses += 1
                    continue
                misses = 0
                self.tally.sent[channel] = self.tally.sent.get(channel, 0) + 1
                self.tally.by_sender[identity.kind] = self.tally.by_sender.get(identity.kind, 0) + 1
                counted = await self.send(host, channel, body, known, streams)
                identity.penalty += sum(_weight(r) for r in counted)
                for r in counted:
                    self.tally.expect(r)
            for stream in streams.values():
                if stream is not None:
                    await _drain(stream)
            self.tally.phase("send", time.monotonic() - t2)
            t3 = time.monotonic()
        self.tally.phase("close", time.monotonic() - t3)

    async def send(
        self,
        host: NetHost,
        channel: str,
        body: bytes,
        known: str | None,
        streams: dict[str, Any],
    ) -> list[str]:
        """Send one frame; the misbehaviour reasons the daemon counts for it."""
        if channel in ("submit", "submit-batch"):
            try:
                answer = await host.request(self.victim, channel, body, timeout_s=30)
            except Rejected as exc:
                code = str(exc.reason)
                self.tally.answered[code] = self.tally.answered.get(code, 0) + 1
                return [code] if is_misbehaviour(code) else []
            except NetworkError as exc:
                self.tally.failures.append(f"{channel}: {exc}")
                return []
            self.tally.answered[""] = self.tally.answered.get("", 0) + 1
            if channel == "submit":
                return []
            try:
                n = len(decode_tx_batch(body, max_bytes=1 << 20))
                rows = decode_tx_results(answer, expected=n)
            except InvalidInput as exc:
                self.tally.failures.append(f"submit-batch answered OK with bad results: {exc}")
                return []
            return sorted({str(r) for _, r in rows if r is not None and is_misbehaviour(r)})
        if channel in ("tx", "consensus"):
            stream = await self._stream(host, channel, streams)
            if stream is None:
                return []
            try:
                await stream.write(encode_frames([body]))
            except Exception as exc:
                self.tally.failures.append(f"{channel}: write failed: {exc!r}")
                return []
            return [known] if known is not None and is_misbehaviour(known) else []
        # raw framing on a fresh stream of a request protocol: the daemon resets it after judging
        name = self.rng.choice(("submit", "consensus"))
        stream = await self._open(host, name)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.write(body)
            await _drain(stream)
        return [known] if known is not None else []

    async def _open(self, host: NetHost, name: str) -> Any:
        protocol = TProtocol(host.streams.protocol(name))
        try:
            return await host._host.new_stream(ID.from_base58(self.victim), [protocol])
        except Exception as exc:
            self.tally.failures.append(f"open {name}: {exc!r}")
            return None

    async def _stream(self, host: NetHost, name: str, streams: dict[str, Any]) -> Any:
        if name not in streams:
            streams[name] = await self._open(host, name)
        return streams[name]


async def _drain(stream: Any) -> None:
    """Close our side and read until the daemon ends the stream: by then it has read (judged and
    counted) every frame we wrote."""
    with contextlib.suppress(Exception):
        await stream.close()
    with trio.move_on_after(30), contextlib.suppress(Exception):
        while await stream.read(4096):
            pass


async def fuzz_wire(
    *,
    genesis: Genesis,
    victim_peer: str,
    victim_addr: str,
    frames: int,
    seed: int,
    members: list[KeyPair],
    validator: KeyPair | None,
    first_open: int,
    status: Callable[[], dict[str, Any]],
    rss_mb: Callable[[], float],
    parallel: int = 12,
    progress: Callable[[WireTally], None] | None = None,
) -> WireTally:
    """Send ``frames`` fuzzed frames to the daemon ``victim_peer`` (see the module docstring).

    ``status()`` reads its ``/api/status`` (called in a worker thread)."""
    rng = random.Random(seed)
    tally = WireTally()
    started = time.monotonic()
    corpus = WireCorpus.build(
        genesis,
        KeyPair.from_rng(rng),  # signs "validator 0" votes: not the real one's key
        members[:4],
        [KeyPair.from_rng(rng) for _ in range(4)],
        first_open=first_open,
        seed=seed,
    )
    work = _Slice(
        genesis=genesis, victim=victim_peer, victim_addr=victim_addr, corpus=corpus,
        members=members, validator=validator, rng=rng, tally=tally,
    )  # fmt: skip
    before = await trio.to_thread.run_sync(status)
    totals0 = dict(before["misbehaviour"])
    rss0 = await trio.to_thread.run_sync(rss_mb)
    last_report = 0

    def budget() -> bool:
        nonlocal last_report
        if progress is not None and tally.frames - last_report >= 5_000:
            last_report = tally.frames
            tally.seconds = time.monotonic() - started
            progress(tally)
        return tally.frames < frames

    def pick() -> _Identity:
        r = rng.random()
        if work.validator is not None and r < 0.15 and work.validator.room(_HEAVIEST):
            return work.validator
        if r < 0.5:
            roomy = [m for m in work.members if m.room(_HEAVIEST)]
            if roomy:
                return rng.choice(roomy)
        return _Identity(KeyPair.from_rng(rng), "outsider", _PARAMS.threshold(protected=False))

    busy: set[int] = set()

    async def attacker() -> None:
        while tally.frames < frames:
            identity = pick()
            if id(identity) in busy:  # the validator or a member is in use by another attacker
                identity = _Identity(
                    KeyPair.from_rng(rng), "outsider", _PARAMS.threshold(protected=False)
                )
            busy.add(id(identity))
            try:
                await work.run_identity(identity, budget)
            finally:
                busy.discard(id(identity))

    async with trio.open_nursery() as nursery:
        for _ in range(parallel):
            nursery.start_soon(attacker)

    def grown() -> dict[str, int]:
        now = status()["misbehaviour"]
        return {k: v - totals0.get(k, 0) for k, v in now.items() if v - totals0.get(k, 0)}

    deadline = time.monotonic() + 60
    while True:
        tally.counted = await trio.to_thread.run_sync(grown)
        if tally.counted == tally.expected or time.monotonic() > deadline:
            break
        await trio.sleep(0.5)
    after = await trio.to_thread.run_sync(status)
    tally.banned_after = int(after["banned_peers"]) - int(before["banned_peers"])
    tally.rss_mb = (rss0, await trio.to_thread.run_sync(rss_mb))
    tally.seconds = time.monotonic() - started
    return tally


@contextmanager
def fuzz_community(root: Path, *, members: int = 40) -> Iterator[FuzzCommunity]:
    """Four running validators of a five-validator community (the fifth's key, which runs no
    daemon, is the attackers' validator identity) and ``members`` member keys with no daemon."""
    rng = random.Random(0)
    member_keys = [KeyPair.from_rng(rng) for _ in range(members)]
    lc = LocalCommunity(
        root,
        validators=5,
        full_nodes=0,
        speedup=60,
        community_id="fuzz",
        extra_members=tuple(k.public_hex for k in member_keys),
    )
    lc.create()
    running = [0, 1, 2, 3]
    lc.start(running)
    try:
        lc.wait_ready(180, which=running)
        if not lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 3, 180):
            raise TimeoutError("the fuzz community did not commit 3 blocks within 180 s")
        yield FuzzCommunity(lc, load_identity(lc.households[4].dir), member_keys)
    finally:
        codes = lc.stop()
        bad = {i: c for i, c in codes.items() if c != 0}
        if bad:
            raise RuntimeError(f"daemons exited with {bad} on SIGTERM")


@dataclass
class FuzzCommunity:
    lc: LocalCommunity
    validator: KeyPair  # a genesis validator whose daemon is not running
    members: list[KeyPair]

    def victim(self, i: int = 0) -> tuple[str, str]:
        h = self.lc.households[i]
        return peer_id_of(h.key.public_key), h.multiaddr()

    def rss_mb(self, i: int = 0) -> float:
        p = self.lc.households[i].process
        if p is None:
            return 0.0
        text = Path(f"/proc/{p.pid}/status").read_text(encoding="ascii", errors="replace")
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def tracebacks(self, i: int = 0) -> list[str]:
        """Tracebacks and handler failures in daemon ``i``'s log."""
        text = (self.lc.households[i].dir / "daemon.log").read_text(
            encoding="utf-8", errors="replace"
        )
        lines = text.splitlines()
        return [
            "\n".join(lines[max(0, n - 1) : n + 20])
            for n, line in enumerate(lines)
            if "Traceback (most recent call last)" in line
            or (" failed" in line and " ERROR " in line)
        ]

    def run_wire(
        self, frames: int, *, seed: int, progress: Callable[[WireTally], None] | None = None
    ) -> WireTally:
        lc = self.lc
        assert lc.genesis is not None
        peer, addr = self.victim(0)
        first_open = int(lc.api(0, "/api/status")["first_open_slot"])
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # the attackers' own noise
        return trio.run(
            lambda: fuzz_wire(
                genesis=lc.genesis,
                victim_peer=peer,
                victim_addr=addr,
                frames=frames,
                seed=seed,
                members=self.members,
                validator=self.validator,
                first_open=first_open,
                status=lambda: lc.api(0, "/api/status"),
                rss_mb=self.rss_mb,
                progress=progress,
            )
        )
