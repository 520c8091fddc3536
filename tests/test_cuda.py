"""The CUDA engine against the float64 CPU reference, the CPU op and torch.nn (cuDNN).

Tests that take the `engine` fixture run twice: on the GPU (skipped where none is present)
and on the host, where rnnfast._C's host build of the same engine (step loop, GEMM operands,
kernel bodies) stands in for the ops' CPU kernels. The others need a GPU. Odd sizes
throughout (no multiple of a warp or a vector width), every cell and option, per dtype with
tolerances that fit it."""

import contextlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import reference
from conftest import CELLS, OUTPUT_NAMES, assert_close, call, make_case, run
from cuda_helpers import (
    TOLERANCES,
    CudaEngine,
    compare_with_reference,
    engine_on_gpu,
    on_device,
    requires_cuda,
    run_cuda,
    tf32_off,
)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def test_host_build_stands_in_only_while_running(F):
    """Inside running() every call reaches the host build of the CUDA engine; after it, the
    CPU engine is back."""
    engine = CudaEngine(on_host=True)
    case = make_case("gru", T=3, B=2, I=2, H=3, seed=1)
    expected = call(F, case)
    with engine.running():
        got = call(F, case)
        assert engine.calls == 1
    call(F, case)
    assert engine.calls == 1
    for name, g, e in zip(OUTPUT_NAMES, got, expected):
        assert_close(g, e, name, case, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths", [None, "random"], ids=["full", "lengths"])
def test_matrix_float64(F, engine, cell, bias, hx, reverse, batch_first, lengths):
    P = 4 if cell == "lstm" and lengths else None
    case = make_case(
        cell,
        T=5,
        B=4,
        I=3,
        H=7,
        P=P,
        bias=bias,
        hx=hx,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=11,
    )
    compare_with_reference(F, case, engine)


SIZES = [  # T, B, I, H
    (1, 1, 1, 1),
    (7, 5, 13, 3),
    (13, 7, 5, 33),
    (4, 37, 19, 130),  # more than one block of threads per step
    (3, 300, 9, 257),
]


def _well_posed(cell, dtype, B, H):
    """Not relu in 16 bits with many units: 16-bit states drift from the float64 ones, some
    pre-activation then lies within their rounding of 0, and its gradient differs by a whole
    unit (as in test_batch_slices.test_split_batch_16bit)."""
    return not ("relu" in cell and dtype in (torch.float16, torch.bfloat16) and B * H > 1000)


@pytest.mark.parametrize(
    "cell,dtype,T,B,I,H",
    [
        pytest.param(cell, dtype, *size, id=f"{cell}-{dtype}-{'x'.join(map(str, size))}")
        for size in SIZES
        for dtype in DTYPES
        for cell in CELLS
        if _well_posed(cell, dtype, size[1], size[3])
    ],
)
def test_sizes_and_dtypes(F, engine, cell, dtype, T, B, I, H):
    P = max(1, H // 3) if cell == "lstm" and B % 2 else None
    case = make_case(
        cell,
        T=T,
        B=B,
        I=I,
        H=H,
        P=P,
        lengths="random",
        reverse=B % 2 == 1,
        batch_first=T % 2 == 0,
        seed=T * 100 + B,
    )
    compare_with_reference(F, case, engine, dtype=dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_against_cpu_op(F, engine, cell, dtype):
    """The same op on the CPU engine and on the CUDA engine, same dtype, same values."""
    P = 11 if cell == "lstm" else None
    case = make_case(cell, T=9, B=23, I=17, H=45, P=P, lengths="random", reverse=True, seed=5).to(
        dtype
    )
    cpu_outs, cpu_grads, up = run(F, case)
    with engine.running():
        outs, grads = run_cuda(F, on_device(case, engine.device), up)
    tol = dict(TOLERANCES[dtype])
    if dtype == torch.bfloat16:  # both sides round; allow a couple of ulps each
        tol = dict(rtol=0, atol=6e-2)
    for name, o, r in zip(OUTPUT_NAMES, outs, cpu_outs):
        assert_close(o, r.double(), name, case, scaled=True, **tol)
    for name, r in cpu_grads.items():
        assert_close(grads[name], r.double(), "grad of " + name, case, scaled=True, **tol)


@requires_cuda
@pytest.mark.parametrize("cell", CELLS)
def test_device_lengths(F, cell):
    """Lengths on the GPU (no host sync) give what CPU lengths give."""
    case = make_case(cell, T=6, B=5, I=4, H=9, lengths="random", reverse=True, seed=3)
    compare_with_reference(F, case, engine_on_gpu(), lengths_on_device=True)


@requires_cuda
@pytest.mark.parametrize("cell", ["rnn_tanh_residual", "gru_reset_before", "lstm"])
def test_device_lengths_out_of_range_are_clamped(F, cell):
    """Device lengths are not validated (that would need a host sync): they are clamped to
    [0, T], never read out of bounds."""
    case = make_case(cell, T=5, B=3, I=4, H=6, lengths=[9, -2, 3], seed=4)
    got = case.replace(lengths=torch.tensor([9, -2, 3], device="cuda"))
    expected = case.replace(lengths=torch.tensor([5, 0, 3]))
    with torch.no_grad():
        outs = call(F, on_device(got, "cuda").replace(lengths=got.lengths))
        ref = call(reference, expected)
    for name, o, r in zip(OUTPUT_NAMES, outs, ref):
        assert_close(o.cpu(), r, name, case, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_nan_never_read(F, engine, cell):
    """NaN in the padding of the input reaches neither outputs nor gradients."""
    case = make_case(cell, T=6, B=4, I=3, H=5, lengths=[6, 2, 0, 4], seed=8)
    x = case.input.clone()
    for b, L in enumerate(case.lengths.tolist()):
        x[L:, b] = float("nan")
    ref_outs, ref_grads, up = run(reference, case)
    with engine.running():
        outs, grads = run_cuda(F, on_device(case.replace(input=x), engine.device), up)
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert_close(o, r, name, case, rtol=1e-9, atol=1e-10)
    for name, r in ref_grads.items():  # the input's gradient is zero over the padding
        assert_close(grads[name], r, "grad of " + name, case, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_noncontiguous_arguments(F, engine, cell):
    """Weights given transposed-and-back, batch-first input sliced: any strides work."""
    case = make_case(cell, T=5, B=4, I=6, H=7, lengths="random", batch_first=True, seed=9)
    dev = on_device(case, engine.device)
    I = case.input.shape[-1]
    big = torch.randn(case.B, case.T, 2 * I + 1, dtype=torch.float64, device=engine.device)
    big[..., 1::2][..., :I].copy_(dev.input)
    dev = dev.replace(
        input=big[..., 1::2][..., :I],
        weight_hh=dev.weight_hh.t().contiguous().t(),
        weight_ih=dev.weight_ih.t().contiguous().t(),
    )
    assert not dev.input.is_contiguous() and not dev.weight_hh.is_contiguous()
    ref_outs, ref_grads, up = run(reference, case)
    with engine.running():
        outs, grads = run_cuda(F, dev, up)
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert_close(o, r, name, case, rtol=1e-9, atol=1e-10)
    for name, r in ref_grads.items():
        assert_close(grads[name], r, "grad of " + name, case, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------------
# gradients that are absent or partial


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("used", ["output", "h_n", "last"])
def test_partial_outputs_used(F, engine, cell, used):
    """Backward with grad_output or grad_h_n (or grad_c_n) missing: the op gets None."""
    case = make_case(cell, T=5, B=3, I=4, H=6, lengths=[5, 2, 0], reverse=True, seed=12)
    dev = on_device(case, engine.device)

    def pick(outs):
        if used == "output":
            return outs[0].sum()
        if used == "h_n":
            return (outs[1] * 1.5).sum()
        return outs[-1].sum()  # c_n for the LSTM, h_n otherwise

    grads = {}
    for name, c in (("ref", case), ("cuda", dev)):
        leaves = {n: t.detach().requires_grad_(True) for n, t in c.tensors().items()}
        impl = reference if name == "ref" else F
        with engine.running() if name == "cuda" else contextlib.nullcontext():
            loss = pick(call(impl, c, leaves))
            g = torch.autograd.grad(
                loss, list(leaves.values()), allow_unused=True, materialize_grads=True
            )
        grads[name] = dict(zip(leaves, g))
    for n, r in grads["ref"].items():
        assert_close(grads["cuda"][n].cpu(), r, "grad of " + n, case, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_only_weights_require_grad(F, engine, cell):
    case = make_case(cell, T=4, B=3, I=5, H=6, lengths="random", seed=13)
    dev = on_device(case, engine.device)
    w = dev.weight_hh.detach().requires_grad_(True)
    with engine.running():
        out = call(F, dev.replace(weight_hh=w))[0]
        (g,) = torch.autograd.grad(out.sum(), [w])
    wr = case.weight_hh.detach().requires_grad_(True)
    (gr,) = torch.autograd.grad(call(reference, case.replace(weight_hh=wr))[0].sum(), [wr])
    assert_close(g.cpu(), gr, "grad of weight_hh", case, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------------
# torch.nn (cuDNN) on the GPU, with the same weights


def _nn_module(kind, I, H, P):
    if kind.startswith("rnn"):
        return nn.RNN(I, H, nonlinearity=kind[4:])
    if kind == "gru":
        return nn.GRU(I, H)
    return nn.LSTM(I, H, proj_size=P)


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
def test_against_torch_nn(F, engine, kind, use_lengths):
    """torch.nn on the same device with the same weights: cuDNN on the GPU, TF32 off."""
    with tf32_off():
        against_torch_nn(F, engine, kind, use_lengths)


def against_torch_nn(F, engine, kind, use_lengths):
    T, B, I, H = 11, 9, 13, 37
    P = 17 if kind == "lstm" and use_lengths else 0
    torch.manual_seed(0)
    m = _nn_module(kind, I, H, P).to(engine.device)
    x = torch.randn(T, B, I, device=engine.device, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,)) if use_lengths else None
    if lengths is not None:
        lengths[0] = T
    if use_lengths:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out_p, hn = m(packed)
        expected_out, _ = pad_packed_sequence(out_p, total_length=T)
    else:
        expected_out, hn = m(x)
    expected = [expected_out] + (list(hn) if kind == "lstm" else [hn])
    expected = [expected[0]] + [e[0] for e in expected[1:]]  # drop the layer dimension
    args = (x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    with engine.running():
        if kind == "lstm":
            out, (h, c) = F.lstm(*args, weight_hr=getattr(m, "weight_hr_l0", None), lengths=lengths)
            got = [out, h, c]
        elif kind == "gru":
            got = list(F.gru(*args, lengths=lengths))
        else:
            got = list(F.rnn(*args, nonlinearity=kind[4:], lengths=lengths))
    tol = dict(rtol=1e-3, atol=1e-4)
    what = f"{kind} lengths={use_lengths}"
    for name, g, e in zip(OUTPUT_NAMES, got, expected):
        assert_close(g, e, name, what, scaled=True, **tol)
    leaves = [x] + list(m.parameters())
    ups = [torch.randn_like(e) for e in expected]
    ge = torch.autograd.grad(sum((e * u).sum() for e, u in zip(expected, ups)), leaves)
    with engine.running():
        gg = torch.autograd.grad(sum((g * u).sum() for g, u in zip(got, ups)), leaves)
    names = ["input"] + [n for n, _ in m.named_parameters()]
    for n, a, b in zip(names, gg, ge):
        assert_close(a, b, "grad of " + n, what, scaled=True, **tol)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
def test_forward_op_same_as_cpu_op(engine, cell, batch_first):
    """The forward op's four results, `saved` included (same layout on every backend), equal
    the CPU op's in float64; with need_saved=False, saved is empty."""
    import rnnfast  # noqa: F401

    op = torch.ops.rnnfast.recurrent_forward.default
    P = 3 if cell == "lstm" else None
    case = make_case(
        cell,
        T=6,
        B=5,
        I=4,
        H=7,
        P=P,
        lengths="random",
        reverse=True,
        batch_first=batch_first,
        seed=90,
    )
    dev = on_device(case, engine.device, lengths_on_device=True)

    def args(c, need_saved):
        t = c.tensors()
        return (
            t["input"],
            t["weight_ih"],
            t["weight_hh"],
            t.get("bias_ih"),
            t.get("bias_hh"),
            t.get("h0"),
            t.get("c0"),
            t.get("weight_hr"),
            c.lengths,
            c.cell,
            c.reverse,
            c.batch_first,
            need_saved,
        )

    expected = op(*args(case, True))
    with engine.running():
        got = op(*args(dev, True))
        got_no_saved = op(*args(dev, False))
    for name, g, e in zip(["output", "h_n", "c_n", "saved"], got, expected):
        assert g.device.type == engine.device
        assert_close(g.cpu(), e, name, case, rtol=1e-9, atol=1e-10)
    assert got_no_saved[3].numel() == 0
    for name, g, e in zip(["output", "h_n", "c_n"], got_no_saved, expected):
        assert_close(g.cpu(), e, name, case, rtol=1e-9, atol=1e-10)
