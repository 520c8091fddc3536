"""Lowers the loop part of a split step to the C++ engine's program format
(csrc/scan/scan_program.h): int64 codes and double scalars. A program the engine cannot run
(an op outside the opcode table, a value that is not [B, cols] of the carry's dtype) lowers to
None, and the Python runner runs it."""

import math
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .ir import Node, Ref
from .lower_ops import HANDLERS
from .opcodes import ADDMM, BOOL, DTYPES, MM_ACCUMULATE, VERSION, Unsupported
from .split import SplitStep
from .whitelist import POINTWISE, ROW_VIEWS


def lower_loop(
    split: SplitStep, kept: Sequence[int] = ()
) -> Optional[Tuple[List[int], List[float]]]:
    """(codes, scalars) of the loop part, or None where the engine cannot run it. The values
    ``kept`` are written out per step after the boundary (for the backward)."""
    try:
        return _LoopLowering(split, list(kept)).codes()
    except Unsupported:
        return None


# Pointwise ops whose results the forward keeps for the backward rather than have it compute
# them again: each costs a transcendental function per element (the gates of an LSTM are
# read by their backward formulas as sigmoid and tanh outputs).
_COSTLY = ("sigmoid", "tanh", "exp", "expm1", "log", "log1p", "softplus")


def kept_candidates(split: SplitStep) -> List[int]:
    """What the forward may keep per step so that the backward need not compute it again: the
    loop's products by weights, their sums (with a bias or not), its next carries (where a
    node makes them) and its costly pointwise results (_COSTLY). The backward's lowering
    (lower_vjp.py) picks those it reads."""
    products = [n.outs[0] for n in split.loop_nodes if n.op.split(".")[1] in ("mm", "addmm")]
    summed = set(products)
    sums = []
    meta = split.prog.meta
    for n in split.loop_nodes:
        refs = [a.id for a in n.args if isinstance(a, Ref)]
        if n.op != "aten.add.Tensor" or len(refs) != 2 or not summed.intersection(refs):
            continue
        if summed.issuperset(refs) or not all(meta[i].batched for i in refs):  # or a bias
            summed.add(n.outs[0])
            sums.append(n.outs[0])
    made = {n.outs[0] for n in split.loop_nodes if len(n.outs) == 1}
    carries = [i for i in split.prog.carry_out if i in made and i not in summed]
    costly = [
        n.outs[0] for n in split.loop_nodes if len(n.outs) == 1 and n.op.split(".")[1] in _COSTLY
    ]
    found = dict.fromkeys(products + sums + carries + costly)
    return [i for i in found if meta[i].batched and len(meta[i].shape) == 2]  # kept [T, B, cols]


class Lowering:
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
        for i in [*carry_out, *boundary]:  # made in the program's dtype
            if i in self.meta and self.meta[i].dtype != self.dtype:
                raise Unsupported(f"a {self.meta[i].dtype} carry or output")
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

    def _batch_slot(self, i: int, unreadable: bool = False, count: bool = False) -> int:
        """A slot for value i ([B, cols] or [B] of the program's dtype, or boolean; ``count``:
        also integral, a count of booleans, exact in the program's dtype)."""
        m = self.meta.get(i)
        dtypes = (self.dtype, BOOL) if not count else (self.dtype, BOOL, torch.int64)
        if unreadable:
            cols = 0
            self.unreadable.add(i)
        elif m is None or not m.batched or len(m.shape) > 2 or m.dtype not in dtypes:
            raise Unsupported("a value that is not [B, cols] or [B] of the carry's dtype")
        else:
            cols = m.shape[1] if len(m.shape) == 2 else 1  # [B] is held as [B, 1]
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
        """Emits node by its op's handler. An op in place (F.rms_norm's add_, a few of
        autograd's formulas) writes a new slot, not the input's memory, and later reads of
        the input see it."""
        _, name, overload = node.op.split(".")
        in_place = name.endswith("_") and name[:-1] in POINTWISE
        if in_place:
            name = name[:-1]
        handler = HANDLERS.get(name)
        if handler is None:
            raise Unsupported(node.op)
        if name not in ROW_VIEWS and self._widens_a_vector(node):
            raise Unsupported("a [B] value broadcast against [B, cols]")
        handler(self, replace(node, op=f"aten.{name}.{overload}") if in_place else node, overload)
        if in_place and node.outs[0] in self.slots:
            self.slots[node.args[0].id] = self.slots[node.outs[0]]

    def _widens_a_vector(self, node: Node) -> bool:
        """Whether a [B] operand meets a [B, cols] result, which torch broadcasts along the
        columns ([B] against [B, 1] is [B, B]) and the engine's [B, 1] would not."""
        meta = self.meta
        if all(len(meta[o].shape) != 2 for o in node.outs if o in meta):
            return False
        return any(meta[r].batched and len(meta[r].shape) == 1 for r in node.refs if r in meta)

    def _pointwise(self, opcode: int, node: Node, args, n_outs: int = 1) -> None:
        out = self._batch_slot(node.outs[0])
        extra = [self._batch_slot(o, unreadable=True) for o in node.outs[1:n_outs]]
        ins = [self._operand(a, self.cols[out]) for a in args]
        self._emit(opcode, [out, *extra], ins)


class _LoopLowering(Lowering):
    def __init__(self, split: SplitStep, kept: List[int]):
        prog = split.prog
        super().__init__(prog.meta, prog.meta[prog.carry_in[0]].dtype)
        self.split, self.kept = split, kept
        for i in prog.carry_in + split.loop_seq_in:
            self._batch_slot(i)
        for i in split.loop_weights_in:
            self._weight_slot(i)

    def codes(self) -> Tuple[List[int], List[float]]:
        prog, split = self.split.prog, self.split
        ends = list(prog.carry_out) + list(split.boundary) + self.kept
        base, accumulated, first_bias = _summed_products(split.loop_nodes, ends, prog.meta)
        for node in split.loop_nodes:
            out = node.outs[0]
            if out in first_bias:  # the sum's first product, its bias added as addmm's
                slot = self._batch_slot(out)
                bias = self._operand(Ref(first_bias[out]), self.cols[slot])
                a, w = self._read(node.args[0].id), self._read(node.args[1].id)
                self._emit(ADDMM, [slot], [bias, a, w])
            elif out in accumulated:  # a product added into its sum's first product
                self._emit(
                    MM_ACCUMULATE,
                    [self._read(base[out])],
                    [self._read(node.args[0].id), self._read(node.args[1].id)],
                )
            elif out in base and base[out] != out:  # a sum of products: the first one's slot
                self.slots[out] = self._read(base[out])
            else:
                self._node(node)
        return self.program(
            prog.carry_in,
            split.loop_seq_in,
            split.loop_weights_in,
            prog.carry_out,
            split.boundary + self.kept,
        )


def _summed_products(nodes: List[Node], ends: List[int], meta):
    """Sums of products that the engine computes by adding each product into the first one's
    buffer (the GEMM's beta), with no pass of their own: ``x @ W + h @ U``, d2l's gates,
    ``cat([h, x]) @ W`` split into its two products; and a bias vector added to such a sum, or
    to one product, taken by the first product as ``addmm``'s. Where each product and partial
    sum is read only by the sum (not kept, not an output) and every product but the first (by
    order) is a plain mm. Returns (per sum and member: the id of the product whose buffer holds
    the sum; the products added into it; per first product that takes a bias: the bias)."""
    uses: Dict[int, int] = {}
    for i in [r for n in nodes for r in n.refs] + list(ends):
        uses[i] = uses.get(i, 0) + 1
    order = {n.outs[0]: k for k, n in enumerate(nodes)}
    members: Dict[int, List[int]] = {}  # product or summed value: its products, first first
    bias: Dict[int, int] = {}  # summed value: the bias vector added to it
    sums: Dict[int, tuple] = {}  # sum id -> its summed operands
    for n in nodes:
        name = n.op.split(".")[1]
        if name in ("mm", "addmm") and n.op.split(".")[2] == "default" and len(n.outs) == 1:
            members[n.outs[0]] = [n.outs[0]]
            continue
        if n.op != "aten.add.Tensor" or n.kwargs or len(n.args) != 2:
            continue
        a, b = n.args
        if not (isinstance(a, Ref) and isinstance(b, Ref)) or a.id == b.id:
            continue
        summed = [i for i in (a.id, b.id) if i in members and uses[i] == 1]
        shape = tuple(meta[n.outs[0]].shape)
        if len(summed) == 2 and all(tuple(meta[i].shape) == shape for i in summed):
            together = sorted(members[a.id] + members[b.id], key=order.get)
            biases = [bias[i] for i in summed if i in bias]
            if len(biases) > 1 or not all(
                _plain_product(nodes[order[i]], meta) for i in together[1:]
            ):
                continue
            if biases and not _plain_product(nodes[order[together[0]]], meta):
                continue
            members[n.outs[0]] = together
            if biases:
                bias[n.outs[0]] = biases[0]
            sums[n.outs[0]] = (a.id, b.id)
        elif len(summed) == 1 and tuple(meta[summed[0]].shape) == shape:
            i = summed[0]
            v = b.id if i == a.id else a.id
            m = meta[v]
            if m.batched or math.prod(m.shape) != shape[-1] or any(d != 1 for d in m.shape[:-1]):
                continue
            if i in bias or not _plain_product(nodes[order[members[i][0]]], meta):
                continue
            members[n.outs[0]] = members[i]
            bias[n.outs[0]] = v
            sums[n.outs[0]] = (i,)
    base, accumulated, first_bias = {}, set(), {}
    for s in reversed(list(sums)):  # outermost first: the inner sums are part of it
        if s in base:
            continue
        first = members[s][0]
        base[s] = first
        if s in bias:
            first_bias[first] = bias[s]
        stack = list(sums[s])
        while stack:
            i = stack.pop()
            base[i] = first
            stack += sums.get(i, ())
        accumulated.update(members[s][1:])
    return base, accumulated, first_bias


def _plain_product(node: Node, meta) -> bool:
    """Whether node is ``a @ W``: a batch value by a 2-D weight."""
    if node.op != "aten.mm.default" or node.kwargs or len(node.args) != 2:
        return False
    a, w = node.args
    if not (isinstance(a, Ref) and isinstance(w, Ref)):
        return False
    return meta[a.id].batched and not meta[w.id].batched and len(meta[w.id].shape) == 2


def loop_weight_views(split: SplitStep) -> Optional[List[int]]:
    """The loop's weights as views of the lifted tensors (as ``cat([h, x]) @ W`` slices W's
    rows): per weight [k, n, ops..] for lifted tensor k through n views applied in order, each
    4 ints: (0, dim, start, end) a slice, (1, 0, 0, 0) a transpose. None where a weight is
    anything else (the weights part then runs in Python)."""
    prog = split.prog
    lifted = {i: k for k, i in enumerate(prog.weights_in)}
    made = {n.outs[0]: n for n in split.weight_nodes if len(n.outs) == 1}
    views: List[int] = []
    for i in split.loop_weights_in:
        ops: List[int] = []
        while i not in lifted:
            node = made.get(i)
            if node is None or node.kwargs or not node.args or not isinstance(node.args[0], Ref):
                return None
            if node.op == "aten.t.default" and len(node.args) == 1:
                ops[:0] = [1, 0, 0, 0]
            elif node.op == "aten.slice.Tensor":
                view = _slice_view(node.args[1:], prog.meta[node.args[0].id].shape)
                if view is None:
                    return None
                ops[:0] = [0, *view]
            else:
                return None
            i = node.args[0].id
        views += [lifted[i], len(ops) // 4, *ops]
    return views


def _slice_view(args: tuple, shape) -> Optional[Tuple[int, int, int]]:
    """(dim, start, end) of aten.slice's (dim, start, end, step) over ``shape``, normalized as
    ATen does; None for a step other than 1 or a non-constant bound."""
    dim, start, end, step = (list(args) + [0, None, None, 1][len(args) :])[:4]
    if not all(isinstance(v, int) or v is None for v in (dim, start, end, step)) or step != 1:
        return None
    if dim is None or not -len(shape) <= dim < len(shape):
        return None
    dim %= len(shape)
    size = shape[dim]

    def bound(v, default):
        v = default if v is None else v
        v = v + size if v < 0 else v
        return min(max(v, 0), size)

    start, end = bound(start, 0), bound(end, size)
    return dim, start, max(start, end)
