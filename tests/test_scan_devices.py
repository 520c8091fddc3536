"""rnnfast.scan on CUDA tensors against the Python loop on the same device (float64: outputs,
final carry and every gradient), every cell of the suites, with lengths and reverse. On a GPU
the engine's CPU programs do not run: the step's ops run through ATen, step by step, with the
parts over all steps at once; scripts/gpu-check runs these tests there. Here that route runs
on CPU tensors with the engine turned off, against the loop, and on meta tensors, where any
tensor scan made on another device than its inputs' raises."""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import engine  # noqa: E402
from test_scan import CELLS, DT, assert_matches_loop, python_loop  # noqa: E402

import rnnfast  # noqa: E402

from cuda_helpers import requires_cuda  # noqa: E402

# the GPU's route: on the host (the CPU with the engine off) and on a GPU; scripts/gpu-check
# leaves the tests on the host (-k "not on_host") to CI
ROUTES = [pytest.param("cpu", id="on_host"), pytest.param("cuda", marks=requires_cuda)]
T, B = 4, 3
# lengths: one row runs every step, one none, one stops midway
RUNS = {
    "plain": {},
    "reverse": dict(reverse=True),
    "lengths": dict(lengths=[T, 0, 2]),
    "lengths-reverse": dict(lengths=[T, 0, 2], reverse=True),
}


def build_on(device, make):
    """The cell made on ``device``: its weights, constants and module buffers (made by factory
    functions, which the device context places), its init and its xs."""
    torch.manual_seed(0)
    with torch.device(device):
        step, init, xs, params = make(3, 5, DT)
        return step, init(B), xs(T, B), params


def scan_kwargs(run, device):
    kw = dict(RUNS[run])
    if "lengths" in kw:
        kw["lengths"] = torch.tensor(kw["lengths"], device=device)
    return kw


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ROUTES)
def test_matches_the_loop_on_the_device(make, run, route):
    step, init, xs, params = build_on(route, make)
    with engine(route != "cpu"):
        assert_matches_loop(step, init, xs, params, **scan_kwargs(run, route))


def _kinds(tensors):
    return [None if t is None else (t.shape, t.dtype, t.device) for t in tensors]


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("run", RUNS)
def test_on_host_every_tensor_stays_on_the_inputs_device(make, run):
    """What runs on a GPU, on meta tensors: outputs and gradients of the device's shapes and
    dtypes, with lengths given on the CPU (as nn.utils.rnn's packing takes them)."""
    step, init, xs, params = build_on("meta", make)
    kw = scan_kwargs(run, "cpu")
    wrt = [t for t in pytree.tree_leaves((init, xs)) if t.requires_grad] + list(params)
    on_meta = kw["lengths"].to("meta") if "lengths" in kw else None
    want = python_loop(step, init, xs, on_meta, kw.get("reverse", False))
    with engine(False):
        got = rnnfast.scan(step, init, xs, **kw)
    assert pytree.tree_structure(got) == pytree.tree_structure(want)
    got_leaves, want_leaves = pytree.tree_leaves(got), pytree.tree_leaves(want)
    assert _kinds(got_leaves) == _kinds(want_leaves)
    assert all(t is None or t.is_meta for t in got_leaves)
    grads = [
        torch.autograd.grad(
            [o.sum() for o in outs if o is not None and o.requires_grad], wrt, allow_unused=True
        )
        for outs in (got_leaves, want_leaves)
    ]
    for g, w in zip(*grads):  # scan may give zeros where the loop's gradient is None
        assert w is None or _kinds([g]) == _kinds([w])
