"""Tendermint BFT consensus as a sans-IO state machine (etcd-raft style).

The algorithm is Algorithm 1 of Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus"
(2018); comments ``L22`` etc. name its lines. Rules of this module:

* Inputs: :meth:`Consensus.start`, :meth:`Consensus.on_message` (a message from a peer) and
  :meth:`Consensus.on_timer` (a timer this machine asked for has fired), each with ``now`` (integer
  milliseconds of the node's clock). Outputs: an **ordered** list of effects the driver must carry
  out in order: :class:`Persist` (write a WAL record durably *before* doing anything after it),
  :class:`Broadcast` / :class:`Send`, :class:`SetTimer`, :class:`Decided` (store the block and its
  commit, then apply it), :class:`EvidenceFound`, :class:`ProposalRefused` (log the reason). The
  one executor that carries them out, and the written contract it obeys, is ``gridnode.node``.
* Proposer of (height, round) is validator ``(height + round) mod n`` (round-robin). Timeouts grow
  linearly per round: ``base + round * delta`` for propose, prevote and precommit.
* A node that has not signed anything for (h, r, step) may sign once. Before signing a vote or
  proposal it emits ``Persist(SignedRecord)``; it never signs for a (height, round, step) lower than
  the last signed one, nor a different value for the same one, even when restored from its WAL
  (:meth:`Consensus.recover`). Lock changes are persisted too (:class:`LockRecord`).
* **Validity and time** (Tendermint's rule, as CometBFT's proposer-based timestamps apply it): the
  application judges a block by its own rules (:meth:`Application.block_error` with ``now=None``:
  height, chain, signatures, time strictly after the previous block, …; cached per value and
  height) wherever consensus needs "valid(v)" (L28, L36, L49). Only a **fresh** proposal
  (``valid_round == -1``, L22) is also judged against this node's clock (``now``, with the
  proposal's round: the application may accept an older time in a later round, as CometBFT widens
  its message-delay bound per round, so that a node starved of CPU, which judges every proposal
  late, still prevotes for one eventually), and only for the prevote. A value that carries a proof-of-lock (a polka in its ``valid_round``) is never
  stopped by the clock: its time may be older than any drift bound after a long stall, and
  refusing it would leave the validators locked on it unable to decide anything, forever.
  Every refusal is reported as :class:`ProposalRefused` with the application's reason.
* After deciding height h the machine waits ``commit_ms`` (the driver applies the block meanwhile;
  the application sees ``make_block(h+1)`` only after ``Decided(h)`` was handled) and then starts
  round 0 of h+1. Messages for h+1 that arrive earlier are buffered only when a validator signed
  them (the signature is checked first), in a bounded
  :class:`~gridnode.core.consensus_messages.FutureBuffer` (per signer and in bytes), so neither an
  outsider nor a Byzantine validator can grow this node's memory without bound.
* **Adaptive cadence** (``ConsensusConfig.adaptive`` set; off by default): the wait after a
  decision follows the work waiting. The driver reports the application's :class:`Backlog` with
  :meth:`Consensus.on_backlog` (after a decided block was applied and after a transaction was
  admitted); once transactions are pending, round 0 of h+1 starts ``busy_ms`` after the decision
  or after the first of them was reported, whichever is later (a burst is gathered into one
  block), once a block's worth is pending ``full_ms`` after that, and at ``due_ms`` when a block
  would do
  something by its time alone (the ledger: clear a slot whose gate closed, settle one whose
  reading deadline passed) — never before the driver has handled the decision (the start is a
  ``NEW_HEIGHT`` timer); with nothing pending or due, after ``commit_ms`` (the idle heartbeat). A validator still waiting that holds the round-0 proposal of its height
  starts the round at once (the wait lets the proposer gather transactions; once it proposed,
  waiting only adds latency). Timing only: no rule of safety looks at it.
* Safety needs < n/3 Byzantine validators; nothing here trusts the delivering peer. Every vote and
  proposal signature is checked once on arrival (exact duplicates are dropped before that); the
  node's own, signed with its key as it records them, are not checked (they cannot fail).
  "2f+1 votes for v" counts the distinct validators that signed v, so a validator that signed two
  values (recorded as :class:`EvidenceFound`, once per validator and step) counts for each of
  them, as the quorum-intersection argument allows; "2f+1 votes of any value" counts distinct
  validators. At most 4 values per validator and step are kept. A proposer's first proposal per
  round counts; a different second one is evidence.
* Gossip: every ``rebroadcast_ms`` the node re-sends its own messages of the current height, every
  proposal and vote it holds for the current and previous round, and the proposal and prevotes
  that justify its valid value (Tendermint's liveness assumes correct nodes' messages eventually
  reach everyone; the network here may drop them).
* Restart: :meth:`Consensus.recover` takes the WAL of the height in progress. It restores the lock
  and valid value, resumes at the last signed round and re-sends the votes signed before the
  crash (Ed25519 is deterministic: the same bytes), without signing anything new for those steps.
* Catch-up: a message from a higher height makes the node ask the sender for blocks
  (:class:`BlockRequest`, at most once per ``sync_interval_ms``); blocks received in a
  :class:`BlockResponse` are accepted only with a valid commit and are decided in height order.
  :class:`FullNode` is the same sync logic without voting.
* Known limits: the validator set is fixed (from genesis); no proposer weighting; proposals carry
  the whole block (no block parts); the commit kept is the > 2/3 precommit set seen when deciding;
  messages for heights other than the current one and the next are dropped (sync covers them);
  evidence is reported, not yet acted on (no slashing or committee change); the core keeps only
  the latest :data:`EVIDENCE_KEPT` pieces (:attr:`Consensus.evidence`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from gridnode.core.consensus_config import (
    AdaptiveCommit,
    Application,
    Backlog,
    BlockSource,
    ConsensusConfig,
)
from gridnode.core.consensus_effects import (
    Broadcast,
    Decided,
    Effect,
    EvidenceFound,
    LockRecord,
    Persist,
    ProposalRefused,
    Send,
    SetTimer,
    SignedRecord,
    Step,
    TimerKind,
    WalRecord,
    decode_wal_record,
    encode_wal_record,
)
from gridnode.core.consensus_messages import (
    NIL,
    BlockRequest,
    BlockResponse,
    ConsensusMessage,
    DuplicateProposal,
    DuplicateVote,
    Evidence,
    FutureBuffer,
    Proposal,
    SyncedBlock,
    ValidatorSet,
    Vote,
    VoteType,
    block_hash,
    commit_from_votes,
    sign_proposal,
    sign_vote,
    verify_proposal,
    verify_vote,
)
from gridnode.core.consensus_sync import FullNode, SyncMixin
from gridnode.core.crypto import KeyPair
from market.errors import InvalidInput, UsageError

__all__ = [
    "EVIDENCE_KEPT",
    "AdaptiveCommit",
    "Application",
    "Backlog",
    "BlockSource",
    "Broadcast",
    "Consensus",
    "ConsensusConfig",
    "Decided",
    "Effect",
    "EvidenceFound",
    "FullNode",
    "LockRecord",
    "Persist",
    "ProposalRefused",
    "Send",
    "SetTimer",
    "SignedRecord",
    "Step",
    "TimerKind",
    "WalRecord",
    "decode_wal_record",
    "encode_wal_record",
]

#: Distinct values accepted from one validator for one (type, round); more is only spam.
_MAX_VALUES_PER_SIGNER: Final = 4
#: evidence the core keeps (newest): an equivocating validator must not grow it without bound
EVIDENCE_KEPT: Final = 256


# --- per-height bookkeeping ---------------------------------------------------------------------


@dataclass(slots=True)
class _Height:
    proposals: dict[int, Proposal] = field(default_factory=dict)
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    #: the first vote of each validator per (type, round): "any value" counts, round changes
    votes: dict[tuple[VoteType, int], dict[int, Vote]] = field(default_factory=dict)
    #: every validly signed vote per (type, round, value): an equivocator counts for each value
    by_value: dict[tuple[VoteType, int, bytes], dict[int, Vote]] = field(default_factory=dict)
    values_per_signer: dict[tuple[VoteType, int, int], int] = field(default_factory=dict)
    round_senders: dict[int, set[int]] = field(default_factory=dict)
    validity: dict[bytes, bool] = field(default_factory=dict)
    prevote_timer_rounds: set[int] = field(default_factory=set)
    precommit_timer_rounds: set[int] = field(default_factory=set)
    l36_rounds: set[int] = field(default_factory=set)
    evidence_keys: set[tuple[int, int, int]] = field(default_factory=set)

    def count(self, vote_type: VoteType, round_: int, value: bytes | None) -> int:
        if value is None:
            return len(self.votes.get((vote_type, round_), ()))
        return len(self.by_value.get((vote_type, round_, value), ()))


class Consensus(SyncMixin):
    """One validator's Tendermint state machine for consecutive heights."""

    def __init__(
        self,
        *,
        validators: ValidatorSet,
        key: KeyPair,
        app: Application,
        blocks: BlockSource,
        height: int = 1,
        config: ConsensusConfig | None = None,
        last_signed: SignedRecord | None = None,
        lock: LockRecord | None = None,
    ) -> None:
        index = validators.index_of(key.public_key)
        if index is None:
            raise UsageError("this key is not in the validator set")
        self._validators = validators
        self._key = key
        self.index: Final = index
        self._app = app
        self._blocks_src = blocks
        self._held = {}  # long poll (gridnode.core.consensus_sync)
        self._config = config or ConsensusConfig()
        self._quorum = self._config.unsafe_quorum or validators.quorum
        self.height = height
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self._last_signed = last_signed
        self._locked_round = -1
        self._locked_block: bytes | None = None
        self._valid_round = -1
        self._valid_block: bytes | None = None
        if lock is not None and lock.height == height:
            self._locked_round = lock.locked_round
            self._locked_block = lock.locked_block if lock.locked_round >= 0 else None
            self._valid_round = lock.valid_round
            self._valid_block = lock.valid_block if lock.valid_round >= 0 else None
        self._h = _Height()
        for known in (self._locked_block, self._valid_block):
            if (
                known is not None
            ):  # our own WAL: the bytes of the value we locked on / saw a polka for
                self._h.blocks.setdefault(block_hash(known), known)
        self._signed_before: list[SignedRecord] = []
        self._future = FutureBuffer()
        self._last_sync_request = -(10**18)
        #: adaptive cadence: when the current height's wait began (the decision) and when round 0
        #: is due to start (``None`` outside the wait)
        self._decided_at: int | None = None
        self._start_at: int | None = None
        self._busy_since: int | None = None  # when transactions were first reported waiting
        self._full_seen = False  # ... and whether a full block of them was
        #: Counters a driver or test may read.
        self.refused_signatures = 0
        #: next-height messages not buffered: not signed by a validator
        self.refused_future = 0
        #: the latest :data:`EVIDENCE_KEPT` pieces of equivocation evidence, oldest first
        self.evidence: deque[Evidence] = deque(maxlen=EVIDENCE_KEPT)
        if lock is not None and lock.height == height:
            for vote in lock.proof:  # the proof-of-lock, to gossip again (see _rebroadcast)
                if vote.height == height and vote.vote_type is VoteType.PREVOTE:
                    self._record(vote, [])

    @property
    def future_buffer(self) -> tuple[int, int, int]:
        """(messages, bytes) buffered for the next height, and how many the caps dropped so far."""
        return len(self._future), self._future.total_bytes, self._future.dropped

    # -- construction from storage ---------------------------------------------------------------

    @classmethod
    def recover(
        cls,
        *,
        validators: ValidatorSet,
        key: KeyPair,
        app: Application,
        blocks: BlockSource,
        height: int,
        wal: Sequence[WalRecord],
        config: ConsensusConfig | None = None,
    ) -> Consensus:
        """A machine restarted at ``height`` (last committed + 1) from its persisted WAL records."""
        last_signed: SignedRecord | None = None
        lock: LockRecord | None = None
        for rec in wal:
            if isinstance(rec, SignedRecord):
                key_new = (rec.height, rec.round, rec.step)
                if last_signed is None or key_new >= (
                    last_signed.height,
                    last_signed.round,
                    last_signed.step,
                ):
                    last_signed = rec
            elif lock is None or rec.height >= lock.height:
                lock = rec
        machine = cls(
            validators=validators,
            key=key,
            app=app,
            blocks=blocks,
            height=height,
            config=config,
            last_signed=last_signed,
            lock=lock,
        )
        if last_signed is not None and last_signed.height == height:
            machine.round = last_signed.round
        # each vote once (the last-signed record repeats the WAL's last signed record)
        machine._signed_before = list(
            dict.fromkeys(
                rec
                for rec in wal
                if isinstance(rec, SignedRecord)
                and rec.height == height
                and rec.step in (Step.PREVOTE, Step.PRECOMMIT)
            )
        )
        return machine

    # -- inputs ----------------------------------------------------------------------------------

    def start(self, now: int) -> list[Effect]:
        """Begin (or resume after a restart) the current height at the current round."""
        out: list[Effect] = []
        self._start_round(self.round, now, out)
        # resume where a crash left us: re-send every vote already signed at this height (Ed25519
        # is deterministic, so these are the same bytes) and do not vote again at those steps
        for rec in self._signed_before:
            self._resend_signed(rec, out)
            if rec.round == self.round and rec.step > self.step:
                self.step = rec.step
        self._signed_before = []
        self._set_timer(TimerKind.REBROADCAST, 0, now, out)
        self._evaluate(now, out)
        return out

    def on_timer(self, kind: TimerKind, height: int, round_: int, now: int) -> list[Effect]:
        out: list[Effect] = []
        if height != self.height:
            return out
        if kind is TimerKind.NEW_HEIGHT:
            if self.step is Step.NEW_HEIGHT:
                self._start_round(0, now, out)
                self._decided_at = self._start_at = None
        elif kind is TimerKind.REBROADCAST:
            self._rebroadcast(now, out)
        elif round_ != self.round:
            return out
        elif kind is TimerKind.PROPOSE and self.step is Step.PROPOSE:
            self._vote(VoteType.PREVOTE, NIL, now, out)  # L57
        elif kind is TimerKind.PREVOTE and self.step is Step.PREVOTE:
            self._vote(VoteType.PRECOMMIT, NIL, now, out)  # L61
        elif kind is TimerKind.PRECOMMIT and self.step is not Step.NEW_HEIGHT:
            self._start_round(round_ + 1, now, out)  # L65
        self._evaluate(now, out)
        return out

    def on_message(self, sender: str, msg: ConsensusMessage, now: int) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(msg, BlockRequest):
            self._answer_request(sender, msg, now, out)
            return out
        if isinstance(msg, BlockResponse):
            for sb in msg.blocks:
                if sb.height == self.height and self._verified(sb):
                    out.append(Decided(sb.height, sb.block, sb.commit))
                    self._release_held(sb, now, out)
                    self._advance_height(now, out)
            return out
        if msg.height < self.height:
            return out
        if msg.height > self.height:
            if msg.height == self.height + 1 and not self._future.has(msg):
                if not self._signed_by_validator(msg):
                    self.refused_future += 1  # an outsider's (or forged) message: not kept
                    return out
                self._future.add(msg)
            self._maybe_request_sync(sender, now, out)
            return out
        self._record(msg, out)
        if self._waiting_adaptively() and 0 in self._h.proposals:
            self._start_round(0, now, out)  # the proposer has spoken: waiting only adds latency
            self._decided_at = self._start_at = None
        self._evaluate(now, out)
        return out

    def on_backlog(self, backlog: Backlog, now: int) -> list[Effect]:
        """The application's backlog after a change. With adaptive cadence, an earlier start of
        the waiting height (see the module rules); otherwise nothing."""
        out: list[Effect] = []
        adaptive = self._config.adaptive
        if adaptive is None or not self._waiting_adaptively():
            return out
        assert self._decided_at is not None and self._start_at is not None
        starts = []
        if backlog.pending > 0:
            if self._busy_since is None:  # the first transaction of this wait: gather from now
                self._busy_since = max(now, self._decided_at)
            self._full_seen = self._full_seen or backlog.full
            wait = adaptive.full_ms if backlog.full else adaptive.busy_ms
            starts.append(self._busy_since + wait)
        if backlog.due_ms is not None:
            starts.append(backlog.due_ms)
        if not starts:
            return out
        at = max(now, min(starts))
        if at < self._start_at:
            self._start_at = at
            out.append(SetTimer(TimerKind.NEW_HEIGHT, self.height, 0, at))
        return out

    @property
    def waiting_for_work(self) -> bool:
        """In the wait after a decision, with adaptive cadence: :meth:`on_backlog` may start the
        next height earlier."""
        return self._waiting_adaptively()

    def backlog_wanted(self) -> int:
        """What one more admitted transaction's report (:meth:`on_backlog`) can do, in one call (a
        simulation asks at every admission): ``2`` it may move the next height's start (waiting
        adaptively, and not yet told of pending transactions in this wait); ``1`` something only
        if the backlog is full (told of pending ones already: what is due is a function of the
        state, which changes only with a decision, and a later ``now`` only starts later); ``0``
        nothing (not waiting adaptively, or told of a full block already). A driver may skip the
        reports this rules out; after a decision it always reports, the state — and with it what
        is due — having changed."""
        if not self._waiting_adaptively():
            return 0
        if self._busy_since is None:
            return 2
        return 0 if self._full_seen else 1

    def _waiting_adaptively(self) -> bool:
        """In the wait after a decision, with adaptive cadence."""
        return (
            self._config.adaptive is not None
            and self.step is Step.NEW_HEIGHT
            and self._decided_at is not None
        )

    # -- recording -------------------------------------------------------------------------------

    def _record(
        self, msg: Proposal | Vote, out: list[Effect], *, signed_here: bool = False
    ) -> None:
        """Take a proposal or vote into this height's tally (``signed_here``: this node just
        signed it with its own key, so its signature is not checked again)."""
        h = self._h
        if isinstance(msg, Proposal):
            old = h.proposals.get(msg.round)
            if old is not None and old.signature == msg.signature and old.block == msg.block:
                return
            if not verify_proposal(self._validators, msg, signed_here=signed_here):
                return
            if old is not None:
                if (old.block_hash, old.valid_round) != (msg.block_hash, msg.valid_round):
                    self._evidence(DuplicateProposal(old, msg), (msg.proposer, msg.round, 0), out)
                return
            h.proposals[msg.round] = msg
            h.blocks.setdefault(msg.block_hash, msg.block)
            h.round_senders.setdefault(msg.round, set()).add(msg.proposer)
            return
        same_value = h.by_value.setdefault((msg.vote_type, msg.round, msg.block_hash), {})
        if msg.validator in same_value:
            return  # a duplicate (signatures are deterministic: same value, same bytes)
        signer_key = (msg.vote_type, msg.round, msg.validator)
        if h.values_per_signer.get(signer_key, 0) >= _MAX_VALUES_PER_SIGNER:
            return
        if not verify_vote(self._validators, msg, signed_here=signed_here):
            return
        h.values_per_signer[signer_key] = h.values_per_signer.get(signer_key, 0) + 1
        same_value[msg.validator] = msg
        first_votes = h.votes.setdefault((msg.vote_type, msg.round), {})
        old_vote = first_votes.get(msg.validator)
        if old_vote is not None:
            key = (msg.validator, msg.round, int(msg.vote_type))
            self._evidence(DuplicateVote(old_vote, msg), key, out)
            return
        first_votes[msg.validator] = msg
        h.round_senders.setdefault(msg.round, set()).add(msg.validator)

    def _evidence(self, ev: Evidence, key: tuple[int, int, int], out: list[Effect]) -> None:
        if key in self._h.evidence_keys:
            return
        self._h.evidence_keys.add(key)
        self.evidence.append(ev)
        out.append(EvidenceFound(ev))

    def _rebroadcast(self, now: int, out: list[Effect]) -> None:
        """Gossip what this node knows of the current height, as Tendermint's liveness assumes.

        Re-sent: this node's own messages of every round, every proposal and vote of the current
        and previous round (relayed: the network may have lost a peer's copy), and the proposal
        and prevotes that justify this node's valid value (the "proof of lock" others need for
        L28). Receivers drop exact duplicates before checking signatures; a lagging peer learns
        from these messages that it must sync."""
        h = self._h
        recent = (self.round - 1, self.round)
        pol_round = self._valid_round
        pol_value = block_hash(self._valid_block) if self._valid_block is not None else NIL
        for rnd in sorted(h.proposals):
            prop = h.proposals[rnd]
            if prop.proposer == self.index or rnd in recent or rnd == pol_round:
                out.append(Broadcast(prop))
        for key in sorted(h.by_value):
            vote_type, rnd, value = key
            is_pol = vote_type is VoteType.PREVOTE and rnd == pol_round and value == pol_value
            for idx in sorted(h.by_value[key]):
                if idx == self.index or rnd in recent or is_pol:
                    out.append(Broadcast(h.by_value[key][idx]))
        self._set_timer(TimerKind.REBROADCAST, 0, now, out)

    def _maybe_request_sync(self, sender: str, now: int, out: list[Effect]) -> None:
        if now - self._last_sync_request >= self._config.sync_interval_ms:
            self._last_sync_request = now
            out.append(Send(sender, BlockRequest(self.height, self._config.sync_batch)))

    # -- actions ---------------------------------------------------------------------------------

    def _set_timer(self, kind: TimerKind, round_: int, now: int, out: list[Effect]) -> None:
        at = now + self._config.timeout(kind, round_)
        out.append(SetTimer(kind, self.height, round_, at))

    def _may_sign(self, round_: int, step: Step, value: bytes) -> bool:
        last = self._last_signed
        if last is None:
            return True
        new = (self.height, round_, int(step))
        old = (last.height, last.round, int(last.step))
        if new < old or (new == old and last.value != value):
            self.refused_signatures += 1
            return False
        return True

    def _persist_signed(self, round_: int, step: Step, value: bytes, out: list[Effect]) -> None:
        rec = SignedRecord(self.height, round_, step, value)
        if rec != self._last_signed:
            out.append(Persist(rec))
            self._last_signed = rec

    def _start_round(self, round_: int, now: int, out: list[Effect]) -> None:  # L11
        self.round = round_
        self.step = Step.PROPOSE
        if self._validators.proposer(self.height, round_) == self.index:
            if self._valid_block is not None:
                block, vr = self._valid_block, self._valid_round
            else:
                block, vr = self._app.make_block(self.height, round_, now), -1
            value = block_hash(block)
            if self._may_sign(round_, Step.PROPOSE, value):
                self._persist_signed(round_, Step.PROPOSE, value, out)
                prop = sign_proposal(
                    self._key,
                    height=self.height,
                    round_=round_,
                    block=block,
                    valid_round=vr,
                    proposer=self.index,
                )
                out.append(Broadcast(prop))
                self._record(prop, out, signed_here=True)
        self._set_timer(TimerKind.PROPOSE, round_, now, out)

    def _resend_signed(self, last: SignedRecord, out: list[Effect]) -> None:
        """Re-create and broadcast the vote of ``last`` (Ed25519 is deterministic: same bytes)."""
        vote_type = VoteType.PREVOTE if last.step is Step.PREVOTE else VoteType.PRECOMMIT
        vote = sign_vote(
            self._key,
            vote_type=vote_type,
            height=last.height,
            round_=last.round,
            value=last.value,
            validator=self.index,
        )
        out.append(Broadcast(vote))
        self._record(vote, out, signed_here=True)

    def _vote(self, vote_type: VoteType, value: bytes, now: int, out: list[Effect]) -> None:
        step = Step.PREVOTE if vote_type is VoteType.PREVOTE else Step.PRECOMMIT
        self.step = step
        if not self._may_sign(self.round, step, value):
            last = self._last_signed
            if last is not None and (last.height, last.round, last.step) == (
                self.height,
                self.round,
                step,
            ):
                self._resend_signed(last, out)  # we already voted here: say the same again
            return
        self._persist_signed(self.round, step, value, out)
        vote = sign_vote(
            self._key,
            vote_type=vote_type,
            height=self.height,
            round_=self.round,
            value=value,
            validator=self.index,
        )
        out.append(Broadcast(vote))
        self._record(vote, out, signed_here=True)

    def _persist_lock(self, out: list[Effect]) -> None:
        proof: tuple[Vote, ...] = ()
        if self._valid_block is not None:
            key = (VoteType.PREVOTE, self._valid_round, block_hash(self._valid_block))
            by_signer = self._h.by_value.get(key, {})
            proof = tuple(by_signer[i] for i in sorted(by_signer))
        out.append(
            Persist(
                LockRecord(
                    self.height,
                    self._locked_round,
                    self._locked_block or b"",
                    self._valid_round,
                    self._valid_block or b"",
                    proof,
                )
            )
        )

    def _signed_by_validator(self, msg: Proposal | Vote) -> bool:
        if isinstance(msg, Proposal):
            return verify_proposal(self._validators, msg)
        return verify_vote(self._validators, msg)

    def _valid(self, value: bytes, now: int | None, out: list[Effect], round_: int = 0) -> bool:
        """valid(v) of the paper: the application's clock-free rules, cached per value. With
        ``now`` (a fresh proposal, L22 only) the block's time is judged against this node's clock
        too (see the module rules)."""
        h = self._h
        block = h.blocks.get(value)
        if block is None:
            return False  # not known yet: judged when its proposal arrives, never cached
        valid = h.validity.get(value)
        if valid is None:
            error = self._app.block_error(self.height, block, None)
            valid = h.validity[value] = error is None
            if error is not None:
                self._refused(value, error, out)
        if not valid or now is None:
            return valid
        error = self._app.block_error(self.height, block, now, round_=round_)
        if error is not None:
            self._refused(value, error, out)
            return False
        return True

    def _refused(self, value: bytes, error: InvalidInput, out: list[Effect]) -> None:
        props = [p for _, p in sorted(self._h.proposals.items()) if p.block_hash == value]
        rnd, proposer = (props[0].round, props[0].proposer) if props else (-1, -1)
        detail = str(error)
        out.append(ProposalRefused(self.height, rnd, proposer, value, error.reason, detail))

    def _decide(self, round_: int, value: bytes, now: int, out: list[Effect]) -> None:  # L49
        votes = list(self._h.by_value[(VoteType.PRECOMMIT, round_, value)].values())
        commit = commit_from_votes(self.height, round_, value, votes)
        out.append(Decided(self.height, self._h.blocks[value], commit))
        self._release_held(SyncedBlock(self.height, self._h.blocks[value], commit), now, out)
        self._advance_height(now, out)

    def _advance_height(self, now: int, out: list[Effect]) -> None:
        self.height += 1
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self._locked_round, self._locked_block = -1, None
        self._valid_round, self._valid_block = -1, None
        self._h = _Height()
        self._set_timer(TimerKind.NEW_HEIGHT, 0, now, out)
        self._decided_at, self._start_at = now, now + self._config.commit_ms
        self._busy_since, self._full_seen = None, False
        self._set_timer(TimerKind.REBROADCAST, 0, now, out)
        for msg in self._future.take():
            if msg.height == self.height:
                self._record(msg, out)
        if self._config.adaptive is not None and 0 in self._h.proposals:
            # the round-0 proposal came early: start once the driver has handled the decision
            self._start_at = now
            out.append(SetTimer(TimerKind.NEW_HEIGHT, self.height, 0, now))

    # -- the upon-rules --------------------------------------------------------------------------

    def _evaluate(self, now: int, out: list[Effect]) -> None:
        while self.step is not Step.NEW_HEIGHT and self._fire_one(now, out):
            pass

    def _fire_one(self, now: int, out: list[Effect]) -> bool:
        h, q, r = self._h, self._quorum, self.round
        # L49: a proposal's value with 2f+1 precommits in any round -> decide (the first in
        # (type, round, value) order; only values with a quorum of precommits are sorted)
        decidable = [
            key
            for key, votes in h.by_value.items()
            if len(votes) >= q and key[0] is VoteType.PRECOMMIT and key[2] != NIL
        ]
        for _, rnd, value in sorted(decidable) if len(decidable) > 1 else decidable:
            if self._valid(value, None, out):
                self._decide(rnd, value, now, out)
                return True
        # L55: f+1 validators are in a later round -> skip to it.
        later = [
            rnd
            for rnd, senders in h.round_senders.items()
            if rnd > r and len(senders) >= self._validators.skip_threshold
        ]
        if later:
            self._start_round(max(later), now, out)
            return True
        prop = h.proposals.get(r)
        if self.step is Step.PROPOSE and prop is not None:
            v, vr = prop.block_hash, prop.valid_round
            if vr == -1:  # L22: a fresh proposal, the only one judged against our clock
                ok = self._valid(v, now, out, r) and (
                    self._locked_round == -1 or self._locked_block == prop.block
                )
                self._vote(VoteType.PREVOTE, v if ok else NIL, now, out)
                return True
            if 0 <= vr < r and h.count(VoteType.PREVOTE, vr, v) >= q:  # L28: proof-of-lock
                ok = self._valid(v, None, out) and (
                    self._locked_round <= vr or self._locked_block == prop.block
                )
                self._vote(VoteType.PREVOTE, v if ok else NIL, now, out)
                return True
        if (
            self.step is Step.PREVOTE
            and r not in h.prevote_timer_rounds
            and h.count(VoteType.PREVOTE, r, None) >= q
        ):  # L34
            h.prevote_timer_rounds.add(r)
            self._set_timer(TimerKind.PREVOTE, r, now, out)
            return True
        if (
            prop is not None
            and self.step >= Step.PREVOTE
            and r not in h.l36_rounds
            and h.count(VoteType.PREVOTE, r, prop.block_hash) >= q
            and self._valid(prop.block_hash, None, out)
        ):  # L36
            h.l36_rounds.add(r)
            if self.step is Step.PREVOTE:
                self._locked_round, self._locked_block = r, prop.block
                self._valid_round, self._valid_block = r, prop.block
                self._persist_lock(out)
                self._vote(VoteType.PRECOMMIT, prop.block_hash, now, out)
            else:
                self._valid_round, self._valid_block = r, prop.block
                self._persist_lock(out)
            return True
        if self.step is Step.PREVOTE and h.count(VoteType.PREVOTE, r, NIL) >= q:  # L44
            self._vote(VoteType.PRECOMMIT, NIL, now, out)
            return True
        if r not in h.precommit_timer_rounds and h.count(VoteType.PRECOMMIT, r, None) >= q:  # L47
            h.precommit_timer_rounds.add(r)
            self._set_timer(TimerKind.PRECOMMIT, r, now, out)
            return True
        return False
