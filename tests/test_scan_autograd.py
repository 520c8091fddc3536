"""rnnfast.scan under autograd: one C++ call whose autograd node runs the step's backward
program (csrc/scan/differentiable_scan.*), from the first call on (which traces and lowers the
vjp, with the loop's weights from Python; later calls make them as views of the lifted
tensors). First and later calls must agree to the bit, and the node behave as an autograd
node should: saved tensors checked for in-place changes, retain_graph, create_graph refused
on the second differentiation (on the Python runner's path too), its programs kept while its
graph lives."""

import gc
import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import split_mode  # noqa: E402, F401

import rnnfast  # noqa: E402
from rnnfast import _C  # noqa: E402
from rnnfast._scan import cache  # noqa: E402
from rnnfast._scan.engine import set_engine_enabled  # noqa: E402

import scan_cells  # noqa: E402

DT = torch.float64
CELLS = scan_cells.COURSE + scan_cells.LITERATURE + scan_cells.TORCH_NN + scan_cells.RNNFAST_CELLS


def node_backward_runs() -> int:
    return _C._testing.scan_differentiable_backward_runs()


def weighted_loss(result):
    outs = [o for o in pytree.tree_leaves(result) if o is not None]
    gen = torch.Generator().manual_seed(0)
    return sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)


def outputs_and_grads(step, init, xs, wrt, **kw):
    result = rnnfast.scan(step, init, xs, **kw)
    grads = torch.autograd.grad(weighted_loss(result), wrt, allow_unused=True)
    return [o.detach() for o in pytree.tree_leaves(result) if o is not None], grads


def sample(make, B=3, T=5, I=4, H=5):
    torch.manual_seed(0)
    step, init, xs, params = make(I, H, DT)
    h0, x = init(B), xs(T, B)
    wrt = [t for t in pytree.tree_leaves((h0, x)) if t.requires_grad] + list(params)
    return step, h0, x, params, wrt


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("masked", [False, True], ids=["all-steps", "lengths-reverse"])
@pytest.mark.usefixtures("split_mode")
def test_every_call_runs_the_cpp_node_and_first_and_later_agree_to_the_bit(make, masked):
    step, h0, x, params, wrt = sample(make)
    kw = dict(lengths=torch.tensor([5, 2, 0]), reverse=True) if masked else {}
    runs = node_backward_runs()
    first = outputs_and_grads(step, h0, x, wrt, **kw)  # traces and lowers the backward
    later = outputs_and_grads(step, h0, x, wrt, **kw)
    assert node_backward_runs() == runs + 2, "a backward did not run in the C++ node"
    for a, b in zip(later[0] + list(later[1]), first[0] + list(first[1])):
        assert (a is None) == (b is None)
        assert a is None or torch.equal(a, b)


def test_a_forward_alone_prepares_the_backward():
    """Calls under autograd that are never differentiated (an evaluation without no_grad) run
    as the C++ call from the first on, and a later backward finds its program."""
    step, h0, x, params, wrt = sample(scan_cells.make_numpy_lstm)
    runs = node_backward_runs()
    for _ in range(3):
        result = rnnfast.scan(step, h0, x)
    assert all(t.grad_fn is not None for t in pytree.tree_leaves(result))
    assert "ScanFunction" in pytree.tree_leaves(result)[0].grad_fn.name()
    torch.autograd.grad(weighted_loss(result), wrt)
    assert node_backward_runs() == runs + 1


def test_backward_weights_computed_in_python_where_not_transposes():
    """A vjp that reads a value of the weights other than a transpose (here W * W, whose
    gradient needs 2 W) hands the backward its values from Python."""
    torch.manual_seed(1)
    W = torch.randn(3, 3, dtype=DT, requires_grad=True)
    x = torch.randn(4, 2, 3, dtype=DT, requires_grad=True)

    def step(h, x_t):
        h = torch.tanh(x_t + h @ (W * W))
        return h, h

    h0 = torch.zeros(2, 3, dtype=DT)
    runs = node_backward_runs()
    first = outputs_and_grads(step, h0, x, [x, W])
    later = outputs_and_grads(step, h0, x, [x, W])
    assert node_backward_runs() == runs + 2
    for a, b in zip(later[0] + list(later[1]), first[0] + list(first[1])):
        assert torch.equal(a, b)


def test_loop_weights_made_as_views_of_the_lifted_tensors():
    """The loop's weights as the C++ call makes them from the lifted tensors: slices along
    either dimension (overlapping, negative and open bounds), a transpose, and a tensor read
    both whole and sliced; their gradients summed into the lifted tensor's, as the loop's."""
    torch.manual_seed(3)
    H = 3
    W = torch.randn(2 * H, 2 * H, dtype=DT, requires_grad=True)
    V = torch.randn(H, 4, dtype=DT, requires_grad=True)
    u = torch.randn(H, dtype=DT, requires_grad=True)
    x = torch.randn(5, 2, 4, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, H, dtype=DT, requires_grad=True)

    def step(h, x_t):
        a = h @ W[:H, :H] + h @ W[1 : H + 1, -H:] + x_t @ V.t()
        b = torch.sigmoid(h @ W[H:, 2:-1] + u) * u
        h = torch.tanh(a + b)
        return h, h

    from rnnfast._scan import lower

    wrt = [h0, x, W, V, u]
    first = outputs_and_grads(step, h0, x, wrt)
    plan = next(reversed(cache._entries.values()))
    assert plan.split_for(10)[1].engine.lifted_views is not None
    assert lower.loop_weight_views(plan.inline) is not None
    runs = node_backward_runs()
    later = outputs_and_grads(step, h0, x, wrt)
    assert node_backward_runs() == runs + 1
    h, ref = h0, []
    for t in range(x.shape[0]):
        h, y = step(h, x[t])
        ref.append(y)
    want = torch.autograd.grad(weighted_loss((h, torch.stack(ref))), wrt)
    for a, b in zip(later[1], want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for a, b in zip(later[1], first[1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def warmed_srn():
    step, h0, x, params, wrt = sample(scan_cells.make_nndl_srn)
    outputs_and_grads(step, h0, x, wrt)
    return step, h0, x, params, wrt


def test_a_weight_changed_in_place_after_the_forward_is_an_error():
    step, h0, x, params, wrt = warmed_srn()
    h, _ = rnnfast.scan(step, h0, x)
    with torch.no_grad():
        params[0].mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


def test_retain_graph_runs_the_backward_again():
    step, h0, x, params, wrt = warmed_srn()
    runs = node_backward_runs()
    h, ys = rnnfast.scan(step, h0, x)
    once = torch.autograd.grad(weighted_loss((h, ys)), wrt, retain_graph=False)
    loss = weighted_loss(rnnfast.scan(step, h0, x))
    g1 = torch.autograd.grad(loss, wrt, retain_graph=True)
    g2 = torch.autograd.grad(loss, wrt)
    assert node_backward_runs() == runs + 3
    for a, b, c in zip(once, g1, g2):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_gradients_of_some_outputs_and_some_inputs():
    """Only the final carry's gradient comes (the outputs' are materialized as zeros), and
    only the weights' are asked for: against the loop."""
    step, h0, x, params, wrt = warmed_srn()
    got = torch.autograd.grad(rnnfast.scan(step, h0, x)[0].sum(), params)
    h = h0
    for t in range(x.shape[0]):
        h, _ = step(h, x[t])
    want = torch.autograd.grad(h.sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("engine", [True, False], ids=["cpp-node", "python-runner"])
def test_differentiating_the_gradients_again_is_an_error(engine):
    """create_graph=True works for the first differentiation; the gradients it gives are not
    a graph of the loop (the engine's backward is not differentiable), so differentiating them
    raises rather than treating them as constants: in the C++ node and in the Python runner's
    autograd.Function alike."""
    step, h0, x, params, wrt = warmed_srn()
    runs = node_backward_runs()
    old = set_engine_enabled(engine)
    try:
        loss = weighted_loss(rnnfast.scan(step, h0, x))
        grads = torch.autograd.grad(loss, params, create_graph=True)
    finally:
        set_engine_enabled(old)
    assert node_backward_runs() == runs + engine
    assert all(g.requires_grad for g in grads)
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        sum(g.sum() for g in grads).backward()


def test_a_graph_keeps_its_programs_when_the_cache_drops_them():
    step, h0, x, params, wrt = warmed_srn()
    want = outputs_and_grads(step, h0, x, wrt)
    runs = node_backward_runs()
    result = rnnfast.scan(step, h0, x)
    cache.clear_cache()
    gc.collect()
    got = torch.autograd.grad(weighted_loss(result), wrt)
    assert node_backward_runs() == runs + 1
    for a, b in zip(got, want[1]):
        assert torch.equal(a, b)
    del result
    gc.collect()


def test_saved_tensor_hooks_checkpoint_and_anomaly_mode():
    """What autograd offers around a node: saved-tensor hooks see what the node saves,
    non-reentrant checkpointing recomputes it, anomaly mode runs it; the gradients stay."""
    from torch.utils.checkpoint import checkpoint

    step, h0, x, params, wrt = sample(scan_cells.make_numpy_lstm)

    def loss():
        return weighted_loss(rnnfast.scan(step, h0, x))

    want = torch.autograd.grad(loss(), wrt)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(1) or t, lambda t: t):
        result = loss()
    runs = node_backward_runs()
    assert packed, "the node's saved tensors did not go through the hooks"
    got = [torch.autograd.grad(result, wrt)]
    got.append(torch.autograd.grad(checkpoint(loss, use_reentrant=False), wrt))
    with torch.autograd.set_detect_anomaly(True):
        got.append(torch.autograd.grad(loss(), wrt))
    assert node_backward_runs() == runs + 3
    for grads in got:
        for a, b in zip(grads, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def _loop_final(step, init, xs):
    carry = init
    for t in range(xs.shape[0]):
        carry, _ = step(carry, xs[t])
    return carry


@pytest.mark.parametrize("make", [scan_cells.make_nndl_srn, scan_cells.make_peephole_lstm])
def test_functorch_transforms_run_the_step_as_the_loop_does(make):
    """torch.func.grad, jacrev and vmap over rnnfast.scan with parameters that require grad: the
    transforms run the step's own ops (as in the loop), and give the loop's results."""
    step, h0, x, params, _ = sample(make, B=2, T=4, I=3, H=3)

    def first_leaf(carry):
        return carry[0] if isinstance(carry, tuple) else carry

    def loss(scanner, x):
        return first_leaf(scanner(step, h0, x)).pow(2).sum()

    def by_scan(step, init, x):
        return rnnfast.scan(step, init, x)[0]

    got = torch.func.grad(lambda x: loss(by_scan, x))(x)
    want = torch.func.grad(lambda x: loss(_loop_final, x))(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got = torch.func.jacrev(lambda x: first_leaf(by_scan(step, h0, x)))(x)
    want = torch.func.jacrev(lambda x: first_leaf(_loop_final(step, h0, x)))(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    xs = torch.stack([x, 2 * x])
    got = torch.vmap(lambda x: first_leaf(by_scan(step, h0, x)))(xs)
    want = torch.stack([first_leaf(_loop_final(step, h0, x)) for x in xs])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got.requires_grad  # the parameters' graph kept
