"""The record-keeping endpoints of the local API, all read-only: bill proofs (``/api/proof``),
equivocation evidence (``/api/evidence``), committed community models (``/api/model``) and which
model made an order (``/api/provenance``). Split from :mod:`gridnode.api`, which routes them; the
request rules are :mod:`gridnode.api_requests`' (unknown parameters refused, typed reasons)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gridnode.api_requests import HANDLE_KEY, ApiError, check_params, int_param, snapshot_of
from gridnode.api_views import model_view, provenance_view
from gridnode.core.consensus_messages import Evidence, Proposal, Vote, VoteType
from market.errors import ApiReason, InvalidInput, LedgerReason

__all__ = ["evidence", "evidence_json", "model", "proof", "provenance"]


async def proof(request: web.Request) -> web.Response:
    """``GET /api/proof?household=HEX&slot=S&height=H``: a bill proof (docs/merkle.md) that
    ``gridnode verify-bill`` checks against the genesis alone. Served by a node that keeps
    proof states (:class:`gridnode.bills.ProofKeeper`, the handle's ``proofs``)."""
    check_params(request, ("household", "slot", "height"))
    keeper = getattr(request.app[HANDLE_KEY], "proofs", None)
    if keeper is None:
        raise ApiError(404, ApiReason.NOT_FOUND, "this node serves no proofs")
    household = request.query.get("household", snapshot_of(request).household)
    if len(household) != 64 or not all(c in "0123456789abcdef" for c in household):
        raise ApiError(
            400, ApiReason.BAD_PARAMETER, "household: 64 lowercase hex", field="household"
        )
    slot = int_param(request, "slot", None)
    height = int_param(request, "height", None, low=1)
    try:
        at, data = keeper.proof(household, slot=slot, height=height)
    except InvalidInput as exc:
        raise ApiError(404, exc.reason, str(exc), field=exc.field) from None
    body = {
        "household": household,
        "height": at,
        "slot": slot,
        "bytes": len(data),
        "proof_hex": data.hex(),
        "verify": "save as a file; gridnode verify-bill FILE --genesis genesis.toml",
    }
    return web.json_response(body)


def _signed_json(msg: Vote | Proposal) -> dict[str, Any]:
    if isinstance(msg, Vote):
        return {"block_hash": msg.block_hash.hex(), "signature": msg.signature.hex()}
    return {
        "block_hash": msg.block_hash.hex(),
        "valid_round": msg.valid_round,
        "signature": msg.signature.hex(),
    }


def evidence_json(ev: Evidence, validators: tuple[str, ...]) -> dict[str, Any]:
    """One piece of equivocation evidence: the validator, the step, and both signed values (with
    their signatures, so anyone can check them against the genesis key)."""
    a, b = ev.first, ev.second
    if isinstance(a, Vote):
        kind, step, index = "duplicate_vote", VoteType(a.vote_type).name.lower(), a.validator
    else:
        kind, step, index = "duplicate_proposal", "proposal", a.proposer
    return {
        "kind": kind,
        "validator": validators[index] if 0 <= index < len(validators) else "",
        "validator_index": index,
        "height": a.height,
        "round": a.round,
        "step": step,
        "first": _signed_json(a),
        "second": _signed_json(b),
    }


async def model(request: web.Request) -> web.Response:
    """``GET /api/model?hash=HEX``: a committed community model's commitment (default: the
    newest) and the list of committed models. Read-only (docs/federated.md)."""
    check_params(request, ("hash",))
    raw = request.query.get("hash")
    wanted = None
    if raw is not None:
        if len(raw) != 64 or not all(c in "0123456789abcdef" for c in raw):
            raise ApiError(400, ApiReason.BAD_PARAMETER, "hash: 64 lowercase hex", field="hash")
        wanted = bytes.fromhex(raw)
    doc = model_view(snapshot_of(request).ledger, wanted)
    if raw is not None and not doc["found"]:
        raise ApiError(404, LedgerReason.UNKNOWN_MODEL, "no model with this hash was committed")
    return web.json_response(doc)


async def provenance(request: web.Request) -> web.Response:
    """``GET /api/provenance?order=ID``: which model made an order (hash, round, contributors,
    federated validation error, or "local model") and, for this node's own orders, its forecast
    quantiles and policy parameters. Read-only (docs/federated.md)."""
    check_params(request, ("order",))
    order_id = request.query.get("order", "")
    if not order_id or len(order_id) > 128:
        raise ApiError(400, ApiReason.BAD_PARAMETER, "order: an order id", field="order")
    lookup = getattr(request.app[HANDLE_KEY], "provenance", None)
    record = lookup(order_id) if lookup is not None else None
    doc = provenance_view(snapshot_of(request).ledger, order_id, record)
    if not doc["found"]:
        raise ApiError(404, ApiReason.NOT_FOUND, "no open order or record with this id")
    return web.json_response(doc)


async def evidence(request: web.Request) -> web.Response:
    """Equivocation evidence this node saw (a validator that signed two different values for one
    step: a double vote or a double proposal), newest first; ``total`` counts all since start.
    Read-only; empty on a full node (only validators see votes)."""
    check_params(request, ())
    snap = snapshot_of(request)
    validators = snap.ledger.genesis.validators
    body = {
        "total": snap.evidence_total,
        "evidence": [evidence_json(ev, validators) for ev in reversed(snap.evidence)],
    }
    return web.json_response(body)
