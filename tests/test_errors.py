"""Bad arguments raise clear errors that name the offending argument."""

import pytest
import torch

from conftest import call, make_case

ERRORS = (RuntimeError, ValueError, TypeError, IndexError)

KINDS = {"rnn": "rnn_tanh", "gru": "gru", "lstm": "lstm"}

T, B, I, H = 4, 3, 2, 5


def base(kind, **kw):
    return make_case(KINDS[kind], T=T, B=B, I=I, H=H, seed=40, **kw)


def raises(F, case, match):
    with pytest.raises(ERRORS, match=match):
        call(F, case)


def new(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


# (id, mutation of a valid case, regex the message must match)
SHAPE_ERRORS = [
    ("input_2d", lambda c: c.replace(input=c.input[0]), r"input"),
    ("input_4d", lambda c: c.replace(input=c.input[None]), r"input"),
    ("input_size_vs_weight_ih", lambda c: c.replace(input=new(T, B, I + 1)), r"weight_ih|input"),
    ("weight_ih_1d", lambda c: c.replace(weight_ih=c.weight_ih.reshape(-1)), r"weight_ih"),
    (
        "weight_hh_cols",
        lambda c: c.replace(weight_hh=new(c.weight_hh.shape[0], H + 1)),
        r"weight_hh",
    ),
    (
        "weight_hh_rows",
        lambda c: c.replace(weight_hh=new(c.weight_hh.shape[0] - 1, H)),
        r"weight_hh",
    ),
    ("bias_ih_size", lambda c: c.replace(bias_ih=new(c.bias_ih.shape[0] + 1)), r"bias_ih"),
    ("bias_hh_size", lambda c: c.replace(bias_hh=new(c.bias_hh.shape[0] - 1)), r"bias_hh"),
    ("hx_hidden", lambda c: c.replace(h0=new(B, H + 1)), r"hx|h0"),
    ("hx_batch", lambda c: c.replace(h0=new(B + 1, H)), r"hx|h0"),
    ("hx_1d", lambda c: c.replace(h0=new(H)), r"hx|h0"),
    ("lengths_size", lambda c: c.replace(lengths=torch.tensor([1] * (B + 1))), r"lengths"),
    ("lengths_negative", lambda c: c.replace(lengths=torch.tensor([2, -1, 3])), r"lengths"),
    ("lengths_above_T", lambda c: c.replace(lengths=torch.tensor([2, T + 1, 3])), r"lengths"),
    ("lengths_float", lambda c: c.replace(lengths=torch.tensor([2.0, 1.0, 3.0])), r"lengths"),
    ("lengths_2d", lambda c: c.replace(lengths=torch.tensor([[2, 1, 3]])), r"lengths"),
    ("lengths_2d_column", lambda c: c.replace(lengths=torch.tensor([[2], [1], [3]])), r"lengths"),
    (
        "empty_sequence_T0",
        lambda c: c.replace(input=new(0, B, I), lengths=None),
        r"(?i)input|empty|sequence|time step",
    ),
    (
        "integer_input",
        lambda c: c.replace(input=torch.ones(T, B, I, dtype=torch.int64)),
        r"(?i)input|dtype",
    ),
    (
        "float32_input_float64_weights",
        lambda c: c.replace(input=c.input.float()),
        r"(?s)(input|weight_ih).*dtype|dtype.*(input|weight_ih)",
    ),
    (
        "weight_hh_dtype",
        lambda c: c.replace(weight_hh=c.weight_hh.float()),
        r"(?s)weight_hh.*dtype|dtype.*weight_hh",
    ),
    (
        "bias_dtype",
        lambda c: c.replace(bias_hh=c.bias_hh.float()),
        r"(?s)bias_hh.*dtype|dtype.*bias_hh",
    ),
    ("hx_dtype", lambda c: c.replace(h0=c.h0.float()), r"(?s)(hx|h0).*dtype|dtype.*(hx|h0)"),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mutate,match", [pytest.param(m, r, id=i) for i, m, r in SHAPE_ERRORS])
def test_bad_argument(F, kind, mutate, match):
    case = mutate(base(kind, lengths=[2, 4, 1]))
    raises(F, case, match)


@pytest.mark.parametrize("kind", list(KINDS))
def test_weight_ih_rows(F, kind):
    c = base(kind)
    bad = c.replace(weight_ih=new(c.weight_ih.shape[0] + 1, I))
    # gates*H + 1 rows: for the GRU and LSTM not a multiple of the gate count (weight_ih
    # is wrong); for the one-gate RNN it disagrees with weight_hh (either may be named)
    raises(F, bad, r"weight_ih" if kind != "rnn" else r"weight_ih|weight_hh")


@pytest.mark.parametrize("kind", list(KINDS))
def test_hx_batch_first_uses_batch(F, kind):
    # batch_first: hx must be [B, H] (here T != B, and [T, H] is wrong)
    case = base(kind, batch_first=True)
    raises(F, case.replace(h0=new(T, H)), r"hx|h0")


@pytest.mark.parametrize("kind", list(KINDS))
def test_batch_first_input_size(F, kind):
    case = base(kind, batch_first=True)
    raises(F, case.replace(input=new(B, T, I + 2)), r"weight_ih|input")


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_cell_weight_for_other_cell(F, kind):
    """GRU weights ([3H, I]) given to rnn, RNN weights ([H, I]) given to gru."""
    other = base("gru" if kind == "rnn" else "rnn")
    case = base(kind).replace(
        weight_ih=other.weight_ih,
        weight_hh=other.weight_hh,
        bias_ih=other.bias_ih,
        bias_hh=other.bias_hh,
    )
    raises(F, case, r"weight_ih|weight_hh|bias")


def test_unknown_nonlinearity(F):
    c = base("rnn")
    with pytest.raises(ERRORS, match=r"nonlinearity"):
        F.rnn(c.input, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, c.h0, nonlinearity="sigmoid")
    with pytest.raises(ERRORS, match=r"nonlinearity"):
        F.rnn(c.input, c.weight_ih, c.weight_hh, nonlinearity="TANH ", residual=True)


def test_lstm_hx_not_a_tuple(F):
    c = base("lstm")
    with pytest.raises(ERRORS, match=r"hx|tuple"):
        F.lstm(c.input, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, c.h0)
    with pytest.raises(ERRORS, match=r"hx|tuple"):
        F.lstm(c.input, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, (c.h0, c.c0, c.c0))
    with pytest.raises(ERRORS, match=r"hx|tuple|h0"):
        F.lstm(c.input, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, (c.h0,))


def test_lstm_c0_wrong_shape(F):
    c = base("lstm")
    raises(F, c.replace(c0=new(B, H + 1)), r"hx|cx|c0")
    raises(F, c.replace(c0=new(B + 1, H)), r"hx|cx|c0")


def test_lstm_projection_errors(F):
    P = 2
    c = base("lstm", P=P)
    # h0 must be [B, P] with a projection, not [B, H]
    raises(F, c.replace(h0=new(B, H)), r"hx|h0")
    # weight_hh must be [4H, P]
    raises(F, c.replace(weight_hh=new(4 * H, H)), r"weight_hh")
    # weight_hr must be [P, H]
    raises(F, c.replace(weight_hr=new(P, H + 1)), r"weight_hr")
    raises(F, c.replace(weight_hr=new(P * H)), r"weight_hr")
    raises(F, c.replace(weight_hr=c.weight_hr.float()), r"(?s)weight_hr.*dtype|dtype.*weight_hr")


def test_error_does_not_depend_on_requires_grad(F):
    c = base("gru", lengths=[2, 4, 1])
    bad = c.replace(weight_hh=new(3 * H, H + 1))
    leaves = {n: t.detach().requires_grad_(True) for n, t in bad.tensors().items()}
    with pytest.raises(ERRORS, match=r"weight_hh"):
        call(F, bad, leaves)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64, torch.float8_e4m3fn])
def test_unsupported_dtype_names_the_supported_ones(F, dtype):
    case = make_case("gru", T=3, B=2, I=3, H=4, seed=1).to(dtype)
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16; got"):
        call(F, case)
