"""Every bad local input a user can make is one line on stderr naming the file and the problem, exit
2, and nothing changed on disk (issue 11.6, 11.5, 11.8 and the start-up errors of issue 14).

A real household directory is made the README's way (``gridnode init``, ``gridnode community
create --clock-speedup 60``, the genesis copied in, ``gridnode run`` until a few blocks are
committed, SIGTERM); each case copies it, breaks one thing, runs ``gridnode run`` and compares
every file under the directory, byte for byte, before and after. The same table is in
``docs/daemon.md``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.readme_path import Node, gridnode, ok, readme_community, wait_for

pytestmark = pytest.mark.net


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A validator's directory with a store of a few committed blocks, stopped cleanly."""
    root = tmp_path_factory.mktemp("readme")
    (node,) = readme_community(root, validators=1, full_nodes=0, speedup=60)
    node.start()
    try:
        node.wait_ready()
        status = ["status", "--dir", str(node.dir), "--json"]
        assert wait_for(lambda: '"height": 4' in gridnode(*status).stdout, 60)
    finally:
        assert node.stop() == 0
    for name in ("ready", "daemon.log"):
        (node.dir / name).unlink()
    yield node.dir


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory``: file bytes, ``None`` for a directory."""
    out: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        out[key] = None if path.is_dir() else path.read_bytes()
    return out


@dataclass(frozen=True)
class Ctx:
    dir: Path
    stack: ExitStack
    root: Path

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.dir / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new))

    def read_only(self, path: Path) -> None:
        """``path`` read-only for real: a read-only bind mount as root, else chmod."""
        if os.geteuid() == 0:
            subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
            self.stack.callback(subprocess.run, ["umount", str(path)], check=False)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        else:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            self.stack.callback(path.chmod, mode)

    def hold_port(self, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        self.stack.callback(sock.close)

    def config_port(self, key: str) -> int:
        doc = tomllib.loads((self.dir / "gridnode.toml").read_text())
        if key == "api":
            return int(doc["api"]["port"])
        return int(doc["network"]["listen"][0].rsplit("/", 1)[1])

    def flip_block_byte(self) -> None:
        """Flip one bit inside a stored block's bytes in the file (bit rot: SQLite has no page
        checksums, so only the replayed chain can tell)."""
        db = self.dir / "data" / "node.sqlite"
        conn = sqlite3.connect(db)
        (blob,) = conn.execute("SELECT block FROM blocks WHERE height = 2").fetchone()
        conn.close()
        data = bytearray(db.read_bytes())
        at = data.find(bytes(blob)[-40:])
        assert at > 0 and data.find(bytes(blob)[-40:], at + 1) < 0
        data[at + 20] ^= 0x10
        db.write_bytes(bytes(data))

    def damage_page(self, page: int) -> None:
        db = self.dir / "data" / "node.sqlite"
        data = bytearray(db.read_bytes())
        data[(page - 1) * 4096 : (page - 1) * 4096 + 8] = b"\xff" * 8
        db.write_bytes(bytes(data))

    def unbind_store(self) -> None:
        """What a store made before stores recorded their chain looks like."""
        conn = sqlite3.connect(self.dir / "data" / "node.sqlite")
        conn.execute("DELETE FROM meta WHERE key = 'binding'")
        conn.commit()
        conn.close()

    def reissue_genesis(self, *extra: str) -> None:
        """The operator runs ``community create`` again (a new genesis time: a new chain)."""
        ok("community", "create", "--id", "readme-street", "--member", str(self.dir),
           "--validator", str(self.dir), "--out", str(self.dir / "genesis.toml"), "--force",
           "--clock-speedup", "60", *extra)  # fmt: skip


def _to_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a directory\n")


def _to_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


CASES: dict[str, tuple[Callable[[Ctx], None], tuple[str, ...]]] = {
    # --- the config (gridnode.toml)
    "empty config": (
        lambda c: (c.dir / "gridnode.toml").write_text(""),
        ("gridnode.toml: missing node.role, network.listen, network.mdns",),
    ),
    "config not UTF-8": (
        lambda c: (c.dir / "gridnode.toml").write_bytes(b'[node]\nrole = "full\xff"\n'),
        ("gridnode.toml: not UTF-8 text (byte 0xff",),
    ),
    "config is a directory": (
        lambda c: _to_dir(c.dir / "gridnode.toml"),
        ("gridnode.toml: is a directory, where a file belongs",),
    ),
    "clock_speedup = inf": (
        lambda c: c.edit(
            "gridnode.toml", 'role = "validator"', 'role = "validator"\nclock_speedup = inf'
        ),
        ("node.clock_speedup must be a finite number > 0, got inf",),
    ),
    "config clock differs from the genesis": (
        lambda c: c.edit(
            "gridnode.toml", 'role = "validator"', 'role = "validator"\nclock_speedup = 30'
        ),
        ("node.clock_speedup = 30 but genesis.toml runs the community clock at 60x",),
    ),
    "bidding without a meter": (
        lambda c: c.edit("gridnode.toml", "enabled = false", "enabled = true"),
        ("bidding.enabled = true needs a meter", "set meter.source"),
    ),
    "file meter without its file": (
        lambda c: c.edit("gridnode.toml", 'source = "none"', 'source = "file"'),
        ("meter.source = 'file' reads bidding.meter_history", "meter.csv, which does not exist"),
    ),
    "file meter with a bad newest row": (
        lambda c: (
            c.edit("gridnode.toml", 'source = "none"', 'source = "file"'),
            (c.dir / "meter.csv").write_text(
                "time_s,net_w\n" + "".join(f"{900 * i},{i}\n" for i in range(500)) + "1e9,x\n"
            ),
        ),
        (
            "meter.csv: not a usable meter history",
            "meter.csv row 502 field 'net_w'",
            "not_a_number",
        ),
    ),
    "file meter without a time column": (
        lambda c: (
            c.edit("gridnode.toml", 'source = "none"', 'source = "file"'),
            (c.dir / "meter.csv").write_text("when,net_w\n0,1\n900,2\n"),
        ),
        ("meter.csv: not a usable meter history", "field 'time_s': missing_column"),
    ),
    "libp2p port taken": (
        lambda c: c.hold_port(c.config_port("listen")),
        ("gridnode.toml: network.listen /ip4/127.0.0.1/tcp/", "Address already in use"),
    ),
    "API port taken": (
        lambda c: c.hold_port(c.config_port("api")),
        ("gridnode.toml: api.port: cannot listen on 127.0.0.1:", "Address already in use"),
    ),
    # --- the genesis
    "genesis not UTF-8": (
        lambda c: (c.dir / "genesis.toml").write_bytes(b'[genesis]\ncommunity_id = "\xfe"\n'),
        ("genesis.toml: not UTF-8 text (byte 0xfe",),
    ),
    "genesis is a directory": (
        lambda c: _to_dir(c.dir / "genesis.toml"),
        ("genesis.toml: is a directory, where a file belongs",),
    ),
    "fast clock without a genesis time": (
        lambda c: c.edit("genesis.toml", "genesis_time_ms = ", "genesis_time_ms = 0\n#"),
        ("clock_speedup 60 needs a genesis_time_ms",),
    ),
    "edited genesis under an existing store": (
        lambda c: c.edit(
            "genesis.toml", "retail_micro_per_kwh = 300000", "retail_micro_per_kwh = 310000"
        ),
        ("node.sqlite holds a chain of another genesis of 'readme-street'", "edited or re-issued"),
    ),
    "re-issued genesis with the old data": (
        lambda c: c.reissue_genesis(),
        ("node.sqlite holds a chain of another genesis of 'readme-street'",),
    ),
    "store of another community": (
        lambda c: c.edit(
            "genesis.toml", 'community_id = "readme-street"', 'community_id = "other-street"'
        ),
        (
            "node.sqlite holds the chain of community 'readme-street', but genesis.toml is community "
            "'other-street'",
        ),
    ),
    "store from before bindings, re-issued genesis": (
        lambda c: (c.unbind_store(), c.reissue_genesis()),
        ("node.sqlite: the stored chain is not genesis.toml's: it does not replay",),
    ),
    # --- the store
    "0-byte store": (
        lambda c: (c.dir / "data" / "node.sqlite").write_bytes(b""),
        ("node.sqlite is empty (0 bytes): this node's store is lost",),
    ),
    "bit-flipped block": (
        lambda c: c.flip_block_byte(),
        ("node.sqlite: the stored chain is not genesis.toml's",),
    ),
    "malformed store page": (
        lambda c: c.damage_page(3),
        ("node.sqlite is damaged (database disk image is malformed)",),
    ),
    "store is a directory": (
        lambda c: _to_dir(c.dir / "data" / "node.sqlite"),
        ("node.sqlite' exists and is not a file",),
    ),
    "data dir is a file": (
        lambda c: _to_file(c.dir / "data"),
        ("data: is a file, where node.data_dir (a directory) belongs",),
    ),
    "read-only data dir": (
        lambda c: c.read_only(c.dir / "data"),
        ("node.sqlite' cannot be written", "read-only"),
    ),
    "read-only data dir, no store yet": (
        lambda c: ((c.dir / "data" / "node.sqlite").unlink(), c.read_only(c.dir / "data")),
        ("cannot create the store in", "Read-only file system"),
    ),
    # --- the other files
    "identity is a directory": (
        lambda c: _to_dir(c.dir / "identity.key"),
        ("identity.key: is a directory, where a file belongs",),
    ),
    "token not UTF-8": (
        lambda c: (c.dir / "api.token").write_bytes(b"\xff\xfe"),
        ("api.token: not UTF-8 text",),
    ),
    "lock file is a directory": (
        lambda c: _to_dir(c.dir / "gridnode.lock"),
        ("gridnode.lock: is a directory, where the lock file belongs",),
    ),
    "unwritable lock file": (
        lambda c: c.read_only(c.dir / "gridnode.lock"),
        ("gridnode.lock: cannot open the lock file for writing",),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_is_one_line_exit_2_and_nothing_changes(
    template: Path, tmp_path: Path, case: str
) -> None:
    d = tmp_path / "home"
    shutil.copytree(template, d)
    breaker, expected = CASES[case]
    with ExitStack() as stack:
        breaker(Ctx(d, stack, tmp_path))
        before = snapshot(d)
        done = gridnode("run", "--dir", str(d))
        after = snapshot(d)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("gridnode run: error: ") and done.stderr.count("\n") == 1, (
        done.stderr
    )
    for text in expected:
        assert text in done.stderr, done.stderr
    assert after == before


def test_dir_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "home"
    f.write_text("a file\n")
    for args in (("run", "--dir", str(f)), ("init", "--dir", str(f)), ("status", "--dir", str(f))):
        done = gridnode(*args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"{f}: is a file, where the data directory belongs" in done.stderr
    assert f.read_text() == "a file\n"


def test_the_readme_path_runs_and_the_template_is_sound(template: Path) -> None:
    """The control: the unbroken directory starts (so every refusal above is the case's doing)."""
    node = Node(template.parent / "control", 0, 0, "")
    shutil.copytree(template, node.dir)
    node.start()
    try:
        node.wait_ready()
    finally:
        assert node.stop() == 0
    assert "Traceback" not in (node.dir / "daemon.log").read_text()
