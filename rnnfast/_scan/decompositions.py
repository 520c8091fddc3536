"""How a step's ops are traced where torch's own tracing would leave ops the engine does not run:
a decomposition table for make_fx (activations, softmax, norms, var, lerp, mv, amin into the
engine's ops), and torch functions rewritten before they reach ATen (einsum of two operands as a
product, or as a row's dot product)."""

import threading

import torch
from torch._decomp import get_decompositions
from torch.overrides import TorchFunctionMode

# Ops traced as torch's decompositions into the ones the engine runs: activations (F.silu as
# x * sigmoid(x), F.elu, F.gelu, ...), softmax and log_softmax (amax, exp, sum), vector norms
# (F.normalize), addcmul, lerp by a tensor. Those whose decompositions reach prims
# stay whole, as does hardsigmoid, whose ATen gradient in float64 uses a float32 1/6; var and
# std over the last dimension and lerp by a Python scalar have their own below.
_DECOMPOSED = (
    "silu",
    "gelu",
    "elu",
    "celu",
    "selu",
    "leaky_relu",
    "hardswish",
    "mish",
    "glu",
    "softshrink",
    "hardshrink",
    "threshold",
    "logit",
    "logaddexp",
    "_softmax",
    "_log_softmax",
    "logsumexp",
    "linalg_vector_norm",
    "addcmul",
    "addcdiv",
)


def _var(x, dim=None, *, correction=None, keepdim=False):
    """var over the last dimension as its mean, the squared differences' sum and a division
    (torch's own decomposition reaches prims.var); NotImplemented (traced whole) otherwise."""
    if x.dim() < 2 or dim is None or len(dim) != 1 or dim[0] % x.dim() != x.dim() - 1:
        return NotImplemented
    d = x - x.mean(-1, keepdim=True)
    return (d * d).sum(-1, keepdim=keepdim) / max(
        x.shape[-1] - (1 if correction is None else correction), 0
    )


def _lerp(start, end, weight):
    """lerp by a Python scalar with ATen's formula for its weight (torch's decomposition makes
    the weight a tensor of its own)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _std(x, dim=None, *, correction=None, keepdim=False):
    v = _var(x, dim, correction=correction, keepdim=keepdim)
    return v if v is NotImplemented else torch.sqrt(v)


def _mv(m, v):
    """A matrix by a vector (``h @ w``, a score per row) as a product by a one-column weight."""
    return torch.mm(m, v.unsqueeze(-1)).squeeze(-1)


def _amin(x, dim=(), keepdim=False):
    """amin as amax of the negation: the same values, and the same gradient (shared among
    ties)."""
    return -torch.amax(-x, dim, keepdim)


DECOMPOSITIONS = get_decompositions(
    [getattr(torch.ops.aten, name) for name in _DECOMPOSED if hasattr(torch.ops.aten, name)]
    + [torch.ops.aten.lerp.Tensor]
)
DECOMPOSITIONS[torch.ops.aten.var.correction] = _var
DECOMPOSITIONS[torch.ops.aten.std.correction] = _std
DECOMPOSITIONS[torch.ops.aten.lerp.Scalar] = _lerp
DECOMPOSITIONS[torch.ops.aten.mv.default] = _mv
DECOMPOSITIONS[torch.ops.aten.amin.default] = _amin


def _einsum(equation, *operands):
    """einsum of two operands as the engine's ops, where it is one of: a product of matrices
    (``"bi,ih->bh"``, ``"hk,bk->bh"``: mm, each operand transposed where its letters say), a
    matrix by a vector (``"bh,h->b"``: mv), or a product of operands with the same letters summed
    over the trailing ones (``"bh,bh->b"``: a dot product per row); None for any other."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    letters = equation.replace(" ", "") if isinstance(equation, str) else ""
    if len(operands) != 2 or letters.count("->") != 1 or "." in letters or "," not in letters:
        return None
    ins, out = letters.split("->")
    if ins.count(",") != 1:
        return None
    (x, a), (y, b) = zip(operands, ins.split(","))
    if any(len(set(s)) != len(s) for s in (a, b, out)) or (x.dim(), y.dim()) != (len(a), len(b)):
        return None
    if a == b:  # the product, summed over what the result leaves out: trailing dimensions
        kept = len(out)
        if out != a[:kept]:
            return None
        return x * y if kept == len(a) else (x * y).sum(list(range(kept, len(a))))
    shared = set(a) & set(b)
    if len(shared) != 1 or set(out) != set(a + b) - shared or len(out) not in (1, 2):
        return None
    (k,) = shared
    if out[0] not in a:  # the operand that gives the result's rows goes first
        (x, a), (y, b) = (y, b), (x, a)
    if len(a) != 2 or len(b) not in (1, 2):
        return None
    x = x if a == out[0] + k else x.t()
    if len(b) == 1:
        return torch.mv(x, y)
    return torch.mm(x, y if b == k + out[1] else y.t())


def tracing_a_step() -> bool:
    """Whether rnnfast.scan is tracing a step here (rnnfast's cell modules then give their
    math as torch ops rather than the fused op over one step)."""
    return getattr(_tracing, "depth", 0) > 0


_tracing = threading.local()  # per thread: how many traces of a step are under way


class Rewrites(TorchFunctionMode):
    """Torch functions that make_fx would decompose into ops the engine does not run (einsum's
    permutes and bmm), traced as the ops it does (_einsum). On while a step is traced."""

    def __enter__(self):
        _tracing.depth = getattr(_tracing, "depth", 0) + 1
        return super().__enter__()

    def __exit__(self, *exc):
        _tracing.depth -= 1
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.functional.einsum and not kwargs:
            out = _einsum(*args)
            if out is not None:
                return out
        return func(*args, **kwargs)
