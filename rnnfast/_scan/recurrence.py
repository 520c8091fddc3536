"""The loop of the reference runner: the recurrent core step by step (the C++ engine's forward
where it can run, else ATen ops), and a torch.autograd.Function whose backward runs the
reverse loop with the step's traced vjp as ATen ops, accumulating the weights' gradients: what
runs where the C++ autograd call of engine.py cannot (tensors the engine does not take, a vjp
it has no backward program for)."""

from typing import List, Optional

import torch
from torch import Tensor
from torch._C import _functions

from .loop_step import LoopStep


def _row_mask(mask_t: Tensor, like: Tensor) -> Tensor:
    return mask_t.view(-1, *([1] * (like.dim() - 1)))


def forward_loop(
    step: LoopStep,
    carry: List[Tensor],
    seqs: List[Tensor],
    weights: List[Tensor],
    T: int,
    mask: Optional[Tensor],
    reverse: bool,
    keep_states: bool,
):
    """Runs T steps (from the last if reverse). Rows whose mask[t] is false keep their carry.
    Returns (final carry, boundary values [T, B, ...], the carry before each step or None).
    The C++ engine runs it where it can; else each step runs its ATen ops from Python."""
    ran = step.engine.forward(carry, seqs, weights, T, mask, reverse, keep_states)
    if ran is not None:
        return ran
    order = range(T - 1, -1, -1) if reverse else range(T)
    states = [[None] * T for _ in carry] if keep_states else None
    boundary = None
    for t in order:
        if keep_states:
            for k, c in enumerate(carry):
                states[k][t] = c
        nxt, bound = step(carry, [s[t] for s in seqs], weights)
        if mask is not None:
            nxt = [torch.where(_row_mask(mask[t], n), n, c) for n, c in zip(nxt, carry)]
        carry = nxt
        if boundary is None:
            boundary = [b.new_empty((T, *b.shape)) for b in bound]
        for out, b in zip(boundary, bound):
            out[t] = b
    stacked = [torch.stack(s) for s in states] if keep_states else None
    return carry, boundary or [], stacked


_AGAIN = "rnnfast.scan's backward cannot be differentiated again (it is not recorded as a graph)"


def _not_differentiable_again(grads: tuple) -> tuple:
    """Where the backward records a graph (create_graph=True), gradients that differentiate
    to an error rather than to nothing: the loop's gradients are not recorded as a graph.
    (Unlike torch's once_differentiable, also where the upstream gradients do not require
    grad: the results still depend on the weights.)"""
    if not torch.is_grad_enabled():
        return grads
    marked = [None if g is None else g.detach().requires_grad_() for g in grads]
    return _functions.DelayedError(_AGAIN, len(marked))(*marked)


class Recurrence(torch.autograd.Function):
    """(carry0, hoisted sequences [T, B, ...], weights) -> (final carry, boundary values).
    ``call``: (step, mask, reverse, T, n_carry, n_seq), one argument since Function.apply
    inspects each of its arguments."""

    @staticmethod
    def forward(ctx, call, *tensors):
        step, mask, reverse, T, n_carry, n_seq = call
        carry = list(tensors[:n_carry])
        seqs = list(tensors[n_carry : n_carry + n_seq])
        weights = list(tensors[n_carry + n_seq :])
        final, boundary, states = forward_loop(
            step, carry, seqs, weights, T, mask, reverse, keep_states=True
        )
        ctx.step, ctx.mask, ctx.reverse, ctx.T = step, mask, reverse, T
        ctx.counts = (n_carry, n_seq)
        ctx.save_for_backward(*states, *seqs, *weights)
        originals = {id(t) for t in tensors}
        final = [f.clone() if id(f) in originals else f for f in final]
        return (*final, *boundary)

    @staticmethod
    def backward(ctx, *grads):
        with torch.no_grad():
            result = Recurrence._backward(ctx, grads)
        return _not_differentiable_again(result)

    @staticmethod
    def _backward(ctx, grads):
        n_carry, n_seq = ctx.counts
        saved = ctx.saved_tensors
        states, seqs = saved[:n_carry], saved[n_carry : n_carry + n_seq]
        weights = saved[n_carry + n_seq :]
        g_carry = [
            g if g is not None else torch.zeros_like(s[0], dtype=torch.float32)
            for g, s in zip(grads[:n_carry], states)
        ]
        g_bound = list(grads[n_carry:])
        g_seqs = [torch.zeros_like(s) if s.is_floating_point() else None for s in seqs]
        g_weights = [torch.zeros_like(w) if w.is_floating_point() else None for w in weights]
        step, mask, T = ctx.step, ctx.mask, ctx.T
        order = range(T) if ctx.reverse else range(T - 1, -1, -1)
        for t in order:
            primals = [s[t] for s in states] + [s[t] for s in seqs] + list(weights)
            g_in = g_carry
            if mask is not None:
                g_in = [torch.where(_row_mask(mask[t], g), g, 0) for g in g_carry]
            # Autograd materializes the gradients of unused outputs as zeros.
            cot = [g for g, s in zip(g_in, states) if s.is_floating_point()]
            cot += [g[t] for g in g_bound if g.is_floating_point()]
            grads_t = step.vjp(primals, cot)
            new_carry = []
            for k, g in enumerate(grads_t[:n_carry]):
                g = torch.zeros_like(g_carry[k]) if g is None else g
                if mask is not None:
                    g = g + torch.where(_row_mask(mask[t], g), 0, g_carry[k])
                new_carry.append(g)
            g_carry = new_carry
            for k, g in enumerate(grads_t[n_carry : n_carry + n_seq]):
                if g is not None:
                    g_seqs[k][t] = g
            for k, g in enumerate(grads_t[n_carry + n_seq :]):
                if g is not None:
                    g_weights[k] += g
        return (None, *g_carry, *g_seqs, *g_weights)
