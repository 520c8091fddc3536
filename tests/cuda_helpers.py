"""Helpers for the CUDA tests: run a Case on a device and compare with the float64 CPU
reference or the CPU op, with per-dtype tolerances; CudaEngine, where a test runs the CUDA
engine (the GPU, or the host: conftest's `engine` fixture gives both)."""

import contextlib
import warnings

import pytest
import torch

import reference
from conftest import OUTPUT_NAMES, assert_close, call, run

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# (rtol, atol) against the float64 reference; atol scales with each tensor's largest entry
# (see conftest.assert_close). float32 has TF32 off (torch's default for matmuls); half and
# bfloat16 store values with 11 and 8 significant bits and accumulate in float32.
TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=1e-3, atol=1e-4),
    torch.float16: dict(rtol=0, atol=1e-2),
    torch.bfloat16: dict(rtol=0, atol=5e-2),
}


def on_device(case, device, dtype=None, lengths_on_device=False):
    """The case with its float tensors on `device` (and in `dtype`), lengths on the CPU
    unless lengths_on_device."""
    moved = case.map(lambda t: t.detach().to(device=device, dtype=dtype or t.dtype))
    if lengths_on_device and case.lengths is not None:
        moved = moved.replace(lengths=case.lengths.to(device))
    return moved


def run_cuda(F, case, upstream):
    """Outputs and gradients (on the CPU, in float64) of rnnfast on a case on the CUDA engine's
    device, for the upstream gradients `upstream` (float64, on the CPU)."""
    leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    outs = call(F, case, leaves)
    for o in outs:
        assert o.device == case.input.device, f"output on {o.device}, input on {case.input.device}"
        assert o.dtype == case.input.dtype, f"output dtype {o.dtype}, input {case.input.dtype}"
    loss = sum((o * u.to(o.device, o.dtype)).sum() for o, u in zip(outs, upstream))
    names = list(leaves)
    grads = torch.autograd.grad(
        loss, [leaves[n] for n in names], allow_unused=True, materialize_grads=True
    )
    for n, g in zip(names, grads):
        assert g.dtype == leaves[n].dtype and g.device == leaves[n].device, n
    return (
        [o.detach().cpu().double() for o in outs],
        {n: g.detach().cpu().double() for n, g in zip(names, grads)},
    )


def compare_with_reference(
    F, case64, engine, dtype=torch.float64, lengths_on_device=False, tolerances=None
):
    """rnnfast's CUDA engine (a CudaEngine) in `dtype` against the float64 CPU reference of the
    same values (the case rounded to `dtype` first, so that only the computation differs)."""
    rounded = case64.to(dtype).to(torch.float64) if dtype != torch.float64 else case64
    tol = tolerances or TOLERANCES[dtype]
    ref_outs, ref_grads, up = run(reference, rounded)
    with engine.running():
        outs, grads = run_cuda(F, on_device(rounded, engine.device, dtype, lengths_on_device), up)
    scaled = dtype != torch.float64
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert_close(o, r, name, case64, scaled=scaled, **tol)
    assert set(grads) == set(ref_grads)
    for name, r in ref_grads.items():
        assert_close(grads[name], r, "grad of " + name, case64, scaled=scaled, **tol)
    return outs, grads


@contextlib.contextmanager
def tf32_off():
    """float32 GEMMs and cuDNN without TF32 inside, as before after. (Not pytest's monkeypatch:
    torch.backends.cuda.matmul's attributes live behind __getattr__, which its undo misreads as
    absent and then fails to delete.)"""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    old = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = old


class CudaEngine:
    """Where a test runs the CUDA engine (csrc/cuda/recurrence_engine.h).

    On the GPU: tensors on "cuda", `running()` does nothing. On the host: tensors on "cpu",
    and inside `running()` rnnfast._C's host build of the same engine (its step loop, GEMM
    operands and kernel bodies, csrc/cuda/on_host/) replaces the ops' CPU kernels, so every
    entry (functional, layers, autograd, torch.ops) runs it. Outside `running()` the CPU
    kernels are the CPU engine's again."""

    def __init__(self, on_host):
        self.on_host = on_host
        self.device = "cpu" if on_host else "cuda"
        self.calls = 0  # calls of the host build, forward and backward

    # The host engines whose running() is under way, outermost first: the outermost one
    # registers the kernels (torch 2.11 refuses a second Python override of a kernel, which a
    # test's own engine would be under --cuda-engine-on-host; 2.13 allows it), and every call
    # counts for all of them.
    _running_on_host = []

    @contextlib.contextmanager
    def running(self):
        if not self.on_host:
            yield
            return
        active = CudaEngine._running_on_host
        active.append(self)
        try:
            if len(active) > 1:
                yield
            else:
                with self._host_kernels(active):
                    yield
        finally:
            active.remove(self)

    @staticmethod
    @contextlib.contextmanager
    def _host_kernels(active):
        from rnnfast import _C

        def forward(
            input,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            hx,
            cx,
            weight_hr,
            lengths,
            cell,
            reverse,
            batch_first,
            need_saved=True,
        ):  # the dispatcher omits defaults
            for engine in active:
                engine.calls += 1
            return _C._testing.cuda_engine_forward_on_host(
                input,
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                hx,
                cx,
                weight_hr,
                lengths,
                cell,
                reverse,
                batch_first,
                need_saved,
            )

        def backward(*args):
            for engine in active:
                engine.calls += 1
            return _C._testing.cuda_engine_backward_on_host(*args)

        lib = torch.library.Library("rnnfast", "IMPL")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "(?s).*Overriding a previously registered")
                lib.impl("recurrent_forward", forward, "CPU")
                lib.impl("recurrent_backward", backward, "CPU")
            yield
        finally:
            lib._destroy()


def engine_on_gpu():
    return CudaEngine(on_host=False)
