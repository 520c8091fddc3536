"""rnnfast.RNNCell / GRUCell / LSTMCell against torch.nn's cells with the same weights, the
extras against the float64 reference, and a generation-style loop of many calls."""

import itertools

import pytest
import torch
from torch import nn

import rnnfast

import reference

I, H, B = 4, 5, 3

STANDARD = {
    "rnn_tanh": (nn.RNNCell, rnnfast.RNNCell, {}),
    "rnn_relu": (nn.RNNCell, rnnfast.RNNCell, {"nonlinearity": "relu"}),
    "gru": (nn.GRUCell, rnnfast.GRUCell, {}),
    "lstm": (nn.LSTMCell, rnnfast.LSTMCell, {}),
}
EXTRAS = {
    "rnn_tanh_residual": (rnnfast.RNNCell, {"residual": True}, reference.rnn, {"residual": True}),
    "rnn_relu_residual": (
        rnnfast.RNNCell,
        {"residual": True, "nonlinearity": "relu"},
        reference.rnn,
        {"residual": True, "nonlinearity": "relu"},
    ),
    "gru_reset_before": (
        rnnfast.GRUCell,
        {"reset_after": False},
        reference.gru,
        {"reset_after": False},
    ),
}


def twin(cell, dtype=torch.float64, bias=True):
    torch_class, fast_class, extras = STANDARD[cell]
    torch_cell = torch_class(I, H, bias=bias, dtype=dtype, **extras)
    fast_cell = fast_class(I, H, bias=bias, dtype=dtype, **extras)
    fast_cell.load_state_dict(torch_cell.state_dict())
    return torch_cell, fast_cell


def make_state(cell, batched, dtype=torch.float64):
    shape = (B, H) if batched else (H,)
    h = torch.randn(shape, dtype=dtype, requires_grad=True)
    if cell.startswith("lstm"):
        return h, torch.randn(shape, dtype=dtype, requires_grad=True)
    return h


def _tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def _clone(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(t.detach().clone().requires_grad_() for t in state)
    return state.detach().clone().requires_grad_()


def step_results(module, x, hx, steps=1):
    """Run ``steps`` calls feeding the state back (a generation loop); the outputs and the
    gradients of a random functional of every step's state."""
    gen = torch.Generator().manual_seed(5)
    state, loss, outs = hx, 0, []
    for _ in range(steps):
        state = module(x, state)
        for t in _tensors(state):
            loss = loss + (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum()
            outs.append(t.detach())
    leaves = [x] + ([] if hx is None else _tensors(hx)) + list(module.parameters())
    return outs, torch.autograd.grad(loss, leaves)


CELL_MATRIX = list(itertools.product([True, False], [True, False], [True, False]))


@pytest.mark.parametrize("cell", list(STANDARD))
@pytest.mark.parametrize("bias, batched, with_hx", CELL_MATRIX)
def test_cell_agrees_with_torch_nn(cell, bias, batched, with_hx):
    torch_cell, fast_cell = twin(cell, bias=bias)
    x = torch.randn((B, I) if batched else (I,), dtype=torch.float64, requires_grad=True)
    hx = make_state(cell, batched) if with_hx else None
    expected = step_results(torch_cell, x, hx, steps=3)
    actual = step_results(fast_cell, x, _clone(hx), steps=3)
    for a, e in zip(actual[0] + list(actual[1]), expected[0] + list(expected[1])):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(STANDARD))
def test_cell_agrees_with_torch_nn_float32(cell):
    torch_cell, fast_cell = twin(cell, dtype=torch.float32)
    x = torch.randn(B, I, requires_grad=True)
    hx = make_state(cell, True, torch.float32)
    expected = step_results(torch_cell, x, hx, steps=4)
    actual = step_results(fast_cell, x, _clone(hx), steps=4)
    for a, e in zip(actual[0] + list(actual[1]), expected[0] + list(expected[1])):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", list(EXTRAS))
@pytest.mark.parametrize("bias, batched, with_hx", CELL_MATRIX)
def test_cell_extras_against_reference(cell, bias, batched, with_hx):
    fast_class, extras, fn, fn_kwargs = EXTRAS[cell]
    fast_cell = fast_class(I, H, bias=bias, dtype=torch.float64, **extras)
    x = torch.randn((B, I) if batched else (I,), dtype=torch.float64, requires_grad=True)
    hx = make_state(cell, batched) if with_hx else None

    class ReferenceCell(nn.Module):  # one reference step, the cell's calling convention
        def forward(self, inp, h):
            xb = inp.unsqueeze(0) if batched else inp.view(1, 1, -1)
            hb = None if h is None else (h if batched else h.unsqueeze(0))
            _, h_next = fn(
                xb,
                fast_cell.weight_ih,
                fast_cell.weight_hh,
                fast_cell.bias_ih,
                fast_cell.bias_hh,
                hb,
                **fn_kwargs,
            )
            return h_next if batched else h_next.squeeze(0)

        def parameters(self):
            return fast_cell.parameters()

    expected = step_results(ReferenceCell(), x, hx, steps=3)
    actual = step_results(fast_cell, x, _clone(hx), steps=3)
    for a, e in zip(actual[0] + list(actual[1]), expected[0] + list(expected[1])):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(STANDARD))
def test_cell_gradcheck(cell):
    _, fast_cell = twin(cell)
    x = torch.randn(B, I, dtype=torch.float64, requires_grad=True)
    hx = make_state(cell, True)

    def fn(x, *state_and_params):
        n = len(_tensors(hx))
        state = tuple(state_and_params[:n]) if n == 2 else state_and_params[0]
        params = dict(zip([k for k, _ in fast_cell.named_parameters()], state_and_params[n:]))
        return torch.func.functional_call(fast_cell, params, (x, state))

    assert torch.autograd.gradcheck(fn, (x, *_tensors(hx), *fast_cell.parameters()))


@pytest.mark.parametrize("cell", list(STANDARD))
def test_cell_state_dict_init_and_repr_like_torch_nn(cell):
    torch_class, fast_class, extras = STANDARD[cell]
    torch.manual_seed(2)
    torch_cell = torch_class(I, H, bias=False, **extras)
    torch.manual_seed(2)
    fast_cell = fast_class(I, H, bias=False, **extras)
    assert repr(fast_cell) == repr(torch_cell)
    assert list(fast_cell.state_dict()) == list(torch_cell.state_dict())
    for a, b in zip(fast_cell.parameters(), torch_cell.parameters()):
        assert torch.equal(a, b)


def test_cell_repr_names_the_extras():
    assert repr(rnnfast.RNNCell(3, 4, residual=True)) == "RNNCell(3, 4, residual=True)"
    assert repr(rnnfast.GRUCell(3, 4, reset_after=False)) == "GRUCell(3, 4, reset_after=False)"
