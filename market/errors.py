"""The project's error tree, rooted here because `market` is the bottom layer.

Errors are split by blame, so a caller can decide what to do without parsing text:

* :class:`UsageError` — our own misuse: a bad argument, a bad config file, a call out of order.
* :class:`InvalidInput` — data that breaks a rule (an order, a block, a wire message). Whether that
  is a peer misbehaving or a user typo is the caller's call: a network driver wraps it into
  :class:`PeerMisbehaviour` (which feeds peer scoring), a CLI prints it.
* :class:`PeerMisbehaviour` — a remote peer sent something it must not (forged, replayed, malformed).
* :class:`NetworkError` — the network failed us (timeouts, closed streams); nobody is to blame.

Every error carries structured fields (``subject``, ``field``, ``expected``, ``found``) and its
message says what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "GridnodeError",
    "InvalidInput",
    "NetworkError",
    "PeerMisbehaviour",
    "UsageError",
]


class GridnodeError(Exception):
    """Root of every error this project raises on purpose."""


class UsageError(GridnodeError):
    """Our own misuse: a bad argument, a bad config value, a call out of order."""


class InvalidInput(GridnodeError, ValueError):
    """Data that breaks a rule.

    ``subject`` names the thing (an order id, a block height, a file), ``field`` the offending field,
    ``reason`` a short machine-readable code (``"non_positive_energy"``, ``"duplicate_id"``, …),
    ``expected`` and ``found`` what the rule wanted and what it got.
    """

    def __init__(
        self,
        *,
        reason: str,
        subject: str = "",
        field: str = "",
        expected: str = "",
        found: str = "",
    ) -> None:
        self.reason = reason
        self.subject = subject
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(self.describe())

    def describe(self) -> str:
        where = " ".join(
            p for p in (self.subject, f"field {self.field!r}" if self.field else "") if p
        )
        parts = [f"{where}: {self.reason}" if where else self.reason]
        if self.expected:
            parts.append(f"expected {self.expected}")
        if self.found:
            parts.append(f"found {self.found}")
        return "; ".join(parts)


class PeerMisbehaviour(GridnodeError):
    """A remote peer sent something it must not. ``peer`` identifies it; ``cause`` says what."""

    def __init__(self, peer: str, cause: InvalidInput | str) -> None:
        self.peer = peer
        self.cause = cause
        super().__init__(f"peer {peer}: {cause}")


class NetworkError(GridnodeError):
    """The network failed: a timeout, a refused dial, a stream closed mid-message."""
