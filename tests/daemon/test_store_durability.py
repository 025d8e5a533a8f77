"""A validator's store syncs every commit (``FULL``); a household's (a full node's) runs at
``NORMAL``: what it stores is the community's chain, fetched again from the validators after a
power loss (``gridnode.startup``, "A household syncs its store less"). Real directories made by
``gridnode init`` / ``gridnode community create``, the daemon's own store opening."""

from __future__ import annotations

from pathlib import Path

from gridnode.config import load_config, load_genesis
from gridnode.startup import open_node_store
from gridnode.store import Durability
from sims.daemons import LocalCommunity


def test_a_validator_syncs_fully_and_a_household_normally(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, launcher=False)
    lc.create()
    got = {}
    for h in lc.households:
        config = load_config(h.dir)
        store = open_node_store(config, load_genesis(config.genesis_path))
        try:
            got[h.role] = store.durability
        finally:
            store.close()
    assert got == {"validator": Durability.FULL, "full": Durability.NORMAL}
