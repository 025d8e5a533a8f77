"""gridnode's market core: units, slots, orders, canonical encoding, clearing and settlement.

Pure code: no I/O, no wall clock, no global randomness, no imports from the daemon. Every node re-runs
it to verify every slot, so it must be deterministic bit for bit.

The names below are loaded on first use (PEP 562): importing ``market.errors`` — which every
command does — must not import numpy with the clearing engine, so that the client commands
(``gridnode status``, ``order place``) start in milliseconds (``docs/api.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from market.clearing import ClearingResult, Rule, Trade, clear
    from market.errors import (
        GridnodeError,
        InvalidInput,
        NetworkError,
        PeerMisbehaviour,
        UsageError,
    )
    from market.orders import Order, OrderLimits, Side, Step, validate_book, validate_order
    from market.slots import SlotClock
    from market.units import amount_micro

__all__ = [
    "ClearingResult",
    "GridnodeError",
    "InvalidInput",
    "NetworkError",
    "Order",
    "OrderLimits",
    "PeerMisbehaviour",
    "Rule",
    "Side",
    "SlotClock",
    "Step",
    "Trade",
    "UsageError",
    "amount_micro",
    "clear",
    "validate_book",
    "validate_order",
]

_HOME = {
    **dict.fromkeys(("ClearingResult", "Rule", "Trade", "clear"), "market.clearing"),
    **dict.fromkeys(
        ("GridnodeError", "InvalidInput", "NetworkError", "PeerMisbehaviour", "UsageError"),
        "market.errors",
    ),
    **dict.fromkeys(
        ("Order", "OrderLimits", "Side", "Step", "validate_book", "validate_order"),
        "market.orders",
    ),
    "SlotClock": "market.slots",
    "amount_micro": "market.units",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'market' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
