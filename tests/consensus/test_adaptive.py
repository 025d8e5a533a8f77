"""The adaptive cadence: when the next height starts, by what the application has waiting."""

from __future__ import annotations

from gridnode.core.consensus import (
    AdaptiveCommit,
    Backlog,
    Broadcast,
    Consensus,
    ConsensusConfig,
    Effect,
    SetTimer,
    Step,
    TimerKind,
)
from gridnode.core.consensus_messages import Proposal, Vote, VoteType
from tests.consensus.helpers import ListBlocks, TagApp, keys, validator_set
from tests.consensus.test_machine import Cluster

KEYS = keys(4)
VALS = validator_set(KEYS)
ADAPTIVE = ConsensusConfig(commit_ms=1_000, adaptive=AdaptiveCommit(busy_ms=100, full_ms=10))


def _cluster(config: ConsensusConfig) -> Cluster:
    stores = [ListBlocks() for _ in range(4)]
    machines = [
        Consensus(
            validators=VALS, key=KEYS[i], app=TagApp(f"n{i}"), blocks=stores[i], config=config
        )
        for i in range(4)
    ]
    c = Cluster(machines, stores)
    c.start()  # height 1 is decided at now = 0; everyone waits for height 2
    assert all(m.height == 2 and m.step is Step.NEW_HEIGHT for m in c.machines)
    return c


def _starts(effects: list[Effect]) -> list[int]:
    return [e.at for e in effects if isinstance(e, SetTimer) and e.kind is TimerKind.NEW_HEIGHT]


def test_pending_transactions_start_the_next_height_after_busy_ms_not_commit_ms() -> None:
    c = _cluster(ADAPTIVE)
    m = c.machines[2]  # the proposer of (2, 0)
    assert m.waiting_for_work
    assert m.on_backlog(Backlog(0), 5) == []  # nothing waits: the idle heartbeat (commit_ms)
    assert _starts(m.on_backlog(Backlog(3), 40)) == [140]  # busy_ms after the first pending tx
    assert m.on_backlog(Backlog(9), 60) == []  # later ones change nothing ...
    assert _starts(m.on_backlog(Backlog(900, full=True), 70)) == [70]  # ... a full block: now
    assert _starts(m.on_backlog(Backlog(1, due_ms=30), 45)) == [45]  # due already: at once


def test_a_due_gate_closure_starts_the_height_at_its_time() -> None:
    c = _cluster(ADAPTIVE)
    m = c.machines[0]
    assert _starts(m.on_backlog(Backlog(0, due_ms=700), 20)) == [700]
    assert m.on_backlog(Backlog(0, due_ms=5_000), 30) == []  # after the idle heartbeat anyway


def test_validators_start_on_the_round_0_proposal_instead_of_waiting() -> None:
    c = _cluster(ADAPTIVE)
    c.timers = []  # nobody's commit wait will run out in this test
    c.now = 150
    c.handle(2, c.machines[2].on_timer(TimerKind.NEW_HEIGHT, 2, 0, c.now))  # the proposer starts
    c.deliver_all()
    # the others started round 0 on its proposal and voted: height 2 is decided everywhere
    assert all(len(c.decided.get(i, [])) == 2 for i in range(4))
    for i in (0, 1, 3):
        votes = [e.message for e in c.effects[i] if isinstance(e, Broadcast)]
        assert any(isinstance(v, Vote) and v.height == 2 and v.vote_type is VoteType.PREVOTE
                   for v in votes)  # fmt: skip


def test_fixed_cadence_waits_out_commit_ms_even_with_a_proposal_in_hand() -> None:
    c = _cluster(ConsensusConfig(commit_ms=1_000))
    m = c.machines[0]
    assert not m.waiting_for_work and m.on_backlog(Backlog(50, full=True, due_ms=1), 5) == []
    c.timers = []
    c.now = 150
    c.handle(2, c.machines[2].on_timer(TimerKind.NEW_HEIGHT, 2, 0, c.now))
    c.deliver_all()
    assert all(len(c.decided.get(i, [])) == 1 for i in range(4))  # height 2 not decided yet
    for i in (0, 1, 3):
        assert c.machines[i].step is Step.NEW_HEIGHT  # the proposal waits for their own timer
        proposals = [e for e in c.effects[i] if isinstance(e, Broadcast) and e.message.height == 2]
        assert not proposals
    assert isinstance(c.machines[0]._h.proposals.get(0), Proposal)


def test_once_told_of_pending_work_only_a_full_backlog_can_move_the_start() -> None:
    # the executor skips non-full reports once the core was told of pending work (gridnode.node):
    # those reports must change nothing, whatever the clock says, while the state (and so what
    # is due) stays that of the decision
    for due in (None, 90, 400):
        for full_at in (45, None):
            c = _cluster(ADAPTIVE)
            m = c.machines[2]
            assert m.backlog_wanted() == 2  # not told of pending work yet: any report may count
            assert _starts(m.on_backlog(Backlog(2, due_ms=due), 40)) == [min(140, due or 140)]
            assert m.backlog_wanted() == 1  # told: only a full backlog may count
            for now in (41, 44) if full_at else (41, 90, 139, 140, 400, 900):
                assert m.on_backlog(Backlog(1 + now, due_ms=due), now) == []
            if full_at:  # a full block of them: busy_since + full_ms
                assert _starts(m.on_backlog(Backlog(999, full=True, due_ms=due), 45)) == [50]
                assert m.backlog_wanted() == 0  # full seen: the executor stops reporting
