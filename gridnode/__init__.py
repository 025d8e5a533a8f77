"""gridnode: the household daemon and its tools (CLI, network driver, storage, API, status page).

The pure cores live in :mod:`gridnode.core` (and in the top-level :mod:`market` and
:mod:`forecasting` packages); everything else here is a thin shell that owns sockets, loops,
disks and the clock.
"""

__version__ = "0.1.0"
