"""rnnfast::recurrent_layers, the stack of layers behind rnnfast.RNN/GRU/LSTM: against torch.nn
and against recurrent_forward calls joined by hand, opcheck, gradcheck, dropout's random
draws, and bad arguments."""

import pytest
import torch
import torch.nn.functional as F_nn
from torch import nn

import rnnfast
from rnnfast import functional as RF

layers_op = torch.ops.rnnfast.recurrent_layers.default
TORCH_CLASSES = {"rnn_tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def op_weights(module):
    """The op's weights list of a torch.nn layer: five entries per layer and direction."""
    directions = 2 if module.bidirectional else 1
    weights = []
    for layer in range(module.num_layers):
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights += [getattr(module, kind + suffix, None) for kind in KINDS]
    return weights


def make_layer(cell, layers, bidirectional, proj=False, bias=True, I=3, H=5):
    torch.manual_seed(layers * 10 + bidirectional)
    extra = {"proj_size": 2} if proj else {}
    return TORCH_CLASSES[cell](
        I,
        H,
        num_layers=layers,
        bidirectional=bidirectional,
        bias=bias,
        dtype=torch.float64,
        **extra,
    )


def op_args(module, cell, x, hx, lengths=None, dropout=0.0):
    h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
    return (x, op_weights(module), h0, c0, lengths, cell, module.bidirectional, False, dropout)


CONFIGS = [  # cell, layers, bidirectional, proj, bias
    ("rnn_tanh", 1, False, False, True),
    ("rnn_tanh", 2, True, False, False),
    ("gru", 3, False, False, True),
    ("gru", 2, True, False, True),
    ("lstm", 1, True, True, True),
    ("lstm", 2, True, True, False),
]


def states(module, cell, B, H):
    D = 2 if module.bidirectional else 1
    P = module.proj_size if cell == "lstm" and module.proj_size else H
    h0 = torch.randn(module.num_layers * D, B, P, dtype=torch.float64)
    if cell == "lstm":
        return h0, torch.randn(module.num_layers * D, B, H, dtype=torch.float64)
    return h0


@pytest.mark.parametrize("cell,layers,bidirectional,proj,bias", CONFIGS)
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
def test_against_torch_nn(cell, layers, bidirectional, proj, bias, with_hx):
    module = make_layer(cell, layers, bidirectional, proj, bias)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    hx = states(module, cell, 3, 5) if with_hx else None
    expected_out, expected_state = module(x, hx)
    out, h_n, c_n = RF.recurrent_layers(*op_args(module, cell, x, hx))
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        torch.testing.assert_close(h_n, expected_state[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(c_n, expected_state[1], rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(h_n, expected_state, rtol=1e-10, atol=1e-12)
        assert c_n.shape == (layers * (2 if bidirectional else 1), 0)


@pytest.mark.parametrize("cell,layers,bidirectional,proj,bias", CONFIGS)
def test_opcheck(cell, layers, bidirectional, proj, bias):
    module = make_layer(cell, layers, bidirectional, proj, bias)
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    hx = states(module, cell, 3, 5)
    lengths = torch.tensor([4, 1, 3])
    torch.library.opcheck(layers_op, op_args(module, cell, x, hx, lengths))


def test_gradcheck_two_bidirectional_lstm_layers_with_projection():
    module = make_layer("lstm", 2, True, proj=True, I=2, H=3)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0, c0 = (s.requires_grad_() for s in states(module, "lstm", 2, 3))
    params = list(module.parameters())
    lengths = torch.tensor([3, 2])

    def fn(x, h0, c0, *weights):
        named = dict(zip([n for n, _ in module.named_parameters()], weights))
        return torch.func.functional_call(_OpModule(module), named, (x, h0, c0, lengths))

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params))


class _OpModule(nn.Module):
    """The op over a torch.nn layer's parameters, for functional_call."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, h0, c0, lengths):
        return RF.recurrent_layers(
            x,
            op_weights(self.module),
            h0,
            c0,
            lengths,
            "lstm",
            self.module.bidirectional,
            False,
            0.0,
        )


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_dropout_draws_as_the_python_composition(cell):
    """Dropout between layers (not after the last) from the global generator, as F.dropout
    would draw it after each layer's recurrent_forward calls."""
    module = make_layer(cell, 3, True, I=4, H=6)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    torch.manual_seed(7)
    out, h_n, _ = RF.recurrent_layers(*op_args(module, cell, x, None, dropout=0.4))
    torch.manual_seed(7)
    weights, layer_input, expected_h = op_weights(module), x, []
    for layer in range(3):
        halves = []
        for direction in range(2):
            k = 2 * layer + direction
            w = weights[5 * k : 5 * k + 5]
            o, h, _ = RF.recurrent_forward(
                layer_input,
                w[0],
                w[1],
                w[2],
                w[3],
                None,
                None,
                w[4],
                None,
                cell,
                direction == 1,
                False,
            )
            halves.append(o)
            expected_h.append(h)
        layer_input = torch.cat(halves, -1)
        if layer < 2:
            layer_input = F_nn.dropout(layer_input, 0.4, training=True)
    torch.testing.assert_close(out, layer_input, rtol=0, atol=0)
    torch.testing.assert_close(h_n, torch.stack(expected_h), rtol=0, atol=0)


def test_layer_module_runs_recurrent_forward_per_layer_and_direction():
    """Beneath an eager layer's recurrent_layers call (decomposed before dispatch modes see it),
    one recurrent_forward per layer and direction and nothing per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls.append(func)
            return func(*args, **(kwargs or {}))

    layer = rnnfast.GRU(3, 4, num_layers=2, bidirectional=True)
    with Count() as mode:
        layer(torch.randn(5, 2, 3))
    assert mode.calls.count(torch.ops.rnnfast.recurrent_forward.default) == 4


BAD = [
    (lambda a: a.update(weights=a["weights"][:4]), "weights must hold 5 entries"),
    (
        lambda a: a.update(weights=a["weights"] + [None] * 5, bidirectional=True),
        "a multiple of 10 for 2 direction",
    ),
    (
        lambda a: a["weights"].__setitem__(5, None),
        r"weight_ih and weight_hh of layer 1, direction 0",
    ),
    (lambda a: a.update(hx=torch.zeros(3, 2, 5, dtype=torch.float64)), r"hx must hold 2 states"),
    (lambda a: a.update(hx=torch.zeros(2, 5, dtype=torch.float64)), r"hx must be 3-D"),
    (lambda a: a.update(dropout=1.5), r"dropout must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("corrupt,message", BAD)
def test_bad_arguments_name_what_is_wrong(corrupt, message):
    module = make_layer("gru", 2, False)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    names = [
        "input",
        "weights",
        "hx",
        "cx",
        "lengths",
        "cell",
        "bidirectional",
        "batch_first",
        "dropout",
    ]
    args = dict(zip(names, op_args(module, "gru", x, None)))
    corrupt(args)
    with pytest.raises(RuntimeError, match=message):
        RF.recurrent_layers(*args.values())
