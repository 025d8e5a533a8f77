"""A new identity costs an attacker nothing: the peer book must not grow with the identities it has
seen, nor must a status snapshot get slower with them — while every refusal stays counted exactly
once and a ban still holds. (Before: every peer ever seen kept its record and every snapshot
listed them all — 20,000 junk identities made each snapshot take ~0.8 s on the node's thread.)"""

from __future__ import annotations

import random

from gridnode.core.crypto import KeyPair
from gridnode.net.identity import peer_id_of
from gridnode.net.peers import PeerBook
from market.errors import InvalidInput, WireReason


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _junk(book: PeerBook, peer: str, n: int) -> None:
    for _ in range(n):
        book.count(peer, "frames_in")
        book.judge(peer, InvalidInput(reason=WireReason.MALFORMED, subject="frame"))


def test_a_sybil_flood_is_forgotten_but_counted_and_bans_hold() -> None:
    clock = Clock()
    book = PeerBook(clock=clock, max_peers=100)
    rng = random.Random(1)
    validator = peer_id_of(KeyPair.from_rng(rng).public_key)
    book.protect([validator])
    _junk(book, validator, 5)  # a validator with a software fault: penalised, kept
    banned = peer_id_of(KeyPair.from_rng(rng).public_key)
    _junk(book, banned, 4)  # 4 x 30 >= 100: banned for 300 s
    assert book.is_banned(banned)
    sybils = [f"sybil-{i}" for i in range(3_000)]
    for peer in sybils:
        clock.now += 0.01
        _junk(book, peer, 3)  # 90 points: each stays just below the ban
    every = book.stats()
    assert len(every) <= 100
    assert banned in every and every[banned].banned and book.is_banned(banned)
    assert validator in every and every[validator].misbehaviour == {"malformed": 5}
    assert sybils[-1] in every and sybils[0] not in every  # the least recently active went
    assert book.forgotten == 3_000 + 2 - 100
    assert book.totals() == {"malformed": 5 + 4 + 3 * 3_000}  # nothing lost from the totals
    assert book.banned_count() == 1
    assert len(book.scores.peers()) <= 100  # their penalties went too


def test_a_snapshot_reads_only_the_peers_it_shows() -> None:
    clock = Clock()
    book = PeerBook(clock=clock, max_peers=1_000)
    for i in range(1_000):
        _junk(book, f"p{i}", 1)
    shown = book.stats(peers=["p3", "absent"], recent=10)
    assert set(shown) == {"p3"} | {f"p{i}" for i in range(990, 1_000)}
    clock.now += 400  # bans over, penalties decayed
    assert book.banned_count() == 0
    assert book.totals() == {"malformed": 1_000}
