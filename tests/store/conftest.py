"""Fixtures for the store tests: one ``store`` fixture, run against both implementations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import Opener

from gridnode.store import Store


@pytest.fixture(params=["sqlite", "memory"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    o = Opener(request.param, tmp_path)
    yield o
    o.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener.open()
