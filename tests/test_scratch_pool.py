"""The CPU engine's scratch pool (csrc/cpu/scratch_pool.*): a call's scratch buffers are
reused by later calls, never handed to the caller, and rnnfast.empty_cpu_cache() frees them."""

import pytest
import torch

import rnnfast

from conftest import make_case


def lstm_case(B, H, seed):
    case = make_case("lstm", T=7, B=B, I=5, H=H, lengths="random", seed=seed)
    return case.map(lambda t: t.detach().to(torch.float32).requires_grad_(True))


def forward_backward(case):
    (out, (h_n, c_n)) = rnnfast.functional.lstm(
        case.input,
        case.weight_ih,
        case.weight_hh,
        case.bias_ih,
        case.bias_hh,
        (case.h0, case.c0),
        lengths=case.lengths,
    )
    grads = torch.autograd.grad(
        (out.sum(), h_n.sum(), c_n.sum()), [case.input, case.weight_ih, case.weight_hh, case.h0]
    )
    return [out, h_n, c_n, *grads]


def test_reused_scratch_gives_the_same_results():
    """Calls of other sizes in between hand their buffers back and forth: every repeat of a
    call is bitwise the same."""
    big, small = lstm_case(40, 70, seed=1), lstm_case(9, 33, seed=2)
    first_big, first_small = forward_backward(big), forward_backward(small)
    for _ in range(3):
        for case, first in ((big, first_big), (small, first_small)):
            for a, b in zip(forward_backward(case), first):
                assert torch.equal(a, b)


@pytest.mark.cpu_engine_only
def test_empty_cpu_cache_frees_idle_scratch():
    forward_backward(lstm_case(40, 70, seed=3))
    idle = rnnfast._C._cpu_idle_scratch_bytes()
    assert idle > 0
    assert rnnfast.empty_cpu_cache() == idle
    assert rnnfast._C._cpu_idle_scratch_bytes() == 0
    forward_backward(lstm_case(40, 70, seed=3))  # and allocates again
    assert rnnfast._C._cpu_idle_scratch_bytes() > 0


def test_results_own_ordinary_storage():
    """Outputs and gradients are not pool buffers: their storage can grow, as any tensor's."""
    for t in forward_backward(lstm_case(40, 70, seed=4)):
        t = t.detach()
        t.resize_(t.numel() + 1000)
