"""A small committed chain for the audit's tests: two slots traded, read, settled; one household
silent, one order replaced and one cancelled; every block committed by the genesis validators."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridnode.chainfile import write_chain
from gridnode.core.ledger import (
    BundleReading,
    Genesis,
    LedgerState,
    SignedOrder,
    Tx,
    sign_bundle,
    sign_cancel,
    sign_reading,
)
from market.orders import Side
from market.settlement import Netting
from tests.chain.helpers import commit_for
from tests.ledger.helpers import T0_MS, Community

SLOT = T0_MS // 1000 // 900 + 1  # open at T0: its gate closes 600 s after T0
Chain = list[tuple[int, bytes, bytes]]


@dataclass
class SmallChain:
    community: Community
    chain: Chain
    states: list[LedgerState]  # the state after each height (index 0: genesis)
    txs: dict[str, Tx]


def small_chain(*, seed: int = 3, bundled: bool = False) -> SmallChain:
    """``bundled``: the second slot's readings come in bundles (``gn.tx.bundle``), member 0's
    with an order for a later slot."""
    c = Community(
        seed=seed,
        n_members=6,
        genesis_kwargs={"netting": Netting.COMMUNITY, "reading_deadline_seconds": 1800},
    )
    m = [k.public_hex for k in c.members]
    state = c.state()
    states = [state]
    chain: Chain = []
    s2 = SLOT + 1
    tx: dict[str, Tx] = {
        "o0": c.order(0, Side.SELL, SLOT, (100_000, 800)),
        "o1": c.order(1, Side.BUY, SLOT, (200_000, 500)),
        "o2": c.order(2, Side.BUY, SLOT, (250_000, 400)),
        "o3": c.order(3, Side.SELL, SLOT, (190_000, 300)),
        "p4": c.order(4, Side.SELL, s2, (120_000, 700)),
        "p5": c.order(5, Side.BUY, s2, (280_000, 500), (150_000, 300)),
    }
    tx["o0b"] = c.order(0, Side.SELL, SLOT, (90_000, 600))  # replaces o0 (higher nonce)
    c.nonce[m[2]] += 1
    tx["x2"] = sign_cancel(c.members[2], c.genesis, slot=SLOT, nonce=c.nonce[m[2]])
    r1 = [
        sign_reading(c.members[i], c.genesis, slot=SLOT, net_wh=w)
        for i, w in ((1, -450), (3, 120), (4, -60), (5, -200))
    ]
    r2: list[Tx] = [  # everyone reads: s2 settles at once
        sign_reading(c.members[i], c.genesis, slot=s2, net_wh=w)
        for i, w in ((0, 50), (1, -100), (2, -80), (3, 20), (4, 650), (5, -760))
    ]
    if bundled:
        later = c.order(0, Side.SELL, SLOT + 4, (100_000, 100))
        assert isinstance(later, SignedOrder)
        r2 = [
            sign_bundle(
                c.members[i],
                c.genesis,
                reading=BundleReading(s2, w),
                orders=(later.order,) if i == 0 else (),
            )
            for i, w in ((0, 50), (1, -100), (2, -80), (3, 20), (4, 650), (5, -760))
        ]
    gate_ms = (SLOT * 900 - 300) * 1000
    for time_ms, txs in (
        (T0_MS + 1_000, [tx["o0"], tx["o1"], tx["o2"], tx["o3"], tx["p4"]]),
        (T0_MS + 2_000, [tx["o0b"], tx["x2"], tx["p5"]]),
        (gate_ms + 1_000, []),  # clears SLOT
        ((SLOT + 1) * 900_000 - 299_000, []),  # clears s2
        ((SLOT + 1) * 900_000 + 1_000, r1),  # SLOT delivered: m0 (who sold) stays silent
        ((SLOT + 2) * 900_000 + 1_000, [*r2]),  # s2 delivered: everyone reads, s2 settles
        ((SLOT + 2) * 900_000 + 2_000, []),
        ((SLOT + 3) * 900_000, []),  # SLOT's deadline passed: settled, m0 as if it read 0 Wh
        ((SLOT + 3) * 900_000 + 1_000, []),
    ):
        block, state = c.block(state, time_ms, txs)
        assert len(block.txs) == len(txs), (block.height, len(block.txs), len(txs))
        data = block.encode()
        chain.append((block.height, data, commit_for(c.validators, block.height, data)))
        states.append(state)
    return SmallChain(c, chain, states, tx)


class ListSource:
    """A :class:`gridnode.chain.BlockSource` over a list of ``(height, block, commit)``, in the
    list's order whatever the heights say (so tests can write drop / reorder exports)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def blocks_from(self, height: int, limit: int) -> list[Any]:
        if height != 1:
            return []
        return [_Stored(h, b, c) for h, b, c in self.chain]


@dataclass(frozen=True)
class _Stored:
    height: int
    block: bytes
    commit: bytes


def export(chain: Chain, path: Path, genesis: Genesis, *, per_record: int = 64) -> Path:
    """Write ``chain`` as an export file (any order the list has)."""
    with path.open("wb") as f:
        write_chain(f, genesis, ListSource(chain), blocks_per_record=per_record)
    return path
