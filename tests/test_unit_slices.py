"""The CPU engine's unit split (csrc/cpu/unit_slices.*): a batch too small to split by rows
runs each step with the hidden units split over the threads, which meet at a barrier once
all have read the step's state and again once all have written it.

The engine splits only weights of 512 KiB and more; the tests lower that to every weight, so
that small cases take the path. Each first asks the engine's own policy
(``rnnfast._C._testing.cpu_unit_slice_threads``) that the split is in effect, then checks
outputs and
all gradients against the float64 reference."""

import pytest
import torch
from test_batch_slices import num_threads, parallel_loops
from test_functional import assert_16bit_close

import rnnfast

from conftest import CELLS, LOOSE, compare, make_case

pytestmark = pytest.mark.skipif(
    not parallel_loops() or not torch.backends.openmp.is_available(),
    reason="the unit split runs on torch's OpenMP team",
)


@pytest.fixture
def split_every_weight():
    before = rnnfast._C._testing.set_cpu_unit_slice_min_weight_bytes(0)
    try:
        yield
    finally:
        rnnfast._C._testing.set_cpu_unit_slice_min_weight_bytes(before)


def unit_threads(case):
    """Threads over which the engine splits ``case``'s units on the current threads."""
    T, B = case.input.shape[:2]
    if case.batch_first:
        T, B = B, T
    GH, H = case.weight_hh.shape
    elements = GH * H
    return rnnfast._C._testing.cpu_unit_slice_threads(
        B, T, H, elements, elements * case.weight_hh.element_size()
    )


def split_case(cell, B, H, threads, T=17, **options):
    case = make_case(cell, T=T, B=B, I=5, H=H, seed=B * 100 + H, **options)
    with num_threads(threads):
        assert unit_threads(case) == threads, "the engine does not split this case"
    return case


OPTIONS = [
    dict(),
    dict(lengths="random", reverse=True),
    dict(batch_first=True, hx=False),
    dict(bias=False),
]
OPTION_IDS = ["plain", "lengths-reverse", "batch-first-no-hx", "no-bias"]


# Ranges of whole 16-unit blocks, at least 64 units a thread: H = 136 (9 blocks) is 80 and 56
# units on 2 threads, H = 200 (13 blocks) 80, 80 and 40 on 3.
@pytest.mark.parametrize("threads,H", [(2, 136), (3, 200)], ids=["2-threads", "3-threads"])
@pytest.mark.parametrize("B", [1, 3, 6])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_split_units_float32(F, split_every_weight, cell, options, B, threads, H):
    if B == 1 and "lengths" in options:
        options = dict(options, lengths=[11])
    case = split_case(cell, B, H, threads, **options)
    with num_threads(threads):
        compare(F, case.to(torch.float32), ref_case=case, **LOOSE)
        compare(F, case.to(torch.float32), ref_case=case, grads=False, **LOOSE)


@pytest.mark.parametrize("cell", CELLS)
def test_split_units_float64(F, split_every_weight, cell):
    case = split_case(cell, 3, 136, 2, lengths="random")
    with num_threads(2):
        compare(F, case)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", ["gru", "gru_reset_before", "lstm"])
def test_split_units_16bit(F, split_every_weight, cell, dtype):
    case = split_case(cell, 2, 136, 2, lengths=[17, 9])
    with num_threads(2):
        assert_16bit_close(F, case, dtype)


def test_split_units_same_as_unsplit(F, split_every_weight):
    """The split changes only which thread computes what: the same sums in the same order."""
    case = split_case("lstm", 3, 136, 2, lengths="random").to(torch.float32)
    with num_threads(2):
        split = F.lstm(
            case.input,
            case.weight_ih,
            case.weight_hh,
            case.bias_ih,
            case.bias_hh,
            (case.h0, case.c0),
            lengths=case.lengths,
        )
    with num_threads(1):
        whole = F.lstm(
            case.input,
            case.weight_ih,
            case.weight_hh,
            case.bias_ih,
            case.bias_hh,
            (case.h0, case.c0),
            lengths=case.lengths,
        )
    torch.testing.assert_close(split[0], whole[0], rtol=0, atol=0)
    torch.testing.assert_close(split[1], whole[1], rtol=0, atol=0)


def test_policy():
    """Only small batches of long enough sequences with large weights whose step products
    are not split anyway, never on one thread."""
    GH, H = 1024, 256  # an LSTM's W_hh with H = 256: 1 MiB
    elements, bytes_ = GH * H, GH * H * 4
    with num_threads(2):
        assert rnnfast._C._testing.cpu_unit_slice_threads(1, 50, H, elements, bytes_) == 2
        assert rnnfast._C._testing.cpu_unit_slice_threads(3, 16, H, elements, bytes_) == 2
        assert rnnfast._C._testing.cpu_unit_slice_threads(3, 50, H, elements, bytes_) == 2
        assert (
            rnnfast._C._testing.cpu_unit_slice_threads(4, 50, H, elements, bytes_) == 1
        )  # 1M MACs
        assert rnnfast._C._testing.cpu_unit_slice_threads(1, 15, H, elements, bytes_) == 1  # steps
        small = 4 * 128 * 128
        assert (
            rnnfast._C._testing.cpu_unit_slice_threads(1, 50, 128, small, small * 4) == 1
        )  # weight
        assert rnnfast._C._testing.cpu_unit_slice_threads(1, 50, H, elements, bytes_) == 2
    with num_threads(8):  # at least 64 units a thread
        assert rnnfast._C._testing.cpu_unit_slice_threads(1, 50, H, elements, bytes_) == 4
    with num_threads(1):
        assert rnnfast._C._testing.cpu_unit_slice_threads(1, 50, H, elements, bytes_) == 1


@pytest.mark.parametrize("cell,H", [("gru", 256), ("lstm", 256), ("gru_reset_before", 224)])
def test_split_units_at_the_default_size(F, cell, H):
    """Weights the engine splits by itself (from 512 KiB), not only the tests' small ones."""
    case = split_case(cell, 2, H, 2, T=16, lengths=[16, 7])
    with num_threads(2):
        compare(F, case.to(torch.float32), ref_case=case, **LOOSE)
