"""Runs IR nodes with ATen ops: the reference runner's one way of executing every part."""

from typing import Dict, List

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


def run_nodes(nodes: List[Node], env: dict, batch: int) -> None:
    """Runs ``nodes`` in order, reading and writing values by id in ``env``; BATCH in a shape
    stands for ``batch``."""
    for node in nodes:
        fn = _FNS.get(node.op)
        if fn is None:
            fn = _FNS[node.op] = torch_op(node.op)
        args = [_resolve(a, env, batch) for a in node.args]
        kwargs = {k: _resolve(v, env, batch) for k, v in node.kwargs.items()} if node.kwargs else {}
        out = fn(*args, **kwargs)
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v
