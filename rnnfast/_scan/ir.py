"""The step program: a list of ATen ops over numbered values, which the reference runner
(runner.py) interprets and the fused engine is to run.

A value is a tensor whose first dimension is the batch (``shape[0] == BATCH``) or a weight-like
tensor without one. Node arguments are ``Ref(id)`` (a value), Python scalars, dtypes, lists of
those, or ``BATCH`` (the batch size the program runs at: B in the loop, T*B where a part runs
over all steps at once)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

BATCH = "B"  # stands for the batch size in shape arguments and value shapes


@dataclass(frozen=True)
class Ref:
    id: int


@dataclass
class Node:
    op: str  # ATen overload, e.g. "aten.addmm.default"
    args: tuple
    kwargs: Dict[str, Any]
    outs: Tuple[int, ...]  # several for split and native_layer_norm
    source: str = ""  # the user's line that traced it, for error messages

    @property
    def refs(self) -> List[int]:
        found: List[int] = []
        _collect_refs(self.args, found)
        _collect_refs(tuple(self.kwargs.values()), found)
        return found


def _collect_refs(args, found):
    for a in args:
        if isinstance(a, Ref):
            found.append(a.id)
        elif isinstance(a, (list, tuple)):
            _collect_refs(a, found)


@dataclass
class ValueMeta:
    dtype: torch.dtype
    shape: Tuple[Any, ...]  # ints, BATCH in front for batch-shaped values

    @property
    def batched(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] == BATCH


@dataclass
class Program:
    """One traced step: ``carry_in`` and ``x_in`` (batch-shaped), ``weights_in`` (the lifted
    tensors), ``constants`` (tensors the step made itself, by value id), ``nodes`` in order,
    ``carry_out`` and ``y_out`` value ids."""

    carry_in: List[int]
    x_in: List[int]
    weights_in: List[int]
    nodes: List[Node]
    carry_out: List[int]
    y_out: List[int]
    meta: Dict[int, ValueMeta] = field(default_factory=dict)
    constants: Dict[int, torch.Tensor] = field(default_factory=dict)
    next_id: int = 0

    def new_id(self, meta: Optional[ValueMeta] = None) -> int:
        i = self.next_id
        self.next_id += 1
        if meta is not None:
            self.meta[i] = meta
        return i

    def dump(self) -> str:
        """A readable listing, one node a line."""
        lines = [f"carry_in={self.carry_in} x_in={self.x_in} weights_in={self.weights_in}"]
        for n in self.nodes:
            lines.append(f"  {n.outs} = {n.op}{n.args}{n.kwargs or ''}")
        lines.append(f"carry_out={self.carry_out} y_out={self.y_out}")
        return "\n".join(lines)


def torch_op(name: str):
    """The OpOverload that an IR op name ("aten.mm.default") stands for."""
    namespace, packet, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), packet), overload)
