"""Delivery slots and gate closure, as pure functions of time.

Rules of this module:

* Time is an ``int`` of unix seconds passed in by the caller; nothing here reads a clock.
* ``slot = unix_s // slot_seconds``. Slot ``k`` delivers during ``[k * slot_seconds, (k+1) * slot_seconds)``.
* Gate closure of slot ``k`` is ``start(k) - gate_lead_seconds``. Orders for slot ``k`` are accepted
  while ``now < gate_closure(k)``; at ``now >= gate_closure(k)`` the slot is closed and is cleared once.
* A community may also bound how far ahead an order may be placed: at ``now`` slots up to
  ``first_open_slot(now) + max_ahead_slots`` are accepted (:meth:`SlotClock.window_error`, the one
  copy of the rule that the market's order check and the ledger's admission share).
"""

from __future__ import annotations

from dataclasses import dataclass

from market.errors import OrderReason, UsageError

__all__ = ["SlotClock"]


@dataclass(frozen=True, slots=True)
class SlotClock:
    """Slot arithmetic for one community: slot length and the gate lead before delivery."""

    slot_seconds: int = 900
    gate_lead_seconds: int = 300

    def __post_init__(self) -> None:
        if self.slot_seconds <= 0:
            raise UsageError(f"slot_seconds must be positive, got {self.slot_seconds}")
        if self.gate_lead_seconds < 0:
            raise UsageError(f"gate_lead_seconds must be >= 0, got {self.gate_lead_seconds}")

    def slot_at(self, unix_s: int) -> int:
        """The slot delivering at ``unix_s``."""
        return unix_s // self.slot_seconds

    def start(self, slot: int) -> int:
        """Unix second at which ``slot`` starts delivering."""
        return slot * self.slot_seconds

    def end(self, slot: int) -> int:
        """Unix second at which ``slot`` stops delivering (exclusive)."""
        return (slot + 1) * self.slot_seconds

    def gate_closure(self, slot: int) -> int:
        """Unix second from which no more orders for ``slot`` are accepted."""
        return self.start(slot) - self.gate_lead_seconds

    def is_open(self, slot: int, now: int) -> bool:
        """Whether orders for ``slot`` are still accepted at ``now``."""
        return now < self.gate_closure(slot)

    def window_error(
        self, slot: int, now: int, *, max_ahead_slots: int | None
    ) -> OrderReason | None:
        """Why ``slot`` does not accept orders at ``now`` (closed, or more than ``max_ahead_slots``
        beyond the first open slot), or ``None`` when it does."""
        if not self.is_open(slot, now):
            return OrderReason.SLOT_CLOSED
        if max_ahead_slots is not None and slot > self.first_open_slot(now) + max_ahead_slots:
            return OrderReason.SLOT_TOO_FAR_AHEAD
        return None

    def first_open_slot(self, now: int) -> int:
        """The earliest slot that still accepts orders at ``now``."""
        # smallest k with k*L - lead > now  <=>  k > (now + lead) / L
        return (now + self.gate_lead_seconds) // self.slot_seconds + 1

    def closed_slots_between(self, after: int, upto: int) -> range:
        """Slots whose gate closure lies in ``(after, upto]``: the ones a clock step closes."""
        first = self.first_open_slot(after)
        last_open_after = self.first_open_slot(upto)
        return range(first, last_open_after)
