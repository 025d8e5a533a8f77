"""Hypothesis strategies for order books."""

from __future__ import annotations

from hypothesis import strategies as st

from market.orders import Order, Side, Step


def steps(
    *, max_steps: int = 3, max_energy: int = 6, prices: tuple[int, ...] = ()
) -> st.SearchStrategy[tuple[Step, ...]]:
    price = st.sampled_from(prices) if prices else st.integers(0, 400_000)
    step = st.builds(Step, price_micro_per_kwh=price, energy_wh=st.integers(1, max_energy))
    return st.lists(step, min_size=1, max_size=max_steps).map(tuple)


@st.composite
def books(
    draw: st.DrawFn,
    *,
    slot: int = 7,
    max_orders: int = 6,
    max_steps: int = 3,
    max_energy: int = 6,
    prices: tuple[int, ...] = (100, 150, 200, 250, 300),
) -> list[Order]:
    n = draw(st.integers(0, max_orders))
    ids = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=n, max_size=n, unique=True)
    )
    out = []
    for oid in ids:
        out.append(
            Order(
                order_id=oid,
                household=draw(st.sampled_from(["h1", "h2", "h3", "h4"])),
                side=draw(st.sampled_from([Side.BUY, Side.SELL])),
                slot=slot,
                steps=draw(steps(max_steps=max_steps, max_energy=max_energy, prices=prices)),
            )
        )
    return out
