"""Traces a step once (torch.fx's make_fx, fake tensors) into the IR of ir.py, with the lifted
tensors of capture.py as explicit inputs and the carry checked against init."""

import inspect
import operator
from typing import List

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

from .capture import StepCaptures
from .decompositions import DECOMPOSITIONS, Rewrites
from .errors import CarryMismatchError, ScanTraceError, user_line
from .ir import BATCH, Node, Program, Ref, ValueMeta
from .trees import flatten
from .whitelist import FRESH

# The user's source line of each node, for error messages (make_fx records it from torch 2.6 on;
# before, errors name the op alone).
_STACK_TRACES = (
    {"record_stack_traces": True}
    if "record_stack_traces" in inspect.signature(make_fx).parameters
    else {}
)


def trace_batch_size(tensors: List[Tensor]) -> int:
    """A batch size for the trace that no other dimension has, so that it marks the batch
    wherever the tracer writes it into a shape (a list argument: view, zeros, the sizes of
    slice_backward); an unusual number, lest a split's sizes hold it."""
    sizes = {d for t in tensors for d in t.shape}
    b = 97
    while b in sizes:
        b += 1
    return b


def trace_step(captures: StepCaptures, init_leaves, init_spec, x_leaves, x_spec):
    """The step as a Program, the pytree spec of its y and which of y's leaves are None;
    x_leaves are [T, B, ...]."""
    weights = captures.tensors
    b = trace_batch_size([t[0] for t in init_leaves] + [x[0, 0] for x in x_leaves] + weights)
    carry = [torch.empty((b, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in init_leaves]
    xs = [torch.empty((b, *x.shape[2:]), dtype=x.dtype, device=x.device) for x in x_leaves]
    n_carry, n_x = len(carry), len(xs)
    found = {}

    def traced(*flat):
        c = pytree.tree_unflatten(list(flat[:n_carry]), init_spec)
        x = pytree.tree_unflatten(list(flat[n_carry : n_carry + n_x]), x_spec)
        with Rewrites():
            result = captures.call(list(flat[n_carry + n_x :]), c, x)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ScanTraceError(
                "rnnfast.scan: combine_fn must return a pair (next_carry, y); "
                f"got {type(result).__name__}"
            )
        next_leaves = check_carry(result[0], init_spec, carry)
        y_leaves, found["y_spec"] = flatten(result[1])
        found["y_none"] = [y is None for y in y_leaves]  # a y_t of None stacks to None
        y_leaves = [y for y in y_leaves if y is not None]
        for i, y in enumerate(y_leaves):
            if not isinstance(y, Tensor) or y.dim() == 0 or y.shape[0] != b:
                raise ScanTraceError(
                    f"rnnfast.scan: y leaf {i} of combine_fn must be a tensor [B, ...] (B: the "
                    f"batch of init and xs); got {_describe(y, b)}"
                )
        return (*next_leaves, *y_leaves)

    try:
        with torch.no_grad():
            gm = make_fx(
                traced, decomposition_table=DECOMPOSITIONS, tracing_mode="fake", **_STACK_TRACES
            )(*carry, *xs, *weights)
    except (ScanTraceError, CarryMismatchError):
        raise
    except Exception as e:
        if "convert all Tensors to FakeTensors" in str(e):
            raise ScanTraceError(
                "rnnfast.scan: combine_fn reads a tensor from a place the closure lifting does "
                "not look (a helper function's closure, the globals of another module's "
                "function, an object's attribute reached through a call); pass it through the "
                "step's closure, defaults, globals or module instead"
            ) from e
        raise ScanTraceError(
            f"rnnfast.scan: combine_fn could not be traced once for all steps "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    _out_of_place(gm)
    return lower(gm, n_carry, n_x, b), found["y_spec"], found["y_none"]


def _out_of_place(gm: torch.fx.GraphModule) -> None:
    """The step's ops in place as ops out of place, the later reads of what they updated
    reading their results (the program's values are each written once). An op in place may
    update only a tensor the step made (whitelist.FRESH): one on the carry, an input, a lifted
    tensor or a view of one would change what the trace reads as unchanged, so it is refused
    with its line."""
    order = {node: k for k, node in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = node.target.overloadpacket.__name__
        if name in _UNSAFE_SPLITS:  # the same pieces; once nothing is in place, no difference
            node.target = _UNSAFE_SPLITS[name]
            continue
        if not name.endswith("_"):
            continue
        target = node.args[0] if node.args else None
        if not _fresh(target):
            raise ScanTraceError(
                f"rnnfast.scan: combine_fn updates in place ({node.target}) a value it did not "
                f"make as a tensor of its own (the carry, an input, a weight or a view of one)"
                f"{_at(node)}; write it out of place (x = x * 2, not x.mul_(2))"
            )
        out_of_place = _OUT_OF_PLACE.get(str(node.target))
        if out_of_place is not None:  # the trace leaves out arguments at their defaults
            node.args = _with_defaults(node)
        else:
            packet = getattr(torch.ops.aten, name[:-1], None)
            out_of_place = getattr(packet, node.target._overloadname, None) if packet else None
        if out_of_place is None:
            continue  # the lowering refuses it
        for user in list(target.users):
            if order[user] > order[node]:
                user.replace_input_with(target, node)
        node.target = out_of_place


# ATen's GRU and LSTM cells (nn.GRUCell, nn.LSTMCell) split their gates with unsafe_chunk and
# update the pieces in place.
_UNSAFE_SPLITS = {
    "unsafe_split": torch.ops.aten.split.Tensor,
    "unsafe_split_with_sizes": torch.ops.aten.split_with_sizes.default,
}


# Ops in place whose counterpart out of place has another overload's name (the fills of
# F.dropout, torch.nn.init.normal_): by name, as not every torch has them.
_OUT_OF_PLACE = {
    name: getattr(getattr(torch.ops.aten, packet, None), overload, None)
    for name, (packet, overload) in {
        "aten.bernoulli_.float": ("bernoulli", "p"),
        "aten.normal_.default": ("normal_functional", "default"),
    }.items()
}


def _with_defaults(node: torch.fx.Node) -> tuple:
    """node's positional arguments, those the trace left out at their defaults written out
    (bernoulli_'s p of 0.5, which bernoulli.p requires)."""
    args = list(node.args)
    positional = [a for a in node.target._schema.arguments if not a.kwarg_only]
    for a in positional[len(args) :]:
        if not a.has_default_value():
            break
        args.append(a.default_value)
    return tuple(args)


def _fresh(target) -> bool:
    """Whether an op in place may update ``target``: a tensor the step made (whitelist.FRESH),
    or a piece of one split apart that nothing else reads (the pieces do not overlap)."""
    if not isinstance(target, torch.fx.Node) or target.op != "call_function":
        return False
    if target.target is operator.getitem:
        split = target.args[0]
        return (
            _packet_of(split) in ("split", "split_with_sizes")
            and len(split.args[0].users) == 1
            and _fresh(split.args[0])
        )
    return _packet_of(target).rstrip("_") in FRESH


def _packet_of(node: torch.fx.Node) -> str:
    target = node.target
    return target.overloadpacket.__name__ if isinstance(target, torch._ops.OpOverload) else ""


def _describe(v, b) -> str:
    if isinstance(v, Tensor):
        shape = ", ".join("B" if d == b else str(d) for d in v.shape)  # b: the traced batch
        return f"a tensor of shape [{shape}]"
    return type(v).__name__


def check_carry(next_carry, init_spec, carry) -> list:
    """next_carry's leaves, which must match carry's (init's structure, shapes and dtypes)."""
    leaves, spec = pytree.tree_flatten(next_carry)
    if spec != init_spec:
        raise CarryMismatchError(
            f"rnnfast.scan: combine_fn's next carry must have init's "
            f"structure {init_spec}; got {spec}"
        )
    for i, (new, old) in enumerate(zip(leaves, carry)):
        if not isinstance(new, Tensor):
            raise CarryMismatchError(
                f"rnnfast.scan: carry leaf {i} must be a tensor; got {type(new).__name__}"
            )
        if new.shape != old.shape or new.dtype != old.dtype:
            raise CarryMismatchError(
                f"rnnfast.scan: combine_fn changes carry leaf {i}: init has shape "
                f"{list(old.shape[1:])} after the batch and dtype {old.dtype}, the next carry "
                f"{list(new.shape[1:])} and {new.dtype}"
            )
    return leaves


def _meta(val, b) -> ValueMeta:
    shape = tuple(BATCH if i == 0 and d == b else int(d) for i, d in enumerate(val.shape))
    return ValueMeta(val.dtype, shape)


def lower(gm: torch.fx.GraphModule, n_carry: int, n_x: int, b: int, n_carry_out=None) -> Program:
    """The fx graph as a Program (any op; whitelist.py judges them once the split knows which
    values are batch-shaped). Its first n_carry inputs are carry_in, the next n_x x_in, the
    rest weights_in; its first n_carry_out outputs (n_carry by default) carry_out, the rest
    y_out."""
    n_carry_out = n_carry if n_carry_out is None else n_carry_out
    prog = Program([], [], [], [], [], [])
    ids = {}
    placeholders = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            i = ids[node] = prog.new_id(_meta(node.meta["val"], b))
            role = (
                prog.carry_in
                if placeholders < n_carry
                else prog.x_in
                if placeholders < n_carry + n_x
                else prog.weights_in
            )
            role.append(i)
            placeholders += 1
        elif node.op == "get_attr":
            _lower_constant(prog, ids, node, getattr(gm, node.target), b)
        elif node.op == "call_function" and node.target is operator.getitem:
            ids[node] = ids[node.args[0]][node.args[1]]
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            _lower_call(prog, ids, node, b)
        elif node.op == "output":
            flat = [ids[n] for n in node.args[0]]
            prog.carry_out, prog.y_out = flat[:n_carry_out], flat[n_carry_out:]
        else:
            raise ScanTraceError(
                f"rnnfast.scan: combine_fn calls {node.target}, which the "
                f"tracer could not reduce to ATen ops"
                f"{_at(node)}"
            )
    return prog


def _at(node) -> str:
    line = user_line(node.meta.get("stack_trace"))
    return f" (at {line})" if line else ""


def _lower_constant(prog, ids, node, tensor, b):
    if tensor.requires_grad:
        raise ScanTraceError(
            "rnnfast.scan: combine_fn reads a tensor that requires grad from a place the "
            "closure lifting does not look (a helper's globals or closure); pass it through "
            f"the step's closure, defaults, globals or module instead{_at(node)}"
        )
    i = ids[node] = prog.new_id(_meta(tensor, b))
    prog.constants[i] = tensor


def _is_whole_slice(node) -> bool:
    """x[:, ...]'s slice over all of a dimension: older torch (2.5) traces it, later ones drop
    it; it is x itself."""
    if str(node.target) != "aten.slice.Tensor":
        return False
    defaults = (None, 0, None, None, 1)  # slice.Tensor(self, dim, start, end, step)
    x, dim, start, end, step = tuple(node.args) + defaults[len(node.args) :]
    size = x.meta["val"].shape[dim]
    return start in (None, 0) and (end is None or end >= size) and step == 1


def _lower_call(prog, ids, node, b):
    name = str(node.target)
    if _is_whole_slice(node):
        ids[node] = ids[node.args[0]]
        return

    def convert(a, in_list=False):
        if isinstance(a, torch.fx.Node):
            return Ref(ids[a])
        if isinstance(a, (list, tuple)):
            return type(a)(convert(e, True) for e in a)
        if in_list and type(a) is int and a == b:
            return BATCH
        return a

    val = node.meta["val"]
    if isinstance(val, (list, tuple)):
        outs = tuple(
            prog.new_id(_meta(v, b)) if isinstance(v, Tensor) else prog.new_id() for v in val
        )
        ids[node] = outs
    else:
        outs = (prog.new_id(_meta(val, b)),)
        ids[node] = outs[0]
    args = convert(tuple(node.args))
    kwargs = {k: convert(v) for k, v in node.kwargs.items()}
    prog.nodes.append(Node(name, args, kwargs, outs, user_line(node.meta.get("stack_trace"))))
