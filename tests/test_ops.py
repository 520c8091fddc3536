"""The registered ops: gradcheck, torch.library.opcheck and torch.compile."""

import pytest
import torch

import reference
from conftest import CELLS, assert_close, call, compile_and_compare, make_case, run

# ----------------------------------------------------------------------------------
# gradcheck (float64, finite differences) through the functional API


GRADCHECK_CASES = [
    # lengths, reverse, batch_first
    (None, False, False),
    ([3, 0, 4], True, False),
    ([2, 4, 1], False, True),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths,reverse,batch_first", GRADCHECK_CASES)
def test_gradcheck(F, cell, lengths, reverse, batch_first):
    P = 2 if cell == "lstm" and lengths is not None else None
    case = make_case(
        cell,
        T=4,
        B=3,
        I=2,
        H=3,
        P=P,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        seed=30,
        scale=1.5,
    )
    names = list(case.tensors())
    leaves = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]

    def fn(*ts):
        return tuple(call(F, case, dict(zip(names, ts))))

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn_tanh_residual", "gru_reset_before", "lstm"])
def test_gradcheck_noncontiguous_weights(F, cell):
    case = make_case(cell, T=3, B=2, I=3, H=2, lengths=[3, 1], reverse=True, seed=31)
    names = list(case.tensors())
    leaves = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]
    wi, wh = names.index("weight_ih"), names.index("weight_hh")
    leaves[wi] = case.weight_ih.t().contiguous().requires_grad_(True)  # stored as W [I, G*H]
    leaves[wh] = case.weight_hh.t().contiguous().requires_grad_(True)

    def fn(*ts):
        ts = list(ts)
        ts[wi], ts[wh] = ts[wi].t(), ts[wh].t()
        return tuple(call(F, case, dict(zip(names, ts))))

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------
# opcheck


def forward_op():
    import rnnfast  # noqa: F401

    return torch.ops.rnnfast.recurrent_forward.default


def backward_op():
    import rnnfast  # noqa: F401

    return torch.ops.rnnfast.recurrent_backward.default


def op_args(case, requires_grad):
    t = {n: x.detach().clone().requires_grad_(requires_grad) for n, x in case.tensors().items()}
    return (
        t["input"],
        t["weight_ih"],
        t["weight_hh"],
        t.get("bias_ih"),
        t.get("bias_hh"),
        t.get("h0"),
        t.get("c0"),
        t.get("weight_hr"),
        case.lengths,
        case.cell,
        case.reverse,
        case.batch_first,
    )


OP_VARIANTS = {
    # name: make_case kwargs
    "full": dict(lengths=[3, 0, 4], reverse=True, hx=True, bias=True),
    "minimal": dict(lengths=None, reverse=False, hx=False, bias=False, batch_first=True),
}


def op_case(cell, variant):
    kw = dict(OP_VARIANTS[variant])
    if cell == "lstm" and variant == "full":
        kw["P"] = 2
    return make_case(cell, T=4, B=3, I=2, H=3, seed=32, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(OP_VARIANTS))
def test_opcheck_forward(cell, variant):
    case = op_case(cell, variant)
    torch.library.opcheck(forward_op(), op_args(case, requires_grad=True))


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck_forward_no_grad_float32(cell):
    case = op_case(cell, "full").to(torch.float32)
    torch.library.opcheck(forward_op(), op_args(case, requires_grad=False))


def backward_args(case, mask=None):
    """Arguments of recurrent_backward, by schema name, from a real forward call."""
    fwd_args = op_args(case, requires_grad=False)
    with torch.no_grad():
        output, h_n, c_n, saved = forward_op()(*fwd_args)
    g = torch.Generator().manual_seed(33)
    is_lstm = case.cell == "lstm"
    if mask is None:
        mask = [
            True,
            True,
            True,
            case.bias_ih is not None,
            case.bias_hh is not None,
            case.h0 is not None,
            is_lstm and case.c0 is not None,
            case.weight_hr is not None,
        ]
    values = dict(
        grad_output=torch.randn(output.shape, dtype=output.dtype, generator=g),
        grad_h_n=torch.randn(h_n.shape, dtype=h_n.dtype, generator=g),
        grad_c_n=torch.randn(c_n.shape, dtype=c_n.dtype, generator=g) if is_lstm else None,
        input=fwd_args[0],
        weight_ih=fwd_args[1],
        weight_hh=fwd_args[2],
        bias_ih=fwd_args[3],
        bias_hh=fwd_args[4],
        hx=fwd_args[5],
        cx=fwd_args[6],
        weight_hr=fwd_args[7],
        lengths=case.lengths,
        cell=case.cell,
        reverse=case.reverse,
        batch_first=case.batch_first,
        output=output,
        h_n=h_n,
        c_n=c_n,
        saved=saved,
        output_mask=mask,
    )
    schema = backward_op()._schema
    args = []
    for a in schema.arguments:
        assert a.name in values, f"test does not know recurrent_backward argument {a.name!r}"
        args.append(values[a.name])
    return tuple(args), values


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", list(OP_VARIANTS))
def test_opcheck_backward(cell, variant):
    case = op_case(cell, variant)
    args, _ = backward_args(case)
    torch.library.opcheck(backward_op(), args)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_op_matches_reference(cell):
    """Calling recurrent_backward directly gives the reference gradients (and the
    gradients whose mask entry is false are not required to be anything)."""
    case = op_case(cell, "full")
    args, values = backward_args(case)
    grads = backward_op()(*args)
    up = [values["grad_output"], values["grad_h_n"]]
    if cell == "lstm":
        up.append(values["grad_c_n"])
    _, ref, _ = run(reference, case, upstream=up)
    names = ["input", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0", "c0", "weight_hr"]
    for name, m, g in zip(names, values["output_mask"], grads):
        if m:
            assert_close(g, ref[name], "grad of " + name, case, 1e-9, 1e-10)
    # only the input gradient requested
    mask = [True] + [False] * 7
    args, _ = backward_args(case, mask=mask)
    grads = backward_op()(*args)
    assert_close(grads[0], ref["input"], "grad of input (mask input only)", case, 1e-9, 1e-10)


@pytest.mark.parametrize("name", ["output", "saved"])
def test_backward_op_refuses_output_or_saved_of_another_dtype(name):
    """The kernels read output and saved as the input's element type: called directly with
    either in another dtype, the backward op says so instead of reading past its end."""
    case = op_case("gru", "full")
    args, values = backward_args(case)
    names = [a.name for a in backward_op()._schema.arguments]
    args = list(args)
    args[names.index(name)] = values[name].float()
    with pytest.raises(TypeError, match=f"rnnfast: {name} must have the dtype of input"):
        backward_op()(*args)


# ----------------------------------------------------------------------------------
# torch.compile


def _compile_case(cell):
    return make_case(
        cell,
        T=5,
        B=3,
        I=4,
        H=6,
        P=3 if cell == "lstm" else None,
        lengths=[5, 2, 0],
        reverse=True,
        seed=34,
        dtype=torch.float32,
    )


@pytest.mark.parametrize("cell", ["rnn_relu_residual", "gru_reset_before", "lstm"])
def test_compile_aot_eager(F, cell):
    compile_and_compare(F, _compile_case(cell), "aot_eager")


def test_compile_aot_eager_dynamic(F):
    """Dynamic shapes: one compiled graph serves several T and B (the fake kernel is
    shape-generic) and every call matches eager."""
    import torch._dynamo.testing

    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()

    def fn(x, w_ih, w_hh, b, h0, lengths):
        out, hn = F.gru(x, w_ih, w_hh, b, None, h0, reset_after=False, lengths=lengths)
        return out.sum(0) + hn

    compiled = torch.compile(fn, backend=cnt, fullgraph=True, dynamic=True)
    for T, B in [(5, 3), (7, 4), (3, 6)]:
        c = make_case(
            "gru_reset_before", T=T, B=B, I=4, H=6, lengths="random", seed=T, dtype=torch.float32
        )
        args = (c.input, c.weight_ih, c.weight_hh, c.bias_ih, c.h0, c.lengths)
        torch.testing.assert_close(compiled(*args), fn(*args), rtol=1e-5, atol=1e-6)
    assert cnt.frame_count == 1, f"recompiled: {cnt.frame_count} frames"


def test_compile_inductor(F):
    """One inductor case (C++ codegen on CPU) around the op: LSTM with projection,
    lengths and reverse, forward and backward."""
    compile_and_compare(F, _compile_case("lstm"), "inductor")
