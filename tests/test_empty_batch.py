"""A batch of no sequences (B = 0), which torch.nn's layers and cells accept: the results
have the shapes of any batch, the parameters' gradients are zero, and nothing fails."""

import pytest
import torch
from test_ops import backward_args, backward_op, forward_op, op_args
from torch import nn

import rnnfast

from conftest import CELLS, call, compare, make_case
from cuda_helpers import compare_with_reference

VARIANTS = {
    # name: make_case kwargs
    "plain": dict(),
    "batch_first_reverse": dict(batch_first=True, reverse=True),
    "lengths": dict(lengths=[]),
    "no_bias_no_state": dict(bias=False, hx=False),
}


def empty_case(cell, variant, dtype=torch.float64):
    kw = dict(VARIANTS[variant])
    if cell == "lstm" and variant == "lengths":
        kw["P"] = 2
    return make_case(cell, T=4, B=0, I=3, H=5, dtype=dtype, seed=40, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference(F, cell, variant):
    case = empty_case(cell, variant)
    outs = compare(F, case)
    T, H = 4, case.weight_hh.shape[1]
    assert outs[0].shape == ((0, T, H) if case.batch_first else (T, 0, H))
    assert outs[1].shape == (0, H)


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_gradients_are_zero(F, cell):
    case = empty_case(cell, "plain")
    leaves = {n: t.detach().requires_grad_() for n, t in case.tensors().items()}
    outs = call(F, case, leaves)
    sum(o.sum() for o in outs).backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        grad = leaves[name].grad
        assert grad is not None and grad.shape == leaves[name].shape, name
        assert torch.equal(grad, torch.zeros_like(grad)), name
    assert leaves["input"].grad.shape == case.input.shape


@pytest.mark.parametrize("cell", ["rnn_tanh_residual", "gru_reset_before", "lstm"])
@pytest.mark.parametrize("variant", ["plain", "lengths"])
def test_opcheck(cell, variant):
    case = empty_case(cell, variant)
    torch.library.opcheck(forward_op(), op_args(case, requires_grad=True))
    args, _ = backward_args(case)
    torch.library.opcheck(backward_op(), args)


def _pairs():
    for name in ("RNN", "GRU", "LSTM"):
        yield name, {}
        yield name, dict(num_layers=2, bidirectional=True, batch_first=True)
    yield "LSTM", dict(proj_size=3)


@pytest.mark.parametrize("name,kwargs", list(_pairs()))
def test_layers_match_torch_nn(name, kwargs):
    torch_layer = getattr(nn, name)(4, 5, **kwargs)
    layer = getattr(rnnfast, name).from_torch(torch_layer)
    shape = (0, 3, 4) if kwargs.get("batch_first") else (3, 0, 4)
    x = torch.randn(shape, requires_grad=True)
    output, state = layer(x)
    expected, expected_state = torch_layer(x)
    assert output.shape == expected.shape
    states = state if isinstance(state, tuple) else (state,)
    expected_states = expected_state if isinstance(expected_state, tuple) else (expected_state,)
    assert [s.shape for s in states] == [s.shape for s in expected_states]
    output.sum().backward()
    assert x.grad.shape == x.shape
    for p in layer.parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))


@pytest.mark.parametrize("name", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_match_torch_nn(name):
    torch_cell = getattr(nn, name)(4, 5)
    cell = getattr(rnnfast, name).from_torch(torch_cell)
    x = torch.randn(0, 4, requires_grad=True)
    result, expected = cell(x), torch_cell(x)
    results = result if isinstance(result, tuple) else (result,)
    expecteds = expected if isinstance(expected, tuple) else (expected,)
    assert [r.shape for r in results] == [e.shape for e in expecteds]
    results[0].sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", ["plain", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_reference(F, engine, cell, variant, dtype):
    compare_with_reference(F, empty_case(cell, variant), engine, dtype=dtype)
