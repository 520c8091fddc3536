"""Rewrites of a traced step before it is split: a product of a concatenation of the state and
the input by a weight (``cat([h, x]) @ W``, the LSTM of numpy-style course notes) becomes the sum
of each part's product by its rows of W, so that the input's product is hoisted out of the loop;
then dead code goes."""

from typing import Dict, List

from .ir import Node, Program, Ref, ValueMeta
from .whitelist import packet

CONST, HOIST, CORE = 0, 1, 2  # value classes: weights only; input and weights; the state


def classify(prog: Program) -> Dict[int, int]:
    """Each value's class: CORE if it depends on the carry, else HOIST if on x (or is made at
    the batch size), else CONST."""
    cls = {i: CONST for i in prog.weights_in + list(prog.constants)}
    cls.update({i: HOIST for i in prog.x_in})
    cls.update({i: CORE for i in prog.carry_in})
    for node in prog.nodes:
        c = max((cls[r] for r in node.refs), default=CONST)
        if c == CONST and any(
            prog.meta.get(o) is not None and prog.meta[o].batched for o in node.outs
        ):
            c = HOIST
        for o in node.outs:
            cls[o] = c
    return cls


def split_concat_products(prog: Program) -> None:
    cls = classify(prog)
    made_by = {o: n for n in prog.nodes for o in n.outs}
    nodes: List[Node] = []
    for node in prog.nodes:
        parts = _mixed_concat_operand(node, made_by, cls, prog)
        if parts is None:
            nodes.append(node)
            continue
        nodes.extend(_products_by_part(prog, node, parts, cls))
    prog.nodes = nodes
    remove_dead_code(prog)


def _mixed_concat_operand(node, made_by, cls, prog):
    """The parts of a concatenation (along its last dim) that ``node``, a product by a
    weight, multiplies, where they differ in class; None otherwise."""
    p = packet(node)
    if p not in ("mm", "addmm") or node.kwargs:
        return None
    lhs, weight = node.args[-2], node.args[-1]
    cat = made_by.get(lhs.id)
    if cat is None or packet(cat) != "cat" or cls[weight.id] != CONST:
        return None
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    if dim not in (1, -1):
        return None
    parts = list(cat.args[0])
    if len({cls[r.id] for r in parts}) < 2:
        return None
    return parts


def _products_by_part(prog, node, parts, cls):
    """mm(part_i, W[rows_i]) for each part, hoistable ones first, summed into node's output."""
    weight = node.args[-1]
    w_meta = prog.meta[weight.id]
    out_meta = prog.meta[node.outs[0]]
    rows, offset = [], 0
    for r in parts:
        width = prog.meta[r.id].shape[-1]
        rows.append((r, offset, width))
        offset += width
    rows.sort(key=lambda item: cls[item[0].id])
    new_nodes, total = [], None
    for k, (part, start, width) in enumerate(rows):
        w_rows = prog.new_id(ValueMeta(w_meta.dtype, (width, *w_meta.shape[1:])))
        cls[w_rows] = CONST
        new_nodes.append(
            Node("aten.slice.Tensor", (weight, 0, start, start + width), {}, (w_rows,), node.source)
        )
        last = k == len(rows) - 1
        product = node.outs[0] if last and total is None else prog.new_id(out_meta)
        if k == 0 and packet(node) == "addmm":
            new_nodes.append(
                Node(
                    "aten.addmm.default",
                    (node.args[0], part, Ref(w_rows)),
                    {},
                    (product,),
                    node.source,
                )
            )
        else:
            new_nodes.append(
                Node("aten.mm.default", (part, Ref(w_rows)), {}, (product,), node.source)
            )
        cls[product] = max(cls[part.id], CONST)
        if total is None:
            total = product
            continue
        summed = node.outs[0] if last else prog.new_id(out_meta)
        new_nodes.append(
            Node("aten.add.Tensor", (Ref(total), Ref(product)), {}, (summed,), node.source)
        )
        cls[summed] = max(cls[total], cls[product])
        total = summed
    return new_nodes


def remove_dead_code(prog: Program) -> None:
    live = set(prog.carry_out) | set(prog.y_out)
    kept = []
    for node in reversed(prog.nodes):
        if any(o in live for o in node.outs):
            kept.append(node)
            live.update(node.refs)
    prog.nodes = kept[::-1]
