"""The one executor: its written driver contract, refusal logging, boot from a snapshot, halting."""

from __future__ import annotations

import logging
import random

import pytest

from gridnode.core.app import LedgerApp
from gridnode.core.consensus import (
    Broadcast,
    Decided,
    EvidenceFound,
    LockRecord,
    Persist,
    ProposalRefused,
    SetTimer,
    SignedRecord,
    Step,
    TimerKind,
)
from gridnode.core.consensus_messages import (
    Commit,
    DuplicateVote,
    Vote,
    VoteType,
    encode_message,
    sign_proposal,
)
from gridnode.core.crypto import KeyPair
from gridnode.node import Duty, LedgerHalted, NodeRuntime, plan
from gridnode.store import MemoryStore
from tests.ledger.helpers import T0_MS, Community


class Outbox:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.timers: list[tuple[int, TimerKind, int, int]] = []

    def broadcast(self, data: bytes) -> None:
        self.sent.append(data)

    def send(self, to: str, data: bytes) -> None:
        self.sent.append(data)

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        self.timers.append((at_ms, kind, height, round_))


def test_the_contract_keeps_the_core_order_and_stores_before_it_applies() -> None:
    vote = Vote(VoteType.PREVOTE, 1, 0, b"\1" * 32, 0, b"\0" * 64)
    decided = Decided(4, b"block", Commit(4, 0, b"\2" * 32, ()))
    effects = [
        Persist(SignedRecord(1, 0, Step.PREVOTE, b"\1" * 32)),
        Broadcast(vote),
        Persist(LockRecord(1, 0, b"b", 0, b"b")),
        decided,
        SetTimer(TimerKind.NEW_HEIGHT, 5, 0, 10),
        EvidenceFound(DuplicateVote(vote, vote)),
        ProposalRefused(5, 0, 1, b"\3" * 32, "time_too_old", "late"),
    ]
    duties = [a.duty for a in plan(effects, snapshot_every=2)]
    assert duties == [
        Duty.PERSIST,
        Duty.SEND,
        Duty.PERSIST,
        Duty.STORE,
        Duty.APPLY,
        Duty.TRUNCATE,
        Duty.SNAPSHOT,  # height 4 is a multiple of 2
        Duty.NOTIFY,
        Duty.TIMER,
        Duty.EVIDENCE,
        Duty.REFUSED,
    ]
    assert Duty.SNAPSHOT not in [a.duty for a in plan([decided], snapshot_every=3)]


def runtime(c: Community, i: int, store: MemoryStore, outbox: Outbox) -> NodeRuntime:
    return NodeRuntime(
        genesis=c.genesis, key=c.validators[i], store=store, outbox=outbox, validator=True
    )


def test_a_refused_proposal_is_logged_with_its_reason_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Community(n_members=2, n_validators=4)
    rt = runtime(c, 0, MemoryStore(), Outbox())
    late = T0_MS + c.genesis.max_drift_ms + 3_000
    rt.start(late)
    block = LedgerApp(c.genesis, proposer=c.validators[1].public_hex).make_block(1, 0, T0_MS)
    prop = sign_proposal(
        c.validators[1], height=1, round_=0, block=block, valid_round=-1, proposer=1
    )
    with caplog.at_level(logging.INFO, logger="gridnode.node"):
        rt.on_message(c.validators[1].public_hex, encode_message(prop), late)
    assert rt.refused == {"time_too_old": 1}
    [record] = [r for r in caplog.records if r.name == "gridnode.node"]
    assert "refused proposal at height 1 round 0 (proposer 1" in record.getMessage()
    assert "time_too_old" in record.getMessage()


def test_a_runtime_boots_from_its_snapshot_and_the_blocks_after_it() -> None:
    c = Community(n_members=2, n_validators=1)
    store = MemoryStore()
    out = Outbox()
    rt = NodeRuntime(
        genesis=c.genesis,
        key=c.validators[0],
        store=store,
        outbox=out,
        validator=True,
        snapshot_every=3,
    )
    now = T0_MS
    rt.start(now)
    while rt.state.height < 7:  # a committee of one decides at every new-height timer
        at, kind, h, r = out.timers.pop(min(range(len(out.timers)), key=lambda i: out.timers[i][0]))
        now = max(now, at)
        rt.on_timer(kind, h, r, now)
    assert store.snapshot_heights()[-1] == 6
    again = NodeRuntime(
        genesis=c.genesis,
        key=c.validators[0],
        store=store.reopen(),
        outbox=Outbox(),
        validator=True,
    )
    assert again.state.digest() == rt.state.digest() and again.state.height == 7


def test_a_committed_block_that_breaks_a_rule_halts_the_node() -> None:
    c = Community(n_members=2, n_validators=4)
    rt = runtime(c, 0, MemoryStore(), Outbox())
    stranger = KeyPair.from_rng(random.Random(5))
    bad = LedgerApp(c.genesis, proposer=stranger.public_hex).make_block(1, 0, T0_MS)
    with pytest.raises(LedgerHalted, match="not_a_validator"):
        rt._run([Decided(1, bad, Commit(1, 0, b"\4" * 32, ()))])
    assert rt.store.head() is not None  # stored first, as the contract says; then it stopped
