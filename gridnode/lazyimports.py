"""Import less: what the daemon never runs (or runs only later) is loaded only if something asks.

py-libp2p 0.8.1 imports every transport, security protocol, key type and service it ships, in its
packages' ``__init__`` files and at the top of the modules the daemon does use; aiohttp's
``__init__`` imports its HTTP client beside the server (``docs/benchmarks.md``, "Where a
validator's … go"). :func:`install`, called by the daemon's entry points (``gridnode run`` and
the launcher) before anything imports libp2p, puts one import finder (:class:`_Finder`) in front
of Python's own. It changes *when* two kinds of module run, and keeps one optional library out of
the daemon (its one user falls back, by design, to the standard library): no installed file is
edited, copied or patched, and nothing is replaced by a stand-in.

Rules of this module:

* **Deferred package ``__init__``** (:data:`DEFERRED_PACKAGES`: ``libp2p``, ``aiohttp`` and every
  sub-package of them). Such a package is created as Python creates any package (its spec,
  ``__path__``, ``__file__``), so its sub-modules import as usual, but its ``__init__.py`` runs
  only when something reads a name from the package that is not one of its sub-modules (``from
  libp2p.transport import TCP``; ``libp2p.kad_dht.KadDHT``; ``aiohttp.ClientSession``) — then in
  full, once, under a lock, before the name is returned; a name the ``__init__`` does not bind
  goes to the package's own ``__getattr__`` (PEP 562) if it has one, as without this module. So
  ``libp2p/__init__.py`` (which imports the QUIC, TLS and SECIO transports, the key store and the
  peer-store backends to offer them in ``new_host``; the daemon assembles its host from the parts
  instead, :func:`gridnode.net.host.build_host`), ``libp2p/kad_dht/__init__.py`` (Kademlia),
  ``libp2p/transport/__init__.py`` (the WebSocket transport) and ``aiohttp/__init__.py`` (the HTTP
  client, whose connector builds two TLS contexts at import, each reading the system's CA file:
  the API needs only ``aiohttp.web``) run only if something needs them. One name is answered
  without running the ``__init__``: ``__version__`` (``aiohttp.http`` reads it at import), when the
  ``__init__.py`` source has exactly one line naming it and that line binds it to a plain string
  literal — the value the ``__init__`` would bind. One effect besides imports:
  ``libp2p/__init__.py`` also configures py-libp2p's logger from ``LIBP2P_DEBUG``; the daemon
  routes that logger itself (``gridnode.startup.setup_logging``).
* **Lazy modules** (:data:`LAZY_MODULES`: modules imported whole — ``import X``, or ``from
  package import X`` of a module — by py-libp2p or the libraries it imports, for features the
  daemon does not use; and numpy, which a validator needs only once it has an order book). Such a
  module is created by its own loader and its code runs on the first read of any attribute but
  ``__spec__``, once, under this module's lock; what the import system set on it meanwhile (its
  sub-modules) is kept. ``__spec__`` is exempt because every later ``import X`` of an imported
  module reads it: :class:`importlib.util.LazyLoader` (Python 3.11), which does not exempt it,
  runs a module at its second import (py-libp2p imports requests twice). ``from X import name``
  reads ``name`` and so runs ``X`` (as it must). Only source modules can be lazy (an extension
  module runs when it is created); a lazy module whose code replaces it in :data:`sys.modules`
  (pyOpenSSL's ``crypto`` does) raises :class:`ImportError` at its first use: whoever imported
  it holds the old object.
* **Optional libraries not offered** (:data:`ABSENT_MODULES`). Importing one raises
  :class:`ModuleNotFoundError`, as if it were not installed, naming this module, and its
  distribution is not installed for :mod:`importlib.metadata` either, when asked for by name
  (:class:`importlib.metadata.PackageNotFoundError`: ``version("aioquic")``), so a library that
  checks an optional dependency's metadata before importing it believes the same; a scan of
  every distribution still lists it. Anything else that needs one fails loudly at its import.
  They are:

  - ``cffi``, the Python package — not ``_cffi_backend``, which PyNaCl's and coincurve's
    compiled bindings load. Its only user in the daemon is pycryptodome (py-libp2p's RSA keys
    and SECIO ciphers: imported by the key decoder, never used by a community of Ed25519 keys),
    which then takes its documented ``ctypes`` backend (the one it uses under ``python -OO`` or
    without cffi) instead of cffi's in-line mode, which imports pycparser and parses C
    declarations at every start. The same C library is called either way.
  - ``aioquic`` (QUIC; the daemon listens and dials on TCP only and refuses any other listen
    address). Two modules of the daemon's import it for QUIC alone, and each takes the path it
    has for its absence: py-libp2p's QUIC stream (imported for a type alias by
    ``libp2p.custom_types``) catches the :class:`ImportError` and does without aioquic's two
    error classes, which only its QUIC connections raise; dnspython (multiaddr's DNS resolver)
    asks the metadata whether DNS-over-QUIC's requirement is installed and, told no, defines
    its QUIC names without it (``dns.quic.have_quic`` is ``False``). What it keeps out: 32
    modules (aioquic's, with 36 dataclasses, and pyOpenSSL, which only aioquic's TLS imports) —
    ≈ 2 MB and ≈ 0.02–0.04 s of CPU at every start (``docs/benchmarks.md``, "Stop 27").
* **What is not made lazy, and why**: a module py-libp2p imports *names* from at its top
  (``from zeroconf import Zeroconf``) runs at that moment: Python's import statement reads the
  name at once, and a stand-in object would not be the real class (type checks, ``except``
  clauses, subclasses). The modules that do so are py-libp2p's core, which every host needs, not
  its optional transports: ``BasicHost``'s module imports cryptography's X.509 (for AutoTLS),
  ``libp2p.peer.id`` imports the key decoder (RSA keys:
  pycryptodome; secp256k1: coincurve, read in an annotation), ``BasicHost``'s module imports mDNS
  (zeroconf) and the bootstrap module, which builds multiaddr's DNS resolver (dnspython) at
  import, the resource manager imports its Prometheus exporter and takes a ``psutil.Process``
  when the host is built. ``docs/benchmarks.md`` lists what they cost; only py-libp2p importing
  them where they are used (upstream) would drop them.
* **Failure is loud.** A package whose deferred ``__init__`` fails, or a lazy module whose code
  fails, raises where its name was read, as a failing import raises where it is imported.
  ``tests/daemon/test_lazy_imports.py`` runs real daemons over real libp2p with this finder
  installed and checks, in the daemon process, which modules never ran.
* :func:`install` is idempotent and does nothing once ``libp2p`` has been imported (a package
  already imported cannot be deferred); it returns whether the finder is in place.
* Known limits: a deferred ``__init__`` or a lazy module runs under one lock of this module, not
  under the import system's lock of that module: a thread running one while another thread, in
  the middle of importing a module that the first one's code imports too, touches a second
  deferred or lazy module could wait on each other. The daemon imports almost nothing once it
  serves; numpy (the one lazy module it does use) imports only numpy and the standard library.
* What ran in a daemon: :func:`loaded_modules`; ``gridnode run --modules-file FILE`` writes it on
  exit.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any, Final

__all__ = [
    "ABSENT_MODULES",
    "DEFERRED_PACKAGES",
    "LAZY_MODULES",
    "install",
    "installed",
    "loaded_modules",
]

#: these packages and every sub-package of them have their ``__init__`` deferred
DEFERRED_PACKAGES: Final = ("libp2p", "aiohttp")
#: modules run on first attribute access: imported whole (``import X``, ``from package import
#: X`` of a module) by py-libp2p or the libraries it imports, for features the daemon does not
#: use — none of them runs in a validator or a bidding household — and numpy, which a validator
#: needs only once it has an order book (tests/daemon/test_lazy_imports.py)
LAZY_MODULES: Final = frozenset(
    {
        # AutoTLS's ACME and broker clients (requests imports urllib3, idna, charset_normalizer)
        "httpx",
        "h11",
        "requests",
        # TLS certificates and QUIC's certificate store: service_identity, pyOpenSSL's TLS (not
        # its ``crypto`` module, which replaces itself in sys.modules), certifi
        "service_identity",
        "OpenSSL.SSL",
        "certifi",
        "certifi.core",
        # mDNS
        "ifaddr",
        # RSA keys, SECIO, ECDSA keys (its C curve arithmetic runs on import: not lazy)
        "Crypto.Cipher.AES",
        "Crypto.Cipher.Salsa20",
        "Crypto.Hash.SHA256",
        "Crypto.Random",
        "Crypto.Signature.pkcs1_15",
        "Crypto.Util.Counter",
        "fastecdsa.keys",
        # DNS multiaddrs: record types and helpers dnspython and multiaddr's resolver import (the
        # resolver object itself is built at import, by py-libp2p's bootstrap module)
        "dns._ddr",
        "dns._text_util",
        "dns._tls_util",
        "dns.entropy",
        "dns.ipv6",
        "dns.rdtypes.ANY.OPT",
        "dns.rdtypes.ANY.PTR",
        "dns.rdtypes.ANY.SOA",
        "dns.rdtypes.ANY.TSIG",
        "dns.rdtypes.ANY.TXT",
        "dns.rdtypes.IN.A",
        "dns.rdtypes.IN.AAAA",
        "dns.rdtypes.nsbase",
        "dns.rdtypes.svcbbase",
        "dns.rdtypes.txtbase",
        "dns.rdtypes.util",
        "dns.reversename",
        "dns.serial",
        "dns.ttl",
        "idna",
        "idna.core",
        "idna.idnadata",
        "idna.intranges",
        "idna.package_data",
        # content identifiers (IPFS CIDs) and multibase: py-libp2p's records and Bitswap
        "cid",
        "cid.base58",
        "cid.builder",
        "cid.cid",
        "cid.prefix",
        "cid.set",
        "multibase",
        "multibase.converters",
        "multibase.exceptions",
        "multibase.multibase",
        "morphys",
        "baseconv",
        # protobuf's pure-Python implementation and text format (its C implementation, upb, is
        # the one that runs), metrics' values (no metric is made)
        "google.protobuf.descriptor_database",
        "google.protobuf.internal.containers",
        "google.protobuf.internal.decoder",
        "google.protobuf.internal.encoder",
        "google.protobuf.internal.extension_dict",
        "google.protobuf.internal.message_listener",
        "google.protobuf.internal.python_edition_defaults",
        "google.protobuf.internal.python_message",
        "google.protobuf.internal.type_checkers",
        "google.protobuf.internal.wire_format",
        "google.protobuf.text_encoding",
        "google.protobuf.text_format",
        "google.protobuf.unknown_fields",
        "prometheus_client.mmap_dict",
        "prometheus_client.values",
        # numpy: the clearing and order books' columns (market.clearing, market.orders), so a
        # validator is ready before it has run (it runs at the first book); a household's
        # forecaster uses it at once
        "numpy",
        # the standard library's, imported by those libraries for what the daemon does not do
        "calendar",
        "csv",
        "decimal",
        "email.base64mime",
        "email.header",
        "email.quoprimime",
        "fractions",
        "glob",
        "gzip",
        "hmac",
        "pickle",
        "pprint",
        "secrets",
        "shlex",
        "statistics",
        "stringprep",
    }
)

#: optional libraries the daemon is not offered (reported not installed, as modules and as
#: distributions; see the module rules): each name is both
ABSENT_MODULES: Final = frozenset({"cffi", "aioquic"})

_lock = threading.RLock()
#: deferred packages whose ``__init__`` has not run yet: name -> the real loader
_pending: dict[str, importlib.abc.Loader] = {}


def _deferred(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in DEFERRED_PACKAGES)


class _DeferredInit(importlib.abc.Loader):
    """Creates a package without running its ``__init__``; the first read of a name that is not a
    sub-module runs it (the module rules)."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        _pending[module.__name__] = self._real
        module.__dict__["__getattr__"] = _reader(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_data, …
        return getattr(self._real, name)


def _reader(module: types.ModuleType) -> Any:
    """The package's ``__getattr__`` (PEP 562: called only for names it does not have yet)."""
    package = module.__name__

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            sub = f"{package}.{name}"
            if sub in sys.modules:
                return sys.modules[sub]
            if importlib.machinery.PathFinder.find_spec(sub, module.__path__) is not None:
                return importlib.import_module(sub)
        elif name == "__version__" and package in _pending:
            version = _literal_version(module)
            if version is not None:
                return version
        _run_init(module)
        try:
            return module.__dict__[name]
        except KeyError:
            pass
        own = module.__dict__.get("__getattr__")  # the package's own (PEP 562), if it has one
        if own is not None and own is not __getattr__:
            return own(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


#: ``__version__ = "1.2.3"``, a line of its own at the top level of a package's ``__init__.py``
_VERSION_LINE = re.compile(
    rb"""^__version__ = (?:"([!#-~]+)"|'([!#-&(-~]+)')[ \t]*$""", re.MULTILINE
)
#: any line that names ``__version__``
_VERSION_ANY = re.compile(rb"^.*\b__version__\b.*$", re.MULTILINE)


def _literal_version(module: types.ModuleType) -> str | None:
    """The string a deferred package's ``__init__`` binds ``__version__`` to, read from its
    source without running it, when the one line of the source that names ``__version__`` is a
    top-level assignment of a plain ASCII string literal; ``None`` otherwise (then the
    ``__init__`` runs)."""
    spec = module.__spec__
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith("__init__.py"):
        return None
    try:
        with open(origin, "rb") as f:
            source = f.read()
    except OSError:
        return None
    lines = _VERSION_ANY.findall(source)
    found = _VERSION_LINE.fullmatch(lines[0]) if len(lines) == 1 else None
    if found is None:
        return None
    return (found.group(1) or found.group(2)).decode("ascii")


def _run_init(module: types.ModuleType) -> None:
    with _lock:
        loader = _pending.pop(module.__name__, None)
        if loader is None:
            return  # ran already (or is running in this thread: its own names are being set)
        module.__dict__.pop("__getattr__", None)
        loader.exec_module(module)


class _LazyModule(types.ModuleType):
    """A lazy module until its code runs: reading any attribute but ``__spec__`` runs it."""

    def __getattribute__(self, name: str) -> Any:
        if name == "__spec__":  # read by every later ``import X`` of it (and by nothing else)
            return super().__getattribute__(name)
        _run_lazy(self)
        return getattr(self, name)

    def __delattr__(self, name: str) -> None:
        _run_lazy(self)
        delattr(self, name)


class _LazyLoader(importlib.abc.Loader):
    """Creates a module as its real loader does and runs its code on first use (the module
    rules)."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        spec.loader = module.__loader__ = self._real
        spec.loader_state = dict(module.__dict__)  # what the import system set before its code
        module.__class__ = _LazyModule


def _run_lazy(module: types.ModuleType) -> None:
    with _lock:
        if type(module) is not _LazyModule:
            return  # ran meanwhile, in another thread
        module.__class__ = types.ModuleType  # type: ignore[assignment]  # (narrowed above)
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        before: dict[str, object] = spec.loader_state
        # what was set on it since it was created (sub-modules imported meanwhile): kept, as an
        # eager import would have left them
        since = {k: v for k, v in module.__dict__.items() if before.get(k, before) is not v}
        spec.loader_state = None
        spec.loader.exec_module(module)
        if sys.modules.get(spec.name, module) is not module:  # those holding it have the old one
            raise ImportError(f"{spec.name} replaced itself in sys.modules: it cannot be lazy")
        module.__dict__.update(since)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds modules as Python's path finder does, then defers or lazies the ones listed; refuses
    the absent ones."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in ABSENT_MODULES:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: gridnode.lazyimports keeps it out of the daemon "
                "(ABSENT_MODULES)",
                name=fullname,
            )
        lazy = fullname in LAZY_MODULES
        if not lazy and not _deferred(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        if lazy:
            if isinstance(
                spec.loader,
                importlib.machinery.SourceFileLoader | importlib.machinery.SourcelessFileLoader,
            ):
                spec.loader = _LazyLoader(spec.loader)  # (an extension module cannot run twice)
        elif spec.submodule_search_locations is not None:  # a package: defer its __init__
            spec.loader = _DeferredInit(spec.loader)
        return spec

    def find_distributions(self, context: Any = None) -> Iterator[Any]:
        """What :mod:`importlib.metadata` asks every finder (first ours): an absent module's
        distribution asked for by name is not installed (``PackageNotFoundError`` ends the
        search, as when no finder has it); nothing of its own otherwise."""
        name = getattr(context, "name", None)
        if name is not None and _normal_name(name) in ABSENT_MODULES:
            from importlib.metadata import PackageNotFoundError  # noqa: PLC0415 - only then

            raise PackageNotFoundError(name)
        return iter(())


def _normal_name(name: str) -> str:
    """A distribution's name as the metadata compares it (PEP 503, then ``-`` as ``_``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def installed() -> bool:
    return any(isinstance(f, _Finder) for f in sys.meta_path)


def install() -> bool:
    """Put the finder first on :data:`sys.meta_path` (see the module rules); ``False`` when it
    cannot take effect because libp2p was imported already."""
    with _lock:
        if installed():
            return True
        if any(top in sys.modules for top in DEFERRED_PACKAGES):
            return False
        sys.meta_path.insert(0, _Finder())
        return True


def loaded_modules() -> list[str]:
    """The names of the modules that have run in this process (sorted): those in
    :data:`sys.modules` less the deferred packages whose ``__init__`` has not run and the lazy
    modules not yet touched."""
    with _lock:
        pending = set(_pending)
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name not in pending and not _untouched(module)
    )


def _untouched(module: object) -> bool:
    """A lazy module whose code has not run (LazyLoader gives it a class of its own until then)."""
    return type(module) is _LazyModule
