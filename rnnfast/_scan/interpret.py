"""Runs IR nodes with ATen ops: the reference runner's one way of executing every part."""

import dataclasses
from typing import Callable, Dict, List

from .ir import BATCH, Node, Ref, torch_op

_FNS: Dict[str, object] = {}


def _resolve(a, env, batch):
    if isinstance(a, Ref):
        return env[a.id]
    if isinstance(a, (list, tuple)):
        return type(a)(_resolve(e, env, batch) for e in a)
    if isinstance(a, str) and a == BATCH:
        return batch
    return a


def _plain(a) -> bool:
    """Whether an argument needs no resolving beyond a value lookup (not a list, not BATCH)."""
    return not isinstance(a, (list, tuple)) and not (isinstance(a, str) and a == BATCH)


def _compile(node: Node) -> Callable[[dict, int], object]:
    """node's op as a function of (env, batch): nodes whose arguments are values and constants
    (most of them) skip the general resolving, which the loop pays at every step."""
    fn = _FNS.get(node.op)
    if fn is None:
        fn = _FNS[node.op] = torch_op(node.op)
    args, kwargs = node.args, node.kwargs
    if kwargs or not all(_plain(a) for a in args):
        return lambda env, batch: fn(
            *[_resolve(a, env, batch) for a in args],
            **{k: _resolve(v, env, batch) for k, v in kwargs.items()},
        )
    refs = [(k, a.id) for k, a in enumerate(args) if isinstance(a, Ref)]
    if len(refs) == len(args) == 1:
        i = refs[0][1]
        return lambda env, batch: fn(env[i])
    if len(refs) == len(args) == 2:
        i, j = refs[0][1], refs[1][1]
        return lambda env, batch: fn(env[i], env[j])
    template = list(args)

    def run(env, batch):
        values = template.copy()
        for k, i in refs:
            values[k] = env[i]
        return fn(*values)

    return run


def run_nodes(nodes: List[Node], env: dict, batch: int) -> None:
    """Runs ``nodes`` in order, reading and writing values by id in ``env``; BATCH in a shape
    stands for ``batch``."""
    for node in nodes:
        entry = node.__dict__.get("_compiled")  # (args it was compiled for, function)
        if entry is None or entry[0] is not node.args:
            entry = node.__dict__["_compiled"] = (node.args, _compile(node))
        out = entry[1](env, batch)
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v


# The products that rnnfast::mm runs (self, mat2, bias), by the argument positions in ATen's.
_ENGINE_PRODUCTS = {"aten.mm.default": (0, 1), "aten.addmm.default": (1, 2, 0)}


def engine_products(nodes: List[Node]) -> List[Node]:
    """``nodes`` with their products (mm, and addmm without scaling) as rnnfast::mm, which runs
    them on the CPU engine's GEMM: for the parts over all steps' rows at once."""
    out = []
    for node in nodes:
        order = _ENGINE_PRODUCTS.get(node.op)
        if order is not None and not node.kwargs and len(node.args) == len(order):
            node = dataclasses.replace(
                node, op="rnnfast.mm.default", args=tuple(node.args[k] for k in order)
            )
        out.append(node)
    return out
