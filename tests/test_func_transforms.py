"""torch.func's transforms (grad, vmap, jacrev, jvp) and forward-mode AD over rnnfast.

They cannot run the fused op's C++ autograd Function, and vmap would loop over the mapped
dimension; there the layer runs as ATen ops (the same cells.h math). Checked in float64 against
ordinary autograd through the fused op and against the plain-PyTorch reference.
"""

import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacrev, jvp, vmap

import rnnfast

import reference
from conftest import CELLS, assert_close, call, make_case

VARIANTS = {
    "plain": dict(),
    "lengths_reverse": dict(lengths=[3, 0, 4], reverse=True),
    "batch_first_nobias": dict(batch_first=True, bias=False, hx=False, lengths=[2, 4, 1]),
}


def case_for(cell, variant, **kw):
    return make_case(
        cell,
        T=4,
        B=3,
        I=3,
        H=5,
        P=2 if cell == "lstm" else None,
        seed=41,
        **{**VARIANTS[variant], **kw},
    )


def weighted_sum(outs, seed=3):
    g = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_grad_equals_autograd(F, cell, variant):
    case = case_for(cell, variant)
    names = list(case.tensors())

    def loss(tensors):
        return weighted_sum(call(F, case, tensors))

    got = grad(loss)(case.tensors())
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in case.tensors().items()}
    expected = torch.autograd.grad(loss(leaves), [leaves[n] for n in names])
    for name, e in zip(names, expected):
        assert_close(got[name], e, "grad of " + name, case, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vmap_matches_a_loop_without_fallback(F, cell, variant):
    """vmap over a leading dimension of the input (and of lengths): the same as a loop over
    it, without vmap's per-element fallback (which warns)."""
    case = case_for(cell, variant)
    n = 3
    stacked_input = torch.stack([case.input + k for k in range(n)])
    lengths = (
        None
        if case.lengths is None
        else torch.tensor([[min(L + k, 4) for L in case.lengths] for k in range(n)])
    )

    def run(x, lens):
        return tuple(call(F, case.replace(input=x, lengths=lens), case.tensors() | {"input": x}))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = vmap(run, in_dims=(0, None if lengths is None else 0))(stacked_input, lengths)
    for k in range(n):
        expected = run(stacked_input[k], None if lengths is None else lengths[k])
        for g, e, name in zip(got, expected, ["output", "h_n", "c_n"]):
            assert_close(g[k], e, f"{name} of element {k}", case, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_relu_residual"])
def test_per_sample_gradients(F, cell):
    """vmap(grad(...)): per-sequence gradients of the weights, as in differential privacy."""
    case = case_for(cell, "lengths_reverse", hx=False)
    params = {n: t for n, t in case.tensors().items() if n != "input"}

    def loss(p, x, length):
        one = case.replace(input=x.unsqueeze(1), lengths=length.unsqueeze(0))
        # no random weights: vmap forbids random ops inside
        return sum((o.pow(2) + o).sum() for o in call(F, one, p | {"input": x.unsqueeze(1)}))

    lengths = torch.as_tensor(case.lengths)
    got = vmap(grad(loss), in_dims=(None, 1, 0))(params, case.input, lengths)
    for b in range(case.input.shape[1]):
        leaves = {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}
        expected = torch.autograd.grad(
            loss(leaves, case.input[:, b], lengths[b]), list(leaves.values())
        )
        for name, e in zip(leaves, expected):
            assert_close(
                got[name][b], e, f"grad of {name} for sequence {b}", case, rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("cell", CELLS)
def test_jvp_and_forward_ad_against_reference(F, cell):
    case = case_for(cell, "lengths_reverse")
    names = list(case.tensors())
    g = torch.Generator().manual_seed(5)
    tangents = tuple(
        torch.randn(t.shape, generator=g, dtype=t.dtype) for t in case.tensors().values()
    )

    def fn(impl):
        return lambda *ts: tuple(call(impl, case, dict(zip(names, ts))))

    primals = tuple(case.tensors().values())
    out, tangent_out = jvp(fn(F), primals, tangents)
    out_r, tangent_r = jvp(fn(reference), primals, tangents)
    for got, expected, name in zip(tangent_out, tangent_r, ["output", "h_n", "c_n"]):
        assert_close(got, expected, "tangent of " + name, case, rtol=1e-10, atol=1e-12)

    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
        dual_out = fn(F)(*duals)
        for got, expected, name in zip(dual_out, tangent_r, ["output", "h_n", "c_n"]):
            assert_close(
                fwAD.unpack_dual(got).tangent,
                expected,
                "dual tangent of " + name,
                case,
                rtol=1e-10,
                atol=1e-12,
            )


@pytest.mark.parametrize("cell", ["rnn_relu_residual", "gru_reset_before", "lstm"])
def test_hessian_against_reference(F, cell):
    """torch.func.hessian (jacfwd over jacrev): forward-mode over reverse-mode AD."""
    case = case_for(cell, "lengths_reverse")
    t = case.tensors()

    def loss(impl):
        # no random weights: hessian vmaps, which forbids random ops inside
        return lambda w: sum((o.pow(2) + o).sum() for o in call(impl, case, t | {"weight_hh": w}))

    got = torch.func.hessian(loss(F))(t["weight_hh"])
    expected = torch.func.hessian(loss(reference))(t["weight_hh"])
    assert_close(got, expected, "hessian", case, rtol=1e-9, atol=1e-10)


def layer_twins(kind, seed):
    """An rnnfast layer (2 layers, bidirectional, float64) and torch.nn's with its weights."""
    torch.manual_seed(seed)
    ours = getattr(rnnfast, kind)(3, 4, num_layers=2, bidirectional=True).double()
    theirs = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True).double()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_jacrev_of_a_layer():
    layer, theirs = layer_twins("LSTM", 42)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    got = jacrev(lambda inp: layer(inp)[0])(x)
    expected = jacrev(lambda inp: theirs(inp)[0])(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_jvp_and_hessian_of_a_layer():
    layer, theirs = layer_twins("GRU", 45)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    v = torch.randn_like(x)
    got = jvp(lambda inp: layer(inp)[0], (x,), (v,))
    expected = jvp(lambda inp: theirs(inp)[0], (x,), (v,))
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    small = x[:3, :1]
    torch.testing.assert_close(
        torch.func.hessian(lambda inp: layer(inp)[0].pow(2).sum())(small),
        torch.func.hessian(lambda inp: theirs(inp)[0].pow(2).sum())(small),
        rtol=1e-9,
        atol=1e-11,
    )


def test_functional_call_grad_of_a_module():
    torch.manual_seed(43)
    model = rnnfast.GRU(3, 4, batch_first=True, num_layers=2).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(2, 6, 3, dtype=torch.float64)

    def loss(p):
        return functional_call(model, p, (x,))[0].pow(2).sum()

    got = grad(loss)(params)
    expected = torch.autograd.grad(loss(dict(model.named_parameters())), list(model.parameters()))
    for (name, g), e in zip(got.items(), expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)


LAYER_MODULES = {
    "rnn": lambda: rnnfast.RNN(3, 4, num_layers=2, bidirectional=True, residual=True),
    "gru": lambda: rnnfast.GRU(3, 4, num_layers=3, reset_after=False),
    "lstm": lambda: rnnfast.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2),
}


@pytest.mark.parametrize("kind", list(LAYER_MODULES))
def test_vmap_of_layer_modules_and_per_sample_gradients(kind):
    """vmap over layer modules (their one recurrent_layers call runs on the batched tensors),
    with an initial state mapped too, equals a loop and warns nothing; per-sample parameter
    gradients through vmap(grad(functional_call)) equal a loop of autograd."""
    torch.manual_seed(44)
    model = LAYER_MODULES[kind]().double()
    D = 2 if model.bidirectional else 1
    P = model.proj_size or model.hidden_size
    x = torch.randn(4, 5, 2, 3, dtype=torch.float64)  # 4 samples of [T=5, B=2, I=3]
    h0 = torch.randn(4, model.num_layers * D, 2, P, dtype=torch.float64)
    state = lambda h: (
        (h, torch.zeros(model.num_layers * D, 2, 4, dtype=torch.float64)) if kind == "lstm" else h
    )

    def run(xi, hi):
        return model(xi, state(hi))[0]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = vmap(run)(x, h0)
    torch.testing.assert_close(
        got, torch.stack([run(xi, hi) for xi, hi in zip(x, h0)]), rtol=1e-10, atol=1e-12
    )

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi):
        return functional_call(model, p, (xi,))[0].pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i, xi in enumerate(x):
        expected = torch.autograd.grad(
            loss(dict(model.named_parameters()), xi), list(model.parameters())
        )
        for (name, g), e in zip(per_sample.items(), expected):
            torch.testing.assert_close(g[i], e, rtol=1e-9, atol=1e-11, msg=name)


def test_bad_input_under_transforms_names_the_argument(F):
    case = make_case("gru", T=4, B=3, I=3, H=5, seed=44)
    t = case.tensors()
    with pytest.raises(ValueError, match="hx must have shape"):
        grad(lambda w: F.gru(t["input"], w, t["weight_hh"], hx=t["h0"][:2])[0].sum())(
            t["weight_ih"]
        )
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        vmap(lambda lens: F.gru(t["input"], t["weight_ih"], t["weight_hh"], lengths=lens)[0])(
            torch.tensor([[1, 2, 3], [1, 9, 2]])
        )
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 4\]"):
        vmap(
            grad(lambda w, lens: F.gru(t["input"], w, t["weight_hh"], lengths=lens)[0].sum()),
            in_dims=(None, 0),
        )(t["weight_ih"], torch.tensor([[1, 2, 3], [1, -1, 2]]))


def test_compiled_grad_transform():
    """torch.compile of a torch.func.grad function: traced through the ATen form."""
    torch.manual_seed(45)
    model = rnnfast.LSTM(3, 4, proj_size=2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(5, 2, 3)

    def loss(p):
        return functional_call(model, p, (x,))[0].pow(2).sum()

    torch._dynamo.reset()
    got = torch.compile(grad(loss), backend="aot_eager", fullgraph=True)(params)
    expected = grad(loss)(params)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
