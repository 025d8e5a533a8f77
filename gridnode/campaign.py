"""``python -m gridnode.campaign --seeds N``: the fault campaign's documented entry point.

The campaign is simulation harness code and lives in :mod:`sims.campaign`; this module only keeps
the command users and the docs know.
"""

from sims.campaign import main

if __name__ == "__main__":
    raise SystemExit(main())
