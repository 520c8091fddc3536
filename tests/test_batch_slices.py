"""The CPU engine's batch split (csrc/cpu/batch_slices.*): a batch with enough rows and
work runs as slices of rows, each slice a whole recurrence on a thread of its own.

Every case here first asks the engine's own policy (``rnnfast._C._testing.cpu_batch_slices``) that
the split is in effect, with slices of unequal size, then checks outputs and all gradients
against the float64 reference."""

import contextlib

import pytest
import torch
from test_functional import HALF_DTYPES, assert_16bit_close

import rnnfast

from conftest import CELLS, LOOSE, compare, extension_calls_openmp, make_case


def parallel_loops():
    """Whether the extension's at::parallel_for runs on threads: always with torch's native
    thread pool; with its OpenMP backend only if the extension calls OpenMP (not built with
    RNNFAST_OPENMP=0; tests/test_build.py checks the default build does)."""
    return not torch.backends.openmp.is_available() or extension_calls_openmp()


pytestmark = pytest.mark.skipif(
    not parallel_loops(), reason="this build runs its loops serially: no batch slices"
)


@contextlib.contextmanager
def num_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def slices_of(case):
    """(count, rows) of the engine's split of ``case`` on the current threads."""
    T, B = case.input.shape[:2]
    if case.batch_first:
        T, B = B, T
    GH, P = case.weight_hh.shape
    elements = GH * P + (case.weight_hr.numel() if case.weight_hr is not None else 0)
    return rnnfast._C._testing.cpu_batch_slices(
        B, T, elements, elements * case.weight_hh.element_size()
    )


def split_case(cell, B, threads, H=64, **options):
    """A case of B rows whose T is the shortest of a few that the engine splits."""
    for T in (4, 16, 64, 256):
        case = make_case(cell, T=T, B=B, I=5, H=H, seed=B * 10 + T, **options)
        with num_threads(threads):
            count, rows = slices_of(case)
        if count > 1:
            assert count <= threads and B % rows != 0, (count, rows)  # uneven slices
            return case
    raise AssertionError(f"no split for {cell} with B={B} on {threads} threads")


OPTIONS = {
    "lengths-reverse": dict(lengths="random", reverse=True),
    "batch-first-no-hx": dict(batch_first=True, hx=False),
    "lengths-batch-first-no-bias": dict(lengths="random", batch_first=True, bias=False),
    "lengths-reverse-batch-first": dict(lengths="random", reverse=True, batch_first=True),
}


@pytest.mark.parametrize("threads,B", [(2, 9), (3, 14), (4, 23)])
@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("cell", CELLS)
def test_split_batch_float64(F, cell, options, threads, B):
    case = split_case(cell, B, threads, **OPTIONS[options])
    with num_threads(threads):
        compare(F, case)


@pytest.mark.parametrize("P", [3, 24])
@pytest.mark.parametrize("lengths", [None, "random"])
def test_split_batch_lstm_projection(F, P, lengths):
    case = split_case("lstm", 11, 2, P=P, lengths=lengths, reverse=True)
    with num_threads(2):
        compare(F, case)


@pytest.mark.parametrize("cell", CELLS)
def test_split_batch_float32(F, cell):
    P = 7 if cell == "lstm" else None
    c32 = split_case(cell, 37, 2, P=P, lengths="random").to(torch.float32)
    with num_threads(2):
        compare(F, c32, ref_case=c32.to(torch.float64), **LOOSE)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("cell", [c for c in CELLS if "relu" not in c])
def test_split_batch_16bit(F, cell, dtype):
    """Many rows, so that the split comes within a few steps: 16-bit states drift from the
    float64 ones over longer sequences, split or not. Not relu: among 131 x 64 units some
    pre-activation lies within a 16-bit rounding of 0, and its gradient then differs by a
    whole unit (the relu cells' split is checked in float32 and float64 above)."""
    case = split_case(cell, 131, 2, lengths="random")
    assert case.input.shape[0] <= 4
    with num_threads(2):
        assert_16bit_close(F, case, dtype)


def test_split_policy():
    """No split on one thread, with too few rows (4 a slice at least) or too little work;
    weights beyond the cache (1 MiB) are split only into tall slices (64 rows)."""
    slices = rnnfast._C._testing.cpu_batch_slices
    with num_threads(1):
        assert slices(1000, 100, 1000, 4000) == (1, 1000)
    with num_threads(2):
        assert slices(7, 10**4, 1000, 4000) == (1, 7)
        assert slices(9, 10**4, 1000, 4000) == (2, 5)
        assert slices(9, 1, 1000, 4000) == (1, 9)
        big = 3 * 256 * 256  # W_hh of a GRU with H = 256: 1.5 MiB in float64, 768 KiB in float32
        assert slices(100, 10, big, big * 8) == (1, 100)
        assert slices(131, 10, big, big * 8) == (2, 66)
        assert slices(100, 10, big, big * 4) == (2, 50)


def test_split_batch_large_weights_tall_slices(F):
    """float64 GRU with H = 256 (W_hh 1.5 MiB): split into two slices of 66 and 65 rows."""
    case = make_case("gru", T=3, B=131, I=4, H=256, lengths="random", seed=5)
    with num_threads(2):
        assert slices_of(case) == (2, 66)
        compare(F, case)
