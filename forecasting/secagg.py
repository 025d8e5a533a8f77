"""Secure aggregation of members' integer update vectors: pairwise masks that cancel in the sum.

Rules of this module (all pure: no I/O, no clock; randomness only from key material and a
caller's seeded generator; deadlines are explicit calls):

* **Round.** A :class:`RoundSpec` names the round, the attempt (a restart is a new attempt), the
  members' X25519 public keys in byte order, the update length (uint64 entries), the survivor
  threshold and the mask graph's degree. Its :attr:`~RoundSpec.digest` (SHA-256 of the canonical
  encoding) personalises every derived seed, so masks never repeat across rounds or attempts.
* **Masks.** Each member is masked with its *neighbours* in the round's mask graph: every other
  member when ``degree >= n - 1`` (small communities), else a ring of ``degree / 2`` members on
  each side in a public order derived from the digest (a Harary graph, Bell et al. 2020: cost
  ``O(degree)`` per member instead of ``O(n)``). For neighbours ``i < j`` (member order) the pair
  seed is ``BLAKE2b-256(X25519(sk_i, pk_j) ‖ digest ‖ pk_lo ‖ pk_hi, person="gn.secagg.pair.1")``
  (PyNaCl's X25519; both sides derive the same seed) and the mask is the first ``8·length``
  bytes of the ChaCha20 keystream keyed by the seed (libsodium, nonce ``"gn.secagg.m1"``) read
  as little-endian uint64. Member ``i``
  sends ``x_i + Σ_{j>i} m_ij − Σ_{j<i} m_ij  (mod 2**64)``; over all members the masks cancel and
  the sum is the plain sum mod 2**64 **exactly** (an int64 update's two's complement bits).
* **Dropouts.** After the collection deadline (:meth:`Aggregation.close_collection`) the
  aggregator publishes the set of received updates (:class:`Unmask`). If fewer than
  ``threshold`` (default ``ceil(2n/3)``, :func:`default_threshold`) arrived, or some survivor
  would keep no live neighbour, the round **restarts** (:class:`Restart`) as a new attempt with the
  survivors only. Otherwise every survivor with a dropped neighbour reveals the *pair seed* with
  that neighbour (never its private key; :func:`reveal_seeds`), so the aggregator removes the
  dangling masks. A member **refuses** to reveal a seed for a member the announcement lists as
  received (:attr:`SecAggReason.REVEAL_FOR_RECEIVED`), or when it would keep no unrevealed live
  neighbour. After the reveal deadline (:meth:`Aggregation.close_reveals`) missing reveals make
  the round restart without their senders. Every restart has strictly fewer members, and fewer
  than :data:`MIN_MEMBERS` or more than :data:`MAX_ATTEMPTS` attempts abort (:class:`Abort`):
  the protocol never waits without a deadline and never loops.
* **No self-masks** (Bonawitz's double masking is not used). Consequence, stated in
  ``docs/federated.md``: an aggregator who falsely declares a live member dropped could unmask it;
  mitigated by the published received set (members refuse to reveal for a received member), and
  the driver must publish that announcement to every member alike (gossip) so it cannot
  equivocate.
* **Optional DP** (off by default): each member adds Gaussian noise of standard deviation
  ``sigma / sqrt(t)`` (``t`` the threshold: the fewest honest contributors a completed round has),
  so the sum carries at least ``N(0, sigma²)``; :func:`gaussian_sigma` calibrates ``sigma`` for a
  total ``(ε, δ)`` over a number of rounds and an L2 sensitivity (the analytic Gaussian mechanism of
  Balle & Wang 2018, composed exactly over rounds: :mod:`forecasting.dp`), and :func:`clip_l2`
  bounds a member's update to that sensitivity.

Refusals raise :class:`SecAggError` (a ``ValueError``) with a :class:`SecAggReason`: whose fault
it is (our misuse, or a peer's bytes) is in each reason's comment.

Known limits: a malicious member can corrupt the sum (bad update or bad seed) undetected; an
update's entries must be bounded so the true sum fits int64 (the caller's rule).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt, crypto_scalarmult
from nacl.public import PrivateKey

from forecasting.dp import MAX_EPSILON, DpBudget
from market.codec import pack

__all__ = [
    "DEFAULT_DEGREE",
    "MAX_ATTEMPTS",
    "MIN_MEMBERS",
    "Abort",
    "Aggregation",
    "Complete",
    "DpConfig",
    "MaskedUpdate",
    "Restart",
    "Reveal",
    "RoundSpec",
    "RoundStats",
    "SecAggError",
    "SecAggReason",
    "Transcript",
    "Unmask",
    "aggregate_round",
    "clip_l2",
    "default_threshold",
    "gaussian_noise",
    "gaussian_sigma",
    "keypair_from_seed",
    "mask_update",
    "message_bytes",
    "pair_seed",
    "reveal_seeds",
    "unmask_vector",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

#: fewer members than this never aggregate (with two, each learns the other's update)
MIN_MEMBERS: Final = 3
#: attempts of one round (the first and restarts) before it aborts
MAX_ATTEMPTS: Final = 4
#: neighbours of each member in the mask graph (all others when the round is smaller)
DEFAULT_DEGREE: Final = 24
_SPEC_TAG: Final = "gn.secagg.round"
_PAIR_PERSON: Final = b"gn.secagg.pair.1"
_MASK_NONCE: Final = b"gn.secagg.m1"  # 12 bytes: the IETF nonce
_ORDER_PERSON: Final = b"gn.secagg.order1"


class SecAggReason(StrEnum):
    """Why a secure-aggregation step refused."""

    #: ours: a spec with fewer than MIN_MEMBERS, a duplicate key, a bad threshold or degree
    BAD_SPEC = "secagg_bad_spec"
    #: ours or a peer's: a key that is not 32 bytes, or a sender not in the round
    UNKNOWN_MEMBER = "secagg_unknown_member"
    #: a peer's: a message for another round or attempt
    WRONG_ROUND = "secagg_wrong_round"
    #: a peer's: a masked update of the wrong length
    BAD_LENGTH = "secagg_bad_length"
    #: a peer's: a second update or reveal from the same member
    DUPLICATE = "secagg_duplicate"
    #: a peer's (late, not misbehaviour): after the phase's deadline
    LATE = "secagg_late"
    #: a reveal that does not carry exactly the requested seeds
    BAD_REVEAL = "secagg_bad_reveal"
    #: the member refuses: the aggregator asks for a seed with a member it says it received
    REVEAL_FOR_RECEIVED = "secagg_reveal_for_received"
    #: the member refuses: revealing would leave its own update without a live mask
    TOO_FEW_LIVE_NEIGHBOURS = "secagg_too_few_live_neighbours"
    #: a call out of order (a reveal while collecting, a second close)
    WRONG_PHASE = "secagg_wrong_phase"


class SecAggError(ValueError):
    """A refused secure-aggregation input: ``reason`` says which rule, ``detail`` the values."""

    def __init__(self, reason: SecAggReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def default_threshold(members: int) -> int:
    """Survivors a round needs to complete: ``ceil(2n/3)``, at least :data:`MIN_MEMBERS`."""
    return max(MIN_MEMBERS, -(-2 * members // 3))


def keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """A deterministic X25519 key pair ``(private, public)`` from a 32-byte seed (PyNaCl)."""
    if len(seed) != 32:
        raise SecAggError(SecAggReason.BAD_SPEC, "a key seed is 32 bytes")
    key = PrivateKey.from_seed(seed)
    return bytes(key), bytes(key.public_key)


@dataclass(frozen=True, slots=True)
class RoundSpec:
    """One attempt of one round (module rules); ``members`` are X25519 public keys, sorted."""

    round: int
    attempt: int
    members: tuple[bytes, ...]
    length: int
    threshold: int
    degree: int = DEFAULT_DEGREE
    digest: bytes = field(init=False, repr=False)
    _index: Mapping[bytes, int] = field(init=False, repr=False, compare=False)
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def new(
        cls,
        round: int,
        members: Iterable[bytes],
        length: int,
        *,
        attempt: int = 0,
        threshold: int | None = None,
        degree: int = DEFAULT_DEGREE,
    ) -> RoundSpec:
        """A spec with ``members`` sorted and the default threshold unless given."""
        keys = tuple(sorted(members))
        return cls(
            round,
            attempt,
            keys,
            length,
            default_threshold(len(keys)) if threshold is None else threshold,
            degree,
        )

    def __post_init__(self) -> None:
        n = len(self.members)
        if n < MIN_MEMBERS or len(set(self.members)) != n:
            raise SecAggError(SecAggReason.BAD_SPEC, f"{n} members, at least {MIN_MEMBERS} unique")
        if any(len(k) != 32 for k in self.members):
            raise SecAggError(SecAggReason.UNKNOWN_MEMBER, "public keys are 32 bytes")
        if list(self.members) != sorted(self.members):
            raise SecAggError(SecAggReason.BAD_SPEC, "members must be sorted")
        if not MIN_MEMBERS <= self.threshold <= n or self.length <= 0 or self.degree < 2:
            raise SecAggError(
                SecAggReason.BAD_SPEC,
                f"threshold {self.threshold} (of {n}), length {self.length}, degree {self.degree}",
            )
        if self.round < 0 or not 0 <= self.attempt < MAX_ATTEMPTS:
            raise SecAggError(SecAggReason.BAD_SPEC, f"round {self.round} attempt {self.attempt}")
        head = [_SPEC_TAG, 1, self.round, self.attempt, list(self.members)]
        encoded = pack([*head, self.length, self.threshold, self.degree])
        digest = hashlib.sha256(encoded).digest()
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(self.members)})
        rank = sorted(
            range(n),
            key=lambda i: hashlib.blake2b(
                self.members[i], digest_size=16, key=digest, person=_ORDER_PERSON
            ).digest(),
        )
        object.__setattr__(self, "_order", tuple(rank))

    def index(self, public: bytes) -> int:
        """The member's position in :attr:`members`."""
        try:
            return self._index[public]
        except KeyError:
            raise SecAggError(SecAggReason.UNKNOWN_MEMBER, public.hex()[:16]) from None

    def neighbours(self, public: bytes) -> tuple[int, ...]:
        """Indices of the members whose pair masks cover ``public``'s update (sorted)."""
        i = self.index(public)
        n = len(self.members)
        if self.degree >= n - 1:
            return tuple(j for j in range(n) if j != i)
        half = self.degree // 2
        pos = self._order.index(i)
        ring = {self._order[(pos + d) % n] for d in range(-half, half + 1) if d}
        return tuple(sorted(ring))

    def restart(self, survivors: Iterable[bytes]) -> RoundSpec:
        """The next attempt with ``survivors`` only (threshold recomputed)."""
        return RoundSpec.new(
            self.round, survivors, self.length, attempt=self.attempt + 1, degree=self.degree
        )


# --------------------------------------------------------------------------- member side


def pair_seed(spec: RoundSpec, private: bytes, own: bytes, peer: bytes) -> bytes:
    """The 32-byte seed ``own`` shares with ``peer`` in this round (X25519, then BLAKE2b)."""
    if len(private) != 32 or len(peer) != 32:
        raise SecAggError(SecAggReason.UNKNOWN_MEMBER, "keys are 32 bytes")
    shared = crypto_scalarmult(private, peer)
    lo, hi = sorted((own, peer))
    return hashlib.blake2b(
        shared + spec.digest + lo + hi, digest_size=32, person=_PAIR_PERSON
    ).digest()


def _mask(seed: bytes, length: int) -> U64:
    """The pair mask: the ChaCha20 keystream under key ``seed`` (libsodium's IETF ChaCha20-Poly1305
    encryption of zeros with a fixed nonce; each seed keys one stream, the tag is dropped)."""
    raw = crypto_aead_chacha20poly1305_ietf_encrypt(bytes(8 * length), None, _MASK_NONCE, seed)
    out: U64 = np.frombuffer(raw[: 8 * length], dtype="<u8").astype(np.uint64)
    return out


def _as_u64(update: I64 | U64) -> U64:
    arr = np.ascontiguousarray(update)
    if arr.dtype == np.int64:
        out: U64 = arr.view(np.uint64).copy()
        return out
    if arr.dtype != np.uint64:
        raise SecAggError(SecAggReason.BAD_LENGTH, f"updates are int64 or uint64, got {arr.dtype}")
    same: U64 = arr.astype(np.uint64)
    return same


@dataclass(frozen=True, slots=True)
class MaskedUpdate:
    """What a member sends in the collection phase: its masked vector (little-endian uint64)."""

    digest: bytes  # the RoundSpec's
    member: bytes  # the sender's public key
    masked: bytes


def mask_update(
    spec: RoundSpec,
    private: bytes,
    public: bytes,
    update: I64 | U64,
    *,
    noise: I64 | None = None,
) -> MaskedUpdate:
    """``public``'s masked update (module rules); ``noise`` (from :func:`gaussian_noise`) is added
    before masking when DP is on."""
    vec = _as_u64(update)
    if vec.shape != (spec.length,):
        raise SecAggError(SecAggReason.BAD_LENGTH, f"{vec.shape} for length {spec.length}")
    if noise is not None:
        vec = vec + _as_u64(noise)
    i = spec.index(public)
    for j in spec.neighbours(public):
        m = _mask(pair_seed(spec, private, public, spec.members[j]), spec.length)
        vec = vec + m if j > i else vec - m
    return MaskedUpdate(spec.digest, public, vec.astype("<u8").tobytes())


@dataclass(frozen=True, slots=True)
class Unmask:
    """The aggregator's announcement after the collection deadline: who was received, who
    dropped, and which pair seeds each survivor must reveal (``requests[member]``: the dropped
    neighbours' keys)."""

    digest: bytes
    received: frozenset[bytes]
    dropped: frozenset[bytes]
    requests: Mapping[bytes, tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class Reveal:
    """A survivor's answer: its pair seeds with the requested dropped members."""

    digest: bytes
    member: bytes
    seeds: tuple[tuple[bytes, bytes], ...]  # (dropped member's key, pair seed)


def reveal_seeds(spec: RoundSpec, private: bytes, public: bytes, unmask: Unmask) -> Reveal:
    """The member's :class:`Reveal` for ``unmask``, or a refusal (module rules)."""
    if unmask.digest != spec.digest:
        raise SecAggError(SecAggReason.WRONG_ROUND, "the announcement is for another attempt")
    asked = unmask.requests.get(public, ())
    mine = {spec.members[j] for j in spec.neighbours(public)}
    for d in asked:
        if d in unmask.received or d not in unmask.dropped:
            raise SecAggError(SecAggReason.REVEAL_FOR_RECEIVED, d.hex()[:16])
        if d not in mine:
            raise SecAggError(SecAggReason.BAD_REVEAL, f"{d.hex()[:16]} is not a neighbour")
    if not (mine - set(asked)) & unmask.received:
        raise SecAggError(SecAggReason.TOO_FEW_LIVE_NEIGHBOURS, public.hex()[:16])
    seeds = tuple((d, pair_seed(spec, private, public, d)) for d in sorted(set(asked)))
    return Reveal(spec.digest, public, seeds)


# --------------------------------------------------------------------------- aggregator side


@dataclass(frozen=True, slots=True)
class Complete:
    """The round's exact plain sum of the contributors' updates (int64 two's complement)."""

    spec: RoundSpec
    contributors: frozenset[bytes]
    total: I64


@dataclass(frozen=True, slots=True)
class Restart:
    """Start a new attempt with ``spec.members`` (the previous attempt's survivors)."""

    spec: RoundSpec
    missing: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Abort:
    """The round cannot complete: too few members left, or too many attempts."""

    survivors: frozenset[bytes]
    why: str


Outcome = Complete | Restart | Abort | Unmask


def unmask_vector(spec: RoundSpec, masked: U64, member: bytes, dropped: bytes, seed: bytes) -> U64:
    """``masked`` (of ``member``) without its pair mask with ``dropped`` (given their seed)."""
    m = _mask(seed, spec.length)
    out: U64 = masked - m if spec.index(dropped) > spec.index(member) else masked + m
    return out


class Aggregation:
    """The aggregator's state machine for one attempt: ``add_update``* → ``close_collection``
    (the deadline passed) → [``add_reveal``* → ``close_reveals``] (module rules)."""

    def __init__(self, spec: RoundSpec) -> None:
        self.spec = spec
        self.phase = "collecting"
        self._updates: dict[bytes, U64] = {}
        self._unmask: Unmask | None = None
        self._reveals: dict[bytes, Reveal] = {}

    def _check(self, digest: bytes, member: bytes, phase: str) -> None:
        if digest != self.spec.digest:
            raise SecAggError(SecAggReason.WRONG_ROUND, member.hex()[:16])
        self.spec.index(member)
        if self.phase != phase:
            reason = SecAggReason.LATE if self.phase != "collecting" else SecAggReason.WRONG_PHASE
            raise SecAggError(reason, f"{self.phase}, not {phase}")

    def add_update(self, update: MaskedUpdate) -> None:
        """Accept a member's masked update (refusals name the rule)."""
        self._check(update.digest, update.member, "collecting")
        if update.member in self._updates:
            raise SecAggError(SecAggReason.DUPLICATE, update.member.hex()[:16])
        if len(update.masked) != 8 * self.spec.length:
            raise SecAggError(SecAggReason.BAD_LENGTH, f"{len(update.masked)} bytes")
        self._updates[update.member] = np.frombuffer(update.masked, dtype="<u8").astype(np.uint64)

    @property
    def received(self) -> frozenset[bytes]:
        return frozenset(self._updates)

    def _restart(self, survivors: frozenset[bytes], why: str) -> Restart | Abort:
        missing = frozenset(self.spec.members) - survivors
        self.phase = "done"
        if len(survivors) < MIN_MEMBERS or self.spec.attempt + 1 >= MAX_ATTEMPTS:
            return Abort(survivors, why)
        return Restart(self.spec.restart(survivors), missing)

    def _sum(self, vectors: Iterable[U64]) -> I64:
        total = np.zeros(self.spec.length, dtype=np.uint64)
        for v in vectors:
            total += v
        out: I64 = total.view(np.int64)
        return out

    def close_collection(self) -> Complete | Restart | Abort | Unmask:
        """The collection deadline passed: complete, restart, abort, or ask for reveals."""
        if self.phase != "collecting":
            raise SecAggError(SecAggReason.WRONG_PHASE, self.phase)
        spec, got = self.spec, self.received
        if len(got) == len(spec.members):
            self.phase = "done"
            return Complete(spec, got, self._sum(self._updates.values()))
        if len(got) < spec.threshold:
            return self._restart(got, f"{len(got)} of {len(spec.members)} < {spec.threshold}")
        dropped = frozenset(spec.members) - got
        requests: dict[bytes, tuple[bytes, ...]] = {}
        for member in sorted(got):
            near = {spec.members[j] for j in spec.neighbours(member)}
            if not near & got:
                return self._restart(got, f"{member.hex()[:16]} has no live neighbour")
            if near & dropped:
                requests[member] = tuple(sorted(near & dropped))
        self._unmask = Unmask(spec.digest, got, dropped, requests)
        self.phase = "revealing"
        return self._unmask

    def add_reveal(self, reveal: Reveal) -> Complete | None:
        """Accept a survivor's reveal; the round completes when the last one arrives."""
        self._check(reveal.digest, reveal.member, "revealing")
        assert self._unmask is not None
        if reveal.member in self._reveals:
            raise SecAggError(SecAggReason.DUPLICATE, reveal.member.hex()[:16])
        asked = self._unmask.requests.get(reveal.member)
        if asked is None or tuple(d for d, _ in reveal.seeds) != asked:
            raise SecAggError(SecAggReason.BAD_REVEAL, reveal.member.hex()[:16])
        if any(len(seed) != 32 for _, seed in reveal.seeds):
            raise SecAggError(SecAggReason.BAD_REVEAL, "seeds are 32 bytes")
        self._reveals[reveal.member] = reveal
        if len(self._reveals) == len(self._unmask.requests):
            return self._finish()
        return None

    def _finish(self) -> Complete:
        vectors = []
        for member, masked in self._updates.items():
            reveal = self._reveals.get(member)
            vec = masked
            for d, seed in reveal.seeds if reveal else ():
                vec = unmask_vector(self.spec, vec, member, d, seed)
            vectors.append(vec)
        self.phase = "done"
        return Complete(self.spec, self.received, self._sum(vectors))

    def close_reveals(self) -> Complete | Restart | Abort:
        """The reveal deadline passed: complete, or restart without the silent survivors."""
        if self.phase != "revealing":
            raise SecAggError(SecAggReason.WRONG_PHASE, self.phase)
        assert self._unmask is not None
        silent = set(self._unmask.requests) - set(self._reveals)
        if not silent:
            return self._finish()
        return self._restart(self.received - silent, f"{len(silent)} survivors did not reveal")


# --------------------------------------------------------------------------- differential privacy


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float, rounds: int = 1) -> float:
    """The smallest ``sigma`` of Gaussian noise per round that makes ``rounds`` rounds of a sum with
    L2 ``sensitivity`` together ``(epsilon, delta)``-DP: ``sensitivity · sqrt(rounds) / μ`` with
    ``μ`` the budget's Gaussian-DP parameter (:func:`forecasting.dp.gdp_mu`; one round is the
    analytic Gaussian mechanism of Balle & Wang 2018, rounds compose exactly)."""
    if not 0 < epsilon <= MAX_EPSILON or not 0 < delta < 1 or sensitivity <= 0 or rounds < 1:
        raise SecAggError(
            SecAggReason.BAD_SPEC,
            "epsilon in (0, 100], 0 < delta < 1, sensitivity > 0, rounds >= 1",
        )
    return sensitivity * DpBudget(epsilon, delta, rounds).noise_multiplier


def clip_l2(update: I64, max_norm: float) -> I64:
    """``update`` scaled down (toward zero) so its L2 norm is at most ``max_norm``."""
    norm = float(np.linalg.norm(update.astype(np.float64)))
    if norm <= max_norm:
        return update
    out: I64 = np.trunc(update.astype(np.float64) * (max_norm / norm)).astype(np.int64)
    return out


def gaussian_noise(length: int, sigma: float, threshold: int, rng: np.random.Generator) -> I64:
    """One member's share of the noise: ``N(0, sigma² / threshold)`` per entry, rounded to the
    update's integer units. ``rng`` is the caller's, seeded from secret key material in a real
    round. The stated ε is the continuous Gaussian's; rounded noise is close to it but not exactly
    it (the discrete Gaussian of Canonne, Kamath & Steinke 2020 would be exact: not done)."""
    out: I64 = np.rint(rng.normal(0.0, sigma / math.sqrt(threshold), length)).astype(np.int64)
    return out


# --------------------------------------------------------------------------- the in-process round


@dataclass(frozen=True, slots=True)
class DpConfig:
    """Differential privacy of a round's sum (off unless given): each member clips its update to
    L2 ``clip_norm`` (update units) and adds its share of ``N(0, sigma²)``, ``sigma`` from
    :func:`gaussian_sigma`: ``(epsilon, delta)`` is the **total** over ``rounds`` rounds (1: the
    budget of this round alone), composed exactly (:mod:`forecasting.dp`)."""

    epsilon: float
    delta: float
    clip_norm: float
    rounds: int = 1

    @property
    def sigma(self) -> float:
        return gaussian_sigma(self.epsilon, self.delta, self.clip_norm, self.rounds)

    @property
    def noise_multiplier(self) -> float:
        """``sigma / clip_norm``: what one round spends (:class:`forecasting.dp.DpSpend`)."""
        return self.sigma / self.clip_norm


@dataclass(frozen=True, slots=True)
class RoundStats:
    """What a round cost: attempts, contributors, bytes each member sent (its masked update and
    its seed reveals, over every attempt: the most any member sent, and the total), and the CPU
    seconds of the whole in-process round by the caller's ``cpu_clock`` (0 without one)."""

    members: int
    contributors: int
    attempts: int
    update_entries: int
    max_bytes_per_member: int
    total_bytes: int
    cpu_s: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """Every message of an in-process round, in order (what each member sent and received)."""

    updates: tuple[MaskedUpdate, ...]
    unmasks: tuple[Unmask, ...]
    reveals: tuple[Reveal, ...]


def aggregate_round(
    updates: Mapping[bytes, I64],
    keys: Mapping[bytes, bytes],
    round: int,
    *,
    dropped: Iterable[bytes] = (),
    silent: Iterable[bytes] = (),
    degree: int = DEFAULT_DEGREE,
    dp: DpConfig | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[Complete | Abort, Transcript]:
    """Run the protocol in process over ``updates`` (public key → int64 update) with ``keys``
    (public → private): ``dropped`` members never send their update, ``silent`` ones send it but
    never reveal. Returns the outcome and every message sent."""
    drop, mute = frozenset(dropped), frozenset(silent)
    length = len(next(iter(updates.values())))
    spec = RoundSpec.new(round, updates, length, degree=degree)
    sent: list[MaskedUpdate] = []
    unmasks: list[Unmask] = []
    reveals: list[Reveal] = []
    if dp is not None and rng is None:
        raise SecAggError(SecAggReason.BAD_SPEC, "DP needs the caller's seeded rng")
    while True:
        agg = Aggregation(spec)
        for member in spec.members:
            if member in drop:
                continue
            vec = updates[member]
            noise = None
            if dp is not None and rng is not None:
                vec = clip_l2(vec, dp.clip_norm)
                noise = gaussian_noise(length, dp.sigma, spec.threshold, rng)
            msg = mask_update(spec, keys[member], member, vec, noise=noise)
            sent.append(msg)
            agg.add_update(msg)
        outcome: Outcome | None = agg.close_collection()
        if isinstance(outcome, Unmask):
            unmasks.append(outcome)
            done = None
            for member in sorted(outcome.requests):
                if member not in mute:
                    reveal = reveal_seeds(spec, keys[member], member, outcome)
                    reveals.append(reveal)
                    done = agg.add_reveal(reveal)
            outcome = done if done is not None else agg.close_reveals()
        transcript = Transcript(tuple(sent), tuple(unmasks), tuple(reveals))
        if isinstance(outcome, Complete | Abort):
            return outcome, transcript
        assert isinstance(outcome, Restart)
        spec = outcome.spec


def message_bytes(transcript: Transcript) -> dict[bytes, int]:
    """Bytes each member sent in ``transcript``: masked vectors and revealed (key, seed) pairs
    (payload only; the transport adds its framing)."""
    out: dict[bytes, int] = {}
    for u in transcript.updates:
        out[u.member] = out.get(u.member, 0) + len(u.masked)
    for r in transcript.reveals:
        out[r.member] = out.get(r.member, 0) + 64 * len(r.seeds)
    return out
