"""Benchmark cases, shared by ``python -m rnnfast.bench`` and ``benchmarks/``.

A case is a cell (rnn, gru, lstm), a shape (S, LM, M, L) and a pass (fwd,
fwd_nograd, fwdbwd). Each case is run through several implementations of the same
single-layer, unidirectional float32 recurrence, built from one set of torch.nn
weights:

=============  =================================================================
``rnnfast``    ``rnnfast.functional.<cell>`` (GRU: ``reset_after=True``, as nn.GRU)
``rnnfast_rb`` GRU only: ``rnnfast.functional.gru(reset_after=False)``, the hand loop's cell
``torch_nn``   ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``
``seed``       the hand-written loops of :mod:`rnnfast.bench.baselines`
``scan``       ``rnnfast.scan`` of the loops' steps (:mod:`rnnfast.bench.scan_steps`): NNDL's SRN,
               d2l's reset-before GRU, and for the LSTM the numpy-style step
``gemm_floor`` (shapes in ``FLOOR_SHAPES``) the same GEMM work without anything else
=============  =================================================================

Every implementation sees the input in its loop's layout: batch-first ``[B,T,I]`` for
rnn (NNDL's SRN), time-major ``[T,B,I]`` for gru and lstm (d2l's loops).
The loss of fwdbwd is ``y.sum()`` with ``y`` the last hidden state for rnn (all the
SRN seed returns) and the output sequence for gru and lstm; the input and all
parameters require grad, and their ``.grad`` is reset before each step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .. import functional as RF
from . import baselines, scan_cases, scan_steps

CELLS = ("rnn", "gru", "lstm")
PASSES = ("fwd", "fwd_nograd", "fwdbwd")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
BATCH_FIRST = {"rnn": True, "gru": False, "lstm": False}
FLOOR_SHAPES = ("LM", "M", "L")  # shapes with a GEMM-floor entry (S is all overhead)
MEMORY_SHAPES = ("M", "L")  # shapes whose fwdbwd memory bench.py reports

LABELS = {
    "rnnfast": "rnnfast",
    "rnnfast_rb": "rnnfast rb",
    "torch_nn": "torch.nn",
    "seed": "hand loop",
    "scan": "scan",
    "gemm_floor": "GEMM floor",
}


@dataclass(frozen=True)
class Shape:
    name: str
    B: int  # batch
    T: int  # time steps
    I: int  # input size
    H: int  # hidden size
    warmup: int  # timing plan: untimed runs, then median of `repeat` timed runs
    repeat: int
    # bench.py times the implementations of a case in rounds, one run of each per round, so
    # that this VM's slower and faster spells (a factor of up to 1.5 over minutes) touch
    # them all alike. Not at S: there a run after another implementation's finds cold
    # caches and sleeping threads, and takes up to twice as long as back to back.
    interleaved: bool = True

    def __str__(self):
        return f"{self.name}(B={self.B},T={self.T},I={self.I},H={self.H})"


SHAPES = {
    s.name: s
    for s in (
        Shape("S", 8, 20, 32, 32, warmup=10, repeat=50, interleaved=False),  # NNDL's SRN test
        # One sequence at a time (inference, generation): a step mostly reads W_hh, whose
        # size against a core's cache decides its time (benchmarks/results, run 2026-11-25a).
        Shape("B1", 1, 50, 128, 256, warmup=5, repeat=20),
        Shape("LM", 32, 35, 28, 256, warmup=5, repeat=20),  # d2l's char LM
        Shape("M", 64, 100, 256, 256, warmup=2, repeat=7),
        Shape("L", 256, 100, 512, 512, warmup=1, repeat=3),
    )
}
QUICK_PLAN = {"warmup": 1, "repeat": 3}


@dataclass
class Impl:
    """One implementation of a case: ``forward(x)`` returns ``y``; the loss is ``y.sum()``."""

    name: str
    forward: Callable[[Tensor], Tensor]
    params: list[Tensor]
    math: str  # implementations with the same `math` must give the same y


def impl_names(cell: str, shape_name: str) -> list[str]:
    """Implementations benchmarked for a cell at a shape, ``gemm_floor`` included."""
    names = ["rnnfast"] + (["rnnfast_rb"] if cell == "gru" else []) + ["torch_nn", "seed", "scan"]
    return names + (["gemm_floor"] if shape_name in FLOOR_SHAPES else [])


def same_math_rnnfast(cell: str) -> dict[str, str]:
    """The rnnfast implementation computing the same math as each baseline."""
    return {"torch_nn": "rnnfast", "seed": "rnnfast_rb" if cell == "gru" else "rnnfast"}


# --------------------------------------------------------------------------- inputs
def make_input(cell: str, shape: Shape, device="cpu", seed: int = 1) -> Tensor:
    """Random input in the cell's layout, requiring grad."""
    dims = (shape.B, shape.T, shape.I) if BATCH_FIRST[cell] else (shape.T, shape.B, shape.I)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dims, generator=g).to(device).requires_grad_()


def make_torch_module(cell: str, shape: Shape, device="cpu", seed: int = 0) -> nn.Module:
    """The single-layer torch.nn module of the cell, with torch.nn's default init."""
    cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = cls(shape.I, shape.H, batch_first=BATCH_FIRST[cell])
    return module.to(device)


def torch_weights(module: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0


# --------------------------------------------------------------------------- implementations
def build_impls(cell: str, shape: Shape, device="cpu", names=None) -> dict[str, Impl]:
    """The implementations of a cell (all but ``gemm_floor``), sharing one set of
    weights; ``names`` chooses some of them."""
    names = [n for n in (names or impl_names(cell, shape.name)) if n != "gemm_floor"]
    module = make_torch_module(cell, shape, device)
    builders = {
        "rnnfast": lambda: _rnnfast_impl(cell, module, "rnnfast", reset_after=True),
        "rnnfast_rb": lambda: _rnnfast_impl(cell, module, "rnnfast_rb", reset_after=False),
        "torch_nn": lambda: _torch_nn_impl(cell, module),
        "seed": lambda: _seed_impl(cell, module, shape, device),
        "scan": lambda: _scan_impl(cell, module, shape, device),
    }
    return {name: builders[name]() for name in names}


def _math(cell: str, reset_after: bool = True) -> str:
    if cell == "gru":
        return "gru-reset-after" if reset_after else "gru-reset-before"
    return {"rnn": "srn-tanh", "lstm": "lstm"}[cell]


def _pick_y(cell: str, output, h_n) -> Tensor:
    return h_n if cell == "rnn" else output


def _rnnfast_impl(cell: str, module: nn.Module, name: str, reset_after: bool) -> Impl:

    op = getattr(RF, cell)
    weights = torch_weights(module)
    kwargs = {"batch_first": BATCH_FIRST[cell]}
    if cell == "gru":
        kwargs["reset_after"] = reset_after

    def forward(x):
        output, h_n = op(x, *weights, **kwargs)
        return _pick_y(cell, output, h_n)

    return Impl(name, forward, list(weights), _math(cell, reset_after))


def _torch_nn_impl(cell: str, module: nn.Module) -> Impl:
    def forward(x):
        output, h_n = module(x)
        return _pick_y(cell, output, h_n)

    return Impl("torch_nn", forward, list(module.parameters()), _math(cell))


def _seed_impl(cell: str, module: nn.Module, shape: Shape, device) -> Impl:
    weights = torch_weights(module)
    if cell == "rnn":
        srn = baselines.seed_srn_from_torch(*weights)
        return Impl("seed", srn, list(srn.parameters()), _math(cell))
    if cell == "gru":
        params = baselines.seed_gru_params_from_torch(*weights)
        state = baselines.init_seed_gru_state(shape.B, shape.H, device)
        loop, math_ = baselines.seed_gru, _math(cell, reset_after=False)
    else:
        params = baselines.seed_lstm_params_from_torch(*weights)
        state = baselines.init_seed_lstm_state(shape.B, shape.H, device)
        loop, math_ = baselines.seed_lstm, _math(cell)
    return Impl("seed", lambda x: loop(x, state, params)[0], params, math_)


def _scan_impl(cell: str, module: nn.Module, shape: Shape, device) -> Impl:
    """rnnfast.scan of the hand-written loop's step (the numpy-style step for the LSTM), from
    zeros as the loops start, on the input in the loop's layout."""
    from .. import scan

    weights = torch_weights(module)
    h0 = torch.zeros(shape.B, shape.H, device=device)
    if cell == "rnn":
        srn = baselines.seed_srn_from_torch(*weights)
        params = [srn.W, srn.U, srn.b]
        step = scan_steps.nndl_srn_step(*params)
        return Impl("scan", lambda x: scan(step, h0, x, dim=1)[0], params, _math(cell))
    if cell == "gru":
        params = baselines.seed_gru_params_from_torch(*weights)
        step = scan_steps.d2l_gru_step(params)
        return Impl("scan", lambda x: scan(step, h0, x)[1], params, _math(cell, False))
    params = list(scan_cases.torch_lstm_to_numpy(*weights))
    step, carry = scan_steps.numpy_lstm_step(*params, shape.H), (h0, torch.zeros_like(h0))
    return Impl("scan", lambda x: scan(step, carry, x)[1], params, _math(cell))


# --------------------------------------------------------------------------- steps
def _sync(device) -> Callable[[], None]:
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def make_step(impl: Impl, x: Tensor, pass_: str) -> Callable[[], None]:
    """A zero-argument callable running one pass of ``impl`` on ``x`` (synchronized on CUDA)."""
    sync = _sync(x.device)
    leaves = [x, *impl.params]
    if pass_ == "fwd":

        def step():
            impl.forward(x)
            sync()

    elif pass_ == "fwd_nograd":

        def step():
            with torch.no_grad():
                impl.forward(x)
            sync()

    elif pass_ == "fwdbwd":

        def step():
            for t in leaves:
                t.grad = None
            impl.forward(x).sum().backward()
            sync()

    else:
        raise ValueError(f"unknown pass {pass_!r}, expected one of {PASSES}")
    return step


def gemm_floor_step(
    cell: str, shape: Shape, pass_: str, device="cpu", dtype: torch.dtype = torch.float32
) -> Callable[[], None]:
    """The GEMMs of a case and nothing else, into preallocated buffers.

    Forward: the input projection ``[T*B,I] x [I,G*H]`` and T recurrent products
    ``[B,H] x [H,G*H]``. fwdbwd adds the backward GEMMs: ``dX = dG W_ih``,
    ``dW_ih = dG^T X``, ``dW_hh = dG^T H`` (over all steps at once) and T products
    ``dH_t = dG_t W_hh`` -- three times the forward's FLOPs (:func:`gemm_flops`).
    No pointwise math, no autograd, no allocation. On CUDA the GEMMs are captured once in a
    CUDA graph and the step replays it: a step is then the GPU's time for them, without the
    ~10 us of Python and launch per product that would otherwise make the floor of a small
    case a measure of the host (rnnfast's step loop launches from C++).
    """
    G, (B, T, I, H) = GATES[cell], (shape.B, shape.T, shape.I, shape.H)
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*dims):
        return torch.randn(dims, generator=gen, device=device, dtype=dtype)

    def empty(*dims):
        return torch.empty(dims, device=device, dtype=dtype)

    x, h_all, d_gates = rand(T * B, I), rand(T, B, H), rand(T, B, G * H)
    w_ih, w_hh = rand(G * H, I), rand(G * H, H)
    x_proj, rec = empty(T * B, G * H), empty(T, B, G * H)
    dx, dh = empty(T * B, I), empty(T, B, H)
    dw_ih, dw_hh = empty(G * H, I), empty(G * H, H)
    sync = _sync(device)

    def forward():
        torch.mm(x, w_ih.t(), out=x_proj)
        for t in range(T):
            torch.mm(h_all[t], w_hh.t(), out=rec[t])

    def backward():
        for t in reversed(range(T)):
            torch.mm(d_gates[t], w_hh, out=dh[t])
        dg = d_gates.view(T * B, G * H)
        torch.mm(dg, w_ih, out=dx)
        torch.mm(dg.t(), x, out=dw_ih)
        torch.mm(dg.t(), h_all.view(T * B, H), out=dw_hh)

    if pass_ not in PASSES:
        raise ValueError(f"unknown pass {pass_!r}, expected one of {PASSES}")
    with_backward = pass_ == "fwdbwd"

    def gemms():
        forward()
        if with_backward:
            backward()

    # What the GEMMs read and write, for the tests.
    tensors = dict(
        x=x,
        h_all=h_all,
        d_gates=d_gates,
        w_ih=w_ih,
        w_hh=w_hh,
        x_proj=x_proj,
        rec=rec,
        dx=dx,
        dh=dh,
        dw_ih=dw_ih,
        dw_hh=dw_hh,
    )
    if device.type != "cuda":

        def step():
            gemms()
            sync()

        step.tensors = tensors
        return step

    # Warm up on a side stream (cuBLAS picks its kernels and workspace), as capture requires.
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        gemms()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gemms()

    def replay():
        graph.replay()
        sync()

    replay.tensors = tensors
    return replay


def gemm_flops(cell: str, shape: Shape, pass_: str) -> int:
    """Floating-point operations of the GEMMs of a case (2 per multiply-add)."""
    G, (B, T, I, H) = GATES[cell], (shape.B, shape.T, shape.I, shape.H)
    forward = 2 * T * B * G * H * (I + H)
    return 3 * forward if pass_ == "fwdbwd" else forward


PEAK_SIZE = {"cpu": 2048, "cuda": 8192}  # n of the n x n x n product that measures the peak


def gemm_peak(device="cpu", runs: int = 5) -> dict:
    """The machine's float32 matrix-product rate: the best of ``runs`` products of two
    ``n x n`` matrices through ``torch.mm`` on every thread (on CUDA with torch's TF32
    setting, off unless the caller turned it on), after two untimed ones. No implementation
    of a case runs its GEMM FLOPs (:func:`gemm_flops`) much faster than at this rate, so
    ``flops / rate`` bounds the case's time from below, and ``torch.nn time / bound`` is the
    most any implementation can gain over torch.nn.

    Returns ``{"n", "gflops", "times_ms"}``."""
    dev = torch.device(device)
    n = PEAK_SIZE.get(dev.type, PEAK_SIZE["cpu"])
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dev) for _ in range(2))
    c = torch.empty(n, n, device=dev)
    sync = _sync(dev)
    times = []
    for i in range(2 + runs):
        sync()
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        sync()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return {"n": n, "gflops": 2 * n**3 / min(times) / 1e6, "times_ms": times}


def case_step(cell: str, shape: Shape, pass_: str, impl_name: str, impls: dict, x: Tensor):
    """The step of any implementation, the GEMM floor included."""
    if impl_name == "gemm_floor":
        return gemm_floor_step(cell, shape, pass_, x.device)
    return make_step(impls[impl_name], x, pass_)


# --------------------------------------------------------------------------- agreement
def check_agreement(impls: dict[str, Impl], x: Tensor, backward: bool = True, tol: float = 1e-4):
    """Compare ``y`` (and ``x.grad``) between implementations of the same math.

    Returns ``[(a, b, what, max_abs_diff, ok)]`` for each pair checked.
    """
    results = {}
    for name, impl in impls.items():
        x.grad = None
        with torch.set_grad_enabled(backward):
            y = impl.forward(x)
            if backward:
                y.sum().backward()
        results[name] = (
            y.detach().reshape(-1, y.shape[-1]),
            None if x.grad is None else x.grad.clone(),
        )
    x.grad = None
    checks = []
    names = list(impls)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if impls[a].math != impls[b].math:
                continue
            for what, k in (("y", 0), ("x.grad", 1)):
                ta, tb = results[a][k], results[b][k]
                if ta is None or tb is None:
                    continue
                diff = (ta - tb).abs().max().item() if ta.shape == tb.shape else math.inf
                checks.append((a, b, what, diff, diff <= tol * max(1.0, tb.abs().max().item())))
    return checks
