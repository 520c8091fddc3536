"""Lowers the loop step's traced vjp (LoopStep.vjp_program) to a backward program for the C++
engine: the carries' gradients are its carries, the primal carries and sequences and the
boundary cotangents its per-step inputs, the sequences' gradients its per-step outputs, and
the weights' gradients (a^T g products, column sums of g) accumulators summed over the steps.
Nodes over weights alone run once per backward in Python (``pre_nodes``)."""

from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from .ir import BATCH, Node, Program, Ref
from .lower import Lowering
from .lower_ops import HANDLERS, kwargs_default
from .opcodes import (
    ACCUMULATE_COLUMN_SUM,
    ACCUMULATE_PRODUCT,
    COPY,
    HARDTANH_BACKWARD,
    LAYER_NORM_BACKWARD,
    NO_OPERAND,
    SIGMOID_BACKWARD,
    SLICE_BACKWARD,
    TANH_BACKWARD,
    THRESHOLD_BACKWARD,
    Unsupported,
)


class KeptValues(NamedTuple):
    """Values of the forward's step it can keep per step for the backward to read rather than
    compute again (lower.kept_candidates): the loop step's inputs and nodes (to find them in
    the vjp's recomputation of the forward), their ids and column counts."""

    inputs: List[int]
    loop_nodes: List[Node]
    ids: List[int]
    cols: List[int]


class BackwardProgram:
    """codes and scalars for the engine; ``pre_nodes`` to run over the weights first, and the
    ids of the weight values the engine reads (``weight_ids``). ``weight_sources``: where each
    of those is a weight of the step (k) or its transpose (the usual pre-node, W^T for the
    gradient of x @ W), as 2 * k + transposed; None where some value needs the pre-nodes.
    ``kept_ids``: the forward's kept values it reads per step, in order (KeptValues' ids)."""

    def __init__(self, codes, scalars, pre_nodes, weight_ids, sources, kept_ids=()):
        self.codes, self.scalars = codes, scalars
        self.pre_nodes, self.weight_ids = pre_nodes, weight_ids
        self.weight_sources: Optional[List[int]] = sources
        self.kept_ids: List[int] = list(kept_ids)


def _weight_sources(prog: Program, pre: List[Node], weight_ids: List[int], n_batched: int):
    """BackwardProgram.weight_sources."""
    position = {i: k for k, i in enumerate(prog.carry_in[n_batched:])}
    transposed = {
        n.outs[0]: position[n.refs[0]]
        for n in pre
        if n.op == "aten.t.default" and len(n.refs) == 1 and n.refs[0] in position
    }
    sources = []
    for i in weight_ids:
        if i in position:
            sources.append(2 * position[i])
        elif i in transposed:
            sources.append(2 * transposed[i] + 1)
        else:
            return None
    return sources


def lower_vjp(
    prog: Program, n_carry: int, seq_diff: List[bool], kept: Optional[KeptValues] = None
) -> Optional[BackwardProgram]:
    """The backward program, or None where it has an op outside the engine's table.
    ``seq_diff``: per sequence, whether the vjp gives its gradient (not for a boolean mask,
    whose gradient the program gives as zeros). With ``kept``, its nodes that recompute one of
    the kept values read it per step instead, and what only they needed is not computed."""
    try:
        return _VjpLowering(prog, n_carry, seq_diff, kept).lower()
    except Unsupported:
        return None


class _VjpLowering(Lowering):
    def __init__(
        self, prog: Program, n_carry: int, seq_diff: List[bool], kept: Optional[KeptValues]
    ):
        super().__init__(prog.meta, prog.meta[prog.carry_in[0]].dtype)
        self.prog, self.n_carry, self.kept = prog, n_carry, kept
        self.n_seq, self.seq_diff = len(seq_diff), list(seq_diff)
        n_grads = len(prog.carry_in) - self.seq_diff.count(False)
        if len(prog.carry_out) != n_grads or len(prog.x_in) < n_carry:
            raise Unsupported("a primal without a gradient")
        self.transposed: Dict[int, int] = {}  # t(batch value): the value's id
        self.terms: Dict[int, List[Tuple]] = {}  # per-step weight-gradient terms

    def lower(self) -> BackwardProgram:
        prog, n_carry, n_seq = self.prog, self.n_carry, self.n_seq
        const = set(prog.carry_in[n_carry + n_seq :]) | set(prog.constants)
        pre, step = [], []
        for node in prog.nodes:
            batched = any(self.meta.get(o) is not None and self.meta[o].batched for o in node.outs)
            if all(r in const for r in node.refs) and not batched:
                pre.append(node)
                const.update(node.outs)
            else:
                step.append(node)
        recomputed = self._recomputed_kept()
        step, read = _live(step, prog.carry_out, recomputed)
        weight_ids = list(
            dict.fromkeys(
                r for n in step if n.outs[0] not in recomputed for r in n.refs if r in const
            )
        )
        cot_carry, per_step_cot = prog.x_in[:n_carry], prog.x_in[n_carry:]
        primal_rows = prog.carry_in[: n_carry + n_seq]
        for i in cot_carry + primal_rows + per_step_cot:
            self._batch_slot(i)
        kept_keys, kept_ids = self._kept_slots(recomputed, read)
        weight_ids = self._immediate_scalars(pre, weight_ids)
        for i in weight_ids:
            self._weight_slot(i)
        for node in step:
            if node.outs[0] not in recomputed:
                self._vjp_node(node)
        n_seq_grads = sum(self.seq_diff)
        for k, i in enumerate(prog.carry_out[n_carry + n_seq_grads :]):
            self._accumulate(k, i)
        codes, scalars = self.program(
            cot_carry,
            primal_rows + per_step_cot + kept_keys,
            weight_ids,
            prog.carry_out[:n_carry],
            self._seq_gradients(prog.carry_out[n_carry : n_carry + n_seq_grads]),
        )
        sources = _weight_sources(prog, pre, weight_ids, n_carry + n_seq)
        return BackwardProgram(codes, scalars, pre, weight_ids, sources, kept_ids)

    def _immediate_scalars(self, pre: List[Node], weight_ids: List[int]) -> List[int]:
        """weight_ids less the 0-d constants that autograd's formulas make (where's zero),
        which the program reads as immediates (so that the weights stay the step's own:
        BackwardProgram.weight_sources)."""
        made = {n.outs[0]: n for n in pre if n.op == "aten.scalar_tensor.default"}
        for i in weight_ids:
            if i in made:
                try:
                    HANDLERS["scalar_tensor"](self, made[i], "default")
                except Unsupported:
                    pass
        return [i for i in weight_ids if i not in self.immediates]

    def _seq_gradients(self, given: List[int]) -> list:
        """The sequences' gradients: the vjp's, and zeros for the masks it gives none."""
        it, grads = iter(given), []
        for k, diff in enumerate(self.seq_diff):
            if diff:
                grads.append(next(it))
                continue
            primal = self._read(self.prog.carry_in[self.n_carry + k])
            grads.append(("zero gradient", k))
            self.slots[grads[-1]] = self._anonymous_slot(self.cols[primal])
            self._emit(COPY, [self.slots[grads[-1]]], [self._immediate(0.0)])
        return grads

    def _recomputed_kept(self) -> Dict[int, int]:
        """The vjp's nodes (one output each) that recompute a kept value, by their output's
        id: the kept value's position in KeptValues."""
        if self.kept is None:
            return {}
        position = {i: k for k, i in enumerate(self.kept.ids)}
        found = {}
        for vjp_id, forward_id in _recomputed(self.prog, self.kept).items():
            k = position.get(forward_id)
            if k is not None and self.meta[vjp_id].shape[-1] == self.kept.cols[k]:
                found[vjp_id] = k
        return found

    def _kept_slots(self, recomputed: Dict[int, int], read: set):
        """Slots (keys ("kept", k)) of the kept values that the backward reads, the vjp's
        recomputations of them mapped onto those slots; and the read values' forward ids."""
        keys, ids = [], []
        for k in sorted({recomputed[i] for i in read if i in recomputed}):
            keys.append(("kept", k))
            ids.append(self.kept.ids[k])
            self.slots[keys[-1]] = len(self.cols)
            self.cols.append(self.kept.cols[k])
        for vjp_id, k in recomputed.items():
            if ("kept", k) in self.slots:
                self.slots[vjp_id] = self.slots[("kept", k)]
        return keys, ids

    def _vjp_node(self, node: Node) -> None:
        name = node.op.split(".")[1]
        refs = node.refs
        if name in ("tanh_backward", "sigmoid_backward"):
            kwargs_default(node)
            code = TANH_BACKWARD if name == "tanh_backward" else SIGMOID_BACKWARD
            self._pointwise(code, node, node.args[:2])
        elif name in ("threshold_backward", "hardtanh_backward"):
            kwargs_default(node)
            code = THRESHOLD_BACKWARD if name == "threshold_backward" else HARDTANH_BACKWARD
            self._pointwise(code, node, node.args)
        elif name == "zeros" and node.args and list(node.args[0][:1]) == [BATCH]:
            kwargs_default(
                node,
                dtype=self.dtype,
                layout=torch.strided,
                device=torch.device("cpu"),
                pin_memory=False,
            )
            self._emit(COPY, [self._batch_slot(node.outs[0])], [self._immediate(0.0)])
        elif name == "slice_backward":
            self._slice_backward(node)
        elif name == "native_layer_norm_backward":
            self._layer_norm_backward(node)
        elif name == "t" and refs[0] in self.slots and self.cols[self.slots[refs[0]]] >= 0:
            self.transposed[node.outs[0]] = refs[0]
        elif name == "t" and refs[0] in self.terms:
            self.terms[node.outs[0]] = [_flip(term) for term in self.terms[refs[0]]]
        elif name in ("view", "reshape", "_unsafe_view") and refs[0] in self.terms:
            self.terms[node.outs[0]] = self.terms[refs[0]]
        elif (
            name == "add"
            and len(refs) == 2
            and all(r in self.terms for r in refs)
            and not node.kwargs
        ):
            self.terms[node.outs[0]] = self.terms[refs[0]] + self.terms[refs[1]]
        elif name == "mm" and refs[0] in self.transposed:
            g = self._read(refs[1])
            if self.cols[g] < 0:
                raise Unsupported("a product of a transposed value by a weight")
            self.terms[node.outs[0]] = [("mm", self.slots[self.transposed[refs[0]]], g, 0)]
        elif name == "sum" and _over_batch(node) and refs[0] in self.slots:
            self.terms[node.outs[0]] = [("colsum", self._read(refs[0]))]
        else:
            self._node(node)

    def _slice_backward(self, node: Node) -> None:
        kwargs_default(node)
        g, _, dim, start, _, step = node.args
        out = self._batch_slot(node.outs[0])
        n, width = self.cols[out], self.cols[self._read(g.id)]
        start = min(max(start + n if start < 0 else start, 0), n)
        if dim not in (1, -1) or step != 1 or width < 0 or start + width > n:
            raise Unsupported("a slice_backward other than a last-dim slice")
        self._emit(SLICE_BACKWARD, [out], [self._read(g.id)], [start])

    def _layer_norm_backward(self, node: Node) -> None:
        """dx a batch value; the weight's and bias' gradients column sums of g * x_hat and g."""
        kwargs_default(node)
        g, x, shape, mean, rstd, w, _, mask = node.args
        gs, xs = self._read(g.id), self._read(x.id)
        if len(shape) != 1 or self.cols[xs] != shape[0] or self.cols[gs] != shape[0]:
            raise Unsupported("layer norm over several dimensions")
        w_slot = NO_OPERAND
        if w is not None:
            w_slot = self._read(w.id)
            if self.cols[w_slot] >= 0 or tuple(self.meta[w.id].shape) != (shape[0],):
                raise Unsupported("layer norm with a batch-shaped weight")
        dx = self._batch_slot(node.outs[0]) if mask[0] else self._anonymous_slot(shape[0])
        g_xhat = self._anonymous_slot(shape[0])
        self._emit(
            LAYER_NORM_BACKWARD,
            [dx, g_xhat],
            [gs, xs, self._read(mean.id), self._read(rstd.id), w_slot],
        )
        if mask[1]:
            self.terms[node.outs[1]] = [("colsum", g_xhat)]
        if mask[2]:
            self.terms[node.outs[2]] = [("colsum", gs)]

    def _anonymous_slot(self, cols: int) -> int:
        self.cols.append(cols)
        return len(self.cols) - 1

    def _accumulate(self, k: int, i: int) -> None:
        """Emits the terms of weight gradient i into accumulator k, of the weight's shape."""
        # no terms: a weight the step reads only where no gradient passes (a comparison's
        # operand), whose gradient the vjp makes with zeros_like
        zero = i not in self.terms
        if zero and not any(
            n.outs == (i,) and n.op == "aten.zeros_like.default" for n in self.prog.nodes
        ):
            raise Unsupported("a weight gradient that is not a sum over the batch")
        shape = tuple(self.meta[i].shape)
        if len(shape) not in (1, 2):
            raise Unsupported("a weight gradient of rank other than 1 or 2")
        self.accumulators.append((0, shape[0]) if len(shape) == 1 else shape)
        if zero:
            return  # the accumulator starts at zero
        for term in self.terms[i]:
            if term[0] == "colsum":
                if shape[-1] != self.cols[term[1]] or (len(shape) == 2 and shape[0] != 1):
                    raise Unsupported("a column sum of another shape")
                self._emit(ACCUMULATE_COLUMN_SUM, [], [term[1]], [k])
                continue
            _, a, g, flipped = term
            want = (self.cols[g], self.cols[a]) if flipped else (self.cols[a], self.cols[g])
            if shape != want:
                raise Unsupported("a product gradient of another shape")
            self._emit(ACCUMULATE_PRODUCT, [], [a, g], [k, flipped])


def _flip(term: Tuple) -> Tuple:
    if term[0] == "colsum":
        return term
    return term[:3] + (1 - term[3],)


def _over_batch(node: Node) -> bool:
    dims = node.args[1] if len(node.args) > 1 else None
    return (
        isinstance(dims, (list, tuple))
        and list(dims) == [0]
        and not isinstance(node.args[0], (list, tuple))
        and isinstance(node.args[0], Ref)
    )


def _recomputed(prog: Program, kept: KeptValues) -> Dict[int, int]:
    """The vjp's single-output nodes that repeat one of the forward loop's nodes (same op on
    the same values), by vjp id: the forward's id."""
    same = dict(zip(prog.carry_in, kept.inputs))  # vjp id -> forward id
    forward = {}
    for node in kept.loop_nodes:
        forward.setdefault(_node_key(node, lambda i: i), node)
    found = {}
    for node in prog.nodes:
        key = _node_key(node, same.get)
        match = forward.get(key) if key is not None else None
        if match is None or len(match.outs) != len(node.outs):
            continue
        same.update(zip(node.outs, match.outs))
        if len(node.outs) == 1:
            found[node.outs[0]] = match.outs[0]
    return found


def _live(step: List[Node], outputs: List[int], read_instead: Dict[int, int]):
    """(the nodes of step that the outputs need, in order; the ids they read). A node whose
    output is in read_instead is needed without its inputs (the backward reads its value);
    one that writes in place (its op ends in "_") is always needed, as later reads of its
    input see its result."""
    needed = set(outputs)
    live = []
    for node in reversed(step):
        in_place = node.op.split(".")[1].endswith("_")
        if in_place or any(o in needed for o in node.outs):
            live.append(node)
            if node.outs[0] not in read_instead:
                needed.update(node.refs)
    live.reverse()
    return live, needed


def _node_key(node: Node, lookup):
    """A node's op and arguments with its values named through lookup (None if one is not)."""

    def arg(a):
        if isinstance(a, Ref):
            found = lookup(a.id)
            if found is None:
                raise KeyError(a.id)
            return ("ref", found)
        if isinstance(a, (list, tuple)):
            return tuple(arg(e) for e in a)
        return repr(a)

    try:
        return node.op, arg(node.args), tuple(sorted((k, arg(v)) for k, v in node.kwargs.items()))
    except KeyError:
        return None
