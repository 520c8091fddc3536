"""rnnfast.scan on the kinds of values a step meets beyond [B, cols] floats: per-step masks
of bools, token ids looked up in the step, [B] values (a per-step [T, B] input, a row
statistic without keepdim) and outputs of another dtype or shape. torch's broadcasting lines
a [B] value up with the last dimension of a wider one, so the ops that would read its batch
as a column are refused with the line, and their results under fallback='loop' are the
loop's. The cell built of [B] values runs in tests/scan_cells.py."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_scan import TIGHT, assert_matches_loop, python_loop  # noqa: E402

import rnnfast  # noqa: E402
from rnnfast._scan import ScanTraceError, trace  # noqa: E402
from rnnfast._scan.engine import engine_backward_runs, engine_runs  # noqa: E402

DT = torch.float64
# make_fx records the user's line from torch 2.6 on; before, messages name the op alone.
AT_LINE = ".*test_scan_value_kinds.py" if trace._STACK_TRACES else ""
B, T, I, H = 3, 5, 4, 6


def _weights():
    torch.manual_seed(0)
    W = torch.randn(I, H, dtype=DT, requires_grad=True)
    U = (0.5 * torch.randn(H, H, dtype=DT)).requires_grad_()
    return W, U


@pytest.mark.parametrize("shape", ["T,B", "T,B,1"])
def test_a_boolean_per_step_mask_runs_on_the_engine(shape):
    """An episode mask of bools, as people keep it ([T, B], read as done[:, None], or
    [T, B, 1]): where it is set the state starts again from zero. The engine reads it as
    0/1, forward and backward."""
    W, U = _weights()

    def step(h, inputs):
        x, done = inputs
        h = torch.where(done[:, None] if done.dim() == 1 else done, 0.0, h)
        h = torch.tanh(x @ W + h @ U)
        return h, h.clone()

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    done = torch.rand(T, B, 1) < 0.3
    xs = (
        torch.randn(T, B, I, dtype=DT, requires_grad=True),
        done[..., 0] if shape == "T,B" else done,
    )
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, xs, [W, U])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


def test_row_statistics_as_b_values_run_on_the_engine():
    W, U = _weights()

    def step(h, x):
        a = x @ W + h @ U
        s = torch.sigmoid(a.sum(-1))  # [B]
        h = torch.tanh(a) * s.view(-1, 1) + (1 - s).unsqueeze(-1) * h
        return h, h.clone()

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    runs = engine_runs()
    assert_matches_loop(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True), [W, U])
    assert engine_runs() > runs


def _refused(step, match, xs=None):
    """step is refused naming its line; with fallback='loop' its results are the loop's."""
    init = torch.randn(B, H, dtype=DT)
    xs = torch.randn(T, B, I, dtype=DT) if xs is None else xs
    with pytest.raises(ScanTraceError, match=match + AT_LINE):
        rnnfast.scan(step, init, xs)
    with pytest.warns(UserWarning, match=match):
        got = rnnfast.scan(step, init, xs, fallback="loop")
    want = python_loop(step, init, xs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TIGHT)


def test_a_b_value_broadcast_against_b_by_cols_is_refused():
    """[B] + [B, 1] is [B, B] in torch: its columns are the batch."""
    W, U = _weights()

    def step(h, x):
        a = x @ W
        return torch.tanh(h @ U), a.sum(-1) + a.sum(-1, keepdim=True)

    _refused(step, r"a \[B\] value broadcast against \[B, cols\]")


def test_a_reduction_along_the_batch_of_a_b_value_is_refused():
    """The last dimension of a [B] value is the batch: its sum is over the batch."""
    _, U = _weights()

    def step(h, dt):
        return torch.tanh(h @ U + dt.sum(-1)), h.clone()

    _refused(step, r"its last dimension is the batch", torch.rand(T, B, dtype=DT))


@pytest.mark.parametrize(
    "reduce",
    [torch.sum, torch.mean, torch.amax, torch.amin, lambda a: a.sum(dim=[])],
    ids=["sum", "mean", "amax", "amin", "sum_no_dims"],
)
@pytest.mark.parametrize("part", ["loop", "hoisted"])
def test_a_reduction_without_a_dimension_is_refused(reduce, part):
    """x.sum() reduces over the batch too: refused in the loop and where it depends on x_t
    alone (which runs over all steps' rows at once, and crashed there)."""
    W, U = _weights()

    def step(h, x):
        a = x @ W + h @ U if part == "loop" else x @ W
        return torch.tanh(x @ W + h @ U - reduce(a)), h.clone()

    _refused(step, "a reduction over every dimension, the batch included")


@pytest.mark.parametrize("squeeze", [lambda s: s.squeeze(), lambda s: s.squeeze(0).squeeze(1)])
def test_a_squeeze_that_could_drop_the_batch_is_refused(squeeze):
    """squeeze() and squeeze(0) keep a traced batch but drop a batch of 1."""
    W, U = _weights()

    def step(h, x):
        s = squeeze(torch.sigmoid((x @ W).sum(-1, keepdim=True)))
        return torch.tanh(h @ U) * s.unsqueeze(-1), h.clone()

    _refused(step, "a squeeze without a dimension, or of the batch's")


def _assert_same_outputs(step, init, xs):
    got, want = rnnfast.scan(step, init, xs), python_loop(step, init, xs)
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, **TIGHT)


def test_a_boolean_y_comes_back_boolean():
    """Spikes, say: the engine's tensors are of the program's dtype, so a loop that would
    give a boolean y_t leaves it to ATen."""
    W, U = _weights()

    def step(h, x):
        h = torch.tanh(x @ W + h @ U)
        return h, (h, h > 0.5)

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    runs = engine_runs()
    _assert_same_outputs(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True))
    assert engine_runs() > runs


def test_a_b_carry_and_b_outputs():
    """A step counter [B] in the carry and a row sum [B] as y_t: [B] tensors where the loop
    gives them."""
    W, U = _weights()

    def step(carry, x):
        h, n = carry
        h = torch.tanh(x @ W + h @ U)
        return (h, n + 1), (h.sum(-1), n)

    init = (torch.randn(B, H, dtype=DT, requires_grad=True), torch.zeros(B, dtype=DT))
    _assert_same_outputs(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True))


@pytest.mark.parametrize("kw", [{}, {"reverse": True}, {"lengths": [5, 2, 4]}], ids=str)
def test_b_carries_inputs_and_outputs_run_on_the_engine(kw):
    """[B] values at the loop's edge, all differentiated: a running [B] sum in the carry that
    feeds the state back, a [T, B] input the loop reads as it is, and [B] outputs. The engine
    holds them as [B, 1], forward and backward; the caller sees the loop's shapes."""
    W, U = _weights()
    v = torch.randn(H, dtype=DT, requires_grad=True)

    def step(carry, inputs):
        h, s = carry
        x, gap = inputs
        h = torch.tanh(x @ W + h @ U + s[:, None] * v) * torch.exp(-gap).unsqueeze(-1)
        s = 0.5 * s + torch.sigmoid(h.sum(-1)) * gap
        return (h, s), (s, h.mean(-1))

    init = (torch.randn(B, H, dtype=DT, requires_grad=True), torch.randn(B, dtype=DT))
    init[1].requires_grad_()
    xs = (torch.randn(T, B, I, dtype=DT, requires_grad=True), torch.rand(T, B, dtype=DT))
    xs[1].requires_grad_()
    if "lengths" in kw:
        kw = {"lengths": torch.tensor(kw["lengths"])}
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, xs, [W, U, v], **kw)
    assert engine_runs() > runs and engine_backward_runs() > backward_runs
    (h, s), (ys, means) = rnnfast.scan(step, init, xs, **kw)
    assert s.shape == (B,) and ys.shape == means.shape == (T, B)
    with torch.no_grad():
        (_, s_no_grad), (ys_no_grad, _) = rnnfast.scan(step, init, xs, **kw)
    torch.testing.assert_close(s_no_grad, s, **TIGHT)
    torch.testing.assert_close(ys_no_grad, ys, **TIGHT)


def test_a_stack_after_the_batch_as_y_runs_after_the_loop():
    """y_t = stack([h, c], -2): [T, B, 2, H] from the output part over all steps' rows, the
    loop on the engine; gradients through both states."""
    W, U = _weights()

    def step(carry, x):
        h, c = carry
        h = torch.tanh(x @ W + h @ U)
        c = 0.5 * c + h
        return (h, c), torch.stack([h, c], dim=-2)

    init = (torch.randn(B, H, dtype=DT, requires_grad=True), torch.zeros(B, H, dtype=DT))
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True), [W, U])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


def test_a_stack_along_the_batch_is_refused():
    _, U = _weights()

    def step(h, x):
        return torch.tanh(torch.stack([h, x @ U]).sum(0)), h.clone()

    _refused(step, "it stacks along dimension 0", torch.randn(T, B, H, dtype=DT))


@pytest.mark.parametrize("lookup", ["embedding", "index"])
def test_token_embeddings_looked_up_in_the_step(lookup):
    """xs of token ids [T, B], embedded in the step (F.embedding or E[tokens]): looked up for
    all steps at once, the loop on the engine, gradients reaching the table."""
    W, U = _weights()
    E = torch.randn(11, I, dtype=DT, requires_grad=True)

    def step(h, tokens):
        x = F.embedding(tokens, E) if lookup == "embedding" else E[tokens]
        h = torch.tanh(x @ W + h @ U)
        return h, h.clone()

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, torch.randint(0, 11, (T, B)), [W, U, E])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


def test_a_lookup_along_the_batch_is_refused():
    _, U = _weights()

    def step(h, tokens):
        return torch.tanh(h[tokens] @ U), h.clone()

    with pytest.raises(ScanTraceError, match=r"only a weight's rows .*\(E\[tokens\]\)"):
        rnnfast.scan(step, torch.randn(B, H, dtype=DT), torch.randint(0, B, (T, B)))
