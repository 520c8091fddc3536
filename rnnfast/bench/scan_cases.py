"""Benchmark cases of ``rnnfast.scan``, shared by ``benchmarks/test_bench_scan.py`` and the
checks of ``python -m rnnfast.bench``.

A case is a hand-written cell (:mod:`rnnfast.bench.scan_steps`), a shape of
``rnnfast.bench.cases.SHAPES`` and a pass (fwd, fwdbwd), run through these implementations
of the same float32 recurrence, all from one set of weights:

=========  ========================================================================
``scan``   ``rnnfast.scan(step, h0, x)``
``loop``   the same step in a Python for-loop, the outputs stacked with torch.stack
``fused``  where rnnfast has the cell: its fused op (``rnnfast.functional``) on the weights
           converted once to torch.nn's layout (its own leaves, the same values)
=========  ========================================================================

The input is time-major ``[T, B, I]``; ``h0`` (and ``c0``) are random and require grad.
fwdbwd's loss is the sum of the outputs and of the final carry; the input, the initial
carry and every parameter require grad, and their ``.grad`` is reset before each pass.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .. import functional as RF
from . import scan_steps

CELLS = ("nndl_srn", "numpy_lstm", "d2l_gru", "peephole_lstm", "layernorm_lstm")
PASSES = ("fwd", "fwdbwd")
IMPLS = ("scan", "loop", "fused")
LABELS = {"scan": "rnnfast.scan", "loop": "Python loop", "fused": "rnnfast fused"}


@dataclass
class ScanCase:
    """One cell at one shape: its step, input and initial carry, and where rnnfast has the
    cell, ``fused()`` running the same math with ``fused_params``."""

    cell: str
    step: Callable
    x: Tensor  # [T, B, I]
    init: object  # h0 [B, H] or (h0, c0)
    params: list[Tensor]
    fused: Optional[Callable[[], tuple]] = None
    fused_params: tuple = ()


def impl_names(cell: str) -> list[str]:
    """The implementations of a cell: scan and loop, and fused where rnnfast has the cell."""
    return ["scan", "loop"] + (["fused"] if cell in _FUSED else [])


# --------------------------------------------------------------------------- cases
def make_case(cell: str, shape, device="cpu", seed: int = 0) -> ScanCase:
    """A cell's case at ``shape`` (anything with B, T, I, H), weights drawn from ``seed``."""
    if cell not in _MAKERS:
        raise ValueError(f"unknown scan benchmark cell {cell!r}, expected one of {CELLS}")
    gen = torch.Generator().manual_seed(seed)
    B, T, I, H = shape.B, shape.T, shape.I, shape.H

    def rand(*dims, scale=None, shift=0.0):
        scale = 1.0 / math.sqrt(H) if scale is None else scale  # keeps the gates unsaturated
        t = torch.randn(dims, generator=gen) * scale + shift
        return t.to(device).requires_grad_()

    step, params, carries = _MAKERS[cell](rand, I, H)
    x = rand(T, B, I, scale=1.0)
    init = tuple(rand(B, H, scale=0.5) for _ in range(carries))
    case = ScanCase(cell, step, x, init[0] if carries == 1 else init, params)
    if cell in _FUSED:
        case.fused_params, case.fused = _FUSED[cell](case, H)
    return case


def _nndl_srn(rand, I, H):
    W, U, b = rand(I, H), rand(H, H), rand(H)
    return scan_steps.nndl_srn_step(W, U, b), [W, U, b], 1


def _numpy_lstm(rand, I, H):
    W, b = rand(H + I, 4 * H), rand(4 * H)
    return scan_steps.numpy_lstm_step(W, b, H), [W, b], 2


def _d2l_gru(rand, I, H):
    Q = 3  # d2l's output layer, in the loop
    params = [rand(*s) for s in [(I, H), (H, H), (H,)] * 3 + [(H, Q), (Q,)]]
    return scan_steps.d2l_gru_step(params), params, 1


def _peephole_lstm(rand, I, H):
    params = [rand(4 * H, I), rand(4 * H, H), rand(4 * H), rand(H), rand(H), rand(H)]
    return scan_steps.peephole_lstm_step(*params), params, 2


def _layernorm_lstm(rand, I, H):
    W, U, b = rand(4 * H, I), rand(4 * H, H), rand(4 * H)
    g_x, g_h = rand(4 * H, scale=0.1, shift=1.0), rand(4 * H, scale=0.1, shift=1.0)
    g_c, b_c = rand(H, scale=0.1, shift=1.0), rand(H)
    step = scan_steps.layernorm_lstm_step(W, U, b, g_x, g_h, g_c, b_c, H)
    return step, [W, U, b, g_x, g_h, g_c, b_c], 2


_MAKERS = {
    "nndl_srn": _nndl_srn,
    "numpy_lstm": _numpy_lstm,
    "d2l_gru": _d2l_gru,
    "peephole_lstm": _peephole_lstm,
    "layernorm_lstm": _layernorm_lstm,
}


# --------------------------------------------------------------------------- fused twins
def _leaves(*tensors):
    return tuple(t.detach().contiguous().requires_grad_() for t in tensors)


def numpy_lstm_to_torch(W: Tensor, b: Tensor, H: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(weight_ih [4H, I], weight_hh [4H, H], bias [4H])`` in torch.nn's gate order i, f,
    g, o from the numpy-style ``W [H + I, 4H]`` (rows h then x, gates i, f, o, g) and b."""
    cols = _numpy_cols(H, W.device)
    W, b = W.detach()[:, cols], b.detach()[cols]
    return W[H:].t(), W[:H].t(), b


def _numpy_cols(H: int, device) -> Tensor:
    """Swaps the last two gates' columns: i, f, o, g <-> i, f, g, o (its own inverse)."""
    return torch.cat([torch.arange(g * H, (g + 1) * H, device=device) for g in (0, 1, 3, 2)])


def torch_lstm_to_numpy(weight_ih, weight_hh, bias_ih, bias_hh) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`numpy_lstm_to_torch`, the two biases summed: ``(W, b)`` leaves."""
    H = weight_hh.shape[1]
    cols = _numpy_cols(H, weight_ih.device)
    W = torch.cat([weight_hh.detach().t(), weight_ih.detach().t()])[:, cols]
    b = (bias_ih.detach() + bias_hh.detach())[cols]
    return _leaves(W, b)


def _fused_srn(case, H):
    W, U, b = case.params
    w_ih, w_hh, bias = _leaves(W.t(), U.t(), b)

    def fused():
        _, h_n = RF.rnn(case.x, w_ih, w_hh, bias, None, case.init)
        return h_n, None

    return (w_ih, w_hh, bias), fused


def _fused_lstm(case, H):
    w_ih, w_hh, bias = _leaves(*numpy_lstm_to_torch(*case.params, H))

    def fused():
        output, carry = RF.lstm(case.x, w_ih, w_hh, bias, None, case.init)
        return carry, output

    return (w_ih, w_hh, bias), fused


def _fused_gru(case, H):
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = case.params
    # torch.nn's gate order r, z, n; d2l's reset-before cell is reset_after=False.
    w_ih, w_hh = _leaves(torch.cat([W_xr, W_xz, W_xh], 1).t(), torch.cat([W_hr, W_hz, W_hh], 1).t())
    bias, w_hq, b_q = _leaves(torch.cat([b_r, b_z, b_h]), W_hq, b_q)

    def fused():
        output, h_n = RF.gru(case.x, w_ih, w_hh, bias, None, case.init, reset_after=False)
        return h_n, output @ w_hq + b_q  # d2l's output layer, once over all the steps

    return (w_ih, w_hh, bias, w_hq, b_q), fused


_FUSED = {"nndl_srn": _fused_srn, "numpy_lstm": _fused_lstm, "d2l_gru": _fused_gru}


# --------------------------------------------------------------------------- runs and passes
def forward(case: ScanCase, impl: str) -> Callable[[], tuple]:
    """``run() -> (final_carry, ys)`` of one implementation of the case."""
    if impl == "scan":
        from .. import scan  # loaded on first use (it imports torch._dynamo)

        return lambda: scan(case.step, case.init, case.x)
    if impl == "loop":
        return lambda: scan_steps.python_loop(case.step, case.init, case.x)
    if impl == "fused" and case.fused is not None:
        return case.fused
    raise ValueError(f"{case.cell} has no implementation {impl!r}; it has {impl_names(case.cell)}")


def compiled_loop(case: ScanCase) -> Callable[[], tuple]:
    """The loop through ``torch.compile`` (its first call compiles, for minutes at M)."""
    compiled = torch.compile(functools.partial(scan_steps.python_loop, case.step))
    return lambda: compiled(case.init, case.x)


def leaves(case: ScanCase, impl: str) -> list[Tensor]:
    """What fwdbwd differentiates: the input, the initial carry and the impl's parameters."""
    init = list(case.init) if isinstance(case.init, tuple) else [case.init]
    return [case.x, *init, *(case.fused_params if impl == "fused" else case.params)]


def loss(out) -> Tensor:
    """The sum of every tensor of ``(final_carry, ys)``."""
    flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, Tensor)]
    return sum(t.sum() for t in flat)


def make_pass(case: ScanCase, run: Callable[[], tuple], pass_: str, impl: str) -> Callable:
    """A zero-argument callable running one pass of ``run`` (an impl's or the compiled loop's,
    ``impl`` naming whose parameters it differentiates); on a GPU it waits for the pass's
    kernels, so that a timer around it times them."""
    if pass_ not in PASSES:
        raise ValueError(f"unknown pass {pass_!r}, expected one of {PASSES}")
    grads = leaves(case, impl)
    sync = torch.cuda.synchronize if case.x.is_cuda else (lambda: None)

    def one_pass():
        if pass_ == "fwd":
            result = run()
        else:
            for t in grads:
                t.grad = None
            result = loss(run()).backward()
        sync()
        return result

    return one_pass


def _named_results(case: ScanCase, impl: str) -> dict[str, Tensor]:
    """One forward and backward of ``impl``: its outputs, final carry and the gradients of
    the input and the initial carry, by name."""
    carries = len(case.init) if isinstance(case.init, tuple) else 1
    grads = leaves(case, impl)[: 1 + carries]
    for t in grads:
        t.grad = None
    carry, ys = forward(case, impl)()
    loss((carry, ys)).backward()
    carry = carry if isinstance(carry, tuple) else (carry,)
    out = {f"carry[{k}]": t.detach() for k, t in enumerate(carry)}
    if ys is not None:
        out["ys"] = ys.detach()
    out["x.grad"] = grads[0].grad.clone()
    out.update({f"init[{k}].grad": t.grad.clone() for k, t in enumerate(grads[1:])})
    return out


def check_agreement(case: ScanCase, tol: float = 1e-4) -> list[tuple]:
    """Every implementation's outputs, final carry and gradients of the input and the initial
    carry against the loop's: ``[(impl, "loop", what, max_abs_diff, ok)]``."""
    ref = _named_results(case, "loop")
    checks = []
    for impl in impl_names(case.cell):
        if impl == "loop":
            continue
        got = _named_results(case, impl)
        for what in ref.keys() | got.keys():
            a, b = got.get(what), ref.get(what)
            same = a is not None and b is not None and a.shape == b.shape
            diff = (a - b).abs().max().item() if same else math.inf
            checks.append((impl, "loop", what, diff, diff <= tol * max(1.0, b.abs().max().item())))
    return checks
