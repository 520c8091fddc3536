"""Lowers the loop part of a split step to the C++ engine's program format
(csrc/scan/scan_program.h): int64 codes and double scalars. A program the engine cannot run
(an op outside the opcode table, a value that is not [B, cols] of the carry's dtype) lowers to
None, and the Python runner runs it."""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .ir import Node, Ref
from .split import SplitStep

VERSION = 1
DTYPES = {torch.float32: 0, torch.float64: 1}
BOOL = torch.bool  # a boolean value is held as 0 or 1 in the program's dtype
NO_OPERAND = -(2**63)  # an absent optional operand

MM, ADDMM = 0, 1
BINARY = {"add": 10, "sub": 11, "mul": 12, "div": 13, "maximum": 14, "minimum": 15}
UNARY = {
    "neg": 20,
    "reciprocal": 21,
    "sigmoid": 22,
    "tanh": 23,
    "relu": 24,
    "exp": 25,
    "expm1": 26,
    "log": 27,
    "log1p": 28,
    "abs": 29,
    "sqrt": 30,
    "rsqrt": 31,
    "log_sigmoid_forward": 32,
    "clone": 33,
    "alias": 33,
    "_to_copy": 33,
}
COMPARE = {"gt": 16, "lt": 17, "ge": 18, "le": 19, "eq": 34, "ne": 35}
WHERE, MASKED_FILL, LOGICAL_AND, LOGICAL_OR, SIGN = 38, 39, 45, 46, 47
SOFTPLUS_BACKWARD, LOG_SIGMOID_BACKWARD = 48, 49
COPY, CLAMP, POW, SOFTPLUS, SPLIT, CAT, ROW_SUM, ROW_MEAN, LAYER_NORM = (
    33,
    40,
    41,
    42,
    50,
    51,
    60,
    61,
    62,
)


class Unsupported(Exception):
    """The engine has no opcode for this node or value."""


def lower_loop(
    split: SplitStep, kept: Sequence[int] = ()
) -> Optional[Tuple[List[int], List[float]]]:
    """(codes, scalars) of the loop part, or None where the engine cannot run it. The values
    ``kept`` are written out per step after the boundary (for the backward)."""
    try:
        return _LoopLowering(split, list(kept)).codes()
    except Unsupported:
        return None


def product_ids(split: SplitStep) -> List[int]:
    """The loop's products by weights: what the forward keeps so the backward need not
    multiply again."""
    return [n.outs[0] for n in split.loop_nodes if n.op.split(".")[1] in ("mm", "addmm")]


class _Lowering:
    """Slots, operands and nodes of a program over values of ``meta`` (one dtype)."""

    def __init__(self, meta, dtype):
        if dtype not in DTYPES:
            raise Unsupported(f"dtype {dtype}")
        self.meta, self.dtype = meta, dtype
        self.slots: Dict[int, int] = {}
        self.cols: List[int] = []
        self.scalars: List[float] = []
        self.nodes: List[int] = []
        self.n_nodes = 0
        self.accumulators: List[Tuple[int, int]] = []  # [rows, cols], rows 0 for a vector
        self.unreadable = set()  # outputs only a backward reads (log_sigmoid's buffer)
        self.immediates: Dict[int, int] = {}  # 0-d constants made in the step: their operand

    def _weight_slot(self, i: int) -> None:
        m = self.meta[i]
        if m.batched or m.dtype != self.dtype:
            raise Unsupported("weight")
        self.slots[i] = len(self.cols)
        self.cols.append(-1)

    def program(self, carry_in, seq_in, weights, carry_out, boundary):
        """(codes, scalars) of the nodes emitted so far with these value ids as the groups."""
        ends = [self._read(i) for i in list(carry_out) + list(boundary)]
        if any(self.cols[s] < 0 for s in ends):
            raise Unsupported("a weight as an output")
        groups = [carry_in, seq_in, weights, carry_out, boundary]
        header = [
            VERSION,
            DTYPES[self.dtype],
            len(self.cols),
            *[len(g) for g in groups],
            self.n_nodes,
            len(self.accumulators),
        ]
        body = [self._read(i) for g in groups for i in g]
        shapes = [d for shape in self.accumulators for d in shape]
        return header + self.cols + body + shapes + self.nodes, self.scalars

    # -- slots and operands --------------------------------------------------------------

    def _batch_slot(self, i: int, unreadable: bool = False) -> int:
        m = self.meta.get(i)
        if unreadable:
            cols = 0
            self.unreadable.add(i)
        elif m is None or not m.batched or len(m.shape) != 2 or m.dtype not in (self.dtype, BOOL):
            raise Unsupported("a value that is not [B, cols] of the carry's dtype")
        else:
            cols = m.shape[1]
        self.slots[i] = len(self.cols)
        self.cols.append(cols)
        return self.slots[i]

    def _read(self, i: int) -> int:
        if i not in self.slots or i in self.unreadable:
            raise Unsupported("a value the loop does not define")
        return self.slots[i]

    def _operand(self, a, cols: int) -> int:
        """A pointwise input over `cols` columns: a slot that broadcasts, or an immediate."""
        if isinstance(a, Ref) and a.id in self.immediates:
            return self.immediates[a.id]
        if isinstance(a, Ref):
            s = self._read(a.id)
            m = self.meta[a.id]
            width = self.cols[s] if self.cols[s] >= 0 else math.prod(m.shape)
            if self.cols[s] < 0 and any(d != 1 for d in m.shape[:-1]):
                raise Unsupported("a weight that is not a row vector")
            if width not in (cols, 1):
                raise Unsupported("a broadcast other than along rows or columns")
            return s
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise Unsupported(f"argument {a!r}")
        return self._immediate(float(a))

    def _immediate(self, value: float) -> int:
        self.scalars.append(value)
        return -len(self.scalars)

    def _emit(self, opcode: int, outs: List[int], ins: List[int], ints=()) -> None:
        self.nodes += [opcode, len(outs), *outs, len(ins), *ins, len(ints), *ints]
        self.n_nodes += 1

    # -- nodes ---------------------------------------------------------------------------

    def _node(self, node: Node) -> None:
        _, name, overload = node.op.split(".")
        handler = _HANDLERS.get(name)
        if handler is None:
            raise Unsupported(node.op)
        handler(self, node, overload)

    def _pointwise(self, opcode: int, node: Node, args, n_outs: int = 1) -> None:
        out = self._batch_slot(node.outs[0])
        extra = [self._batch_slot(o, unreadable=True) for o in node.outs[1:n_outs]]
        ins = [self._operand(a, self.cols[out]) for a in args]
        self._emit(opcode, [out, *extra], ins)
        if node.op.split(".")[1].endswith("_"):
            # In place (autograd's formulas use a few): later reads of the input see the
            # result, written to a new slot rather than into the input's memory.
            self.slots[node.args[0].id] = out


class _LoopLowering(_Lowering):
    def __init__(self, split: SplitStep, kept: List[int]):
        prog = split.prog
        super().__init__(prog.meta, prog.meta[prog.carry_in[0]].dtype)
        self.split, self.kept = split, kept
        for i in prog.carry_in + split.loop_seq_in:
            self._batch_slot(i)
        for i in split.loop_weights_in:
            self._weight_slot(i)

    def codes(self) -> Tuple[List[int], List[float]]:
        for node in self.split.loop_nodes:
            self._node(node)
        prog, split = self.split.prog, self.split
        return self.program(
            prog.carry_in,
            split.loop_seq_in,
            split.loop_weights_in,
            prog.carry_out,
            split.boundary + self.kept,
        )


def _kwargs_default(node: Node, **defaults) -> None:
    for k, v in node.kwargs.items():
        if k not in defaults or defaults[k] != v:
            raise Unsupported(f"{node.op} with {k}={v!r}")


def _arg(node: Node, k: int, name: str, default):
    return node.args[k] if len(node.args) > k else node.kwargs.get(name, default)


def _last_dim(node: Node, dim, rank: int = 2) -> None:
    if dim not in (rank - 1, -1):
        raise Unsupported(f"{node.op} along dimension {dim}")


def _product(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node, beta=1, alpha=1)
    w = node.args[-1]
    if not isinstance(w, Ref) or low.cols[low._read(w.id)] >= 0 or len(low.meta[w.id].shape) != 2:
        raise Unsupported("a product whose right operand is not a 2-D weight")
    a = low._read(node.args[-2].id)
    if low.cols[a] < 0:
        raise Unsupported("a product of a weight by a weight")
    out = low._batch_slot(node.outs[0])
    if node.op.split(".")[1] == "mm":
        low._emit(MM, [out], [a, low._read(w.id)])
    else:
        low._emit(ADDMM, [out], [low._operand(node.args[0], low.cols[out]), a, low._read(w.id)])


def _binary(low: _Lowering, node: Node, overload) -> None:
    name = node.op.split(".")[1]
    if overload not in ("Tensor", "Scalar", "default") or len(node.args) != 2:
        raise Unsupported(node.op)  # div's rounding modes, out= overloads
    if name in ("add", "sub"):
        _kwargs_default(node, alpha=1)
    else:
        _kwargs_default(node)
    low._pointwise(BINARY[name], node, node.args[:2])


def _rsub(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node, alpha=1)
    if len(node.args) > 2 and node.args[2] != 1:
        raise Unsupported("rsub with alpha")
    low._pointwise(BINARY["sub"], node, (node.args[1], node.args[0]))


def _unary(low: _Lowering, node: Node, _overload) -> None:
    name = node.op.split(".")[1]
    if len(node.args) != 1:
        raise Unsupported(node.op)
    if name == "_to_copy" and node.kwargs.get("dtype") == BOOL:
        # to bool: nonzero; from bool to the program's dtype, a copy of its 0/1 below
        _kwargs_default(node, dtype=BOOL, layout=torch.strided, device=torch.device("cpu"))
        low._pointwise(COMPARE["ne"], node, (node.args[0], 0))
        return
    if name == "_to_copy":
        _kwargs_default(node, dtype=low.dtype, layout=torch.strided, device=torch.device("cpu"))
    elif name == "clone":
        _kwargs_default(node, memory_format=torch.contiguous_format)
    else:
        _kwargs_default(node)
    low._pointwise(UNARY[name], node, node.args[:1], n_outs=len(node.outs))


def _clamp(low: _Lowering, node: Node, _overload) -> None:
    name = node.op.split(".")[1]
    _kwargs_default(node)
    x = node.args[0]
    if name == "clamp":
        lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    elif name == "clamp_min":
        lo, hi = node.args[1], None
    elif name == "clamp_max":
        lo, hi = None, node.args[1]
    else:  # hardtanh
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    lo = -math.inf if lo is None else lo
    hi = math.inf if hi is None else hi
    low._pointwise(CLAMP, node, (x, lo, hi))


def _pow(low: _Lowering, node: Node, overload) -> None:
    _kwargs_default(node)
    if overload != "Tensor_Scalar":
        raise Unsupported(node.op)
    x, e = node.args
    if e == 2:
        low._pointwise(BINARY["mul"], node, (x, x))
    elif e == 1:
        low._pointwise(COPY, node, (x,))
    else:
        low._pointwise(POW, node, (x, e))


def _softplus(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    low._pointwise(
        SOFTPLUS, node, (node.args[0], _arg(node, 1, "beta", 1), _arg(node, 2, "threshold", 20))
    )


def _split(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    x = low._read(node.args[0].id)
    _last_dim(node, _arg(node, 2, "dim", 0))
    outs, firsts, first = [], [], 0
    for o in node.outs:
        outs.append(low._batch_slot(o))
        firsts.append(first)
        first += low.cols[outs[-1]]
    if low.cols[x] < 0 or first != low.cols[x]:
        raise Unsupported("a split that does not cover its input")
    low._emit(SPLIT, outs, [x], firsts)


def _slice(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    x = low._read(node.args[0].id)
    _last_dim(node, _arg(node, 1, "dim", 0))
    start, step = _arg(node, 2, "start", None), _arg(node, 4, "step", 1)
    if step != 1 or low.cols[x] < 0:
        raise Unsupported("a strided slice")
    n = low.cols[x]
    start = 0 if start is None else start
    start = min(max(start + n if start < 0 else start, 0), n)
    out = low._batch_slot(node.outs[0])
    low._emit(SPLIT, [out], [x], [start])


def _cat(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    _last_dim(node, _arg(node, 1, "dim", 0))
    ins = [low._read(r.id) for r in node.args[0]]
    if any(low.cols[s] < 0 for s in ins):
        raise Unsupported("a concatenation with a weight")
    low._emit(CAT, [low._batch_slot(node.outs[0])], ins)


def _row_reduction(low: _Lowering, node: Node, overload) -> None:
    name = node.op.split(".")[1]
    _kwargs_default(node, dtype=None)
    if overload not in ("dim", "dim_IntList") or len(node.args) < 3 or node.args[2] is not True:
        raise Unsupported(f"{node.op} without keepdim")
    dims = node.args[1]
    if not isinstance(dims, (list, tuple)) or len(dims) != 1:
        raise Unsupported(f"{node.op} over several dimensions")
    _last_dim(node, dims[0])
    x = low._read(node.args[0].id)
    if low.cols[x] < 0:
        raise Unsupported("a reduction of a weight")
    low._emit(ROW_SUM if name == "sum" else ROW_MEAN, [low._batch_slot(node.outs[0])], [x])


def _layer_norm(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    x, shape, w, b, eps = node.args
    xs = low._read(x.id)
    if len(shape) != 1 or low.cols[xs] != shape[0]:
        raise Unsupported("layer norm over several dimensions")
    affine = []
    for v in (w, b):
        if v is None:
            affine.append(NO_OPERAND)
            continue
        s = low._read(v.id)
        if low.cols[s] >= 0 or low.meta[v.id].shape != (shape[0],):
            raise Unsupported("layer norm with a batch-shaped affine")
        affine.append(s)
    outs = [low._batch_slot(o) for o in node.outs]
    low._emit(LAYER_NORM, outs, [xs, *affine, low._immediate(float(eps))])


def _compare(low: _Lowering, node: Node, overload) -> None:
    if overload not in ("Tensor", "Scalar") or len(node.args) != 2:
        raise Unsupported(node.op)
    _kwargs_default(node)
    low._pointwise(COMPARE[node.op.split(".")[1]], node, node.args)


def _logical(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    name = node.op.split(".")[1].rstrip("_")
    if name == "logical_not":
        low._pointwise(COMPARE["eq"], node, (node.args[0], 0))
    else:
        low._pointwise(LOGICAL_AND if name == "logical_and" else LOGICAL_OR, node, node.args[:2])


def _where(low: _Lowering, node: Node, overload) -> None:
    _kwargs_default(node)
    if overload not in ("self", "ScalarSelf", "ScalarOther", "Scalar") or len(node.args) != 3:
        raise Unsupported(node.op)
    low._pointwise(WHERE, node, node.args)


def _masked_fill(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    low._pointwise(MASKED_FILL, node, node.args[:3])


def _sign(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    low._pointwise(SIGN, node, node.args[:1])


def _scalar_tensor(low: _Lowering, node: Node, _overload) -> None:
    """A 0-d constant the step (or autograd's formula) makes: an immediate operand."""
    _kwargs_default(
        node, dtype=low.dtype, layout=torch.strided, device=torch.device("cpu"), pin_memory=False
    )
    value = node.args[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported(f"scalar_tensor of {value!r}")
    low.immediates[node.outs[0]] = low._immediate(float(value))


def _fill_like(low: _Lowering, node: Node, _overload) -> None:
    """zeros_like, ones_like, full_like of a batch value: its rows filled with one value."""
    name = node.op.split(".")[1]
    allowed = {
        "dtype": (None, low.dtype, low.meta[node.args[0].id].dtype),
        "layout": (None, torch.strided),
        "device": (None, torch.device("cpu")),
        "pin_memory": (None, False),
        "memory_format": (None, torch.preserve_format),
    }
    for k, v in node.kwargs.items():
        if v not in allowed.get(k, ()):
            raise Unsupported(f"{node.op} with {k}={v!r}")
    value = {"zeros_like": 0.0, "ones_like": 1.0}.get(name)
    if value is None:
        value = node.args[1]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported(f"{name} of {value!r}")
    low._read(node.args[0].id)
    low._emit(COPY, [low._batch_slot(node.outs[0])], [low._immediate(float(value))])


def _expand(low: _Lowering, node: Node, _overload) -> None:
    """A [B, 1] value broadcast over the columns (or an expand to its own shape)."""
    _kwargs_default(node, implicit=False)
    low._pointwise(COPY, node, node.args[:1])


def _view(low: _Lowering, node: Node, _overload) -> None:
    """A view or reshape that keeps [B, cols]: the same value."""
    x = node.args[0]
    m, out = low.meta.get(x.id), low.meta.get(node.outs[0])
    if m is None or out is None or tuple(m.shape) != tuple(out.shape):
        raise Unsupported(f"{node.op} to another shape")
    low.slots[node.outs[0]] = low._read(x.id)


def _softplus_backward(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)
    low._pointwise(SOFTPLUS_BACKWARD, node, node.args[:4])


def _log_sigmoid_backward(low: _Lowering, node: Node, _overload) -> None:
    _kwargs_default(node)  # the third argument, forward's buffer, is not read on the CPU
    low._pointwise(LOG_SIGMOID_BACKWARD, node, node.args[:2])


_HANDLERS = {
    "mm": _product,
    "addmm": _product,
    "rsub": _rsub,
    "clamp": _clamp,
    "clamp_min": _clamp,
    "clamp_max": _clamp,
    "hardtanh": _clamp,
    "pow": _pow,
    "softplus": _softplus,
    "split": _split,
    "split_with_sizes": _split,
    "slice": _slice,
    "cat": _cat,
    "sum": _row_reduction,
    "mean": _row_reduction,
    "native_layer_norm": _layer_norm,
    **{name: _compare for name in COMPARE},
    **{name: _logical for name in ("logical_and", "logical_or", "logical_not")},
    **{name + "_": _logical for name in ("logical_and", "logical_or", "logical_not")},
    "where": _where,
    "masked_fill": _masked_fill,
    "masked_fill_": _masked_fill,
    "sign": _sign,
    "sgn": _sign,
    "scalar_tensor": _scalar_tensor,
    "zeros_like": _fill_like,
    "ones_like": _fill_like,
    "full_like": _fill_like,
    "expand": _expand,
    "view": _view,
    "reshape": _view,
    "_unsafe_view": _view,
    "softplus_backward": _softplus_backward,
    "log_sigmoid_backward": _log_sigmoid_backward,
    **{name: _binary for name in BINARY},
    **{name: _unary for name in UNARY},
}
