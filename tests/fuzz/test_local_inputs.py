"""Every file a user — or a broken disk — hands the daemon, mutated byte by byte: ``gridnode.toml``,
``genesis.toml``, ``identity.key``, ``api.token`` and the store ``data/node.sqlite``.

Start-up either takes the file or refuses it with one :class:`UsageError` line that names the
file; never another exception, and nothing under the directory changes. A store that opens is
read to its end (recovery and the chain reader): a damaged one is refused with a reason, never
with a stray SQLite or decoding error. Complements ``tests/cli/test_bad_inputs.py`` (its named
cases, each through ``gridnode run``) with random damage, through the same checks in process
(:func:`gridnode.startup.preflight`, :func:`gridnode.startup.open_node_store`).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridnode.chain import ChainReader, stored_blocks
from gridnode.config import load_config, load_genesis
from market.errors import GridnodeError, InvalidInput, UsageError
from sims.fuzz import mutate

startup = pytest.importorskip("gridnode.startup", reason="needs the daemon's start-up checks")
readme_path = pytest.importorskip("tests.cli.readme_path", reason="needs the README-path helpers")
store_pkg = pytest.importorskip("gridnode.store.recovery", reason="needs the store package")

pytestmark = pytest.mark.net  # the template directory is made by a real `gridnode run`

FILES = ("gridnode.toml", "genesis.toml", "identity.key", "api.token")
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A validator's directory, made the README's way, with a store of a few committed blocks."""
    root = tmp_path_factory.mktemp("readme")
    (node,) = readme_path.readme_community(root, validators=1, full_nodes=0, speedup=60)
    node.start()
    try:
        node.wait_ready()
        status = ["status", "--dir", str(node.dir), "--json"]
        assert readme_path.wait_for(
            lambda: '"height": 4' in readme_path.gridnode(*status).stdout, 60
        )
    finally:
        assert node.stop() == 0
    for name in ("ready", "daemon.log"):
        (node.dir / name).unlink(missing_ok=True)
    yield node.dir


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def _copy(template: Path, tmp: Path, n: int) -> Path:
    d = tmp / f"case{n}"
    shutil.copytree(template, d)
    return d


def test_mutated_files_are_taken_or_refused_in_one_line(template: Path, tmp_path: Path) -> None:
    cases = iter(range(10**6))

    @SETTINGS
    @given(name=st.sampled_from(FILES), seed=st.integers(0, 2**32), raw=st.booleans())
    def prop(name: str, seed: int, raw: bool) -> None:
        d = _copy(template, tmp_path, next(cases))
        rng = random.Random(seed)
        original = (d / name).read_bytes()
        broken = rng.randbytes(rng.randint(0, 64)) if raw else mutate(original, rng, [original])
        (d / name).write_bytes(broken)
        before = _snapshot(d)
        try:
            startup.preflight(d)
        except UsageError as exc:
            message = str(exc)
            assert "\n" not in message and "Traceback" not in message, message
            assert name in message or str(d) in message, message
        assert _snapshot(d) == before
        shutil.rmtree(d)

    prop()


def _damage(data: bytes, rng: random.Random) -> bytes:
    """A store file damaged like a disk does it: bits flipped in pages, a page zeroed or torn off
    the end, the header hit."""
    page = 4096
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(4)
        if what == 0:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif what == 1:
            p = rng.randrange(max(1, len(out) // page))
            out[p * page : (p + 1) * page] = bytes(min(page, len(out) - p * page))
        elif what == 2:
            del out[rng.randrange(1, max(2, len(out) // page)) * page :]
        else:
            i = rng.randrange(100)
            out[i] = rng.randrange(256)
    return bytes(out)


def test_a_damaged_store_is_refused_with_a_reason_or_reads_to_its_end(
    template: Path, tmp_path: Path
) -> None:
    cases = iter(range(10**6))
    config0 = load_config(template)
    store_name = config0.data_dir.relative_to(template) / "node.sqlite"

    @SETTINGS
    @given(seed=st.integers(0, 2**32))
    def prop(seed: int) -> None:
        d = _copy(template, tmp_path, next(cases))
        path = d / store_name
        for extra in ("-wal", "-shm"):  # a cleanly stopped store has none; damage the main file
            Path(str(path) + extra).unlink(missing_ok=True)
        path.write_bytes(_damage(path.read_bytes(), random.Random(seed)))
        config = load_config(d)
        genesis = load_genesis(config.genesis_path)
        try:
            store = startup.open_node_store(config, genesis)
        except UsageError as exc:
            assert "\n" not in str(exc) and "Traceback" not in str(exc), str(exc)
            shutil.rmtree(d)
            return
        try:
            store_pkg.recover(store)
            reader = ChainReader(genesis)
            for height, block, commit in stored_blocks(store):
                reader.read(height, block, commit)
        except (InvalidInput, GridnodeError):
            pass  # refused with a reason: a broken block, commit or record, or the store failed
        except sqlite3.Error as exc:  # pragma: no cover - the failure this test exists to find
            pytest.fail(f"a damaged store raised a raw SQLite error past its checks: {exc!r}")
        finally:
            store.close()
        shutil.rmtree(d)

    prop()
