"""Accuracy of the float32 CPU kernels' tanh and sigmoid (cpu/vec_math.h: a rational function,
and one fast exp and a division, instead of Sleef).

Each is read out of a one-step layer whose products are exact: an RNN with W_ih = identity
and W_hh = 0 gives tanh(x); a GRU with W_ih = (0; identity; 0), W_hh = 0 and h0 = 1 gives
its update gate z = sigmoid(x). H = 37 puts values in full vectors and in a tail.
"""

import pytest
import torch

import rnnfast.functional as RF

H = 37


def grid() -> torch.Tensor:
    """Values over the whole useful range: dense near 0, log-spaced down to denormals and out
    to exp's overflow, and every 61st float of [1/4, 9.5], where tanh's rational function is
    least accurate (near tanh = 1) and meets its clamp at 9."""
    log = torch.logspace(-40, 2.2, 4001, dtype=torch.float64)
    bits = torch.tensor([0.25, 9.5]).view(torch.int32)
    every_61st = torch.arange(int(bits[0]), int(bits[1]), 61, dtype=torch.int32).view(torch.float32)
    values = torch.cat(
        [
            torch.linspace(-20, 20, 40001, dtype=torch.float64).float(),
            torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64).float(),
            log.float(),
            -log.float(),
            every_61st,
            -every_61st,
            torch.tensor([0.25, -0.25, 9.0, -9.0, 88.0, -88.0, 89.0, -89.0, 0.0, -0.0]),
        ]
    )
    pad = -len(values) % H
    return torch.cat([values, torch.zeros(pad)]).view(-1, H)


def ulp_errors(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|got - exact| in units of the last place of exact rounded to float32; results below the
    smallest normal number are judged in units of it (exp flushes them to zero)."""
    rounded = exact.float().abs()
    ulp = (torch.nextafter(rounded, torch.tensor(float("inf"))) - rounded).double()
    ulp = ulp.clamp_min(torch.finfo(torch.float32).tiny)
    return (got.double() - exact).abs() / ulp


def tanh_of(x: torch.Tensor) -> torch.Tensor:
    """x [R, C] -> tanh(x) computed by the RNN kernel (one step, R batch rows)."""
    C = x.shape[1]
    with torch.no_grad():
        return RF.rnn(x.unsqueeze(0), torch.eye(C), torch.zeros(C, C))[0][0]


def sigmoid_of(x: torch.Tensor) -> torch.Tensor:
    """x [R, C] -> sigmoid(x) computed by the GRU kernel: h' = n + z (h - n) = z, as n = 0."""
    C = x.shape[1]
    eye, zero = torch.eye(C), torch.zeros(C, C)
    with torch.no_grad():
        return RF.gru(
            x.unsqueeze(0),
            torch.cat([zero, eye, zero]),
            torch.zeros(3 * C, C),
            hx=torch.ones(x.shape[0], C),
        )[0][0]


@pytest.mark.parametrize(
    "name, kernel, exact, max_ulp",
    [
        ("tanh", tanh_of, torch.tanh, 6),
        ("sigmoid", sigmoid_of, torch.sigmoid, 5),
    ],
)
def test_float32_accuracy(name, kernel, exact, max_ulp):
    x = grid()
    got = kernel(x)
    assert got.dtype == torch.float32 and not got.isnan().any(), name
    errors = ulp_errors(got, exact(x.double()))
    worst = errors.argmax()
    assert errors.max() <= max_ulp, (
        f"{name}: {errors.max().item():.2f} ulp at x = {x.flatten()[worst].item()!r}"
    )
    # Well inside the bound on average: a systematic bias would show here first.
    assert errors.mean() <= 1.0, f"{name}: mean error {errors.mean().item():.3f} ulp"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "function, at_minus_inf, at_plus_inf",
    [
        ("tanh", -1.0, 1.0),
        ("relu", 0.0, float("inf")),
        ("sigmoid", 0.0, 1.0),
    ],
)
def test_limits_and_nan(function, at_minus_inf, at_plus_inf, dtype):
    """Infinite pre-activations give the function's limits, and NaN stays NaN (a NaN turned
    into a number would hide a diverged model). They come in through b_ih, as a product of
    the identity with an infinite input would form inf * 0; 19 features put them in a full
    vector and in a tail."""
    C = 19
    G = 3 if function == "sigmoid" else 1  # sigmoid: the GRU's update gate z, as above
    values = torch.tensor([-float("inf"), float("inf"), float("nan")]).repeat(7)[:C]
    bias = torch.zeros(G, C, dtype=dtype)
    bias[G // 2] = values.to(dtype)
    x = torch.zeros(1, 1, C, dtype=dtype)
    weight_ih = torch.zeros(G * C, C, dtype=dtype)
    weight_hh = torch.zeros(G * C, C, dtype=dtype)
    with torch.no_grad():
        if function == "sigmoid":
            got = RF.gru(x, weight_ih, weight_hh, bias.flatten(), hx=torch.ones(1, C, dtype=dtype))[
                0
            ].flatten()
        else:
            got = RF.rnn(x, weight_ih, weight_hh, bias.flatten(), nonlinearity=function)[0]
            got = got.flatten()
    expected = torch.tensor([at_minus_inf, at_plus_inf, float("nan")]).repeat(7)[:C]
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0, equal_nan=True)
