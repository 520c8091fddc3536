"""The C++ engine (csrc/scan/) as the runner of the loop part: its forward lowered once per
traced step (lower.py), its backward (the step's traced vjp, lower_vjp.py) once on the first
backward, each run over all steps without Python where the tensors allow (CPU, float32 or
float64, a batch of at least one); otherwise, or where the lowering meets an op it has no
opcode for, the Python runner runs it."""

from typing import List, Optional

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.overrides import has_torch_function

from .interpret import run_nodes
from .lower import lower_loop
from .lower_vjp import lower_vjp

_state = {"enabled": True, "runs": 0, "backward_runs": 0}


def engine_runs() -> int:
    """How many forward loops the C++ engine has run since the process started (for tests)."""
    return _state["runs"]


def engine_backward_runs() -> int:
    """How many backward loops the C++ engine has run since the process started."""
    return _state["backward_runs"]


def set_engine_enabled(enabled: bool) -> bool:
    """Turns the C++ engine on or off (off: every loop runs in Python); returns the old
    setting."""
    old, _state["enabled"] = _state["enabled"], bool(enabled)
    return old


class LoopEngine:
    """The loop part of a split step lowered for the C++ engine, or unusable (``engine`` None)
    where the lowering found something it has no opcode for."""

    def __init__(self, split):
        self.engine = None
        self.backward_program = self.backward_engine = None
        self.backward_lowered = False
        lowered = lower_loop(split)
        if lowered is None:
            return
        from .. import _C
        self.engine = _C.ScanEngine(*lowered)

    def forward(self, carry: List[Tensor], seqs: List[Tensor], weights: List[Tensor], T: int,
                mask: Optional[Tensor], reverse: bool, keep_states: bool):
        """forward_loop's result from the engine, or None where it cannot run these tensors."""
        if not self._runs(carry, [*carry, *seqs, *weights]):
            return None
        final, boundary, states, _ = self.engine.forward(
            [c.detach() for c in carry], [s.detach() for s in seqs],
            [w.detach() for w in weights], mask, T, reverse, keep_states)
        _state["runs"] += 1
        return list(final), list(boundary), (list(states) if keep_states else None)

    def _runs(self, carry: List[Tensor], tensors: List[Tensor]) -> bool:
        """Whether the engine can read these tensors' memory: plain CPU tensors of one dtype
        (not functorch's wrappers under vmap, nor subclasses with their own dispatch), and
        runs what the ATen ops would (not under CPU autocast, which changes their dtypes)."""
        dtype = carry[0].dtype
        return (self.engine is not None and _state["enabled"] and carry[0].shape[0] > 0 and
                not torch.is_autocast_enabled("cpu") and
                all(t.device.type == "cpu" and t.dtype == dtype and
                    not is_functorch_wrapped_tensor(t) for t in tensors) and
                not has_torch_function(tensors))

    def backward(self, step, states, seqs, weights, g_carry, g_bound, mask, reverse, T):
        """Recurrence.backward's gradients (carry, sequences, weights) from the engine, or None
        where it cannot run them (the Python backward runs them then)."""
        dtype = states[0].dtype
        g_carry = [g.to(dtype) for g in g_carry]
        if not self._runs(g_carry, [*states, *seqs, *weights, *g_carry, *g_bound]):
            return None
        primals = [s[0] for s in states] + [s[0] for s in seqs] + list(weights)
        prog = step.traced_vjp(primals, g_carry + [g[0] for g in g_bound])
        if not self.backward_lowered:
            self.backward_lowered = True
            if step.all_differentiable():
                self.backward_program = lower_vjp(prog, len(states), len(seqs))
            if self.backward_program is not None:
                from .. import _C
                self.backward_engine = _C.ScanEngine(self.backward_program.codes,
                                                     self.backward_program.scalars)
        if self.backward_engine is None:
            return None
        lowered = self.backward_program
        env = dict(zip(prog.carry_in[len(states) + len(seqs):], weights))
        env.update(prog.constants)
        run_nodes(lowered.pre_nodes, env, g_carry[0].shape[0])
        g_first, g_seqs, _, g_weights = self.backward_engine.forward(
            g_carry, [*states, *seqs, *[g.detach() for g in g_bound]],
            [env[i] for i in lowered.weight_ids], mask, T, not reverse, False, True)
        _state["backward_runs"] += 1
        return (*g_first, *g_seqs, *g_weights)
