"""Splits a traced step into the parts that run differently:

- weights: ops on the lifted tensors alone (slices, transposes of W), once per call;
- hoisted: what depends on x_t and weights only (every x_t @ W), once over all steps (T*B rows);
- loop: the recurrent core, what the next carry needs from the carry, step by step;
- output: what only forms y_t from the loop's values (d2l's H @ W_hq), once after the loop
  over all steps, from the loop values it reads (the boundary, kept per step).

``inline_step`` splits the same step with everything but the weights part in the loop: where
the input products are small, one recurrence (one autograd node, the engine's loop reading
x_t) costs less than the hoisted products' and the output part's own calls and graph.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

from .errors import ScanTraceError
from .ir import Node, Program
from .rewrite import CONST, CORE, HOIST, classify, split_concat_products
from .whitelist import DRAWS, PRODUCTS, check, packet


@dataclass
class SplitStep:
    prog: Program
    weight_nodes: List[Node]
    hoisted_nodes: List[Node]
    loop_nodes: List[Node]
    output_nodes: List[Node]
    loop_seq_in: List[int]  # hoisted values the loop reads at each step
    loop_weights_in: List[int]  # weight values the loop reads
    boundary: List[int]  # loop values (or carry inputs) the output part or y read


def split_step(prog: Program) -> SplitStep:
    split_concat_products(prog)
    cls = classify(prog)
    in_loop = _loop_nodes(prog, cls)
    parts: Dict[str, List[Node]] = {"weights": [], "hoisted": [], "loop": [], "output": []}
    for k, node in enumerate(prog.nodes):
        c = cls[node.outs[0]]
        part = (
            "weights"
            if c == CONST
            else "hoisted"
            if c == HOIST
            else "loop"
            if k in in_loop
            else "output"
        )
        if packet(node) in DRAWS - {"empty_like"} and part in ("weights", "loop"):
            raise _draw_error(node, part)
        if part != "weights":
            _check_engine_op(node, cls, prog)
        parts[part].append(node)
    parts["weights"], parts["loop"] = _scalars_into_loop(
        parts["weights"], parts["loop"], prog, parts["hoisted"] + parts["output"]
    )
    loop_defined = set(prog.carry_in) | {o for n in parts["loop"] for o in n.outs}
    reads = _ordered(r for n in parts["loop"] for r in n.refs)
    reads += _ordered(prog.carry_out)
    outside = [r for r in _ordered(reads) if r not in loop_defined]
    boundary_reads = [r for n in parts["output"] for r in n.refs] + list(prog.y_out)
    return SplitStep(
        prog,
        parts["weights"],
        parts["hoisted"],
        parts["loop"],
        parts["output"],
        loop_seq_in=[r for r in outside if cls[r] == HOIST],
        loop_weights_in=[r for r in outside if cls[r] == CONST],
        boundary=[r for r in _ordered(boundary_reads) if r in loop_defined],
    )


def inline_step(prog: Program) -> Optional[SplitStep]:
    """The step split with its hoisted and output parts inside the loop (see the module
    docstring), or None where the carry or y is a weight; ``prog`` already rewritten by
    split_step."""
    cls = classify(prog)
    weights = [n for n in prog.nodes if cls[n.outs[0]] == CONST]
    loop = [n for n in prog.nodes if cls[n.outs[0]] != CONST]
    weights, loop = _scalars_into_loop(weights, loop, prog, [])
    defined = {o for n in loop for o in n.outs}
    reads = _ordered([r for n in loop for r in n.refs] + list(prog.carry_out) + list(prog.y_out))
    x_read = set(reads) & set(prog.x_in)
    if any(cls[i] == CONST for i in list(prog.carry_out) + list(prog.y_out)):
        return None
    return SplitStep(
        prog,
        weights,
        [],
        loop,
        [],
        loop_seq_in=[i for i in prog.x_in if i in x_read],
        loop_weights_in=[r for r in reads if r not in defined and cls[r] == CONST],
        boundary=_ordered(prog.y_out),
    )


def _scalars_into_loop(weights: List[Node], loop: List[Node], prog: Program, others: List[Node]):
    """(weights, loop) with the 0-d constants that the step makes from nothing (the scalar of
    ``torch.where(c, a, 0.0)``) and the loop reads made in the loop, where they lower to
    immediates: read as weights, the step's vjp would differentiate them. They stay in the
    weights part too where its other nodes or ``others`` (the other parts) read them."""
    loop_reads = {r for n in loop for r in n.refs}
    moved = [
        n
        for n in weights
        if not n.refs
        and len(n.outs) == 1
        and n.outs[0] in loop_reads
        and prog.meta.get(n.outs[0]) is not None
        and prog.meta[n.outs[0]].shape == ()
    ]
    if not moved:
        return weights, loop
    kept_reads = {r for n in weights + others for r in n.refs}
    kept = [n for n in weights if n not in moved or n.outs[0] in kept_reads]
    return kept, moved + loop


def _ordered(ids) -> List[int]:
    return list(dict.fromkeys(ids))


def _loop_nodes(prog, cls) -> set:
    """Indices of the carry-dependent nodes that the next carry needs."""
    needed, found = set(prog.carry_out), set()
    for k in range(len(prog.nodes) - 1, -1, -1):
        node = prog.nodes[k]
        if cls[node.outs[0]] == CORE and any(o in needed for o in node.outs):
            found.add(k)
            needed.update(node.refs)
    return found


def _check_engine_op(node: Node, cls, prog) -> None:
    why = check(node, lambda i: prog.meta[i])
    if not why and packet(node) in PRODUCTS and cls[node.args[-1].id] != CONST:
        why = (
            "a product of two values that change from step to step; the engine multiplies "
            "the state or input by a weight"
        )
    if why:
        at = f", traced at {node.source}" if node.source else ""
        raise ScanTraceError(
            f"rnnfast.scan: combine_fn uses {node.op}, which the fused engine cannot run "
            f"({why}){at}. Pass fallback='loop' to run such a step as a Python loop."
        )


def _draw_error(node: Node, part: str) -> ScanTraceError:
    """The error for a random draw (whitelist.DRAWS) in the loop or in the weights part."""
    at = f", traced at {node.source}" if node.source else ""
    if part == "loop":
        what = (
            "on a value the next carry needs (dropout of the state, noise on it): the fused "
            "engine's loop has no random generator. Draw them before the loop, a mask per step "
            "as an xs leaf [T, B, ...] (torch.bernoulli(torch.full((T, B, H), 1 - p)) / (1 - p)),"
        )
    else:
        what = (
            "from the weights alone (DropConnect): scan makes what depends on the weights "
            "alone once per call, where the loop would draw anew at every step. Draw it once "
            "before the loop,"
        )
    return ScanTraceError(
        f"rnnfast.scan: combine_fn draws random numbers ({node.op}{at}) {what} or pass "
        f"fallback='loop' to run the step as a Python loop."
    )
