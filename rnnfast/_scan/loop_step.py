"""The recurrent core of a split step as a function of one step, and its vjp traced once into
a program (what the engine's backward is to run)."""

from typing import List, Optional

import torch
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

from .engine import LoopEngine
from .interpret import run_nodes
from .ir import Program
from .split import SplitStep
from .trace import lower, trace_batch_size


class LoopStep:
    """``step(carry, seq_t, weights) -> (next_carry, boundary_t)``: the loop nodes of one step
    at the carry's batch size; ``vjp`` their backward, traced on first use."""

    def __init__(self, split: SplitStep):
        self.split = split
        prog = split.prog
        self.inputs = list(prog.carry_in) + split.loop_seq_in + split.loop_weights_in
        self.outputs = list(prog.carry_out) + split.boundary
        self.n_carry = len(prog.carry_in)
        self.engine = LoopEngine(split)  # the C++ runner of the forward loop, where it can
        self.vjp_program: Optional[Program] = None
        self._vjp_diff: List[bool] = []

    def __call__(self, carry, seq_t, weights):
        env = dict(zip(self.inputs, [*carry, *seq_t, *weights]))
        run_nodes(self.split.loop_nodes, env, carry[0].shape[0])
        outs = [env[i] for i in self.outputs]
        return outs[: self.n_carry], outs[self.n_carry :]

    def traced_vjp(self, primals: List[Tensor], cotangents: List[Tensor]) -> Program:
        """The vjp program, traced on first use at these inputs' shapes and dtypes."""
        if self.vjp_program is None:
            self.vjp_program = self._trace_vjp(primals, cotangents)
        return self.vjp_program

    def differentiable_but_seqs(self) -> bool:
        """Whether the traced vjp gives a gradient for every carry and weight (a sequence may
        be a boolean mask)."""
        n_seq = len(self.split.loop_seq_in)
        diff = self._vjp_diff
        return all(diff[: self.n_carry]) and all(diff[self.n_carry + n_seq :])

    def seq_differentiable(self) -> List[bool]:
        """Per sequence, whether the traced vjp gives its gradient."""
        return self._vjp_diff[self.n_carry : self.n_carry + len(self.split.loop_seq_in)]

    def vjp(self, primals: List[Tensor], cotangents: List[Tensor]) -> List[Optional[Tensor]]:
        """Gradients of the step's inputs (carry, seq_t, weights; None where not floating)
        for cotangents of its floating outputs."""
        prog = self.traced_vjp(primals, cotangents)
        env = dict(zip(prog.carry_in + prog.x_in, [*primals, *cotangents]))
        env.update(prog.constants)
        run_nodes(prog.nodes, env, primals[0].shape[0])
        grads = iter(env[i] for i in prog.carry_out)
        return [next(grads) if d else None for d in self._vjp_diff]

    def _trace_vjp(self, primals, cotangents) -> Program:
        diff = self._vjp_diff = [p.is_floating_point() for p in primals]
        n_batched = self.n_carry + len(self.split.loop_seq_in)  # carry and hoisted inputs
        b = trace_batch_size([p[0] if k < n_batched else p for k, p in enumerate(primals)])
        samples = [_at_batch(p, b) if k < n_batched else p for k, p in enumerate(primals)]
        cot_samples = [_at_batch(c, b) for c in cotangents]
        n_p = len(samples)

        def forward(*flat):
            given = list(flat[:n_p])

            def f(*diff_values):
                it = iter(diff_values)
                values = [next(it) if d else v for v, d in zip(given, diff)]
                carry = values[: self.n_carry]
                n_seq = len(self.split.loop_seq_in)
                nxt, bound = self(
                    carry,
                    values[self.n_carry : self.n_carry + n_seq],
                    values[self.n_carry + n_seq :],
                )
                return tuple(o for o in nxt + bound if o.is_floating_point())

            _, pull = torch.func.vjp(f, *[v for v, d in zip(given, diff) if d])
            return tuple(pull(tuple(flat[n_p:])))

        with torch.no_grad():
            gm = make_fx(forward, tracing_mode="fake")(*samples, *cot_samples)
        return lower(gm, n_p, len(cot_samples), b, n_carry_out=sum(diff))


def _at_batch(t: Tensor, b: int) -> Tensor:
    return torch.empty((b, *t.shape[1:]), dtype=t.dtype, device=t.device)
