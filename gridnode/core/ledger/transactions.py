"""Signed household transactions: orders, cancels, meter readings; signing, ids and strict decoding.

**Transactions** (canonical msgpack ``[tag, 1, body, signature]``, signed by the household's Ed25519
key over the msgpack of ``body``; the signature domain names the community, so nothing signed for one
community is valid in another):

* :class:`SignedOrder` (``gn.tx.order``) — a market :class:`~market.orders.Order`, and optionally
  the **model** that produced it: the 32-byte content hash of a committed community model, appended
  to the order's wire array as a 9th element (signed with it). Absent means "a local model" (the
  household's own forecaster, or a hand-placed order); the order's bytes are then exactly those of
  an order without provenance. A present hash is never all zeros (that would be a second way to
  say "local"), and the ledger refuses one it never committed (:mod:`.rules`).
* :class:`SignedCancel` (``gn.tx.cancel``) — removes the household's open order for a slot.
* :class:`SignedReading` (``gn.tx.reading``) — a household's measured net energy for a delivered
  slot (``+`` exported).
* :class:`SignedBundle` (``gn.tx.bundle``) — what a household's daemon sends at a slot boundary,
  signed **once**: its reading of the slot just delivered (optional) and its orders for the slots
  it quotes (0..k, at most one per slot; each a full market order with its own order id and nonce,
  and optionally its model, exactly as in ``gn.tx.order``). Body ``["gn.bundle", 1, household,
  [slot, net_wh] | nil, [order, ...]]`` (each order the 8-element order array, or 9 with the
  model hash). Neither part may be missing from both (an empty bundle is ``bad_shape``); two
  orders for one slot are ``duplicate_in_batch``. The ledger admits a bundle **all or nothing**
  (:mod:`.rules`): every part obeys the rules of its separate kind, and one refused part refuses
  the bundle with that part's reason. An order a bundle placed is held open as a
  :class:`BundledOrder` (the order, its model, and the bundle): it has no transaction id of its
  own — it is named by its order id (as provenance names every order) and located by the
  bundle's id and its slot; the state root commits to the bundle's bytes as its open order.
* :class:`SignedModel` (``gn.tx.model``) — a federated round's result, signed by the round's
  aggregator (a validator): the model's content hash, the round, the previous model's hash, the
  number of contributors, the securely summed held-back validation (the model's integer
  validation entries, :data:`MODEL_VALIDATION_FIELDS`) and the feature/code version
  (``docs/federated.md``, "Provenance on the ledger").

What makes a transaction admissible (membership, signature, nonce, slot window, one open order per
household and slot, one reading per household and slot) is a ledger rule: :mod:`.rules`.

A transaction's id is the SHA-256 of its canonical bytes, computed once when it is built. The
``sign_*`` functions pack the body once: it is what the key signs, and the transaction's canonical
bytes are laid out from it (msgpack's array of four is its header followed by its items' own
bytes, so ``_HEADS[kind] + body + pack(signature)`` *is* ``pack([tag, 1, body, signature])``,
tested against that definition), never packed a second time.
:func:`decode_tx` parses structure only (at most ``MAX_TX_BYTES``); undecodable bytes raise
:class:`~market.errors.InvalidInput` with a :class:`~market.errors.WireReason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from gridnode.core.crypto import KeyPair, verify, verify_hex
from gridnode.core.ledger.genesis import FORMAT, Genesis, _sha256
from market.codec import order_from_wire, order_to_wire, pack, unpack
from market.errors import InvalidInput, UsageError, WireReason
from market.orders import Order

__all__ = [
    "MAX_TX_BYTES",
    "MODEL_VALIDATION_FIELDS",
    "BundleReading",
    "BundledOrder",
    "OpenOrder",
    "SignedBundle",
    "SignedCancel",
    "SignedModel",
    "SignedOrder",
    "SignedReading",
    "Tx",
    "decode_tx",
    "sign_bundle",
    "sign_cancel",
    "sign_model",
    "sign_order",
    "sign_reading",
    "tx_id",
    "verify_signature",
]

MAX_TX_BYTES: Final = 8 * 1024
#: the summed validation integers a model commitment carries, in this order (16-bit fixed point
#: sums over the contributors: ``forecasting.federated.VALIDATION_FIELDS``)
MODEL_VALIDATION_FIELDS: Final = (
    "count",
    "abs_error",
    "pinball_p10",
    "pinball_p50",
    "pinball_p90",
    "naive_abs_error",
    "covered",
)
#: a model commitment's feature version is at most this many characters
MAX_FEATURES_CHARS: Final = 32


def _seal(tx: object, wire: list[Any]) -> None:
    raw = pack(wire)
    object.__setattr__(tx, "raw", raw)
    object.__setattr__(tx, "id", _sha256(raw))


def _signed(
    cls: type[_TxT], key: KeyPair, genesis: Genesis, body: list[Any], **values: Any
) -> _TxT:
    """A transaction of kind ``cls`` signed by ``key``: ``body`` packed once, signed under the
    kind's domain, and the transaction's bytes laid out from it (module rules), not packed again;
    ``values``: its fields but the signature."""
    packed = pack(body)
    signature = key.sign(genesis.domain(_DOMAIN[cls]), packed)
    tx = _decoded(cls, _HEADS[cls] + packed + pack(signature), None, signature=signature, **values)
    assert isinstance(tx, cls)
    return tx


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order: Order
    signature: bytes
    #: the committed community model that produced the order (``None``: a local model)
    model: bytes | None = None
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
        return _order_body(self.order, self.model)

    def encode(self) -> bytes:
        return self.raw


def _order_body(order: Order, model: bytes | None) -> list[Any]:
    wire = order_to_wire(order)
    return wire if model is None else [*wire, model]


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
        return _cancel_body(self.household, self.slot, self.nonce)

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
        return _reading_body(self.household, self.slot, self.net_wh)

    def encode(self) -> bytes:
        return self.raw


@dataclass(frozen=True, slots=True)
class SignedModel:
    """A federated round's committed result, signed by its aggregator (module rules)."""

    aggregator: str  # the aggregating validator's public key (hex)
    round: int
    model: bytes  # the model's content hash (32 bytes)
    previous: bytes  # the previous committed model's hash (32 zero bytes for the first)
    contributors: int
    validation: tuple[int, ...]  # MODEL_VALIDATION_FIELDS
    features: str  # the feature/code version
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _seal(self, ["gn.tx.model", FORMAT, self.body(), self.signature])

    @property
    def household(self) -> str:
        """The signer (every transaction names its signer ``household``)."""
        return self.aggregator

    def body(self) -> list[Any]:
        return _model_body(
            self.aggregator,
            self.round,
            self.model,
            self.previous,
            self.contributors,
            self.validation,
            self.features,
        )

    def encode(self) -> bytes:
        return self.raw


@dataclass(frozen=True, slots=True)
class BundleReading:
    """The reading a :class:`SignedBundle` carries: the household's measured net energy (Wh,
    ``+`` exported) of a delivered ``slot``, as a :class:`SignedReading` would."""

    slot: int
    net_wh: int


@dataclass(frozen=True, slots=True)
class SignedBundle:
    """A household's reading and orders of one slot boundary, signed once (module rules).

    ``models[i]`` is the committed community model that produced ``orders[i]`` (``None``: a
    local model)."""

    household: str
    reading: BundleReading | None
    orders: tuple[Order, ...]
    models: tuple[bytes | None, ...]
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _seal(self, ["gn.tx.bundle", FORMAT, self.body(), self.signature])

    def body(self) -> list[Any]:
        return _bundle_body(self.household, self.reading, self.orders, self.models)

    def encode(self) -> bytes:
        return self.raw

    def placed(self) -> tuple[BundledOrder, ...]:
        """Its orders as the ledger holds them open, in the bundle's order."""
        return tuple(
            BundledOrder(o, m, self) for o, m in zip(self.orders, self.models, strict=True)
        )


@dataclass(frozen=True, slots=True)
class BundledOrder:
    """An order a :class:`SignedBundle` placed, as the ledger holds it open: ``order`` and its
    ``model`` as the bundle carries them, and the ``bundle`` itself (its signature covers the
    order). ``raw`` and ``id`` are the *bundle's* (the transaction that placed the order): an
    order inside a bundle has no transaction id of its own (module rules)."""

    order: Order
    model: bytes | None
    bundle: SignedBundle = field(repr=False)

    @property
    def household(self) -> str:
        return self.order.household

    @property
    def raw(self) -> bytes:
        return self.bundle.raw

    @property
    def id(self) -> bytes:
        return self.bundle.id


#: an open order as the ledger holds it: placed by its own transaction or by a bundle
OpenOrder = SignedOrder | BundledOrder


def _bundle_body(
    household: str,
    reading: BundleReading | None,
    orders: tuple[Order, ...],
    models: tuple[bytes | None, ...],
) -> list[Any]:
    return [
        "gn.bundle",
        FORMAT,
        household,
        None if reading is None else [reading.slot, reading.net_wh],
        [_order_body(o, m) for o, m in zip(orders, models, strict=True)],
    ]


def _cancel_body(household: str, slot: int, nonce: int) -> list[Any]:
    return ["gn.cancel", FORMAT, household, slot, nonce]


def _reading_body(household: str, slot: int, net_wh: int) -> list[Any]:
    return ["gn.reading", FORMAT, household, slot, net_wh]


def _model_body(  # noqa: PLR0917 - the body's fields, in the body's order
    aggregator: str,
    round: int,
    model: bytes,
    previous: bytes,
    contributors: int,
    validation: tuple[int, ...],
    features: str,
) -> list[Any]:
    return [
        "gn.model",
        FORMAT,
        aggregator,
        round,
        model,
        previous,
        contributors,
        list(validation),
        features,
    ]


Tx = SignedOrder | SignedCancel | SignedReading | SignedModel | SignedBundle
_TxT = TypeVar("_TxT", SignedOrder, SignedCancel, SignedReading, SignedModel, SignedBundle)

_DOMAIN = {
    SignedOrder: "order",
    SignedCancel: "cancel",
    SignedReading: "reading",
    SignedModel: "model",
    SignedBundle: "bundle",
}
_TAG_BYTES: Final = {
    SignedOrder: pack("gn.tx.order"),
    SignedCancel: pack("gn.tx.cancel"),
    SignedReading: pack("gn.tx.reading"),
    SignedModel: pack("gn.tx.model"),
    SignedBundle: pack("gn.tx.bundle"),
}
#: what a transaction's bytes start with: msgpack's array-of-4 header, the tag and the format
_HEADS: Final = {kind: b"\x94" + tag + pack(FORMAT) for kind, tag in _TAG_BYTES.items()}


def tx_id(tx: Tx) -> bytes:
    """Content id of a transaction: SHA-256 of its canonical bytes."""
    return tx.id


def sign_order(
    key: KeyPair, genesis: Genesis, order: Order, *, model: bytes | None = None
) -> SignedOrder:
    """``order`` signed; ``model``: the committed community model's hash that produced it
    (``None``: a local model)."""
    if order.household != key.public_hex:
        raise UsageError("an order's household must be the signing key's public key")
    if model is not None and (len(model) != 32 or model == bytes(32)):
        raise UsageError("an order's model is a 32-byte, non-zero model hash (or None: local)")
    return _signed(SignedOrder, key, genesis, _order_body(order, model), order=order, model=model)


def sign_model(
    key: KeyPair,
    genesis: Genesis,
    *,
    round: int,
    model: bytes,
    previous: bytes,
    contributors: int,
    validation: tuple[int, ...],
    features: str,
) -> SignedModel:
    """A model commitment signed by ``key`` (the round's aggregator)."""
    aggregator, validation = key.public_hex, tuple(validation)
    body = _model_body(aggregator, round, model, previous, contributors, validation, features)
    return _signed(
        SignedModel, key, genesis, body,
        aggregator=aggregator, round=round, model=model, previous=previous,
        contributors=contributors, validation=validation, features=features,
    )  # fmt: skip


def sign_cancel(key: KeyPair, genesis: Genesis, *, slot: int, nonce: int) -> SignedCancel:
    household = key.public_hex
    body = _cancel_body(household, slot, nonce)
    return _signed(SignedCancel, key, genesis, body, household=household, slot=slot, nonce=nonce)


def sign_reading(key: KeyPair, genesis: Genesis, *, slot: int, net_wh: int) -> SignedReading:
    household = key.public_hex
    body = _reading_body(household, slot, net_wh)
    return _signed(SignedReading, key, genesis, body, household=household, slot=slot, net_wh=net_wh)


def sign_bundle(
    key: KeyPair,
    genesis: Genesis,
    *,
    reading: BundleReading | None = None,
    orders: tuple[Order, ...] = (),
    models: tuple[bytes | None, ...] | None = None,
) -> SignedBundle:
    """A household's ``reading`` and ``orders`` signed once by ``key``; ``models[i]``: the
    committed community model's hash that produced ``orders[i]`` (default: all local)."""
    household = key.public_hex
    orders = tuple(orders)
    models = (None,) * len(orders) if models is None else tuple(models)
    if len(models) != len(orders):
        raise UsageError("a bundle names one model (or None) per order")
    if reading is None and not orders:
        raise UsageError("a bundle carries a reading, orders, or both")
    if any(o.household != household for o in orders):
        raise UsageError("a bundle's orders are the signing household's")
    if len({o.slot for o in orders}) != len(orders):
        raise UsageError("a bundle carries at most one order per slot")
    if any(m is not None and (len(m) != 32 or m == bytes(32)) for m in models):
        raise UsageError("an order's model is a 32-byte, non-zero model hash (or None: local)")
    body = _bundle_body(household, reading, orders, models)
    return _signed(
        SignedBundle, key, genesis, body,
        household=household, reading=reading, orders=orders, models=models,
    )  # fmt: skip


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


def _decoded(cls: type[Tx], raw: bytes, tid: bytes | None, **values: Any) -> Tx:
    """A transaction decoded from ``raw``, its canonical bytes (``unpack`` checked that they
    re-encode to themselves): its ``raw`` and ``id`` come from them without packing again;
    ``tid``: SHA-256 of ``raw`` when the caller already computed it (``None``: computed here)."""
    tx = cls.__new__(cls)
    for name, value in values.items():
        object.__setattr__(tx, name, value)
    object.__setattr__(tx, "raw", raw)
    object.__setattr__(tx, "id", _sha256(raw) if tid is None else tid)
    return tx


def _tx_from_wire(value: Any, raw: bytes | None = None, tid: bytes | None = None) -> Tx:
    """A transaction from its unpacked ``value``; ``raw``: the canonical bytes it came from
    (``tid``: their SHA-256, if the caller has it)."""
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
        order, model = _order_from_body(body)
        if raw is None:
            return SignedOrder(order, sig, model)
        return _decoded(SignedOrder, raw, tid, order=order, signature=sig, model=model)
    if tag == "gn.tx.model":
        return _model_from_wire(body, sig, raw, tid)
    if tag == "gn.tx.bundle":
        return _bundle_from_wire(body, sig, raw, tid)
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
        slot, nonce = _int(body[3], "cancel", "slot"), _int(body[4], "cancel", "nonce")
        if raw is None:
            return SignedCancel(household, slot, nonce, sig)
        return _decoded(
            SignedCancel, raw, tid, household=household, slot=slot, nonce=nonce, signature=sig
        )
    if tag == "gn.tx.reading" and body[0] == "gn.reading":
        slot, net_wh = _int(body[3], "reading", "slot"), _int(body[4], "reading", "net_wh")
        if raw is None:
            return SignedReading(household, slot, net_wh, sig)
        return _decoded(
            SignedReading, raw, tid, household=household, slot=slot, net_wh=net_wh, signature=sig
        )
    raise InvalidInput(
        reason=WireReason.BAD_TAG,
        subject="tx",
        field="tag",
        expected="gn.tx.order|cancel|reading|model|bundle",
        found=repr(tag),
    )


def _order_from_body(body: Any, what: str = "order") -> tuple[Order, bytes | None]:
    """An order's body (the order array, and the model hash as a 9th element if any)."""
    model = None
    if isinstance(body, list) and len(body) == 9:
        model = body[8]
        if not isinstance(model, bytes) or len(model) != 32:
            raise InvalidInput(
                reason=WireReason.BAD_TYPE, subject=what, field="model",
                expected="32 bytes", found=type(model).__name__,
            )  # fmt: skip
        if model == bytes(32):
            raise InvalidInput(
                reason=WireReason.OUT_OF_RANGE, subject=what, field="model",
                expected="a model hash (leave it out for a local model)", found="zeros",
            )  # fmt: skip
        body = body[:8]
    return order_from_wire(body, what=what), model


def _bundle_from_wire(
    body: Any, sig: bytes, raw: bytes | None, tid: bytes | None = None
) -> SignedBundle:
    """A :class:`SignedBundle` from its body (structure and types; the ledger checks values,
    including that every order is the signer's)."""
    if not isinstance(body, list) or len(body) != 5 or body[:2] != ["gn.bundle", FORMAT]:
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="bundle", field="body", expected="array of 5"
        )
    _, _, household, reading_wire, orders_wire = body
    if not isinstance(household, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="bundle", field="household", expected="str"
        )
    reading = None
    if reading_wire is not None:
        if not isinstance(reading_wire, list) or len(reading_wire) != 2:
            raise InvalidInput(
                reason=WireReason.BAD_SHAPE, subject="bundle", field="reading",
                expected="[slot, net_wh] or nil",
            )  # fmt: skip
        reading = BundleReading(
            _int(reading_wire[0], "bundle reading", "slot"),
            _int(reading_wire[1], "bundle reading", "net_wh"),
        )
    if not isinstance(orders_wire, list):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE, subject="bundle", field="orders", expected="array"
        )
    if reading is None and not orders_wire:
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="bundle", expected="a reading, orders or both",
            found="neither",
        )  # fmt: skip
    parts = [_order_from_body(o, "bundle order") for o in orders_wire]
    orders = tuple(o for o, _ in parts)
    models = tuple(m for _, m in parts)
    if len({o.slot for o in orders}) != len(orders):
        raise InvalidInput(
            reason=WireReason.DUPLICATE_IN_BATCH, subject="bundle", field="orders",
            expected="at most one order per slot",
        )  # fmt: skip
    if raw is None:
        return SignedBundle(household, reading, orders, models, sig)
    tx = _decoded(
        SignedBundle, raw, tid,
        household=household, reading=reading, orders=orders, models=models, signature=sig,
    )  # fmt: skip
    assert isinstance(tx, SignedBundle)
    return tx


def _model_from_wire(
    body: Any, sig: bytes, raw: bytes | None, tid: bytes | None = None
) -> SignedModel:
    """A :class:`SignedModel` from its body (structure and types; the ledger checks values)."""
    if not isinstance(body, list) or len(body) != 9 or body[:2] != ["gn.model", FORMAT]:
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="model tx", field="body", expected="array of 9"
        )
    _, _, aggregator, rnd, model, previous, contributors, validation, features = body
    if not isinstance(aggregator, str) or not isinstance(features, str):
        raise InvalidInput(reason=WireReason.BAD_TYPE, subject="model tx", expected="str")
    rnd = _int(rnd, "model tx", "round")
    contributors = _int(contributors, "model tx", "contributors")
    for name, value in (("model", model), ("previous", previous)):
        if not isinstance(value, bytes) or len(value) != 32:
            raise InvalidInput(
                reason=WireReason.BAD_TYPE, subject="model tx", field=name, expected="32 bytes"
            )
    if not isinstance(validation, list) or len(validation) != len(MODEL_VALIDATION_FIELDS):
        raise InvalidInput(
            reason=WireReason.BAD_SHAPE, subject="model tx", field="validation",
            expected=f"array of {len(MODEL_VALIDATION_FIELDS)}",
        )  # fmt: skip
    ints = tuple(_int(v, "model tx", "validation") for v in validation)
    if len(features) > MAX_FEATURES_CHARS:
        raise InvalidInput(
            reason=WireReason.OUT_OF_RANGE, subject="model tx", field="features",
            expected=f"at most {MAX_FEATURES_CHARS} chars", found=str(len(features)),
        )  # fmt: skip
    values = {
        "aggregator": aggregator,
        "round": rnd,
        "model": model,
        "previous": previous,
        "contributors": contributors,
        "validation": ints,
        "features": features,
        "signature": sig,
    }
    if raw is None:
        return SignedModel(**values)
    tx = _decoded(SignedModel, raw, tid, **values)
    assert isinstance(tx, SignedModel)
    return tx


def decode_tx(data: bytes) -> Tx:
    """Strictly parse one transaction (structure only; :func:`admit` checks the rules)."""
    return _tx_from_wire(unpack(data, what="tx", max_bytes=MAX_TX_BYTES), bytes(data))


def signed_body(tx: Tx) -> bytes:
    """The canonical bytes of ``tx``'s body (what its signature covers): cut from its bytes
    ``[tag, 1, body, signature]``, which end with the 66 bytes of a 64-byte signature."""
    if len(tx.signature) == 64:
        start = 2 + len(_TAG_BYTES[type(tx)])  # array header, tag, version 1
        return tx.raw[start:-66]
    return pack(tx.body())


def verify_signature(genesis: Genesis, tx: Tx) -> bool:
    domain = genesis.domain(_DOMAIN[type(tx)])
    key = genesis.public_keys.get(tx.household)  # a member's or validator's: valid hex, parsed once
    if key is None:
        return verify_hex(tx.household, domain, signed_body(tx), tx.signature)
    return verify(key, domain, signed_body(tx), tx.signature)
