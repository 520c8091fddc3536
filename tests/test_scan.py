"""rnnfast.scan against the plain Python loop (float64: outputs, final carry and the gradients
of xs, init and every closed-over parameter), on course-notes cells and cells from the
literature (tests/scan_cells.py); its cache, reverse and lengths, bad input, fallback, dim,
no_grad and low precision."""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import hoisted_split, split_mode  # noqa: E402, F401

import rnnfast  # noqa: E402
from rnnfast._scan import CarryMismatchError, ScanTraceError, trace, trace_count  # noqa: E402

import scan_cells  # noqa: E402

DT = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-10)


def python_loop(step, init, xs, lengths=None, reverse=False):
    """The eager loop, masking rows past their length (reverse: steps L-1 .. 0)."""
    x_leaves, x_spec = pytree.tree_flatten(xs)
    T = x_leaves[0].shape[0]
    carry, ys = init, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        nxt, y = step(carry, pytree.tree_unflatten([x[t] for x in x_leaves], x_spec))
        if lengths is not None:
            keep = lengths > t
            nxt = pytree.tree_map(
                lambda n, c: torch.where(keep.view(-1, *[1] * (n.dim() - 1)), n, c), nxt, carry
            )
            y = pytree.tree_map(
                lambda v: None if v is None else v * keep.view(-1, *[1] * (v.dim() - 1)), y
            )
        carry, ys[t] = nxt, y
    leaves = [pytree.tree_leaves(y) for y in ys]
    _, y_spec = pytree.tree_flatten(ys[0])
    stacked = [
        None if leaves[0][k] is None else torch.stack([lv[k] for lv in leaves])
        for k in range(len(leaves[0]))
    ]
    return carry, pytree.tree_unflatten(stacked, y_spec)


def outputs_and_grads(result, wrt, seed=0):
    """The outputs' leaves and the gradients of a random linear functional of them."""
    outs = [o for o in pytree.tree_leaves(result) if isinstance(o, torch.Tensor)]
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum() for o in outs
    )
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return outs, grads


def sample(make, seed, I=None, H=None):
    gen = torch.Generator().manual_seed(seed)
    size = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
    I, H = I or size(1, 6), H or size(2, 6)
    B, T = size(1, 4), size(1, 6)
    torch.manual_seed(seed)
    step, init, xs, params = make(I, H, DT)
    return step, init(B), xs(T, B), params, B, T


def assert_matches_loop(step, init, xs, params, **kw):
    """scan's outputs and gradients against the loop's, on the step's first call (whose
    backward lowers the vjp, in Python) and on the next (the C++ autograd node's)."""
    wrt = [t for t in pytree.tree_leaves((init, xs)) if t.requires_grad] + list(params)
    want = python_loop(step, init, xs, kw.get("lengths"), kw.get("reverse", False))
    w_outs, w_grads = outputs_and_grads(want, wrt)
    for _ in range(2):
        got = rnnfast.scan(step, init, xs, **kw)
        assert pytree.tree_structure(got) == pytree.tree_structure(want)
        g_outs, g_grads = outputs_and_grads(got, wrt)
        for a, b in zip(g_outs, w_outs):
            torch.testing.assert_close(a, b, **TIGHT)
        for a, b in zip(g_grads, w_grads):
            if b is None:
                assert a is None or not a.abs().any()
            else:
                torch.testing.assert_close(a, b, **TIGHT)


CELLS = scan_cells.COURSE + scan_cells.LITERATURE + scan_cells.TORCH_NN + scan_cells.RNNFAST_CELLS


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.usefixtures("split_mode")
def test_matches_python_loop(make, seed):
    step, init, xs, params, _, _ = sample(make, seed)
    assert_matches_loop(step, init, xs, params)


@pytest.mark.parametrize(
    "make",
    [
        scan_cells.make_d2l_gru,
        scan_cells.make_peephole_lstm,
        scan_cells.make_slstm,
        scan_cells.make_numpy_lstm,
        scan_cells.make_indrnn,
    ],
    ids=lambda m: m.__name__[5:],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.usefixtures("split_mode")
def test_lengths_and_reverse(make, reverse):
    step, init, xs, params, B, T = sample(make, 3)
    lengths = torch.randint(0, T + 1, (B,))
    lengths[0] = T
    assert_matches_loop(step, init, xs, params, lengths=lengths, reverse=reverse)


@pytest.mark.usefixtures("hoisted_split")
def test_split_hoists_input_products_and_defers_the_output_layer():
    step, init, xs, params, _, _ = sample(scan_cells.make_d2l_gru, 0)
    rnnfast.scan(step, init, xs)
    plan = _last_plan()
    loop_products = [n for n in plan.split.loop_nodes if "mm" in n.op]
    assert len([n for n in plan.split.hoisted_nodes if "mm" in n.op]) == 3  # X @ W_x*
    assert len(loop_products) == 3  # H @ W_hz, H @ W_hr, (R * H) @ W_hh
    assert [n.op for n in plan.split.output_nodes] == ["aten.mm.default", "aten.add.Tensor"]


@pytest.mark.usefixtures("hoisted_split")
def test_concat_product_splits_into_hoisted_and_recurrent_rows():
    step, init, xs, params, _, _ = sample(scan_cells.make_numpy_lstm, 0)
    rnnfast.scan(step, init, xs)
    plan = _last_plan()
    assert any("mm" in n.op for n in plan.split.hoisted_nodes)
    assert not any(n.op == "aten.cat.default" for n in plan.split.loop_nodes)


def test_small_calls_run_the_input_and_output_products_inside_the_loop():
    """Below runner.INLINE_MACS multiply-adds of input and output products per call, one
    recurrence reads x_t and forms y_t itself; above it, the products are hoisted."""
    from rnnfast._scan import runner

    step, init, xs, params = scan_cells.make_d2l_gru(4, 5, DT)
    rnnfast.scan(step, init(2), xs(3, 2))
    plan = _last_plan()
    macs = plan.macs_per_row
    assert macs == 3 * 4 * 5 + 5 * 3  # X @ W_x* and the output layer H @ W_hq
    split, loop = plan.split_for(runner.INLINE_MACS // macs)
    assert split is plan.inline and loop.engine.program is not None
    assert split.loop_seq_in == split.prog.x_in and not split.hoisted_nodes
    assert split.boundary == split.prog.y_out and not split.output_nodes
    assert plan.split_for(runner.INLINE_MACS // macs + 1)[0] is plan.split


def _last_plan():
    from rnnfast._scan import cache

    return next(reversed(cache._entries.values()))


def test_gradcheck():
    torch.manual_seed(0)
    for make in (scan_cells.make_peephole_lstm, scan_cells.make_d2l_gru):
        step, init, xs, params = make(2, 3, DT)
        h0_leaves, h0_spec = pytree.tree_flatten(init(2))
        x = xs(3, 2)

        def f(*inputs):  # params are read from the step's closure, perturbed in place
            h0 = pytree.tree_unflatten(list(inputs[: len(h0_leaves)]), h0_spec)
            return tuple(pytree.tree_leaves(rnnfast.scan(step, h0, x)))

        assert torch.autograd.gradcheck(f, (*h0_leaves, x, *params))


def _srn_in_forward(W, U, scale):
    """A lambda made anew on every call, as inside a module's forward."""

    def forward(h0, x):
        return rnnfast.scan(lambda h, xt: (torch.tanh(xt @ W + h @ U) * scale,) * 2, h0, x)

    return forward


def test_no_retrace_when_batch_steps_or_closure_tensors_change():
    W, U = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)
    _srn_in_forward(W, U, 1.0)(torch.zeros(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT))
    before = trace_count()
    for B, T in [(1, 2), (7, 3), (3, 11)]:
        W2, U2 = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)  # an optimizer step
        h0, x = torch.randn(B, 4, dtype=DT), torch.randn(T, B, 3, dtype=DT)
        hn, ys = _srn_in_forward(W2, U2, 1.0)(h0, x)
        want_hn, want_ys = python_loop(lambda h, xt: (torch.tanh(xt @ W2 + h @ U2),) * 2, h0, x)
        torch.testing.assert_close(hn, want_hn, **TIGHT)  # rebound to the new tensors
        torch.testing.assert_close(ys, want_ys, **TIGHT)
    assert trace_count() == before


@pytest.mark.parametrize("grad", [False, True])
def test_tracing_leaves_the_modules_tensors_in_place(grad):
    """While the step is traced, its module's tensors are swapped for the trace's inputs and
    then put back: the same objects, also where a submodule is reached by two names (swapped
    once) or two modules share a parameter (swapped in both)."""

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4, dtype=DT)
            self.b = self.a
            self.W = torch.nn.Parameter(torch.randn(3, 4, dtype=DT))
            self.inner = torch.nn.Module()
            self.inner.W = self.W
            self.shift = torch.randn(4, dtype=DT)

        def step(self, h, x):
            h = torch.tanh(x @ self.inner.W + self.a(h) + self.b(h) + self.shift)
            return h, h

    m = Cell()
    before = {name: t for name, t in m.named_parameters(remove_duplicate=False)}
    before["shift"] = m.shift
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    with torch.set_grad_enabled(grad):
        got = rnnfast.scan(m.step, h0, x)
    after = {name: t for name, t in m.named_parameters(remove_duplicate=False)}
    after["shift"] = m.shift
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)
    want = python_loop(m.step, h0, x)
    torch.testing.assert_close(got, want, **TIGHT)


def test_module_parameters_replaced_are_rebound():
    m = scan_cells.ModuleCell(3, 4, DT)
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(4, 2, 3, dtype=DT)
    rnnfast.scan(m.step, h0, x)
    before = trace_count()
    with torch.no_grad():
        m.W.add_(1.0)
    m.U = torch.nn.Parameter(torch.randn(4, 4, dtype=DT))
    got = rnnfast.scan(m.step, h0, x)
    torch.testing.assert_close(got, python_loop(m.step, h0, x), **TIGHT)
    assert trace_count() == before


def test_retrace_when_a_tensor_changes_what_the_trace_baked_in():
    """The cache key holds every tensor's dtype, trailing sizes and requires_grad (the lifted
    tensors', init's and xs'): a change to one traces again, once, with the loop's results."""
    m = scan_cells.ModuleCell(3, 4, DT)
    W, U = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)

    def srn(W, U, extra):
        def step(h, xt):
            h = torch.tanh(xt @ W + h @ U + extra[0])
            return h, h

        return step

    def frozen_module():  # a parameter frozen after the module's step was traced
        m.W.requires_grad_(False)
        return m.step, h0, x

    zero = [torch.zeros(4, dtype=DT)]
    variants = [
        lambda: (srn(W, U, zero), h0, x),
        lambda: (srn(W.float(), U.float(), [zero[0].float()]), h0.float(), x.float()),
        lambda: (srn(W.requires_grad_(True), U, zero), h0, x),
        lambda: (srn(W, U, zero), h0.requires_grad_(True), x),
        lambda: (srn(W, U, [torch.zeros(1, dtype=DT)]), h0, x),  # a broadcast bias
        lambda: (srn(torch.randn(5, 4, dtype=DT), U, zero), h0, torch.randn(3, 2, 5, dtype=DT)),
        lambda: (m.step, h0, x),
        frozen_module,
    ]
    for make in variants:
        step, init, xs = make()
        before = trace_count()
        got = rnnfast.scan(step, init, xs)
        assert trace_count() == before + 1
        again = rnnfast.scan(step, init, xs)
        assert trace_count() == before + 1
        want = python_loop(step, init, xs)
        for g, a, w in zip(got, again, want):
            tol = TIGHT if w.dtype == DT else {}
            torch.testing.assert_close(g, w, **tol)
            torch.testing.assert_close(a, w, **tol)
            assert g.requires_grad == w.requires_grad


def test_retrace_when_a_closure_scalar_changes():
    W, U = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    _srn_in_forward(W, U, 1.0)(h0, x)
    before = trace_count()
    hn, _ = _srn_in_forward(W, U, 0.5)(h0, x)
    assert trace_count() == before + 1
    want, _ = python_loop(lambda h, xt: (torch.tanh(xt @ W + h @ U) * 0.5,) * 2, h0, x)
    torch.testing.assert_close(hn, want, **TIGHT)


G_WEIGHT = torch.randn(3, 4, dtype=DT, requires_grad=True)


def test_global_tensor_default_argument_and_partial():
    import functools

    U = torch.randn(4, 4, dtype=DT, requires_grad=True)
    b = torch.randn(4, dtype=DT, requires_grad=True)
    v = torch.randn(4, dtype=DT, requires_grad=True)

    def step(h, x, v, U=U):
        h = torch.tanh(x @ G_WEIGHT + h @ U + b) * v
        return h, h.clone()

    h0 = torch.randn(2, 4, dtype=DT, requires_grad=True)
    x = torch.randn(3, 2, 3, dtype=DT, requires_grad=True)
    fn = functools.partial(step, v=v)
    wrt = [h0, x, G_WEIGHT, U, b, v]
    got = outputs_and_grads(rnnfast.scan(fn, h0, x), wrt)
    want = outputs_and_grads(python_loop(fn, h0, x), wrt)
    for a, b_ in zip(got[0] + list(got[1]), want[0] + list(want[1])):
        torch.testing.assert_close(a, b_, **TIGHT)


def test_global_tensor_and_scalar():
    step, init, xs, params, _, _ = sample(scan_cells.make_hard_sigmoid_cell, 0)
    assert_matches_loop(step, init, xs, params)
    before = trace_count()
    old, scan_cells.ALPHA = scan_cells.ALPHA, 0.3
    try:
        assert_matches_loop(step, init, xs, params)
    finally:
        scan_cells.ALPHA = old
    assert trace_count() == before + 1


@pytest.mark.parametrize("make", [scan_cells.make_d2l_gru, scan_cells.make_numpy_lstm])
def test_dim_1(make):
    step, init, xs, params, _, _ = sample(make, 0)
    xs_bt = xs.transpose(0, 1).detach().requires_grad_()
    got = rnnfast.scan(step, init, xs_bt, dim=1)
    want = python_loop(step, init, xs_bt.transpose(0, 1))
    want = (want[0], pytree.tree_map(lambda y: y.transpose(0, 1), want[1]))
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.usefixtures("split_mode")
def test_outputs_that_are_the_input_or_the_carry():
    """y_t may be x_t itself or the carry before the step, values no node of the step makes."""
    W = (torch.randn(3, 3, dtype=DT) * 0.5).requires_grad_()

    def step(h, x):
        return torch.tanh(x @ W + h), (x, h)

    h0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    xs = torch.randn(4, 2, 3, dtype=DT, requires_grad=True)
    assert_matches_loop(step, h0, xs, [W])


def test_no_grad():
    step, init, xs, params, _, _ = sample(scan_cells.make_slstm, 0)
    with torch.no_grad():
        got = rnnfast.scan(step, init, xs)
        want = python_loop(step, init, xs)
    assert not any(t.requires_grad for t in pytree.tree_leaves(got))
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_close_to_float32(dtype):
    torch.manual_seed(0)
    step32, init, xs, params = scan_cells.make_peephole_lstm(8, 8, torch.float32)
    h0, x = init(4), xs(6, 4)
    want = rnnfast.scan(step32, h0, x)
    with torch.no_grad():
        for p in params:
            p.data = p.data.to(dtype)
    got = rnnfast.scan(step32, pytree.tree_map(lambda t: t.detach().to(dtype), h0), x.to(dtype))
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.detach(), rtol=0.05, atol=0.05)


def test_fallback_loop_warns_and_matches():
    W = torch.randn(3, 4, dtype=DT, requires_grad=True)

    def step(h, x):  # roll along the units: no op of the engine
        h = torch.tanh(x @ W + h.roll(1, -1))
        return h, h.clone()

    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    line = r"aten\.roll.*test_scan\.py" if trace._STACK_TRACES else r"aten\.roll"
    with pytest.raises(ScanTraceError, match=line):
        rnnfast.scan(step, h0, x)
    with pytest.warns(UserWarning, match="Python loop"):
        got = rnnfast.scan(step, h0, x, fallback="loop")
    want = python_loop(step, h0, x)
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, **TIGHT)


def test_bad_input():
    W = torch.randn(3, 4, dtype=DT)
    srn = lambda h, x: (torch.tanh(x @ W + h), h.clone())  # noqa: E731
    h0, x = torch.zeros(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    with pytest.raises(ScanTraceError, match=r"y leaf 0 .*got a tensor of shape \[2, B, 4\]"):
        rnnfast.scan(lambda h, x: (h, torch.stack([h, h])), h0, x)
    with pytest.raises(CarryMismatchError, match="carry leaf 0.*\\[8\\]"):
        rnnfast.scan(lambda h, x: (torch.cat([h, h], -1), h.clone()), h0, x)
    with pytest.raises(CarryMismatchError, match="float32"):
        rnnfast.scan(lambda h, x: (h.float(), h.clone()), h0, x)
    with pytest.raises(CarryMismatchError, match="structure"):
        rnnfast.scan(lambda h, x: ((h, h), h.clone()), h0, x)
    with pytest.raises(RuntimeError, match="same number of steps; leaf 0 has 5, leaf 1 has 6"):
        rnnfast.scan(
            lambda h, x: (h + x[0] @ W, h.clone()), h0, [x, torch.randn(6, 2, 3, dtype=DT)]
        )
    with pytest.raises(RuntimeError, match=r"init leaf 0 .*B=2.*\[3, 4\]"):
        rnnfast.scan(srn, torch.zeros(3, 4, dtype=DT), x)
    with pytest.raises(ScanTraceError, match="could not be traced"):
        rnnfast.scan(lambda h, x: (h + 1 if h.sum() > 0 else h - 1, h.clone()), h0, x)
    with pytest.raises(ScanTraceError, match="pair"):
        rnnfast.scan(lambda h, x: h, h0, x)
    with pytest.raises(RuntimeError, match="combine_fn must be callable"):
        rnnfast.scan(3, h0, x)
    with pytest.raises(RuntimeError, match="non-empty dimension 0"):
        rnnfast.scan(srn, h0, torch.randn(0, 2, 3, dtype=DT))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 5\]"):
        rnnfast.scan(srn, h0, x, lengths=torch.tensor([6, 1]))
    with pytest.raises(ValueError, match="fallback"):
        rnnfast.scan(srn, h0, x, fallback="eager")


def test_product_of_two_states_is_refused_with_its_line():
    W = torch.randn(3, 4, dtype=DT)

    def step(h, x):
        h = torch.tanh(x @ W + h @ h.t() @ h)
        return h, h.clone()

    # make_fx records the user's line from torch 2.6 on; before, the message names the op alone.
    line = "test_scan.py" if trace._STACK_TRACES else r"aten\."
    with pytest.raises(ScanTraceError, match=line):
        rnnfast.scan(step, torch.zeros(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT))


def test_under_torch_compile_is_a_graph_break_with_the_right_result():
    W = torch.randn(3, 4, dtype=DT)

    def model(h0, x):
        hn, ys = rnnfast.scan(lambda h, xt: (torch.tanh(xt @ W + h),) * 2, h0, x)
        return hn * 2

    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(h0, x), model(h0, x), **TIGHT)


def _global_activation(v):
    return torch.tanh(v)


def test_a_global_function_redefined_traces_again():
    """A helper the step calls by its global name, redefined (a notebook cell run again): the
    next call runs the new one (the key holds the function by identity)."""
    global _global_activation
    W, U = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)

    def step(h, x):
        h = _global_activation(x @ W + h @ U)
        return h, h

    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    saved = _global_activation
    try:
        torch.testing.assert_close(rnnfast.scan(step, h0, x), python_loop(step, h0, x), **TIGHT)
        traces = trace_count()

        def _global_activation(v):  # noqa: F811 (redefined on purpose)
            return torch.sigmoid(v)

        got = rnnfast.scan(step, h0, x)
        assert trace_count() == traces + 1
        torch.testing.assert_close(got, python_loop(step, h0, x), **TIGHT)
    finally:
        _global_activation = saved
