"""The lowering of each ATen op the engine runs, one handler per op packet (``HANDLERS``): it
checks the arguments the opcode supports (raising Unsupported otherwise) and emits the node
through the Lowering (lower.py) it is given."""

import math
from typing import TYPE_CHECKING

import torch

from .ir import Node, Ref
from .opcodes import (
    ADDMM,
    BINARY,
    BOOL,
    CAT,
    CLAMP,
    COMPARE,
    COPY,
    DIV_ROUNDING,
    LAYER_NORM,
    LOG_SIGMOID_BACKWARD,
    LOGICAL_AND,
    LOGICAL_OR,
    MASKED_FILL,
    MM,
    NO_OPERAND,
    POW,
    ROW_CUMSUM,
    ROW_FLIP,
    ROW_MAX,
    ROW_MEAN,
    ROW_SUM,
    SIGN,
    SOFTPLUS,
    SOFTPLUS_BACKWARD,
    SPLIT,
    UNARY,
    WHERE,
    Unsupported,
)

if TYPE_CHECKING:
    from .lower import Lowering


def kwargs_default(node: Node, **defaults) -> None:
    for k, v in node.kwargs.items():
        if k not in defaults or defaults[k] != v:
            raise Unsupported(f"{node.op} with {k}={v!r}")


def _arg(node: Node, k: int, name: str, default):
    return node.args[k] if len(node.args) > k else node.kwargs.get(name, default)


def _last_dim(node: Node, dim, rank: int = 2) -> None:
    if dim not in (rank - 1, -1):
        raise Unsupported(f"{node.op} along dimension {dim}")


def _product(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node, beta=1, alpha=1)
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


def _binary(low: "Lowering", node: Node, overload) -> None:
    name = node.op.split(".")[1]
    if name == "div" and overload in ("Tensor_mode", "Scalar_mode") and len(node.args) == 2:
        mode = node.kwargs.get("rounding_mode")
        if set(node.kwargs) != {"rounding_mode"} or mode not in DIV_ROUNDING:
            raise Unsupported(f"{node.op} with rounding_mode={mode!r}")
        low._pointwise(DIV_ROUNDING[mode], node, node.args[:2])
        return
    if overload not in ("Tensor", "Scalar", "default") or len(node.args) != 2:
        raise Unsupported(node.op)  # out= overloads, a Python scalar divided by a tensor
    if name in ("add", "sub"):
        kwargs_default(node, alpha=1)
    else:
        kwargs_default(node)
    low._pointwise(BINARY[name], node, node.args[:2])


def _rsub(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node, alpha=1)
    if len(node.args) > 2 and node.args[2] != 1:
        raise Unsupported("rsub with alpha")
    low._pointwise(BINARY["sub"], node, (node.args[1], node.args[0]))


def _unary(low: "Lowering", node: Node, _overload) -> None:
    name = node.op.split(".")[1]
    if len(node.args) != 1:
        raise Unsupported(node.op)
    if name == "_to_copy" and node.kwargs.get("dtype") == BOOL:
        # to bool: nonzero; from bool to the program's dtype, a copy of its 0/1 below
        kwargs_default(node, dtype=BOOL, layout=torch.strided, device=torch.device("cpu"))
        low._pointwise(COMPARE["ne"], node, (node.args[0], 0))
        return
    if name == "_to_copy":
        kwargs_default(node, dtype=low.dtype, layout=torch.strided, device=torch.device("cpu"))
    elif name == "clone":
        kwargs_default(node, memory_format=torch.contiguous_format)
    else:
        kwargs_default(node)
    low._pointwise(UNARY[name], node, node.args[:1], n_outs=len(node.outs))


def _clamp(low: "Lowering", node: Node, _overload) -> None:
    name = node.op.split(".")[1]
    kwargs_default(node)
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


def _pow(low: "Lowering", node: Node, overload) -> None:
    kwargs_default(node)
    if overload != "Tensor_Scalar":
        raise Unsupported(node.op)
    x, e = node.args
    if e == 2:
        low._pointwise(BINARY["mul"], node, (x, x))
    elif e == 1:
        low._pointwise(COPY, node, (x,))
    else:
        low._pointwise(POW, node, (x, e))


def _softplus(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    low._pointwise(
        SOFTPLUS, node, (node.args[0], _arg(node, 1, "beta", 1), _arg(node, 2, "threshold", 20))
    )


def _split(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
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


def _slice(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
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


def _cat(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    _last_dim(node, _arg(node, 1, "dim", 0))
    ins = [low._read(r.id) for r in node.args[0]]
    if any(low.cols[s] < 0 for s in ins):
        raise Unsupported("a concatenation with a weight")
    low._emit(CAT, [low._batch_slot(node.outs[0])], ins)


def _row_reduction(low: "Lowering", node: Node, overload) -> None:
    name = node.op.split(".")[1]
    kwargs_default(node, dtype=None)
    if overload not in ("dim", "dim_IntList", "default") or len(node.args) < 2:
        raise Unsupported(f"{node.op} without a dimension")
    dims = node.args[1]
    if not isinstance(dims, (list, tuple)) or len(dims) != 1:
        raise Unsupported(f"{node.op} over several dimensions")
    _last_dim(node, dims[0])
    if len(low.meta[node.args[0].id].shape) != 2:  # the last dimension of [B] is the batch
        raise Unsupported(f"{node.op} of a value that is not [B, cols]")
    x = low._read(node.args[0].id)  # with keepdim [B, 1], without [B]: both held as [B, 1]
    if low.cols[x] < 0:
        raise Unsupported("a reduction of a weight")
    opcode = {"sum": ROW_SUM, "mean": ROW_MEAN, "amax": ROW_MAX}[name]
    count = name == "sum" and low.meta[node.args[0].id].dtype == BOOL  # amax's gradient has one
    low._emit(opcode, [low._batch_slot(node.outs[0], count=count)], [x])


def _row_scan(low: "Lowering", node: Node, _overload) -> None:
    """cumsum or flip along the last dimension of a [B, cols] value."""
    name = node.op.split(".")[1]
    kwargs_default(node, dtype=None)
    if len(node.args) != 2 or (name == "cumsum" and low.meta[node.outs[0]].dtype != low.dtype):
        raise Unsupported(f"{node.op} with a dtype")
    dims = node.args[1] if name == "flip" else [node.args[1]]
    if len(dims) != 1:
        raise Unsupported(f"{node.op} over several dimensions")
    _last_dim(node, dims[0])
    if len(low.meta[node.args[0].id].shape) != 2:
        raise Unsupported(f"{node.op} of a value that is not [B, cols]")
    x = low._read(node.args[0].id)
    if low.cols[x] < 0:
        raise Unsupported(f"{node.op} of a weight")
    opcode = ROW_CUMSUM if name == "cumsum" else ROW_FLIP
    low._emit(opcode, [low._batch_slot(node.outs[0])], [x])


def _layer_norm(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
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


def _compare(low: "Lowering", node: Node, overload) -> None:
    if overload not in ("Tensor", "Scalar") or len(node.args) != 2:
        raise Unsupported(node.op)
    kwargs_default(node)
    low._pointwise(COMPARE[node.op.split(".")[1]], node, node.args)


def _logical(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    name = node.op.split(".")[1].rstrip("_")
    if name == "logical_not":
        low._pointwise(COMPARE["eq"], node, (node.args[0], 0))
    else:
        low._pointwise(LOGICAL_AND if name == "logical_and" else LOGICAL_OR, node, node.args[:2])


def _where(low: "Lowering", node: Node, overload) -> None:
    kwargs_default(node)
    if overload not in ("self", "ScalarSelf", "ScalarOther", "Scalar") or len(node.args) != 3:
        raise Unsupported(node.op)
    low._pointwise(WHERE, node, node.args)


def _masked_fill(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    low._pointwise(MASKED_FILL, node, node.args[:3])


def _sign(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    low._pointwise(SIGN, node, node.args[:1])


def _scalar_tensor(low: "Lowering", node: Node, _overload) -> None:
    """A 0-d constant the step (or autograd's formula) makes: an immediate operand."""
    kwargs_default(
        node, dtype=low.dtype, layout=torch.strided, device=torch.device("cpu"), pin_memory=False
    )
    value = node.args[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported(f"scalar_tensor of {value!r}")
    low.immediates[node.outs[0]] = low._immediate(float(value))


def _fill_like(low: "Lowering", node: Node, _overload) -> None:
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


def _expand(low: "Lowering", node: Node, _overload) -> None:
    """A [B, 1] value broadcast over the columns (or an expand to its own shape)."""
    kwargs_default(node, implicit=False)
    low._pointwise(COPY, node, node.args[:1])


def _view(low: "Lowering", node: Node, overload) -> None:
    """A view, reshape, unsqueeze or squeeze that keeps each row ([B] <-> [B, 1], or a shape
    kept): the same value, since [B] is held as [B, 1]."""
    x = node.args[0]
    m, out = low.meta.get(x.id), low.meta.get(node.outs[0])
    if node.op.split(".")[1] == "squeeze" and (
        overload == "default" or m is None or out is None or m.shape == out.shape
    ):
        raise Unsupported("a squeeze that could drop a batch of 1")
    if m is None or out is None or tuple(m.shape) != tuple(out.shape):
        if not (m is not None and out is not None and m.batched and out.batched):
            raise Unsupported(f"{node.op} to another shape")
        if max(len(m.shape), len(out.shape)) > 2 or _row_width(m) != _row_width(out):
            raise Unsupported(f"{node.op} to another shape")
    low.slots[node.outs[0]] = low._read(x.id)


def _row_width(m) -> int:
    return math.prod(m.shape[1:])


def _softplus_backward(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)
    low._pointwise(SOFTPLUS_BACKWARD, node, node.args[:4])


def _log_sigmoid_backward(low: "Lowering", node: Node, _overload) -> None:
    kwargs_default(node)  # the third argument, forward's buffer, is not read on the CPU
    low._pointwise(LOG_SIGMOID_BACKWARD, node, node.args[:2])


HANDLERS = {
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
    "amax": _row_reduction,
    "cumsum": _row_scan,
    "flip": _row_scan,
    "native_layer_norm": _layer_norm,
    **{name: _compare for name in COMPARE},
    **{name: _logical for name in ("logical_and", "logical_or", "logical_not")},
    "where": _where,
    "masked_fill": _masked_fill,
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
    "unsqueeze": _view,
    "squeeze": _view,
    "softplus_backward": _softplus_backward,
    "log_sigmoid_backward": _log_sigmoid_backward,
    **{name: _binary for name in BINARY},
    **{name: _unary for name in UNARY},
}
