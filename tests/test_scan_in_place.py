"""rnnfast.scan on steps with ops in place: on a tensor the step made (F.rms_norm adds its
epsilon to a mean so) they run, in the engine as out of place; on the carry, an input or a
view of one the trace would not see the change (the loop would), so they are refused with
the line."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_scan import assert_matches_loop  # noqa: E402

import rnnfast  # noqa: E402
from rnnfast._scan import ScanTraceError, trace  # noqa: E402
from rnnfast._scan.engine import engine_backward_runs, engine_runs  # noqa: E402

DT = torch.float64
# make_fx records the user's line from torch 2.6 on; before, messages name the op alone.
AT_LINE = ".*test_scan_in_place" if trace._STACK_TRACES else ""
B, T, I, H = 3, 4, 5, 6


def _weights():
    torch.manual_seed(0)
    W = (0.5 * torch.randn(I, H, dtype=DT)).requires_grad_()
    U = (0.5 * torch.randn(H, H, dtype=DT)).requires_grad_()
    return W, U


def test_on_tensors_the_step_made():
    W, U = _weights()

    def step(h, x):
        a = x @ W + h @ U
        a.mul_(0.5).add_(0.1)
        h = torch.tanh(F.rms_norm(a, (H,)))
        return h, a

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True), [W, U])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


@pytest.mark.parametrize("target", ["carry", "view of the carry", "input"])
def test_on_the_carry_an_input_or_a_view_is_refused(target):
    W, U = _weights()

    def step(h, x):
        if target == "carry":
            h.mul_(0.5)
        elif target == "view of the carry":
            h[:, :2].mul_(0.5)
        else:
            x.add_(1)
        return torch.tanh(x @ W + h @ U), h.clone()

    with pytest.raises(ScanTraceError, match=r"in place \(aten\.(mul|add)_" + AT_LINE):
        rnnfast.scan(step, torch.randn(B, H, dtype=DT), torch.randn(T, B, I, dtype=DT))


def test_on_pieces_of_a_tensor_the_step_made_as_atens_cells_do():
    """ATen's GRU and LSTM cells split their gates with unsafe_chunk and update the pieces in
    place; a piece of a tensor nothing else reads is updated as a tensor of its own."""
    W, U = _weights()

    def step(h, x):
        z, n = torch.ops.aten.unsafe_chunk(x @ W + h @ U, 2, 1)
        z.sigmoid_()
        n.mul_(z).tanh_()
        return torch.cat([n, z], -1) * h, h.clone()

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    assert_matches_loop(step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True), [W, U])
    assert engine_runs() > runs and engine_backward_runs() > backward_runs


@pytest.mark.parametrize("split", ["chunk", "unsafe_chunk"])
def test_on_a_piece_of_a_tensor_read_again_is_refused(split):
    """Updating a piece in place changes the tensor it was split from, which the step reads
    again: the trace, out of place, would not see it."""
    W, U = _weights()

    def step(h, x):
        g = x @ W + h @ U
        a, _ = torch.chunk(g, 2, 1) if split == "chunk" else torch.ops.aten.unsafe_chunk(g, 2, 1)
        a.mul_(2)
        return torch.tanh(g), h.clone()

    with pytest.raises(ScanTraceError, match=r"in place \(aten\.mul_" + AT_LINE):
        rnnfast.scan(step, torch.randn(B, H, dtype=DT), torch.randn(T, B, I, dtype=DT))
