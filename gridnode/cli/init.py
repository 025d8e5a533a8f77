"""``gridnode init --dir DIR``: a new household identity, a commented config and an API token."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gridnode.cli import add_dir_option
from gridnode.config import create_data_dir, load_identity
from market.errors import UsageError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "init",
        help="create a household's identity, config and data directory",
        description=(
            "Create DIR with a new Ed25519 identity (your household id and libp2p peer id), a "
            "commented gridnode.toml, an API token and the data directory. Refuses to overwrite an "
            "existing identity. Prints the public key to give to your community operator. Nothing "
            "is written if anything is wrong."
        ),
    )
    add_dir_option(p)
    p.add_argument(
        "--role", choices=("validator", "full"), default="full", help="default: %(default)s"
    )
    p.add_argument("--genesis", type=Path, help="the community's genesis file, copied into DIR")
    p.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="use this existing identity.key (a household moving to a new box) instead of a new one",
    )
    p.add_argument(
        "--listen",
        default="/ip4/0.0.0.0/tcp/4001",
        help="libp2p listen multiaddr (default %(default)s)",
    )
    p.add_argument(
        "--api-port",
        type=int,
        default=8470,
        help="local API/status page port (default %(default)s)",
    )
    p.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="a peer to dial at start (repeatable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gridnode.net.host import peer_id_of

    key = None
    if args.identity is not None:
        if not args.identity.exists():
            raise UsageError(f"{args.identity}: no such identity file")
        key = load_identity(args.identity.parent, name=args.identity.name)
    key = create_data_dir(
        args.dir,
        role=args.role,
        listen=args.listen,
        api_port=args.api_port,
        bootstrap=args.bootstrap,
        genesis=args.genesis,
        key=key,
    )
    print(f"created {args.dir}")
    print(f"household id (public key): {key.public_hex}")
    print(f"libp2p peer id:            {peer_id_of(key.public_key)}")
    if args.genesis is None:
        print(
            f"next: put the community's genesis file at {args.dir / 'genesis.toml'}, then `gridnode run --dir {args.dir}`"
        )
    else:
        print(f"next: `gridnode run --dir {args.dir}`")
    return 0
