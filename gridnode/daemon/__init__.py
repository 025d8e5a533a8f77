"""The household daemon: one process, two event loops, one node owner.

``gridnode run --dir DIR`` starts this. Layout:

* **asyncio** (the main thread) serves the local API and status page (:mod:`gridnode.api`) and
  handles SIGINT/SIGTERM.
* **trio** (one thread, :class:`gridnode.net.bridge.TrioBridge`) runs the libp2p host and owns the
  node: a :class:`DaemonNode` wraps the :class:`~gridnode.node.NodeRuntime` (store, ledger,
  consensus). Everything that touches the runtime or the SQLite store runs on this thread.
* The two meet only through the bridge (API commands are awaited calls onto the trio thread) and an
  immutable :class:`~gridnode.status.Snapshot` the node republishes after every change.

Network protocols (``docs/protocol.md``): consensus messages travel as one-way framed messages on
``/gridnode/<community>/consensus/1.0.0`` (addressed by public key, which *is* the peer id);
transactions are submitted with an acknowledged request to a validator (re-sent to the next one on
timeout): a household's readings and order of a slot in one ``…/submit-batch/1.0.0`` request, the
API's single orders and cancels on ``…/submit/1.0.0``; validators share accepted transactions with
each other on ``…/tx/1.0.0``; and each validator gossips the orders it accepted as batches (at most
one message per second) on the GossipSub topic ``/gridnode/<community>/orders/2``, whose validator
refuses a whole batch if any order in it is malformed, unsigned, from a non-member, replayed or for
a closed slot. (py-libp2p costs every host milliseconds of CPU per gossip message: few messages.)

A member household with a meter runs a :class:`~gridnode.household_driver.HouseholdDriver` in the
node's nursery: its pure agent reads and quotes, and the driver hands the slot's reading and
orders, signed once as a bundle, to :meth:`DaemonNode.submit_batch`.

Time: the node clock (:class:`~gridnode.clock.NodeClock`) is ``epoch + (wall − epoch) × speedup`` in
unix ms, with ``epoch`` the genesis time and ``wall`` trio's clock anchored to the wall clock at
start, so every timer runs on trio's clock. Every node of a community must run the same speedup
(demos use e.g. 60: a 15-minute slot in 15 s); the consensus timeouts are scaled by the same factor
so they stay sane in real seconds.

The package, one module per seam: :mod:`~gridnode.daemon.node` (the node, its timers and consensus
traffic), :mod:`~gridnode.daemon.submit` (submitting transactions, both sides),
:mod:`~gridnode.daemon.gossip` (order batches and the live book), :mod:`~gridnode.daemon.snapshot`
(what the API reads), :mod:`~gridnode.daemon.run` (start-up and shutdown).
"""

from gridnode.daemon.node import DaemonNode, consensus_config
from gridnode.daemon.run import BridgeHandle, open_daemon_node, run_daemon

__all__ = ["BridgeHandle", "DaemonNode", "consensus_config", "open_daemon_node", "run_daemon"]
