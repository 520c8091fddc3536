"""The op rnnfast::scan_run, which runs rnnfast.scan's loop part as a registered program:
torch.library.opcheck on the calls that real cells make (the forward, the forward that keeps
its states for the backward, the backward program), its fake kernel under FakeTensorMode and
on the meta device, and its errors."""

import gc
import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import split_mode  # noqa: E402, F401

import rnnfast  # noqa: E402
from rnnfast import _C  # noqa: E402
from rnnfast._scan.engine import engine_backward_runs, engine_runs  # noqa: E402

import scan_cells  # noqa: E402

SCAN_RUN = torch.ops.rnnfast.scan_run.default


class RecordScanRuns(TorchDispatchMode):
    """Keeps the arguments of every scan_run call, detached (the op's own inputs: inside
    rnnfast.scan's autograd.Function they still carry requires_grad)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is SCAN_RUN:
            detached = pytree.tree_map_only(torch.Tensor, lambda t: t.detach().clone(), args)
            self.calls.append(detached)
        return func(*args, **(kwargs or {}))


def scan_loss(step, init, xs, **kw):
    outs = [o for o in pytree.tree_leaves(rnnfast.scan(step, init, xs, **kw)) if o is not None]
    return sum((o * o).sum() for o in outs)


def recorded_calls(make, dtype=torch.float64, T=3, B=2, **kw):
    """The scan_run calls of one forward and backward of a cell (traced and lowered before,
    so that only the calls themselves are recorded)."""
    torch.manual_seed(0)
    step, init, xs, params = make(3, 4, dtype)
    h0, x = init(B), xs(T, B)
    scan_loss(step, h0, x, **kw).backward()  # traces and lowers forward and backward
    with RecordScanRuns() as recorder:
        scan_loss(step, h0, x, **kw).backward()
    return recorder.calls


CELLS = [
    scan_cells.make_nndl_srn,
    scan_cells.make_numpy_lstm,
    scan_cells.make_d2l_gru,
    scan_cells.make_layernorm_lstm,
    scan_cells.make_slstm,
    scan_cells.make_reset_gru,
]


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.usefixtures("split_mode")
def test_opcheck_on_the_calls_of_a_cell(make):
    calls = recorded_calls(make, lengths=torch.tensor([3, 1]))
    gradients = [call for call in calls if call[-1]]
    assert len(calls) == 2 and len(gradients) == 1, "expected a forward and a backward run"
    for args in calls:
        torch.library.opcheck(SCAN_RUN, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_reverse_without_states(dtype):
    torch.manual_seed(1)
    step, init, xs, _ = scan_cells.make_peephole_lstm(3, 5, dtype)
    with torch.no_grad():
        rnnfast.scan(step, init(3), xs(4, 3), reverse=True)
        with RecordScanRuns() as recorder:
            rnnfast.scan(step, init(3), xs(4, 3), reverse=True)
    (args,) = recorder.calls
    assert args[6] and not args[7], "expected a reverse run that keeps no states"
    torch.library.opcheck(SCAN_RUN, args)


def test_op_outputs_match_the_direct_entry():
    """torch.ops.rnnfast.scan_run (boxed) and _C.scan_run (typed) run the same kernel."""
    (args, _) = recorded_calls(scan_cells.make_min_gru)
    via_op = SCAN_RUN(*args)
    direct = _C.scan_run(*args)
    for a, b in zip(pytree.tree_leaves(via_op), pytree.tree_leaves(direct)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    final, _, states, accumulators = via_op
    assert len(final) == len(args[1]) and len(states) == len(args[1]) and not accumulators


def test_the_op_refuses_to_be_differentiated():
    (args, _) = recorded_calls(scan_cells.make_nndl_srn)
    program, carry, *rest = args
    carry = [carry[0].clone().requires_grad_()]
    with pytest.raises(RuntimeError, match="scan_run has no derivative"):
        SCAN_RUN(program, carry, *rest)
    with torch.no_grad():
        final, *_ = SCAN_RUN(program, carry, *rest)
    assert not final[0].requires_grad


def test_unknown_program_and_wrong_inputs_under_the_fake_kernel():
    (args, _) = recorded_calls(scan_cells.make_nndl_srn)
    program, carry, seqs, weights, mask, steps, *flags = args
    with FakeTensorMode() as mode:
        fake = pytree.tree_map_only(torch.Tensor, mode.from_tensor, args)
        with pytest.raises(ValueError, match="is not a registered scan program"):
            SCAN_RUN(10**9, *fake[1:])
        with pytest.raises(ValueError, match=r"sequence 0 must be a cpu torch.float64 tensor"):
            SCAN_RUN(program, fake[1], [fake[2][0][:1]], *fake[3:])
        with pytest.raises(ValueError, match="expected 1 carries"):
            SCAN_RUN(program, [], *fake[2:])
        out = SCAN_RUN(*fake)
    real = SCAN_RUN(*args)
    for f, r in zip(pytree.tree_leaves(out), pytree.tree_leaves(real)):
        assert f.shape == r.shape and f.dtype == r.dtype and f.stride() == r.stride()


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
def test_scan_under_fake_tensors_gives_the_real_shapes(make):
    """Under FakeTensorMode (torch.export's and torch.compile's shape propagation) the loop runs
    as the op's fake kernel, forward and backward, and the shapes are the real ones. (lengths
    are read as values, which fake tensors do not have.)"""
    torch.manual_seed(2)
    step, init, xs, params = make(3, 4, torch.float32)
    h0, x = init(2), xs(5, 2)
    real = rnnfast.scan(step, h0, x, reverse=True)
    wrt = [t for t in pytree.tree_leaves(x) if t.requires_grad] + params
    real_grads = torch.autograd.grad(scan_loss(step, h0, x), wrt, allow_unused=True)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fh0 = pytree.tree_map_only(torch.Tensor, mode.from_tensor, h0)
        fx = pytree.tree_map_only(torch.Tensor, mode.from_tensor, x)
        fake = rnnfast.scan(step, fh0, fx, reverse=True)
        wrt = [t for t in pytree.tree_leaves(fx) if t.requires_grad] + params
        fake_grads = torch.autograd.grad(scan_loss(step, fh0, fx), wrt, allow_unused=True)
    assert (engine_runs(), engine_backward_runs()) == (runs + 2, backward_runs + 1), (
        "the fake loops did not run as the op"
    )
    for f, r in zip(pytree.tree_leaves(fake), pytree.tree_leaves(real)):
        assert (f is None) == (r is None)
        assert f is None or (f.shape == r.shape and f.dtype == r.dtype)
    for f, r in zip(fake_grads, real_grads):
        assert (f is None) == (r is None)
        assert f is None or (f.shape == r.shape and f.dtype == r.dtype)


def test_scan_on_the_meta_device():
    """A model built on the meta device (for its shapes, or before loading its weights): the
    loop runs as the op's fake kernel, forward and backward."""
    make = scan_cells.make_layernorm_lstm
    step, init, xs, params = make(3, 4, torch.float32)
    real = rnnfast.scan(step, init(2), xs(5, 2))
    with torch.device("meta"):
        step, init, xs, params = make(3, 4, torch.float32)
        h0, x = init(2), xs(5, 2)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    meta = rnnfast.scan(step, h0, x)
    grads = torch.autograd.grad(scan_loss(step, h0, x), [x, *params])
    assert (engine_runs(), engine_backward_runs()) == (runs + 2, backward_runs + 1)
    for m, r in zip(pytree.tree_leaves(meta), pytree.tree_leaves(real)):
        assert m.device.type == "meta" and m.shape == r.shape
    assert [g.shape for g in grads] == [x.shape] + [p.shape for p in params]
    assert all(g.device.type == "meta" for g in grads)


def test_programs_are_released_with_their_traced_step():
    """A program lives while its cache entry or an autograd graph of its runs does, then it is
    released: a step retraced on every call (a changing Python scalar) does not pile them up."""
    from rnnfast._scan import cache

    testing = _C._testing
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    W = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    cache.clear_cache()
    gc.collect()
    before = testing.scan_registered_programs()
    for scale in range(1, 6):  # a new trace, and new programs, per call

        def step(h, x_t, scale=float(scale)):
            h = torch.tanh(x_t @ W + scale * h)
            return h, h

        h, _ = rnnfast.scan(step, torch.zeros(2, 3, dtype=torch.float64), x)
        h.sum().backward()
    del h, _  # their graph holds the last step's programs
    assert testing.scan_registered_programs() > before
    program = recorded_calls(scan_cells.make_nndl_srn)[0][0]
    graph, ys = rnnfast.scan(step, torch.zeros(2, 3, dtype=torch.float64), x)
    cache.clear_cache()
    gc.collect()
    assert testing.scan_registered_programs() > before, "a graph's programs went with the cache"
    graph.sum().backward()  # its backward program is lowered and run now
    del graph, ys
    gc.collect()
    assert testing.scan_registered_programs() == before
    with pytest.raises(ValueError, match="released, or never registered"):
        _C.scan_program_signature(program)
