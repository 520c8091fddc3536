"""The CPU engine's own float32 GEMM (csrc/cpu/panel_gemm.*): the right operand (a weight)
copied into column panels once per call and multiplied by a register-blocked loop. It runs
the float32 products on CPUs other than Intel's (MKL on Intel's); RNNFAST_CPU_STEP_GEMM
chooses.

The product itself is checked against float64 at sizes around its blocks (4 rows, panels of
two vectors), then the engine's float32 results with either choice against the float64
reference."""

import os
import subprocess
import sys

import pytest
import torch
from test_batch_slices import num_threads

import rnnfast

from conftest import LOOSE, compare, make_case


def operand(rows, cols, transposed, generator):
    """A [rows, cols] float32 matrix, as a transposed view of its [cols, rows] storage where
    asked."""
    if transposed:
        return torch.randn(cols, rows, generator=generator).t()
    return torch.randn(rows, cols, generator=generator)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize(
    "M,N,K",
    [
        (1, 1, 1),
        (3, 15, 7),
        (4, 16, 1),
        (5, 17, 9),
        (7, 20, 3),
        (8, 32, 64),
        (12, 48, 16),
        (13, 31, 5),
        (17, 33, 31),
        (64, 100, 256),
        (130, 7, 300),
        (0, 5, 3),
        (3, 0, 4),
        (2, 3, 0),
    ],
)
def test_panel_product(M, N, K, trans_a, trans_b, accumulate, threads):
    g = torch.Generator().manual_seed(M * 1000 + N * 10 + K + 1)
    A = operand(M, K, trans_a, g)
    B = operand(K, N, trans_b, g)
    C = torch.randn(M, N, generator=g)
    expected = A.double() @ B.double() + (C.double() if accumulate else 0)
    with num_threads(threads):
        rnnfast._C._testing.cpu_panel_gemm(A, B, C, accumulate)
    torch.testing.assert_close(C.double(), expected, rtol=1e-5, atol=1e-5 * K**0.5)


def test_panel_product_leaves_columns_beyond_n_alone():
    """C as rows of a wider buffer: the columns past N (the panels' zero padding) stay as
    they were."""
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(6, 5, generator=g), torch.randn(5, 19, generator=g)
    buffer = torch.full((6, 40), 7.0)
    rnnfast._C._testing.cpu_panel_gemm(A, B, buffer[:, :19], False)
    torch.testing.assert_close(buffer[:, :19], A @ B)
    assert (buffer[:, 19:] == 7.0).all()


@pytest.fixture(params=["blas", "panels"])
def step_gemm(request):
    before = rnnfast._C._testing.cpu_step_gemm()
    rnnfast._C._testing.set_cpu_step_gemm(request.param)
    assert rnnfast._C._testing.cpu_step_gemm() == request.param
    try:
        yield request.param
    finally:
        rnnfast._C._testing.set_cpu_step_gemm(before)


# Hidden sizes whose per-step product (16 rows) reaches the 1M multiply-adds from which the
# engine packs W_hh, odd so that the last panel is partly padding.
PACKED_H = {
    "rnn_tanh": 259,
    "rnn_relu_residual": 259,
    "gru": 151,
    "gru_reset_before": 151,
    "lstm": 131,
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "options",
    [dict(), dict(lengths="random", reverse=True), dict(batch_first=True, hx=False)],
    ids=["plain", "lengths-reverse", "batch-first-no-hx"],
)
@pytest.mark.parametrize("cell", list(PACKED_H))
def test_engine_float32_either_product(F, step_gemm, cell, options, threads):
    case = make_case(cell, T=6, B=16, I=9, H=PACKED_H[cell], seed=3, **options)
    c32 = case.to(torch.float32)
    with num_threads(threads):
        compare(F, c32, ref_case=case, **LOOSE)


# Steps of few rows whose products are beyond the small-GEMM kernel's 256k multiply-adds and
# short of the 1M from which W_hh is packed (rows x G*H x H), and weights whose transposed
# copies get padded rows (G*H a multiple of 256 floats: a 1 KiB multiple).
SMALL_BATCH_CASES = [
    ("gru", 3, 200),
    ("gru", 5, 256),
    ("rnn_tanh", 2, 512),
    ("lstm", 7, 120),
    ("lstm", 1, 256),
    ("lstm", 6, 64),
    ("gru_reset_before", 3, 256),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "cell,B,H", SMALL_BATCH_CASES, ids=[f"{c}-B{b}-H{h}" for c, b, h in SMALL_BATCH_CASES]
)
def test_engine_float32_small_batches_either_product(F, step_gemm, cell, B, H, threads):
    # T * B >= 16 rows: the engine then copies the weights transposed (fewer, a cell's call,
    # read them in place).
    T = max(4, -(-16 // B))
    case = make_case(cell, T=T, B=B, I=7, H=H, lengths="random" if B > 2 else None, seed=5)
    with num_threads(threads):
        compare(F, case.to(torch.float32), ref_case=case, **LOOSE)


def test_engine_lstm_projection_either_product(F, step_gemm):
    case = make_case("lstm", T=5, B=16, I=9, H=131, P=67, lengths="random", seed=4)
    compare(F, case.to(torch.float32), ref_case=case, **LOOSE)


@pytest.mark.parametrize("value,expected", [("blas", "blas"), ("panels", "panels")])
def test_step_gemm_environment_variable(value, expected):
    env = dict(os.environ, RNNFAST_CPU_STEP_GEMM=value)
    out = subprocess.run(
        [sys.executable, "-c", "import rnnfast; print(rnnfast._C._testing.cpu_step_gemm())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_step_gemm_environment_variable_unknown_value_warns():
    """An unknown value is named in a warning (C++'s, on stderr) and the default applies."""
    env = dict(os.environ, RNNFAST_CPU_STEP_GEMM="fastest")
    out = subprocess.run(
        [sys.executable, "-c", "import rnnfast; print(rnnfast._C._testing.cpu_step_gemm())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() in ("blas", "panels")
    assert "RNNFAST_CPU_STEP_GEMM" in out.stderr and "fastest" in out.stderr
