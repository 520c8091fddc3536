"""The usual call's shortcut past the front end (validate, capture, cache): a plain function
whose closure holds tensors, Python scalars, flat lists of tensors, functions, modules or
types and which names only modules, functions and types among its globals, run over a tensor
or a flat tuple or list of tensors, steps first, without lengths.

Once a call of a step's code has gone the whole way, the next calls of that code check only
what could make them differ from it: each closure value's kind (a scalar's value, a
function's identity), the globals it names, the kinds of init and xs, the tensors' part of
the cache key (``cache.signature``: dtypes, devices, requires_grad, sizes), and that xs'
leaves agree on the steps and the batch, and init on the batch. Then they run the same plan
with the new tensors. Anything else goes the whole way (and raises there what is wrong)."""

import types
from typing import List, Optional

from torch import Tensor, nn

from .. import _C
from .capture import _MISSING, _SKIPPED_GLOBALS, _global_names

_PLAIN = (Tensor, nn.Parameter)
_SCALARS = (int, float, bool, str, type(None))
# Code and namespaces (an activation passed in, torch.nn.functional), which the cache key
# holds by identity.
_BY_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type)
_TENSOR, _SCALAR, _TENSORS, _SAME = 0, 1, 2, 3  # what a closure cell holds


def _cell_kind(value):
    """(kind, what the next calls must match), or None for a value the shortcut does not take."""
    kind = type(value)
    if kind in _PLAIN:
        return _TENSOR, None
    if kind in _SCALARS:
        return _SCALAR, value
    if (kind is list or kind is tuple) and all(type(t) in _PLAIN for t in value):
        return _TENSORS, (kind, len(value))
    if isinstance(value, _BY_IDENTITY):
        return _SAME, value
    return None


def _tree_kind(tree):
    """None for a lone tensor, (tuple or list, length) for a flat one, False otherwise."""
    if type(tree) in _PLAIN:
        return None
    kind = type(tree)
    if (kind is tuple or kind is list) and tree and all(type(t) in _PLAIN for t in tree):
        return kind, len(tree)
    return False


def _leaves(tree, kind) -> Optional[List[Tensor]]:
    """tree's leaves where it is of ``kind`` (_tree_kind's), else None."""
    if kind is None:
        return [tree] if type(tree) in _PLAIN else None
    if type(tree) is not kind[0] or len(tree) != kind[1]:
        return None
    for t in tree:
        if type(t) not in _PLAIN:
            return None
    return list(tree)


class Shortcut:
    """What a step's calls must match to run ``plan`` without the front end (``of`` makes it
    from a call that went the whole way)."""

    __slots__ = ("cells", "names", "init_kind", "x_kind", "init_spec", "key", "plan")

    @staticmethod
    def of(fn, init, xs, init_spec, key, plan) -> Optional["Shortcut"]:
        """The shortcut for calls like this one (``key``: the cache's, of ``plan``), or None
        where it is not the usual kind."""
        if type(fn) is not types.FunctionType or not isinstance(key[1][-1], bytes):
            return None
        if fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
            return None
        cells = []
        for cell in fn.__closure__ or ():
            try:
                kind = _cell_kind(cell.cell_contents)
            except ValueError:  # an empty cell
                return None
            if kind is None:
                return None
            cells.append(kind)
        g = fn.__globals__
        names = tuple((name, g.get(name, _MISSING)) for name in _global_names(fn.__code__))
        if any(v is not _MISSING and not isinstance(v, _SKIPPED_GLOBALS) for _, v in names):
            return None  # a global the trace lifts or bakes in
        init_kind, x_kind = _tree_kind(init), _tree_kind(xs)
        if init_kind is False or x_kind is False:
            return None
        shortcut = Shortcut()
        shortcut.cells, shortcut.names = tuple(cells), names
        shortcut.init_kind, shortcut.x_kind, shortcut.init_spec = init_kind, x_kind, init_spec
        shortcut.key, shortcut.plan = key, plan
        return shortcut

    def inputs(self, fn, init, xs):
        """(lifted tensors, init leaves, xs leaves) where this call matches, else None."""
        if fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
            return None
        closure = fn.__closure__ or ()
        if len(closure) != len(self.cells):
            return None
        lifted = []
        try:
            for cell, (kind, expected) in zip(closure, self.cells):
                v = cell.cell_contents
                if kind == _TENSOR:
                    if type(v) not in _PLAIN:
                        return None
                    lifted.append(v)
                elif kind == _SCALAR:
                    if type(v) is not type(expected) or v != expected:
                        return None
                elif kind == _SAME:
                    if v is not expected:
                        return None
                else:
                    tensors = _leaves(v, expected)
                    if tensors is None:
                        return None
                    lifted += tensors
        except ValueError:  # an empty cell
            return None
        g = fn.__globals__
        for name, value in self.names:
            if g.get(name, _MISSING) is not value:
                return None
        init_leaves, x_leaves = _leaves(init, self.init_kind), _leaves(xs, self.x_kind)
        if init_leaves is None or x_leaves is None:
            return None
        # The key fixes every rank and size but init's batch and xs' steps and batch.
        if _C.scan_tensors_key(lifted, init_leaves, x_leaves) != self.key[1][-1]:
            return None
        T, B = x_leaves[0].shape[0], x_leaves[0].shape[1]
        if T == 0:
            return None
        for x in x_leaves:
            if x.shape[0] != T or x.shape[1] != B:
                return None
        for h in init_leaves:
            if h.shape[0] != B:
                return None
        return lifted, init_leaves, x_leaves
