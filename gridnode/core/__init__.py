"""Pure (sans-IO) node cores: ledger state and block rules, consensus, mempool, identity, codec.

No I/O, no wall clock, no global randomness: time comes in as ``now``, randomness as a seeded
``random.Random``. The same code runs in the daemon, in the deterministic simulation and under tests.
"""
