"""How a test checks a refusal: by its reason member, never by a bare ``pytest.raises(InvalidInput)``.

    with refused(OrderReason.SLOT_CLOSED):
        validate_order(order, clock=clock, now=late)

``tests/test_reasons.py`` fails on any ``pytest.raises(InvalidInput)`` whose reason the test does not
check afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from market.errors import InvalidInput, Reason

__all__ = ["refused"]


@contextmanager
def refused(
    reason: Reason, *, error: type[InvalidInput] = InvalidInput
) -> Iterator[pytest.ExceptionInfo[InvalidInput]]:
    """Expect the block to raise ``error`` whose ``reason`` is exactly ``reason``."""
    with pytest.raises(error) as info:
        yield info
    assert info.value.reason is reason, f"refused for {info.value.reason!r}: {info.value}"
