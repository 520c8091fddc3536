"""The ops the fused engine runs on batch-shaped values: products of the state by a weight,
pointwise math, row reductions over the last dimension, views that keep each row, and a
weight's rows looked up by token ids (ATen names, as the tracer emits them). Ops on weights
alone (slices, transposes of W) run once per call outside the engine and may be anything."""

import math

from .ir import Node, Ref, ValueMeta

PRODUCTS = {"mm", "addmm"}  # the weight is the last operand

POINTWISE = {
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "fmod",
    "remainder",
    "neg",
    "reciprocal",
    "sigmoid",
    "tanh",
    "relu",
    "exp",
    "expm1",
    "erf",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "exp2",
    "log2",
    "log10",
    "floor",
    "ceil",
    "round",
    "trunc",
    "log",
    "log1p",
    "log_sigmoid_forward",
    "softplus",
    "clamp",
    "clamp_min",
    "clamp_max",
    "minimum",
    "maximum",
    "where",
    "masked_fill",
    "abs",
    "sqrt",
    "rsqrt",
    "pow",
    "hardsigmoid",
    "hardtanh",
    "sign",
    "sgn",
    "gt",
    "lt",
    "ge",
    "le",
    "eq",
    "ne",
    "logical_not",
    "logical_and",
    "logical_or",
    "zeros_like",
    "ones_like",
    "full_like",
    "clone",
    "_to_copy",
    "alias",
    "detach",
    "scalar_tensor",
    "lift_fresh_copy",
}

# Ops whose result is a tensor of its own, which an op in place may update (F.rms_norm adds
# its epsilon to a mean so); not the carry, an input, a lifted tensor or a view of one, which
# the trace would not see change.
FRESH = (POINTWISE - {"alias", "detach"}) | PRODUCTS | {"sum", "mean", "amax"}

# Ops that draw random numbers (F.dropout and nn.Dropout trace as an empty_like that bernoulli_
# fills, which the trace makes out of place), and empty_like, the tensor a draw fills. The
# hoisted and output parts run over every step's rows at once, so they draw for each step as the
# loop would: the same distribution, though not the same numbers for a seed. The loop and the
# weights part refuse them (split.py): the engine's loop has no generator, and the weights part
# runs once per call where the loop would draw anew at every step.
DRAWS = {
    "bernoulli",
    "rand_like",
    "randn_like",
    "uniform",
    "normal_functional",
    "native_dropout",
    "empty_like",
}
FRESH |= DRAWS

# Views that keep the batch in front and each row's elements in order ([B] <-> [B, 1], a row
# reshaped): the same rows, read otherwise. A squeeze must name its dimension (without one it
# would also drop a batch of 1).
ROW_VIEWS = {"view", "reshape", "_unsafe_view", "unsqueeze", "squeeze"}

# Ops that read or write along one dimension: it must be the last one of a batch-shaped value.
LAST_DIM = {
    "split": 2,
    "split_with_sizes": 2,
    "slice": 1,
    "cat": 1,
    "mean": 1,
    "sum": 1,
    "var": 1,
    "native_layer_norm": None,
    "amax": 1,
    "logsumexp": 1,
    "cumsum": 1,
    "flip": 1,
}


REDUCTIONS = {"mean", "sum", "amax", "logsumexp", "var"}


def packet(node: Node) -> str:
    return node.op.split(".")[1]


def check(node: Node, meta_of) -> str:
    """Why the engine cannot run this node on batch-shaped values ('' if it can)."""
    p = packet(node)
    if p in POINTWISE:
        return _broadcast(node, meta_of)
    if p in DRAWS:
        return ""  # the split refuses them in the loop and in the weights part
    if p == "expand":
        return _expand(node, meta_of)
    if p in ("embedding", "index"):
        return _lookup(node, meta_of)
    if p in PRODUCTS:
        return ""  # the weight operand is checked by the split, which knows what is a weight
    if p in ROW_VIEWS:
        return _row_view(node, meta_of)
    if p == "stack":
        return _stack(node, meta_of)
    if p in LAST_DIM:
        pos = LAST_DIM[p]
        first = node.args[0]
        first = first[0] if isinstance(first, (list, tuple)) else first
        m: ValueMeta = meta_of(first.id)
        if pos is None:  # layer_norm: the normalized trailing dimensions must leave the batch
            ok = len(node.args[1]) < len(m.shape)
            return "" if ok else "it normalizes over the batch dimension"
        # Without a dimension (x.sum(), amax's default ()), a reduction is over every one; a
        # split, slice or cat is along the first.
        dim = node.args[pos] if pos < len(node.args) else node.kwargs.get("dim")
        if p in REDUCTIONS and (dim is None or (isinstance(dim, (list, tuple)) and not dim)):
            return "a reduction over every dimension, the batch included"
        dim = 0 if dim is None else dim
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        rank = len(m.shape)
        if rank == 1:
            return "its last dimension is the batch: the value is [B]"
        if all(d % rank == rank - 1 for d in dims):
            return ""
        return f"it works along dimension {dim}, not the last one of a rank-{rank} value"
    return "the engine has no such op on batch-shaped values"


def _row_view(node: Node, meta_of) -> str:
    m, out = meta_of(node.args[0].id), meta_of(node.outs[0])
    if packet(node) == "squeeze":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = dims if isinstance(dims, (list, tuple)) else [dims]
        if None in dims or any(d % len(m.shape) == 0 for d in dims):
            return "a squeeze without a dimension, or of the batch's, would drop a batch of 1"
    if out.batched and math.prod(m.shape[1:]) == math.prod(out.shape[1:]):
        return ""
    return f"it moves the batch dimension (shape {list(m.shape)} to {list(out.shape)})"


def _stack(node: Node, meta_of) -> str:
    """A stack of batch-shaped values after the batch (``torch.stack([h, c], 1)``, a y_t of
    both states): each row of the result from the same row of each. No opcode: in the loop it
    runs through ATen; for a y_t alone, after the loop over all steps' rows."""
    values = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = len(meta_of(values[0].id).shape) + 1
    if all(meta_of(v.id).batched for v in values) and dim % rank != 0:
        return ""
    return f"it stacks along dimension {dim}, the batch's, or values without the batch"


def _broadcast(node: Node, meta_of) -> str:
    """Pointwise ops broadcast as torch does; a [B] operand against a result of more
    dimensions lines up its batch with the result's last dimension, which depends on B."""
    if all(len(meta_of(o).shape) < 2 for o in node.outs):
        return ""
    if any(meta_of(r).batched and len(meta_of(r).shape) == 1 for r in node.refs):
        return "a [B] value broadcast against [B, cols]: unsqueeze it to [B, 1] first"
    return ""


def _expand(node: Node, meta_of) -> str:
    """An expand of a [B, 1] value over the columns, or of a weight over the batch."""
    m, out = meta_of(node.args[0].id), meta_of(node.outs[0])
    if out.batched and (not m.batched or len(m.shape) == len(out.shape)):
        return ""
    return f"it expands shape {list(m.shape)} to {list(out.shape)}"


def _lookup(node: Node, meta_of) -> str:
    """A weight's rows looked up by a batch of indices (an embedding of x_t's tokens): each row
    of the result from its own row of indices."""
    table, indices = node.args[0], node.args[1]
    if node.op == "aten.index.Tensor":
        indices = indices[0] if len(indices) == 1 else None
    elif node.op != "aten.embedding.default":
        return "the engine has no such op on batch-shaped values"
    if (
        isinstance(table, Ref)
        and isinstance(indices, Ref)
        and not meta_of(table.id).batched
        and meta_of(indices.id).batched
    ):
        return ""
    return "of lookups, only a weight's rows by a batch of indices (E[tokens]) are supported"
