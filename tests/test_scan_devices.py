"""rnnfast.scan on each device against the Python loop on the same device (float64: outputs,
final carry and every gradient), every cell of the suites. On a CUDA GPU the engine's CPU
programs do not run: the step's ops run through ATen, step by step, with the parts over all
steps at once; scripts/gpu-check runs these tests there."""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_scan import CELLS, DT, assert_matches_loop  # noqa: E402

from cuda_helpers import requires_cuda  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def _to(device):
    def move(t):
        moved = t.detach().to(device)
        return moved.requires_grad_() if t.requires_grad else moved

    return move


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_the_loop_on_the_device(make, device):
    torch.manual_seed(0)
    step, init, xs, params = make(3, 5, DT)
    for p in params:  # leaves (a module's parameters among them) moved in place
        p.data = p.data.to(device)
    move = _to(device)
    assert_matches_loop(
        step, pytree.tree_map(move, init(2)), pytree.tree_map(move, xs(4, 2)), params
    )
