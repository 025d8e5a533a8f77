"""Units and the one rounding rule.

Rules of this module:

* Energy is an ``int`` in watt-hours (``*_wh``), power an ``int`` in watts (``*_w``), money an ``int``
  in micro-units of the community's currency (``*_micro``, written µ¤), prices an ``int`` in µ¤ per
  kWh (``*_micro_per_kwh``). No floats anywhere in market or ledger code.
* The money for ``energy_wh`` at ``price_micro_per_kwh`` is ``energy_wh * price / 1000`` rounded
  **half up** (all inputs are non-negative, so half up equals half away from zero). It is computed once
  per trade by :func:`amount_micro`, and that same integer is debited from one party and credited to
  the other, so conservation holds exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = [
    "MAX_ENERGY_WH",
    "MAX_PRICE_MICRO_PER_KWH",
    "MAX_WIRE_INT",
    "WH_PER_KWH",
    "amount_micro",
    "largest_remainder",
]

WH_PER_KWH: Final = 1000

#: Largest energy one order step may carry (1 TWh). Keeps every sum over a slot's book far below 2**63.
MAX_ENERGY_WH: Final = 10**12
#: Hard upper bound on any price (1,000,000 ¤/kWh); communities set a much lower cap in their genesis.
MAX_PRICE_MICRO_PER_KWH: Final = 10**12
#: Largest slot index or nonce: a signed 64-bit integer, which every peer's msgpack decoder reads.
MAX_WIRE_INT: Final = 2**63 - 1


def amount_micro(energy_wh: int, price_micro_per_kwh: int) -> int:
    """Money for ``energy_wh`` at ``price_micro_per_kwh``, rounded half up to a whole µ¤.

    >>> amount_micro(1500, 250_000)  # 1.5 kWh at 0.25 ¤/kWh
    375000
    >>> amount_micro(1, 500)  # 0.5 µ¤ rounds up
    1
    """
    if energy_wh < 0 or price_micro_per_kwh < 0:
        raise ValueError(
            f"amount_micro needs non-negative inputs, got {energy_wh} Wh at {price_micro_per_kwh}"
        )
    return (energy_wh * price_micro_per_kwh + WH_PER_KWH // 2) // WH_PER_KWH


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights``, exactly.

    Each share is ``floor(total * w / W)``; the units that flooring leaves over go one each to the
    largest fractional remainders, ties to the earlier position (callers order ``weights`` by their
    priority first). The shares always sum to ``total``.

    >>> largest_remainder(10, [1, 1, 1])
    [4, 3, 3]
    """
    weight_sum = sum(weights)
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("largest_remainder needs non-negative total and weights")
    if weight_sum == 0:
        if total:
            raise ValueError(f"cannot split {total} over zero weights")
        return [0] * len(weights)
    parts = [divmod(total * w, weight_sum) for w in weights]
    shares = [q for q, _ in parts]
    leftover = total - sum(shares)
    for i in sorted(range(len(parts)), key=lambda j: (-parts[j][1], j))[:leftover]:
        shares[i] += 1
    return shares
