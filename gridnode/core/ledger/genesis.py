"""A community's genesis: the parameters decided once, and the constants every ledger part shares.

**Genesis.** A community is defined by a :class:`Genesis` (community id, genesis time, slot length and
gate lead, tariff, clearing rule, netting, reading deadline, how far ahead orders may go, the
members' and validators' public keys, n = 3f + 1 validators). Its canonical hash names the chain;
a parameter added after format 1 enters the hash only when it differs from its default. Bad values
raise :class:`~market.errors.UsageError` naming the key (the operator's file, not a peer's bytes).

Signatures are made in the domain ``"<kind>:<community_id>"`` (:meth:`Genesis.domain`), so nothing
signed for one community or purpose is valid in another.

Known limits: the member and validator sets are fixed at genesis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from gridnode.core.crypto import is_public_hex
from market.clearing import Rule
from market.codec import pack
from market.errors import UsageError
from market.orders import OrderLimits
from market.settlement import Netting, Tariff
from market.slots import SlotClock

__all__ = ["FORMAT", "MAX_CLOCK_SPEEDUP", "ZERO_HASH", "Genesis"]

FORMAT: Final = 1
ZERO_HASH: Final = b"\x00" * 32
DEFAULT_MAX_ORDER_AHEAD_SLOTS: Final = 672
#: genesis parameters added after format 1: left out of the canonical encoding (and so of the
#: genesis hash) while they hold their default, so a community's existing chain keeps its hash
_HASHED_ONLY_IF_SET: Final = {
    "max_order_ahead_slots": DEFAULT_MAX_ORDER_AHEAD_SLOTS,
    "clock_speedup": 1,
}
#: the fastest community clock a genesis may ask for (an hour of community time per wall second)
MAX_CLOCK_SPEEDUP: Final = 3600


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class Genesis:
    """What a community operator decides once. Validators need not be members (a grid company)."""

    community_id: str
    genesis_time_ms: int
    members: tuple[str, ...]
    validators: tuple[str, ...]
    slot_seconds: int = 900
    gate_lead_seconds: int = 300
    retail_micro_per_kwh: int = 300_000
    feed_in_micro_per_kwh: int = 80_000
    grid_fee_micro_per_kwh: int = 0
    rule: Rule = Rule.PAY_AS_CLEAR
    netting: Netting = Netting.NONE
    reading_deadline_seconds: int = 900
    max_drift_ms: int = 5_000
    max_steps: int = 16
    #: how far beyond the first open slot an order or cancel may name a slot (672 = one week of
    #: 15-minute slots); a genesis file without it gets this default
    max_order_ahead_slots: int = DEFAULT_MAX_ORDER_AHEAD_SLOTS
    #: the community clock runs this many times faster than wall time from ``genesis_time_ms``
    #: (demos and simulations; 1 = real time). Every node takes it from here, so all agree.
    clock_speedup: int = 1
    # derived once (admission looks them up for every transaction): not part of the genesis' identity
    member_set: frozenset[str] = field(init=False, repr=False, compare=False)
    #: a member's position in ``members`` (its leaf in the state root's trees)
    member_index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    #: every member's and validator's key as bytes (signature checks: no hex parsing per check)
    public_keys: Mapping[str, bytes] = field(init=False, repr=False, compare=False)
    #: the members in sorted order (the state's encoding lists households so)
    members_sorted: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _clock: SlotClock = field(init=False, repr=False, compare=False)
    _limits: OrderLimits = field(init=False, repr=False, compare=False)
    _hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            not self.community_id
            or not self.community_id.isascii()
            or not self.community_id.isprintable()
        ):
            raise UsageError(f"community_id must be printable ASCII, got {self.community_id!r}")
        if len(self.community_id) > 64 or "/" in self.community_id or " " in self.community_id:
            raise UsageError("community_id must be at most 64 chars with no '/' or spaces")
        for what, keys in (("member", self.members), ("validator", self.validators)):
            for key in keys:
                if not is_public_hex(key):
                    raise UsageError(f"{what} {key!r} is not a hex Ed25519 public key")
            if len(set(keys)) != len(keys):
                raise UsageError(f"duplicate {what} keys in genesis")
        if not self.validators:
            raise UsageError("genesis needs at least one validator")
        object.__setattr__(self, "member_set", frozenset(self.members))
        object.__setattr__(self, "member_index", {h: i for i, h in enumerate(self.members)})
        public = {h: bytes.fromhex(h) for h in (*self.members, *self.validators)}
        object.__setattr__(self, "public_keys", public)
        object.__setattr__(self, "members_sorted", tuple(sorted(self.members)))
        if self.reading_deadline_seconds < 0 or self.max_drift_ms < 0 or self.genesis_time_ms < 0:
            raise UsageError("reading deadline, drift and genesis time must be >= 0")
        if self.max_order_ahead_slots < 0:
            raise UsageError("max_order_ahead_slots must be >= 0")
        if not 1 <= self.clock_speedup <= MAX_CLOCK_SPEEDUP:
            raise UsageError(
                f"clock_speedup must be 1..{MAX_CLOCK_SPEEDUP}, got {self.clock_speedup!r}"
            )
        if self.clock_speedup > 1 and self.genesis_time_ms == 0:
            raise UsageError(
                f"clock_speedup {self.clock_speedup} needs a genesis_time_ms: the community clock "
                "runs faster from that moment (with 0 it would be thousands of years ahead)"
            )
        clock = SlotClock(slot_seconds=self.slot_seconds, gate_lead_seconds=self.gate_lead_seconds)
        object.__setattr__(self, "_clock", clock)  # validates slot length and gate lead
        self.tariff  # noqa: B018 - validates the prices
        object.__setattr__(
            self,
            "_limits",
            OrderLimits(
                price_cap_micro_per_kwh=self.retail_micro_per_kwh,
                max_steps=self.max_steps,
                max_ahead_slots=self.max_order_ahead_slots,
            ),
        )
        object.__setattr__(self, "_hash", _sha256(self.encode()))

    @property
    def clock(self) -> SlotClock:
        return self._clock

    @property
    def tariff(self) -> Tariff:
        return Tariff(
            retail_micro_per_kwh=self.retail_micro_per_kwh,
            feed_in_micro_per_kwh=self.feed_in_micro_per_kwh,
            grid_fee_micro_per_kwh=self.grid_fee_micro_per_kwh,
        )

    @property
    def limits(self) -> OrderLimits:
        return self._limits

    @property
    def max_faulty(self) -> int:
        """f: how many Byzantine validators the committee tolerates (n >= 3f + 1)."""
        return (len(self.validators) - 1) // 3

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for TOML/JSON files)."""
        return {
            "community_id": self.community_id,
            "genesis_time_ms": self.genesis_time_ms,
            "slot_seconds": self.slot_seconds,
            "gate_lead_seconds": self.gate_lead_seconds,
            "retail_micro_per_kwh": self.retail_micro_per_kwh,
            "feed_in_micro_per_kwh": self.feed_in_micro_per_kwh,
            "grid_fee_micro_per_kwh": self.grid_fee_micro_per_kwh,
            "rule": self.rule.value,
            "netting": self.netting.value,
            "reading_deadline_seconds": self.reading_deadline_seconds,
            "max_drift_ms": self.max_drift_ms,
            "max_steps": self.max_steps,
            "max_order_ahead_slots": self.max_order_ahead_slots,
            "members": list(self.members),
            "validators": list(self.validators),
            # left out at 1, so a real-time genesis file reads as it did before the key existed
            **({"clock_speedup": self.clock_speedup} if self.clock_speedup != 1 else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genesis:
        """Inverse of :meth:`to_dict`; unknown or mistyped keys raise :class:`UsageError` naming them."""
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(
                f"genesis: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        for key in ("community_id", "genesis_time_ms", "members", "validators"):
            if key not in data:
                raise UsageError(f"genesis: missing key {key!r}")
        values: dict[str, Any] = dict(data)
        for key, value in values.items():
            if key in ("members", "validators"):
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise UsageError(f"genesis: {key!r} must be a list of hex public keys")
                values[key] = tuple(value)
            elif key == "community_id":
                if not isinstance(value, str):
                    raise UsageError("genesis: 'community_id' must be a string")
            elif key == "rule":
                try:
                    values[key] = Rule(value)
                except ValueError:
                    raise UsageError(
                        f"genesis: 'rule' must be one of {[r.value for r in Rule]}"
                    ) from None
            elif key == "netting":
                try:
                    values[key] = Netting(value)
                except ValueError:
                    raise UsageError(
                        f"genesis: 'netting' must be one of {[n.value for n in Netting]}"
                    ) from None
            elif not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"genesis: {key!r} must be an integer, got {value!r}")
        return cls(**values)

    def encode(self) -> bytes:
        d = self.to_dict()
        for key, default in _HASHED_ONLY_IF_SET.items():  # so older genesis files keep their hash
            if d.get(key, default) == default:
                d.pop(key, None)
        return pack(["gn.genesis", FORMAT, *[d[k] for k in sorted(d)]])

    @property
    def hash(self) -> bytes:
        """SHA-256 of :meth:`encode`, computed once (the state root names it at every block)."""
        return self._hash

    def domain(self, kind: str) -> str:
        """The signature domain for ``kind`` in this community."""
        return f"{kind}:{self.community_id}"
