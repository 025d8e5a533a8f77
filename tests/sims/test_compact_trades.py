"""What the market KPIs keep of a slot's trades for a whole run (``sims.ledger_kpis.compact_trades``):
columns that read back as exactly the ledger's trades, in order, across a pickle too (the sample
full node's process hands them to the engine)."""

from __future__ import annotations

import hashlib
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import Trade
from sims.ledger_kpis import compact_trades

_HOMES = [hashlib.sha256(bytes([i])).hexdigest() for i in range(6)]


@st.composite
def slot_trades(draw: st.DrawFn) -> tuple[Trade, ...]:
    hex_ids = draw(st.booleans())
    n_orders = draw(st.integers(2, 8))
    orders = [
        (
            hashlib.sha256(b"o%d" % k).hexdigest() if hex_ids else f"order-{k}",
            draw(st.sampled_from(_HOMES)),
        )
        for k in range(n_orders)
    ]
    out = []
    for _ in range(draw(st.integers(0, 12))):
        b, s = draw(st.sampled_from(orders)), draw(st.sampled_from(orders))
        energy = draw(st.integers(1, 10**6))
        price = draw(st.integers(0, 10**6))
        amount = draw(st.sampled_from([energy * price // 1000, 2**70]))  # 2**70: not an int64
        out.append(Trade(b[1], s[1], b[0], s[0], energy, price, amount))
    return tuple(out)


@settings(max_examples=80, deadline=None)
@given(slot_trades())
def test_compact_trades_read_back_as_the_same_trades(trades: tuple[Trade, ...]) -> None:
    compact = compact_trades(trades)
    assert len(compact) == len(trades)
    assert list(compact) == list(trades)
    assert [compact[i] for i in range(len(trades))] == list(trades)
    assert compact == trades
    back = pickle.loads(pickle.dumps(compact, protocol=pickle.HIGHEST_PROTOCOL))
    assert list(back) == list(trades)


def test_households_are_shared_and_order_ids_packed() -> None:
    a, b = (hashlib.sha256(x).hexdigest() for x in (b"a", b"b"))
    one = compact_trades([Trade("".join(_HOMES[1]), _HOMES[2], a, b, 5, 100_000, 500)])
    two = compact_trades([Trade("".join(_HOMES[1]), _HOMES[2], b, a, 7, 90_000, 630)])
    assert one[0].buyer is two[0].buyer  # interned: one string per household for the run
    assert one[0].buy_order == a and two[0].sell_order == a
