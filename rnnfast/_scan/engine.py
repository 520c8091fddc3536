"""The C++ engine (csrc/scan/) as the runner of the loop part: its forward lowered once per
traced step (lower.py), its backward (the step's traced vjp, lower_vjp.py) on the first call
under autograd, each registered as a program that the op rnnfast::scan_run runs over all steps
without Python where the tensors allow (CPU, float32 or float64, a batch of at least one; on
the meta device and fake tensors, the op's fake kernel gives the shapes). Under autograd one
C++ call (csrc/scan/differentiable_scan) runs the forward and records a node whose backward
runs the backward program. Otherwise, or where the lowering meets an op it has no opcode for,
the Python runner runs it (recurrence.py)."""

import weakref
from typing import List, Optional

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor, peek_interpreter_stack
from torch.overrides import has_torch_function

from .. import _C
from .interpret import run_nodes
from .lower import kept_candidates, loop_weight_views, lower_loop
from .lower_vjp import KeptValues, lower_vjp

_state = {"enabled": True, "runs": 0}


def engine_runs() -> int:
    """How many forward loops the C++ engine has run since the process started (for tests)."""
    return _state["runs"]


def engine_backward_runs() -> int:
    """How many backward loops the C++ engine has run since the process started."""
    return _C._testing.scan_differentiable_backward_runs()


def engine_slices() -> int:
    """How many batch slices the engine's last loop ran on their own threads (for tests)."""
    return _C._testing.scan_last_run_slices()


def set_engine_enabled(enabled: bool) -> bool:
    """Turns the C++ engine on or off (off: every loop runs in Python); returns the old
    setting."""
    old, _state["enabled"] = _state["enabled"], bool(enabled)
    return old


def _register(owner, codes: List[int], scalars: List[float]) -> int:
    """A program registered for the op, released when ``owner`` (its LoopEngine, which the
    cache entry and every autograd node of its runs hold) is collected."""
    handle = _C.scan_register_program(codes, scalars)
    weakref.finalize(owner, _C.scan_release_program, handle).atexit = False
    return handle


def engine_takes(tensors: List[Tensor]) -> bool:
    """Whether the op takes these tensors by their kinds, which rnnfast.scan's cache key fixes:
    CPU tensors of the first one's dtype or boolean (masks, which the op reads as 0/1 of that
    dtype: ``numeric_seqs``), or meta ones (and fake ones, whose shapes its fake kernel
    gives)."""
    dtype, on_cpu = tensors[0].dtype, tensors[0].is_cpu
    for t in tensors:
        if t.is_cpu != on_cpu or t.dtype not in (dtype, torch.bool) or not (on_cpu or t.is_meta):
            return False
    return True


def numeric_seqs(seqs: List[Tensor], dtype: torch.dtype) -> List[Tensor]:
    """The sequences as the op reads them: boolean masks as 0/1 of ``dtype``, as the engine
    holds comparisons' results (its programs run one dtype)."""
    for s in seqs:
        if s.dtype == torch.bool:
            return [s.to(dtype) if s.dtype == torch.bool else s for s in seqs]
    return seqs


def runnable_now(tensors: List[Tensor]) -> bool:
    """What the cache key does not fix: the op runs what the ATen ops would, so not under CPU
    autocast (which changes their dtypes), nor on functorch's wrappers (vmap, torch.func.grad)
    or tensors with their own __torch_function__ (or under such a mode)."""
    if torch.is_autocast_enabled("cpu") or has_torch_function(tensors):
        return False
    if peek_interpreter_stack() is None:  # no functorch transform: no wrapped tensors
        return True
    return not any(is_functorch_wrapped_tensor(t) for t in tensors)


def runnable_plain() -> bool:
    """runnable_now for tensors that are exactly torch.Tensor or nn.Parameter, outside
    functorch's transforms (the shortcut's): only the modes can stop the op."""
    return not (torch.is_autocast_enabled("cpu") or torch._C._is_torch_function_mode_enabled())


def products_on_engine(tensors: List[Tensor]) -> bool:
    """Whether the parts over all steps' rows run their products as rnnfast::mm, on the CPU
    engine's GEMM: with the engine on, for CPU float32 or float64 tensors that the ATen ops
    would run as they are (runnable_now)."""
    first = tensors[0]
    return (
        _state["enabled"]
        and first.is_cpu
        and first.dtype in (torch.float32, torch.float64)
        and engine_takes(tensors)
        and runnable_now(tensors)
    )


class InputKinds:
    """What a cache entry's key fixes about a call's carry, sequences and lifted tensors: whether
    the engine takes them (``engine_takes``) and whether any requires grad."""

    def __init__(self, tensors: List[Tensor]):
        self.engine_takes = engine_takes(tensors)
        self.requires_grad = any(t.requires_grad for t in tensors)


class _Vectors:
    """The loop's [B] carries, sequences ([T, B]) and boundary values ([T, B]) at the op's
    edge: the op takes and gives [B, cols] and [T, B, cols] tensors, and the engine holds a
    [B] value as [B, 1], so they go in with a last dimension of 1 and come out without it (as
    views, which autograd follows)."""

    def __init__(self, split):
        meta = split.prog.meta

        def vectors(ids):
            return [len(meta[i].shape) == 1 for i in ids]

        self.carry = vectors(split.prog.carry_in)
        self.seqs = vectors(split.loop_seq_in)
        self.boundary = vectors(split.boundary)
        self.any = any(self.carry + self.seqs + self.boundary)

    @staticmethod
    def widen(tensors, vectors) -> List[Tensor]:
        return [t.unsqueeze(-1) if v else t for t, v in zip(tensors, vectors)]

    @staticmethod
    def narrow(tensors, vectors) -> List[Tensor]:
        return [t.squeeze(-1) if v else t for t, v in zip(tensors, vectors)]

    def inputs(self, carry, seqs):
        """(carry, sequences) as the op takes them."""
        return self.widen(carry, self.carry), self.widen(seqs, self.seqs)

    def results(self, final, boundary):
        """The op's (final carry, boundary values) as the step's shapes."""
        return self.narrow(final, self.carry), self.narrow(boundary, self.boundary)


class LoopEngine:
    """The loop part of a split step lowered for the C++ engine, or unusable (``program`` None)
    where the lowering found something it has no opcode for. Under autograd the forward also
    keeps per step what the backward reads instead of computing again (products, their sums,
    next carries, costly pointwise results: lower.kept_candidates)."""

    def __init__(self, split):
        self.split = split
        self.program = self.keeping_program = None  # handles of registered programs
        self.kept_candidates = kept_candidates(split)
        self.backward_programs = {}  # by whether the forward may keep values: (lowered, handle)
        # The loop's weights as views of the lifted tensors (lower.loop_weight_views), where
        # the loop reads only those and xs (no hoisted or output part).
        x_in = set(split.prog.x_in)
        self.lifted_views = None
        if not split.hoisted_nodes and not split.output_nodes and x_in >= set(split.loop_seq_in):
            self.lifted_views = loop_weight_views(split)
        self._prepared = None  # _prepared_call's
        self.vectors = _Vectors(split)
        lowered = lower_loop(split)
        if lowered is None:
            return
        self.program = _register(self, *lowered)

    def forward(
        self,
        carry: List[Tensor],
        seqs: List[Tensor],
        weights: List[Tensor],
        T: int,
        mask: Optional[Tensor],
        reverse: bool,
        keep_states: bool,
    ):
        """forward_loop's result from the engine, or None where it cannot run these tensors."""
        if not self._runs(carry, [*carry, *seqs, *weights]):
            return None
        # No autograd records this: Recurrence.forward runs without grad, and the other
        # caller only where no input requires it.
        seqs = numeric_seqs(seqs, carry[0].dtype)
        v = self.vectors
        if v.any:
            carry, seqs = v.inputs(carry, seqs)
        final, boundary, states, _ = _C.scan_run(
            self.program, carry, seqs, weights, mask, T, reverse, keep_states, False
        )
        _state["runs"] += 1
        if v.any:
            final, boundary = v.results(final, boundary)
            states = v.narrow(states, v.carry)
        return list(final), list(boundary), (list(states) if keep_states else None)

    def run_lifted(
        self,
        step,
        carry: List[Tensor],
        seqs: List[Tensor],
        lifted: List[Tensor],
        T: int,
        mask: Optional[Tensor],
        reverse: bool,
        inputs: "InputKinds",
    ):
        """(final carry, boundary values) from one C++ call that makes the loop's weights of
        the step's lifted tensors (``lifted_views``), differentiable where grad mode is on and
        an input requires grad; None where that cannot run (see ``differentiable``).
        ``inputs``: what the cache key fixed about carry, seqs and lifted."""
        if not inputs.engine_takes or not self._ready(carry):
            return None
        if not runnable_now([*carry, *seqs, *lifted]):
            return None
        if inputs.requires_grad and torch.is_grad_enabled():
            outs = self.differentiable(step, carry, seqs, lifted, T, mask, reverse, True, True)
            return None if outs is None else (outs[: len(carry)], outs[len(carry) :])
        seqs = numeric_seqs(seqs, carry[0].dtype)
        v = self.vectors
        if v.any:
            carry, seqs = v.inputs(carry, seqs)
        final, boundary, _, _ = _C.scan_run(
            self.program, carry, seqs, lifted, mask, T, reverse, False, False, self.lifted_views
        )
        _state["runs"] += 1
        return v.results(final, boundary) if v.any else (final, boundary)

    def run_prepared(self, carry, seqs, lifted, T: int, reverse: bool, plain: bool = False):
        """run_lifted's result for a call without a mask (runner.run_usual's), for tensors the
        engine takes (engine_takes) and a batch of at least one: one call of the loop's
        _C.PreparedScan; None where that cannot run (run_plan then runs the call).
        ``plain``: the tensors are exactly torch.Tensor or nn.Parameter, outside functorch's
        transforms."""
        if self.program is None or not _state["enabled"]:
            return None
        if not (runnable_plain() if plain else runnable_now([*carry, *seqs, *lifted])):
            return None
        seqs = numeric_seqs(seqs, carry[0].dtype)
        v = self.vectors
        if v.any:
            carry, seqs = v.inputs(carry, seqs)
        outs = (self._prepared or self._prepared_call())(carry, seqs, lifted, T, reverse)
        if outs is None:
            return None
        _state["runs"] += 1
        return v.results(*outs) if v.any else outs

    def _prepared_call(self):
        """run_prepared's _C.PreparedScan, made again once the backward program is lowered
        (before that, a call under autograd gives None)."""
        if self._prepared is None:
            lowered, backward = self.backward_programs.get(bool(self.kept_candidates)) or (None, -1)
            if lowered is None or lowered.weight_sources is None:
                lowered, backward = None, -1
            self._prepared = _C.PreparedScan(
                self.program,
                self._forward_program(lowered) if lowered is not None else self.program,
                backward,
                len(self.split.boundary),
                self.lifted_views,
                None if lowered is None else lowered.weight_sources,
            )
        return self._prepared

    def _forward_program(self, lowered) -> int:
        """The forward program for a backward lowered as ``lowered``: the one that also keeps
        the values it reads (registered on first use), or the plain one."""
        if not lowered.kept_ids:
            return self.program
        if self.keeping_program is None:
            self.keeping_program = _register(self, *lower_loop(self.split, lowered.kept_ids))
        return self.keeping_program

    def differentiable(
        self,
        step,
        carry: List[Tensor],
        seqs: List[Tensor],
        weights: List[Tensor],
        T: int,
        mask: Optional[Tensor],
        reverse: bool,
        lifted: bool = False,
        checked: bool = False,
    ):
        """Recurrence.apply's outputs (final carry, boundary values) from one C++ call whose
        autograd node runs the backward program, or None where that cannot run: where the
        step's vjp has no backward program, or the engine cannot run these tensors. The
        backward program is traced and lowered on the first call (``lifted``: a call whose
        weights are the step's lifted tensors, of which the C++ call makes the loop's weights
        by ``lifted_views``, leaves that to the next call with the loop's weights; ``checked``:
        the caller has found that the engine takes these tensors)."""
        if not checked and not self._runs(carry, [*carry, *seqs, *weights]):
            return None
        key = bool(self.kept_candidates)
        if key not in self.backward_programs:
            if lifted:
                return None
            self._prepare_backward(step, carry, seqs, weights, key)
        if self.backward_programs[key] is None:
            return None
        lowered, backward_program = self.backward_programs[key]
        if lifted and lowered.weight_sources is None:
            return None  # the backward's weights need the loop's weights in Python
        B = carry[0].shape[0]
        v = self.vectors
        seqs = numeric_seqs(seqs, carry[0].dtype)
        if v.any:
            carry, seqs = v.inputs(carry, seqs)
        outs = _C.scan_run_differentiable(
            self._forward_program(lowered),
            backward_program,
            len(self.split.boundary),
            carry,
            seqs,
            weights,
            self.lifted_views if lifted else None,
            lowered.weight_sources,
            []
            if lowered.weight_sources is not None
            else self._backward_weights(step, lowered, len(carry) + len(seqs), weights, B),
            mask,
            T,
            reverse,
        )
        _state["runs"] += 1
        if not v.any:
            return outs
        final, boundary = v.results(outs[: len(carry)], outs[len(carry) :])
        return [*final, *boundary]

    def _prepare_backward(self, step, carry, seqs, weights, kept: bool) -> None:
        """Traces the step's vjp and lowers it for a forward that keeps its products (or not),
        from the shapes of a forward's inputs; None where that fails (the Python backward
        then runs the vjp step by step, and raises what it raises there)."""
        B = carry[0].shape[0]
        meta = self.split.prog.meta
        primals = list(carry) + [s[0] for s in seqs] + list(weights)
        like = carry[0]
        boundary = [
            like.new_empty((B, *meta[i].shape[1:]), dtype=meta[i].dtype)
            for i in self.split.boundary
        ]
        self._prepared = None  # made again with the backward program
        try:
            prog = step.traced_vjp(primals, list(carry) + boundary)
            self.backward_programs[kept] = self._lower_backward(step, prog, kept)
        except Exception:
            self.backward_programs[kept] = None

    def _backward_weights(self, step, lowered, n_batched: int, weights: List[Tensor], batch: int):
        """The values the backward program reads as weights: the weights, or values of them
        alone (the vjp's nodes over weights, ``pre_nodes``)."""
        prog = step.vjp_program
        if lowered.pre_nodes or prog.constants:
            env = dict(zip(prog.carry_in[n_batched:], weights))
            env.update(prog.constants)
            with torch.no_grad():
                run_nodes(lowered.pre_nodes, env, batch)
            return [env[i] for i in lowered.weight_ids]
        position = {i: k for k, i in enumerate(prog.carry_in[n_batched:])}
        return [weights[position[i]] for i in lowered.weight_ids]

    def _ready(self, carry: List[Tensor]) -> bool:
        """Whether the engine runs this loop at all (lowered, enabled, a batch of at least
        one)."""
        return self.program is not None and _state["enabled"] and carry[0].shape[0] != 0

    def _runs(self, carry: List[Tensor], tensors: List[Tensor]) -> bool:
        """Whether the op can run these tensors (engine_takes and runnable_now)."""
        return self._ready(carry) and engine_takes(tensors) and runnable_now(tensors)

    def _lower_backward(self, step, prog, kept: bool):
        if not step.differentiable_but_seqs():
            return None
        forward = None
        if kept:
            meta = self.split.prog.meta
            forward = KeptValues(
                step.inputs,
                self.split.loop_nodes,
                self.kept_candidates,
                [meta[i].shape[1] for i in self.kept_candidates],
            )
        lowered = lower_vjp(prog, step.n_carry, step.seq_differentiable(), forward)
        if lowered is None:
            return None
        return lowered, _register(self, lowered.codes, lowered.scalars)
