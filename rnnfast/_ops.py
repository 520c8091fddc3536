"""Fake kernels for the ops that csrc/ops.cpp declares, so torch.compile can trace them.

The ops run one layer in one direction. Their autograd is registered in C++
(csrc/dispatch/autograd.cpp) and calls the backward op, so torch.compile sees forward and backward
as one node each.
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
