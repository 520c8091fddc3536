"""A tensor on another device than the input's (here the meta device among CPU tensors, which
makes the dispatcher pick the ops' fake kernels) is refused at every entry with torch.nn's
RuntimeError naming the argument, never run into a result of uninitialised memory."""

import pytest
import torch
from test_ops import backward_args, backward_op, forward_op, op_args
from torch import nn

import rnnfast
import rnnfast.functional as F

from conftest import make_case

T, B, I, H = 5, 3, 4, 6
KINDS = {"rnn": "rnn_tanh", "gru": "gru", "lstm": "lstm"}


def _meta(t):
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _case(kind):
    return make_case(
        KINDS[kind],
        T=T,
        B=B,
        I=I,
        H=H,
        P=2 if kind == "lstm" else None,
        lengths=[3, 5, 1],
        dtype=torch.float32,
        seed=3,
    )


def _functional(kind, t, lengths):
    args = (t["input"], t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"])
    if kind == "lstm":
        return F.lstm(*args, (t["h0"], t["c0"]), weight_hr=t["weight_hr"], lengths=lengths)[0]
    return getattr(F, kind)(*args, t["h0"], lengths=lengths)[0]


FUNCTIONAL_ARGS = [
    "weight_ih",
    "weight_hh",
    "bias_ih",
    "bias_hh",
    "h0",
    "c0",
    "weight_hr",
    "lengths",
]
OP_NAMES = {"h0": "hx", "c0": "cx"}  # how the op names them


def _functional_params():
    for kind in KINDS:
        for name in FUNCTIONAL_ARGS:
            if name in ("c0", "weight_hr") and kind != "lstm":
                continue
            yield pytest.param(kind, name, id=f"{kind}-{name}")


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("kind, name", list(_functional_params()))
def test_functional_refuses_an_argument_on_meta(kind, name, grad):
    case = _case(kind)
    t = {n: x.requires_grad_(grad) for n, x in case.tensors().items()}
    lengths = case.lengths
    if name == "lengths":
        lengths = lengths.to("meta")
    else:
        t[name] = _meta(t[name])
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match=OP_NAMES.get(name, name)):
        _functional(kind, t, lengths)


@pytest.mark.parametrize("kind", list(KINDS))
def test_functional_refuses_an_input_on_meta(kind):
    case = _case(kind)
    t = dict(case.tensors(), input=_meta(case.input))
    with pytest.raises(RuntimeError, match="weight_ih must be on the device of input"):
        _functional(kind, t, None)


def test_issue_example():
    x = torch.randn(5, 3, 4)
    w_ih, w_hh = torch.randn(24, 4), torch.randn(24, 6)
    with pytest.raises(RuntimeError, match="lengths must be on the CPU or on the device of input"):
        F.lstm(x, w_ih, w_hh, lengths=torch.tensor([3, 5, 1], device="meta"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_all_on_meta_still_gives_shapes(kind):
    """The fake kernels' own use: every tensor on meta gives meta results of the right shape."""
    case = _case(kind)
    t = {n: _meta(x) for n, x in case.tensors().items()}
    out = _functional(kind, t, case.lengths)
    assert out.device.type == "meta" and out.shape == (T, B, 2 if kind == "lstm" else H)


OP_ARGS = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "hx", "cx", "weight_hr", "lengths"]


@pytest.mark.parametrize("name", OP_ARGS)
def test_forward_op_refuses_an_argument_on_meta(name):
    args = list(op_args(_case("lstm"), requires_grad=False))
    k = OP_ARGS.index(name) + 1
    args[k] = _meta(args[k])
    with pytest.raises(RuntimeError, match=f"{name} must be on the"):
        forward_op()(*args)


BACKWARD_ARGS = [
    "grad_output",
    "grad_h_n",
    "grad_c_n",
    "weight_ih",
    "weight_hh",
    "hx",
    "weight_hr",
    "lengths",
    "output",
    "saved",
]


@pytest.mark.parametrize("name", BACKWARD_ARGS)
def test_backward_op_refuses_an_argument_on_meta(name):
    args, _ = backward_args(_case("lstm"))
    names = [a.name for a in backward_op()._schema.arguments]
    args = list(args)
    args[names.index(name)] = _meta(args[names.index(name)])
    with pytest.raises(RuntimeError, match=f"{name} must be on the"):
        backward_op()(*args)


def _layers_args(kind, bidirectional=False):
    case = _case(kind)
    m = getattr(nn, kind.upper())(
        I, H, num_layers=2, bidirectional=bidirectional, proj_size=2 if kind == "lstm" else 0
    )
    weights = []
    for layer in range(2):
        for suffix in ("", "_reverse")[: 1 + bidirectional]:
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                weights.append(getattr(m, f"{p}_l{layer}{suffix}", None))
    P = 2 if kind == "lstm" else H
    D = 1 + bidirectional
    hx = torch.randn(2 * D, B, P)
    cx = torch.randn(2 * D, B, H) if kind == "lstm" else None
    return [
        case.input,
        [None if w is None else w.detach() for w in weights],
        hx,
        cx,
        case.lengths,
        KINDS[kind],
        bidirectional,
        False,
        0.0,
    ]


@pytest.mark.parametrize("entry", ["op", "direct"])
@pytest.mark.parametrize("what", ["hx", "cx", "lengths", "weights[1]", "weights[5]", "weights[9]"])
def test_layers_op_refuses_an_argument_on_meta(entry, what):
    args = _layers_args("lstm")
    if what.startswith("weights"):
        k = int(what[8:-1])
        args[1][k] = _meta(args[1][k])
        named = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"][k % 5]
    else:
        k = {"hx": 2, "cx": 3, "lengths": 4}[what]
        args[k] = _meta(args[k])
        named = what
    call = torch.ops.rnnfast.recurrent_layers if entry == "op" else F.recurrent_layers
    with pytest.raises(RuntimeError, match=f"{named} must be on the"):
        call(*args)


LAYER_PARAMS = [
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "weight_ih_l1",
    "weight_hh_l0_reverse",
]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("param", LAYER_PARAMS)
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_refuses_a_parameter_left_on_meta(kind, param, grad):
    results = []
    for cls in (getattr(nn, kind), getattr(rnnfast, kind)):
        m = cls(I, H, num_layers=2, bidirectional=True)
        setattr(m, param, nn.Parameter(_meta(getattr(m, param))))
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError) as e:
            m(torch.randn(T, B, I))
        results.append(str(e.value))
    assert "must be on the device of input" in results[1]


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("state", ["h0", "c0"])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_refuses_a_state_on_meta(kind, state, unbatched):
    if state == "c0" and kind != "LSTM":
        pytest.skip("only the LSTM has c0")
    shape = (1, H) if unbatched else (1, B, H)
    x = torch.randn((T, I) if unbatched else (T, B, I))
    states = {
        "h0": torch.empty(shape, device="meta") if state == "h0" else torch.randn(shape),
        "c0": torch.empty(shape, device="meta") if state == "c0" else torch.randn(shape),
    }
    hx = (states["h0"], states["c0"]) if kind == "LSTM" else states["h0"]
    for cls in (getattr(nn, kind), getattr(rnnfast, kind)):
        with pytest.raises(RuntimeError) as e:
            cls(I, H)(x, hx)
    assert ("hx" if state == "h0" else "cx") in str(e.value)


CELL_ARGS = ["hx", "cx", "weight_ih", "bias_hh", "input"]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("what", CELL_ARGS)
@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cell_refuses_a_tensor_on_meta(kind, what, grad):
    """torch.nn's cells refuse a state or input on meta; a weight on meta they take, returning
    CPU tensors of uninitialised memory, where rnnfast refuses it too."""
    if what == "cx" and kind != "LSTMCell":
        pytest.skip("only the LSTMCell has cx")
    classes = [getattr(nn, kind), getattr(rnnfast, kind)]
    for cls in classes if what in ("hx", "cx", "input") else classes[1:]:
        m = cls(I, H)
        x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
        if what in ("weight_ih", "bias_hh"):
            setattr(m, what, nn.Parameter(_meta(getattr(m, what))))
        else:
            x, h, c = (
                _meta(t) if n == what else t for n, t in (("input", x), ("hx", h), ("cx", c))
            )
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError) as e:
            m(x, (h, c) if kind == "LSTMCell" else h)
    named = "weight_ih" if what == "input" else what
    assert f"{named} must be on the device of input" in str(e.value)
