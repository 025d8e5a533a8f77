"""The Tendermint state machine, driven message by message (no network, no clock but ``now``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Effect,
    EvidenceFound,
    FullNode,
    LockRecord,
    Persist,
    Send,
    SetTimer,
    SignedRecord,
    Step,
    TimerKind,
)
from gridnode.core.consensus_messages import (
    NIL,
    BlockRequest,
    BlockResponse,
    ConsensusMessage,
    Proposal,
    SyncedBlock,
    Vote,
    VoteType,
    block_hash,
    commit_is_valid,
    sign_proposal,
    sign_vote,
)
from gridnode.core.crypto import verify_counts
from market.codec import pack
from tests.consensus.helpers import ListBlocks, TagApp, keys, validator_set

KEYS = keys(4)
VALS = validator_set(KEYS)


@dataclass
class Cluster:
    """Four machines wired FIFO; ``down`` nodes neither send nor receive. Timers fire on demand."""

    machines: list[Consensus]
    stores: list[ListBlocks]
    down: set[int] = field(default_factory=set)
    queue: deque[tuple[int, str, ConsensusMessage]] = field(default_factory=deque)
    timers: list[tuple[int, SetTimer]] = field(default_factory=list)
    decided: dict[int, list[Decided]] = field(default_factory=dict)
    effects: dict[int, list[Effect]] = field(default_factory=dict)
    now: int = 0

    @classmethod
    def build(cls, n: int = 4) -> Cluster:
        stores = [ListBlocks() for _ in range(n)]
        machines = [
            Consensus(validators=VALS, key=KEYS[i], app=TagApp(f"n{i}"), blocks=stores[i])
            for i in range(n)
        ]
        return cls(machines, stores)

    def handle(self, i: int, effects: list[Effect]) -> None:
        self.effects.setdefault(i, []).extend(effects)
        for eff in effects:
            if isinstance(eff, Broadcast):
                for j in range(len(self.machines)):
                    if j != i:
                        self.queue.append((j, f"v{i}", eff.message))
            elif isinstance(eff, Send):
                self.queue.append((int(eff.to[1:]), f"v{i}", eff.message))
            elif isinstance(eff, SetTimer):
                self.timers.append((i, eff))
            elif isinstance(eff, Decided):
                self.decided.setdefault(i, []).append(eff)
                self.stores[i].blocks[eff.height] = SyncedBlock(eff.height, eff.block, eff.commit)

    def start(self) -> None:
        for i, m in enumerate(self.machines):
            if i not in self.down:
                self.handle(i, m.start(self.now))
        self.deliver_all()

    def deliver_all(self) -> None:
        while self.queue:
            j, sender, msg = self.queue.popleft()
            if j in self.down or int(sender[1:]) in self.down:
                continue
            self.handle(j, self.machines[j].on_message(sender, msg, self.now))

    def fire(self, kind: TimerKind) -> None:
        """Fire every pending timer of ``kind`` (whatever its deadline), then deliver."""
        due = [(i, t) for i, t in self.timers if t.kind is kind]
        self.timers = [(i, t) for i, t in self.timers if t.kind is not kind]
        for i, t in due:
            self.now = max(self.now, t.at)
            if i not in self.down:
                self.handle(i, self.machines[i].on_timer(t.kind, t.height, t.round, self.now))
        self.deliver_all()


def test_four_honest_validators_decide_the_same_block_with_a_valid_commit() -> None:
    c = Cluster.build()
    c.start()
    assert sorted(c.decided) == [0, 1, 2, 3]
    blocks = {d.block for ds in c.decided.values() for d in ds if d.height == 1}
    assert blocks == {pack([1, "n1-r0"])}  # proposer of (1, 0) is validator 1
    for ds in c.decided.values():
        assert commit_is_valid(VALS, ds[0].commit, ds[0].block, height=1)
    c.fire(TimerKind.NEW_HEIGHT)  # the commit wait ends: height 2, proposer 2
    assert all(len(ds) == 2 for ds in c.decided.values())
    assert {ds[1].block for ds in c.decided.values()} == {pack([2, "n2-r0"])}


def test_every_signature_is_persisted_before_it_is_sent() -> None:
    c = Cluster.build()
    c.start()
    c.fire(TimerKind.NEW_HEIGHT)
    for i, effects in c.effects.items():
        persisted: set[tuple[int, int, int, bytes]] = set()
        for eff in effects:
            if isinstance(eff, Persist) and isinstance(eff.record, SignedRecord):
                r = eff.record
                persisted.add((r.height, r.round, int(r.step), r.value))
            if isinstance(eff, Broadcast) and isinstance(eff.message, Vote | Proposal):
                m = eff.message
                if isinstance(m, Vote) and m.validator == i:
                    assert (m.height, m.round, int(m.vote_type), m.block_hash) in persisted
                if isinstance(m, Proposal) and m.proposer == i:
                    assert (m.height, m.round, 0, m.block_hash) in persisted


def test_a_silent_proposer_leads_to_nil_votes_and_a_decision_in_round_one() -> None:
    c = Cluster.build()
    c.down = {1}  # proposer of (1, 0)
    c.start()
    assert not c.decided
    c.fire(TimerKind.PROPOSE)  # nobody saw a proposal: prevote nil
    c.fire(TimerKind.PREVOTE)
    assert all(m.step is Step.PRECOMMIT for i, m in enumerate(c.machines) if i != 1)
    c.fire(TimerKind.PRECOMMIT)  # -> round 1, proposer 2
    assert sorted(c.decided) == [0, 2, 3]
    assert {ds[0].commit.round for ds in c.decided.values()} == {1}
    assert {ds[0].block for ds in c.decided.values()} == {pack([1, "n2-r1"])}


def test_an_invalid_proposal_gets_nil_prevotes() -> None:
    stores = [ListBlocks() for _ in range(4)]
    machines = [
        Consensus(
            validators=VALS,
            key=KEYS[i],
            app=TagApp(f"n{i}", reject=frozenset({"n1-r0"})),
            blocks=stores[i],
        )
        for i in range(4)
    ]
    c = Cluster(machines, stores)
    c.start()
    assert not c.decided
    prevotes = [
        e.message
        for i in (0, 2, 3)
        for e in c.effects[i]
        if isinstance(e, Broadcast) and isinstance(e.message, Vote) and e.message.validator == i
    ]
    assert prevotes and all(v.block_hash == NIL for v in prevotes)


def _proposal(height: int, round_: int, block: bytes, valid_round: int = -1) -> Proposal:
    p = VALS.proposer(height, round_)
    return sign_proposal(
        KEYS[p], height=height, round_=round_, block=block, valid_round=valid_round, proposer=p
    )


def _vote(i: int, vt: VoteType, height: int, round_: int, value: bytes) -> Vote:
    return sign_vote(KEYS[i], vote_type=vt, height=height, round_=round_, value=value, validator=i)


def _own_votes(effects: list[Effect], index: int) -> list[Vote]:
    return [
        e.message
        for e in effects
        if isinstance(e, Broadcast) and isinstance(e.message, Vote) and e.message.validator == index
    ]


def test_a_locked_validator_prevotes_nil_for_another_value_without_a_newer_proof() -> None:
    m = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    m.start(0)
    a = pack([1, "A"])
    m.on_message("v1", _proposal(1, 0, a), 1)
    for i in (1, 2):
        m.on_message(f"v{i}", _vote(i, VoteType.PREVOTE, 1, 0, block_hash(a)), 2)
    # L36: 2f+1 prevotes for A -> lock on A and precommit A
    assert m.step is Step.PRECOMMIT
    effects: list[Effect] = []
    for i in (1, 2):  # f+1 in round 1 -> skip to round 1 (proposer 2)
        effects += m.on_message(f"v{i}", _vote(i, VoteType.PREVOTE, 1, 1, NIL), 3)
    assert m.round == 1
    b = pack([1, "B"])
    effects += m.on_message("v2", _proposal(1, 1, b), 4)
    prevotes = [v for v in _own_votes(effects, 0) if v.vote_type is VoteType.PREVOTE]
    assert [(v.round, v.block_hash) for v in prevotes] == [(1, NIL)]
    # the same proposer re-proposing A with a proof of lock from round 0 is accepted (L28)
    m2 = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    m2.start(0)
    for i in (1, 2, 3):
        m2.on_message(f"v{i}", _vote(i, VoteType.PREVOTE, 1, 0, block_hash(b)), 1)
    m2.on_message("v1", _proposal(1, 0, b), 1)
    assert m2.step is Step.PRECOMMIT  # locked on B in round 0
    for i in (1, 2):
        m2.on_message(f"v{i}", _vote(i, VoteType.PREVOTE, 1, 1, NIL), 2)
    out = m2.on_message("v2", _proposal(1, 1, b, valid_round=0), 3)
    assert [(v.round, v.block_hash) for v in _own_votes(out, 0)] == [(1, block_hash(b))]


def test_a_restarted_validator_never_signs_a_different_vote_for_a_signed_step() -> None:
    x = pack([1, "X"])
    y = pack([1, "Y"])
    wal = [SignedRecord(1, 0, Step.PREVOTE, block_hash(x))]
    m = Consensus.recover(
        validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks(), height=1, wal=wal
    )
    out = m.start(10)
    # on restart it re-sends the vote it had signed, identical bytes
    assert [v.block_hash for v in _own_votes(out, 0)] == [block_hash(x)]
    out = m.on_message("v1", _proposal(1, 0, y), 11)
    assert _own_votes(out, 0) == []  # no prevote for Y
    assert not any(isinstance(e, Persist) for e in out)
    # a machine that forgot its WAL would have signed Y: the protection is what stops it
    fresh = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    fresh.start(10)
    out = fresh.on_message("v1", _proposal(1, 0, y), 11)
    assert [v.block_hash for v in _own_votes(out, 0)] == [block_hash(y)]


def test_never_signs_below_the_last_signed_step_and_restores_its_lock() -> None:
    a = pack([1, "A"])
    wal = [
        SignedRecord(1, 0, Step.PREVOTE, block_hash(a)),
        LockRecord(1, 0, a, 0, a),
        SignedRecord(1, 0, Step.PRECOMMIT, block_hash(a)),
    ]
    m = Consensus.recover(
        validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks(), height=1, wal=wal
    )
    m.start(0)
    assert m.step is Step.PRECOMMIT and m.round == 0
    out = m.on_timer(TimerKind.PROPOSE, 1, 0, 5) + m.on_timer(TimerKind.PREVOTE, 1, 0, 5)
    assert _own_votes(out, 0) == []  # nothing new is signed in a round it already precommitted
    assert not any(isinstance(e, Persist) for e in out)
    for i in (1, 2):
        m.on_message(f"v{i}", _vote(i, VoteType.PREVOTE, 1, 1, NIL), 6)
    out = m.on_message("v2", _proposal(1, 1, pack([1, "B"])), 7)
    prevotes = [v for v in _own_votes(out, 0) if v.vote_type is VoteType.PREVOTE]
    assert [v.block_hash for v in prevotes] == [NIL]  # still locked on A


def test_conflicting_votes_are_recorded_as_evidence_once() -> None:
    m = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    m.start(0)
    first = _vote(3, VoteType.PREVOTE, 1, 0, NIL)
    second = _vote(3, VoteType.PREVOTE, 1, 0, block_hash(b"z"))
    out = m.on_message("v3", first, 1) + m.on_message("v3", second, 2)
    out += m.on_message("v3", second, 3) + m.on_message("v1", first, 4)
    assert [type(e) for e in out if isinstance(e, EvidenceFound)] == [EvidenceFound]
    assert len(m.evidence) == 1


def test_forged_and_foreign_messages_are_ignored() -> None:
    m = Consensus(validators=VALS, key=KEYS[0], app=TagApp("n0"), blocks=ListBlocks())
    m.start(0)
    real = _vote(2, VoteType.PREVOTE, 1, 0, NIL)
    forged = Vote(real.vote_type, 1, 0, block_hash(b"q"), 2, real.signature)
    outsider = keys(1, seed=99)[0]
    stranger = sign_vote(
        outsider, vote_type=VoteType.PREVOTE, height=1, round_=0, value=NIL, validator=2
    )
    wrong_proposer = sign_proposal(
        KEYS[3], height=1, round_=0, block=b"w", valid_round=-1, proposer=3
    )
    for msg in (forged, stranger, wrong_proposer):
        assert m.on_message("v2", msg, 1) == []
    assert m.step is Step.PROPOSE


def test_a_lagging_validator_catches_up_from_blocks_with_commits() -> None:
    c = Cluster.build()
    c.down = {3}
    c.start()
    for _ in range(20):  # height 3's proposer is the down node: rounds time out
        if all(len(c.decided.get(i, [])) >= 4 for i in (0, 1, 2)):
            break
        for kind in (TimerKind.NEW_HEIGHT, TimerKind.PROPOSE, TimerKind.PREVOTE):
            c.fire(kind)
        c.fire(TimerKind.PRECOMMIT)
    assert all(len(c.decided[i]) >= 4 for i in (0, 1, 2))
    c.down = set()
    lagger = c.machines[3]
    lagger.start(c.now)
    # any message from a higher height makes it ask for blocks
    out = lagger.on_message("v0", _vote(0, VoteType.PREVOTE, 5, 0, NIL), c.now)
    req = [e for e in out if isinstance(e, Send)]
    assert req == [Send("v0", BlockRequest(1, 32))]
    c.handle(3, out)
    c.deliver_all()
    caught_up = c.decided[3]
    assert [d.height for d in caught_up] == list(range(1, len(caught_up) + 1))
    assert len(caught_up) >= 4
    assert [d.block for d in caught_up] == [d.block for d in c.decided[0]][: len(caught_up)]
    assert lagger.height == len(caught_up) + 1


def test_a_full_node_applies_only_blocks_with_valid_commits() -> None:
    c = Cluster.build()
    c.start()
    good = c.stores[0].blocks[1]
    fn = FullNode(validators=VALS, peers=["v0"], blocks=ListBlocks())
    first = fn.start(0)
    assert first[0] == Send("v0", BlockRequest(1, 32))
    tampered = SyncedBlock(1, pack([1, "evil"]), good.commit)
    weak = SyncedBlock(
        1,
        good.block,
        type(good.commit)(1, good.commit.round, good.commit.block_hash, good.commit.signatures[:2]),
    )
    assert fn.on_message("v0", BlockResponse((tampered, weak)), 1) == []
    assert fn.rejected_blocks == 2
    assert fn.on_message("v0", BlockResponse((good,)), 2) == [Decided(1, good.block, good.commit)]
    assert fn.height == 2


def test_timeouts_grow_per_round() -> None:
    cfg = ConsensusConfig()
    for kind in (TimerKind.PROPOSE, TimerKind.PREVOTE, TimerKind.PRECOMMIT):
        assert cfg.timeout(kind, 0) < cfg.timeout(kind, 1) < cfg.timeout(kind, 5)


def test_a_validator_does_not_verify_its_own_votes_and_proposals() -> None:
    c = Cluster.build()
    before = verify_counts()
    effects = c.machines[1].start(0)  # the proposer of height 1 proposes and prevotes alone
    own = [e.message for e in effects if isinstance(e, Broadcast)]
    assert [type(m) for m in own] == [Proposal, Vote]
    assert verify_counts() == before  # its own signatures were not checked again ...
    c.handle(1, effects)
    c.deliver_all()  # ... and the others' were (each of them once, on arrival)
    assert verify_counts().get("proposal", 0) - before.get("proposal", 0) == 3
