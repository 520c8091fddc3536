"""The op rnnfast::mm (self @ mat2 + bias, as torch.addmm), which runs rnnfast.scan's products
over all steps on the CPU engine's GEMM: against torch.addmm in float64 and float32 over odd
sizes, strides and bias shapes, on both of the engine's GEMMs (the BLAS and rnnfast's panels),
gradcheck and gradgradcheck, opcheck, and its errors."""

import pytest
import torch

import rnnfast  # noqa: F401  (registers the ops)

MM = torch.ops.rnnfast.mm.default
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["blas", "panels"])
def step_gemm(request):
    """Which GEMM the CPU engine runs float32 products on (both are correct everywhere)."""
    before = rnnfast._C._testing.cpu_step_gemm()
    rnnfast._C._testing.set_cpu_step_gemm(request.param)
    try:
        yield request.param
    finally:
        rnnfast._C._testing.set_cpu_step_gemm(before)


def operand(rows, cols, layout, dtype, device, g):
    """A [rows, cols] matrix laid out as ``layout`` says: row-major, column-major (W.t()),
    every other column of a wider one, or one row broadcast (stride 0)."""
    if layout == "rows":
        return torch.randn(rows, cols, generator=g, dtype=dtype).to(device)
    if layout == "columns":
        return torch.randn(cols, rows, generator=g, dtype=dtype).to(device).t()
    if layout == "strided":
        return torch.randn(rows, 2 * cols, generator=g, dtype=dtype).to(device)[:, ::2]
    return torch.randn(1, cols, generator=g, dtype=dtype).to(device).expand(rows, cols)


# The last sums over K past the engine's blocks of a transposed A (gemm_cpu.cpp: 512), with a
# partial last block.
SIZES = [
    (1, 1, 1),
    (7, 5, 3),
    (37, 19, 23),
    (130, 67, 45),
    (9, 300, 17),
    (64, 33, 270),
    (40, 1100, 37),
]


@pytest.mark.usefixtures("step_gemm")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("M,K,N", SIZES)
@pytest.mark.parametrize(
    "layouts",
    [("rows", "rows"), ("columns", "columns"), ("strided", "columns"), ("broadcast", "strided")],
)
@pytest.mark.parametrize("bias_shape", [None, "N", "1N", "M1", "MN", "scalar"])
def test_matches_addmm(device, dtype, M, K, N, layouts, bias_shape):
    g = torch.Generator().manual_seed(M * 1000 + K * 10 + N)
    a = operand(M, K, layouts[0], dtype, device, g)
    b = operand(K, N, layouts[1], dtype, device, g)
    shapes = {"N": (N,), "1N": (1, N), "M1": (M, 1), "MN": (M, N), "scalar": ()}
    bias = None
    if bias_shape is not None:
        bias = torch.randn(shapes[bias_shape], generator=g, dtype=dtype).to(device)
    got = MM(a, b, bias)
    expected = a.double() @ b.double() + (0 if bias is None else bias.double())
    assert got.shape == (M, N) and got.dtype == dtype and got.is_contiguous()
    # Rounding grows with the number of summed products K.
    scale = max(K, 1) ** 0.5
    tol = dict(rtol=1e-12, atol=1e-13 * scale)
    if dtype == torch.float32:
        tol = dict(rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(got.double(), expected, **tol, msg=lambda m: f"{layouts}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,K,N", [(0, 4, 5), (4, 0, 5), (4, 5, 0), (0, 0, 0)])
def test_empty_sizes(device, M, K, N):
    """A product with nothing to sum (K = 0) is zero, or the bias; nothing is read of C before
    it is written (torch.empty may hold NaN)."""
    a, b = torch.randn(M, K, device=device), torch.randn(K, N, device=device)
    bias = torch.randn(N, device=device)
    torch.testing.assert_close(MM(a, b), torch.zeros(M, N, device=device))
    torch.testing.assert_close(MM(a, b, bias), bias.expand(M, N))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_types_round_as_torch(dtype):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 70, generator=g).to(dtype)
    b, bias = torch.randn(70, 30, generator=g).to(dtype), torch.randn(30, generator=g).to(dtype)
    torch.testing.assert_close(MM(a, b, bias), torch.addmm(bias, a, b), rtol=0, atol=0)


@pytest.mark.usefixtures("step_gemm")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck(device, with_bias):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(11, 7, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(5, 7, generator=g, dtype=torch.float64).to(device).t().requires_grad_()
    bias = torch.randn(1, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    args = (a, b, bias) if with_bias else (a, b)
    assert torch.autograd.gradcheck(lambda *t: MM(*t), args)
    assert torch.autograd.gradgradcheck(lambda *t: MM(*t), args)


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True)]
)
def test_gradients_only_of_what_requires_them(needs):
    """Each operand is kept only for the other's gradient; what does not require grad gets
    none."""
    g = torch.Generator().manual_seed(3)
    a, b, bias = (torch.randn(s, generator=g, dtype=torch.float64) for s in [(6, 4), (4, 3), (3,)])
    for t, need in zip((a, b, bias), needs):
        t.requires_grad_(need)
    out = MM(a, b, bias)
    out.backward(torch.randn(6, 3, generator=g, dtype=torch.float64))
    expected = torch.addmm(bias.detach(), a.detach(), b.detach())
    torch.testing.assert_close(out.detach(), expected)
    for t, need in zip((a, b, bias), needs):
        assert (t.grad is not None) == need


@pytest.mark.parametrize("device", DEVICES + ["meta"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck(device, dtype):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(9, 6, generator=g, dtype=dtype).to(device).requires_grad_()
    b = torch.randn(6, 8, generator=g, dtype=dtype).to(device).requires_grad_()
    bias = torch.randn(8, generator=g, dtype=dtype).to(device).requires_grad_()
    for args in [(a, b), (a, b, bias), (a.detach(), b.detach().t().contiguous().t())]:
        torch.library.opcheck(MM, args)


def test_compiles_without_a_graph_break():
    """torch.compile keeps the op as one node, shaped by its fake (meta) kernel."""
    g = torch.Generator().manual_seed(5)
    a, b, bias = (torch.randn(s, generator=g) for s in [(12, 5), (5, 7), (7,)])
    f = torch.compile(lambda a, b, c: MM(a, b, c).relu(), fullgraph=True, backend="eager")
    torch.testing.assert_close(f(a, b, bias), torch.addmm(bias, a, b).relu())


@pytest.mark.parametrize(
    "shapes,dtypes,message",
    [
        (((3,), (3, 2), None), None, r"self must be a matrix; got shape \[3\]"),
        (((2, 3), (3, 2, 1), None), None, r"mat2 must be a matrix; got shape \[3, 2, 1\]"),
        (((2, 3), (4, 2), None), None, r"shapes cannot be multiplied \(\[2, 3\] and \[4, 2\]\)"),
        (((2, 3), (3, 4), None), (torch.float32, torch.float64, None), "mat2 must have the dtype"),
        (((2, 3), (3, 4), (3,)), None, r"bias must be broadcastable to .*\[2, 4\]; got \[3\]"),
        (((2, 3), (3, 4), (1, 2, 4)), None, r"bias must be broadcastable"),
        (
            ((2, 3), (3, 4), (4,)),
            (torch.float32,) * 2 + (torch.float64,),
            "bias must have the dtype",
        ),
    ],
)
def test_errors_name_the_argument(shapes, dtypes, message):
    """Mistakes that torch.addmm refuses with a RuntimeError: the same type, naming the
    argument, what was expected and what came."""
    dtypes = dtypes or (torch.float32,) * 3
    args = [None if s is None else torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)]
    with pytest.raises(RuntimeError, match=message):
        MM(*args)
    with pytest.raises(RuntimeError):
        torch.addmm(args[2], args[0], args[1]) if args[2] is not None else torch.mm(*args[:2])
