"""The project's error tree and its closed sets of refusal reasons, rooted here because `market` is
the bottom layer.

Errors are split by blame, so a caller can decide what to do without parsing text:

* :class:`UsageError` — our own misuse: a bad argument, a bad config file, a call out of order.
* :class:`InvalidInput` — data that breaks a rule (an order, a block, a wire message, a request).
  It carries a :data:`Reason` (a member of one of the string enums below) and structured
  ``subject``/``field``/``expected``/``found`` fields; its message says what was expected and
  what was found. :class:`Rejected` is the one a peer sent back: it refused our request.
* :class:`PeerMisbehaviour` — a remote peer sent something it must not (forged, malformed,
  oversize, a protocol violation). Only reasons in :data:`MISBEHAVIOUR` are a peer's fault; the
  network shell (:mod:`gridnode.net`) is the one place that records them against the peer that
  sent the bytes and feeds its peer score (``docs/protocol.md`` §6).
* :class:`NetworkError` — the network failed us (timeouts, closed streams); nobody is to blame.

Reasons. Every refusal names one member of a closed set, one string enum per domain:
:class:`OrderReason` (the market's rules for an order, a book, a settlement input),
:class:`LedgerReason` (ledger admission, block validity, the mempool), :class:`ConsensusReason`
(consensus messages and commits), :class:`WireReason` (bytes a peer sent: encodings, frames,
batches, stream protocols), :class:`ApiReason` (the local HTTP API), :class:`StoreReason` (the
node's store contract), :class:`DataReason` (local files and data sets), :class:`SimReason`
(simulation harnesses). A member *is* its code (``StrEnum``): ``OrderReason.SLOT_CLOSED ==
"slot_closed"``, and the code is what travels on the wire and in the API. Codes are unique across
domains, so :data:`REASONS` maps each code back to its one member; a code that names no member is a
bug (:class:`InvalidInput` refuses to be built with it).

Blame. :data:`MISBEHAVIOUR` is the set of reasons no honest peer ever causes: undecodable or
non-canonical bytes, a forged signature, an outsider's key, an order that breaks the community's
static rules. Everything else is a *refusal* an honest peer can meet (an order that arrived after
its gate closed, a nonce a race made stale, a full mempool): answered with its reason, never
counted against the peer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "MISBEHAVIOUR",
    "REASONS",
    "ApiReason",
    "ChainReason",
    "ConsensusReason",
    "DataReason",
    "GridnodeError",
    "InvalidInput",
    "LedgerReason",
    "NetworkError",
    "OrderReason",
    "PeerMisbehaviour",
    "Reason",
    "Rejected",
    "SimReason",
    "StoreReason",
    "UsageError",
    "WireReason",
    "is_misbehaviour",
    "reason_of",
]


class OrderReason(StrEnum):
    """The market's rules for one order, one slot's book and a settlement's inputs."""

    EMPTY_ID = "empty_id"
    ID_TOO_LONG = "id_too_long"
    EMPTY_HOUSEHOLD = "empty_household"
    BAD_SIDE = "bad_side"
    BAD_SLOT = "bad_slot"
    BAD_NONCE = "bad_nonce"
    NO_STEPS = "no_steps"
    TOO_MANY_STEPS = "too_many_steps"
    NON_POSITIVE_ENERGY = "non_positive_energy"
    ENERGY_TOO_LARGE = "energy_too_large"
    PRICE_OUT_OF_RANGE = "price_out_of_range"
    #: the slot's gate closed (an honest household can be late: a refusal, not misbehaviour)
    SLOT_CLOSED = "slot_closed"
    #: the slot is further ahead than the community allows (``max_order_ahead_slots``)
    SLOT_TOO_FAR_AHEAD = "slot_too_far_ahead"
    WRONG_SLOT = "wrong_slot"
    DUPLICATE_ID = "duplicate_id"
    MISSING_READING = "missing_reading"
    RESERVED_NAME = "reserved_name"
    BAD_RULE = "bad_rule"


class LedgerReason(StrEnum):
    """Ledger admission of a transaction, block validity, and the mempool in front of them."""

    NOT_A_MEMBER = "not_a_member"
    BAD_SIGNATURE = "bad_signature"
    STALE_NONCE = "stale_nonce"
    NO_OPEN_ORDER = "no_open_order"
    SLOT_NOT_DELIVERED = "slot_not_delivered"
    READING_TOO_LATE = "reading_too_late"
    DUPLICATE_READING = "duplicate_reading"
    WRONG_HEIGHT = "wrong_height"
    NOT_NEXT = "not_next"
    WRONG_PREV_HASH = "wrong_prev_hash"
    TIME_NOT_MONOTONIC = "time_not_monotonic"
    TIME_IN_FUTURE = "time_in_future"
    TIME_TOO_OLD = "time_too_old"
    #: a block's proposer, or the node a transaction was submitted to, is not a validator
    NOT_A_VALIDATOR = "not_a_validator"
    WRONG_STATE_ROOT = "wrong_state_root"
    #: a block's header names other transactions than the block carries
    WRONG_TXS_ROOT = "wrong_txs_root"
    WRONG_GENESIS = "wrong_genesis"
    #: the mempool already holds (or just committed) this transaction: a re-send, not a fault
    DUPLICATE = "duplicate"
    #: the mempool is full
    MEMPOOL_FULL = "full"
    #: an order names a community model hash the ledger never committed
    UNKNOWN_MODEL = "unknown_model"
    #: a model commitment for another round than the one after the last committed model
    MODEL_ROUND_NOT_NEXT = "model_round_not_next"
    #: a model commitment whose previous model is not the last committed one
    MODEL_WRONG_PREVIOUS = "model_wrong_previous"
    #: a model commitment for a model hash the ledger already holds
    DUPLICATE_MODEL = "duplicate_model"
    #: a model commitment whose values no aggregator makes (zero hash, contributors out of range)
    BAD_MODEL = "bad_model"


class ConsensusReason(StrEnum):
    """Consensus messages, commits and the validator set."""

    EMPTY_VALIDATOR_SET = "empty_validator_set"
    DUPLICATE_VALIDATOR = "duplicate_validator"
    BAD_VOTE_TYPE = "bad_vote_type"
    NO_QUORUM = "no_quorum"
    WRONG_BLOCK_HASH = "wrong_block_hash"
    UNORDERED_SIGNATURES = "unordered_signatures"
    BAD_WAL_RECORD = "bad_wal_record"


class WireReason(StrEnum):
    """Bytes from outside: canonical msgpack, frames, batches, peer ids, stream protocols."""

    NOT_BYTES = "not_bytes"
    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    BAD_TYPE = "bad_type"
    BAD_SHAPE = "bad_shape"
    BAD_TAG = "bad_tag"
    BAD_VERSION = "bad_version"
    OUT_OF_RANGE = "out_of_range"
    MALFORMED_VARINT = "malformed_varint"
    DECODER_FAILED = "decoder_failed"
    BAD_BATCH_SIZE = "bad_batch_size"
    DUPLICATE_IN_BATCH = "duplicate_in_batch"
    #: a gossiped order batch holds something that is not an order
    NOT_AN_ORDER = "not_an_order"
    MALFORMED_PUBLIC_KEY = "malformed_public_key"
    MALFORMED_PEER_ID = "malformed_peer_id"
    NOT_ED25519_PEER_ID = "not_ed25519_peer_id"
    #: a response frame nobody asked for, or one whose status byte is neither OK nor REJECTED
    UNSOLICITED_RESPONSE = "unsolicited_response"
    BAD_STATUS = "bad_status"
    #: a stream protocol the sender may not use (e.g. mempool sharing from a non-validator)
    NOT_PERMITTED = "not_permitted"
    #: we hold no handler for the protocol (answered to the requester)
    NO_HANDLER = "no_handler"
    #: our handler failed on a request (a bug of ours; the requester is not to blame)
    HANDLER_FAILED = "handler_failed"
    #: a peer's REJECTED answer named a code we do not know (a newer peer?)
    UNKNOWN_REASON = "unknown_reason"
    #: a federated-round message an honest member can meet refused (another round, late, a
    #: duplicate, a member without the previous model): not misbehaviour
    FED_REFUSED = "fed_refused"
    #: a federated-round contribution no honest member sends (wrong length, a key outside the
    #: round, a reveal that is not what was asked, a spec naming non-members)
    BAD_CONTRIBUTION = "bad_contribution"


class ApiReason(StrEnum):
    """The local HTTP API's own refusals (a request may also be refused with any other reason)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    HOST_NOT_ALLOWED = "host_not_allowed"
    HTTP_ERROR = "http_error"
    UNKNOWN_PARAMETER = "unknown_parameter"
    BAD_PARAMETER = "bad_parameter"
    NUMBER_TOO_LONG = "number_too_long"
    BAD_STEPS = "bad_steps"
    NOT_CLEARED = "not_cleared"
    NETWORK = "network"
    REFUSED = "refused"
    INTERNAL = "internal"


class StoreReason(StrEnum):
    """The node store's contract (append-only blocks, WAL, snapshots, double-sign guard)."""

    BAD_LENGTH = "bad_length"
    EMPTY = "empty"
    HEIGHT_GAP = "height_gap"
    BELOW_FIRST_BLOCK = "below_first_block"
    CONFLICTING_BLOCK = "conflicting_block"
    CONFLICTING_SNAPSHOT = "conflicting_snapshot"
    SNAPSHOT_AHEAD_OF_HEAD = "snapshot_ahead_of_head"
    SNAPSHOT_REGRESSION = "snapshot_regression"
    WAL_REGRESSION = "wal_regression"
    TRUNCATE_UNCOMMITTED = "truncate_uncommitted"
    LAST_SIGNED_REGRESSION = "last_signed_regression"
    DOUBLE_SIGN = "double_sign"
    NOT_A_GRIDNODE_STORE = "not_a_gridnode_store"
    SCHEMA_TOO_NEW = "schema_too_new"
    # checked when a store is opened (gridnode/store: recovery, sqlite)
    EMPTY_FILE = "empty_file"
    DAMAGED_STORE = "damaged_store"
    OTHER_COMMUNITY = "other_community"
    OTHER_GENESIS = "other_genesis"


class DataReason(StrEnum):
    """Documents and data sets: JSON and TOML documents (order books, scenarios, API bodies),
    meter histories, forecasts."""

    UNREADABLE = "unreadable"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_TOML = "not_toml"
    NOT_A_TABLE = "not_a_table"
    NOT_AN_ARRAY_OF_TABLES = "not_an_array_of_tables"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_KEY = "unknown_key"
    MISSING_FIELD = "missing_field"
    MISSING = "missing"
    NOT_AN_INTEGER = "not_an_integer"
    NOT_A_NUMBER = "not_a_number"
    NOT_A_RANGE = "not_a_range"
    NOT_A_STRING = "not_a_string"
    NOT_A_DATE = "not_a_date"
    UNKNOWN_VALUE = "unknown_value"
    UNKNOWN_FORMAT = "unknown_format"
    BAD_DATE = "bad_date"
    MISSING_COLUMN = "missing_column"
    EMPTY_COLUMN = "empty_column"
    TOO_FEW_ROWS = "too_few_rows"
    GAP_TOO_LONG = "gap_too_long"
    IRREGULAR_TIME = "irregular_time"
    NOT_FINITE = "not_finite"
    SHAPE_MISMATCH = "shape_mismatch"
    HISTORY_TOO_SHORT = "history_too_short"
    # a household's own meter files and folders (forecasting/data/meter_files.py)
    UNPARSEABLE = "unparseable"
    MISSING_TIME = "missing_time"
    BAD_TIME = "bad_time"
    AMBIGUOUS_COLUMN = "ambiguous_column"
    UNSORTED_TIME = "unsorted_time"
    NEGATIVE_VALUE = "negative_value"
    NOT_A_FOLDER = "not_a_folder"
    NO_METER_FILES = "no_meter_files"
    DUPLICATE_HOUSEHOLD = "duplicate_household"
    NO_HOUSEHOLDS = "no_households"
    STEP_TOO_COARSE = "step_too_coarse"
    TOO_SHORT = "too_short"
    NO_COMMON_SPAN = "no_common_span"
    # meter telegrams, messages and registers (gridnode/meters)
    NO_REGISTERS = "no_registers"
    NO_HISTORY = "no_history"
    NOT_JSON = "not_json"
    NO_FIELD = "no_field"
    NEGATIVE = "negative"


class ChainReason(StrEnum):
    """Reading a committed chain (:mod:`gridnode.chain`): which step refused a block. A block that
    is not the next height is :attr:`LedgerReason.WRONG_HEIGHT`."""

    BAD_COMMIT = "bad_commit"  # the commit does not decode or does not prove these bytes
    BAD_BLOCK = "bad_block"  # committed bytes that are no block
    BROKEN_RULE = "broken_rule"  # a block the ledger's rules refuse
    # chain export files (gridnode/chainfile.py)
    BAD_FILE = "bad_file"  # not an export, or a record that does not decode or is out of order
    TRUNCATED = "truncated"  # the file ends before its end record
    CHECKSUM_MISMATCH = "checksum_mismatch"  # the end record's SHA-256 is not the file's
    # the audit and bill proofs (gridnode/audit.py, gridnode/core/ledger/proofs.py)
    DISAGREES = "disagrees"  # the chain reads, but not to what the node that wrote it holds
    BAD_PROOF = "bad_proof"  # a Merkle path that does not lead to the committed root
    WRONG_LEAF = "wrong_leaf"  # a proven entry that is not the asked household or slot


class SimReason(StrEnum):
    """Simulation harnesses: scenarios and the simulated network's toy application."""

    UNKNOWN_FAULT = "unknown_fault"
    TOO_MANY_BYZANTINE = "too_many_byzantine"
    NOT_WHOLE_INTERVALS = "not_whole_intervals"
    ABOVE_RETAIL = "above_retail"
    BATTERY_WITHOUT_POWER = "battery_without_power"
    NOT_GROUPS = "not_groups"
    BAD_INDICES = "bad_indices"
    BAD_HEADER = "bad_header"
    BAD_TX = "bad_tx"
    BAD_TX_SIGNATURE = "bad_tx_signature"
    REPLAYED_TX = "replayed_tx"
    OUTSIDE_THE_DATA = "outside_the_data"  # a scenario's days the homes' data do not cover
    UNKNOWN_CALENDAR = "unknown_calendar"  # a holiday country / subdivision nobody knows
    NOT_FOR_THIS_SOURCE = "not_for_this_source"  # a key of another households.source
    NET_ONLY_METERS = "net_only_meters"  # a PV / load scale for meters that hold only the net
    NEEDS_THE_SITE = "needs_the_site"  # a model that needs the site's latitude and longitude
    BAD_HOMES = "bad_homes"  # CityLearn home numbers that are not distinct numbers in range
    FEDERATED_ONLY = "federated_only"  # a [training] key that needs mode = "federated"
    DP_WITHOUT_EPSILON = "dp_without_epsilon"  # dp_delta / dp_clip_norm without dp_epsilon


Reason = (
    OrderReason
    | LedgerReason
    | ConsensusReason
    | WireReason
    | ApiReason
    | StoreReason
    | DataReason
    | ChainReason
    | SimReason
)
_DOMAINS: Final = (
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


def _index() -> dict[str, Reason]:
    out: dict[str, Reason] = {}
    for domain in _DOMAINS:
        for member in domain:
            if member.value in out:  # pragma: no cover - guarded by tests/test_reasons.py
                raise AssertionError(f"reason code {member.value!r} is in two domains")
            out[member.value] = member
    return out


#: every reason code -> its one member
REASONS: Final[dict[str, Reason]] = _index()

#: reasons that are a peer's fault wherever they come from a peer (see the module rules)
MISBEHAVIOUR: Final[frozenset[Reason]] = frozenset(
    {
        # bytes that do not decode, or decode to something no honest encoder writes
        WireReason.NOT_BYTES,
        WireReason.OVERSIZE,
        WireReason.MALFORMED,
        WireReason.NON_CANONICAL,
        WireReason.BAD_TYPE,
        WireReason.BAD_SHAPE,
        WireReason.BAD_TAG,
        WireReason.BAD_VERSION,
        WireReason.MALFORMED_VARINT,
        WireReason.BAD_BATCH_SIZE,
        WireReason.DUPLICATE_IN_BATCH,
        WireReason.NOT_AN_ORDER,
        WireReason.UNSOLICITED_RESPONSE,
        WireReason.BAD_STATUS,
        WireReason.NOT_PERMITTED,
        ConsensusReason.BAD_VOTE_TYPE,
        # forged or foreign
        LedgerReason.BAD_SIGNATURE,
        LedgerReason.NOT_A_MEMBER,
        LedgerReason.BAD_MODEL,
        WireReason.BAD_CONTRIBUTION,
        # an order no honest household signs: it breaks the community's static rules
        OrderReason.EMPTY_ID,
        OrderReason.ID_TOO_LONG,
        OrderReason.EMPTY_HOUSEHOLD,
        OrderReason.BAD_SIDE,
        OrderReason.BAD_SLOT,
        OrderReason.BAD_NONCE,
        OrderReason.NO_STEPS,
        OrderReason.TOO_MANY_STEPS,
        OrderReason.NON_POSITIVE_ENERGY,
        OrderReason.ENERGY_TOO_LARGE,
        OrderReason.PRICE_OUT_OF_RANGE,
        OrderReason.SLOT_TOO_FAR_AHEAD,
    }
)


def reason_of(code: str) -> Reason | None:
    """The member whose code is ``code`` (a member is returned as is), or ``None``."""
    return REASONS.get(code)


def is_misbehaviour(reason: str) -> bool:
    """Whether ``reason`` (a member or its code) is a peer's fault, see :data:`MISBEHAVIOUR`."""
    return reason in MISBEHAVIOUR


class GridnodeError(Exception):
    """Root of every error this project raises on purpose."""


class UsageError(GridnodeError):
    """Our own misuse: a bad argument, a bad config value, a call out of order."""


class InvalidInput(GridnodeError, ValueError):
    """Data that breaks a rule.

    ``reason`` is the rule's :data:`Reason` member (given as a member, or as its code: both are
    stored as the member; a code that names no member raises :class:`UsageError`). ``subject``
    names the thing (an order id, a block height, a file), ``field`` the offending field,
    ``expected`` and ``found`` what the rule wanted and what it got.
    """

    def __init__(
        self,
        *,
        reason: Reason | str,
        subject: str = "",
        field: str = "",
        expected: str = "",
        found: str = "",
    ) -> None:
        member = REASONS.get(reason)
        if member is None:
            raise UsageError(
                f"unknown refusal reason {reason!r}: add it to a reason enum in market/errors.py"
            )
        self.reason: Reason = member
        self.subject = subject
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(self.describe())

    def describe(self) -> str:
        where = " ".join(
            p for p in (self.subject, f"field {self.field!r}" if self.field else "") if p
        )
        parts = [f"{where}: {self.reason.value}" if where else self.reason.value]
        if self.expected:
            parts.append(f"expected {self.expected}")
        if self.found:
            parts.append(f"found {self.found}")
        return "; ".join(parts)


class Rejected(InvalidInput):
    """A peer refused our request with ``reason`` (the code it answered, mapped to its member;
    :attr:`WireReason.UNKNOWN_REASON` with the code in ``found`` when we do not know it)."""

    def __init__(self, *, peer: str, protocol: str, code: str) -> None:
        member = REASONS.get(code)
        super().__init__(
            reason=WireReason.UNKNOWN_REASON if member is None else member,
            subject=f"peer {peer}",
            field=protocol,
            found="" if member is not None else code[:64],
        )
        self.peer = peer


class PeerMisbehaviour(GridnodeError):
    """A remote ``peer`` sent something it must not; ``cause`` says what (its ``reason`` is in
    :data:`MISBEHAVIOUR`). Raised by the network shell's decode boundary and handed to its peer
    score; a handler that must still answer reports it instead of raising."""

    def __init__(self, peer: str, cause: InvalidInput) -> None:
        if cause.reason not in MISBEHAVIOUR:
            raise UsageError(f"{cause.reason.value!r} is a refusal, not a peer's misbehaviour")
        self.peer = peer
        self.cause = cause
        super().__init__(f"peer {peer}: {cause}")

    @property
    def reason(self) -> Reason:
        return self.cause.reason


class NetworkError(GridnodeError):
    """The network failed: a timeout, a refused dial, a stream closed mid-message."""
