"""Randomized cases (hypothesis) of rnnfast.functional against the reference.

In a module of their own so that the rest of the suite runs where hypothesis is not
installed (the GPU machines)."""

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import CELLS, compare, make_case  # noqa: E402


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    cell=st.sampled_from(CELLS),
    T=st.integers(1, 7),
    B=st.integers(1, 6),
    I=st.integers(1, 9),
    H=st.integers(1, 19),
    bias=st.booleans(),
    hx=st.booleans(),
    reverse=st.booleans(),
    batch_first=st.booleans(),
    use_lengths=st.booleans(),
    proj=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_cases(F, cell, T, B, I, H, bias, hx, reverse, batch_first, use_lengths, proj, seed):
    P = max(1, H // 2) if (cell == "lstm" and proj) else None
    case = make_case(
        cell,
        T=T,
        B=B,
        I=I,
        H=H,
        P=P,
        bias=bias,
        hx=hx,
        lengths="random" if use_lengths else None,
        reverse=reverse,
        batch_first=batch_first,
        seed=seed,
    )
    compare(F, case)
