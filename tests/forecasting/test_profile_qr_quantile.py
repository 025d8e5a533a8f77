"""profile-qr's numpy helpers that keep ``numpy.ma`` out of a household daemon: bit for bit numpy's."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forecasting.profile_qr import MAX_BAND_SCALE, MIN_BAND_SCALE, _row_quantile, _sorted_unique

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    a=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.integers(1, 40)),
        elements=st.one_of(FINITE, st.sampled_from([0.0, -0.0, 1.0, 2.5])),  # ties
    ),
    q=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 0.8, 1.0, 0.8125])),
)
def test_row_quantile_is_numpy_quantile_bit_for_bit(a: np.ndarray, q: float) -> None:
    got = _row_quantile(a, q)
    want = np.quantile(a, q, axis=1)
    assert got.dtype == want.dtype == np.float64
    assert got.shape == want.shape
    # the same bits, but for a zero's sign: numpy partitions, this sorts, and the two may order
    # -0.0 and 0.0 (equal values) differently
    assert np.array_equal(got, want)
    nonzero = want != 0
    assert got[nonzero].view(np.int64).tolist() == want[nonzero].view(np.int64).tolist()
    # what profile-qr takes of it, clipped to the band scales' range (>= 1): the same bits
    assert (
        np.clip(got, MIN_BAND_SCALE, MAX_BAND_SCALE).view(np.int64).tolist()
        == np.clip(want, MIN_BAND_SCALE, MAX_BAND_SCALE).view(np.int64).tolist()
    )


@settings(max_examples=200, deadline=None)
@given(a=hnp.arrays(np.int64, st.integers(0, 60), elements=st.integers(-50, 50)))
def test_sorted_unique_is_numpy_unique(a: np.ndarray) -> None:
    got = _sorted_unique(a)
    assert got.dtype == np.int64
    assert got.tolist() == np.unique(a).tolist()
