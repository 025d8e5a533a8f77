"""A slot is settled once: also when every member read it before its reading deadline."""

from __future__ import annotations

from gridnode.core.ledger import admission_error, sign_reading
from market.errors import LedgerReason
from tests.ledger.helpers import T0_MS, Community

SLOT_MS = 900_000


def test_a_second_reading_of_a_slot_settled_early_is_refused_and_pays_nothing() -> None:
    c = Community(n_members=2, seed=7)
    slot = T0_MS // SLOT_MS
    now_ms = T0_MS + SLOT_MS + 1  # the slot delivered, its reading due
    s = c.state()
    _, s = c.block(s, now_ms, [sign_reading(k, c.genesis, slot=slot, net_wh=5) for k in c.members])
    assert s.settled_slots == 1  # every member read: settled at once
    balances = dict(s.balances)
    again = sign_reading(c.members[0], c.genesis, slot=slot, net_wh=700)
    err = admission_error(s, again, time_ms=now_ms + 1000)
    assert err is not None and err.reason is LedgerReason.DUPLICATE_READING
    # and once the deadline passed the slot is not settled again: nothing more is booked
    late_ms = now_ms + c.genesis.reading_deadline_seconds * 1000 + SLOT_MS
    _, s = c.block(s, late_ms, [])
    assert s.settled_slots == 1 and dict(s.balances) == balances and slot not in s.readings
