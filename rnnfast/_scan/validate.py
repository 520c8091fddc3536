"""Checks of rnnfast.scan's arguments, raising what torch.scan raises for the same mistakes
(RuntimeError) and naming the argument, what it expected and what it got."""

import torch
from torch import Tensor

from .trees import flatten


def check_inputs(combine_fn, init, xs, dim, reverse, lengths, fallback):
    """(init leaves, init spec, xs leaves moved to [T, B, ...], xs spec, lengths tensor or
    None), or None where xs has no leaves."""
    if not callable(combine_fn):
        raise RuntimeError(
            f"rnnfast.scan: combine_fn must be callable; got {type(combine_fn).__name__}"
        )
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise RuntimeError(f"rnnfast.scan: dim must be an int; got {type(dim).__name__}")
    if not isinstance(reverse, bool):
        raise RuntimeError(f"rnnfast.scan: reverse must be a bool; got {type(reverse).__name__}")
    if fallback not in (None, "loop"):
        raise ValueError(f"rnnfast.scan: fallback must be None or 'loop'; got {fallback!r}")
    init_leaves, init_spec = flatten(init)
    x_leaves, x_spec = flatten(xs)
    if not x_leaves:
        return None
    if not init_leaves:
        raise RuntimeError("rnnfast.scan: init must hold at least one tensor; got none")
    for name, leaves in (("init", init_leaves), ("xs", x_leaves)):
        for i, t in enumerate(leaves):
            if not isinstance(t, Tensor):
                raise RuntimeError(
                    f"rnnfast.scan: every {name} leaf must be a tensor; leaf {i} "
                    f"is {type(t).__name__}"
                )
    ndim = x_leaves[0].dim()
    if not -ndim <= dim < ndim:
        raise RuntimeError(
            f"rnnfast.scan: dim must lie in [{-ndim}, {ndim - 1}] for xs of rank {ndim}; got {dim}"
        )
    dim %= ndim
    x_leaves = [_steps_first(x, dim, i) for i, x in enumerate(x_leaves)]
    T, B = _check_steps_and_batch(x_leaves)
    for i, t in enumerate(init_leaves):
        if t.dim() == 0 or t.shape[0] != B:
            raise RuntimeError(
                f"rnnfast.scan: init leaf {i} must have the batch of xs first, [B={B}, ...]; "
                f"got shape {list(t.shape)}"
            )
    return init_leaves, init_spec, x_leaves, x_spec, _check_lengths(lengths, T, B)


def _steps_first(x: Tensor, dim: int, i: int) -> Tensor:
    if x.dim() <= dim or x.shape[dim] == 0:
        raise RuntimeError(
            f"rnnfast.scan: xs leaf {i} must have a non-empty dimension {dim} "
            f"(the steps); got shape {list(x.shape)}"
        )
    x = torch.movedim(x, dim, 0) if dim != 0 else x
    if x.dim() < 2:
        raise RuntimeError(
            f"rnnfast.scan: xs leaf {i} must be [T, B, ...] (steps along dim, "
            f"then the batch); got shape {list(x.shape)} with the steps first"
        )
    return x


def _check_steps_and_batch(x_leaves):
    T, B = x_leaves[0].shape[0], x_leaves[0].shape[1]
    for i, x in enumerate(x_leaves[1:], 1):
        if x.shape[0] != T:
            raise RuntimeError(
                f"rnnfast.scan: every xs leaf must have the same number of steps; "
                f"leaf 0 has {T}, leaf {i} has {x.shape[0]}"
            )
        if x.shape[1] != B:
            raise RuntimeError(
                f"rnnfast.scan: every xs leaf must have the same batch; leaf 0 "
                f"has {B}, leaf {i} has {x.shape[1]}"
            )
    return T, B


def _check_lengths(lengths, T: int, B: int):
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"rnnfast.scan: lengths must be an integer tensor; got {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(
            f"rnnfast.scan: lengths must have shape [B] = [{B}]; got {list(lengths.shape)}"
        )
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(
            f"rnnfast.scan: lengths must lie in [0, T] = [0, {T}]; got values from "
            f"{int(lengths.min())} to {int(lengths.max())}"
        )
    return lengths
