"""gridnode's market core: units, slots, orders, canonical encoding, clearing and settlement.

Pure code: no I/O, no wall clock, no global randomness, no imports from the daemon. Every node re-runs
it to verify every slot, so it must be deterministic bit for bit.
"""

from market.clearing import ClearingResult, Rule, Trade, clear
from market.errors import GridnodeError, InvalidInput, NetworkError, PeerMisbehaviour, UsageError
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
