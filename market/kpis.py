"""Energy-share KPIs: self-sufficiency and self-consumption, the one copy of each formula.

Rules of this module:

* **Self-sufficiency** = ``1 − imported / consumed``: the share of the consumption that was not
  imported. **Self-consumption** = ``1 − exported / produced``: the share of the PV production that
  was not exported. ``None`` when nothing was consumed (produced): there is no share to speak of.
* Inputs are integer Wh; the results are ratios for people and reports (floats), never used in
  money or energy accounting. They are not clamped: energy put into a battery from the grid can make
  the import exceed the consumption (a negative self-sufficiency says exactly that).
* Imported and exported mean **from and to the grid** — the ledger's grid import and export, after
  P2P trades — at every level: for a community (the simulation's KPIs, ``sims/results.py``), energy
  traded between neighbours stays inside; for one household (its row in the simulation report, its
  status page), energy bought from neighbours is local PV too, so it counts as supplied without the
  grid, and PV sold to neighbours as consumed in the community.
* After a battery, both count the metered (after-battery) energy, so energy shifted through a
  battery counts as self-consumed (its conversion losses too).
"""

from __future__ import annotations

__all__ = ["self_consumption", "self_sufficiency"]


def self_sufficiency(*, load_wh: int, import_wh: int) -> float | None:
    """``1 − import_wh / load_wh``; ``None`` without consumption."""
    return 1.0 - import_wh / load_wh if load_wh else None


def self_consumption(*, pv_wh: int, export_wh: int) -> float | None:
    """``1 − export_wh / pv_wh``; ``None`` without production."""
    return 1.0 - export_wh / pv_wh if pv_wh else None
