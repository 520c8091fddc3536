"""The eager Python loop: the fallback for steps the engine cannot run (fallback='loop'), and
what runs under functorch's transforms (vmap, torch.func.grad), with the same conventions for
reverse and lengths as the runner."""

from typing import List, Optional

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from .trace import check_carry


def python_loop(
    combine_fn,
    init_leaves: List[Tensor],
    init_spec,
    x_leaves: List[Tensor],
    x_spec,
    lengths: Optional[Tensor],
    reverse: bool,
):
    """(final carry leaves, y leaves [T, B, ...], y spec); x_leaves are [T, B, ...]."""
    T = x_leaves[0].shape[0]
    carry = list(init_leaves)
    ys: List[List[Tensor]] = [None] * T
    y_spec = None
    for t in range(T - 1, -1, -1) if reverse else range(T):
        c = pytree.tree_unflatten(carry, init_spec)
        x = pytree.tree_unflatten([xl[t] for xl in x_leaves], x_spec)
        nxt, y = combine_fn(c, x)
        nxt_leaves = check_carry(nxt, init_spec, carry)
        y_leaves, y_spec = pytree.tree_flatten(y)
        if lengths is not None:
            active = lengths.to(carry[0].device) > t
            nxt_leaves = [torch.where(_rows(active, n), n, c) for n, c in zip(nxt_leaves, carry)]
            y_leaves = [
                None if v is None else torch.where(_rows(active, v), v, 0) for v in y_leaves
            ]
        carry = nxt_leaves
        ys[t] = y_leaves
    stacked = [
        None if ys[0][k] is None else torch.stack([ys[t][k] for t in range(T)])
        for k in range(len(ys[0]))
    ]
    return carry, stacked, y_spec


def _rows(active: Tensor, like: Tensor) -> Tensor:
    return active.view(-1, *([1] * (like.dim() - 1)))
