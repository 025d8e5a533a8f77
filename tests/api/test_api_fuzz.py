"""Properties: whatever a client sends, the API answers JSON with a 2xx/4xx status, never a 5xx or a
traceback, and only a valid order reaches the node."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.node import FIRST_OPEN, LocalNode
from tests.api.server import AUTH, ServerThread

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
steps = st.lists(
    st.fixed_dictionaries(
        {"energy_wh": st.integers(-5, 2_000) | json_values},
        optional={
            "price": st.integers(-5, 400_000) | json_values,
            "price_micro_per_kwh": st.integers(-5, 400_000),
            "extra": json_values,
        },
    ),
    max_size=18,
)
orders = st.fixed_dictionaries(
    {},
    optional={
        "slot": st.integers(FIRST_OPEN - 2, FIRST_OPEN + 3) | json_values,
        "side": st.sampled_from(["buy", "sell", "BUY", ""]) | json_values,
        "steps": steps | json_values,
        "nonce": st.integers(),
    },
)
near_valid = st.fixed_dictionaries(
    {
        "slot": st.integers(FIRST_OPEN - 1, FIRST_OPEN + 3),
        "side": st.sampled_from(["buy", "sell"]),
        "steps": st.lists(
            st.fixed_dictionaries(
                {"price": st.integers(-1, 300_001), "energy_wh": st.integers(-1, 10**9 + 1)}
            ),
            min_size=0,
            max_size=17,
        ),
    }
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_response(code: int, raw: bytes) -> Any:
    assert code < 500, raw
    body = json.loads(raw)
    if code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"]["reason"], str)
    assert b"Traceback" not in raw
    return body


def test_any_order_body_gets_json_and_only_valid_orders_reach_the_node() -> None:
    node = LocalNode()
    with ServerThread(node) as server:

        @SETTINGS
        @given(doc=near_valid | orders | json_values)
        def prop(doc: Any) -> None:
            before = len(node.placed)
            code, _, raw = server.request(
                "POST",
                "/api/orders",
                body=json.dumps(doc).encode(),
                headers={**AUTH, "Content-Type": "application/json"},
            )
            body = check_response(code, raw)
            if code == 202:
                placed = node.placed[-1]
                assert len(node.placed) == before + 1 and body["order_id"] == placed.order_id
                assert placed.slot == doc["slot"] >= FIRST_OPEN and placed.side.value == doc["side"]
                assert all(
                    0 <= s.price_micro_per_kwh <= node.genesis.retail_micro_per_kwh
                    and s.energy_wh > 0
                    for s in placed.steps
                )
            else:
                assert len(node.placed) == before

        prop()
        assert node.placed  # the property saw accepted orders, not only refusals


def test_any_query_or_path_gets_json() -> None:
    node = LocalNode()
    with ServerThread(node) as server:
        server.on_loop(node.commit)

        @SETTINGS
        @given(
            path=st.sampled_from(
                ["/api/status", "/api/orders", "/api/trades", "/api/blocks", "/api/balance"]
            ),
            params=st.dictionaries(
                st.sampled_from(["mine", "slot", "limit", "from", "x"]),
                st.text(alphabet="0123456789-+.e xtrueflsa%", max_size=24),
                max_size=3,
            ),
            method=st.sampled_from(["GET", "GET", "POST", "DELETE", "PATCH"]),
        )
        def prop(path: str, params: dict[str, str], method: str) -> None:
            from urllib.parse import urlencode

            query = ("?" + urlencode(params)) if params else ""
            code, _, raw = server.request(method, path + query, headers=AUTH)
            check_response(code, raw)
            if method != "GET":
                assert code in (400, 405, 415), raw

        prop()
