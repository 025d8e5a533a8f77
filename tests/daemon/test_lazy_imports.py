"""``gridnode run`` defers what py-libp2p imports but the daemon never runs (:mod:`gridnode.lazyimports`).

Real daemons (a validator and a bidding household, exec'd as a user starts them, with the finder
installed by ``gridnode run``) commit the household's orders over real libp2p; on exit each writes
the modules it ran (``--modules-file``), and the deferred ones are not among them. A fresh
interpreter importing py-libp2p the ordinary way is the control: it runs every one of them.
"""

from __future__ import annotations

import json
import os
import pstats
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gridnode.config import update_config
from gridnode.lazyimports import LAZY_MODULES
from sims.daemons import LocalCommunity

ROOT = Path(__file__).resolve().parents[2]

#: modules a plain ``import libp2p`` runs and an idle daemon must not: py-libp2p's own
#: ``__init__`` with the QUIC, TLS and SECIO transports and the key store it imports; Kademlia,
#: the WebSocket transport, Bitswap, circuit relay, IPNS records (run by sub-packages' ``__init__``
#: files); AutoTLS's HTTP client, ECDSA keys and TLS certificate checks (lazy leaf modules); cffi
#: and its C parser (an optional backend of pycryptodome's, not offered); aioquic and pyOpenSSL
#: (QUIC, not offered)
NEVER_RUN = (
    "libp2p",  # its __init__: the daemon assembles its host from the parts (build_host)
    "libp2p.transport.quic.transport",
    "libp2p.transport.quic.listener",
    "libp2p.security.tls.transport",
    "libp2p.security.secio.transport",
    "libp2p.crypto.keystore",
    "libp2p.kad_dht.kad_dht",
    "libp2p.transport.websocket.transport",
    "trio_websocket",
    "libp2p.bitswap.client",
    "libp2p.relay.circuit_v2.transport",
    "libp2p.records.ipns",
    "httpx",
    "fastecdsa.keys",
    "service_identity",
    "cffi",  # kept out (ABSENT_MODULES): pycryptodome uses its ctypes backend, no C parser
    "pycparser",
    "aioquic",  # kept out (ABSENT_MODULES): py-libp2p's QUIC stream and dnspython do without it
    "aioquic.tls",
    "OpenSSL",  # imported by aioquic's TLS alone
    "requests",  # AutoTLS's ACME and broker clients (imported twice: lazy all the same)
    "urllib3",
    "aiohttp",  # its __init__, which imports the HTTP client: the API needs only aiohttp.web
    "aiohttp.client",
    "aiohttp.connector",  # builds two TLS contexts at import, reading the system's CA file twice
)
#: what a plain import of py-libp2p, aiohttp.web and the daemon runs (the control below)
CONTROL = "import libp2p, aiohttp.web, gridnode.startup, gridnode.daemon"
#: what the daemon does run: the part of py-libp2p it uses
RUN = (
    "libp2p.transport.tcp.tcp",
    "libp2p.security.noise.transport",
    "libp2p.stream_muxer.yamux.yamux",
    "libp2p.pubsub.gossipsub",
)


def test_a_plain_import_of_libp2p_runs_what_the_daemon_defers() -> None:
    # the control: without the finder, each of NEVER_RUN and of the lazy modules is loaded by
    # what the daemon imports (so the check on the daemons below can fail)
    probe = f"import json, sys\n{CONTROL}\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert set(NEVER_RUN) <= loaded
    assert loaded >= LAZY_MODULES
    assert {"httpx", "fastecdsa.keys", "requests"} <= LAZY_MODULES


def _probe_out(code: str, *args: str) -> str:
    """Runs ``code`` in a fresh interpreter (this tree on the path); its stdout (it must exit 0)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _probe(code: str, *args: str) -> list[str]:
    """:func:`_probe_out`'s stdout's words."""
    return _probe_out(code, *args).split()


def test_a_lazy_module_imported_twice_stays_lazy_and_runs_on_first_use() -> None:
    # a second `import requests` (py-libp2p has two) reads only the module's __spec__, which
    # does not run it; the first real use does, and gets the real module
    probe = (
        "import sys\n"
        "from gridnode.lazyimports import install, loaded_modules\n"
        "assert install()\n"
        "import requests\n"
        "import requests as again\n"
        "assert again is requests and requests.__spec__.name == 'requests'\n"
        "print('requests' in loaded_modules(), 'urllib3' in sys.modules)\n"
        "req = requests.Request('GET', 'http://127.0.0.1:9/x', params={'a': 1}).prepare()\n"
        "print(req.url, 'requests' in loaded_modules(), type(requests).__name__)\n"
        "import requests.adapters\n"
        "print(requests.adapters.HTTPAdapter.__module__)\n"
    )
    assert _probe(probe) == [
        "False",
        "False",
        "http://127.0.0.1:9/x?a=1",
        "True",
        "module",
        "requests.adapters",
    ]


def test_aiohttp_web_runs_without_the_client_which_still_works_when_used() -> None:
    # with the finder, aiohttp.web imports without aiohttp's __init__ (and the client it
    # imports); its __version__ is read from the source; the first name only the __init__
    # defines runs it, and an HTTP client then talks to a server of aiohttp.web's
    probe = (
        "import asyncio, sys\n"
        "from gridnode.lazyimports import install, loaded_modules\n"
        "if sys.argv[1] == 'daemon':\n"
        "    assert install()\n"
        "from aiohttp import web\n"
        "import aiohttp\n"
        "print(aiohttp.__version__, 'aiohttp.connector' in sys.modules)\n"
        "async def main():\n"
        "    app = web.Application()\n"
        "    app.router.add_get('/', lambda r: web.json_response({'ok': 1}))\n"
        "    runner = web.AppRunner(app)\n"
        "    await runner.setup()\n"
        "    site = web.TCPSite(runner, '127.0.0.1', 0)\n"
        "    await site.start()\n"
        "    port = runner.addresses[0][1]\n"
        "    print('aiohttp' in loaded_modules(), 'aiohttp.client' in sys.modules)\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        async with s.get(f'http://127.0.0.1:{port}/') as r:\n"
        "            print(r.status, await r.json())\n"
        "    await runner.cleanup()\n"
        "asyncio.run(main())\n"
        "from aiohttp.client import ClientSession\n"
        "print(aiohttp.ClientSession is ClientSession, 'aiohttp' in loaded_modules())\n"
        "print(aiohttp.GunicornWebWorker)\n"  # the package's own __getattr__ (gunicorn absent)
    )
    import aiohttp  # the installed version, for the comparison

    plain = _probe(probe, "plain")
    ran = ["200", "{'ok':", "1}", "True", "True", "None"]  # a request served; the real names
    assert plain == [aiohttp.__version__, "True", "True", "True", *ran]
    assert _probe(probe, "daemon") == [aiohttp.__version__, "False", "False", "False", *ran]


def test_every_lazy_module_when_used_is_the_module_a_plain_import_gives() -> None:
    # what the daemon imports, then each lazy module used (its names listed): the same names
    # as without the finder, and each then counts as run
    probe = (
        "import importlib, json, sys\n"
        "from gridnode.lazyimports import LAZY_MODULES, install, loaded_modules\n"
        "if sys.argv[1] == 'daemon':\n"
        "    assert install()\n"
        f"{CONTROL}\n"
        "names = {m: sorted(vars(importlib.import_module(m))) for m in sorted(LAZY_MODULES)}\n"
        "names = {m: [n for n in v if not n.startswith('__')] for m, v in names.items()}\n"
        "print(json.dumps([names, sorted(LAZY_MODULES - set(loaded_modules()))]))\n"
    )

    def run(mode: str) -> list[object]:
        got: list[object] = json.loads(_probe_out(probe, mode).splitlines()[-1])
        return got

    plain, daemon = run("plain"), run("daemon")
    assert daemon == plain
    assert daemon[1] == []


def test_a_lazy_module_that_replaces_itself_in_sys_modules_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "swapper.py").write_text(
        "import sys, types\nsys.modules[__name__] = types.ModuleType(__name__)\nX = 1\n"
    )
    probe = (
        "import sys\n"
        "import gridnode.lazyimports as li\n"
        "li.LAZY_MODULES = li.LAZY_MODULES | {'swapper'}\n"
        "assert li.install()\n"
        "import swapper\n"
        "try:\n"
        "    swapper.X\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "swapper replaced itself in sys.modules: it cannot be lazy"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"""Doc."""\n\n__version__ = "3.14.5"\n\nfrom . import x\n', "3.14.5"),
        ("__version__ = '1.0'  \n", "1.0"),
        # anything but one plain literal assignment: None (the __init__ then runs)
        ('__version__ = "1.0"\n__version__ += ".post1"\n', None),
        ("from ._version import __version__\n", None),
        ("__version__ = get_version()\n", None),
        ('if True:\n    __version__ = "1.0"\n', None),
        ('__version__ = "1.0" "2"\n', None),
        ("x = 1\n", None),
    ],
)
def test_a_deferred_package_version_is_read_only_from_a_plain_literal(
    tmp_path: Path, source: str, expected: str | None
) -> None:
    import importlib.util
    import types

    from gridnode.lazyimports import _literal_version

    init = tmp_path / "pkg" / "__init__.py"
    init.parent.mkdir()
    init.write_text(source)
    module = types.ModuleType("pkg")
    module.__spec__ = importlib.util.spec_from_file_location("pkg", init)
    assert _literal_version(module) == expected


def test_a_name_read_from_a_deferred_package_runs_its_init_and_is_the_real_one() -> None:
    # in a fresh interpreter, as `gridnode run` installs it: a sub-package's module imports
    # without its __init__; reading a name the __init__ defines runs it, once
    probe = (
        "import sys\n"
        "from gridnode.lazyimports import install, loaded_modules\n"
        "assert install()\n"
        "import libp2p.transport.tcp.tcp\n"
        "assert 'libp2p.transport' in sys.modules and 'libp2p.transport' not in loaded_modules()\n"
        "assert 'libp2p.transport.websocket.transport' not in sys.modules\n"
        "from libp2p.transport import TransportManager, WebsocketTransport\n"
        "from libp2p.transport.manager import TransportManager as Real\n"
        "assert TransportManager is Real and 'libp2p.transport' in loaded_modules()\n"
        "assert WebsocketTransport.__module__ == 'libp2p.transport.websocket.transport'\n"
        "print('ok')\n"
    )
    assert _probe(probe) == ["ok"]


def test_cffi_is_not_offered_and_pycryptodome_works_through_ctypes() -> None:
    # without the finder pycryptodome (imported by py-libp2p's key decoder) runs on cffi, which
    # parses C declarations with pycparser; with it, cffi is "not installed" and pycryptodome
    # takes its ctypes backend: an RSA key still signs, serialises, decodes and verifies
    probe = (
        "import sys\n"
        "from gridnode.lazyimports import ABSENT_MODULES, install\n"
        "if sys.argv[1] == 'daemon':\n"
        "    assert install() and ABSENT_MODULES == {'cffi', 'aioquic'}\n"
        "from libp2p.crypto.rsa import create_new_key_pair\n"
        "from libp2p.crypto.serialization import deserialize_public_key\n"
        "import Crypto.Util._raw_api as raw, nacl.signing\n"
        "kp = create_new_key_pair(1024)\n"
        "sig = kp.private_key.sign(b'order')\n"
        "pub = deserialize_public_key(kp.public_key.serialize())\n"
        "assert pub.verify(b'order', sig) and not pub.verify(b'other', sig)\n"
        "sk = nacl.signing.SigningKey.generate()\n"
        "assert sk.verify_key.verify(sk.sign(b'order')) == b'order'\n"
        "try:\n"
        "    import cffi\n"
        "    print(raw.backend, 'cffi importable')\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(raw.backend, 'pycparser' in sys.modules, exc)\n"
    )

    def run(mode: str) -> str:
        return _probe_out(probe, mode).strip()

    assert run("plain") == "cffi cffi importable"
    assert run("daemon") == (
        "ctypes False No module named 'cffi': gridnode.lazyimports keeps it out of the daemon "
        "(ABSENT_MODULES)"
    )


def test_aioquic_is_not_offered_and_what_imports_it_does_without() -> None:
    # without the finder py-libp2p's QUIC stream (imported by libp2p.custom_types) and dnspython
    # (multiaddr's DNS resolver, built by py-libp2p's bootstrap module) import aioquic; with it,
    # aioquic is not installed — as a module and as a distribution asked for by name — and
    # both take their paths for its absence: the QUIC stream without aioquic's error classes,
    # dnspython without DNS-over-QUIC; multiaddr's DNS resolver is still built, BasicHost's module
    # imports, and other distributions' metadata is read as before
    probe = (
        "import sys\n"
        "from gridnode.lazyimports import install\n"
        "if sys.argv[1] == 'daemon':\n"
        "    assert install()\n"
        "import importlib.metadata as md\n"
        "import libp2p.custom_types, libp2p.transport.quic.stream as qs\n"
        "import dns.quic, dns.resolver\n"
        "from libp2p.host.basic_host import BasicHost\n"
        "from multiaddr.resolvers import DNSResolver\n"
        "DNSResolver()\n"
        "try:\n"
        "    found = md.version('aioquic')\n"
        "except md.PackageNotFoundError:\n"
        "    found = 'none'\n"
        "try:\n"
        "    import aioquic\n"
        "    imported = 'importable'\n"
        "except ModuleNotFoundError as exc:\n"
        "    imported = str(exc).split(':')[0]\n"
        "print(found != 'none', dns.quic.have_quic, qs.QuicConnectionError is not None,\n"
        "      'aioquic' in sys.modules, 'OpenSSL' in sys.modules, md.version('dnspython') > '2',\n"
        "      imported)\n"
    )
    plain = _probe_out(probe, "plain").strip()
    assert plain == "True True True True True True importable"
    daemon = _probe_out(probe, "daemon").strip()
    assert daemon == "False False False False False True No module named 'aioquic'"


@pytest.mark.parametrize("name", ["aioquic", "AioQuic", "cffi"])
def test_an_absent_module_is_absent_from_the_metadata_by_name_only(name: str) -> None:
    probe = (
        "import sys, importlib.metadata as md\n"
        "from gridnode.lazyimports import install\n"
        "assert install()\n"
        "try:\n"
        "    md.version(sys.argv[1])\n"
        "    print('found')\n"
        "except md.PackageNotFoundError as exc:\n"
        "    print('not found:', exc)\n"
        "print(sys.argv[1].lower() in {d.metadata['Name'].lower() for d in md.distributions()})\n"
    )
    assert _probe_out(probe, name).splitlines() == [
        f"not found: No package metadata was found for {name}",
        "True",  # a scan of every distribution still lists it (documented)
    ]


def _start(d: Path, **env: str) -> subprocess.Popen[bytes]:
    log = (d / "daemon.log").open("ab")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "gridnode", "run", "--dir", str(d), "--ready-file",
             str(d / "ready"), "--modules-file", str(d / "modules")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )  # fmt: skip


@pytest.mark.net
@pytest.mark.timeout(120)
def test_a_validator_is_ready_without_numpy(tmp_path: Path) -> None:
    # numpy (lazy) runs at a validator's first order book, not before it serves
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, speedup=60, launcher=False)
    lc.create()
    (validator,) = lc.households
    validator.process = proc = _start(validator.dir)
    try:
        lc.wait_ready(90)
        assert lc.api(0, "/api/status")["height"] >= 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    ran = set((validator.dir / "modules").read_text().split())
    assert "numpy" not in ran and "market.clearing" in ran and "libp2p.pubsub.gossipsub" in ran


@pytest.mark.net
@pytest.mark.timeout(240)
def test_daemons_trade_over_libp2p_without_running_the_deferred_modules(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=False)
    lc.create()
    validator, household = lc.households
    update_config(
        household.dir,
        {"meter.source": "replay", "meter.replay_hour": 11.0, "bidding.enabled": True},
    )
    # the validator is profiled (GRIDNODE_PROFILE: cProfile is imported only then)
    procs = [_start(validator.dir, GRIDNODE_PROFILE=str(tmp_path / "prof")), _start(household.dir)]
    for h, proc in zip(lc.households, procs, strict=True):
        h.process = proc  # for wait_ready: exits early if a daemon dies
    try:
        lc.wait_ready(120)
        # end to end: the household's bidding loop submits over libp2p, the validator accepts,
        # and the household, a full node, syncs the blocks that carry them
        assert lc.wait_for(
            lambda: any(s["accepted"] for s in lc.api(1, "/api/submissions")["submissions"]), 120
        )
        assert lc.wait_for(lambda: lc.api(1, "/api/status")["height"] >= 3, 60)
        # and the validator clears a slot with the household's order in a block: numpy, lazy
        # until then, runs for it. (An order accepted into a mempool can still miss its slot's
        # gate on a loaded machine and never be booked; the slot then "clears" by time alone.)
        booked: list[int] = []

        def committed() -> bool:
            booked.extend(o["slot"] for o in lc.api(0, "/api/orders")["orders"])
            return bool(booked)

        assert lc.wait_for(committed, 120, poll_s=0.1)
        slot = min(booked)
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["last_cleared_slot"] >= slot, 90)
    finally:
        codes = lc.stop(timeout_s=60)  # SIGTERM both; a daemon still running then is killed
    assert codes == {0: 0, 1: 0}
    for h in (validator, household):
        ran = set((h.dir / "modules").read_text().split())
        assert ran & set(NEVER_RUN) == set(), h.name
        assert ran & LAZY_MODULES == {"numpy"}, h.name  # numpy: the clearing, the forecaster
        assert set(RUN) <= ran, h.name
    assert "cProfile" in set((validator.dir / "modules").read_text().split())
    assert "cProfile" not in set((household.dir / "modules").read_text().split())
    stats = pstats.Stats(str(tmp_path / f"prof.{procs[0].pid}"))
    assert any(fn.endswith("gossip.py") for fn, _, _ in stats.stats)  # type: ignore[attr-defined]
    # and a validator (no meter) ran no meter, forecasting or household code at all
    assert "gridnode.household_driver" in set((household.dir / "modules").read_text().split())
    ran = set((validator.dir / "modules").read_text().split())
    assert ran & {"gridnode.meter", "gridnode.household_driver", "forecasting.series"} == set()
