"""The replicated ledger: genesis, signed transactions, blocks, and the pure ``check``/``apply`` rules.

Every node keeps this state and re-derives it from the blocks alone; consensus only agrees on the
blocks. Rules of this module:

**Genesis.** A community is defined by a :class:`Genesis` (community id, genesis time, slot length and
gate lead, tariff, clearing rule, netting, reading deadline, how far ahead orders may go, the
members' and validators' public keys, n = 3f + 1 validators). Its canonical hash names the chain;
a parameter added after format 1 enters the hash only when it differs from its default.

**Refusals** carry an :class:`~market.errors.OrderReason` (the market's order rules) or a
:class:`~market.errors.LedgerReason` (membership, signature, nonce, readings, block validity);
undecodable bytes a :class:`~market.errors.WireReason`.

**Transactions** (canonical msgpack, signed by the household's Ed25519 key; the signature domain names the
community, so nothing signed for one community is valid in another):

* :class:`SignedOrder` — a market :class:`~market.orders.Order`. Admitted only if the signature is the
  household's, the household is a member, the order obeys the market rules with the price cap at retail,
  its slot is still open at the block's time and at most ``max_order_ahead_slots`` beyond the first
  open slot (a genesis parameter: a slot of 2**63 would otherwise be held forever), and its nonce
  is above the household's last used nonce
  (so a replayed or re-ordered older message is refused). A household has at most **one open order per
  slot**: a newer order for the same slot (higher nonce) *replaces* the open one (this is how forecasts
  are re-quoted before gate closure). Hence no household can sell the same energy twice, and a household
  can never trade with itself. Order ids are unique among open orders.
* :class:`SignedCancel` — removes the household's open order for a slot (slot still open, not too
  far ahead; nonce rule).
* :class:`SignedReading` — a household's measured net energy for a delivered slot (``+`` exported).
  Accepted once per household and slot, from the slot's end until ``reading_deadline_s`` after it.

**Blocks.** ``Block(height, prev_hash, time_ms, proposer, txs, state_root)``; the hash is SHA-256 of the
canonical bytes; ``state_root`` is the digest of the state *after* applying the block. A block is valid
(:func:`check`) when: its height is the next one, ``prev_hash`` is the head, its time is strictly later
than the previous block's (and, when the caller passes ``now_ms``, within ``max_drift_ms`` of the
checking node's clock: validators check this before prevoting; nodes replaying committed blocks don't), the proposer is a validator, every transaction is admitted in order
against the evolving state (a refused transaction makes the whole block invalid: proposers filter
first with :func:`admit`), and the ``state_root`` matches.

**Apply** (:func:`apply`), in this order: admit the transactions; then **clear** every slot whose gate
closure is ``<=`` the block time (each slot once, from exactly the orders the ledger holds for it, with
:func:`market.clearing.clear`), keeping its trades until settlement; then **settle** every cleared slot
whose readings are all in (every member) or whose reading deadline has passed. A household that traded
but sent no reading by the deadline is settled as if its meter read **0 Wh** (it delivered and used
nothing): a seller that does not report buys its whole contract back at retail, a buyer sells its
purchase back at feed-in, so staying silent never pays (:func:`settle_slot` is that rule, the only
copy: whoever settles a slot as the ledger does calls it). Bills add to the households' balances; the
grid and the netting pool are accounts too, so the sum of all balances is always exactly 0.

**Outcome.** :func:`apply_with_outcome` is :func:`apply` that also says what the block cleared (each
slot's book exactly as the ledger held it at gate closure, after every replacement and cancel, and
its trades) and what it settled (the readings and the :class:`~market.settlement.Settlement`): the
facts a chain reader (:mod:`gridnode.chain`) reports, taken from the ledger's own step, never
re-derived.

**State digest.** SHA-256 of the canonical encoding of the whole state (sorted keys). Two nodes agree
at a height iff their digests are equal.

Known limits: the member and validator sets are fixed at genesis; the whole state is re-encoded for the
digest at every block (fine for thousands of households, not millions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from gridnode.core.crypto import KeyPair, is_public_hex, verify_hex
from market.clearing import Rule, Trade, clear
from market.codec import order_from_wire, order_to_wire, pack, unpack
from market.errors import InvalidInput, LedgerReason, OrderReason, Reason, UsageError, WireReason
from market.orders import Order, OrderLimits, validate_order
from market.settlement import GRID, POOL, Netting, Settlement, Tariff, settle
from market.slots import SlotClock

__all__ = [
    "MAX_CLOCK_SPEEDUP",
    "Block",
    "BlockOutcome",
    "Genesis",
    "HouseholdTotals",
    "LedgerState",
    "SignedCancel",
    "SignedOrder",
    "SignedReading",
    "SlotCleared",
    "SlotSettled",
    "Tx",
    "admission_error",
    "admit",
    "apply",
    "apply_with_outcome",
    "build_block",
    "check",
    "decode_block",
    "decode_state",
    "decode_tx",
    "genesis_state",
    "settle_slot",
    "sign_cancel",
    "sign_order",
    "sign_reading",
    "tx_id",
]

FORMAT: Final = 1
ZERO_HASH: Final = b"\x00" * 32
MAX_TX_BYTES: Final = 8 * 1024
MAX_BLOCK_BYTES: Final = 4 * 1024 * 1024
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


# ------------------------------------------------------------------------------------------ genesis


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
    _clock: SlotClock = field(init=False, repr=False, compare=False)
    _limits: OrderLimits = field(init=False, repr=False, compare=False)

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
        return _sha256(self.encode())

    def domain(self, kind: str) -> str:
        """The signature domain for ``kind`` in this community."""
        return f"{kind}:{self.community_id}"


# ------------------------------------------------------------------------------------ transactions


def _seal(tx: object, wire: list[Any]) -> None:
    raw = pack(wire)
    object.__setattr__(tx, "raw", raw)
    object.__setattr__(tx, "id", _sha256(raw))


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order: Order
    signature: bytes
    #: the canonical bytes and their SHA-256 (the tx id), computed once: they are needed for every
    #: mempool lookup, block and state digest
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _seal(self, ["gn.tx.order", FORMAT, self.body(), self.signature])

    @property
    def household(self) -> str:
        return self.order.household

    def body(self) -> list[Any]:
        return order_to_wire(self.order)

    def encode(self) -> bytes:
        return self.raw


@dataclass(frozen=True, slots=True)
class SignedCancel:
    household: str
    slot: int
    nonce: int
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _seal(self, ["gn.tx.cancel", FORMAT, self.body(), self.signature])

    def body(self) -> list[Any]:
        return ["gn.cancel", FORMAT, self.household, self.slot, self.nonce]

    def encode(self) -> bytes:
        return self.raw


@dataclass(frozen=True, slots=True)
class SignedReading:
    household: str
    slot: int
    net_wh: int
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _seal(self, ["gn.tx.reading", FORMAT, self.body(), self.signature])

    def body(self) -> list[Any]:
        return ["gn.reading", FORMAT, self.household, self.slot, self.net_wh]

    def encode(self) -> bytes:
        return self.raw


Tx = SignedOrder | SignedCancel | SignedReading

_DOMAIN = {SignedOrder: "order", SignedCancel: "cancel", SignedReading: "reading"}


def tx_id(tx: Tx) -> bytes:
    """Content id of a transaction: SHA-256 of its canonical bytes."""
    return tx.id


def sign_order(key: KeyPair, genesis: Genesis, order: Order) -> SignedOrder:
    if order.household != key.public_hex:
        raise UsageError("an order's household must be the signing key's public key")
    return SignedOrder(order, key.sign(genesis.domain("order"), pack(order_to_wire(order))))


def sign_cancel(key: KeyPair, genesis: Genesis, *, slot: int, nonce: int) -> SignedCancel:
    unsigned = SignedCancel(key.public_hex, slot, nonce, b"")
    return replace(unsigned, signature=key.sign(genesis.domain("cancel"), pack(unsigned.body())))


def sign_reading(key: KeyPair, genesis: Genesis, *, slot: int, net_wh: int) -> SignedReading:
    unsigned = SignedReading(key.public_hex, slot, net_wh, b"")
    return replace(unsigned, signature=key.sign(genesis.domain("reading"), pack(unsigned.body())))


def _int(value: Any, what: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE,
            subject=what,
            field=field,
            expected="int",
            found=type(value).__name__,
        )
    return value


def _tx_from_wire(value: Any) -> Tx:
    if not isinstance(value, list) or len(value) != 4 or value[1] != FORMAT:
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="tx", expected="[tag, 1, body, signature]"
        )
    tag, _, body, sig = value
    if not isinstance(sig, bytes):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="tx", field="signature", expected="bytes"
        )
    if tag == "gn.tx.order":
        return SignedOrder(order_from_wire(body), sig)
    if not isinstance(body, list) or len(body) != 5 or body[1] != FORMAT:
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="tx", field="body", expected="array of 5"
        )
    household = body[2]
    if not isinstance(household, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="tx", field="household", expected="str"
        )
    if tag == "gn.tx.cancel" and body[0] == "gn.cancel":
        return SignedCancel(
            household, _int(body[3], "cancel", "slot"), _int(body[4], "cancel", "nonce"), sig
        )
    if tag == "gn.tx.reading" and body[0] == "gn.reading":
        return SignedReading(
            household, _int(body[3], "reading", "slot"), _int(body[4], "reading", "net_wh"), sig
        )
    raise InvalidInput(
        reason=WireReason.BAD_TAG,
        subject="tx",
        field="tag",
        expected="gn.tx.order|cancel|reading",
        found=repr(tag),
    )


def decode_tx(data: bytes) -> Tx:
    """Strictly parse one transaction (structure only; :func:`admit` checks the rules)."""
    return _tx_from_wire(unpack(data, what="tx", max_bytes=MAX_TX_BYTES))


def verify_signature(genesis: Genesis, tx: Tx) -> bool:
    return verify_hex(
        tx.household, genesis.domain(_DOMAIN[type(tx)]), pack(tx.body()), tx.signature
    )


# ------------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class HouseholdTotals:
    """A household's running totals over every settled slot."""

    bought_p2p_wh: int = 0
    sold_p2p_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    bill_micro: int = 0
    grid_only_bill_micro: int = 0
    slots_settled: int = 0

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.bill_micro


def _array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items (fixarray, array 16 or array 32)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _trades_wire(trades: Mapping[int, tuple[Trade, ...]]) -> list[Any]:
    return [[slot, [list(t) for t in ts]] for slot, ts in sorted(trades.items())]


def _totals_wire(totals: Mapping[str, HouseholdTotals]) -> list[Any]:
    return [
        [
            h,
            t.bought_p2p_wh,
            t.sold_p2p_wh,
            t.grid_import_wh,
            t.grid_export_wh,
            t.bill_micro,
            t.grid_only_bill_micro,
            t.slots_settled,
        ]
        for h, t in sorted(totals.items())
    ]


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Everything the blocks so far imply. Never mutated: :func:`apply` returns a new one.

    ``orders``: open (not yet cleared) orders by slot, then household. ``trades``: cleared slots awaiting
    settlement. ``readings``: meter readings by slot, then household. ``balances``: µ¤ per account,
    positive = the account is owed money; households, the grid and the pool; sum always 0.
    """

    genesis: Genesis
    height: int = 0
    head_hash: bytes = ZERO_HASH
    time_ms: int = 0
    nonces: Mapping[str, int] = field(default_factory=dict)
    orders: Mapping[int, Mapping[str, SignedOrder]] = field(default_factory=dict)
    trades: Mapping[int, tuple[Trade, ...]] = field(default_factory=dict)
    clearing_prices: Mapping[int, int | None] = field(default_factory=dict)
    readings: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    balances: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, HouseholdTotals] = field(default_factory=dict)
    last_cleared_slot: int = -1
    settled_slots: int = 0
    #: derived from ``orders`` (ids of every open order), kept so admission checks need not rebuild
    #: it; not part of the encoding or of equality
    open_order_ids: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: packed parts of :meth:`encode` by part name (or ``(name, slot)``), each with the object it
    #: packs; shared along a chain of states (:func:`apply` passes it on). A part is reused only
    #: while it packs the very same object, and state mappings are never mutated, so the bytes
    #: are always those of a fresh encoding. Not part of equality.
    memo: dict[Any, tuple[object, bytes]] = field(default_factory=dict, compare=False, repr=False)

    def encode(self) -> bytes:
        """Canonical bytes of the whole state (what the digest covers): the msgpack array of
        :meth:`_encode_plain`, assembled from memoised parts (an array's encoding is its header
        followed by its items' encodings), so a block that changes a few slots re-packs those."""
        memo = self.memo

        def part(key: Any, obj: object, build: Callable[[], Any]) -> bytes:
            hit = memo.get(key)
            if hit is not None and hit[0] is obj:
                return hit[1]
            data = pack(build())
            memo[key] = (obj, data)
            return data

        def by_slot(
            name: str, top: Mapping[int, Mapping[str, Any]], enc: Callable[[Any], Any]
        ) -> bytes:
            def one(slot: int, inner: Mapping[str, Any]) -> bytes:
                return part(
                    (name, slot),
                    inner,
                    lambda: [slot, [[h, enc(v)] for h, v in sorted(inner.items())]],
                )

            items = sorted(top.items())
            return _array_header(len(items)) + b"".join(one(slot, inner) for slot, inner in items)

        out = b"".join(
            [
                _array_header(15),
                pack("gn.state"),
                pack(FORMAT),
                pack(self.genesis.hash),
                pack(self.height),
                pack(self.head_hash),
                pack(self.time_ms),
                part("nonces", self.nonces, lambda: sorted(self.nonces.items())),
                by_slot("orders", self.orders, lambda o: o.encode()),
                part("trades", self.trades, lambda: _trades_wire(self.trades)),
                part("prices", self.clearing_prices, lambda: sorted(self.clearing_prices.items())),
                by_slot("readings", self.readings, lambda v: v),
                part("balances", self.balances, lambda: sorted(self.balances.items())),
                part("totals", self.totals, lambda: _totals_wire(self.totals)),
                pack(self.last_cleared_slot),
                pack(self.settled_slots),
            ]
        )
        if len(memo) > 64:  # forget slots no longer in the state
            live = {("orders", s) for s in self.orders} | {("readings", s) for s in self.readings}
            for key in [k for k in memo if isinstance(k, tuple) and k not in live]:
                del memo[key]
        return out

    def _encode_plain(self) -> bytes:
        """:meth:`encode` without the memo (the definition; tests compare the two)."""
        return pack(
            [
                "gn.state",
                FORMAT,
                self.genesis.hash,
                self.height,
                self.head_hash,
                self.time_ms,
                sorted(self.nonces.items()),
                [
                    [slot, [[h, o.encode()] for h, o in sorted(by_h.items())]]
                    for slot, by_h in sorted(self.orders.items())
                ],
                _trades_wire(self.trades),
                sorted(self.clearing_prices.items()),
                [[slot, sorted(r.items())] for slot, r in sorted(self.readings.items())],
                sorted(self.balances.items()),
                _totals_wire(self.totals),
                self.last_cleared_slot,
                self.settled_slots,
            ]
        )

    def digest(self) -> bytes:
        return _sha256(self.encode())

    def open_order(self, slot: int, household: str) -> SignedOrder | None:
        return self.orders.get(slot, {}).get(household)


def decode_state(data: bytes, genesis: Genesis) -> LedgerState:
    """Inverse of :meth:`LedgerState.encode` (for snapshots); the genesis must be the one it was made for."""
    value = unpack(data, what="state", max_bytes=1 << 30)
    try:
        (
            tag,
            version,
            g_hash,
            height,
            head,
            time_ms,
            nonces,
            orders,
            trades,
            prices,
            readings,
            balances,
            totals,
            last_cleared,
            settled,
        ) = value
    except (TypeError, ValueError):
        raise InvalidInput(reason=WireReason.BAD_SHAPE, subject="state snapshot") from None
    if tag != "gn.state" or version != FORMAT:
        raise InvalidInput(reason=WireReason.BAD_TAG, subject="state snapshot", found=repr(tag))
    if g_hash != genesis.hash:
        raise InvalidInput(
            reason=LedgerReason.WRONG_GENESIS,
            subject="state snapshot",
            expected=genesis.hash.hex()[:16],
        )
    order_map: dict[int, dict[str, SignedOrder]] = {}
    for slot, by_h in orders:
        parsed = {}
        for h, raw in by_h:
            tx = decode_tx(raw)
            if not isinstance(tx, SignedOrder):
                raise InvalidInput(
                    reason=WireReason.BAD_TYPE, subject="state snapshot", field="orders"
                )
            parsed[h] = tx
        order_map[slot] = parsed
    return LedgerState(
        genesis=genesis,
        height=height,
        head_hash=head,
        time_ms=time_ms,
        nonces=dict(nonces),
        orders=order_map,
        trades={slot: tuple(Trade(*t) for t in ts) for slot, ts in trades},
        clearing_prices=dict(prices),
        readings={slot: dict(r) for slot, r in readings},
        balances=dict(balances),
        totals={t[0]: HouseholdTotals(*t[1:]) for t in totals},
        last_cleared_slot=last_cleared,
        settled_slots=settled,
        open_order_ids=frozenset(o.order.order_id for v in order_map.values() for o in v.values()),
    )


def genesis_state(genesis: Genesis) -> LedgerState:
    """The state before block 1."""
    clock = genesis.clock
    return LedgerState(
        genesis=genesis,
        time_ms=genesis.genesis_time_ms,
        last_cleared_slot=clock.first_open_slot(genesis.genesis_time_ms // 1000) - 1,
    )


# ------------------------------------------------------------------------------------------ blocks


@dataclass(frozen=True, slots=True)
class Block:
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: str
    txs: tuple[Tx, ...]
    state_root: bytes

    def encode(self) -> bytes:
        return pack(
            [
                "gn.block",
                FORMAT,
                self.height,
                self.prev_hash,
                self.time_ms,
                self.proposer,
                [tx.encode() for tx in self.txs],
                self.state_root,
            ]
        )

    @property
    def hash(self) -> bytes:
        return _sha256(self.encode())


def decode_block(data: bytes) -> Block:
    """Strictly parse a block's bytes (structure only; :func:`check` checks the rules)."""
    value = unpack(data, what="block", max_bytes=MAX_BLOCK_BYTES)
    if (
        not isinstance(value, list)
        or len(value) != 8
        or value[0] != "gn.block"
        or value[1] != FORMAT
    ):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="block", expected="['gn.block', 1, …] of 8"
        )
    _, _, height, prev, time_ms, proposer, txs, root = value
    if not isinstance(prev, bytes) or not isinstance(root, bytes) or not isinstance(proposer, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", expected="bytes hashes and str proposer"
        )
    if not isinstance(txs, list) or not all(isinstance(t, bytes) for t in txs):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="block", field="txs", expected="array of bytes"
        )
    return Block(
        height=_int(height, "block", "height"),
        prev_hash=prev,
        time_ms=_int(time_ms, "block", "time_ms"),
        proposer=proposer,
        txs=tuple(_tx_from_wire(unpack(t, what="tx", max_bytes=MAX_TX_BYTES)) for t in txs),
        state_root=root,
    )


# ------------------------------------------------------------------------------------------ rules


class _Draft:
    """Working copy used inside one :func:`apply` or admission check; never escapes it.

    Copy-on-write: it reads the state's mappings until something is written, so checking one
    transaction against a large state costs O(1), not O(state). :class:`_Work` takes full copies
    before clearing and settlement.
    """

    def __init__(self, state: LedgerState, verified: set[bytes] | None = None) -> None:
        self.state = state
        self.verified = verified
        self.nonces: Mapping[str, int] = state.nonces
        self.orders: Mapping[int, Mapping[str, SignedOrder]] = state.orders
        self.readings: Mapping[int, Mapping[str, int]] = state.readings
        self.order_ids: AbstractSet[str] = state.open_order_ids
        if state.orders and not state.open_order_ids:  # a state built without the derived field
            self.order_ids = frozenset(
                o.order.order_id for v in state.orders.values() for o in v.values()
            )
        self._own: set[str] = set()
        self._own_slots: set[tuple[str, int]] = set()

    # -- writes used by admission (copy on first write) --
    def set_nonce(self, household: str, nonce: int) -> None:
        if "nonces" not in self._own:
            self.nonces = dict(self.nonces)
            self._own.add("nonces")
        self.nonces[household] = nonce  # type: ignore[index]

    def _ids(self) -> set[str]:
        if "ids" not in self._own:
            self.order_ids = set(self.order_ids)
            self._own.add("ids")
        return self.order_ids  # type: ignore[return-value]

    def _slot_dict(self, name: str, slot: int) -> dict[str, Any]:
        top: Any = getattr(self, name)
        if name not in self._own:
            top = dict(top)
            setattr(self, name, top)
            self._own.add(name)
        if (name, slot) not in self._own_slots:
            top[slot] = dict(top.get(slot, {}))
            self._own_slots.add((name, slot))
        inner: dict[str, Any] = top[slot]
        return inner

    def put_order(self, tx: SignedOrder, previous: SignedOrder | None) -> None:
        ids = self._ids()
        if previous is not None:
            ids.discard(previous.order.order_id)
        self._slot_dict("orders", tx.order.slot)[tx.household] = tx
        ids.add(tx.order.order_id)

    def drop_order(self, slot: int, previous: SignedOrder) -> None:
        self._ids().discard(previous.order.order_id)
        by_h = self._slot_dict("orders", slot)
        del by_h[previous.household]
        if not by_h:
            del self.orders[slot]  # type: ignore[attr-defined]
            self._own_slots.discard(("orders", slot))

    def put_reading(self, slot: int, household: str, net_wh: int) -> None:
        self._slot_dict("readings", slot)[household] = net_wh


@dataclass(slots=True)
class _Work:
    """Owned copies for clearing, settlement and booking inside :func:`apply`.

    Clearing and settlement only add or drop whole slots, so ``orders`` and ``readings`` are copies
    of the outer mapping whose per-slot mappings are shared (never written); ``nonces`` is not
    written at all. Sharing what did not change keeps :meth:`LedgerState.encode`'s memo useful.
    """

    state: LedgerState
    nonces: Mapping[str, int]
    orders: dict[int, Mapping[str, SignedOrder]]
    readings: dict[int, Mapping[str, int]]
    order_ids: set[str]
    trades: dict[int, tuple[Trade, ...]]
    prices: dict[int, int | None]
    balances: dict[str, int]
    totals: dict[str, HouseholdTotals]
    cleared: int = 0  # slots cleared in this block

    @classmethod
    def of(cls, draft: _Draft) -> _Work:
        state = draft.state
        return cls(
            state=state,
            nonces=draft.nonces,
            orders=dict(draft.orders),
            readings=dict(draft.readings),
            order_ids=set(draft.order_ids),
            trades=dict(state.trades),
            prices=dict(state.clearing_prices),
            balances=dict(state.balances),
            totals=dict(state.totals),
        )


def _reject(reason: Reason, tx: Tx, expected: str, found: object) -> InvalidInput:
    return InvalidInput(
        reason=reason,
        subject=f"{type(tx).__name__} from {tx.household[:16]}",
        expected=expected,
        found=str(found),
    )


def _signature_ok(draft: _Draft, genesis: Genesis, tx: Tx) -> bool:
    """Verify once per cache: ``draft.verified`` holds ids (hash of the full signed bytes) of
    transactions whose signature already verified, so a cache hit means the same bytes."""
    if draft.verified is None:
        return verify_signature(genesis, tx)
    tid = tx_id(tx)
    if tid in draft.verified:
        return True
    if not verify_signature(genesis, tx):
        return False
    if len(draft.verified) > 500_000:
        draft.verified.clear()
    draft.verified.add(tid)
    return True


def _order_ok(draft: _Draft, genesis: Genesis, tx: SignedOrder) -> None:
    """:func:`~market.orders.validate_order` once per cache: the order's rules depend only on its
    bytes and the genesis, so ``draft.verified`` also remembers ``b"o" + id`` of orders that passed
    (33 bytes: never equal to a 32-byte signature-cache id)."""
    key = b"o" + tx_id(tx)
    if draft.verified is not None and key in draft.verified:
        return
    validate_order(tx.order, limits=genesis.limits)
    if draft.verified is not None:
        draft.verified.add(key)


def _admit(draft: _Draft, tx: Tx, time_ms: int, *, write: bool = True) -> None:
    """Check ``tx`` on top of ``draft`` and (if ``write``) record it there.

    ``write=False`` is the single-transaction check of :func:`admission_error`: it raises the same
    errors and copies nothing (a written draft copies the slot's orders, the nonces and the open
    ids on first write: O(state), which a mempool check per transaction per validator cannot afford).
    """
    genesis = draft.state.genesis
    now_s = time_ms // 1000
    clock = genesis.clock
    if tx.household not in genesis.member_set:
        raise _reject(LedgerReason.NOT_A_MEMBER, tx, "a member of the community", tx.household[:16])
    if not _signature_ok(draft, genesis, tx):
        raise _reject(LedgerReason.BAD_SIGNATURE, tx, "the household's signature", "another")
    if isinstance(tx, SignedReading):
        if now_s < clock.end(tx.slot):
            raise _reject(
                LedgerReason.SLOT_NOT_DELIVERED, tx, f"block time >= {clock.end(tx.slot)}", now_s
            )
        if now_s >= clock.end(tx.slot) + genesis.reading_deadline_seconds:
            raise _reject(LedgerReason.READING_TOO_LATE, tx, "a reading before the deadline", now_s)
        if tx.household in draft.readings.get(tx.slot, {}):
            raise _reject(
                LedgerReason.DUPLICATE_READING, tx, "one reading per household and slot", tx.slot
            )
        if abs(tx.net_wh) > genesis.limits.max_energy_wh:
            raise _reject(
                OrderReason.ENERGY_TOO_LARGE,
                tx,
                f"|net_wh| <= {genesis.limits.max_energy_wh}",
                tx.net_wh,
            )
        if write:
            draft.put_reading(tx.slot, tx.household, tx.net_wh)
        return
    nonce = tx.order.nonce if isinstance(tx, SignedOrder) else tx.nonce
    if nonce <= draft.nonces.get(tx.household, -1):
        raise _reject(
            LedgerReason.STALE_NONCE, tx, f"nonce > {draft.nonces.get(tx.household, -1)}", nonce
        )
    slot = tx.order.slot if isinstance(tx, SignedOrder) else tx.slot
    why = clock.window_error(slot, now_s, max_ahead_slots=genesis.max_order_ahead_slots)
    if why is not None:
        first = clock.first_open_slot(now_s)
        last = first + genesis.max_order_ahead_slots
        raise _reject(why, tx, f"a slot open at {now_s} (in {first}..{last})", slot)
    previous = draft.orders.get(slot, {}).get(tx.household)
    if isinstance(tx, SignedOrder):
        _order_ok(draft, genesis, tx)
        if tx.order.order_id in draft.order_ids and (
            previous is None or previous.order.order_id != tx.order.order_id
        ):
            raise _reject(OrderReason.DUPLICATE_ID, tx, "an order id not in use", tx.order.order_id)
        if write:
            draft.put_order(tx, previous)
    else:
        if previous is None:
            raise _reject(LedgerReason.NO_OPEN_ORDER, tx, "an open order to cancel", slot)
        if write:
            draft.drop_order(slot, previous)
    if write:
        draft.set_nonce(tx.household, nonce)


def _clear_due(draft: _Work, time_ms: int, outcome: list[SlotCleared] | None) -> int:
    """Clear every slot whose gate closed by ``time_ms``; returns the last cleared slot."""
    genesis = draft.state.genesis
    last_closed = genesis.clock.first_open_slot(time_ms // 1000) - 1
    for slot in sorted(s for s in draft.orders if s <= last_closed):
        held = draft.orders.pop(slot)
        book = [so.order for so in held.values()]
        result = clear(book, slot=slot, rule=genesis.rule)
        trades = tuple(result.trades)
        if trades:
            draft.trades[slot] = trades
        draft.prices[slot] = result.clearing_price_micro_per_kwh
        for o in book:
            draft.order_ids.discard(o.order_id)
        draft.cleared += 1
        if outcome is not None:
            outcome.append(SlotCleared(slot, held, result.clearing_price_micro_per_kwh, trades))
    return max(last_closed, draft.state.last_cleared_slot)


def _settle_due(
    draft: _Work, time_ms: int, last_cleared: int, outcome: list[SlotSettled] | None
) -> int:
    genesis = draft.state.genesis
    clock = genesis.clock
    now_s = time_ms // 1000
    members = genesis.members
    settled = 0
    for slot in sorted(set(draft.trades) | set(draft.readings)):
        if slot > last_cleared:
            continue
        readings = draft.readings.get(slot, {})
        deadline_passed = now_s >= clock.end(slot) + genesis.reading_deadline_seconds
        if not deadline_passed and len(readings) < len(members):
            continue
        trades = draft.trades.pop(slot, ())
        draft.readings.pop(slot, None)
        result = settle_slot(genesis, slot, trades, readings)
        _book(draft, result)
        settled += 1
        if outcome is not None:
            outcome.append(SlotSettled(slot, readings, result))
    return settled


def settle_slot(
    genesis: Genesis, slot: int, trades: Iterable[Trade], readings: Mapping[str, int]
) -> Settlement:
    """Settle ``slot`` as the ledger does: its ``trades`` against the households' signed
    ``readings`` with the genesis tariff and netting, where a household that traded but sent no
    reading counts as having read **0 Wh** (the module rules). The one copy of that rule."""
    trades = tuple(trades)
    meters = dict(readings)
    for t in trades:
        meters.setdefault(t.buyer, 0)
        meters.setdefault(t.seller, 0)
    return settle(slot, trades, meters, genesis.tariff, netting=genesis.netting)


def _book(draft: _Work, result: Settlement) -> None:
    for t in result.transfers:
        draft.balances[t.payer] = draft.balances.get(t.payer, 0) - t.amount_micro
        draft.balances[t.payee] = draft.balances.get(t.payee, 0) + t.amount_micro
    for b in result.bills:
        old = draft.totals.get(b.household, HouseholdTotals())
        draft.totals[b.household] = HouseholdTotals(
            bought_p2p_wh=old.bought_p2p_wh + b.bought_p2p_wh,
            sold_p2p_wh=old.sold_p2p_wh + b.sold_p2p_wh,
            grid_import_wh=old.grid_import_wh + b.grid_import_wh,
            grid_export_wh=old.grid_export_wh + b.grid_export_wh,
            bill_micro=old.bill_micro + b.bill_micro,
            grid_only_bill_micro=old.grid_only_bill_micro + b.grid_only_bill_micro,
            slots_settled=old.slots_settled + 1,
        )


def _run(
    state: LedgerState,
    *,
    height: int,
    head_hash: bytes,
    time_ms: int,
    txs: Iterable[Tx],
    verified: set[bytes] | None = None,
    cleared: list[SlotCleared] | None = None,
    settled_out: list[SlotSettled] | None = None,
) -> LedgerState:
    admitting = _Draft(state, verified)
    for tx in txs:
        _admit(admitting, tx, time_ms)
    draft = _Work.of(admitting)
    last_cleared = _clear_due(draft, time_ms, cleared)
    settled = _settle_due(draft, time_ms, last_cleared, settled_out)
    if sum(draft.balances.values()) != 0:  # pragma: no cover - settlement already guarantees it
        raise AssertionError("ledger balances do not sum to zero")
    market = draft.cleared or settled  # otherwise trades, prices, balances, totals are unchanged
    return LedgerState(
        genesis=state.genesis,
        height=height,
        head_hash=head_hash,
        time_ms=time_ms,
        nonces=draft.nonces,
        orders=draft.orders,
        trades=draft.trades if market else state.trades,
        clearing_prices=draft.prices if market else state.clearing_prices,
        readings=draft.readings,
        balances={k: v for k, v in draft.balances.items() if v or k in (GRID, POOL)}
        if settled
        else state.balances,
        totals=draft.totals if settled else state.totals,
        last_cleared_slot=last_cleared,
        settled_slots=state.settled_slots + settled,
        open_order_ids=frozenset(draft.order_ids),
        memo=state.memo,
    )


def admit(
    state: LedgerState, txs: Iterable[Tx], *, time_ms: int, verified: set[bytes] | None = None
) -> list[Tx]:
    """The longest valid selection of ``txs``, in order: what a proposer may put in a block at ``time_ms``.

    Each transaction is kept if it is admissible after the ones kept before it.
    """
    draft = _Draft(state, verified)
    kept: list[Tx] = []
    for tx in txs:
        try:
            _admit(draft, tx, time_ms)  # raises before it changes anything
        except InvalidInput:
            continue
        kept.append(tx)
    return kept


def admission_error(
    state: LedgerState, tx: Tx, *, time_ms: int, verified: set[bytes] | None = None
) -> InvalidInput | None:
    """Why ``tx`` would be refused on top of ``state`` at ``time_ms``, or ``None`` if admissible."""
    try:
        _admit(_Draft(state, verified), tx, time_ms, write=False)
    except InvalidInput as exc:
        return exc
    return None


def build_block(
    state: LedgerState,
    *,
    time_ms: int,
    proposer: str,
    txs: Sequence[Tx],
    verified: set[bytes] | None = None,
) -> tuple[Block, LedgerState]:
    """A valid next block from the admissible part of ``txs``, and the state after it."""
    time_ms = max(time_ms, state.time_ms + 1)
    chosen = tuple(admit(state, txs, time_ms=time_ms, verified=verified))
    unsigned = Block(state.height + 1, state.head_hash, time_ms, proposer, chosen, ZERO_HASH)
    after = _run(
        state,
        height=unsigned.height,
        head_hash=ZERO_HASH,
        time_ms=time_ms,
        txs=chosen,
        verified=verified,
    )
    block = replace(unsigned, state_root=_root(after))
    return block, replace(after, head_hash=block.hash)


def _root(state_with_zero_head: LedgerState) -> bytes:
    # the root cannot cover the block's own hash (it is part of the block): it covers everything else
    return state_with_zero_head.digest()


def check(
    state: LedgerState,
    block: Block,
    *,
    now_ms: int | None = None,
    verified: set[bytes] | None = None,
) -> LedgerState:
    """Validate ``block`` as the next block; return the state after it, or raise :class:`InvalidInput`.

    ``verified`` is an optional cache of ids of transactions whose signatures (and, for orders,
    order rules) already passed, filled as a side effect; it changes how fast the answer comes,
    never the answer.
    """
    return _checked(state, block, now_ms=now_ms, verified=verified, outcome=None)


def _checked(
    state: LedgerState,
    block: Block,
    *,
    now_ms: int | None,
    verified: set[bytes] | None,
    outcome: tuple[list[SlotCleared], list[SlotSettled]] | None,
) -> LedgerState:
    """:func:`check`; with ``outcome``, also append what the block cleared and settled to it."""
    genesis = state.genesis

    def bad(reason: LedgerReason, expected: object, found: object) -> InvalidInput:
        return InvalidInput(
            reason=reason, subject=f"block {block.height}", expected=str(expected), found=str(found)
        )

    if block.height != state.height + 1:
        raise bad(LedgerReason.WRONG_HEIGHT, state.height + 1, block.height)
    if block.prev_hash != state.head_hash:
        raise bad(
            LedgerReason.WRONG_PREV_HASH, state.head_hash.hex()[:16], block.prev_hash.hex()[:16]
        )
    if block.time_ms <= state.time_ms:
        raise bad(LedgerReason.TIME_NOT_MONOTONIC, f"> {state.time_ms}", block.time_ms)
    if now_ms is not None and block.time_ms > now_ms + genesis.max_drift_ms:
        raise bad(LedgerReason.TIME_IN_FUTURE, f"<= {now_ms + genesis.max_drift_ms}", block.time_ms)
    if now_ms is not None and block.time_ms < now_ms - genesis.max_drift_ms:
        raise bad(LedgerReason.TIME_TOO_OLD, f">= {now_ms - genesis.max_drift_ms}", block.time_ms)
    if block.proposer not in genesis.validators:
        raise bad(LedgerReason.NOT_A_VALIDATOR, "a validator's key", block.proposer[:16])
    after = _run(
        state,
        height=block.height,
        head_hash=ZERO_HASH,
        time_ms=block.time_ms,
        txs=block.txs,
        verified=verified,
        cleared=None if outcome is None else outcome[0],
        settled_out=None if outcome is None else outcome[1],
    )
    if _root(after) != block.state_root:
        raise bad(
            LedgerReason.WRONG_STATE_ROOT, _root(after).hex()[:16], block.state_root.hex()[:16]
        )
    return replace(after, head_hash=block.hash)


def apply(state: LedgerState, block: Block, *, verified: set[bytes] | None = None) -> LedgerState:
    """The state after a committed ``block`` (which :func:`check` accepted). Pure and deterministic."""
    return check(state, block, verified=verified)


@dataclass(frozen=True, slots=True)
class SlotCleared:
    """A slot the ledger cleared at its gate closure (see the module rules).

    ``book``: the orders it held for the slot then, by household (every replacement and cancel
    already applied); ``trades`` and the price are :func:`market.clearing.clear` of exactly those.
    Slots without any order are not cleared one by one (no fact): they just fall behind
    ``last_cleared_slot``."""

    slot: int
    book: Mapping[str, SignedOrder]
    clearing_price_micro_per_kwh: int | None
    trades: tuple[Trade, ...]

    @property
    def volume_wh(self) -> int:
        return sum(t.energy_wh for t in self.trades)


@dataclass(frozen=True, slots=True)
class SlotSettled:
    """A slot the ledger settled: the ``readings`` households signed (a missing one is absent
    here and counts as 0 Wh in ``settlement``: :func:`settle_slot`) and what was billed."""

    slot: int
    readings: Mapping[str, int]
    settlement: Settlement


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What applying one block did: the new state, and the slots it cleared and settled (in slot
    order, the order :func:`apply` handles them)."""

    state: LedgerState
    cleared: tuple[SlotCleared, ...]
    settled: tuple[SlotSettled, ...]


def apply_with_outcome(
    state: LedgerState, block: Block, *, verified: set[bytes] | None = None
) -> BlockOutcome:
    """:func:`apply`, and what the block cleared and settled, from the same single step."""
    cleared: list[SlotCleared] = []
    settled: list[SlotSettled] = []
    after = _checked(state, block, now_ms=None, verified=verified, outcome=(cleared, settled))
    return BlockOutcome(after, tuple(cleared), tuple(settled))
