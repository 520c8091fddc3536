"""rnnfast.scan's products over all steps (the hoisted input products, the output layer) run
as rnnfast::mm, on the CPU engine's GEMM, forward and backward; where the engine is off, under
autocast or for 16-bit tensors, they stay ATen's. The results are the ATen runner's. Products
written with einsum run as products."""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import engine, hoisted_split  # noqa: E402, F401
from test_scan import assert_matches_loop  # noqa: E402

import rnnfast  # noqa: E402
from rnnfast._scan.engine import engine_backward_runs, engine_runs  # noqa: E402

import scan_cells  # noqa: E402

ENGINE_MM = torch.ops.rnnfast.mm.default
ATEN_PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}


class RecordOps(TorchDispatchMode):
    """The ops dispatched while it is on, in order."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def run_and_record(step, init, xs, params):
    """(outputs, gradients of init, xs and params, ops of the forward and the backward)."""
    wrt = [t for t in pytree.tree_leaves((init, xs)) if t.requires_grad] + list(params)
    with RecordOps() as recorder:
        outs = [o for o in pytree.tree_leaves(rnnfast.scan(step, init, xs)) if o is not None]
        gen = torch.Generator().manual_seed(0)
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return outs, grads, recorder.ops


CELLS = [
    scan_cells.make_nndl_srn,  # x @ W hoisted
    scan_cells.make_d2l_gru,  # three hoisted products and the output layer H @ W_hq
    scan_cells.make_projected_lstm,  # F.linear(x, W, b): addmm by W.t()
    scan_cells.make_numpy_lstm,  # x's rows of W in cat([h, x]) @ W
]


@pytest.mark.usefixtures("hoisted_split")
@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
def test_products_over_all_steps_run_on_the_engine_gemm(make):
    torch.manual_seed(0)
    step, init, xs, params = make(5, 7, torch.float64)
    h0, x = init(3), xs(6, 3)
    run_and_record(step, h0, x, params)  # traces and lowers forward and backward
    got_outs, got_grads, ops = run_and_record(step, h0, x, params)
    assert ENGINE_MM in ops
    assert not ATEN_PRODUCTS & set(ops), "a product over all steps ran as ATen's"
    with engine(False):
        want_outs, want_grads, ops = run_and_record(step, h0, x, params)
    assert ENGINE_MM not in ops
    for a, b in zip(got_outs + list(got_grads), want_outs + list(want_grads)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.usefixtures("hoisted_split")
@pytest.mark.parametrize("case", ["autocast", "float16"])
def test_products_stay_aten_where_the_aten_ops_would_round_otherwise(case):
    """Under CPU autocast the products run in bfloat16 and in float16 ATen's kernels round
    them: both as the loop would, so those stay ATen's."""
    torch.manual_seed(2)
    dtype = torch.float16 if case == "float16" else torch.float32
    step, init, xs, params = scan_cells.make_nndl_srn(4, 6, dtype)
    h0, x = init(2), xs(5, 2)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast")
    with torch.no_grad(), autocast, RecordOps() as recorder:
        rnnfast.scan(step, h0, x)
    assert ENGINE_MM not in recorder.ops
    assert ATEN_PRODUCTS & set(recorder.ops)


EINSUM_STEPS = {
    "matrices": lambda W, U, v: (
        lambda h, x: (
            torch.tanh(torch.einsum("bi,ih->bh", x, W) + torch.einsum("kh,bh->bk", U, h)),
            h.clone(),
        )
    ),
    "operand_list": lambda W, U, v: (
        lambda h, x: (
            torch.tanh(torch.einsum("bi,ih->bh", [x, W]) + torch.einsum("bh, hk -> bk", h, U)),
            h.clone(),
        )
    ),
    "vector_and_row_dot": lambda W, U, v: (
        lambda h, x: (
            torch.tanh(x @ W + h @ U) * torch.sigmoid(torch.einsum("bh,h->b", h, v))[:, None],
            torch.einsum("bh,bh->b", h, h),
        )
    ),
}


@pytest.mark.parametrize("name", EINSUM_STEPS)
def test_products_written_with_einsum_run_on_the_engine(name):
    """einsum of two operands traced as mm, mv or a row's dot product (make_fx would give
    permutes and bmm, which the engine does not run)."""
    torch.manual_seed(0)
    W = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    U = (0.4 * torch.randn(6, 6, dtype=torch.float64)).requires_grad_()
    v = torch.randn(6, dtype=torch.float64, requires_grad=True)
    step = EINSUM_STEPS[name](W, U, v)
    init = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, xs, [W, U, v])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


def test_an_einsum_that_moves_the_batch_is_refused():
    W = torch.randn(4, 6, dtype=torch.float64)

    def step(h, x):
        return torch.tanh(torch.einsum("bi,ih->hb", x, W).t()) + h, h.clone()

    with pytest.raises(rnnfast.ScanTraceError, match=r"aten\.t\.default"):
        rnnfast.scan(step, torch.randn(3, 6, dtype=torch.float64), torch.randn(5, 3, 4))
