"""The JSON order-book format researchers feed to ``gridnode clear`` (see ``docs/clear.md``).

Rules of this module:

* Input is an already-parsed JSON value (this module does no I/O). Shape::

    {"slot": int, "rule": "pay-as-clear" | "pay-as-bid",
     "orders": [{"id": str, "household": str, "side": "buy" | "sell", "nonce": int (optional),
                 "steps": [{"price": int, "energy_wh": int}, ...]}, ...]}

  Prices are µ¤ per kWh. Unknown keys, wrong types, booleans for integers and every market rule
  (see :mod:`market.orders`) are rejected with :class:`~market.errors.InvalidInput` naming the order
  (by id, or by index when the id itself is bad) and the field.
* Output (:func:`result_to_json`) is a JSON-ready dict: ``slot``, ``rule``, ``clearing_price``
  (``null`` when nothing clears or under pay-as-bid), ``volume_wh``, ``welfare_micro`` and
  ``trades`` in the canonical order of :mod:`market.clearing`.
"""

from __future__ import annotations

from typing import Any

from market.clearing import ClearingResult, Rule
from market.errors import DataReason, InvalidInput, OrderReason, WireReason
from market.orders import Order, OrderLimits, Side, Step, validate_book

__all__ = ["parse_book", "result_to_json"]

_TOP = {"slot", "rule", "orders"}
_ORDER = {"id", "household", "side", "steps", "nonce"}
_ORDER_REQUIRED = {"id", "household", "side", "steps"}
_STEP = {"price", "energy_wh"}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(value: Any, *, subject: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE,
            subject=subject,
            field=field,
            expected="an integer",
            found=_type_name(value),
        )
    return value


def _str(value: Any, *, subject: str, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE,
            subject=subject,
            field=field,
            expected="a string",
            found=_type_name(value),
        )
    return value


def _keys(
    obj: Any, *, allowed: set[str], required: set[str], subject: str, field: str
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE,
            subject=subject,
            field=field,
            expected="an object",
            found=_type_name(obj),
        )
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidInput(
            reason=DataReason.UNKNOWN_FIELD,
            subject=subject,
            field=f"{field}.{unknown[0]}" if field else unknown[0],
            expected=f"only {sorted(allowed)}",
            found=repr(unknown[0]),
        )
    missing = sorted(required - set(obj))
    if missing:
        raise InvalidInput(
            reason=DataReason.MISSING_FIELD,
            subject=subject,
            field=f"{field}.{missing[0]}" if field else missing[0],
            expected="present",
            found="absent",
        )
    return obj


def parse_book(doc: Any, *, limits: OrderLimits = OrderLimits()) -> tuple[int, Rule, list[Order]]:  # noqa: B008
    """Parse and validate a JSON order book: ``(slot, rule, orders)``."""
    top = _keys(doc, allowed=_TOP, required=_TOP, subject="book", field="")
    slot = _int(top["slot"], subject="book", field="slot")
    try:
        rule = Rule(top["rule"])
    except (ValueError, TypeError):
        raise InvalidInput(
            reason=OrderReason.BAD_RULE,
            subject="book",
            field="rule",
            expected="'pay-as-clear' or 'pay-as-bid'",
            found=repr(top["rule"]),
        ) from None
    raw_orders = top["orders"]
    if not isinstance(raw_orders, list):
        raise InvalidInput(
            reason=WireReason.BAD_TYPE,
            subject="book",
            field="orders",
            expected="an array",
            found=_type_name(raw_orders),
        )
    orders: list[Order] = []
    for i, raw in enumerate(raw_orders):
        subject = f"orders[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
            subject = f"order {raw['id']!r}"
        o = _keys(raw, allowed=_ORDER, required=_ORDER_REQUIRED, subject=subject, field="")
        order_id = _str(o["id"], subject=subject, field="id")
        household = _str(o["household"], subject=subject, field="household")
        try:
            side = Side(o["side"])
        except (ValueError, TypeError):
            raise InvalidInput(
                reason=OrderReason.BAD_SIDE,
                subject=subject,
                field="side",
                expected="'buy' or 'sell'",
                found=repr(o["side"]),
            ) from None
        if not isinstance(o["steps"], list):
            raise InvalidInput(
                reason=WireReason.BAD_TYPE,
                subject=subject,
                field="steps",
                expected="an array",
                found=_type_name(o["steps"]),
            )
        steps: list[Step] = []
        for k, raw_step in enumerate(o["steps"]):
            field = f"steps[{k}]"
            st = _keys(raw_step, allowed=_STEP, required=_STEP, subject=subject, field=field)
            steps.append(
                Step(
                    price_micro_per_kwh=_int(st["price"], subject=subject, field=f"{field}.price"),
                    energy_wh=_int(st["energy_wh"], subject=subject, field=f"{field}.energy_wh"),
                )
            )
        orders.append(
            Order(
                order_id=order_id,
                household=household,
                side=side,
                slot=slot,
                steps=tuple(steps),
                nonce=_int(o.get("nonce", 0), subject=subject, field="nonce"),
            )
        )
    validate_book(slot, orders, limits=limits)
    return slot, rule, orders


def result_to_json(result: ClearingResult) -> dict[str, Any]:
    """The JSON-ready form of a clearing result."""
    return {
        "slot": result.slot,
        "rule": result.rule.value,
        "clearing_price": result.clearing_price_micro_per_kwh,
        "volume_wh": result.volume_wh,
        "welfare_micro": result.welfare_micro,
        "trades": [
            {
                "buyer": t.buyer,
                "seller": t.seller,
                "buy_order": t.buy_order,
                "sell_order": t.sell_order,
                "energy_wh": t.energy_wh,
                "price": t.price_micro_per_kwh,
                "amount": t.amount_micro,
            }
            for t in result.trades
        ],
    }
