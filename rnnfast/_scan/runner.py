"""The reference runner: a split step over a whole sequence. Weights part and hoisted part once
(all T*B rows at a time), the recurrent core step by step (recurrence.py), the output part once;
everything but the core under ordinary autograd."""

import math
from typing import List, Optional

import torch
from torch import Tensor

from .engine import InputKinds, engine_takes, products_on_engine
from .interpret import engine_products, run_nodes
from .loop_step import LoopStep
from .recurrence import Recurrence, forward_loop

# Input products of at most this many multiply-adds per call run inside the loop (inline_step):
# below it, the hoisted product's own call and autograd node cost more than the product.
INLINE_MACS = 1 << 20


class StepPlan:
    """A traced, split step and what running it needs: the cache's entry. ``inline``: the same
    step with its input and output products in the loop (split.inline_step), for small calls
    (``split_for``), where the engine can run it."""

    def __init__(self, split, y_spec, y_none, inline=None):
        self.split = split
        self.y_spec, self.y_none = y_spec, y_none
        self.any_y_none = any(y_none)
        self.loop = LoopStep(split)
        self.inline, self.inline_loop = None, None
        self.lifted_kinds = {}  # per loop step run by run_lifted: the InputKinds of its calls
        self.usual = {}  # per loop step: its _UsualRun, or None where run_usual cannot take it
        self.macs_per_row = _product_macs(split.hoisted_nodes + split.output_nodes, split.prog)
        # The hoisted and output parts with their products on the engine's GEMM.
        self.engine_parts = (
            engine_products(split.hoisted_nodes),
            engine_products(split.output_nodes),
        )
        if inline is not None and self.macs_per_row:
            loop = LoopStep(inline)
            if loop.engine.program is not None:
                self.inline, self.inline_loop = inline, loop

    def parts(self, split, tensors: List[Tensor]):
        """(hoisted, output) nodes of ``split`` (of split_for) to run over these tensors."""
        if split is self.split and products_on_engine(tensors):
            return self.engine_parts
        return split.hoisted_nodes, split.output_nodes

    def split_for(self, rows: int):
        """(split, loop step) to run a call of ``rows`` = T*B rows with."""
        if self.inline is not None and rows * self.macs_per_row <= INLINE_MACS:
            return self.inline, self.inline_loop
        return self.split, self.loop


class _UsualRun:
    """How a loop step that reads only xs and views of the lifted tensors (the engine's
    ``lifted_views``) takes a call without lengths, found on its first: which xs its
    sequences are, where each y comes from (a boundary value or an x, by position), and
    whether the engine takes such tensors (fixed by the cache key)."""

    def __init__(self, split, loop, init, xs, lifted):
        prog = split.prog
        self.engine = loop.engine
        x_at = {i: k for k, i in enumerate(prog.x_in)}
        self.seqs = [x_at[i] for i in split.loop_seq_in]
        at = {i: (False, k) for k, i in enumerate(prog.x_in)}
        at.update((i, (True, k)) for k, i in enumerate(split.boundary))
        self.ys = [at[i] for i in prog.y_out]
        # The usual cases: the loop reads xs in order; the ys are its boundary values in order.
        self.seqs_are_xs = self.seqs == list(range(len(prog.x_in)))
        self.ys_are_boundary = self.ys == [(True, k) for k in range(len(split.boundary))]
        self.engine_takes = engine_takes([*init, *xs, *lifted])

    @staticmethod
    def of(split, loop, init, xs, lifted) -> Optional["_UsualRun"]:
        prog = split.prog
        if loop.engine.lifted_views is None or loop.engine.program is None:
            return None
        if not set(split.boundary) | set(prog.x_in) >= set(prog.y_out):
            return None
        return _UsualRun(split, loop, init, xs, lifted)


def run_usual(plan: StepPlan, init, xs, lifted, reverse, plain: bool = False):
    """run_plan's result for a call without lengths, from one C++ call where it can take it
    (the loop reads only xs and views of the lifted tensors, and the engine runs these
    tensors), else from run_plan. ``plain``: as LoopEngine.run_prepared's."""
    x = xs[0]
    T, B = x.shape[0], x.shape[1]
    split, loop = plan.split_for(T * B)
    usual = plan.usual.get(loop, False)
    if usual is False:
        usual = plan.usual[loop] = _UsualRun.of(split, loop, init, xs, lifted)
    if usual is not None and usual.engine_takes and B:
        seqs = xs if usual.seqs_are_xs else [xs[k] for k in usual.seqs]
        outs = usual.engine.run_prepared(init, seqs, lifted, T, reverse, plain)
        if outs is not None:
            final, boundary = outs
            if usual.ys_are_boundary:
                return final, boundary
            return final, [boundary[k] if from_loop else xs[k] for from_loop, k in usual.ys]
    return run_plan(plan, init, xs, lifted, None, reverse)


def _product_macs(nodes, prog) -> int:
    """Multiply-adds per row of the products among nodes (their weights' sizes)."""
    macs = 0
    for node in nodes:
        if node.op.split(".")[1] in ("mm", "addmm"):
            macs += math.prod(prog.meta[node.args[-1].id].shape)
    return macs


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
    T, B = xs[0].shape[0], xs[0].shape[1]
    split, loop = plan.split_for(T * B)
    prog = split.prog
    by_id = dict(zip(prog.x_in, xs))  # the loop reads xs' steps as they are
    mask = None
    if lengths is not None:
        mask = lengths.to(xs[0].device).unsqueeze(0) > torch.arange(
            T, device=xs[0].device
        ).unsqueeze(1)  # [T, B]
    outs = None
    if loop.engine.lifted_views is not None:
        # The loop reads xs and views of the lifted tensors: one C++ call makes the views, so
        # the weights part costs no Python (nor autograd nodes of its own).
        seqs = [by_id[i] for i in split.loop_seq_in]
        kinds = plan.lifted_kinds.get(loop)
        if kinds is None:  # fixed by the cache key, so found on the entry's first call
            kinds = plan.lifted_kinds[loop] = InputKinds([*init, *seqs, *weights])
        outs = loop.engine.run_lifted(loop, list(init), seqs, weights, T, mask, reverse, kinds)
    hoisted, output = split.hoisted_nodes, split.output_nodes
    if hoisted or output:
        hoisted, output = plan.parts(split, [*init, *xs, *weights])
    if outs is None:
        env = _lifted_env(prog, weights)
        final, boundary = _run_loop(split, loop, env, hoisted, init, xs, by_id, T, B, mask, reverse)
    else:
        final, boundary = outs
        env = None
    if not prog.y_out:
        return final, []
    values = dict(zip(split.boundary, boundary))  # [T, B, ...] each
    values.update(by_id)
    if output or not values.keys() >= set(prog.y_out):
        env = _lifted_env(prog, weights) if env is None else env
        for i, b in zip(split.boundary, boundary):
            env[i] = _rows(b, T, B)
        run_nodes(output, env, T * B)
        values.update((i, env[i].reshape(T, B, *env[i].shape[1:])) for i in prog.y_out if i in env)
    ys = [values[i] for i in prog.y_out]
    if mask is not None:
        ys = [torch.where(mask.view(T, B, *([1] * (y.dim() - 2))), y, 0) for y in ys]
    return final, ys


def _lifted_env(prog, weights: List[Tensor]) -> dict:
    """The program's values by id known before it runs: the lifted tensors and constants."""
    env = dict(zip(prog.weights_in, weights))
    if prog.constants:
        env.update(prog.constants)
    return env


def _run_loop(split, loop, env, hoisted, init, xs, by_id, T, B, mask, reverse):
    """(final carry, boundary values) of the loop part, its weights and sequences made by the
    weights and hoisted parts (env: the lifted tensors and constants by id; hoisted: the
    hoisted part's nodes as StepPlan.parts gives them)."""
    prog = split.prog
    if split.weight_nodes:
        run_nodes(split.weight_nodes, env, B)
    if split.hoisted_nodes or split.output_nodes:
        for i, x in zip(prog.x_in, xs):
            env[i] = _rows(x, T, B)
        run_nodes(hoisted, env, T * B)
    seqs = [
        by_id[i] if i in by_id else env[i].view(T, B, *env[i].shape[1:]) for i in split.loop_seq_in
    ]
    loop_weights = [env[i] for i in split.loop_weights_in]
    tensors = [*init, *seqs, *loop_weights]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        outs = loop.engine.differentiable(loop, list(init), seqs, loop_weights, T, mask, reverse)
        if outs is None:
            call = (loop, mask, reverse, T, len(init), len(seqs))
            outs = Recurrence.apply(call, *tensors)
        return list(outs[: len(init)]), list(outs[len(init) :])
    final, boundary, _ = forward_loop(
        loop, list(init), seqs, loop_weights, T, mask, reverse, keep_states=False
    )
    return final, boundary
