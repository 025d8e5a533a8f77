"""The household, pure: its trading agent, its battery and its forecast of the next slots.

One copy of the household's logic, driven by the daemon (:mod:`gridnode.household_driver`, one
household, real meter and libp2p) and by the in-process simulation engine (:mod:`sims.inproc`, a
thousand households, one batched forecast). ``docs/household.md`` describes the whole.

* :mod:`gridnode.household.agent` — :class:`~gridnode.household.agent.HouseholdAgent`: the meter
  readings of delivered slots (after its battery dispatched), the quotes of the open slots, the
  battery's state of charge.
* :mod:`gridnode.household.battery` — the battery model (integer Wh, one slot at a time).
* :mod:`gridnode.household.forecast` — :class:`~gridnode.household.forecast.SlotForecaster`: one
  forecaster fit for one household or a whole community's rows, turned into slot quantiles.

Like the other pure packages (``tests/test_layering.py``): no I/O, no clock, no global randomness;
time comes in as ``now_s``, meter data and ledger facts as arguments, and what the household wants
done comes out as frozen values that its driver signs and sends.
"""
