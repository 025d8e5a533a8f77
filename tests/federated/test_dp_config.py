"""``[training] dp_*`` in gridnode.toml: the daemon's DP option, validated (bad values: one line on
stderr naming the file and the key, exit 2, nothing changed on disk)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridnode.config import CONFIG_NAME, load_config, update_config
from market.errors import UsageError

GOOD = {"training.mode": "federated", "training.round_every_s": 3600}


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "gridnode", "init", "--dir", str(tmp_path / "n")],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp_path / "n"


def test_the_dp_keys_load_with_a_year_of_rounds_by_default(node_dir: Path) -> None:
    assert load_config(node_dir).dp_epsilon is None  # off by default
    update_config(node_dir, {**GOOD, "training.dp_epsilon": 4})
    cfg = load_config(node_dir)
    assert cfg.dp_epsilon == 4.0 and cfg.dp_delta == 1e-5 and cfg.dp_clip_norm == 1e9
    assert cfg.dp_rounds == 365 * 24  # hourly rounds for a year
    update_config(node_dir, {"training.dp_rounds": 30, "training.dp_delta": 1e-7})
    cfg = load_config(node_dir)
    assert cfg.dp_rounds == 30 and cfg.dp_delta == 1e-7


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({**GOOD, "training.dp_epsilon": 0}, "training.dp_epsilon must be in (0, 100]"),
        ({**GOOD, "training.dp_epsilon": 1000.0}, "training.dp_epsilon must be in (0, 100]"),
        ({**GOOD, "training.dp_epsilon": "one"}, "training.dp_epsilon must be"),
        ({**GOOD, "training.dp_epsilon": 1, "training.dp_delta": 0.5}, "training.dp_delta must"),
        ({**GOOD, "training.dp_epsilon": 1, "training.dp_rounds": -3}, "training.dp_rounds must"),
        ({**GOOD, "training.dp_epsilon": 1, "training.dp_clip_norm": 0}, "dp_clip_norm must"),
        ({**GOOD, "training.dp_delta": 1e-6}, "training.dp_delta needs training.dp_epsilon"),
        ({"training.dp_epsilon": 1}, 'training.dp_epsilon needs training.mode = "federated"'),
    ],
)
def test_a_bad_dp_value_is_refused_in_one_line_naming_the_key(
    node_dir: Path, changes: dict[str, object], says: str
) -> None:
    before = (node_dir / CONFIG_NAME).read_bytes()
    with pytest.raises(UsageError, match=r"gridnode\.toml: ") as info:
        update_config(node_dir, changes)
    assert says in str(info.value) and "\n" not in str(info.value)
    assert (node_dir / CONFIG_NAME).read_bytes() == before


def test_gridnode_run_with_a_bad_dp_value_exits_2_and_changes_nothing(node_dir: Path) -> None:
    path = node_dir / CONFIG_NAME
    path.write_text(path.read_text() + '\n[training]\nmode = "federated"\ndp_epsilon = -1\n')
    files = {p: p.read_bytes() for p in node_dir.rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "-m", "gridnode", "run", "--dir", str(node_dir)],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "training.dp_epsilon must be in (0, 100]" in done.stderr
    assert {p: p.read_bytes() for p in node_dir.rglob("*") if p.is_file()} == files
