"""Fake kernels for the ops that csrc/ops.cpp declares, so torch.compile can trace them.

The recurrent ops run one layer in one direction. Their autograd is registered in C++
(csrc/dispatch/autograd.cpp) and calls the backward op, so torch.compile sees forward and backward
as one node each. scan_run runs a registered program of rnnfast.scan (csrc/scan/scan_ops.cpp).
"""

from typing import NamedTuple

import torch

from . import _C  # loading the library registers the schemas and kernels


class CellSpec(NamedTuple):
    """A cell's traits, as the C++ cell registry (csrc/cell_registry.h) defines them."""

    gates: int  # gate pre-activations per hidden unit
    saved: int  # values per hidden unit and step the forward keeps for backward
    recurrent_bias_from: int  # the first gate whose b_hh stays on the recurrent side
    reset_before: bool  # the reset-before GRU
    has_cell_state: bool  # the LSTM's c


# cell name -> CellSpec, read from the extension (no second copy of the table here).
CELLS = {name: CellSpec(**traits) for name, traits in _C.cells().items()}

recurrent_forward = torch.ops.rnnfast.recurrent_forward.default
recurrent_backward = torch.ops.rnnfast.recurrent_backward.default
# CompositeImplicitAutograd (csrc/composite/recurrent_layers.cpp): calls recurrent_forward,
# needs no fake.
recurrent_layers = torch.ops.rnnfast.recurrent_layers.default
scan_run = torch.ops.rnnfast.scan_run.default


def _cell(cell):
    if cell not in CELLS:
        raise ValueError(f"rnnfast: cell must be one of {sorted(CELLS)}; got {cell!r}")
    return CELLS[cell]


def _check_devices(input, lengths, **tensors):
    """The devices the C++ kernels check (csrc/checks.cpp), here too: a meta tensor among CPU
    ones makes the dispatcher pick this kernel, which would otherwise return uninitialised
    memory. Every tensor on input's device; lengths on the CPU or input's device."""
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(
                f"rnnfast: {name} must be on the device of input ({input.device}); got {t.device}"
            )
    if lengths is not None and lengths.device.type != "cpu" and lengths.device != input.device:
        raise RuntimeError(
            "rnnfast: lengths must be on the CPU or on the device of input "
            f"({input.device}); got {lengths.device}"
        )


def _sequence(like, batch_first, T, B, width):
    return like.new_empty((B, T, width) if batch_first else (T, B, width))


@torch.library.register_fake("rnnfast::recurrent_forward")
def _recurrent_forward_fake(
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
):
    spec = _cell(cell)
    _check_devices(
        input,
        lengths,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        bias_ih=bias_ih,
        bias_hh=bias_hh,
        hx=hx,
        cx=cx,
        weight_hr=weight_hr,
    )
    T, B = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    H = weight_ih.shape[0] // spec.gates
    P = H if weight_hr is None else weight_hr.shape[0]
    c_n = input.new_empty((B, H)) if spec.has_cell_state else input.new_empty((0,))
    saved_t = (
        _sequence(input, batch_first, T, B, spec.saved * H)
        if spec.saved and need_saved
        else input.new_empty((0,))
    )
    return _sequence(input, batch_first, T, B, P), input.new_empty((B, P)), c_n, saved_t


@torch.library.register_fake("rnnfast::recurrent_backward")
def _recurrent_backward_fake(
    grad_output,
    grad_h_n,
    grad_c_n,
    input,
    weight_ih,
    weight_hh,
    hx,
    weight_hr,
    lengths,
    output,
    saved,
    cell,
    reverse,
    batch_first,
    output_mask,
):
    spec = _cell(cell)
    gates = spec.gates
    _check_devices(
        input,
        lengths,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        hx=hx,
        weight_hr=weight_hr,
        output=output,
        saved=saved,
        grad_output=grad_output,
        grad_h_n=grad_h_n,
        grad_c_n=grad_c_n,
    )
    H = weight_ih.shape[0] // gates
    P = output.shape[-1]
    B = output.shape[0] if batch_first else output.shape[1]
    shapes = [
        input.shape,
        weight_ih.shape,
        weight_hh.shape,
        (gates * H,),
        (gates * H,),
        (B, P),
        (B, H),
        (P, H),
    ]
    has = [True] * 6 + [spec.has_cell_state, weight_hr is not None]
    return tuple(
        input.new_empty(shape if (need and ok) else (0,))
        for shape, need, ok in zip(shapes, output_mask, has)
    )


@torch.library.register_fake("rnnfast::scan_run")
def _scan_run_fake(program, carry, seqs, weights, mask, steps, reverse, keep_states, gradient):
    """Shapes from the registered program's signature, after the checks of the CPU kernel
    (csrc/scan/scan_engine.cpp), with its error types."""
    dtype, carry_cols, seq_cols, n_weights, boundary_cols, accumulators = _C.scan_program_signature(
        program
    )
    if (len(carry), len(seqs), len(weights)) != (len(carry_cols), len(seq_cols), n_weights):
        raise ValueError(
            f"scan engine: expected {len(carry_cols)} carries, {len(seq_cols)} sequences and "
            f"{n_weights} weights; got {len(carry)}, {len(seqs)} and {len(weights)}"
        )
    if not carry or carry[0].dim() != 2 or steps <= 0:
        raise ValueError("scan engine: carry 0 must be [B > 0, cols] and T > 0")
    dtype, device, B = getattr(torch, dtype), carry[0].device, carry[0].shape[0]

    def check(t, what, k, shape, want=dtype):
        if t.device != device or t.dtype != want or tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"scan engine: {what} {k} must be a {device} {want} tensor of shape "
                f"{list(shape)}; got {t.dtype} {list(t.shape)} on {t.device}"
            )

    for k, (c, n) in enumerate(zip(carry, carry_cols)):
        check(c, "carry", k, (B, n))
    for k, (s, n) in enumerate(zip(seqs, seq_cols)):
        check(s, "sequence", k, (steps, B, n))
    for k, w in enumerate(weights):
        check(w, "weight", k, w.shape)
    if mask is not None:
        check(mask, "mask", 0, (steps, B), torch.bool)
    like = carry[0]
    return (
        [like.new_empty((B, n)) for n in carry_cols],
        [like.new_empty((steps, B, n)) for n in boundary_cols],
        [like.new_empty((steps, B, n)) for n in carry_cols] if keep_states else [],
        [like.new_empty(shape) for shape in accumulators],
    )
