"""Scripted consensus scenarios with reviewed transcripts (in the spirit of etcd raft's testdata).

Each file in ``tests/consensus/testdata/`` is a scenario: ``#`` lines say what it shows, ``> ``
lines are commands, and the indented lines under a command are the transcript it must produce —
every action the nodes' executors carried out (the one executor, :class:`gridnode.node.Executor`,
over the campaign's :class:`sims.simnet.SimApp` and in-memory stores), every message delivered,
every decision. ``tests/consensus/test_scripted.py`` replays each file and compares the transcript
byte for byte. After a reviewed change of behaviour, regenerate and review the diff::

    python -m tests.consensus.scripted --rewrite        # then: git diff tests/consensus/testdata

Commands (nodes are ``v0``..``v3``; the clock starts at 1,000,000 ms and moves only by ``time``;
nothing is delivered and no timer fires unless a command says so):

``start [vN ...]``
    start the nodes (all by default).
``deliver [from=vN,..] [to=vN,..] [type=proposal,prevote,precommit,blockreq,blockresp]``
    deliver, in send order, every queued message that matches (not the ones sent meanwhile).
``stabilize [same filters]``
    deliver matching messages until none is queued (at most 1,000).
``drop [same filters]``
    lose every queued message that matches.
``timeout vN propose|prevote|precommit|new_height|rebroadcast``
    fire that timer of the node's current height and round.
``time +MS``
    advance the clock.
``crash vN`` / ``restart vN``
    stop the node (messages to it are lost); rebuild it from its store and start it.
``forge vN prevote|precommit value=nil|<block> [round=R] [to=vN,..]``
    queue a vote signed by validator N (a Byzantine one) for the given block (by its short name).
``status``
    every node's height, round, step, lock and valid value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    EvidenceFound,
    LockRecord,
    Persist,
    ProposalRefused,
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
    DuplicateProposal,
    DuplicateVote,
    Proposal,
    Vote,
    VoteType,
    block_hash,
    decode_message,
    encode_message,
    sign_vote,
)
from gridnode.node import Action, Duty, Executor
from gridnode.store import MemoryStore
from sims.simnet import SimApp
from tests.consensus.helpers import keys, validator_set

TESTDATA = Path(__file__).resolve().parent / "testdata"
START_MS = 1_000_000
NAMES = ("v0", "v1", "v2", "v3")
KINDS = {"proposal", "prevote", "precommit", "blockreq", "blockresp"}


def short(value: bytes) -> str:
    return "nil" if value == NIL else value.hex()[:4]


def describe(msg: ConsensusMessage) -> str:
    if isinstance(msg, Proposal):
        return (
            f"proposal h{msg.height} r{msg.round} {short(msg.block_hash)} "
            f"vr={msg.valid_round} by v{msg.proposer}"
        )
    if isinstance(msg, Vote):
        kind = "prevote" if msg.vote_type is VoteType.PREVOTE else "precommit"
        return f"{kind} h{msg.height} r{msg.round} {short(msg.block_hash)} by v{msg.validator}"
    if isinstance(msg, BlockRequest):
        return f"blockreq from h{msg.from_height}"
    assert isinstance(msg, BlockResponse)
    return "blockresp " + ",".join(f"h{b.height}" for b in msg.blocks)


def kind_of(msg: ConsensusMessage) -> str:
    if isinstance(msg, Proposal):
        return "proposal"
    if isinstance(msg, Vote):
        return "prevote" if msg.vote_type is VoteType.PREVOTE else "precommit"
    return "blockreq" if isinstance(msg, BlockRequest) else "blockresp"


@dataclass
class Queued:
    src: str
    dst: str
    data: bytes


class _Outbox:
    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name

    def broadcast(self, data: bytes) -> None:
        for dst in NAMES:
            if dst != self.name:
                self.world.queue.append(Queued(self.name, dst, data))

    def send(self, to: str, data: bytes) -> None:
        self.world.queue.append(Queued(self.name, to, data))

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        pass  # timers fire only when the script says so (the transcript shows what was armed)


@dataclass
class World:
    """Four validators, each the one executor over SimApp and a MemoryStore."""

    now: int = START_MS
    queue: list[Queued] = field(default_factory=list)
    nodes: dict[str, Executor[SimApp]] = field(default_factory=dict)
    stores: dict[str, MemoryStore] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    out: list[str] = field(default_factory=list)
    depth: int = 1

    def __post_init__(self) -> None:
        self.keys = keys(4)
        self.validators = validator_set(self.keys)
        self.config = ConsensusConfig()
        for name in NAMES:
            self.stores[name] = MemoryStore()
            self.nodes[name] = self._boot(name)

    def _boot(self, name: str) -> Executor[SimApp]:
        i = NAMES.index(name)
        rt: Executor[SimApp] = Executor(
            app=SimApp(sig_counter=[0]),
            validators=self.validators,
            key=self.keys[i],
            store=self.stores[name],
            outbox=_Outbox(self, name),
            validator=True,
            sync_peers=NAMES,
            config=self.config,
        )
        rt.observers.append(lambda action, name=name: self._show(name, action))  # type: ignore[misc]
        return rt

    def say(self, line: str) -> None:
        self.out.append("  " * self.depth + line)

    # -- the transcript of what an executor did ----------------------------------------------------

    def _show(self, name: str, action: Action) -> None:
        eff = action.effect
        if action.duty is Duty.PERSIST:
            assert isinstance(eff, Persist)
            rec = eff.record
            if isinstance(rec, SignedRecord):
                step = rec.step.name.lower()
                self.say(
                    f"{name} persist signed h{rec.height} r{rec.round} {step} {short(rec.value)}"
                )
            else:
                assert isinstance(rec, LockRecord)
                self.say(
                    f"{name} persist lock h{rec.height} locked=r{rec.locked_round} "
                    f"{_block(rec.locked_block)} valid=r{rec.valid_round} "
                    f"{_block(rec.valid_block)} proof={len(rec.proof)}"
                )
        elif action.duty is Duty.SEND:
            if isinstance(eff, Broadcast):
                self.say(f"{name} broadcast {describe(eff.message)}")
            else:
                assert isinstance(eff, Send)
                self.say(f"{name} send {eff.to} {describe(eff.message)}")
        elif action.duty is Duty.TIMER:
            assert isinstance(eff, SetTimer)
            self.say(
                f"{name} timer {eff.kind.value} h{eff.height} r{eff.round} +{eff.at - self.now}"
            )
        elif action.duty is Duty.NOTIFY:
            assert isinstance(eff, Decided)
            c = eff.commit
            self.say(
                f"{name} committed h{eff.height} {short(c.block_hash)} "
                f"(commit round {c.round}, {len(c.signatures)} precommits)"
            )
        elif action.duty is Duty.EVIDENCE:
            assert isinstance(eff, EvidenceFound)
            ev = eff.evidence
            if isinstance(ev, DuplicateVote):
                self.say(
                    f"{name} evidence: v{ev.first.validator} signed {short(ev.first.block_hash)} "
                    f"and {short(ev.second.block_hash)} at h{ev.first.height} r{ev.first.round}"
                )
            else:
                assert isinstance(ev, DuplicateProposal)
                self.say(
                    f"{name} evidence: v{ev.first.proposer} proposed twice at r{ev.first.round}"
                )
        elif action.duty is Duty.REFUSED:
            assert isinstance(eff, ProposalRefused)
            self.say(
                f"{name} refused h{eff.height} r{eff.round} {short(eff.block_hash)} "
                f"from v{eff.proposer}: {eff.reason}"
            )

    # -- commands ---------------------------------------------------------------------------------

    def run(self, command: str) -> list[str]:
        self.out = []
        words = command.split()
        verb, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + verb, None)
        if handler is None:
            raise ValueError(f"unknown command {verb!r}")
        handler(args)
        return self.out

    def cmd_start(self, args: list[str]) -> None:
        for name in args or NAMES:
            self.nodes[name].start(self.now)

    def _matching(self, args: list[str]) -> Iterator[Queued]:
        want = dict(a.split("=", 1) for a in args)
        unknown = set(want) - {"from", "to", "type"}
        if unknown or not set(want.get("type", "proposal").split(",")) <= KINDS:
            raise ValueError(f"bad filter {args}")
        for q in self.queue:
            if "from" in want and q.src not in want["from"].split(","):
                continue
            if "to" in want and q.dst not in want["to"].split(","):
                continue
            if "type" in want and kind_of(decode_message(q.data)) not in want["type"].split(","):
                continue
            yield q

    def cmd_deliver(self, args: list[str]) -> None:
        for q in list(self._matching(args)):
            self.queue.remove(q)
            msg = decode_message(q.data)
            lost = " (down: lost)" if q.dst in self.down else ""
            self.say(f"{q.dst} <- {q.src}: {describe(msg)}{lost}")
            if not lost:
                self.depth += 1
                self.nodes[q.dst].on_message(q.src, q.data, self.now)
                self.depth -= 1

    def cmd_stabilize(self, args: list[str]) -> None:
        for _ in range(1_000):
            if not any(True for _ in self._matching(args)):
                return
            self.cmd_deliver(args)
        raise RuntimeError("stabilize did not settle in 1,000 waves")

    def cmd_drop(self, args: list[str]) -> None:
        for q in list(self._matching(args)):
            self.queue.remove(q)
            self.say(f"dropped {q.src} -> {q.dst}: {describe(decode_message(q.data))}")

    def cmd_timeout(self, args: list[str]) -> None:
        name, kind = args[0], TimerKind(args[1])
        core = self.nodes[name].core
        assert isinstance(core, Consensus)
        self.say(f"{name} timeout {kind.value} h{core.height} r{core.round}")
        self.depth += 1
        self.nodes[name].on_timer(kind, core.height, core.round, self.now)
        self.depth -= 1

    def cmd_time(self, args: list[str]) -> None:
        self.now += int(args[0].lstrip("+"))
        self.say(f"now {self.now}")

    def cmd_crash(self, args: list[str]) -> None:
        self.down.add(args[0])

    def cmd_restart(self, args: list[str]) -> None:
        name = args[0]
        self.down.discard(name)
        self.stores[name] = self.stores[name].reopen()
        self.nodes[name] = self._boot(name)
        self.nodes[name].start(self.now)

    def cmd_forge(self, args: list[str]) -> None:
        name, kind = args[0], args[1]
        opts = dict(a.split("=", 1) for a in args[2:])
        i = NAMES.index(name)
        core = self.nodes[NAMES[(i + 1) % 4]].core
        assert isinstance(core, Consensus)
        value = NIL if opts["value"] == "nil" else self._known_block(opts["value"])
        vote = sign_vote(
            self.keys[i],
            vote_type=VoteType.PREVOTE if kind == "prevote" else VoteType.PRECOMMIT,
            height=core.height,
            round_=int(opts.get("round", core.round)),
            value=value,
            validator=i,
        )
        for dst in opts.get("to", ",".join(n for n in NAMES if n != name)).split(","):
            self.queue.append(Queued(name, dst, encode_message(vote)))
        self.say(f"queued {describe(vote)} to {opts.get('to', 'all')}")

    def _known_block(self, prefix: str) -> bytes:
        for rt in self.nodes.values():
            core = rt.core
            assert isinstance(core, Consensus)
            for value in core._h.blocks:
                if value.hex().startswith(prefix):
                    return value
        raise ValueError(f"no known block {prefix}")

    def cmd_status(self, args: list[str]) -> None:
        del args
        for name in NAMES:
            core = self.nodes[name].core
            assert isinstance(core, Consensus)
            step = "new_height" if core.step is Step.NEW_HEIGHT else core.step.name.lower()
            lock = _block(core._locked_block or b"")
            valid = _block(core._valid_block or b"")
            head = self.stores[name].head()
            down = " (down)" if name in self.down else ""
            self.say(
                f"{name} h{core.height} r{core.round} {step} locked=r{core._locked_round} {lock} "
                f"valid=r{core._valid_round} {valid} head={head.height if head else 0}{down}"
            )


def _block(block: bytes) -> str:
    return "-" if not block else short(block_hash(block))


# --- files ----------------------------------------------------------------------------------------


def replay(text: str, world: World | None = None) -> str:
    """Run a scenario file's commands; return the file as it should read (transcripts renewed)."""
    world = world or World()
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("> "):
            out.append(line)
            out.extend(world.run(line[2:]))
        elif not line.startswith("  "):
            out.append(line)
    return "\n".join(out) + "\n"


def scenarios() -> list[Path]:
    return sorted(TESTDATA.glob("*.txt"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.consensus.scripted")
    p.add_argument("--rewrite", action="store_true", help="write the transcripts into the files")
    p.add_argument("files", nargs="*", type=Path)
    args = p.parse_args(argv)
    changed = 0
    for path in args.files or scenarios():
        text = path.read_text(encoding="utf-8")
        new = replay(text)
        if new != text:
            changed += 1
            print(f"{path.name}: transcript differs", file=sys.stderr)
            if args.rewrite:
                path.write_text(new, encoding="utf-8")
    return 1 if changed and not args.rewrite else 0


if __name__ == "__main__":
    raise SystemExit(main())
