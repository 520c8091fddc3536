"""rnnfast.scan's shortcut past its front end (rnnfast/_scan/shortcut.py): after a call of a step's
code has gone the whole way, a like call runs its plan directly; every change that could make a
call differ goes the whole way again (so it retraces, rebinds or raises as there), and every
call gives the Python loop's results."""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rnnfast  # noqa: E402
from rnnfast._scan import api, cache, trace_count  # noqa: E402

DT = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)
G_TENSOR = torch.randn(4, dtype=DT)


@pytest.fixture
def whole_way(monkeypatch):
    """Counts the calls that go through the front end (argument checks, capture, cache), from
    an empty cache."""
    cache.clear_cache()
    calls = []
    checks = api.check_inputs

    def counting(*args):
        calls.append(1)
        return checks(*args)

    monkeypatch.setattr(api, "check_inputs", counting)
    return calls


def srn(W, U, scale=1.0, extra=None):
    """A step made anew for each call, as inside a module's forward."""

    def step(h, x):
        h = torch.tanh(x @ W + h @ U) * scale
        if extra is not None:
            h = h + extra[0]
        return h, h

    return step


def loop(step, init, xs):
    carry, ys = init, []
    for t in range(xs.shape[0]):
        carry, y = step(carry, xs[t])
        ys.append(y)
    return carry, torch.stack(ys)


def check(step, init, xs):
    got = rnnfast.scan(step, init, xs)
    want = loop(step, init, xs)
    for g, w in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(g, w, **(TIGHT if w.dtype == DT else {}))


def weights(requires_grad=False):
    return (
        torch.randn(3, 4, dtype=DT, requires_grad=requires_grad),
        torch.randn(4, 4, dtype=DT, requires_grad=requires_grad),
    )


def test_a_like_call_takes_the_shortcut_with_its_own_tensors(whole_way):
    """New tensors behind the closure, a new batch and length: the plan runs on them."""
    W, U = weights()
    check(srn(W, U), torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT))
    assert len(whole_way) == 1
    traces = trace_count()
    for B, T in [(2, 5), (7, 3), (1, 1)]:
        W, U = weights()
        check(srn(W, U), torch.randn(B, 4, dtype=DT), torch.randn(T, B, 3, dtype=DT))
    assert len(whole_way) == 1 and trace_count() == traces


def test_gradients_reach_the_new_tensors_through_the_shortcut(whole_way):
    W, U = weights(requires_grad=True)
    h0 = torch.randn(2, 4, dtype=DT, requires_grad=True)
    x = torch.randn(5, 2, 3, dtype=DT, requires_grad=True)
    rnnfast.scan(srn(W, U), h0, x)
    W2, U2 = weights(requires_grad=True)
    got = torch.autograd.grad(rnnfast.scan(srn(W2, U2), h0, x)[1].sum(), (W2, U2, h0, x))
    want = torch.autograd.grad(loop(srn(W2, U2), h0, x)[1].sum(), (W2, U2, h0, x))
    assert len(whole_way) == 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TIGHT)


@pytest.mark.parametrize(
    "change, retraces",
    [
        ("a closure scalar", True),
        ("a closure scalar's type", False),  # the cache takes 1 and 1.0 as the same key
        ("a closure tensor's requires_grad", True),
        ("a closure tensor's dtype", True),
        ("a closure tensor's size", True),
        ("a closure value's kind", True),
        ("init's structure", True),
        ("init's trailing size", True),
        ("lengths", False),
        ("dim", False),
        ("reverse", False),
    ],
)
def test_a_call_that_differs_goes_the_whole_way(whole_way, change, retraces):
    W, U = weights()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    check(srn(W, U), h0, x)
    traces = trace_count()
    step, init, xs = srn(W, U), h0, x
    if change == "a closure scalar":
        step = srn(W, U, scale=0.5)
    elif change == "a closure scalar's type":
        step = srn(W, U, scale=1)
    elif change == "a closure tensor's requires_grad":
        step = srn(W.detach().requires_grad_(), U)
    elif change == "a closure tensor's dtype":
        step, init, xs = srn(W.float(), U.float()), h0.float(), x.float()
    elif change == "a closure tensor's size":
        step, xs = srn(torch.randn(6, 4, dtype=DT), U), torch.randn(5, 2, 6, dtype=DT)
    elif change == "a closure value's kind":
        step = srn(W, U, extra=[torch.zeros(4, dtype=DT)])
    elif change == "init's structure":

        def tupled(state, x):
            h = srn(W, U)(state[0], x)[0]
            return (h,), h

        step, init = tupled, (h0,)
    elif change == "init's trailing size":
        step = srn(torch.randn(3, 5, dtype=DT), torch.randn(5, 5, dtype=DT))
        init = torch.randn(2, 5, dtype=DT)
    if change == "lengths":
        lengths = torch.tensor([5, 2])
        got = rnnfast.scan(step, init, xs, lengths=lengths)
        want_h = torch.stack(
            [
                loop(step, init[b : b + 1], xs[: int(n), b : b + 1])[0][0]
                for b, n in enumerate(lengths)
            ]
        )
        torch.testing.assert_close(got[0], want_h, **TIGHT)
    elif change == "dim":
        got = rnnfast.scan(step, init, xs.transpose(0, 1), dim=1)
        torch.testing.assert_close(got[1].transpose(0, 1), loop(step, init, xs)[1], **TIGHT)
    elif change == "reverse":  # the shortcut takes reverse: it runs the same plan backwards
        got = rnnfast.scan(step, init, xs, reverse=True)
        torch.testing.assert_close(got[0], loop(step, init, xs.flip(0))[0], **TIGHT)
        assert len(whole_way) == 1
        return
    else:
        check(step, init, xs)
    assert len(whole_way) == 2
    assert trace_count() == traces + retraces


def test_mistakes_still_raise_after_a_call_that_took_the_whole_way():
    W, U = weights()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    rnnfast.scan(srn(W, U), h0, x)
    with pytest.raises(RuntimeError, match="batch of xs first"):
        rnnfast.scan(srn(W, U), torch.randn(3, 4, dtype=DT), x)
    with pytest.raises(RuntimeError, match="same number of steps"):
        rnnfast.scan(lambda h, xs: srn(W, U)(h, xs[0]), h0, (x, x[:4]))
    with pytest.raises(RuntimeError, match="non-empty dimension"):
        rnnfast.scan(srn(W, U), h0, x[:0])
    with pytest.raises(ValueError, match="fallback"):
        rnnfast.scan(srn(W, U), h0, x, fallback="eager")
    with pytest.raises(RuntimeError, match="reverse must be a bool"):
        rnnfast.scan(srn(W, U), h0, x, reverse=1)


def test_a_global_tensor_is_read_anew_on_every_call(whole_way):
    """The trace lifts a global tensor: a new one behind the name takes the shortcut with it;
    one of another size goes the whole way and traces again."""
    global G_TENSOR
    W, U = weights()

    def step(h, x):
        h = torch.tanh(x @ W + h @ U + G_TENSOR)
        return h, h

    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    saved = G_TENSOR
    try:
        check(step, h0, x)
        G_TENSOR = torch.randn(4, dtype=DT)
        check(step, h0, x)
        assert len(whole_way) == 1
        traces = trace_count()
        G_TENSOR = torch.randn(1, dtype=DT)
        check(step, h0, x)
        assert len(whole_way) == 2 and trace_count() == traces + 1
    finally:
        G_TENSOR = saved


G_W, G_U = torch.randn(3, 4, dtype=DT), torch.randn(4, 4, dtype=DT)


def _g_bias(v):
    return v + G_TENSOR


def _g_cell(h, x):
    """A helper of the module reading its tensors, as notebooks write a cell: the step calls
    it by its global name, and it calls another."""
    return torch.tanh(_g_bias(x @ G_W + h @ G_U))


def _g_step(h, x):
    h = _g_cell(h, x)
    return h, h


def test_a_helper_reading_global_tensors_has_them_lifted(whole_way):
    """The tensors a helper of the step's module reads by global name (and a helper of that
    helper) are lifted as the step's own globals are: gradients reach them, a new tensor behind
    a name is read without tracing again (through the shortcut), and a helper redefined traces
    again."""
    global G_W, G_U, G_TENSOR, _g_bias
    saved = G_W, G_U, G_TENSOR, _g_bias
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    try:
        check(_g_step, h0, x)
        traces = trace_count()
        G_U, G_TENSOR = torch.randn(4, 4, dtype=DT), torch.randn(4, dtype=DT)
        check(_g_step, h0, x)
        assert len(whole_way) == 1 and trace_count() == traces

        def _g_bias(v):  # noqa: F811 (redefined on purpose)
            return v - G_TENSOR

        check(_g_step, h0, x)
        assert len(whole_way) == 2 and trace_count() == traces + 1

        G_W, G_U, G_TENSOR = (t.detach().requires_grad_() for t in (G_W, G_U, G_TENSOR))
        wrt = [G_W, G_U, G_TENSOR]
        got, want = rnnfast.scan(_g_step, h0, x), loop(_g_step, h0, x)
        for g, w in zip(
            torch.autograd.grad(got[1].sum(), wrt), torch.autograd.grad(want[1].sum(), wrt)
        ):
            torch.testing.assert_close(g, w, **TIGHT)
    finally:
        G_W, G_U, G_TENSOR, _g_bias = saved


def test_clear_cache_drops_the_shortcuts(whole_way):
    W, U = weights()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    rnnfast.scan(srn(W, U), h0, x)
    cache.clear_cache()
    traces = trace_count()
    check(srn(W, U), h0, x)
    assert len(whole_way) == 2 and trace_count() == traces + 1


def test_course_cells_take_the_shortcut(whole_way):
    """d2l's GRU (a list of parameters in the closure) and the numpy-style LSTM (an int and a
    tuple carry), each called again with new parameters."""
    from rnnfast.bench import scan_steps

    I, H, B, T = 3, 4, 2, 5
    for _ in range(3):
        params = [torch.randn(*s, dtype=DT) for s in [(I, H), (H, H), (H,)] * 3]
        check(
            scan_steps.d2l_gru_step(params),
            torch.randn(B, H, dtype=DT),
            torch.randn(T, B, I, dtype=DT),
        )
        W, b = torch.randn(H + I, 4 * H, dtype=DT), torch.randn(4 * H, dtype=DT)
        state = (torch.randn(B, H, dtype=DT), torch.randn(B, H, dtype=DT))
        check(scan_steps.numpy_lstm_step(W, b, H), state, torch.randn(T, B, I, dtype=DT))
    assert len(whole_way) == 2


def test_a_function_in_the_closure_is_held_by_identity(whole_way):
    """An activation passed into the step: the same one takes the shortcut, another one goes
    the whole way and traces again."""
    W, U = weights()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)

    def cell(act):
        def step(h, x):
            h = act(x @ W + h @ U)
            return h, h

        return step

    check(cell(torch.tanh), h0, x)
    check(cell(torch.tanh), h0, x)
    assert len(whole_way) == 1
    traces = trace_count()
    check(cell(torch.sigmoid), h0, x)
    assert len(whole_way) == 2 and trace_count() == traces + 1


def test_steps_of_one_code_with_different_shapes_each_keep_a_shortcut(whole_way):
    """The layers of a stack made by one step factory, called in turn: each shape's calls take
    their own shortcut."""
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    layers = [weights(), (torch.randn(4, 4, dtype=DT), torch.randn(4, 4, dtype=DT))]
    for _ in range(3):
        inputs = x
        for W, U in layers:
            step = srn(W, U)
            check(step, h0, inputs)
            inputs = rnnfast.scan(step, h0, inputs)[1]
    assert len(whole_way) == 2


class Tied(torch.nn.Module):
    """A module step with a scalar attribute, a tensor attribute and a submodule, whose two
    parameter names may share one tensor."""

    def __init__(self, I=3, H=4):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(I, H, dtype=DT))
        self.U = torch.nn.Parameter(torch.randn(H, H, dtype=DT))
        self.alpha = 1.0
        self.shift = torch.zeros(H, dtype=DT)
        self.inner = torch.nn.Module()
        self.inner.U = self.U  # tied to self.U

    def step(self, h, x):
        h = torch.tanh(x @ self.W + h @ self.inner.U * self.alpha + self.shift)
        return h, h


def module_loop(m, init, xs):
    return loop(m.step, init, xs)


def test_a_module_step_takes_the_shortcut_and_rebinds_new_parameters(whole_way):
    import scan_cells

    m = scan_cells.ModuleCell(3, 4, DT)
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    check(m.step, h0, x)
    check(m.step, h0, x)
    m.U = torch.nn.Parameter(torch.randn(4, 4, dtype=DT))  # an optimizer's new tensor
    m.out.weight = torch.nn.Parameter(torch.randn(2, 4, dtype=DT))
    check(m.step, h0, x)
    other = scan_cells.ModuleCell(3, 4, DT)  # another instance, the same layout
    check(other.step, h0, x)
    assert len(whole_way) == 1
    got = torch.autograd.grad(rnnfast.scan(m.step, h0, x)[1].sum(), list(m.parameters()))
    want = torch.autograd.grad(loop(m.step, h0, x)[1].sum(), list(m.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TIGHT)
    assert len(whole_way) == 1


@pytest.mark.parametrize(
    "change, retraces",
    [
        ("eval()", True),
        ("a scalar attribute", True),
        ("a new tensor attribute", True),
        ("a tensor attribute's size", True),
        ("a submodule's layout", True),
        ("untied parameters", True),
        ("a parameter set to None", False),  # not a tensor the step reads: same key
    ],
)
def test_a_module_step_whose_tree_changed_goes_the_whole_way(whole_way, change, retraces):
    m = Tied()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    check(m.step, h0, x)
    check(m.step, h0, x)
    assert len(whole_way) == 1
    traces = trace_count()
    if change == "eval()":
        m.eval()
    elif change == "a scalar attribute":
        m.alpha = 0.5
    elif change == "a new tensor attribute":
        m.unused = torch.ones(1, dtype=DT)
    elif change == "a tensor attribute's size":
        m.shift = torch.zeros(1, dtype=DT)
    elif change == "a submodule's layout":
        m.inner.V = torch.nn.Parameter(torch.zeros(1, dtype=DT))
    elif change == "untied parameters":
        m.inner.U = torch.nn.Parameter(m.U.detach().clone())
    elif change == "a parameter set to None":
        m.inner.register_parameter("V", None)
    check(m.step, h0, x)
    assert len(whole_way) == 2
    assert trace_count() == traces + retraces
    check(m.step, h0, x)  # and the new layout takes its own shortcut
    assert len(whole_way) == 2


class Shared(torch.nn.Module):
    """A submodule reached by two names, as named_modules visits it: once."""

    def __init__(self, H=4):
        super().__init__()
        self.a = torch.nn.Linear(H, H, dtype=DT)
        self.b = self.a
        self.W = torch.nn.Parameter(torch.randn(3, H, dtype=DT))

    def step(self, h, x):
        h = torch.tanh(x @ self.W + self.a(h) + self.b(h))
        return h, h


def test_a_module_with_a_shared_submodule_takes_the_shortcut_until_unshared(whole_way):
    m = Shared()
    h0, x = torch.randn(2, 4, dtype=DT), torch.randn(5, 2, 3, dtype=DT)
    check(m.step, h0, x)
    m.a.weight = torch.nn.Parameter(torch.randn(4, 4, dtype=DT))  # seen through both names
    check(m.step, h0, x)
    assert len(whole_way) == 1
    traces = trace_count()
    m.b = torch.nn.Linear(4, 4, dtype=DT)
    check(m.step, h0, x)
    assert len(whole_way) == 2 and trace_count() == traces + 1
