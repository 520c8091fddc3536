"""Closure lifting: the tensors a step function reads from outside its arguments (closure cells,
default arguments, the globals it names and those its module's functions that it calls name, a
bound method's ``self``, ``functools.partial`` arguments; nn.Modules among them give their
parameters, buffers and tensor attributes), found
anew on every call so that the traced program takes them as explicit inputs: gradients reach the
real tensors, and a new tensor behind the same code is rebound, not retraced.

``StepCaptures.key`` describes everything else the step reads that the trace bakes in (Python
scalars, the structure of containers, where each tensor comes from), so that a change there
retraces; the cache key adds the tensors' shapes and dtypes (cache.signature)."""

import contextlib
import functools
import types
from typing import Any, Callable, List, Tuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

from .trees import spec_key

_PRIMITIVES = (int, float, bool, str, complex, type(None), torch.dtype, torch.device)
# Globals of these kinds are code or namespaces: in the key by identity (a function redefined
# traces again), their insides not described; everything else is described.
_SKIPPED_GLOBALS = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    type,
    types.MethodType,
    functools.partial,
)


_MISSING = object()


class _Same:
    """A value in a cache key by identity (kept alive by the key, so that its id is not
    another object's), for values that hash by content or not at all."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Same and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


def _is_primitive(v) -> bool:
    if isinstance(v, tuple):
        return all(_is_primitive(e) for e in v)
    return isinstance(v, _PRIMITIVES)


def _primitive_attrs(obj) -> tuple:
    return tuple(sorted((k, v) for k, v in vars(obj).items() if _is_primitive(v)))


def _module_tensors(module: nn.Module) -> Tuple[List[str], List[Tensor]]:
    """Parameters, buffers and plain tensor attributes of a module tree, by dotted name."""
    names, tensors = [], []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        names.append(name)
        tensors.append(t)
    for prefix, sub in module.named_modules():
        for attr, v in vars(sub).items():
            if isinstance(v, Tensor) and not isinstance(v, nn.Parameter):
                names.append(f"{prefix}.{attr}" if prefix else attr)
                tensors.append(v)
    return names, tensors


def _tensor_slots(module: nn.Module) -> dict:
    """Where each tensor of a module tree is held, by the tensor's id: (dict, key) for every
    parameter, buffer and tensor attribute of every module (each module once, however many
    names reach it; a tensor shared by two modules has a slot in each)."""
    slots: dict = {}
    for _, sub in module.named_modules():
        for held in (sub._parameters, sub._buffers, vars(sub)):
            for key, v in held.items():
                if isinstance(v, Tensor):
                    slots.setdefault(id(v), []).append((held, key))
    return slots


_PLAIN_TENSORS = (Tensor, nn.Parameter)


def _first(tensors):
    return tensors[0]


class _Describer:
    """Turns one value the step reads into (key part, tensors, rebuild(tensors) -> value)."""

    def __init__(self):
        self.modules: List[nn.Module] = []
        # Per lifted tensor in order: None (rebuilt into a cell, default, global or container),
        # ("module", k, name) or ("attr", obj, name) (swapped in while the step runs).
        self.owners: List[Any] = []

    def describe(self, v):
        if isinstance(v, Tensor):
            self.owners.append(None)
            return "tensor", [v], _first
        if isinstance(v, nn.Module):
            return self._module(v)
        if _is_primitive(v):
            return ("value", v), [], lambda ts: v
        if isinstance(v, (list, tuple, dict)):
            return self._container(v)
        if hasattr(v, "__dict__") and not isinstance(v, _SKIPPED_GLOBALS):
            return self._object(v)
        try:
            hash(v)
            return ("object", v), [], lambda ts: v
        except TypeError:
            return ("id", _Same(v)), [], lambda ts: v

    def _module(self, m):
        for k, seen in enumerate(self.modules):
            if seen is m:
                return ("module-again", k), [], lambda ts: m
        names, tensors = _module_tensors(m)
        self.owners.extend(("module", len(self.modules), n) for n in names)
        self.modules.append(m)
        prims = tuple((n, _primitive_attrs(s)) for n, s in m.named_modules())
        key = ("module", type(m), tuple(names), prims)
        return key, tensors, lambda ts: m

    def _container(self, v):
        kind = type(v)
        if (kind is list or kind is tuple) and all(type(t) in _PLAIN_TENSORS for t in v):
            # The usual container (a list of parameters, as d2l passes them), without pytree.
            self.owners.extend([None] * len(v))
            return ("tensors", kind, len(v)), list(v), kind
        leaves, spec = pytree.tree_flatten(v)
        parts = [self.describe(leaf) for leaf in leaves]
        counts = [len(p[1]) for p in parts]
        tensors = [t for p in parts for t in p[1]]
        key = ("tree", spec_key(spec), tuple(p[0] for p in parts))

        def rebuild(ts):
            out, i = [], 0
            for (_, _, make), n in zip(parts, counts):
                out.append(make(ts[i : i + n]))
                i += n
            return pytree.tree_unflatten(out, spec)

        return key, tensors, rebuild

    def _object(self, obj):
        names = [k for k, v in vars(obj).items() if isinstance(v, Tensor)]
        if not names:
            return ("object-id", id(obj), _primitive_attrs(obj)), [], lambda ts: obj
        tensors = [getattr(obj, n) for n in names]
        self.owners.extend(("attr", obj, n) for n in names)
        key = ("attrs", type(obj), tuple(names), _primitive_attrs(obj))
        return key, tensors, lambda ts: obj


def _code_names(code: types.CodeType) -> set:
    """The names a code object and the code nested in it (comprehensions, lambdas) look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


_global_names_of_code: dict = {}  # code -> its looked-up names, sorted (read on every call)


def _global_names(code: types.CodeType) -> List[str]:
    names = _global_names_of_code.get(code)
    if names is None:
        names = _global_names_of_code[code] = sorted(_code_names(code))
    return names


def step_global_names(func: types.FunctionType) -> Tuple[List[str], List[str]]:
    """(names, helpers): the global names the step looks up, then those of the functions of
    its own module that it calls by a global name, transitively (a helper reading the module's
    tensors: ``def cell(h, x): return torch.tanh(x @ W + h @ U)``); and those helpers' names,
    which the traced step calls as copies reading its lifted globals."""
    g = func.__globals__
    names = list(_global_names(func.__code__))
    helpers, seen, k = [], {func.__code__}, 0
    while k < len(names):
        v = g.get(names[k])
        k += 1
        if type(v) is types.FunctionType and v.__globals__ is g and v.__code__ not in seen:
            seen.add(v.__code__)
            helpers.append(names[k - 1])
            names += [n for n in _global_names(v.__code__) if n not in names]
    return names, helpers


def _unwrap(fn):
    """(function, bound self or None, partial args, partial keywords)."""
    pargs, pkw = (), {}
    if isinstance(fn, functools.partial):
        fn, pargs, pkw = fn.func, fn.args, dict(fn.keywords)
    if isinstance(fn, nn.Module):
        return type(fn).forward, fn, pargs, pkw
    if isinstance(fn, types.MethodType):
        return fn.__func__, fn.__self__, pargs, pkw
    if isinstance(fn, types.FunctionType):
        return fn, None, pargs, pkw
    raise TypeError(
        f"rnnfast.scan: combine_fn must be a Python function, a bound method, an "
        f"nn.Module or a functools.partial of one; got {type(fn).__name__}"
    )


class StepCaptures:
    """The lifted view of one step function: ``code`` and ``key`` (the cache key's part from the
    step), ``tensors`` (the current lifted tensors, inputs of the traced program) and
    ``call(tensors, carry, x)`` (the step with those tensors in place of the real ones)."""

    def __init__(self, fn: Callable):
        func, self_obj, pargs, pkw = _unwrap(fn)
        self.func, self.self_obj = func, self_obj
        self.code = func.__code__
        d = _Describer()
        slots = []  # (kind, where, value)
        for name, cell in zip(self.code.co_freevars, func.__closure__ or ()):
            try:
                slots.append(("cell", name, cell.cell_contents))
            except ValueError:  # an empty cell: a name assigned after the step was defined
                slots.append(("empty-cell", name, None))
        for i, v in enumerate(func.__defaults__ or ()):
            slots.append(("default", i, v))
        for k, v in sorted((func.__kwdefaults__ or {}).items()):
            slots.append(("kwdefault", k, v))
        g = func.__globals__
        code_globals = []  # functions, modules, types the step names: in the key by identity
        names, self._helpers = step_global_names(func)
        for name in names:
            v = g.get(name, _MISSING)
            if v is _MISSING:
                continue
            if isinstance(v, _SKIPPED_GLOBALS):
                code_globals.append((name, _Same(v)))
            else:
                slots.append(("global", name, v))
        if self_obj is not None:
            slots.append(("self", None, self_obj))
        for i, v in enumerate(pargs):
            slots.append(("partial", i, v))
        for k, v in sorted(pkw.items()):
            slots.append(("partial-kw", k, v))
        # One pass (this runs on every call): the key parts, the tensors, how to rebuild.
        self._slots, self.tensors, keys = [], [], []
        for kind, where, v in slots:
            if type(v) in _PLAIN_TENSORS:  # the usual slot, as describe() would give it
                d.owners.append(None)
                self._slots.append((kind, where, _first, 1))
                self.tensors.append(v)
                keys.append((kind, where, "tensor"))
                continue
            k, ts, rebuild = d.describe(v)
            self._slots.append((kind, where, rebuild, len(ts)))
            self.tensors += ts
            keys.append((kind, where, k))
        self.key = (self.code, tuple(keys), tuple(code_globals))
        self._describer = d

    def call(self, tensors, carry, x):
        """Runs the step on (carry, x) with ``tensors`` in place of the lifted ones."""
        func = self.func
        cells, defaults, kwdefaults, new_globals = [], [], {}, {}
        self_obj, pargs, pkw = self.self_obj, [], {}
        i = 0
        for kind, where, rebuild, n in self._slots:
            value = rebuild(tensors[i : i + n]) if kind != "empty-cell" else None
            i += n
            if kind == "cell":
                cells.append(types.CellType(value))
            elif kind == "empty-cell":
                cells.append(types.CellType())
            elif kind == "default":
                defaults.append(value)
            elif kind == "kwdefault":
                kwdefaults[where] = value
            elif kind == "global":
                new_globals[where] = value
            elif kind == "partial":
                pargs.append(value)
            elif kind == "partial-kw":
                pkw[where] = value
        globs = dict(func.__globals__)
        globs.update(new_globals)
        for name in self._helpers:  # the helpers read the lifted globals too
            h = globs[name]
            helper = types.FunctionType(
                h.__code__, globs, h.__name__, h.__defaults__, h.__closure__
            )
            helper.__kwdefaults__ = h.__kwdefaults__
            globs[name] = helper
        # Named forward: torch.fx keeps a node's stack trace from the innermost 'forward' frame
        # outwards, so that the step's own line is recorded.
        code = func.__code__.replace(co_name="forward")
        new_func = types.FunctionType(
            code, globs, func.__name__, tuple(defaults) or None, tuple(cells) or None
        )
        new_func.__kwdefaults__ = kwdefaults or None
        step = new_func if self_obj is None else types.MethodType(new_func, self_obj)
        if pargs or pkw:
            step = functools.partial(step, *pargs, **pkw)
        with _swapped(self._swaps(tensors)):
            return step(carry, x)

    def _swaps(self, tensors):
        """(dict, key, tensor): every place that holds a lifted module or object tensor, with
        its replacement from ``tensors``. A module's tensor is replaced wherever the tree holds
        it (a parameter shared by two modules), and a module reached by two names once."""
        slots = [_tensor_slots(m) for m in self._describer.modules]
        swaps = []
        for owner, old, new in zip(self._describer.owners, self.tensors, tensors):
            if owner is None:
                continue
            if owner[0] == "module":
                swaps += [(held, key, new) for held, key in slots[owner[1]][id(old)]]
            else:
                swaps.append((vars(owner[1]), owner[2], new))
        return swaps


@contextlib.contextmanager
def _swapped(swaps):
    """Sets ``held[key] = tensor`` for each swap while the step runs (in the module's own
    dicts, as torch.func.functional_call does), restoring them after, last first."""
    saved = [(held, key, held[key]) for held, key, _ in swaps]
    try:
        for held, key, t in swaps:
            held[key] = t
        yield
    finally:
        for held, key, old in reversed(saved):
            held[key] = old
