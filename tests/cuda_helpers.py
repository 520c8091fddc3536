"""Helpers for the CUDA tests: run a Case on a device and compare with the float64 CPU
reference or the CPU op, with per-dtype tolerances."""

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
    """Outputs and gradients (on the CPU, in float64) of rnnfast on a CUDA case, for the
    upstream gradients `upstream` (float64, on the CPU)."""
    leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    outs = call(F, case, leaves)
    for o in outs:
        assert o.device == case.input.device, f"output on {o.device}, input on {case.input.device}"
        assert o.dtype == case.input.dtype, f"output dtype {o.dtype}, input {case.input.dtype}"
    loss = sum((o * u.to(o.device, o.dtype)).sum() for o, u in zip(outs, upstream))
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True,
                                materialize_grads=True)
    for n, g in zip(names, grads):
        assert g.dtype == leaves[n].dtype and g.device == leaves[n].device, n
    return ([o.detach().cpu().double() for o in outs],
            {n: g.detach().cpu().double() for n, g in zip(names, grads)})


def compare_with_reference(F, case64, device="cuda", dtype=torch.float64,
                           lengths_on_device=False, tolerances=None):
    """rnnfast on `device` in `dtype` against the float64 CPU reference of the same values
    (the case rounded to `dtype` first, so that only the computation differs)."""
    rounded = case64.to(dtype).to(torch.float64) if dtype != torch.float64 else case64
    tol = tolerances or TOLERANCES[dtype]
    ref_outs, ref_grads, up = run(reference, rounded)
    outs, grads = run_cuda(F, on_device(rounded, device, dtype, lengths_on_device), up)
    scaled = dtype != torch.float64
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert_close(o, r, name, case64, scaled=scaled, **tol)
    assert set(grads) == set(ref_grads)
    for name, r in ref_grads.items():
        assert_close(grads[name], r, "grad of " + name, case64, scaled=scaled, **tol)
    return outs, grads
