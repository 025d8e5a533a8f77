"""Why the reservation-price policy is the right one for the community, not only for each household
(``docs/sims.md``, *Economics*), as two properties:

* **Community savings identity.** Without netting and grid fee, whatever trades and whatever the
  meters read, a slot's community savings against grid-only are ``(R − F) × (P2P volume − energy
  sellers could not deliver − energy buyers did not need)``: over-contracting by one side alone is
  a transfer between neighbours; only a Wh neither delivered nor needed loses, and only a Wh both
  delivered and needed gains. Perfect foresight's savings, ``(R − F) × Σ min(supply, demand)``,
  are therefore the most any policy can save.
* **Every Wh the auction matches is worth matching.** Two households quoting their reservation
  curves (:func:`forecasting.policy.order_curves`) trade a Wh only when, under their forecasts, the
  chance the seller delivers it plus the chance the buyer needs it is at least 1 — exactly when that
  Wh's expected contribution to the identity is not negative. So the clearing never trades a Wh the
  community expects to lose on; what the policy leaves untraded is what the forecast cannot vouch
  for.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.policy import NetDistribution, PolicyConfig, SlotQuantiles, order_curves, order_id
from market.clearing import Rule, Trade, clear
from market.orders import Order, Side, Step
from market.settlement import Tariff, settle
from market.units import amount_micro


@given(
    st.integers(0, 200_000),
    st.integers(0, 200_000),
    st.lists(
        st.tuples(
            st.integers(0, 2), st.integers(3, 5), st.integers(1, 3_000), st.integers(0, 500_000)
        ),
        max_size=8,
    ),
    st.lists(st.integers(-5_000, 5_000), min_size=6, max_size=6),
)
@settings(max_examples=200, deadline=None)
def test_community_savings_are_the_spread_times_the_volume_both_delivered_and_needed(
    feed_in: int,
    extra: int,
    trades: list[tuple[int, int, int, int]],
    measured: list[int],
) -> None:
    retail = feed_in + extra
    names = [f"h{i}" for i in range(6)]
    rows = [
        Trade(names[b], names[s], f"b{k}", f"s{k}", wh, price, amount_micro(wh, price))
        for k, (b, s, wh, price) in enumerate(trades)
    ]  # h0-h2 buy, h3-h5 sell: the ledger takes one side per household and slot
    tariff = Tariff(retail, feed_in)
    st_ = settle(1, rows, dict(zip(names, measured, strict=True)), tariff)
    savings = sum(b.savings_micro for b in st_.bills)
    volume = sum(t.energy_wh for t in rows)
    short = long_ = 0
    for b in st_.bills:
        contract = b.sold_p2p_wh - b.bought_p2p_wh
        if contract > 0:
            short += max(0, contract - max(b.measured_net_wh, 0))
        elif contract < 0:
            long_ += max(0, -contract - max(-b.measured_net_wh, 0))
    expected = (volume - short - long_) * (retail - feed_in)  # µ¤ × Wh / kWh
    # each bill rounds its grid amounts to whole µ¤: at most a µ¤ per household and amount
    assert abs(savings * 1000 - expected) <= 1000 * 2 * len(st_.bills)


@st.composite
def forecasts(draw: st.DrawFn) -> SlotQuantiles:
    values = sorted(draw(st.lists(st.integers(-4_000, 4_000), min_size=3, max_size=3)))
    return SlotQuantiles(7, *values)


def _order(household: str, side: Side, steps: tuple[Step, ...]) -> Order:
    return Order(order_id(household, 7, side, 0), household, side, 7, steps, 0)


@given(
    forecasts(),
    forecasts(),
    st.integers(0, 200_000),
    st.integers(1_000, 300_000),
    st.none() | st.integers(0, 500_000),
)
@settings(max_examples=300, deadline=None)
def test_the_auction_matches_a_wh_only_when_the_community_expects_to_gain_on_it(
    seller: SlotQuantiles, buyer: SlotQuantiles, feed_in: int, spread: int, expected: int | None
) -> None:
    """The seller's sell curve and the buyer's buy curve (what each quotes when it takes that side)
    cleared together: the last Wh matched is worth matching in expectation."""
    cfg = PolicyConfig(feed_in, feed_in + spread)
    sell = order_curves(seller, config=cfg, slot_seconds=3600,
                        expected_price_micro_per_kwh=expected).sell  # fmt: skip
    buy = order_curves(buyer, config=cfg, slot_seconds=3600,
                       expected_price_micro_per_kwh=expected).buy  # fmt: skip
    if not sell or not buy:
        return  # nothing quoted on a side: nothing can be matched
    result = clear([_order("s", Side.SELL, sell), _order("b", Side.BUY, buy)], slot=7,
                   rule=Rule.PAY_AS_CLEAR)  # fmt: skip
    k = result.volume_wh  # the last Wh matched is the seller's k-th and the buyer's k-th
    if k == 0:
        return
    delivered = 1.0 - NetDistribution.of(seller).below(k)  # P(X_seller ≥ k)
    needed = NetDistribution.of(buyer).cdf(-k)  # P(D_buyer ≥ k) = P(X_buyer ≤ −k)
    assert delivered + needed >= 1.0 - 1e-9, (delivered, needed, k)
