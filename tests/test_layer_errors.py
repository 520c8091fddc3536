"""Bad arguments to the layers and cells: the exception torch.nn raises, with a message that
names what was expected and what came."""

import pytest
import torch
from torch import nn

import rnnfast

PAIRS = {
    "RNN": (nn.RNN, rnnfast.RNN),
    "GRU": (nn.GRU, rnnfast.GRU),
    "LSTM": (nn.LSTM, rnnfast.LSTM),
}
CELL_PAIRS = {
    "RNNCell": (nn.RNNCell, rnnfast.RNNCell),
    "GRUCell": (nn.GRUCell, rnnfast.GRUCell),
    "LSTMCell": (nn.LSTMCell, rnnfast.LSTMCell),
}


def _state(name, shape, c_shape=None):
    if name.startswith("LSTM"):
        return torch.randn(shape), torch.randn(c_shape or shape)
    return torch.randn(shape)


# torch.nn's layers check the types of bias and input_size, and the input's dtype against the
# weights', from torch 2.11 on. rnnfast's layers take these checks from torch.nn.RNNBase, so
# on an older torch neither makes them.
needs_torch_2_11 = pytest.mark.skipif(
    torch.torch_version.TorchVersion(torch.__version__) < "2.11",
    reason="torch.nn.RNNBase, and so rnnfast's layers, check this from torch 2.11 on",
)


CONSTRUCTOR_CASES = [
    ("dropout above 1", dict(dropout=1.5), ValueError, "dropout should be a number in range"),
    ("dropout below 0", dict(dropout=-0.1), ValueError, "dropout should be a number in range"),
    ("dropout a bool", dict(dropout=True), ValueError, "dropout should be a number in range"),
    ("zero hidden size", dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    ("zero layers", dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    pytest.param(
        "bias not a bool",
        dict(bias=1),
        TypeError,
        "bias should be of type bool",
        marks=needs_torch_2_11,
    ),
    pytest.param(
        "input size a float",
        dict(input_size=3.0),
        TypeError,
        "input_size should be of type int",
        marks=needs_torch_2_11,
    ),
]


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "what, kwargs, error, message",
    CONSTRUCTOR_CASES,
    ids=[getattr(c, "values", c)[0] for c in CONSTRUCTOR_CASES],
)
def test_constructor_errors_like_torch_nn(name, what, kwargs, error, message):
    args = dict(input_size=3, hidden_size=4, num_layers=2)
    args.update(kwargs)
    for cls in PAIRS[name]:
        with pytest.raises(error, match=message):
            cls(**args)


def test_projection_errors_like_torch_nn():
    for cls in (nn.LSTM, rnnfast.LSTM):
        with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
            cls(3, 4, proj_size=4)
        with pytest.raises(ValueError, match="proj_size should be a positive integer"):
            cls(3, 4, proj_size=-1)
    for cls in (nn.GRU, rnnfast.GRU, nn.RNN, rnnfast.RNN):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            cls(3, 4, proj_size=2)


def test_unknown_nonlinearity_and_bad_extras():
    for cls in (nn.RNN, rnnfast.RNN):
        with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
            cls(3, 4, nonlinearity="sigmoid")
    # torch.nn.RNNCell takes it and fails at the first call; rnnfast refuses it at once.
    with pytest.raises(ValueError, match="Unknown nonlinearity: sigmoid"):
        rnnfast.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="residual should be of type bool"):
        rnnfast.RNN(3, 4, residual="yes")
    with pytest.raises(TypeError, match="reset_after should be of type bool"):
        rnnfast.GRU(3, 4, reset_after=None)
    with pytest.raises(TypeError, match="reset_after should be of type bool"):
        rnnfast.GRUCell(3, 4, reset_after=0)


FORWARD_CASES = [
    # what, input shape, state shape (None: no state), error, message of rnnfast
    (
        "wrong input size",
        (5, 2, 7),
        None,
        RuntimeError,
        r"input.size\(-1\) must be equal to input_size. Expected 3, got 7",
    ),
    ("4-D input", (5, 2, 3, 1), None, ValueError, "Expected input to be 2D or 3D, got 4D"),
    ("1-D input", (3,), None, ValueError, "Expected input to be 2D or 3D, got 1D"),
    (
        "state of the wrong batch",
        (5, 2, 3),
        (2, 3, 4),
        RuntimeError,
        r"Expected hidden(\[0\])? size \(2, 2, 4\), got \[2, 3, 4\]",
    ),
    (
        "state of the wrong layers",
        (5, 2, 3),
        (1, 2, 4),
        RuntimeError,
        r"Expected hidden(\[0\])? size \(2, 2, 4\), got \[1, 2, 4\]",
    ),
    (
        "state of the wrong width",
        (5, 2, 3),
        (2, 2, 5),
        RuntimeError,
        r"Expected hidden(\[0\])? size \(2, 2, 4\), got \[2, 2, 5\]",
    ),
    (
        "2-D state for batched input",
        (5, 2, 3),
        (2, 4),
        RuntimeError,
        "For batched 3-D input, hx.* should also be 3-D but got",
    ),
    (
        "3-D state for unbatched input",
        (5, 3),
        (2, 1, 4),
        RuntimeError,
        "For unbatched 2-D input, hx.* should also be 2-D but got",
    ),
]


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "what, shape, state_shape, error, message", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES]
)
def test_forward_errors_like_torch_nn(name, what, shape, state_shape, error, message):
    torch.manual_seed(0)
    x = torch.randn(shape)
    hx = None if state_shape is None else _state(name, state_shape)
    torch_class, fast_class = PAIRS[name]
    with pytest.raises(error):
        torch_class(3, 4, num_layers=2)(x, hx)
    with pytest.raises(error, match=message):
        fast_class(3, 4, num_layers=2)(x, hx)


def test_lstm_cell_state_of_the_wrong_size():
    x, h0, c0 = torch.randn(5, 2, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 3)
    for cls in (nn.LSTM, rnnfast.LSTM):
        with pytest.raises(
            RuntimeError,
            match=r"Expected hidden\[1\] size \(1, 2, 4\), got "
            r"\[1, 2, 3\]",
        ):
            cls(3, 4)(x, (h0, c0))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        rnnfast.LSTM(3, 4)(x, h0)


def test_packed_state_of_the_wrong_batch():
    x = torch.randn(5, 2, 3)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 2, 4\), got \[1, 3, 4\]"):
        rnnfast.GRU(3, 4)(packed, torch.randn(1, 3, 4))


@needs_torch_2_11
def test_dtype_mismatch_like_torch_nn():
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for cls in (nn.GRU, rnnfast.GRU):
        with pytest.raises(
            ValueError,
            match=r"input dtype \(torch.float64\) does not match "
            r"weight dtype \(torch.float32\)",
        ):
            cls(3, 4)(x)


def test_state_dtype_mismatch_names_the_state():
    with pytest.raises(TypeError, match="hx must have the dtype of input"):
        rnnfast.GRU(3, 4)(torch.randn(5, 2, 3), torch.randn(1, 2, 4, dtype=torch.float64))


def test_empty_sequence_is_refused():
    with pytest.raises(ValueError, match="T = 0|at least one time step|empty"):
        rnnfast.LSTM(3, 4)(torch.randn(0, 2, 3))


CELL_CASES = [
    ("3-D input", (2, 5, 3), None, ValueError, "Expected input to be 1D or 2D, got 3D"),
    ("3-D state", (2, 3), (1, 2, 4), ValueError, "Expected hidden to be 1D or 2D, got 3D"),
    (
        "wrong input size",
        (2, 5),
        None,
        RuntimeError,
        "input has inconsistent input_size: got 5, expected 3",
    ),
    (
        "state of the wrong batch",
        (2, 3),
        (3, 4),
        RuntimeError,
        "input batch size 2 doesn't match hx batch size 3",
    ),
    (
        "state of the wrong width",
        (2, 3),
        (2, 6),
        RuntimeError,
        "hx has inconsistent hidden_size: got 6, expected 4",
    ),
]


@pytest.mark.parametrize("name", list(CELL_PAIRS))
@pytest.mark.parametrize(
    "what, shape, state_shape, error, message", CELL_CASES, ids=[c[0] for c in CELL_CASES]
)
def test_cell_errors_like_torch_nn(name, what, shape, state_shape, error, message):
    x = torch.randn(shape)
    hx = None if state_shape is None else _state(name, state_shape)
    torch_class, fast_class = CELL_PAIRS[name]
    with pytest.raises(error):
        torch_class(3, 4)(x, hx)
    with pytest.raises(error, match=message):
        fast_class(3, 4)(x, hx)


def test_lstm_cell_wrong_cell_state_and_bad_tuple():
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="cx has inconsistent hidden_size: got 5, expected 4"):
        rnnfast.LSTMCell(3, 4)(x, (torch.randn(2, 4), torch.randn(2, 5)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c\)"):
        rnnfast.LSTMCell(3, 4)(x, torch.randn(2, 4))


@pytest.mark.parametrize("name", list(CELL_PAIRS))
@pytest.mark.parametrize(
    "x_shape, h_shape",
    [((5, 3), (5,)), ((3,), (1, 4))],
    ids=["batched-input-unbatched-state", "unbatched-input-batched-state"],
)
def test_cell_state_rank_unlike_input(name, x_shape, h_shape):
    """A state of the other rank than the input: torch.nn's cells raise an IndexError or a
    size message (5 rows of input against an unbatched state of 4); rnnfast names the ranks."""
    x = torch.randn(x_shape)
    h = torch.randn(h_shape)
    hx = (h, h) if name == "LSTMCell" else h
    with pytest.raises(ValueError, match=r"Expected hidden to be \dD like input"):
        CELL_PAIRS[name][1](3, 4)(x, hx)
