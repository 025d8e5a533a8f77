"""The order gossip and bundles: a bundle is committed when the ledger holds exactly its orders."""

from __future__ import annotations

import dataclasses

from gridnode.core.ledger import sign_bundle, sign_order
from gridnode.daemon.gossip import is_committed
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community
from tests.ledger.test_bundles import OPEN, _order


def test_gossip_knows_a_bundle_the_ledger_committed() -> None:
    c = Community()
    key, g = c.members[0], c.genesis
    o1 = _order(c, 0, Side.SELL, OPEN, (100_000, 500))
    o2 = _order(c, 0, Side.BUY, OPEN + 1, (120_000, 100))
    b = sign_bundle(key, g, orders=(o1, o2))
    s0 = c.state()
    assert not is_committed(s0, b)
    _, s = c.block(s0, T0_MS + 1, [b])
    assert is_committed(s, b)
    # one of its orders replaced: the bundle is no longer exactly what the ledger holds
    newer = sign_order(key, g, dataclasses.replace(o2, nonce=o2.nonce + 1))
    _, s = c.block(s, T0_MS + 2, [newer])
    assert not is_committed(s, b) and is_committed(s, newer)
