"""The closed set of refusal reasons: unique codes, every raise site names one, every test of a
refusal asserts which one, and blame is only for what a peer did wrong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from market.errors import (
    MISBEHAVIOUR,
    REASONS,
    ApiReason,
    ChainReason,
    ConsensusReason,
    DataReason,
    InvalidInput,
    LedgerReason,
    OrderReason,
    PeerMisbehaviour,
    Rejected,
    SimReason,
    StoreReason,
    UsageError,
    WireReason,
    is_misbehaviour,
)
from tests.refusals import refused

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("market", "gridnode", "forecasting", "sims")
DOMAINS = (
    OrderReason,
    LedgerReason,
    ConsensusReason,
    WireReason,
    ApiReason,
    StoreReason,
    DataReason,
    ChainReason,
    SimReason,
)


def test_codes_are_unique_across_domains_and_map_back_to_their_member() -> None:
    codes = [m.value for d in DOMAINS for m in d]
    assert len(codes) == len(set(codes))
    assert set(REASONS) == set(codes)
    for domain in DOMAINS:
        for member in domain:
            assert REASONS[member.value] is member
            assert member == member.value and f"{member}" == member.value  # a member is its code
            assert member.value.isascii() and member.value.islower() and len(member.value) <= 64


def _refusal_helpers(tree: ast.AST) -> dict[str, int]:
    """Functions that pass their ``reason`` parameter on as ``reason=reason`` (``reject``,
    ``fail``, ...): name -> the parameter's positional index at a call site."""
    found = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if "reason" not in names:
            continue
        forwards = any(
            isinstance(kw.value, ast.Name) and kw.value.id == "reason"
            for call in ast.walk(fn)
            if isinstance(call, ast.Call)
            for kw in call.keywords
            if kw.arg == "reason"
        )
        if forwards:
            found[fn.name] = names.index("reason") - (names[0] in ("self", "cls"))
    return found


def _literal_reasons(path: Path) -> list[tuple[int, str]]:
    """String constants given as a reason: ``reason=`` to any call, or the ``reason`` argument of
    a helper that forwards it (see :func:`_refusal_helpers`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    helpers = _refusal_helpers(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        given = [kw.value for kw in node.keywords if kw.arg == "reason"]
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in helpers and helpers[name] < len(node.args):
            given.append(node.args[helpers[name]])
        found += [
            (c.lineno, c.value)
            for value in given
            for c in ast.walk(value)
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value
        ]
    return found


def test_every_reason_written_in_the_source_is_a_member() -> None:
    """A code that names no member would raise UsageError at run time: catch it here, statically.
    (Files owned elsewhere may still pass codes as strings; they must be known codes.)"""
    unknown = [
        f"{path.relative_to(ROOT)}:{line}: {code!r}"
        for package in SOURCES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, code in _literal_reasons(path)
        if code not in REASONS
    ]
    assert unknown == [], "add these to a reason enum in market/errors.py:\n" + "\n".join(unknown)


def test_the_scan_sees_reasons_passed_to_helpers() -> None:
    scenario = _literal_reasons(ROOT / "sims" / "scenario.py")
    assert {"unknown_key", "not_a_date", "too_many_byzantine"} <= {code for _, code in scenario}


def test_a_code_that_names_no_member_is_our_bug() -> None:
    with pytest.raises(UsageError, match="unknown refusal reason"):
        InvalidInput(reason="no_such_rule")
    error = InvalidInput(reason="slot_closed", subject="order 'x'", expected="open", found="7")
    assert error.reason is OrderReason.SLOT_CLOSED
    assert str(error) == "order 'x': slot_closed; expected open; found 7"


def test_a_peers_answer_maps_back_to_its_member_or_to_unknown_reason() -> None:
    known = Rejected(peer="p", protocol="/x", code="stale_nonce")
    assert known.reason is LedgerReason.STALE_NONCE and known.peer == "p" and known.found == ""
    newer = Rejected(peer="p", protocol="/x", code="a rule from the future")
    assert newer.reason is WireReason.UNKNOWN_REASON and newer.found == "a rule from the future"


def test_only_what_a_peer_did_wrong_is_misbehaviour() -> None:
    # an honest household can be late, race a block, re-send, or meet a full mempool
    honest = [
        OrderReason.SLOT_CLOSED,
        LedgerReason.STALE_NONCE,
        LedgerReason.DUPLICATE,
        LedgerReason.MEMPOOL_FULL,
        LedgerReason.DUPLICATE_READING,
        LedgerReason.READING_TOO_LATE,
        LedgerReason.SLOT_NOT_DELIVERED,
        LedgerReason.NO_OPEN_ORDER,
        LedgerReason.NOT_A_VALIDATOR,
        WireReason.HANDLER_FAILED,
        WireReason.UNKNOWN_REASON,
    ]
    assert not any(is_misbehaviour(r) for r in honest)
    assert is_misbehaviour("bad_signature") and is_misbehaviour(WireReason.MALFORMED)
    assert set(REASONS.values()) >= MISBEHAVIOUR
    with pytest.raises(UsageError, match="refusal, not a peer's misbehaviour"):
        PeerMisbehaviour("p", InvalidInput(reason=OrderReason.SLOT_CLOSED))
    blamed = PeerMisbehaviour("p", InvalidInput(reason=LedgerReason.BAD_SIGNATURE))
    assert blamed.reason is LedgerReason.BAD_SIGNATURE and blamed.peer == "p"


def _unchecked_raises(path: Path) -> list[int]:
    """Lines of ``pytest.raises(InvalidInput...)`` whose caught value is not used afterwards."""
    bad = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.With | ast.AsyncWith):
                continue
            for item in node.items:
                call = item.context_expr
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "raises"
                    and call.args
                ):
                    continue
                names = {n.id for n in ast.walk(call.args[0]) if isinstance(n, ast.Name)}
                if not names & {"InvalidInput", "Rejected", "PeerMisbehaviour"}:
                    continue
                var = item.optional_vars
                used = isinstance(var, ast.Name) and any(
                    isinstance(n, ast.Name) and n.id == var.id and n.lineno > (node.end_lineno or 0)
                    for n in ast.walk(fn)
                )
                if not used:
                    bad.append(node.lineno)
    return bad


def test_every_test_of_a_refusal_asserts_its_reason() -> None:
    """Use ``tests.refusals.refused(Reason.X)``, or keep the caught value and check its reason."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for line in _unchecked_raises(path)
    ]
    assert offenders == []


def test_refused_checks_the_member() -> None:
    with refused(WireReason.MALFORMED):
        raise InvalidInput(reason="malformed")
    with pytest.raises(AssertionError, match="refused for"), refused(WireReason.MALFORMED):
        raise InvalidInput(reason=WireReason.NON_CANONICAL)
