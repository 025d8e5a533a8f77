"""``gridnode id``: this household's id (its public key) and libp2p peer id, read from DIR."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gridnode.cli import add_dir_option


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "id",
        help="print this household's id and libp2p peer id",
        description=(
            "Print the household id (the Ed25519 public key the community operator puts in the "
            "genesis), the libp2p peer id derived from it, and the addresses other nodes can "
            "bootstrap to (this node's network.listen with /p2p/<peer id>; replace 0.0.0.0 by an "
            "address they can reach)."
        ),
    )
    add_dir_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gridnode.config import load_config, load_identity
    from gridnode.net.host import peer_id_of

    key = load_identity(args.dir)
    config = load_config(args.dir)
    peer = peer_id_of(key.public_key)
    addrs = [f"{a}/p2p/{peer}" for a in config.listen]
    if args.json:
        doc = {"household": key.public_hex, "peer_id": peer, "addrs": addrs, "role": config.role}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"household id (public key): {key.public_hex}")
    print(f"libp2p peer id:            {peer}")
    print(f"role:                      {config.role}")
    for addr in addrs:
        print(f"bootstrap address:         {addr}")
    return 0
