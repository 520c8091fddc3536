"""Where torch.nn answers in a way of its own, rnnfast answers the same way: cells of
hidden_size 0 give empty states, and an input with no time steps raises torch.nn's
RuntimeError with torch.nn's words, at every entry."""

import pytest
import torch
from test_ops import backward_args, backward_op, forward_op, op_args
from torch import nn

import rnnfast
import rnnfast.functional as F

from conftest import make_case

I = 10
VARIANTS = [
    ("RNNCell", {}),
    ("RNNCell", {"nonlinearity": "relu"}),
    ("RNNCell", {"residual": True}),
    ("GRUCell", {}),
    ("GRUCell", {"reset_after": False}),
    ("LSTMCell", {}),
]


def _state(kind, shape):
    return (torch.randn(shape), torch.randn(shape)) if kind == "LSTMCell" else torch.randn(shape)


def _flat(result):
    return list(result) if isinstance(result, tuple) else [result]


VARIANT_IDS = [f"{k}-{'-'.join(map(str, e.values())) or 'plain'}" for k, e in VARIANTS]


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("batch", [(3,), ()], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kind, extra", VARIANTS, ids=VARIANT_IDS)
def test_cell_of_hidden_size_0_gives_empty_states(kind, extra, batch, with_state):
    x = torch.randn(*batch, I, requires_grad=True)
    hx = _state(kind, (*batch, 0)) if with_state else None
    torch_kw = {k: v for k, v in extra.items() if k == "nonlinearity"}
    expected = _flat(getattr(nn, kind)(I, 0, **torch_kw)(x, hx))
    got = _flat(getattr(rnnfast, kind)(I, 0, **extra)(x, hx))
    assert [t.shape for t in got] == [t.shape for t in expected] == [(*batch, 0)] * len(got)
    sum(t.sum() for t in got).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_cell_of_hidden_size_0_parameter_gradients_like_torch_nn():
    torch.manual_seed(0)
    x = torch.randn(4, I)
    grads = []
    for cls in (nn.LSTMCell, rnnfast.LSTMCell):
        m = cls(I, 0)
        h, c = m(x)
        (h.sum() + c.sum()).backward()
        grads.append([p.grad.shape for p in m.parameters()])
    assert grads[0] == grads[1]


def test_cell_of_hidden_size_0_still_checks_the_state():
    with pytest.raises(RuntimeError, match="hx has inconsistent hidden_size: got 2, expected 0"):
        rnnfast.GRUCell(I, 0)(torch.randn(3, I), torch.randn(3, 2))


def test_functional_of_hidden_size_0_names_the_rule():
    """The functional API, which has no torch.nn counterpart, refuses hidden_size = 0 with a
    message that says so (not one its shape seems to meet)."""
    with pytest.raises(ValueError, match=r"hidden_size > 0 .*got shape \[0, 10\]"):
        F.rnn(torch.randn(5, 3, I), torch.randn(0, I), torch.randn(0, 0))


NO_STEPS = "Expected sequence length to be larger than 0 in RNN"


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_of_no_time_steps_raises_like_torch_nn(kind, batch_first):
    x = torch.randn((3, 0, 4) if batch_first else (0, 3, 4))
    with pytest.raises(RuntimeError, match=NO_STEPS):
        getattr(nn, kind)(4, 5, batch_first=batch_first)(x)
    with pytest.raises(RuntimeError, match=NO_STEPS) as e:
        getattr(rnnfast, kind)(4, 5, batch_first=batch_first)(x)
    assert isinstance(e.value, ValueError)  # what rnnfast raised before, still caught
    assert str(list(x.shape)) in str(e.value)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_unbatched_input_of_no_time_steps_names_the_callers_shape(kind):
    with pytest.raises(RuntimeError, match=NO_STEPS) as e:
        getattr(rnnfast, kind)(4, 5)(torch.randn(0, 4))
    assert "[0, 4]" in str(e.value) and "[0, 1, 4]" not in str(e.value)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_functional_of_no_time_steps_raises_runtime_error(kind):
    w_ih, w_hh = torch.randn(4 * 5, 4), torch.randn(4 * 5, 5)
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    with pytest.raises(RuntimeError, match=NO_STEPS):
        getattr(F, kind)(torch.randn(0, 3, 4), w_ih[: gates * 5], w_hh[: gates * 5])


def _empty_sequence_case():
    return make_case("gru", T=0, B=2, I=3, H=4, seed=1)


def test_forward_op_of_no_time_steps_raises_runtime_error():
    with pytest.raises(RuntimeError, match=NO_STEPS):
        forward_op()(*op_args(_empty_sequence_case(), requires_grad=False))


def test_layers_op_of_no_time_steps_raises_runtime_error():
    w = [torch.randn(12, 3), torch.randn(12, 4), None, None, None]
    for call in (torch.ops.rnnfast.recurrent_layers, F.recurrent_layers):
        with pytest.raises(RuntimeError, match=NO_STEPS):
            call(torch.randn(0, 2, 3), w, None, None, None, "gru", False, False, 0.0)


def test_backward_op_of_no_time_steps_raises_runtime_error():
    args, values = backward_args(make_case("gru", T=3, B=2, I=3, H=4, seed=1))
    names = [a.name for a in backward_op()._schema.arguments]
    args = list(args)
    for name in ("input", "output", "saved", "grad_output"):
        args[names.index(name)] = values[name][:0]
    with pytest.raises(RuntimeError, match=NO_STEPS):
        backward_op()(*args)
