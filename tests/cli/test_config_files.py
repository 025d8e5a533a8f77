"""The household's files are written atomically and a refused command writes nothing (issue 11.6)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gridnode.config import (
    CONFIG_NAME,
    create_data_dir,
    load_config,
    update_config,
    write_atomic,
)
from market.errors import UsageError
from tests.cli.readme_path import gridnode


def listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_init_writes_the_layout_with_private_secrets_and_refuses_without_writing(
    tmp_path: Path,
) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    assert sorted(p.name for p in d.iterdir()) == [
        "api.token", "data", "gridnode.lock", "gridnode.toml", "identity.key",
    ]  # fmt: skip
    for secret in ("identity.key", "api.token"):
        assert stat.S_IMODE((d / secret).stat().st_mode) == 0o600
    before = listing(d)
    with pytest.raises(UsageError, match="refusing to overwrite"):
        create_data_dir(d)
    assert listing(d) == before
    # a bad genesis, a bad role or port: refused before anything exists
    bad_genesis = tmp_path / "g.toml"
    bad_genesis.write_text("[genesis]\ncommunity_id = 'x'\n")
    fresh = tmp_path / "fresh"
    for kwargs in ({"genesis": bad_genesis}, {"role": "boss"}, {"api_port": 0}):
        with pytest.raises(UsageError):
            create_data_dir(fresh, **kwargs)  # type: ignore[arg-type]
        assert not fresh.exists()


def test_a_refused_config_change_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    before = listing(d)
    for change in ({"api.port": 0}, {"meter.source": "psychic"}, {"node.colour": "red"}):
        with pytest.raises(UsageError):
            update_config(d, change)
        assert listing(d) == before  # and no temporary file left beside it
    update_config(d, {"api.port": 9000})
    assert load_config(d).api_port == 9000
    assert sorted(listing(d)) == sorted(before)


def test_write_atomic_replaces_whole_or_refuses(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    write_atomic(path, "one\n")
    write_atomic(path, "two\n")
    assert path.read_text() == "two\n"
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_atomic(path, "three\n", overwrite=False)
    assert path.read_text() == "two\n"
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        write_atomic(tmp_path / "d", "x")
    assert sorted(os.listdir(tmp_path)) == ["d", "f.toml"]


def test_a_config_without_the_essential_keys_is_refused_with_the_fix(tmp_path: Path) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    text = (d / CONFIG_NAME).read_text()
    (d / CONFIG_NAME).write_text(text.replace("mdns = true", ""))
    with pytest.raises(UsageError, match=r"missing network\.mdns: say what this node"):
        load_config(d)
    done = gridnode("status", "--dir", str(d))  # every command reads the config the same way
    assert done.returncode == 2 and "missing network.mdns" in done.stderr
