"""Signed household transactions: orders, cancels, meter readings; signing, ids and strict decoding.

**Transactions** (canonical msgpack ``[tag, 1, body, signature]``, signed by the household's Ed25519
key over the msgpack of ``body``; the signature domain names the community, so nothing signed for one
community is valid in another):

* :class:`SignedOrder` (``gn.tx.order``) — a market :class:`~market.orders.Order`.
* :class:`SignedCancel` (``gn.tx.cancel``) — removes the household's open order for a slot.
* :class:`SignedReading` (``gn.tx.reading``) — a household's measured net energy for a delivered
  slot (``+`` exported).

What makes a transaction admissible (membership, signature, nonce, slot window, one open order per
household and slot, one reading per household and slot) is a ledger rule: :mod:`.rules`.

A transaction's id is the SHA-256 of its canonical bytes, computed once when it is built.
:func:`decode_tx` parses structure only (at most ``MAX_TX_BYTES``); undecodable bytes raise
:class:`~market.errors.InvalidInput` with a :class:`~market.errors.WireReason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Final

from gridnode.core.crypto import KeyPair, verify_hex
from gridnode.core.ledger.genesis import FORMAT, Genesis, _sha256
from market.codec import order_from_wire, order_to_wire, pack, unpack
from market.errors import InvalidInput, UsageError, WireReason
from market.orders import Order

__all__ = [
    "MAX_TX_BYTES",
    "SignedCancel",
    "SignedOrder",
    "SignedReading",
    "Tx",
    "decode_tx",
    "sign_cancel",
    "sign_order",
    "sign_reading",
    "tx_id",
    "verify_signature",
]

MAX_TX_BYTES: Final = 8 * 1024


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
_TAG_BYTES: Final = {
    SignedOrder: pack("gn.tx.order"),
    SignedCancel: pack("gn.tx.cancel"),
    SignedReading: pack("gn.tx.reading"),
}


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


def _decoded(cls: type[Tx], raw: bytes, **values: Any) -> Tx:
    """A transaction decoded from ``raw``, its canonical bytes (``unpack`` checked that they
    re-encode to themselves): its ``raw`` and ``id`` come from them without packing again."""
    tx = cls.__new__(cls)
    for name, value in values.items():
        object.__setattr__(tx, name, value)
    object.__setattr__(tx, "raw", raw)
    object.__setattr__(tx, "id", _sha256(raw))
    return tx


def _tx_from_wire(value: Any, raw: bytes | None = None) -> Tx:
    """A transaction from its unpacked ``value``; ``raw``: the canonical bytes it came from."""
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
        order = order_from_wire(body)
        if raw is None:
            return SignedOrder(order, sig)
        return _decoded(SignedOrder, raw, order=order, signature=sig)
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
            SignedCancel, raw, household=household, slot=slot, nonce=nonce, signature=sig
        )
    if tag == "gn.tx.reading" and body[0] == "gn.reading":
        slot, net_wh = _int(body[3], "reading", "slot"), _int(body[4], "reading", "net_wh")
        if raw is None:
            return SignedReading(household, slot, net_wh, sig)
        return _decoded(
            SignedReading, raw, household=household, slot=slot, net_wh=net_wh, signature=sig
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
    return _tx_from_wire(unpack(data, what="tx", max_bytes=MAX_TX_BYTES), bytes(data))


def signed_body(tx: Tx) -> bytes:
    """The canonical bytes of ``tx``'s body (what its signature covers): cut from its bytes
    ``[tag, 1, body, signature]``, which end with the 66 bytes of a 64-byte signature."""
    if len(tx.signature) == 64:
        start = 2 + len(_TAG_BYTES[type(tx)])  # array header, tag, version 1
        return tx.raw[start:-66]
    return pack(tx.body())


def verify_signature(genesis: Genesis, tx: Tx) -> bool:
    return verify_hex(
        tx.household, genesis.domain(_DOMAIN[type(tx)]), signed_body(tx), tx.signature
    )
