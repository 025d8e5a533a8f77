"""Federated rounds over libp2p: the round driver of a daemon with ``training.mode = "federated"``.

The pure protocol is :mod:`forecasting.secagg` (masks, the aggregator's state machine) and
:mod:`forecasting.federated` (updates, the model); this module is its network shell. Rules
(``docs/federated.md``, "Rounds over libp2p"):

* **Periods and the aggregator.** Node time is cut into periods of ``training.round_every_s``
  (aligned to multiples of it in unix time). The aggregator of period ``p`` is the validator
  ``genesis.validators[p mod n_validators]`` (:func:`aggregator_of`): everyone computes it, and a
  dead validator only costs the periods it would have aggregated. A daemon aggregates only
  periods that begin after it started (it first connects to its peers). The round it runs is the one
  after the last committed model (``len(state.models) + 1``), whose previous model is the
  ledger's ``last_model``.
* **Keys.** A member's X25519 key is its Ed25519 identity key converted by libsodium
  (``crypto_sign_ed25519_sk_to_curve25519`` / ``…_pk_to_curve25519``, through PyNaCl): every
  member's X25519 public key follows from the genesis member list, nothing is announced.
* **Protocol** ``/gridnode/<community>/fedround/1.0.0`` (acknowledged requests; canonical msgpack;
  members named by their Ed25519 public key hex; every message at most :data:`MAX_FED_BYTES`):

  - ``["gn.fed.invite", 1, round]`` (aggregator → member) → ``["gn.fed.join", 1, step_s]``: the
    member joins with the step of its meter history, or declines with ``0`` (too little history,
    not federated, or it lacks the previous model's bytes);
  - ``["gn.fed.spec", 1, round, attempt, step_s, [member…], threshold, degree]`` →
    ``["gn.fed.masked", 1, digest, masked]``: the member checks the spec (its round is the next
    one, every key a genesis member, itself among them), computes its update on its own meter
    history and answers it masked (:func:`forecasting.secagg.mask_update`);
  - ``["gn.fed.unmask", 1, digest, [received…], [dropped…], [[member, [dropped…]]…]]`` →
    ``["gn.fed.reveal", 1, digest, [[dropped, seed]…]]`` (:func:`forecasting.secagg.reveal_seeds`;
    its refusals are the member's);
  - ``["gn.fed.check", 1, digest]`` (member → member) → ``["gn.fed.checked", 1, digest, 0|1]``:
    1 when the asked member answered that attempt's spec with its masked update. Before it
    reveals a pair seed with a member the aggregator calls dropped, a member asks that member
    (:data:`CHECK_S` wall seconds); one that says it delivered is not unmasked behind its back
    (the reveal is refused, the attempt restarts without the refusers). A member that is really
    gone cannot answer, and its seeds are revealed;
  - ``["gn.fed.getmodel", 1, hash]`` (anyone → anyone) → the model's content bytes
    (:meth:`forecasting.federated.CommunityModel.content`) or REJECTED ``unknown_model``.

  The aggregator asks, so every update and reveal arrives on a stream authenticated as its
  member (the noise handshake binds the peer id to the Ed25519 key); the pure core's ``member``
  field is filled from that, never from the bytes.
* **Deadlines** on the node clock (trio's): :class:`FedTimeouts` bound the invitation (the
  aggregator keeps the whole window open, so a slow member can still join), the collection and
  the reveal phase; after each, the state machine's ``close_…`` decides: complete,
  ask reveals, restart with the survivors, or abort. A round never waits without a deadline.
* **Commit and adoption.** A completed round's model is committed by the aggregator
  (:func:`gridnode.core.ledger.sign_model`: hash, round, previous, contributors, the summed
  validation integers, the feature version). Every member (and the aggregator) adopts the
  ledger's ``last_model`` once committed: it fetches the bytes (the aggregator first, then the
  other validators and members), checks that their SHA-256 is the committed hash and that they
  decode, and hands the model to its household driver.
* **Bad bytes** from peers raise :class:`~market.errors.InvalidInput` in a handler (the net layer
  counts misbehaviour against the sender), or — for answers to the aggregator's own requests — are
  reported to the peer book (:meth:`NetHost.report_misbehaviour`) and the member is treated as
  dropped. Nothing a peer sends stops a round beyond its deadline.

Known limits: the check above protects a member the aggregator falsely calls dropped only while
that member is reachable by its neighbours (an aggregator that also cuts it off from all of them
could still unmask it: ``docs/federated.md``, threat model); one round at a time; the update is computed on the trio thread (≈ 10 ms for a year of hourly data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from nacl.signing import SigningKey, VerifyKey

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import MODEL_VALIDATION_FIELDS, ZERO_HASH, Genesis, sign_model
from gridnode.net.host import peer_id_of_hex, public_hex_of
from market.codec import pack, unpack
from market.errors import (
    InvalidInput,
    LedgerReason,
    NetworkError,
    PeerMisbehaviour,
    Rejected,
    UsageError,
    WireReason,
    is_misbehaviour,
)

if TYPE_CHECKING:
    from forecasting.dp import DpBudget, DpSpend
    from forecasting.federated import CommunityModel
    from forecasting.secagg import Abort, Complete, Restart, RoundSpec
    from forecasting.series import MeterHistory
    from gridnode.daemon.node import DaemonNode

__all__ = [
    "DP_SPEND_FILE",
    "MAX_FED_BYTES",
    "PROTOCOL",
    "ROUNDS_FILE",
    "FedTimeouts",
    "FederationDriver",
    "RoundReport",
    "aggregator_of",
    "x25519_of",
    "x25519_public_of",
]

log = logging.getLogger("gridnode")

PROTOCOL: Final = "fedround"
#: a federated-round message (a masked update is 8 bytes per entry: 25,832 at hourly steps)
MAX_FED_BYTES: Final = 512 * 1024
#: days of meter history an update is computed on
HISTORY_DAYS: Final = 365
#: a request that failed on the network is sent again after this long, until its phase's deadline
_RETRY_S: Final = 0.5
_TAGS: Final = ("gn.fed.invite", "gn.fed.spec", "gn.fed.unmask", "gn.fed.getmodel", "gn.fed.check")
#: wall seconds a member waits for a neighbour's answer to ``gn.fed.check`` before revealing
CHECK_S: Final = 2.0
#: the aggregator appends one JSON line per round it ran (:meth:`RoundReport.record`) to this file
#: in its data directory (read by the real-daemon simulation engine, ``sims.daemon_collect``)
ROUNDS_FILE: Final = "fedrounds.jsonl"
#: a member's privacy account (:class:`forecasting.dp.DpSpend` as JSON) in its data directory:
#: written before each DP update leaves the node, so a restart never forgets what was spent
DP_SPEND_FILE: Final = "dpspend.json"
#: the spec's noise multiplier is carried in millionths
_Z_UNIT: Final = 1_000_000


def aggregator_of(genesis: Genesis, period: int) -> str:
    """The validator that aggregates the round of ``period`` (module rules)."""
    return genesis.validators[period % len(genesis.validators)]


def x25519_of(key: KeyPair) -> tuple[bytes, bytes]:
    """This identity's X25519 ``(private, public)`` (libsodium's Ed25519 → Curve25519)."""
    private = SigningKey(key.seed).to_curve25519_private_key()
    return bytes(private), bytes(private.public_key)


def x25519_public_of(public_hex: str) -> bytes:
    """A member's X25519 public key from its Ed25519 public key (hex)."""
    return bytes(VerifyKey(bytes.fromhex(public_hex)).to_curve25519_public_key())


@dataclass(frozen=True, slots=True)
class FedTimeouts:
    """Phase deadlines of a round, seconds of the node clock (trio's)."""

    invite_s: float = 5.0
    collect_s: float = 20.0
    reveal_s: float = 10.0
    fetch_s: float = 5.0


@dataclass(slots=True)
class RoundReport:
    """What one round the aggregator ran did (the benchmark and the logs read it)."""

    round: int
    period: int
    invited: int = 0
    answered: int = 0  # members that answered the invitation in its window (joined or declined)
    joined: int = 0
    contributors: int = 0
    attempts: int = 0
    outcome: str = ""  # "committed", "aborted: …", "refused: …"
    model: bytes = ZERO_HASH
    wall_s: float = 0.0
    bytes_in: int = 0  # payload bytes of the members' answers
    bytes_out: int = 0  # payload bytes of the aggregator's requests
    #: payload bytes each member answered with in the round (join, masked update, reveals)
    member_bytes: dict[str, int] = field(default_factory=dict)
    #: differential privacy of the round (0: none): σ / C, and the ε this round alone spends at
    #: ``dp_delta`` for each contributor (its total is in each member's :data:`DP_SPEND_FILE`)
    dp_noise_multiplier: float = 0.0
    dp_delta: float = 0.0
    dp_epsilon_round: float = 0.0

    def record(self, round_every_s: int) -> dict[str, Any]:
        """The report as one JSON object (a line of :data:`ROUNDS_FILE`); ``at_s``: the node
        second its period began (the meter history it trained on ends about there)."""
        return {
            "round": self.round,
            "period": self.period,
            "at_s": self.period * round_every_s,
            "outcome": self.outcome,
            "model": self.model.hex() if self.outcome == "committed" else "",
            "invited": self.invited,
            "answered": self.answered,
            "joined": self.joined,
            "contributors": self.contributors,
            "attempts": self.attempts,
            "wall_s": round(self.wall_s, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "max_bytes_per_member": max(self.member_bytes.values(), default=0),
        } | (
            {
                "dp_noise_multiplier": round(self.dp_noise_multiplier, 6),
                "dp_delta": self.dp_delta,
                "dp_epsilon_round": round(self.dp_epsilon_round, 6),
            }
            if self.dp_noise_multiplier
            else {}
        )


def _refuse(reason: WireReason, what: str, detail: str = "") -> InvalidInput:
    return InvalidInput(reason=reason, subject=f"fedround {what}", found=detail[:80])


def _decode(body: bytes, what: str) -> list[Any]:
    value = unpack(body, what=f"fedround {what}", max_bytes=MAX_FED_BYTES)
    if not isinstance(value, list) or len(value) < 2 or value[1] != 1:
        raise _refuse(WireReason.BAD_SHAPE, what, "[tag, 1, …]")
    return value


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _hexes(value: Any, allowed: frozenset[str], what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _refuse(WireReason.BAD_TYPE, what, "an array of member keys")
    if not set(value) <= allowed or len(set(value)) != len(value):
        raise _refuse(WireReason.BAD_CONTRIBUTION, what, "keys that are not distinct members")
    return list(value)


@dataclass(slots=True)
class _MemberRound:
    """What a member keeps of a round attempt between its masked update and the reveal."""

    spec: RoundSpec
    x_of: dict[bytes, str] = field(default_factory=dict)  # X25519 public -> member hex


class FederationDriver:
    """Federated rounds for one daemon (see the module rules)."""

    def __init__(
        self,
        node: DaemonNode,
        *,
        round_every_s: int,
        history: Callable[[int], MeterHistory | None],
        timeouts: FedTimeouts = FedTimeouts(),
        on_model: Callable[[CommunityModel], None] | None = None,
    ) -> None:
        self.node = node
        self.genesis = node.genesis
        self.round_every_s = round_every_s
        self.timeouts = timeouts
        self._history = history  # node seconds -> this household's meter history (None: none)
        self.on_model = on_model
        self.me = node.key.public_hex
        self._x_private, self.x_public = x25519_of(node.key)
        self._x_members = {h: x25519_public_of(h) for h in self.genesis.members}
        self._member_of_x = {x: h for h, x in self._x_members.items()}
        #: model content bytes by hash (what this node serves and adopted)
        self.models: dict[bytes, bytes] = {}
        self.adopted: CommunityModel | None = None
        self._rounds: dict[bytes, _MemberRound] = {}  # digest -> member state (few, bounded)
        self.reports: list[RoundReport] = []
        self._ran_period = -1
        self._adopt_failed: dict[bytes, int] = {}
        self.refused = 0  # fed messages this node refused (all reasons)
        self._changed = trio.Event()
        #: differential privacy (``training.dp_*``): this household's total budget (``None``: it
        #: sets none; it still adds the noise a DP round's spec asks for) and the clip norm of
        #: the rounds this node aggregates
        self.dp_budget: DpBudget | None = None
        config = node.config
        self.dp_clip_norm = int(config.dp_clip_norm)
        if config.dp_epsilon is not None:
            from forecasting.dp import DpBudget  # noqa: PLC0415

            self.dp_budget = DpBudget(config.dp_epsilon, config.dp_delta, config.dp_rounds)
        self._dp_spend: DpSpend | None = None  # loaded from DP_SPEND_FILE on first use

    # ------------------------------------------------------------------ wiring
    def register(self) -> None:
        self.node.net.on_request(PROTOCOL, self._on_request)
        self.node.runtime.listeners.append(lambda _event: self._changed.set())

    async def run(self) -> None:
        """Adopt committed models and aggregate this validator's periods, until cancelled."""
        clock = self.node.clock
        self._ran_period = clock.now_ms() // 1000 // self.round_every_s  # module rules
        while True:
            await self._adopt_latest()
            now_s = clock.now_ms() // 1000
            period = now_s // self.round_every_s
            if (
                period != self._ran_period
                and aggregator_of(self.genesis, period) == self.me
                and self.node.runtime.is_validator
            ):
                self._ran_period = period
                try:
                    report = await self.aggregate(period)
                    log.info(
                        "federated round %d: %s, %d of %d invited contributed in %.2f s "
                        "(%d attempts, %d bytes in, %d bytes out; %d answered, %d joined)",
                        report.round, report.outcome, report.contributors, report.invited,
                        report.wall_s, report.attempts, report.bytes_in, report.bytes_out,
                        report.answered, report.joined,
                    )  # fmt: skip
                    self._write_record(report)
                except Exception:  # a bug in a round must never stop the node
                    log.exception("federated round failed")
            next_ms = (period + 1) * self.round_every_s * 1000
            self._changed = trio.Event()
            with trio.move_on_after(min(clock.seconds_until(next_ms), 1.0)):
                await self._changed.wait()

    def _write_record(self, report: RoundReport) -> None:
        """Append the round's record to :data:`ROUNDS_FILE` (a failing disk is logged, never
        stops the node)."""
        try:
            path = self.node.config.data_dir / ROUNDS_FILE
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(report.record(self.round_every_s), sort_keys=True) + "\n")
        except OSError as exc:
            log.warning("federated: cannot record round %d: %s", report.round, exc)

    # ------------------------------------------------------------------ privacy account
    @property
    def dp_spend(self) -> DpSpend:
        """This member's privacy account (:data:`DP_SPEND_FILE`; an unreadable file counts as a
        spent budget: the member then contributes to no DP round rather than forget a spend)."""
        from forecasting.dp import DpSpend  # noqa: PLC0415

        if self._dp_spend is None:
            path = self.node.config.data_dir / DP_SPEND_FILE
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                rounds, mu2 = raw["rounds"], raw["mu_squared"]
                if not (_ints(rounds) and isinstance(mu2, float | int) and mu2 >= 0):
                    raise ValueError("bad fields")
                self._dp_spend = DpSpend(rounds, float(mu2))
            except FileNotFoundError:
                self._dp_spend = DpSpend()
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("federated: %s unreadable (%s): no DP contributions", path, exc)
                self._dp_spend = DpSpend(0, math.inf)
        return self._dp_spend

    def _record_spend(self, spend: DpSpend) -> None:
        """Persist ``spend`` before the update that spends it leaves the node (raises on a
        failing disk: then the update is not sent)."""
        from gridnode.files import write_atomic  # noqa: PLC0415

        delta = self.dp_budget.delta if self.dp_budget is not None else 1e-5
        record = {
            "rounds": spend.rounds,
            "mu_squared": spend.mu_squared,
            "epsilon": spend.epsilon(delta),
            "delta": delta,
        }
        write_atomic(self.node.config.data_dir / DP_SPEND_FILE, json.dumps(record) + "\n")
        self._dp_spend = spend

    def _dp_of_spec(self) -> tuple[float, int] | None:
        """The DP this node asks of the rounds it aggregates: ``(σ/C, C)`` (``None``: none)."""
        if self.dp_budget is None:
            return None
        z = round(self.dp_budget.noise_multiplier * _Z_UNIT) / _Z_UNIT
        return z, self.dp_clip_norm

    # ------------------------------------------------------------------ member side
    def _next_round(self) -> int:
        return len(self.node.runtime.state.models) + 1

    def _previous(self) -> CommunityModel | bool | None:
        """The model the next round builds on: ``None`` before the first, ``False`` when this node
        has not adopted the last committed one yet (it cannot take part)."""
        last = self.node.runtime.state.last_model
        if last == ZERO_HASH:
            return None
        if self.adopted is not None and self.adopted.hash == last:
            return self.adopted
        return False

    async def _on_request(self, peer_id: str, body: bytes) -> bytes:
        value = _decode(body, "request")
        tag = value[0]
        if tag == "gn.fed.getmodel":
            return self._on_get_model(value)
        if tag not in _TAGS:
            raise _refuse(WireReason.BAD_TAG, "request", repr(tag))
        sender = public_hex_of(peer_id)
        if tag == "gn.fed.check":
            if sender not in self.genesis.member_set:
                raise _refuse(WireReason.NOT_PERMITTED, "check", "members ask members")
            return self.on_check(value)
        if sender not in self.genesis.validators:
            raise _refuse(WireReason.NOT_PERMITTED, str(tag), "rounds are run by validators")
        if tag == "gn.fed.invite":
            return self.on_invite(value)
        if tag == "gn.fed.spec":
            return self.on_spec(value)
        return await self.on_unmask(value)

    def on_check(self, value: list[Any]) -> bytes:
        """Did this member send its masked update for attempt ``digest``? (module rules)"""
        if len(value) != 3 or not isinstance(value[2], bytes) or len(value[2]) != 32:
            raise _refuse(WireReason.BAD_SHAPE, "check")
        return pack(["gn.fed.checked", 1, value[2], int(value[2] in self._rounds)])

    async def _says_delivered(self, member: str, digest: bytes) -> bool:
        """Ask ``member`` whether it delivered its masked update for ``digest``; ``False`` when it
        does not answer within :data:`CHECK_S` (gone) or answers anything else."""
        if member == self.me:
            return digest in self._rounds
        try:  # the request's own timeout: NetworkError when the member does not answer in time
            answer = await self.node.net.request(
                peer_id_of_hex(member), PROTOCOL, pack(["gn.fed.check", 1, digest]),
                timeout_s=CHECK_S,
            )  # fmt: skip
            reply = _decode(answer, "checked")
        except (Rejected, NetworkError, InvalidInput, UsageError):
            return False
        return (
            len(reply) == 4
            and reply[0] == "gn.fed.checked"
            and reply[2] == digest
            and (reply[3] == 1)
        )

    def _contribution_history(self) -> MeterHistory | None:
        from forecasting.federated import MIN_CONTRIBUTE_DAYS  # noqa: PLC0415

        try:
            history = self._history(self.node.clock.now_ms() // 1000)
        except (InvalidInput, UsageError) as exc:
            log.info("federated: no meter history to contribute: %s", exc)
            return None
        if history is None or history.steps < MIN_CONTRIBUTE_DAYS * history.steps_per_day:
            return None
        return history

    def on_invite(self, value: list[Any]) -> bytes:
        if len(value) != 3 or not _ints(value[2]):
            raise _refuse(WireReason.BAD_SHAPE, "invite")
        history = self._contribution_history()
        joins = (
            value[2] == self._next_round()
            and self.me in self.genesis.member_set
            and history is not None
            and self._previous() is not False
            and (
                self.dp_budget is None
                or self.dp_spend.allows(self.dp_budget, self.dp_budget.noise_multiplier)
            )
        )
        step_s = history.step_s if joins and history is not None else 0
        log.info("federated: round %d invitation: %s", value[2], "joined" if step_s else "declined")
        return pack(["gn.fed.join", 1, step_s])

    def on_spec(self, value: list[Any]) -> bytes:
        import numpy as np  # noqa: PLC0415

        from forecasting.federated import (  # noqa: PLC0415
            CommunityModel,
            Layout,
            dp_scale,
            local_update,
        )
        from forecasting.secagg import (  # noqa: PLC0415
            RoundSpec,
            SecAggError,
            clip_l2,
            gaussian_noise,
            mask_update,
        )

        if len(value) not in (8, 9) or not _ints(value[2], value[3], value[4], value[6], value[7]):
            raise _refuse(WireReason.BAD_SHAPE, "spec")
        _, _, rnd, attempt, step_s, members, threshold, degree = value[:8]
        dp = _spec_dp(value)
        hexes = _hexes(members, self.genesis.member_set, "spec")
        if self.me not in hexes:
            raise _refuse(WireReason.BAD_CONTRIBUTION, "spec", "a round without this member")
        if rnd != self._next_round():
            raise _refuse(WireReason.FED_REFUSED, "spec", f"round {rnd}, not {self._next_round()}")
        previous = self._previous()
        history = self._contribution_history()
        if previous is False or history is None or history.step_s != step_s:
            raise _refuse(WireReason.FED_REFUSED, "spec", "cannot contribute to this round")
        prior = previous if isinstance(previous, CommunityModel) else None
        refusal = ""
        if self.dp_budget is not None and dp is None:
            refusal = "this member contributes only with DP"
        elif (
            self.dp_budget is not None
            and dp is not None
            and not self.dp_spend.allows(self.dp_budget, dp[0])
        ):
            refusal = (
                f"σ/C {dp[0]} would exceed this member's DP budget (spent ε "
                f"{self.dp_spend.epsilon(self.dp_budget.delta):.3f} over "
                f"{self.dp_spend.rounds} rounds of ε {self.dp_budget.epsilon})"
            )
        if refusal:
            log.info("federated: round %d: refused: %s", rnd, refusal)
            raise _refuse(WireReason.FED_REFUSED, "spec", refusal)
        try:
            spec = RoundSpec.new(
                rnd,
                [self._x_members[h] for h in hexes],
                Layout(step_s).length,
                attempt=attempt,
                threshold=threshold,
                degree=degree,
            )
        except (SecAggError, UsageError, ValueError) as exc:
            raise _refuse(WireReason.BAD_CONTRIBUTION, "spec", str(exc)) from None
        now_s = self.node.clock.now_ms() // 1000
        update = local_update(
            history,
            previous=prior,
            since_s=now_s - self.round_every_s,
        )[0]
        noise = None
        if dp is not None:  # pre-scale, clip, this member's noise share; the spend first
            z, clip = dp
            scale = dp_scale(prior, step_s)
            update = clip_l2(np.rint(update * scale).astype(np.int64), clip)
            rng = np.random.default_rng(int.from_bytes(os.urandom(32), "big"))
            noise = gaussian_noise(len(update), z * clip, spec.threshold, rng)
            try:
                self._record_spend(self.dp_spend.after(z))
            except UsageError as exc:
                raise _refuse(
                    WireReason.FED_REFUSED, "spec", f"cannot record the spend: {exc}"
                ) from None
            log.info(
                "federated: round %d: DP update (σ/C %.3f); this household's privacy spent: "
                "ε %.3f over %d rounds", rnd, z, self.dp_spend.epsilon(
                    self.dp_budget.delta if self.dp_budget is not None else 1e-5
                ), self.dp_spend.rounds,
            )  # fmt: skip
        masked = mask_update(spec, self._x_private, self.x_public, update, noise=noise)
        log.info(
            "federated: round %d attempt %d: masked update on history to %d, since %d",
            rnd, attempt, now_s, now_s - self.round_every_s,
        )  # fmt: skip
        self._rounds[spec.digest] = _MemberRound(spec)
        while len(self._rounds) > 8:
            del self._rounds[next(iter(self._rounds))]
        return pack(["gn.fed.masked", 1, spec.digest, masked.masked])

    async def on_unmask(self, value: list[Any]) -> bytes:
        from forecasting.secagg import SecAggError, Unmask, reveal_seeds  # noqa: PLC0415

        if len(value) != 6 or not isinstance(value[2], bytes):
            raise _refuse(WireReason.BAD_SHAPE, "unmask")
        _, _, digest, received, dropped, requests = value
        state = self._rounds.get(digest)
        if state is None:
            raise _refuse(WireReason.FED_REFUSED, "unmask", "an attempt this member did not mask")
        members = frozenset(self.genesis.members)
        got = _hexes(received, members, "unmask")
        gone = _hexes(dropped, members, "unmask")
        if not isinstance(requests, list) or not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) for r in requests
        ):
            raise _refuse(WireReason.BAD_TYPE, "unmask", "requests")
        asks = {
            self._x_members[r[0]]: tuple(self._x_members[d] for d in _hexes(r[1], members, "ask"))
            for r in requests
            if r[0] in members
        }
        mine = {self._member_of_x[x] for x in asks.get(self.x_public, ())}
        delivered: list[str] = []

        async def check(h: str) -> None:
            if await self._says_delivered(h, digest):
                delivered.append(h)

        async with trio.open_nursery() as nursery:
            for h in sorted(mine):
                nursery.start_soon(check, h)
        log.info(
            "federated: %d dropped neighbour(s) checked, %d say they delivered",
            len(mine), len(delivered),
        )  # fmt: skip
        if delivered:
            raise _refuse(
                WireReason.FED_REFUSED, "unmask",
                f"{len(delivered)} member(s) called dropped say they delivered: {delivered[0][:12]}",
            )  # fmt: skip
        unmask = Unmask(
            digest,
            frozenset(self._x_members[h] for h in got),
            frozenset(self._x_members[h] for h in gone),
            asks,
        )
        try:
            reveal = reveal_seeds(state.spec, self._x_private, self.x_public, unmask)
        except SecAggError as exc:
            raise _refuse(WireReason.FED_REFUSED, "unmask", str(exc)) from None
        seeds = [[self._member_of_x[d], seed] for d, seed in reveal.seeds]
        return pack(["gn.fed.reveal", 1, digest, seeds])

    def _on_get_model(self, value: list[Any]) -> bytes:
        if len(value) != 3 or not isinstance(value[2], bytes) or len(value[2]) != 32:
            raise _refuse(WireReason.BAD_SHAPE, "getmodel")
        data = self.models.get(value[2])
        if data is None:
            raise InvalidInput(reason=LedgerReason.UNKNOWN_MODEL, subject="getmodel")
        return data

    # ------------------------------------------------------------------ adoption
    def keep(self, model: CommunityModel) -> None:
        """Hold ``model``'s bytes (serve them) and adopt it if it is the ledger's last model."""
        self.models[model.hash] = model.content()
        if model.hash == self.node.runtime.state.last_model:
            self._adopt(model)

    def _adopt(self, model: CommunityModel) -> None:
        if self.adopted is not None and self.adopted.hash == model.hash:
            return
        self.adopted = model
        log.info("federated: using community model %s (round %d)", model.hash.hex()[:16],
                 model.round)  # fmt: skip
        if self.on_model is not None:
            self.on_model(model)

    async def _adopt_latest(self) -> None:
        state = self.node.runtime.state
        last = state.last_model
        if last == ZERO_HASH or (self.adopted is not None and self.adopted.hash == last):
            return
        if last in self.models:
            from forecasting.federated import decode_model  # noqa: PLC0415

            self._adopt(decode_model(self.models[last]))
            return
        now_s = self.node.clock.now_ms() // 1000
        if self._adopt_failed.get(last, -(10**9)) > now_s - 5:
            return  # tried within the last 5 node seconds
        committed = state.models[last]
        peers = [committed.aggregator] + [
            h for h in (*self.genesis.validators, *self.genesis.members)
            if h not in (committed.aggregator, self.me)
        ]  # fmt: skip
        model = await self.fetch_model(last, peers)
        if model is None:
            self._adopt_failed[last] = now_s
            return
        self.models[last] = model.content()
        self._adopt(model)

    async def fetch_model(self, model_hash: bytes, peers: Sequence[str]) -> CommunityModel | None:
        """The model whose hash is ``model_hash`` from the first of ``peers`` that serves bytes
        hashing to it; a peer serving other bytes is reported (``bad_contribution``)."""
        from forecasting.federated import decode_model  # noqa: PLC0415

        ask = pack(["gn.fed.getmodel", 1, model_hash])
        for h in peers[:8]:
            if h == self.me:
                continue
            try:
                peer = peer_id_of_hex(h)
                data = await self.node.net.request(
                    peer, PROTOCOL, ask, timeout_s=self.timeouts.fetch_s
                )
            except (NetworkError, Rejected, InvalidInput, UsageError):
                continue
            if hashlib.sha256(data).digest() != model_hash:
                self._blame(peer, "getmodel", "bytes that do not hash to the committed model")
                continue
            try:
                return decode_model(data)
            except (InvalidInput, UsageError) as exc:
                self._blame(peer, "getmodel", str(exc))
        return None

    def _blame(self, peer: str, what: str, detail: str) -> None:
        self.refused += 1
        cause = _refuse(WireReason.BAD_CONTRIBUTION, what, detail)
        self.node.net.report_misbehaviour(PeerMisbehaviour(peer, cause))

    # ------------------------------------------------------------------ aggregator side
    async def _ask(
        self, members: Sequence[str], body: Callable[[str], bytes], timeout_s: float,
        report: RoundReport,
    ) -> dict[str, bytes]:  # fmt: skip
        """Send each member its request at once (again after a network failure); the answers that
        came before ``timeout_s``."""
        answers: dict[str, bytes] = {}

        async def one(h: str) -> None:
            data = body(h)
            report.bytes_out += len(data)
            if h == self.me:
                try:
                    answers[h] = await self._on_request(peer_id_of_hex(h), data)
                except InvalidInput as exc:
                    log.info("federated: this node cannot take part: %s", exc)
                return
            while True:  # a peer not reachable yet (still dialling): again until the deadline
                try:
                    answers[h] = await self.node.net.request(
                        peer_id_of_hex(h), PROTOCOL, data, timeout_s=deadline - trio.current_time()
                    )
                    report.bytes_in += len(answers[h])
                    report.member_bytes[h] = report.member_bytes.get(h, 0) + len(answers[h])
                    return
                except Rejected as exc:
                    log.info("federated: %s refused: %s", h[:12], exc.reason)
                    return
                except (InvalidInput, UsageError) as exc:
                    log.debug("federated: %s: %s", h[:12], exc)
                    return
                except NetworkError as exc:
                    log.debug("federated: %s: %s", h[:12], exc)
                    await trio.sleep(_RETRY_S)

        deadline = trio.current_time() + timeout_s
        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as nursery:
                for h in members:
                    nursery.start_soon(one, h)
        return answers

    async def aggregate(self, period: int) -> RoundReport:
        """Run the round of ``period`` as its aggregator (module rules)."""
        from forecasting.dp import gdp_epsilon  # noqa: PLC0415
        from forecasting.federated import (  # noqa: PLC0415
            NO_MODEL,
            CommunityModel,
            Layout,
            dp_total,
        )
        from forecasting.secagg import MAX_ATTEMPTS, Abort, Complete, Restart  # noqa: PLC0415

        started = trio.current_time()
        state = self.node.runtime.state
        rnd = len(state.models) + 1
        previous = state.last_model
        report = RoundReport(rnd, period)
        self.reports.append(report)
        del self.reports[:-64]
        dp = self._dp_of_spec()
        base = self._previous()
        if dp is not None and base is False:
            report.outcome = "aborted: DP pre-scaling needs the previous model, not adopted here"
            return report
        members = list(self.genesis.members)
        report.invited = len(members)
        invite = pack(["gn.fed.invite", 1, rnd])
        joins = await self._ask(members, lambda h: invite, self.timeouts.invite_s, report)
        await trio.sleep_until(started + self.timeouts.invite_s)  # the whole invitation window
        steps: dict[str, int] = {}
        for h, data in joins.items():
            try:
                v = _decode(data, "join")
                if v[0] == "gn.fed.join" and len(v) == 3 and _ints(v[2]) and v[2] > 0:
                    steps[h] = v[2]
            except InvalidInput as exc:
                self._blame(peer_id_of_hex(h), "join", str(exc))
        report.answered = len(joins)
        report.joined = len(steps)
        if len(steps) < 3:
            report.outcome = f"aborted: {len(steps)} joined, 3 needed"
            report.wall_s = trio.current_time() - started
            return report
        step_s = max(set(steps.values()), key=list(steps.values()).count)
        joined = sorted(h for h, s in steps.items() if s == step_s)
        length = Layout(step_s).length
        spec: RoundSpec | None = _spec(rnd, [self._x_members[h] for h in joined], length)
        done: Complete | None = None
        while spec is not None and done is None:
            report.attempts += 1
            outcome = await self._attempt(spec, step_s, report, dp)
            if isinstance(outcome, Complete):
                done = outcome
            elif isinstance(outcome, Restart) and spec.attempt + 1 < MAX_ATTEMPTS:
                spec = outcome.spec
            else:
                why = outcome.why if isinstance(outcome, Abort) else "too many attempts"
                report.outcome = f"aborted: {why}"
                spec = None
        report.wall_s = trio.current_time() - started
        if done is None:
            return report
        total, noise = done.total, None
        if dp is not None:  # the sum scaled back; its public noise (module rules)
            z, clip = dp
            total, noise = dp_total(
                done.total,
                base if isinstance(base, CommunityModel) else None,
                step_s,
                sigma=z * clip,
                contributors=len(done.contributors),
                threshold=done.spec.threshold,
            )
            report.dp_noise_multiplier = z
            report.dp_delta = self.dp_budget.delta if self.dp_budget is not None else 0.0
            report.dp_epsilon_round = gdp_epsilon(1.0 / z, report.dp_delta)
        model = CommunityModel.of(
            total,
            round=rnd,
            step_s=step_s,
            previous=NO_MODEL if previous == ZERO_HASH else previous,
            contributors=len(done.contributors),
            noise=noise,
        )
        layout = Layout(step_s)
        validation = tuple(max(0, int(v)) for v in model.total[layout.validation_at :])
        assert len(validation) == len(MODEL_VALIDATION_FIELDS)
        tx = sign_model(
            self.node.key,
            self.genesis,
            round=rnd,
            model=model.hash,
            previous=previous,
            contributors=model.contributors,
            validation=validation,
            features=_features(),
        )
        self.models[model.hash] = model.content()
        result = await self.node.submissions.submit(tx)
        report.contributors = model.contributors
        report.model = model.hash
        report.outcome = "committed" if result.accepted else f"refused: {result.reason}"
        report.wall_s = trio.current_time() - started
        return report

    async def _attempt(
        self, spec: RoundSpec, step_s: int, report: RoundReport, dp: tuple[float, int] | None
    ) -> Complete | Restart | Abort:
        """One attempt: collect masked updates, then reveals; the state machine's outcome."""
        from forecasting.secagg import (  # noqa: PLC0415
            Aggregation,
            MaskedUpdate,
            Reveal,
            SecAggError,
            Unmask,
        )

        agg = Aggregation(spec)
        hexes = [self._member_of_x[x] for x in spec.members]
        fields: list[Any] = ["gn.fed.spec", 1, spec.round, spec.attempt, step_s, hexes,
                             spec.threshold, spec.degree]  # fmt: skip
        if dp is not None:  # the round's DP: [σ/C in millionths, C]
            fields.append([round(dp[0] * _Z_UNIT), dp[1]])
        body = pack(fields)
        answers = await self._ask(hexes, lambda h: body, self.timeouts.collect_s, report)
        for h, data in answers.items():
            try:
                v = _decode(data, "masked")
                if v[0] != "gn.fed.masked" or len(v) != 4 or not isinstance(v[3], bytes):
                    raise _refuse(WireReason.BAD_SHAPE, "masked")
                agg.add_update(MaskedUpdate(v[2], self._x_members[h], v[3]))
            except InvalidInput as exc:
                self._blame_if(h, exc)
            except SecAggError as exc:
                self._blame(peer_id_of_hex(h), "masked", str(exc))
        outcome = agg.close_collection()
        if not isinstance(outcome, Unmask):
            return outcome
        received = sorted(self._member_of_x[x] for x in outcome.received)
        dropped = sorted(self._member_of_x[x] for x in outcome.dropped)
        asked = [self._member_of_x[m] for m in sorted(outcome.requests)]
        asks = [
            [self._member_of_x[m], sorted(self._member_of_x[d] for d in ds)]
            for m, ds in sorted(outcome.requests.items())
        ]
        log.info("federated round %d: %d dropped, asking %d reveals", spec.round, len(dropped),
                 len(asks))  # fmt: skip
        ask = pack(["gn.fed.unmask", 1, spec.digest, received, dropped, asks])
        reveals = await self._ask(asked, lambda h: ask, self.timeouts.reveal_s, report)
        for h, data in reveals.items():
            try:
                v = _decode(data, "reveal")
                if v[0] != "gn.fed.reveal" or len(v) != 4 or not isinstance(v[3], list):
                    raise _refuse(WireReason.BAD_SHAPE, "reveal")
                seeds = tuple(
                    (self._x_members[d], s)
                    for d, s in v[3]
                    if isinstance(d, str) and d in self._x_members and isinstance(s, bytes)
                )
                done = agg.add_reveal(Reveal(v[2], self._x_members[h], seeds))
                if done is not None:
                    return done
            except InvalidInput as exc:
                self._blame_if(h, exc)
            except (SecAggError, ValueError) as exc:
                self._blame(peer_id_of_hex(h), "reveal", str(exc))
        return agg.close_reveals()

    def _blame_if(self, h: str, exc: InvalidInput) -> None:
        self.refused += 1
        if is_misbehaviour(exc.reason):
            self.node.net.report_misbehaviour(PeerMisbehaviour(peer_id_of_hex(h), exc))


def _spec_dp(value: list[Any]) -> tuple[float, int] | None:
    """A spec's optional 9th element ``[σ/C in millionths, C]``: ``(σ/C, C)``, or ``None``."""
    if len(value) == 8:
        return None
    dp = value[8]
    if not (isinstance(dp, list) and len(dp) == 2 and _ints(*dp) and dp[0] > 0 and dp[1] > 0):
        raise _refuse(WireReason.BAD_SHAPE, "spec", "dp: [noise multiplier (millionths), clip]")
    return dp[0] / _Z_UNIT, dp[1]


def _spec(rnd: int, members: Sequence[bytes], length: int) -> RoundSpec:
    from forecasting.secagg import RoundSpec  # noqa: PLC0415

    return RoundSpec.new(rnd, members, length)


def _features() -> str:
    from forecasting.federated import FEATURE_VERSION  # noqa: PLC0415

    return FEATURE_VERSION
