"""How fast a flooding peer is cut off, and what it costs the victim until then.

Two real py-libp2p hosts on loopback in one trio loop. The victim serves ``submit-batch`` with the
daemon's decoder and ledger admission (forged orders are refused ``bad_signature``; junk is
``malformed``); the attacker floods it as fast as it can until it is disconnected. Prints, per case:
requests the victim processed before the ban, how long the flood lasted, and the victim's CPU spent
on it. Prints figures; asserts nothing. Run from the repo root inside the venv:

    python benchmarks/peer_score.py
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import trio

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, admission_error, genesis_state, sign_order
from gridnode.net.host import NetConfig, NetHost, open_net_host
from gridnode.txbatch import decode_tx_batch, encode_tx_batch
from market.errors import InvalidInput, NetworkError, PeerMisbehaviour, is_misbehaviour
from market.orders import Order, Side, Step

COMMUNITY = "bench"


def forged_batch(genesis: Genesis, member: KeyPair, n: int) -> bytes:
    txs = []
    for i in range(n):
        o = Order(f"f{i}", member.public_hex, Side.SELL, 10**6, (Step(1, 1),), i + 1)
        good = sign_order(member, genesis, o)
        txs.append(type(good)(good.order, bytes(64)))  # the same order, a forged signature
    return encode_tx_batch(txs)


async def flood(
    name: str, body: bytes, *, protected: bool, handler: Callable[[NetHost], object]
) -> None:
    rng = random.Random(7)
    victim_key, attacker_key = KeyPair.from_rng(rng), KeyPair.from_rng(rng)
    cfg = NetConfig(community=COMMUNITY, request_timeout_s=2.0)
    async with open_net_host(victim_key, cfg) as victim, open_net_host(attacker_key, cfg) as bad:
        handler(victim)
        if protected:
            victim.protect([bad.peer_id])
        peer = await bad.connect(victim.addrs[0])
        cpu0, t0 = time.process_time(), time.perf_counter()
        sent = 0
        while True:
            try:
                await bad.request(peer, "submit-batch", body)
            except InvalidInput:
                pass
            except NetworkError:
                break
            sent += 1
            if sent > 5_000:
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        st = victim.peer_stats()[bad.peer_id]
        print(
            f"{name:<42} {st.frames_in:>6} processed  banned={st.banned!s:<5} "
            f"{wall:6.2f} s  {cpu * 1000:7.1f} ms CPU (both hosts)  counted {dict(st.misbehaviour)}"
        )


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(3)
    member = KeyPair.from_rng(rng)
    genesis = Genesis(
        community_id=COMMUNITY,
        genesis_time_ms=0,
        members=(member.public_hex,),
        validators=(member.public_hex,),
    )
    state = genesis_state(genesis)

    def serve(victim: NetHost) -> None:
        def submit_batch(peer: str, body: bytes) -> bytes:
            txs = decode_tx_batch(body, max_bytes=1 << 20)
            reasons = {
                e.reason
                for tx in txs
                if (e := admission_error(state, tx, time_ms=1_000)) is not None
            }
            for reason in sorted(reasons):  # as the daemon's submit-batch handler does
                if is_misbehaviour(reason):
                    victim.report_misbehaviour(PeerMisbehaviour(peer, InvalidInput(reason=reason)))
            return b"ok"

        victim.on_request("submit-batch", submit_batch)

    forged = forged_batch(genesis, member, 512)

    async def run() -> None:
        print(f"{'case':<42} {'frames':>6}")
        await flood("junk frames", b"\xc1", protected=False, handler=serve)
        await flood("junk frames from a validator", b"\xc1", protected=True, handler=serve)
        await flood("batches of 512 forged orders", forged, protected=False, handler=serve)
        await flood(
            "batches of 512 forged orders, validator", forged, protected=True, handler=serve
        )

    trio.run(run)


if __name__ == "__main__":
    main()
