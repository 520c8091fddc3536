"""rnnfast.scan's C++ loop engine (csrc/scan/) against its Python runner (float64: outputs,
final carry and every gradient), forward and backward, on every cell of tests/scan_cells.py,
with reverse and lengths; the opcode table's coverage; and the silent fallback to the Python
runner."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import engine, hoisted_split, split_mode  # noqa: E402, F401

import rnnfast  # noqa: E402
from rnnfast._scan import cache, lower, lower_vjp, opcodes  # noqa: E402
from rnnfast._scan.engine import (  # noqa: E402
    engine_backward_runs,
    engine_runs,
    engine_slices,
)

import scan_cells  # noqa: E402

DT = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-10)
CELLS = scan_cells.COURSE + scan_cells.LITERATURE + scan_cells.TORCH_NN + scan_cells.RNNFAST_CELLS


def outputs_and_grads(step, init, xs, params, **kw):
    wrt = [t for t in pytree.tree_leaves((init, xs)) if t.requires_grad] + list(params)
    outs = [
        o
        for o in pytree.tree_leaves(rnnfast.scan(step, init, xs, **kw))
        if isinstance(o, torch.Tensor)
    ]
    gen = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, wrt, allow_unused=True)


def assert_engine_matches_runner(step, init, xs, params, backward=True, **kw):
    with engine(False):
        want = outputs_and_grads(step, init, xs, params, **kw)
    runs, backward_runs = engine_runs(), engine_backward_runs()
    with engine(True):
        got = outputs_and_grads(step, init, xs, params, **kw)
    assert engine_runs() > runs, "the engine did not run"
    assert (engine_backward_runs() > backward_runs) == backward, "the engine's backward"
    for a, b in zip(got[0] + list(got[1]), want[0] + list(want[1])):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("make", CELLS, ids=lambda m: m.__name__[5:])
@pytest.mark.parametrize("B,T", [(1, 1), (3, 5)])
@pytest.mark.parametrize("H", [6, 16])
@pytest.mark.usefixtures("split_mode")
def test_engine_matches_python_runner(make, B, T, H):
    """H 16: rows of whole SIMD vectors (in float64 up to AVX-512), which the pointwise passes
    run without tails, contiguous rows as one run; H 6: a tail in every row."""
    torch.manual_seed(B * 10 + T)
    step, init, xs, params = make(5, H, DT)
    assert_engine_matches_runner(step, init(B), xs(T, B), params)


@pytest.mark.parametrize(
    "make",
    [
        scan_cells.make_peephole_lstm,
        scan_cells.make_slstm,
        scan_cells.make_layernorm_gru,
        scan_cells.make_numpy_lstm,
        scan_cells.make_projected_lstm,
    ],
    ids=lambda m: m.__name__[5:],
)
def test_engine_reverse_and_lengths(make):
    torch.manual_seed(1)
    step, init, xs, params = make(4, 5, DT)
    lengths = torch.tensor([5, 0, 3, 1])
    for reverse in (False, True):
        assert_engine_matches_runner(
            step,
            init(4),
            xs(5, 4),
            params,
            reverse=reverse,
            lengths=lengths,
        )


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("make", [scan_cells.make_numpy_lstm, scan_cells.make_layernorm_lstm])
def test_engine_splits_a_large_batch_across_threads(make):
    """Rows depend on no other row: a large call runs slices of the batch on their own threads,
    forward and backward (each slice summing its own weight gradients), with reverse and
    lengths, and gives the Python runner's results."""
    torch.manual_seed(8)
    step, init, xs, params = make(32, 32, DT)
    B, T = 16, 40
    lengths = torch.randint(0, T + 1, (B,))
    for kw in ({}, {"reverse": True, "lengths": lengths}):
        with engine(True):
            with torch.no_grad():
                rnnfast.scan(step, init(B), xs(T, B), **kw)
            assert engine_slices() == 2, "the forward did not split the batch"
        assert_engine_matches_runner(step, init(B), xs(T, B), params, **kw)
        assert engine_slices() == 2, "the backward did not split the batch"


def test_engine_without_grad_float32():
    torch.manual_seed(2)
    step, init, xs, params = scan_cells.make_peephole_lstm(4, 8, torch.float32)
    h0, x = init(3), xs(6, 3)
    with torch.no_grad(), engine(False):
        want = rnnfast.scan(step, h0, x)
    runs = engine_runs()
    with torch.no_grad():
        got = rnnfast.scan(step, h0, x)
    assert engine_runs() == runs + 1
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


H = 6
W_X, W_H = torch.randn(3, 4 * H, dtype=DT) * 0.5, torch.randn(H, 4 * H, dtype=DT) * 0.5
BIAS, GAIN = torch.randn(4 * H, dtype=DT) * 0.5, torch.rand(H, dtype=DT) + 0.5
W_E = torch.randn(H - H // 2, H - H // 2, dtype=DT) * 0.5


def every_opcode_step(h, x):
    """Touches every opcode of the engine's table (lower.py)."""
    z = torch.addmm(BIAS, h, W_H) + x @ W_X
    a, b, c, d = torch.split(z, H, dim=-1)
    a = F.layer_norm(a, (H,), GAIN, None) - a.mean(-1, keepdim=True) / (1 + a.pow(2).sum(-1, True))
    b = torch.maximum(torch.sigmoid(b), torch.tanh(c)) * torch.minimum(b.neg(), F.relu(d))
    c = torch.exp(c.clamp(-3, 3)) / torch.expm1(c.abs() + 0.5) + torch.log(c.abs() + 1)
    d = torch.log1p(d.abs()) * torch.sqrt(d.abs() + 1) + torch.rsqrt(d.abs() + 1).reciprocal()
    e = (
        F.logsigmoid(a)
        + F.softplus(b)
        + F.hardtanh(c)
        + d.clamp_min(-1).clamp_max(1)
        + (a.abs() + 1).pow(1.5)
        + a.clone()
    )
    m = torch.logical_or(torch.logical_and(a >= b, c <= d), torch.logical_not(a == c))
    e = (
        e
        + torch.where(m, a, b)
        + (a != d).to(a.dtype)
        + (b > c)
        + torch.sign(b)
        + a.masked_fill(b < c, 0.5)
        + torch.zeros_like(a)
        + torch.erf(d) * (c - c.amax(-1, keepdim=True))
        + torch.sin(a) * torch.cos(b)
        + torch.cumsum(a.flip(-1), -1) * 0.1
        + b.detach()
    )
    t, u = torch.tanh(a) * 0.9, torch.tanh(b) * 0.9  # in (-1, 1)
    e = (
        e
        + torch.floor(a) * torch.ceil(b)
        + torch.round(c)
        - torch.trunc(d)
        + torch.exp2(t)
        + torch.log2(u + 1) * torch.log10(t + 1)
        + torch.atan(c)
        + torch.sinh(t) * torch.cosh(u)
        + torch.tan(t)
        + torch.asin(t) * torch.acos(u)
        + torch.fmod(a, 0.7)
        + torch.remainder(b, -0.9)
        + torch.div(c, 1.3, rounding_mode="trunc")
        + torch.div(d, 0.6, rounding_mode="floor")
    )
    h = torch.cat([e[:, : H // 2], torch.tanh(e[:, H // 2 :] @ W_E)], dim=-1)
    return h, h * 1


def codes_opcodes(codes):
    """The opcodes of a lowered program (csrc/scan/scan_program.h's layout)."""
    return set(codes_opcode_list(codes))


def codes_opcode_list(codes):
    n_slots, counts, n_nodes, n_acc = codes[2], codes[3:8], codes[8], codes[9]
    pos, found = 10 + n_slots + sum(counts) + 2 * n_acc, []
    for _ in range(n_nodes):
        found.append(codes[pos])
        pos += 1
        for _ in range(3):  # outs, ins, ints
            pos += 1 + codes[pos]
    assert pos == len(codes)
    return found


def test_every_opcode_lowers_and_matches():
    torch.manual_seed(3)
    h0 = torch.randn(4, H, dtype=DT, requires_grad=True)
    xs = torch.randn(5, 4, 3, dtype=DT, requires_grad=True)
    assert_engine_matches_runner(every_opcode_step, h0, xs, [])
    plan = list(cache._entries.values())[-1]
    codes, _ = lower.lower_loop(plan.split)
    table = {
        opcodes.MM,
        opcodes.ADDMM,
        opcodes.CLAMP,
        opcodes.POW,
        opcodes.SOFTPLUS,
        opcodes.SPLIT,
        opcodes.CAT,
        opcodes.ROW_SUM,
        opcodes.ROW_MEAN,
        opcodes.ROW_MAX,
        opcodes.ROW_CUMSUM,
        opcodes.ROW_FLIP,
        opcodes.LAYER_NORM,
        opcodes.WHERE,
        opcodes.MASKED_FILL,
        opcodes.LOGICAL_AND,
        opcodes.LOGICAL_OR,
        opcodes.SIGN,
        *opcodes.COMPARE.values(),
        *opcodes.BINARY.values(),
        *opcodes.UNARY.values(),
        *opcodes.DIV_ROUNDING.values(),
    }
    assert codes_opcodes(codes) == table


def test_unsupported_op_falls_back_silently():
    W = torch.randn(3, 3, dtype=DT, requires_grad=True)

    def step(h, x):
        h = torch.tanh(x + h @ W) - F.hardsigmoid(h)  # no opcode
        return h, None

    h0, xs = torch.randn(2, 3, dtype=DT), torch.randn(4, 2, 3, dtype=DT)
    runs = engine_runs()
    final, _ = rnnfast.scan(step, h0, xs)
    assert engine_runs() == runs
    want = h0
    for t in range(4):
        want, _ = step(want, xs[t])
    torch.testing.assert_close(final, want, **TIGHT)


@pytest.mark.usefixtures("split_mode")
def test_backward_opcodes_are_covered():
    """The backward opcodes (lower_vjp.py) all appear in the cells' backward programs that
    test_engine_matches_python_runner checks."""
    found = set()
    for make in (
        scan_cells.make_peephole_lstm,
        scan_cells.make_indrnn,
        scan_cells.make_mlstm,
        scan_cells.make_layernorm_lstm,
        scan_cells.make_reset_gru,
        scan_cells.make_slstm,
        scan_cells.make_rms_cell,
        scan_cells.make_hard_sigmoid_cell,
        make_hardtanh_rnn,
    ):
        torch.manual_seed(4)
        step, init, xs, params = make(3, 4, DT)
        assert_engine_matches_runner(step, init(2), xs(3, 2), params)
        plan = list(cache._entries.values())[-1]
        engine_of = plan.split_for(2 * 3)[1].engine
        for program, _ in engine_of.backward_programs.values():
            found |= codes_opcodes(program.codes)
    assert {
        opcodes.TANH_BACKWARD,
        opcodes.SIGMOID_BACKWARD,
        opcodes.THRESHOLD_BACKWARD,
        opcodes.HARDTANH_BACKWARD,
        opcodes.SLICE_BACKWARD,
        opcodes.LAYER_NORM_BACKWARD,
        opcodes.ACCUMULATE_PRODUCT,
        opcodes.ACCUMULATE_COLUMN_SUM,
        opcodes.SOFTPLUS_BACKWARD,
        opcodes.LOG_SIGMOID_BACKWARD,
        opcodes.WHERE,
    } <= found


def make_hardtanh_rnn(I, H, dtype):  # noqa: E741 (I, H as in scan_cells)
    """h' = hardtanh(W x + U h), for the backward of hardtanh."""
    W = (torch.randn(I, H, dtype=dtype) * 0.5).requires_grad_()
    U = (torch.randn(H, H, dtype=dtype) * 0.5).requires_grad_()

    def step(h, x):
        h = F.hardtanh(x @ W + h @ U)
        return h, h * 1

    return (
        step,
        lambda B: torch.randn(B, H, dtype=dtype, requires_grad=True),
        lambda T, B: torch.randn(T, B, I, dtype=dtype, requires_grad=True),
        [W, U],
    )


@pytest.mark.parametrize("grad", [False, True])
def test_vmap_keeps_the_python_runner(grad):
    """functorch's wrapped tensors have no memory the engine could read, also where the cache
    entry (the same key: a wrapped tensor shows its unbatched shape) first ran on the engine."""
    W = torch.randn(3, 3, dtype=DT, requires_grad=grad)

    def step(h, x):
        h = torch.tanh(x + h @ W)
        return h, h.clone()

    h0, xs = torch.randn(5, 2, 3, dtype=DT), torch.randn(4, 2, 3, dtype=DT)
    runs = engine_runs()
    want = torch.stack([rnnfast.scan(step, h, xs)[0] for h in h0])
    assert engine_runs() == runs + 5
    got = torch.vmap(lambda h: rnnfast.scan(step, h, xs)[0])(h0)
    assert engine_runs() == runs + 5
    torch.testing.assert_close(got, want, **TIGHT)


def test_a_torch_function_mode_keeps_the_python_runner():
    """Under a TorchFunctionMode the step's ops go through the mode, as in the loop: the engine
    does not run them, although the same call ran on it before."""
    seen = []

    class Recording(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(4)
    step, init, xs, _ = scan_cells.make_peephole_lstm(4, 8, DT)
    h0, x = init(3), xs(6, 3)
    runs = engine_runs()
    want = rnnfast.scan(step, h0, x)
    assert engine_runs() == runs + 1
    with Recording():
        got = rnnfast.scan(step, h0, x)
    assert engine_runs() == runs + 1 and seen
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, **TIGHT)


def test_cpu_autocast_keeps_the_python_runner():
    """Under autocast the step's products run in bfloat16, which the engine does not do."""
    torch.manual_seed(5)
    step, init, xs, _ = scan_cells.make_peephole_lstm(4, 8, torch.float32)
    h0, x = init(3), xs(6, 3)
    runs = engine_runs()
    with torch.no_grad():
        rnnfast.scan(step, h0, x)  # the same entry, run on the engine outside autocast
    assert engine_runs() == runs + 1
    runs = engine_runs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = rnnfast.scan(step, h0, x)
        with engine(False):
            want = rnnfast.scan(step, h0, x)
    assert engine_runs() == runs
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)


@pytest.mark.usefixtures("hoisted_split")
def test_engine_rejects_bad_programs_and_inputs():
    from rnnfast import _C

    with pytest.raises(RuntimeError, match="codes end early"):
        _C.scan_register_program([1, 0, 2], [])
    with pytest.raises(RuntimeError, match="unknown version"):
        _C.scan_register_program([7], [])
    torch.manual_seed(6)
    step, init, xs, params = scan_cells.make_indrnn(3, 4, DT)
    with torch.no_grad():
        rnnfast.scan(step, init(2), xs(3, 2))
    program = list(cache._entries.values())[-1].loop.engine.program
    h, seq = torch.zeros(2, 4, dtype=DT), torch.zeros(3, 2, 4, dtype=DT)
    weights = [p.detach() for p in params[1:]]

    def run(carry, seqs):
        return _C.scan_run(program, carry, seqs, weights, None, 3, False, False, False)

    with pytest.raises(ValueError, match=r"carry 0 must be a CPU Double tensor of shape \[2, 4\]"):
        run([h.float()], [seq])
    with pytest.raises(ValueError, match="expected 1 carries, 1 sequences and 2 weights"):
        run([h], [])
    with pytest.raises(ValueError, match="is not a registered scan program"):
        _C.scan_run(10**9, [h], [seq], weights, None, 3, False, False, False)
    final, _, _, _ = run([h], [seq])
    assert final[0].shape == (2, 4)


@pytest.mark.parametrize(
    "make",
    [scan_cells.make_nndl_srn, scan_cells.make_peephole_lstm, scan_cells.make_mlstm],
    ids=lambda m: m.__name__[5:],
)
@pytest.mark.usefixtures("hoisted_split")
def test_backward_reads_the_forward_products(make):
    """Under autograd the forward keeps per step what the backward would compute again (its
    products, its next carries); the backward reads them and multiplies none of the forward's
    products again, with the same gradients."""
    torch.manual_seed(7)
    step, init, xs, params = make(3, 4, DT)
    assert_engine_matches_runner(step, init(2), xs(3, 2), params)
    loop_engine = list(cache._entries.values())[-1].loop.engine
    kept_program, _ = loop_engine.backward_programs[True]
    assert kept_program.kept_ids
    step_of = list(cache._entries.values())[-1].loop
    plain = lower_vjp.lower_vjp(step_of.vjp_program, step_of.n_carry, step_of.seq_differentiable())
    products = [
        sum(codes_opcode_list(p.codes).count(code) for code in (opcodes.MM, opcodes.ADDMM))
        for p in (plain, kept_program)
    ]
    forward_products = sum(n.op.split(".")[1] in ("mm", "addmm") for n in step_of.split.loop_nodes)
    assert products[1] == products[0] - forward_products


@pytest.mark.usefixtures("split_mode")
def test_where_with_a_python_scalar_runs_the_engine_backward():
    """torch.where(c, a, 0.1) makes its scalar a 0-d tensor: the loop makes it (an immediate),
    rather than read it as a weight whose gradient the backward would need."""
    torch.manual_seed(3)
    W, U = torch.randn(4, 6, dtype=DT), torch.randn(6, 6, dtype=DT, requires_grad=True)

    def step(h, x):
        a = torch.tanh(x @ W + h @ U)
        return torch.where(a > 0, a, 0.1), torch.where(a < 0.5, 0.0, a)

    init = torch.randn(3, 6, dtype=DT, requires_grad=True)
    assert_engine_matches_runner(step, init, torch.randn(5, 3, 4, dtype=DT), [U])
