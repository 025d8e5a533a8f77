"""`gridnode status|peers|trades|balance|order` against a live API served by a real in-process node."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode import cli
from gridnode.config import create_data_dir
from gridnode.status import PeerInfo
from market.orders import Side
from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import TOKEN, ServerThread


@pytest.fixture(autouse=True)
def client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the client commands the way the lead will (``"client"`` in ``_COMMANDS``)."""
    if "client" not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, "client"))


def make_dir(path: Path, port: int, token: str = TOKEN) -> Path:
    path.mkdir()
    fd = os.open(path / "api.token", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    create_data_dir(path, api_port=port)
    return path


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(LocalNode()) as running:
        yield running


@pytest.fixture
def home(server: ServerThread, tmp_path: Path) -> Path:
    return make_dir(tmp_path / "home", server.port)


def gridnode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table_and_json(
    server: ServerThread, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.on_loop(server.node.commit)
    code, out, err = gridnode(capsys, "status", "--dir", str(home))
    assert code == 0, err
    head = server.node.app.state.head_hash.hex()
    assert "height           1\n" in out and head in out
    assert "1/1 reachable (quorum)" in out and "api-test" in out
    code, out, _ = gridnode(capsys, "status", "--dir", str(home), "--json")
    assert code == 0
    assert json.loads(out) == server.get_json("/api/status")


def test_place_list_cancel(
    server: ServerThread, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = server.node
    code, out, err = gridnode(
        capsys,
        "order", "place", "--dir", str(home), "--next", "--side", "sell",
        "--step", "120000:800", "--step", "180000:400",
    )  # fmt: skip
    assert code == 0, err
    assert f"for slot {FIRST_OPEN} submitted" in out
    (placed,) = node.placed
    assert placed.slot == FIRST_OPEN and placed.side is Side.SELL
    assert [(s.price_micro_per_kwh, s.energy_wh) for s in placed.steps] == [
        (120_000, 800),
        (180_000, 400),
    ]
    server.on_loop(node.commit)
    code, out, _ = gridnode(capsys, "order", "list", "--dir", str(home))
    assert code == 0
    assert "120000:800, 180000:400" in out and placed.order_id in out and "1200" in out
    code, out, _ = gridnode(capsys, "order", "list", "--dir", str(home), "--json")
    assert [o["order_id"] for o in json.loads(out)["orders"]] == [placed.order_id]
    code, out, err = gridnode(
        capsys, "order", "cancel", "--dir", str(home), "--slot", str(FIRST_OPEN)
    )
    assert code == 0, err
    server.on_loop(node.commit)
    code, out, _ = gridnode(capsys, "order", "list", "--dir", str(home))
    assert out == "no open orders\n"


def test_trades_balance_peers(
    server: ServerThread, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = server.node
    code, out, _ = gridnode(capsys, "trades", "--dir", str(home))
    assert code == 0 and out.startswith("no slot cleared yet")

    def trade() -> None:
        node.submit(node.other_order(0, Side.BUY, FIRST_OPEN, (250_000, 400)))
        node.submit(node.other_order(1, Side.SELL, FIRST_OPEN, (90_000, 300)))
        node.commit()
        node.commit(advance_ms=600_000)

    code, _, err = gridnode(
        capsys, "order", "place", "--dir", str(home), "--slot", str(FIRST_OPEN),
        "--side", "sell", "--step", "100000:500",
    )  # fmt: skip
    assert code == 0, err
    server.on_loop(trade)
    price = node.app.state.clearing_prices[FIRST_OPEN]
    code, out, _ = gridnode(capsys, "trades", "--dir", str(home))
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:1] + row[4:7] == [str(FIRST_OPEN), str(price), "400", "2"]
    assert " ".join(row[1:4]) == "2027-01-15 08:15–08:30 UTC+00:00"  # delivery, local time
    assert "sell 100 Wh for" in out  # merit order: the 90 000 seller first, then us
    code, out, _ = gridnode(
        capsys, "trades", "--dir", str(home), "--slot", str(FIRST_OPEN), "--json"
    )
    assert json.loads(out)["slots"][0]["volume_wh"] == 400
    code, out, _ = gridnode(capsys, "balance", "--dir", str(home))
    assert code == 0 and "slots settled         0\n" in out and "0.000000 (0 µ)" in out
    node.peers = (
        PeerInfo(
            "12D3KooWxyz",
            node.others[0].public_hex,
            False,
            {"bad_signature": 2},
            score=-120.0,
            banned=True,
        ),
    )
    code, out, _ = gridnode(capsys, "peers", "--dir", str(home))
    assert code == 0
    row = out.splitlines()[1]
    assert "12D3KooWxyz" in row and "member" in row and "banned" in row
    assert "bad_signature 2" in row and row.endswith("-120")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_daemon_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    home = make_dir(tmp_path / "h", port)
    for argv in (["status"], ["order", "list"], ["balance"], ["order", "cancel", "--slot", "5"]):
        code, out, err = gridnode(capsys, *argv, "--dir", str(home))
        assert code == 2 and out == ""
        assert err.endswith(
            f"error: no daemon answering at http://127.0.0.1:{port} "
            f"(is `gridnode run --dir {home}` running?)\n"
        )
        assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["order", "place", "--next", "--side", "buy", "--step", "abc"], "--step must be PRICE:WH"),
        (["order", "place", "--next", "--side", "buy", "--step", "5:x"], "--step must be PRICE:WH"),
        (
            ["order", "place", "--next", "--side", "buy", "--step", "300001:5"],
            "(422 price_out_of_range) (steps[0].price_micro_per_kwh)",
        ),
        (
            ["order", "place", "--slot", str(FIRST_OPEN - 1), "--side", "buy", "--step", "1:5"],
            "(422 slot_closed)",
        ),
        (
            ["order", "place", "--slot", "-4", "--side", "buy", "--step", "1:5"],
            "--slot must be >= 0",
        ),
        (["order", "cancel", "--slot", str(FIRST_OPEN)], "(404 no_open_order)"),
        (["trades", "--slot", str(FIRST_OPEN + 3)], "(404 not_cleared)"),
        (["trades", "--limit", "0"], "(400 bad_parameter) (limit)"),
    ],
)
def test_bad_input_and_refusals_exit_2(
    server: ServerThread,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    code, out, err = gridnode(capsys, *argv, "--dir", str(home))
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1, err
    assert server.node.placed == []


def test_wrong_token_file_is_refused(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = make_dir(tmp_path / "h", server.port, token="not-the-token")
    code, _, err = gridnode(
        capsys, "order", "place", "--dir", str(home), "--next", "--side", "buy", "--step", "1:1"
    )
    assert code == 2 and "(403 forbidden)" in err
    (home / "api.token").unlink()
    code, _, err = gridnode(capsys, "order", "cancel", "--dir", str(home), "--slot", "9")
    assert code == 2 and "api.token: no API token" in err
    assert server.node.placed == []


def test_missing_config_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = gridnode(capsys, "status", "--dir", str(tmp_path))
    assert code == 2 and "gridnode.toml: no config" in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["status"], ["peers"], ["trades"], ["balance"], ["order"],
        ["order", "place"], ["order", "cancel"], ["order", "list"],
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            cli.main([*argv, "--help"])
        assert exc.value.code == 0
        assert "--dir" in capsys.readouterr().out or argv == ["order"]


def test_as_a_real_process_without_heavy_imports(server: ServerThread, home: Path) -> None:
    """`gridnode status` in its own process: exit 0, the table, and no aiohttp/libp2p import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gridnode import cli\n"
        "if 'client' not in cli._COMMANDS:\n"
        "    cli._COMMANDS = (*cli._COMMANDS, 'client')\n"
        "rc = cli.main(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('aiohttp', 'libp2p', 'trio') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "status", "--dir", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "state digest" in p.stdout and server.node.app.state.digest().hex() in p.stdout
    assert "heavy: []" in p.stderr
