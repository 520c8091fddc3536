"""rnnfast.functional against the plain-PyTorch reference (tests/reference.py).

float64 comparisons are tight (rtol 1e-9, atol 1e-10): outputs, final states and the
gradients of the input, every weight and bias and the initial states, for the same
random upstream gradients.
"""

import math

import pytest
import torch

import reference
from conftest import (
    CELLS,
    LOOSE,
    OUTPUT_NAMES,
    assert_close,
    call,
    compare,
    make_case,
    num_gates,
    run,
    strided_layout,
    transposed_layout,
)

# ----------------------------------------------------------------------------------
# the full option matrix


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths", [None, "random"], ids=["full", "lengths"])
def test_matrix(F, cell, bias, hx, reverse, batch_first, lengths):
    case = make_case(
        cell,
        T=5,
        B=4,
        I=3,
        H=7,
        bias=bias,
        hx=hx,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=11,
    )
    compare(F, case)


SIZES = [  # T, B, I, H
    (1, 1, 1, 1),
    (1, 3, 2, 5),
    (5, 1, 3, 1),
    (7, 5, 13, 3),
    (13, 7, 5, 13),
    (3, 2, 1, 7),
    (6, 13, 7, 5),
    (4, 3, 5, 33),  # vector tails: 33 = 32 + 1, 17 = 16 + 1
    (3, 17, 4, 17),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,I,H", SIZES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_sizes(F, cell, T, B, I, H, reverse):
    case = make_case(cell, T=T, B=B, I=I, H=H, lengths="random", reverse=reverse, seed=T * 100 + B)
    compare(F, case)
    compare(F, case.replace(lengths=None))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_larger(F, cell, dtype):
    """Sizes big enough for blocked GEMMs, full vectors with tails and any parallel
    split over the batch or hidden units."""
    P = 29 if cell == "lstm" and dtype == torch.float32 else None
    case = make_case(cell, T=8, B=67, I=19, H=70, P=P, lengths="random", reverse=True, seed=70)
    if dtype == torch.float64:
        compare(F, case)
    else:
        c32 = case.to(torch.float32)
        compare(F, c32, ref_case=c32.to(torch.float64), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "T,B,H",
    [(1, 1, 75), (1, 17, 75), (2, 9, 75), (4, 48, 230)],
    ids=["step-1row", "step-17rows", "2steps", "4steps-packed"],
)
@pytest.mark.parametrize("weights", ["contiguous", "transposed-views"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weights_in_place_copied_or_packed(F, cell, T, B, H, weights, dtype):
    """Weights beyond the small ones (over 4096 elements; sizes that are not multiples of the
    16 x 16 tiles of the transposed copy) each way the CPU engine takes them: read in place by
    a single step, a cell's call (its rows: 1, or 17 beyond the copy threshold of 16);
    copied transposed for several steps; packed for the recurrent products of float32 layers
    of 4 steps and more (over 2^20 multiply-adds each, even on a batch slice of 24 rows). Also
    weights given as transposed views (strided rows)."""
    I = 41
    case = make_case(cell, T=T, B=B, I=I, H=H, lengths="random", seed=T * 10 + B)
    if weights == "transposed-views":
        case = case.replace(
            weight_ih=case.weight_ih.t().contiguous().t(),
            weight_hh=case.weight_hh.t().contiguous().t(),
        )
        assert not case.weight_ih.is_contiguous()
    if dtype == torch.float64:
        compare(F, case, ref_case=case.map(lambda t: t.contiguous()))
    else:
        c32 = case.to(torch.float32)
        compare(F, c32, ref_case=c32.to(torch.float64).map(lambda t: t.contiguous()), **LOOSE)


@pytest.mark.parametrize("P", [1, 3, 5])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, "random"], ids=["full", "lengths"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
def test_lstm_projection(F, P, hx, reverse, lengths, batch_first):
    case = make_case(
        "lstm",
        T=6,
        B=5,
        I=4,
        H=7,
        P=P,
        hx=hx,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=P,
    )
    compare(F, case)


def test_lstm_projection_nobias_shapes(F):
    case = make_case("lstm", T=4, B=3, I=2, H=5, P=2, bias=False, seed=2)
    out, hn, cn = compare(F, case)
    assert out.shape == (4, 3, 2) and hn.shape == (3, 2) and cn.shape == (3, 5)
    out, hn, cn = compare(F, case.replace(batch_first=True, input=case.input.transpose(0, 1)))
    assert out.shape == (3, 4, 2) and hn.shape == (3, 2) and cn.shape == (3, 5)


# ----------------------------------------------------------------------------------
# variable lengths


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
def test_lengths_padding_exact(F, cell, reverse, batch_first, hx):
    """Output at t >= L_b is exactly zero; h_n (c_n) of a row with L_b = 0 is exactly
    h0 (c0) (zeros without hx)."""
    lengths = [0, 3, 6, 1, 0, 4]
    case = make_case(
        cell,
        T=6,
        B=6,
        I=3,
        H=5,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        hx=hx,
        seed=5,
    )
    outs = compare(F, case)
    out = outs[0].transpose(0, 1) if batch_first else outs[0]  # [T, B, H]
    for b, L in enumerate(lengths):
        assert torch.equal(out[L:, b], torch.zeros_like(out[L:, b])), (
            f"row {b} (length {L}) has non-zero output at t >= {L}: {out[L:, b]}"
        )
        if L > 0:
            assert out[:L, b].abs().sum() > 0
        if L == 0:
            h0 = case.h0[b] if hx else torch.zeros_like(outs[1][b])
            assert torch.equal(outs[1][b], h0), f"h_n[{b}] != h0 for length 0"
            if cell == "lstm":
                c0 = case.c0[b] if hx else torch.zeros_like(outs[2][b])
                assert torch.equal(outs[2][b], c0), f"c_n[{b}] != c0 for length 0"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_all_zero(F, cell, reverse):
    case = make_case(cell, T=4, B=3, I=2, H=5, lengths=[0, 0, 0], reverse=reverse, seed=3)
    outs, grads, up = run(F, case)
    assert torch.equal(outs[0], torch.zeros_like(outs[0]))
    assert torch.equal(outs[1], case.h0)
    # d h_n / d h0 is the identity, nothing else receives gradient
    assert torch.equal(grads["h0"], up[1])
    for name in ["input", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]:
        assert torch.equal(grads[name], torch.zeros_like(grads[name])), name
    if cell == "lstm":
        assert torch.equal(outs[2], case.c0)
        assert torch.equal(grads["c0"], up[2])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_all_full_equals_none(F, cell, reverse):
    case = make_case(cell, T=5, B=4, I=3, H=6, reverse=reverse, seed=4)
    a, ga, up = run(F, case)
    b, gb, _ = run(F, case.replace(lengths=torch.full((4,), 5, dtype=torch.int64)), upstream=up)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_int32(F, cell, reverse):
    case = make_case(cell, T=6, B=5, I=3, H=4, reverse=reverse, seed=6, lengths=[2, 6, 0, 5, 1])
    compare(F, case.replace(lengths=case.lengths.to(torch.int32)))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_noncontiguous(F, cell, reverse):
    lengths = torch.tensor([[3, 9], [0, 9], [5, 9], [1, 9]])[:, 0]  # strided int64
    assert not lengths.is_contiguous()
    case = make_case(cell, T=5, B=4, I=3, H=4, reverse=reverse, seed=7)
    compare(F, case.replace(lengths=lengths))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("fill", ["garbage", "nan"])
def test_padding_values_are_never_read(F, cell, reverse, batch_first, fill):
    """Like a packed sequence: input values at t >= L_b (large garbage, or NaN/inf)
    change nothing, neither the outputs nor any gradient."""
    lengths = [4, 1, 6, 0, 2]
    T = 6
    case = make_case(
        cell,
        T=T,
        B=5,
        I=3,
        H=5,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=8,
        scale=0.5,
    )

    def time_major(x):
        return x.transpose(0, 1) if batch_first else x

    x = case.input.clone()
    for b, L in enumerate(lengths):
        time_major(x)[L:, b] = 0.0
    clean, gclean, up = run(F, case.replace(input=x))
    xd = x.clone()
    for b, L in enumerate(lengths):
        if L < T:
            if fill == "nan":
                time_major(xd)[L:, b] = float("nan")
                time_major(xd)[-1, b] = float("inf")
            else:
                time_major(xd)[L:, b] = 1e3 * torch.randn(T - L, x.shape[-1], dtype=x.dtype)
    dirty, gdirty, _ = run(F, case.replace(input=xd), upstream=up)
    for name, a, b in zip(["output", "h_n", "c_n"], dirty, clean):
        assert torch.equal(a, b), f"{name} depends on the padding: {a} vs {b}"
    gd = time_major(gdirty["input"])
    for b, L in enumerate(lengths):
        assert torch.equal(gd[L:, b], torch.zeros_like(gd[L:, b])), (
            f"grad of input non-zero in the padding of row {b}: {gd[L:, b]}"
        )
    for n in gclean:
        torch.testing.assert_close(
            gdirty[n],
            gclean[n],
            rtol=0,
            atol=0,
            msg=lambda m: f"grad of {n} depends on the padding\n{m}",
        )


# ----------------------------------------------------------------------------------
# layouts


LAYOUTS = {
    "transposed": transposed_layout,
    "strided": strided_layout,
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths", [None, "random"], ids=["full", "lengths"])
def test_noncontiguous_everything(F, cell, layout, batch_first, lengths):
    """Every tensor argument non-contiguous (transposed storage order or a strided
    slice of a NaN-filled buffer with a storage offset)."""
    P = 3 if cell == "lstm" and lengths is not None else None
    case = make_case(
        cell,
        T=5,
        B=3,
        I=4,
        H=6,
        P=P,
        lengths=lengths,
        batch_first=batch_first,
        reverse=(layout == "strided"),
        seed=9,
    )
    nc = case.map(LAYOUTS[layout])
    for n, t in nc.tensors().items():
        if t.dim() >= 2:
            assert not t.is_contiguous(), n
    compare(F, nc, ref_case=case)


STATE_LAYOUTS = {
    "transposed": transposed_layout,  # [B, H] with strides (1, B)
    "strided": strided_layout,  # [B, H] with strides (2H+1, 2), storage offset 1
    "expanded": lambda t: t[:1].expand_as(t),  # [B, H] with strides (0, 1)
}


@pytest.mark.parametrize("cell,state", [(c, "h0") for c in CELLS] + [("lstm", "c0")])
@pytest.mark.parametrize("layout", list(STATE_LAYOUTS))
def test_initial_state_layouts(F, cell, state, layout):
    """One initial state (h0 or the LSTM's c0) in an unusual layout, the rest contiguous."""
    case = make_case(cell, T=3, B=4, I=2, H=5, lengths=[3, 1, 0, 2], seed=22)
    t = STATE_LAYOUTS[layout](getattr(case, state))
    compare(F, case.replace(**{state: t}), ref_case=case.replace(**{state: t.contiguous()}))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_weights_transposed_view(F, cell, reverse):
    """Code written as ``x @ W`` with W [I, G*H] passes ``W.t()``."""
    G = num_gates(cell)
    T, B, I, H = 4, 3, 5, 6
    g = torch.Generator().manual_seed(10)
    W = torch.randn(I, G * H, dtype=torch.float64, generator=g) * 0.4
    U = torch.randn(H, G * H, dtype=torch.float64, generator=g) * 0.4
    base = make_case(cell, T=T, B=B, I=I, H=H, reverse=reverse, seed=10)
    case = base.replace(weight_ih=W.t(), weight_hh=U.t())
    assert not case.weight_ih.is_contiguous() and not case.weight_hh.is_contiguous()
    compare(
        F, case, ref_case=base.replace(weight_ih=W.t().contiguous(), weight_hh=U.t().contiguous())
    )


@pytest.mark.parametrize("cell", CELLS)
def test_input_transposed_and_sliced(F, cell):
    """Time-major input that is a transpose of a batch-major tensor, and a slice of
    a longer sequence with a step along the batch."""
    T, B, I, H = 5, 3, 4, 6
    base = make_case(cell, T=T, B=B, I=I, H=H, lengths=[5, 2, 0], seed=12)
    xt = base.input.transpose(0, 1).contiguous().transpose(0, 1)  # [T,B,I], strides of [B,T,I]
    compare(F, base.replace(input=xt), ref_case=base)
    big = torch.randn(T + 3, 2 * B, I, dtype=torch.float64)
    big[2 : T + 2, ::2] = base.input
    sliced = big[2 : T + 2, ::2]
    compare(F, base.replace(input=sliced), ref_case=base)
    # batch_first input given as a transposed view of a time-major tensor
    bf = base.replace(batch_first=True, input=base.input.transpose(0, 1))
    compare(F, bf, ref_case=bf.replace(input=bf.input.contiguous()))


@pytest.mark.parametrize("cell", CELLS)
def test_expanded_stride_zero(F, cell):
    """Broadcast (stride 0) initial state and input, e.g. ``h0.expand(B, H)``."""
    T, B, I, H = 4, 5, 3, 6
    base = make_case(cell, T=T, B=B, I=I, H=H, lengths="random", seed=13)
    h_row = torch.randn(1, H, dtype=torch.float64)
    x_row = torch.randn(T, 1, I, dtype=torch.float64)
    exp = base.replace(h0=h_row.expand(B, H), input=x_row.expand(T, B, I))
    if cell == "lstm":
        exp.c0 = torch.randn(1, H, dtype=torch.float64).expand(B, H)
    compare(F, exp, ref_case=exp.map(lambda t: t.contiguous()))


# ----------------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, "random"], ids=["full", "lengths"])
def test_float32_against_float64_reference(F, cell, reverse, lengths):
    P = 5 if cell == "lstm" and reverse else None
    c64 = make_case(cell, T=9, B=6, I=7, H=37, P=P, lengths=lengths, reverse=reverse, seed=14)
    c32 = c64.to(torch.float32)
    compare(F, c32, ref_case=c32.to(torch.float64), **LOOSE)


@pytest.mark.parametrize("cell, H", [("gru", 100), ("lstm", 64)])
@pytest.mark.parametrize("I", [5, 28])
def test_float32_narrow_input_weight_gradient(F, cell, H, I):
    """float32 d(weight_ih) of a narrow input (I < 64) and at least 256 gate rows, which the
    CPU engine forms transposed (X^T dG, then added to d(weight_ih) transposed), over 2 or 3
    chunks of the backward (350 or 234 steps of 16 rows): the first chunk's product
    overwrites, the later ones add."""
    c64 = make_case(cell, T=700, B=16, I=I, H=H, lengths="random", seed=15, scale=0.3)
    c32 = c64.to(torch.float32)
    compare(F, c32, ref_case=c32.to(torch.float64), **LOOSE)


HALF_DTYPES = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("lengths", [None, "random"])
@pytest.mark.parametrize("cell", CELLS)
def test_16bit_against_float64_reference(F, cell, lengths, dtype):
    """bfloat16 and float16 storage, float32 accumulation: within a few of the dtype's ulps
    of the float64 result, relative to each tensor's largest entry."""
    P = 3 if cell == "lstm" else None
    assert_16bit_close(
        F, make_case(cell, T=8, B=5, I=6, H=13, P=P, lengths=lengths, seed=21), dtype
    )


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_16bit_batch_first_rows_in_place(F, cell, dtype):
    """16-bit storage, batch-first with 128 rows or more a step: the weight gradients' GEMMs
    read the input and h_prev where they lie, a step at a time."""
    assert_16bit_close(F, make_case(cell, T=6, B=130, I=6, H=13, batch_first=True, seed=22), dtype)


# Scaled to each tensor's largest entry: about 8 ulps of bfloat16 (2^-8) and of float16 (2^-11).
HALF_ATOL = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


def assert_16bit_close(F, c64, dtype):
    """F's outputs and gradients with c64's values rounded to dtype, against the float64
    reference on those same rounded values."""
    c16 = c64.to(dtype)
    ref_outs, ref_grads, up = run(reference, c16.to(torch.float64))
    outs, got_grads, _ = run(F, c16, upstream=up)
    atol = HALF_ATOL[dtype]
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert o.dtype == dtype, name
        assert_close(o.double(), r, name, c16, rtol=0, atol=atol, scaled=True)
    for name, r in ref_grads.items():
        g = got_grads[name]
        assert g.dtype == dtype, name
        assert_close(g.double(), r, "grad of " + name, c16, rtol=0, atol=atol, scaled=True)


@pytest.mark.parametrize("cell", CELLS)
def test_output_dtype(F, cell):
    for dtype in (torch.float32, torch.float64):
        case = make_case(cell, T=3, B=2, I=2, H=3, dtype=dtype)
        for o in call(F, case):
            assert o.dtype == dtype


# ----------------------------------------------------------------------------------
# autograd plumbing


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_not_modified(F, cell):
    case = make_case(
        cell, T=4, B=3, I=2, H=5, P=2 if cell == "lstm" else None, lengths="random", seed=15
    )
    before = {n: t.clone() for n, t in case.tensors().items()}
    lengths_before = case.lengths.clone()
    run(F, case)
    for n, t in case.tensors().items():
        assert torch.equal(t, before[n]), f"{n} was modified"
    assert torch.equal(case.lengths, lengths_before)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("which", ["input", "weight_hh", "h0", "bias_hh"])
def test_partial_requires_grad(F, cell, which):
    """Only one argument requires grad; its gradient equals the full computation's."""
    case = make_case(cell, T=4, B=3, I=2, H=5, lengths="random", seed=16)
    ref_outs, ref_grads, up = run(reference, case)
    t = {n: x.detach() for n, x in case.tensors().items()}
    t[which] = t[which].clone().requires_grad_(True)
    outs = call(F, case, t)
    loss = sum((o * u).sum() for o, u in zip(outs, up))
    (g,) = torch.autograd.grad(loss, [t[which]])
    torch.testing.assert_close(g, ref_grads[which], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_mode(F, cell):
    case = make_case(cell, T=4, B=3, I=2, H=5, lengths="random", seed=17)
    leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    with torch.no_grad():
        outs = call(F, case, leaves)
    for o in outs:
        assert not o.requires_grad
    compare(F, case, grads=False)
    with torch.inference_mode():
        outs2 = call(F, case)
    for a, b in zip(outs, outs2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_twice_and_repeatable(F, cell):
    """Two backward passes through one graph (retain_graph) give identical grads, and
    two calls give identical results."""
    case = make_case(cell, T=5, B=3, I=2, H=4, lengths="random", seed=18)
    leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    outs = call(F, case, leaves)
    loss = sum((o * o).sum() for o in outs)
    g1 = torch.autograd.grad(loss, list(leaves.values()), retain_graph=True)
    g2 = torch.autograd.grad(loss, list(leaves.values()))
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    outs2 = call(F, case, leaves)
    for a, b in zip(outs, outs2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_only_h_n_used(F, cell):
    """Gradient through h_n alone (output unused) and through output alone."""
    case = make_case(cell, T=5, B=3, I=3, H=4, lengths="random", reverse=True, seed=19)
    ref_outs = call(reference, case)
    for k in range(len(ref_outs)):
        up = [torch.zeros_like(o) for o in ref_outs]
        up[k] = torch.randn_like(ref_outs[k])
        _, rg, _ = run(reference, case, upstream=up)
        leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
        outs = call(F, case, leaves)
        loss = (outs[k] * up[k]).sum()  # the other outputs do not enter the graph at all
        gg = torch.autograd.grad(
            loss, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
        for n, g in zip(leaves, gg):
            torch.testing.assert_close(
                g, rg[n], rtol=1e-9, atol=1e-10, msg=lambda m: f"grad of {n} via output {k}\n{m}"
            )


# ----------------------------------------------------------------------------------
# the hand-written loops' use (NNDL, d2l)


def _seed_srn(x, W, U, b, residual=False):
    """NNDL SRN: x [B, T, I], W [I, H], U [H, H], b [H]; returns the last h."""
    B, T, _ = x.shape
    h = torch.zeros(B, W.shape[1], dtype=x.dtype)
    for t in range(T):
        a = torch.tanh(x[:, t, :] @ W + h @ U + b)
        h = h + a if residual else a
    return h


def test_seed_srn_hand_numbers(F):
    # the NNDL notebook's example: W, U, b and inputs given literally
    W = torch.tensor([[0.1, 0.2], [0.1, 0.2]], dtype=torch.float64)
    U = torch.tensor([[0.0, 0.1], [0.1, 0.0]], dtype=torch.float64)
    b = torch.tensor([0.1, 0.1], dtype=torch.float64)
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)  # [B=1, T=2, I=2]
    h1 = [math.tanh(0.2), math.tanh(0.3)]
    h2 = [math.tanh(0.2 + 0.1 * h1[1] + 0.1), math.tanh(0.4 + 0.1 * h1[0] + 0.1)]
    out, hn = F.rnn(x, W.t(), U.t(), b, None, batch_first=True)
    torch.testing.assert_close(hn, torch.tensor([h2], dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(out[0, 0], torch.tensor(h1, dtype=torch.float64), rtol=1e-12, atol=0)
    # residual variant
    r1 = h1
    r2 = [r1[0] + math.tanh(0.2 + 0.1 * r1[1] + 0.1), r1[1] + math.tanh(0.4 + 0.1 * r1[0] + 0.1)]
    _, hn = F.rnn(x, W.t(), U.t(), b, None, residual=True, batch_first=True)
    torch.testing.assert_close(hn, torch.tensor([r2], dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_seed_srn_loop(F, residual, dtype):
    """h = tanh(x @ W + h @ U + b) looped over time == rnn(x, W.t(), U.t(), b, None).
    The loop runs in float64 on the same values; float32 is checked with a tolerance
    relative to the largest magnitude (residual gradients reach the hundreds)."""
    B, T, I, H = 8, 20, 32, 32
    g = torch.Generator().manual_seed(20)
    x = torch.randn(B, T, I, dtype=dtype, generator=g)
    W = torch.randn(I, H, dtype=dtype, generator=g) * 0.15
    U = torch.randn(H, H, dtype=dtype, generator=g) * 0.15
    b = torch.randn(H, dtype=dtype, generator=g) * 0.1
    up = torch.randn(B, H, dtype=torch.float64, generator=g)
    leaves = [t.requires_grad_() for t in (x, W, U, b)]
    leaves64 = [t.detach().double().requires_grad_() for t in (x, W, U, b)]
    expected = _seed_srn(*leaves64, residual=residual)
    _, got = F.rnn(x, W.t(), U.t(), b, None, residual=residual, batch_first=True)
    assert got.dtype == dtype
    rtol, atol = (1e-9, 1e-10) if dtype == torch.float64 else (1e-4, 1e-5)
    assert_close(got, expected, "h_n", "seed SRN", rtol, atol, scaled=True)
    # time-major too
    _, got_tm = F.rnn(x.transpose(0, 1), W.t(), U.t(), b, None, residual=residual)
    assert_close(got_tm, expected, "h_n (time-major)", "seed SRN", rtol, atol, scaled=True)
    ge = torch.autograd.grad((expected * up).sum(), leaves64)
    gg = torch.autograd.grad((got * up.to(dtype)).sum(), leaves)
    for n, a, e in zip(["x", "W", "U", "b"], gg, ge):
        assert_close(a, e, "grad of " + n, "seed SRN", rtol, atol, scaled=True)


def test_seed_d2l_gru(F):
    """d2l GRU (reset before the matmul) with per-gate [I,H] / [H,H] weights:
    Z = σ(X Wxz + H Whz + bz), R = σ(X Wxr + H Whr + br),
    H~ = tanh(X Wxh + (R*H) Whh + bh), H = Z*H + (1-Z)*H~."""
    T, B, I, H = 7, 4, 28, 16
    g = torch.Generator().manual_seed(21)
    p = lambda *s: (torch.randn(*s, dtype=torch.float64, generator=g) * 0.3).requires_grad_()  # noqa: E731
    Wxz, Whz, bz = p(I, H), p(H, H), p(H)
    Wxr, Whr, br = p(I, H), p(H, H), p(H)
    Wxh, Whh, bh = p(I, H), p(H, H), p(H)
    X = torch.randn(T, B, I, dtype=torch.float64, generator=g).requires_grad_()
    H0 = torch.randn(B, H, dtype=torch.float64, generator=g).requires_grad_()
    Hs, outs = H0, []
    for t in range(T):
        Z = torch.sigmoid(X[t] @ Wxz + Hs @ Whz + bz)
        R = torch.sigmoid(X[t] @ Wxr + Hs @ Whr + br)
        Ht = torch.tanh(X[t] @ Wxh + (R * Hs) @ Whh + bh)
        Hs = Z * Hs + (1 - Z) * Ht
        outs.append(Hs)
    expected = torch.stack(outs)
    # torch.nn gate order r, z, n
    w_ih = torch.cat([Wxr, Wxz, Wxh], 1).t()
    w_hh = torch.cat([Whr, Whz, Whh], 1).t()
    b_ih = torch.cat([br, bz, bh])
    got, hn = F.gru(X, w_ih, w_hh, b_ih, None, H0, reset_after=False)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(hn, expected[-1], rtol=1e-9, atol=1e-10)
    leaves = [X, H0, Wxz, Whz, bz, Wxr, Whr, br, Wxh, Whh, bh]
    up = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    ge = torch.autograd.grad((expected * up).sum(), leaves)
    gg = torch.autograd.grad((got * up).sum(), leaves)
    for k, (a, e) in enumerate(zip(gg, ge)):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10, msg=lambda m: f"grad {k}\n{m}")


@pytest.mark.parametrize("B, T", [(384, 16), (16, 120)])
@pytest.mark.parametrize("batch_first, reverse", [(False, True), (True, False), (True, True)])
def test_input_projection_in_chunks(F, batch_first, reverse, B, T):
    """A layer large enough that the input projection is formed a few steps at a time
    (about 8 MiB of B * 3H floats: 3 steps to a chunk at B=384, so 6 chunks; at B=16, 85,
    which 120 steps take as 2 chunks of 60): the chunks join up exactly, with lengths.
    Batch-first, B=384 projects each step of a chunk from the input in place and B=16 the
    chunk from a time-major copy."""
    c64 = make_case(
        "gru",
        T=T,
        B=B,
        I=3,
        H=512,
        lengths="random",
        reverse=reverse,
        batch_first=batch_first,
        seed=31,
    )
    compare(F, c64.to(torch.float32), ref_case=c64, **LOOSE)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("batch_first, reverse", [(False, False), (True, True)])
def test_backward_in_chunks(F, cell, batch_first, reverse):
    """A layer long enough that backward runs its reverse loop over chunks of steps (about
    2^22 values of per-step buffers to a chunk, at least 1024 rows: here 3 or 4 chunks of 134
    or 100 steps), adding each chunk's share of the weight and input gradients as it goes: the
    shares join up exactly, with lengths, both layouts and directions, and a projection."""
    P = 40 if cell == "lstm" else None
    case = make_case(
        cell,
        T=400,
        B=64,
        I=4,
        H=64,
        P=P,
        lengths="random",
        reverse=reverse,
        batch_first=batch_first,
        seed=7,
    )
    compare(F, case)


@pytest.mark.parametrize("cell", ["rnn_tanh_residual", "gru", "gru_reset_before", "lstm"])
@pytest.mark.parametrize(
    "batch_first, reverse, lengths",
    [
        (False, False, None),
        (False, True, None),
        (True, False, None),
        (True, True, None),
        (False, False, "random"),
        (True, False, "random"),
    ],
)
def test_weight_gradients_from_rows_in_place(F, cell, batch_first, reverse, lengths):
    """Backward over 2 or 3 chunks (67 to 100 steps), its weight-gradient GEMMs
    reading h_prev from the output and the input where they lie: time-major in one GEMM per
    chunk (h0 apart), batch-first at 128 rows or more a step in one GEMM per step. With
    lengths, h_prev is still read in place in the forward direction; the input is copied
    with its padding zeroed."""
    P = 24 if cell == "lstm" else None
    case = make_case(
        cell,
        T=200,
        B=136,
        I=5,
        H=40,
        P=P,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=8,
        scale=0.3,
    )
    compare(F, case)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru_reset_before", "lstm"])
@pytest.mark.parametrize("reverse, lengths", [(False, None), (True, None), (True, "random")])
def test_batch_first_rows_through_chunk_buffers(F, cell, reverse, lengths):
    """Batch-first with fewer than 128 rows a step, over 2 chunks of 90 steps: the
    input's rows are copied into the chunk's time-major matrix for d(weight_ih), and the
    input gradient is formed there and copied out to its batch-first rows, both copies split
    over the threads (1.5M elements a chunk)."""
    P = 5 if cell == "lstm" else None
    case = make_case(
        cell,
        T=180,
        B=24,
        I=700,
        H=8,
        P=P,
        lengths=lengths,
        reverse=reverse,
        batch_first=True,
        seed=10,
        scale=0.3,
    )
    compare(F, case)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("broadcast", ["scalar", "per_step", "per_sequence", "per_unit"])
def test_broadcast_output_gradient(cell, batch_first, broadcast):
    """A gradient reaching the output broadcast (from output.sum(), or a sum over some of its
    dimensions) is read in place, with only its distinct values materialised: the backward
    op gives exactly what it gives for a dense copy of it (with the LSTM projection too)."""
    from test_ops import backward_args, backward_op

    T, B, P = 6, 5, 3
    case = make_case(
        cell, T=T, B=B, I=3, H=4, P=P if cell == "lstm" else None, batch_first=batch_first, seed=9
    )
    args, values = backward_args(case)
    shape = values["output"].shape
    t_dim, b_dim = (1, 0) if batch_first else (0, 1)
    distinct_shape = [1, 1, 1]
    if broadcast == "per_step":
        distinct_shape[t_dim] = T
    elif broadcast == "per_sequence":
        distinct_shape[b_dim] = B
    elif broadcast == "per_unit":
        distinct_shape[2] = shape[2]
    grad = torch.randn(distinct_shape, dtype=torch.float64).expand(shape)
    position = [a.name for a in backward_op()._schema.arguments].index("grad_output")
    with_broadcast = list(args)
    with_broadcast[position] = grad
    dense = list(args)
    dense[position] = grad.contiguous()
    for got, expected in zip(backward_op()(*with_broadcast), backward_op()(*dense)):
        assert torch.equal(got, expected)
