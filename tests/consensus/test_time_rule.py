"""Issue 11.1: a value locked longer ago than the drift bound must still be decided.

Pure cores (``Consensus`` + the ledger's ``LedgerApp``) on a perfect network: two validators lock
block X in round 0 and precommit it; the other two are killed right after prevoting. Eight seconds
later (the drift bound is 5 s) the two restart from their WAL records and the network is perfect
from then on. Under the old rule (every validity check judged X's time against the local clock)
the restarted pair refuse X as ``time_too_old`` while the locked pair vote only for X: the
committee never decides. Under Tendermint's rule (only a fresh proposal is judged against the
clock) X is decided within a few rounds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from gridnode.core.app import LedgerApp
from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    Decided,
    Effect,
    Persist,
    ProposalRefused,
    Send,
    SetTimer,
    SignedRecord,
    Step,
    WalRecord,
)
from gridnode.core.consensus_messages import (
    ConsensusMessage,
    ValidatorSet,
    Vote,
    VoteType,
    sign_proposal,
    sign_vote,
)
from tests.consensus.helpers import ListBlocks
from tests.ledger.helpers import T0_MS, Community

GAP_MS = 8_000


@dataclass
class Net:
    """A perfect network (5 ms) on a virtual clock; nodes in ``down`` receive nothing."""

    c: Community
    now: int = T0_MS
    seq: int = 0
    heap: list[tuple[int, int, tuple[object, ...]]] = field(default_factory=list)
    nodes: dict[int, Consensus] = field(default_factory=dict)
    wal: dict[int, list[WalRecord]] = field(default_factory=dict)
    decided: dict[int, bytes] = field(default_factory=dict)
    refused: list[ProposalRefused] = field(default_factory=list)
    down: set[int] = field(default_factory=set)

    def vals(self) -> ValidatorSet:
        return ValidatorSet(tuple(k.public_key for k in self.c.validators))

    def boot(self, i: int) -> None:
        app = LedgerApp(self.c.genesis, proposer=self.c.validators[i].public_hex)
        self.nodes[i] = Consensus.recover(
            validators=self.vals(),
            key=self.c.validators[i],
            app=app,
            blocks=ListBlocks(),
            height=1,
            wal=self.wal.setdefault(i, []),
        )
        self.down.discard(i)
        self.run(i, self.nodes[i].start(self.now))

    def run(self, i: int, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Persist):
                self.wal[i].append(eff.record)
            elif isinstance(eff, Broadcast):
                for j in range(4):
                    if j != i:
                        self.push(self.now + 5, ("msg", j, i, eff.message))
            elif isinstance(eff, Send):
                self.push(self.now + 5, ("msg", int(eff.to[1:]), i, eff.message))
            elif isinstance(eff, SetTimer):
                self.push(eff.at, ("timer", i, eff.kind, eff.height, eff.round))
            elif isinstance(eff, Decided):
                self.decided[i] = eff.commit.block_hash
            elif isinstance(eff, ProposalRefused):
                self.refused.append(eff)

    def push(self, at: int, ev: tuple[object, ...]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, ev))

    def run_until(self, until: int) -> None:
        while self.heap and self.heap[0][0] <= until and len(self.decided) < 4:
            at, _, ev = heapq.heappop(self.heap)
            self.now = at
            kind, dst = ev[0], ev[1]
            assert isinstance(dst, int)
            if dst in self.down:
                continue
            node = self.nodes[dst]
            if kind == "msg":
                src, msg = ev[2], ev[3]
                assert isinstance(src, int) and isinstance(msg, ConsensusMessage)
                self.run(dst, node.on_message(f"v{src}", msg, at))
            else:
                self.run(dst, node.on_timer(ev[2], ev[3], ev[4], at))  # type: ignore[arg-type]
        self.now = max(self.now, until)


def lock_then_gap() -> Net:
    """Round 0: X proposed by v1, prevoted by all; only v0 and v1 see the polka and lock (v2 and
    v3 are killed right after prevoting). Then nothing for 8 s; v2 and v3 restart from their WAL."""
    net = Net(Community(n_members=2, n_validators=4))
    for i in range(4):
        net.boot(i)
    # everything reaches everyone until the prevotes are out; then v2 and v3 die
    net.run_until(T0_MS + 5)  # the proposal is delivered
    prevoted = {
        i
        for i in range(4)
        if any(isinstance(r, SignedRecord) and r.step is Step.PREVOTE for r in net.wal[i])
    }
    assert prevoted == {0, 1, 2, 3}
    net.down |= {2, 3}
    net.run_until(T0_MS + 200)
    locked = [i for i in (0, 1) if net.nodes[i]._locked_round == 0]
    assert locked == [0, 1] and net.decided == {}
    net.run_until(T0_MS + GAP_MS)  # the locked pair alone: no decision
    assert net.decided == {}
    net.heap = [e for e in net.heap if e[2][0] == "timer" and e[2][1] in (0, 1)]
    heapq.heapify(net.heap)
    for i in (2, 3):
        net.boot(i)
    return net


def test_a_lock_older_than_the_drift_bound_is_still_decided() -> None:
    net = lock_then_gap()
    net.run_until(T0_MS + GAP_MS + 60_000)
    assert len(net.decided) == 4 and len(set(net.decided.values())) == 1
    # the restarted pair prevoted the re-proposal of the locked value although its time was old
    x = net.decided[0]
    assert all(r.block_hash != x or r.reason != "time_too_old" for r in net.refused)


def test_a_fresh_proposal_is_still_judged_against_the_clock() -> None:
    c = Community(n_members=2, n_validators=4)
    vals = ValidatorSet(tuple(k.public_key for k in c.validators))
    proposer = LedgerApp(c.genesis, proposer=c.validators[1].public_hex)
    block = proposer.make_block(1, 0, T0_MS)
    prop = sign_proposal(
        c.validators[1], height=1, round_=0, block=block, valid_round=-1, proposer=1
    )
    late = Consensus(
        validators=vals,
        key=c.validators[0],
        app=LedgerApp(c.genesis, proposer=c.validators[0].public_hex),
        blocks=ListBlocks(),
    )
    late.start(T0_MS + GAP_MS)
    out = late.on_message("v1", prop, T0_MS + GAP_MS)
    refused = [e for e in out if isinstance(e, ProposalRefused)]
    assert [r.reason for r in refused] == ["time_too_old"]
    votes = [e.message for e in out if isinstance(e, Broadcast) and isinstance(e.message, Vote)]
    assert [v.block_hash for v in votes] == [b""]  # prevote nil for a stale fresh proposal
    # but 2f+1 prevotes for it make it lockable and decidable: validity has no clock
    for i in (1, 2, 3):
        vote = sign_vote(
            c.validators[i],
            vote_type=VoteType.PREVOTE,
            height=1,
            round_=0,
            value=prop.block_hash,
            validator=i,
        )
        out = late.on_message(f"v{i}", vote, T0_MS + GAP_MS + 1)
    assert late._locked_round == 0  # L36: still in the prevote step, it locks and precommits
    precommits = [
        e.message
        for e in out
        if isinstance(e, Broadcast)
        and isinstance(e.message, Vote)
        and e.message.vote_type is VoteType.PRECOMMIT
    ]
    assert [v.block_hash for v in precommits] == [prop.block_hash]
