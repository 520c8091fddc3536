"""rnnfast.scan: torch.scan's signature, run by tracing the step once and splitting it
(hoisted input products, the recurrent core, the output part), with autograd."""

import types
import warnings
from typing import Optional

import torch
from torch._C._functorch import peek_interpreter_stack

from . import cache
from .cache import shortcuts_by_code
from .capture import StepCaptures
from .errors import ScanTraceError
from .loop import python_loop
from .runner import StepPlan, run_plan, run_usual
from .shortcut import Shortcut
from .split import inline_step, split_step
from .trace import trace_step
from .trees import unflatten
from .validate import check_inputs


def scan(
    combine_fn,
    init,
    xs,
    *,
    dim: int = 0,
    reverse: bool = False,
    lengths=None,
    fallback: Optional[str] = None,
):
    """``final_carry, ys = scan(combine_fn, init, xs)``: ``carry, y_t = combine_fn(carry, x_t)``
    over the steps of ``xs`` (torch.scan's semantics and signature).

    Args:
        combine_fn: ``(carry, x_t) -> (next_carry, y_t)``, pytrees of tensors whose first
            dimension is the batch B; ``y_t`` may be None. It may read tensors from its
            closure, defaults, globals or module (``self.W``): gradients reach them.
        init: the initial carry, a pytree of ``[B, ...]`` tensors.
        xs: a pytree of ``[T, B, ...]`` tensors (the steps along ``dim``).
        dim: the dimension of xs (and ys) that holds the steps.
        reverse: run from the last step to the first; ys stay in xs' order.
        lengths: ``[B]`` integer lengths: a sequence's outputs past its end are zero and its
            final carry is the one after its last step (with reverse, its steps run from
            ``lengths[b] - 1`` down to 0, as rnnfast.functional's reverse direction).
        fallback: ``"loop"`` runs a step the engine cannot trace or run as a Python loop (with
            a warning) instead of raising.

    Returns:
        ``(final_carry, ys)``: ys' leaves stack y_t's leaves along ``dim``.
    """
    if torch.compiler.is_compiling():
        return _scan_outside_the_graph(combine_fn, init, xs, dim, reverse, lengths, fallback)
    return _scan(combine_fn, init, xs, dim, reverse, lengths, fallback)


@torch._dynamo.disable  # a graph break: scan runs eagerly (its engine, not an unrolled loop)
def _scan_outside_the_graph(combine_fn, init, xs, dim, reverse, lengths, fallback):
    return _scan(combine_fn, init, xs, dim, reverse, lengths, fallback)


_STEP_TYPES = (types.FunctionType, types.MethodType)  # the kinds a shortcut may take


def _scan(combine_fn, init, xs, dim, reverse, lengths, fallback):
    code = combine_fn.__code__ if type(combine_fn) in _STEP_TYPES else None
    usual = dim == 0 and lengths is None and type(reverse) is bool and fallback in (None, "loop")
    if usual and peek_interpreter_stack() is None:
        for short in shortcuts_by_code.get(code, ()):
            matched = short.inputs(combine_fn, init, xs)
            if matched is not None:
                cache.used(short)
                lifted, init_leaves, x_leaves = matched
                final, ys = run_usual(short.plan, init_leaves, x_leaves, lifted, reverse, True)
                return _finish(short.plan, final, ys, short.init_spec, dim)
    inputs = check_inputs(combine_fn, init, xs, dim, reverse, lengths, fallback)
    if inputs is None:  # no xs leaves: torch.scan's shortcut
        return init, []
    init_leaves, init_spec, x_leaves, x_spec, lengths = inputs
    if peek_interpreter_stack() is not None:
        # Under functorch's transforms (vmap, torch.func.grad, jacrev) the step's own ops run:
        # the engine cannot read wrapped tensors, and the transforms differentiate the loop.
        final, ys, y_spec = python_loop(
            combine_fn, init_leaves, init_spec, x_leaves, x_spec, lengths, reverse
        )
        return _results(final, init_spec, ys, y_spec, dim)
    try:
        captures = StepCaptures(combine_fn)
        key = (
            captures.key,
            cache.signature(captures.tensors, init_leaves, init_spec, x_leaves, x_spec),
        )
        plan = cache.lookup(key, lambda: _build(captures, init_leaves, init_spec, x_leaves, x_spec))
    except (ScanTraceError, TypeError) as e:
        if fallback != "loop":
            raise
        warnings.warn(f"{e} Running combine_fn as a Python loop instead.", stacklevel=2)
        final, ys, y_spec = python_loop(
            combine_fn, init_leaves, init_spec, x_leaves, x_spec, lengths, reverse
        )
    else:
        if lengths is None:
            final, ys = run_usual(plan, init_leaves, x_leaves, captures.tensors, reverse)
        else:
            final, ys = run_plan(plan, init_leaves, x_leaves, captures.tensors, lengths, reverse)
        if usual and code is not None:
            cache.add_shortcut(code, Shortcut.of(combine_fn, init, xs, init_spec, key, plan))
        return _finish(plan, final, ys, init_spec, dim)
    return _results(final, init_spec, ys, y_spec, dim)


def _finish(plan, final, ys, init_spec, dim):
    """run_plan's results as the caller's trees."""
    if plan.any_y_none:
        it = iter(ys)
        ys = [None if none else next(it) for none in plan.y_none]
    return _results(final, init_spec, ys, plan.y_spec, dim)


def _results(final, init_spec, ys, y_spec, dim):
    """(final carry, ys) as the caller's trees, ys' steps moved to dim."""
    if dim != 0:
        ys = [torch.movedim(y, 0, dim) if y is not None and dim < y.dim() else y for y in ys]
    return unflatten(final, init_spec), unflatten(ys, y_spec)


def _build(captures, init_leaves, init_spec, x_leaves, x_spec) -> StepPlan:
    prog, y_spec, y_none = trace_step(captures, init_leaves, init_spec, x_leaves, x_spec)
    split = split_step(prog)
    return StepPlan(split, y_spec, y_none, inline_step(prog))
