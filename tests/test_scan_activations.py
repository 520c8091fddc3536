"""rnnfast.scan on activations and row ops that torch decomposes into the engine's (F.silu,
F.gelu, F.elu, softmax, F.normalize, F.rms_norm, var and std over the last dimension, ...)
or that have an opcode of their own (erf, amax, cumsum and flip along a row, fmod, remainder
and the rounding divisions, to ATen's bits), a score per row
by a weight vector (h @ v), and gradients stopped by detach (a straight-through estimator):
each runs in the engine forward and backward, with the Python runner's results and the eager
loop's (float64)."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import split_mode  # noqa: E402, F401
from test_scan import assert_matches_loop, python_loop  # noqa: E402
from test_scan_engine import assert_engine_matches_runner, codes_opcodes  # noqa: E402

import rnnfast  # noqa: E402
from rnnfast._scan import cache, lower, opcodes  # noqa: E402
from rnnfast._scan.engine import engine_runs  # noqa: E402

DT = torch.float64
B, T, I, H = 3, 4, 5, 6

ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"),
    "elu": F.elu,
    "celu": lambda a: F.celu(a, alpha=0.5),  # ATen: a float32 1 / alpha in its gradient
    "selu": F.selu,
    "leaky_relu": lambda a: F.leaky_relu(a, 0.05),
    "hardswish": F.hardswish,
    "mish": F.mish,
    "softshrink": lambda a: F.softshrink(a, 0.2),
    "hardshrink": lambda a: F.hardshrink(a, 0.2),
    "threshold": lambda a: F.threshold(a, 0.1, -0.3),
    "glu": lambda a: F.glu(torch.cat([a, a[:, 2:], a[:, :2]], -1), -1),
    "logit": lambda a: torch.logit(torch.sigmoid(a), eps=1e-6),
    "logaddexp": lambda a: torch.logaddexp(a, 0.5 - a),
    "erf": torch.erf,
    "softmax": lambda a: torch.softmax(a, -1),
    "log_softmax": lambda a: F.log_softmax(a, -1) / 4,
    "logsumexp": lambda a: a - torch.logsumexp(a, -1, keepdim=True),
    "amax": lambda a: a - a.amax(-1, keepdim=True),
    "cumsum_flip": lambda a: torch.cumsum(a.flip(-1), -1) / H - torch.flip(a, [1]),
    "amin": lambda a: a - torch.amin(a, -1, keepdim=True) + a.amin(-1)[:, None] ** 2,
    "detach": lambda a: a * torch.sigmoid(a).detach(),
    "straight_through": lambda a: a + (torch.sign(a) - a).detach(),
    "normalize": lambda a: F.normalize(a, dim=-1),
    "norm": lambda a: a / a.norm(dim=-1, keepdim=True),
    "rms_norm": lambda a: F.rms_norm(a, (H,)),
    "addcmul": lambda a: torch.addcmul(a, a, a.sigmoid(), value=0.1),
    "addcdiv": lambda a: torch.addcdiv(a, a, a.abs() + 1, value=0.3),
    "lerp": lambda a: torch.lerp(a, torch.tanh(a), torch.sigmoid(a)),
    "lerp_scalar": lambda a: torch.lerp(a, torch.tanh(a), 0.3) + torch.lerp(a, a.exp(), 0.8),
    "sin_cos": lambda a: torch.sin(a) * torch.cos(2 * a),
    "var": lambda a: a / (a.var(-1, keepdim=True) + 1),
    "std": lambda a: a.std(-1)[:, None] * a,
    "hand_layer_norm": lambda a: (
        (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, keepdim=True, unbiased=False) + 1e-5)
    ),
}


def _cell(act):
    torch.manual_seed(0)
    W = (0.5 * torch.randn(I, H, dtype=DT)).requires_grad_()
    U = (0.5 * torch.randn(H, H, dtype=DT)).requires_grad_()

    def step(h, x):
        h = torch.tanh(act(x @ W + h @ U))
        return h, h.clone()

    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    return step, init, torch.randn(T, B, I, dtype=DT, requires_grad=True), [W, U]


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.usefixtures("split_mode")
def test_runs_on_the_engine_as_the_loop(name):
    step, init, xs, params = _cell(ACTIVATIONS[name])
    assert_engine_matches_runner(step, init, xs, params)
    assert_matches_loop(step, init, xs, params)


@pytest.mark.usefixtures("split_mode")
def test_a_score_per_row_by_a_weight_vector_runs_on_the_engine():
    """h @ v (aten.mv): a gate per row, as a product by a one-column weight."""
    step, init, xs, (W, U) = _cell(lambda a: a)
    v = torch.randn(H, dtype=DT, requires_grad=True)

    def gated(h, x):
        a = x @ W + h @ U
        h = torch.tanh(a) * torch.sigmoid(a @ v)[:, None]
        return h, (h, h @ v)

    runs = engine_runs()
    assert_engine_matches_runner(gated, init, xs, [W, U, v])
    assert_matches_loop(gated, init, xs, [W, U, v])
    assert engine_runs() > runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cumsum_is_atens_bit_for_bit(dtype):
    """cumsum along a row sums in ATen's CPU accumulation type (double for float32)."""
    torch.manual_seed(0)

    def step(h, x):
        y = torch.cumsum(x + h, -1)
        return y * 1e-3, y

    init, xs = torch.randn(5, 37, dtype=dtype), 1e3 * torch.randn(3, 5, 37, dtype=dtype)
    runs = engine_runs()
    got = rnnfast.scan(step, init, xs)
    assert engine_runs() == runs + 1
    want = python_loop(step, init, xs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cols", [3, 16, 21])
def test_row_max_over_vectors_and_tails_keeps_nan(dtype, cols):
    """amax over whole SIMD vectors and a tail, with a row whose NaN sits in either."""
    torch.manual_seed(cols)

    def step(h, x):
        return h - h.amax(-1, keepdim=True) + x, h.amax(-1, keepdim=True) * 1

    init = torch.randn(4, cols, dtype=dtype)
    init[1, 0] = init[2, cols - 1] = float("nan")
    xs = torch.randn(2, 4, cols, dtype=dtype)
    runs = engine_runs()
    got = rnnfast.scan(step, init, xs)
    assert engine_runs() == runs + 1
    want_h, ys = init, []
    for t in range(2):
        want_h, y = step(want_h, xs[t])
        ys.append(y)
    torch.testing.assert_close(got[0], want_h, equal_nan=True)
    torch.testing.assert_close(got[1], torch.stack(ys), equal_nan=True)


DIVISIONS = {
    "fmod": torch.fmod,
    "remainder": torch.remainder,
    "a % b": lambda a, b: a % b,
    "div_trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "div_floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
}


DIVISION_OPCODES = {
    "fmod": opcodes.BINARY["fmod"],
    "remainder": opcodes.BINARY["remainder"],
    **opcodes.DIV_ROUNDING,
}


@pytest.mark.parametrize("name", DIVISIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divisions_are_atens_bit_for_bit(name, dtype):
    """fmod, remainder (the %% of a phase) and the rounding divisions run in the engine with
    ATen's results to the bit, the sign of a zero included, over values of every size and at
    the edges: exact multiples, zeros of both signs, infinities, NaN, a zero divisor, a tiny
    one, negative ones."""
    op = DIVISIONS[name]
    torch.manual_seed(0)
    T_, B_, N = 6, 5, 37
    a = torch.randn(T_, B_, N, dtype=dtype) * torch.logspace(-3, 3, N, dtype=dtype)
    a[0] = torch.arange(N, dtype=dtype) - 18
    a[1] = 0.0
    a[1, :, ::2] = -0.0
    a[2, :, :5] = float("inf")
    a[2, :, 5:8] = float("nan")
    d = torch.randn(N, dtype=dtype) * 3
    d[:7] = torch.tensor([0.0, -1.0, 1e-20, 0.1, -0.3, 1.0, 2.0], dtype=dtype)

    def step(carry, x):
        zero, _ = carry  # stays zero: x - zero keeps x to the bit, and puts op in the loop
        q = op(x - zero, d)
        return (zero, q), q

    zero = torch.zeros(B_, N, dtype=dtype)
    runs = engine_runs()
    _, got = rnnfast.scan(step, (zero, zero), a)
    assert engine_runs() > runs
    codes, _ = lower.lower_loop(list(cache._entries.values())[-1].split)
    assert codes_opcodes(codes) & set(DIVISION_OPCODES.values())
    want = torch.stack([op(a[t], d) for t in range(T_)])
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(got) | got.isnan(), torch.signbit(want) | want.isnan())
