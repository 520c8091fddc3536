"""The reference runner: a split step over a whole sequence. Weights part and hoisted part once
(all T*B rows at a time), the recurrent core step by step (recurrence.py), the output part once;
everything but the core under ordinary autograd."""

from typing import List, Optional

import torch
from torch import Tensor

from .interpret import run_nodes
from .loop_step import LoopStep
from .recurrence import Recurrence, forward_loop


class StepPlan:
    """A traced, split step and what running it needs: the cache's entry."""

    def __init__(self, split, y_spec, y_none):
        self.split = split
        self.y_spec, self.y_none = y_spec, y_none
        self.loop = LoopStep(split)


def _rows(t: Tensor, T: int, B: int) -> Tensor:
    """[T, B, ...] as [T*B, ...]."""
    return t.reshape(T * B, *t.shape[2:])


def run_plan(
    plan: StepPlan,
    init: List[Tensor],
    xs: List[Tensor],
    weights: List[Tensor],
    lengths: Optional[Tensor],
    reverse: bool,
):
    """(final carry leaves, y leaves [T, B, ...]) of the step over xs ([T, B, ...] leaves)."""
    split, prog = plan.split, plan.split.prog
    T, B = xs[0].shape[0], xs[0].shape[1]
    env = dict(zip(prog.weights_in, weights))
    env.update(prog.constants)
    run_nodes(split.weight_nodes, env, B)
    env.update((i, _rows(x, T, B)) for i, x in zip(prog.x_in, xs))
    run_nodes(split.hoisted_nodes, env, T * B)
    seqs = [env[i].view(T, B, *env[i].shape[1:]) for i in split.loop_seq_in]
    loop_weights = [env[i] for i in split.loop_weights_in]
    mask = None
    if lengths is not None:
        mask = lengths.to(xs[0].device).unsqueeze(0) > torch.arange(
            T, device=xs[0].device
        ).unsqueeze(1)  # [T, B]
    tensors = [*init, *seqs, *loop_weights]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        outs = Recurrence.apply(plan.loop, mask, reverse, T, len(init), len(seqs), *tensors)
        final, boundary = list(outs[: len(init)]), list(outs[len(init) :])
    else:
        final, boundary, _, _ = forward_loop(
            plan.loop, list(init), seqs, loop_weights, T, mask, reverse, keep_states=False
        )
    env.update((i, _rows(b, T, B)) for i, b in zip(split.boundary, boundary))
    run_nodes(split.output_nodes, env, T * B)
    ys = [env[i].reshape(T, B, *env[i].shape[1:]) for i in prog.y_out]
    if mask is not None:
        ys = [torch.where(mask.view(T, B, *([1] * (y.dim() - 2))), y, 0) for y in ys]
    return final, ys
