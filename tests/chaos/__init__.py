"""Chaos tests on real daemons in network namespaces (``docs/chaos.md``)."""

from __future__ import annotations

import os

import pytest

from sims.netns import netlab_unavailable

_WHY = netlab_unavailable()

#: skip where network namespaces cannot be made (not Linux, not root, no iptables) — unless
#: ``GRIDNODE_REQUIRE_NETNS=1`` (CI), where the test then fails with the reason
needs_netlab = pytest.mark.skipif(
    _WHY is not None and not os.environ.get("GRIDNODE_REQUIRE_NETNS"),
    reason=f"network lab unavailable: {_WHY}",
)
