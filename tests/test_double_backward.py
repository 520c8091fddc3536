"""Second derivatives: a backward through the gradients of rnnfast's ops and layers.

Where a backward records a graph (``create_graph=True``, as for a gradient penalty), the
gradients are taken through the layer recomputed as ATen ops, so that a second backward
differentiates them again. Checked with gradgradcheck in float64, against the plain-PyTorch
reference (tests/reference.py) and against torch.nn's layers, whose CPU kernels are
differentiable twice.
"""

import pytest
import torch
from torch import nn

import rnnfast

import reference
from conftest import CELLS, assert_close, call, make_case


def leaves_of(case):
    return {n: t.detach().clone().requires_grad_(True) for n, t in case.tensors().items()}


def upstream_for(outs, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]


def penalty_gradients(impl, case, leaves):
    """d/d(leaves) of the squared norm of d<outputs, upstream>/d(leaves): a gradient
    penalty's gradient, which needs every second derivative of the layer."""
    outs = call(impl, case, leaves)
    loss = sum((o * u).sum() for o, u in zip(outs, upstream_for(outs)))
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=True)
    penalty = sum(g.pow(2).sum() for g in grads)
    return dict(zip(names, torch.autograd.grad(penalty, [leaves[n] for n in names])))


VARIANTS = {  # name: make_case kwargs
    "plain": dict(),
    "lengths_reverse": dict(lengths=[3, 0, 2], reverse=True),
    "batch_first_nohx_nobias": dict(batch_first=True, hx=False, bias=False, lengths=[1, 3, 3]),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradgradcheck(F, cell, variant):
    case = make_case(cell, T=3, B=3, I=2, H=3, seed=21, **VARIANTS[variant])
    names = list(case.tensors())

    def fn(*ts):
        return tuple(call(F, case, dict(zip(names, ts))))

    assert torch.autograd.gradgradcheck(fn, list(leaves_of(case).values()))


@pytest.mark.parametrize("P", [1, 2])
@pytest.mark.parametrize("lengths", [None, [2, 3, 0]], ids=["full", "lengths"])
def test_gradgradcheck_lstm_projection(F, P, lengths):
    case = make_case(
        "lstm", T=3, B=3, I=2, H=3, P=P, lengths=lengths, reverse=lengths is not None, seed=22
    )
    names = list(case.tensors())

    def fn(*ts):
        return tuple(call(F, case, dict(zip(names, ts))))

    assert torch.autograd.gradgradcheck(fn, list(leaves_of(case).values()))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradient_penalty_against_reference(F, cell, variant):
    case = make_case(
        cell, T=5, B=3, I=4, H=6, P=3 if cell == "lstm" else None, seed=23, **VARIANTS[variant]
    )
    got = penalty_gradients(F, case, leaves_of(case))
    expected = penalty_gradients(reference, case, leaves_of(case))
    for name in expected:
        assert_close(
            got[name], expected[name], "penalty gradient of " + name, case, rtol=1e-9, atol=1e-10
        )


@pytest.mark.parametrize("cell", CELLS)
def test_differentiable_backward_equal_the_fused_ones(F, cell):
    """The first derivative taken with create_graph=True (through ATen ops) is the one the
    fused backward gives, and records a graph."""
    case = make_case(
        cell, T=4, B=3, I=3, H=5, P=2 if cell == "lstm" else None, lengths=[4, 1, 0], seed=24
    )
    leaves = leaves_of(case)
    names = list(leaves)
    results = []
    for create_graph in (True, False):
        outs = call(F, case, leaves)
        loss = sum((o * u).sum() for o, u in zip(outs, upstream_for(outs)))
        results.append(
            torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=create_graph)
        )
    for name, graphed, fused in zip(names, *results):
        assert graphed.requires_grad, name
        assert_close(graphed, fused, "gradient of " + name, case, rtol=1e-11, atol=1e-12)


def test_differentiable_backward_of_some_arguments_only(F):
    """Only the arguments asked for get gradients, and a second backward reaches the others
    through them."""
    case = make_case("gru", T=4, B=2, I=3, H=4, seed=25)
    leaves = leaves_of(case)
    leaves["input"].requires_grad_(False)
    out, _ = call(F, case, leaves)
    (g_w,) = torch.autograd.grad(out.pow(2).sum(), [leaves["weight_hh"]], create_graph=True)
    second = torch.autograd.grad(g_w.sum(), [leaves["weight_ih"], leaves["h0"]])
    ref = {n: t.detach().clone().requires_grad_(n != "input") for n, t in case.tensors().items()}
    out_r, _ = call(reference, case, ref)
    (g_r,) = torch.autograd.grad(out_r.pow(2).sum(), [ref["weight_hh"]], create_graph=True)
    second_r = torch.autograd.grad(g_r.sum(), [ref["weight_ih"], ref["h0"]])
    for got, expected, name in zip(second, second_r, ["weight_ih", "h0"]):
        assert_close(got, expected, name, case, rtol=1e-9, atol=1e-10)


def test_unused_outputs_need_no_gradient(F):
    """Only h_n feeds the loss: the output sequence and c_n get no upstream gradient."""
    case = make_case("lstm", T=4, B=2, I=3, H=4, seed=26)

    def second_derivative(impl):
        leaves = leaves_of(case)
        _, h_n, _ = call(impl, case, leaves)
        (g,) = torch.autograd.grad(h_n.sum(), [leaves["weight_hh"]], create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), [leaves["input"]])[0]

    assert_close(
        second_derivative(F), second_derivative(reference), "input", case, rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 5e-2), (torch.float16, 1e-2)])
def test_16bit_gradient_penalty(F, dtype, atol):
    """bfloat16 and float16 arguments: the recomputation runs in float32, as the kernels do."""
    case = make_case("lstm", T=4, B=3, I=4, H=5, lengths=[4, 2, 3], seed=27)
    got = penalty_gradients(F, case.to(dtype), leaves_of(case.to(dtype)))
    expected = penalty_gradients(reference, case, leaves_of(case))
    for name in expected:
        assert got[name].dtype == dtype
        assert_close(
            got[name].double(),
            expected[name],
            "penalty gradient of " + name,
            case,
            rtol=0,
            atol=atol,
            scaled=True,
        )


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
        ("GRU", dict(num_layers=2, batch_first=True)),
        ("RNN", dict(nonlinearity="relu", bidirectional=True)),
    ],
)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_layers_against_torch_nn(kind, kwargs, packed):
    """A gradient penalty through whole layers, rnnfast's against torch.nn's."""
    torch.manual_seed(28)
    theirs = getattr(nn, kind)(3, 4, **kwargs).double()
    ours = getattr(rnnfast, kind).from_torch(theirs)
    batch_first = kwargs.get("batch_first", False)
    x = torch.randn(3, 5, 3, dtype=torch.float64)  # B = 3 batch-first, T = 3 otherwise
    lengths = [5, 2, 4] if batch_first else [3, 1, 2, 3, 2]

    def penalty(module):
        inp = x.clone().requires_grad_(True)
        fed = inp
        if packed:
            fed = nn.utils.rnn.pack_padded_sequence(
                inp, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
            )
        out = module(fed)[0]
        if packed:
            out = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first)[0]
        params = list(module.parameters())
        grads = torch.autograd.grad(out.pow(2).sum(), [inp, *params], create_graph=True)
        return torch.autograd.grad(sum(g.pow(2).sum() for g in grads), [inp, *params])

    for got, expected in zip(penalty(ours), penalty(theirs)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn_tanh_residual", "gru_reset_before", "lstm"])
def test_chained_calls_sharing_weights(F, cell):
    """The same weights twice in a chain (the second call starts from the first's final
    state): the gradients taken with create_graph=True and the penalty gradient must count
    each path once, also where a weight reaches the second call through its initial state."""
    case = make_case(cell, T=3, B=2, I=3, H=4, lengths=[3, 2], seed=31)

    def penalty(impl):
        leaves = leaves_of(case)
        first = call(impl, case, leaves)
        state = {"h0": first[1]} | ({"c0": first[2]} if cell == "lstm" else {})
        second = call(impl, case, leaves | state)
        loss = sum((o * u).sum() for o, u in zip(first + second, upstream_for(first + second)))
        names = list(leaves)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=True)
        plain = torch.autograd.grad(loss, [leaves[n] for n in names], retain_graph=True)
        second_order = torch.autograd.grad(
            sum(g.pow(2).sum() for g in grads), [leaves[n] for n in names]
        )
        return dict(zip(names, grads)), dict(zip(names, plain)), dict(zip(names, second_order))

    got, got_plain, got_second = penalty(F)
    expected, _, expected_second = penalty(reference)
    for name in expected:
        assert_close(got[name], expected[name], "gradient of " + name, case, rtol=1e-10, atol=1e-12)
        assert_close(
            got_plain[name],
            expected[name],
            "fused gradient of " + name,
            case,
            rtol=1e-10,
            atol=1e-12,
        )
        assert_close(
            got_second[name],
            expected_second[name],
            "penalty gradient of " + name,
            case,
            rtol=1e-9,
            atol=1e-10,
        )


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_third_derivative(F, cell):
    case = make_case(cell, T=3, B=2, I=2, H=3, lengths=[3, 1], reverse=True, seed=32)

    def third(impl):
        leaves = leaves_of(case)
        w = leaves["weight_hh"]
        outs = call(impl, case, leaves)
        loss = sum((o * u).sum() for o, u in zip(outs, upstream_for(outs)))
        (g1,) = torch.autograd.grad(loss, [w], create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), [w], create_graph=True)
        return torch.autograd.grad(g2.sin().sum(), [w, leaves["input"], leaves["h0"]])

    for got, expected, name in zip(third(F), third(reference), ["weight_hh", "input", "h0"]):
        assert_close(got, expected, "third derivative, " + name, case, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_against_torch_nn(kind):
    """A gradient penalty through a few steps of a cell, as in a generation loop."""
    torch.manual_seed(30)
    theirs = getattr(nn, kind)(3, 4).double()
    ours = getattr(rnnfast, kind).from_torch(theirs)
    xs = torch.randn(3, 2, 3, dtype=torch.float64)

    def penalty(cell):
        inp = xs.clone().requires_grad_(True)
        state, total = None, 0
        for x in inp:
            state = cell(x, state)
            total = total + (state[0] if kind == "LSTMCell" else state).pow(2).sum()
        params = list(cell.parameters())
        grads = torch.autograd.grad(total, [inp, *params], create_graph=True)
        return torch.autograd.grad(sum(g.pow(2).sum() for g in grads), [inp, *params])

    for got, expected in zip(penalty(ours), penalty(theirs)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_backward_op_has_no_derivative():
    """The recurrent_backward op itself stays first-order: a graph recorded through a direct
    call of it raises at the second backward instead of giving zero."""
    case = make_case("gru", T=3, B=2, I=2, H=3, seed=29)
    t = leaves_of(case)
    forward = torch.ops.rnnfast.recurrent_forward.default
    backward = torch.ops.rnnfast.recurrent_backward.default
    output, h_n, _, saved = forward(
        t["input"],
        t["weight_ih"],
        t["weight_hh"],
        t["bias_ih"],
        t["bias_hh"],
        t["h0"],
        None,
        None,
        None,
        "gru",
        False,
        False,
    )
    grads = backward(
        torch.ones_like(output),
        None,
        None,
        t["input"],
        t["weight_ih"],
        t["weight_hh"],
        t["h0"],
        None,
        None,
        output,
        saved,
        "gru",
        False,
        False,
        [True, True, True, False, False, True, False, False],
    )
    with pytest.raises(RuntimeError, match="recurrent_backward op has no derivative"):
        grads[0].sum().backward()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_saturated_gates_give_finite_second_derivatives(F, cell):
    """Pre-activations of -1000: exp(1000) overflows, so the recomputation must use a sigmoid
    whose derivative does not divide inf by inf."""
    G = 3 if cell == "gru" else 4
    x = torch.ones(2, 1, 1, dtype=torch.float64)
    w_ih = torch.full((G * 4, 1), -1000.0, dtype=torch.float64, requires_grad=True)
    w_hh = torch.zeros(G * 4, 4, dtype=torch.float64, requires_grad=True)
    out = getattr(F, cell)(x, w_ih, w_hh)[0]
    grads = torch.autograd.grad(out.sum(), [w_ih, w_hh], create_graph=True)
    second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), [w_ih, w_hh])
    for t in grads + second:
        assert torch.isfinite(t).all()
