"""Suite-wide rules: a run that passes nothing is a failure, never a green; a socket left open is
reported with the stack that opened it (:mod:`tests.sockets`), in the network test that left it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.sockets import track_sockets

#: a ``slow`` test's own time limit (the suite's is 300 s, ``pyproject.toml``): the long chaos run,
#: the million fuzzed frames and the kill -9 soaks take 2-8 minutes each on this 2-core machine
SLOW_TIMEOUT_S = 1800


def pytest_configure(config: pytest.Config) -> None:
    track_sockets()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """After a test that runs real hosts or daemons, collect garbage: a socket it left open in a
    reference cycle is reported now, in that test, not in whichever test the collector ran next."""
    try:
        return (yield)
    finally:
        if item.get_closest_marker("net") is not None:
            gc.collect()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or session.config.option.collectonly:
        return
    passed = len(reporter.stats.get("passed", []))
    if exitstatus == 0 and passed == 0:
        reporter.write_line("error: no test passed (everything skipped or deselected)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
