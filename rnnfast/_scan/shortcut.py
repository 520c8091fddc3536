"""The usual call's shortcut past the front end (validate, capture, cache): a plain function,
or a module's bound method (its tree's layout checked: module_layout.py), whose closure holds
tensors, Python scalars, flat lists of tensors, functions, modules or types and which names
only modules, functions and types among its globals, run over a tensor or a flat tuple or
list of tensors, steps first, without lengths.

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
from .capture import _MISSING, _PLAIN_TENSORS, _SKIPPED_GLOBALS, _global_names
from .module_layout import ModuleLayout

_SCALARS = (int, float, bool, str, type(None))
# Code and namespaces (an activation passed in, torch.nn.functional), which the cache key
# holds by identity.
_BY_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type)
_TENSOR, _SCALAR, _TENSORS, _SAME = 0, 1, 2, 3  # what a closure cell holds


def _cell_kind(value):
    """(kind, what the next calls must match), or None for a value the shortcut does not take."""
    kind = type(value)
    if kind in _PLAIN_TENSORS:
        return _TENSOR, None
    if kind in _SCALARS:
        return _SCALAR, value
    if (kind is list or kind is tuple) and all(type(t) in _PLAIN_TENSORS for t in value):
        return _TENSORS, (kind, len(value))
    if isinstance(value, _BY_IDENTITY):
        return _SAME, value
    return None


def _tree_kind(tree):
    """None for a lone tensor, (tuple or list, length) for a flat one, False otherwise."""
    if type(tree) in _PLAIN_TENSORS:
        return None
    kind = type(tree)
    if (kind is tuple or kind is list) and tree and all(type(t) in _PLAIN_TENSORS for t in tree):
        return kind, len(tree)
    return False


def _leaves(tree, kind) -> Optional[List[Tensor]]:
    """tree's leaves where it is of ``kind`` (_tree_kind's), else None."""
    if kind is None:
        return [tree] if type(tree) in _PLAIN_TENSORS else None
    if type(tree) is not kind[0] or len(tree) != kind[1]:
        return None
    for t in tree:
        if type(t) not in _PLAIN_TENSORS:
            return None
    return list(tree)


def _global_kind(value):
    """_cell_kind of a global the step names: code and namespaces (which capture leaves out of
    the key) and names it does not find, by identity."""
    if value is _MISSING or isinstance(value, _SKIPPED_GLOBALS):
        return _SAME, value
    return _cell_kind(value)


def _match(kinds, values, lifted: List[Tensor]) -> bool:
    """Whether values match kinds (_cell_kind's), their tensors appended to lifted."""
    for v, (kind, expected) in zip(values, kinds):
        if kind == _TENSOR:
            if type(v) not in _PLAIN_TENSORS:
                return False
            lifted.append(v)
        elif kind == _SCALAR:
            if type(v) is not type(expected) or v != expected:
                return False
        elif kind == _SAME:
            if v is not expected:
                return False
        else:
            tensors = _leaves(v, expected)
            if tensors is None:
                return False
            lifted += tensors
    return True


class Shortcut:
    """What a step's calls must match to run ``plan`` without the front end (``of`` makes it
    from a call that went the whole way). The lifted tensors come in capture's order: the
    closure's, the globals' (by name), the module's."""

    __slots__ = (
        "cells",
        "names",
        "globals",
        "module",
        "init_kind",
        "x_kind",
        "init_spec",
        "key",
        "plan",
    )

    @staticmethod
    def of(fn, init, xs, init_spec, key, plan) -> Optional["Shortcut"]:
        """The shortcut for calls like this one (``key``: the cache's, of ``plan``), or None
        where it is not the usual kind."""
        if not isinstance(key[1][-1], bytes):
            return None
        owner = None
        if type(fn) is types.MethodType and isinstance(fn.__self__, nn.Module):
            owner, fn = fn.__self__, fn.__func__
        if type(fn) is not types.FunctionType:
            return None
        if fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
            return None
        try:
            cells = [_cell_kind(cell.cell_contents) for cell in fn.__closure__ or ()]
        except ValueError:  # an empty cell
            return None
        g = fn.__globals__
        names = _global_names(fn.__code__)
        globals_ = [_global_kind(g.get(name, _MISSING)) for name in names]
        init_kind, x_kind = _tree_kind(init), _tree_kind(xs)
        if None in cells or None in globals_ or init_kind is False or x_kind is False:
            return None
        module = None
        if owner is not None:
            try:
                module = ModuleLayout(owner)
            except Exception:  # not read as capture reads it: the calls go the whole way
                return None
        shortcut = Shortcut()
        shortcut.cells, shortcut.names, shortcut.globals = tuple(cells), names, tuple(globals_)
        shortcut.module = module
        shortcut.init_kind, shortcut.x_kind, shortcut.init_spec = init_kind, x_kind, init_spec
        shortcut.key, shortcut.plan = key, plan
        return shortcut

    def inputs(self, fn, init, xs):
        """(lifted tensors, init leaves, xs leaves) where this call matches, else None."""
        owner = None
        if self.module is not None:
            if type(fn) is not types.MethodType:
                return None
            owner, fn = fn.__self__, fn.__func__
        if type(fn) is not types.FunctionType:
            return None
        if fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
            return None
        closure = fn.__closure__ or ()
        if len(closure) != len(self.cells):
            return None
        lifted = []
        try:
            values = [cell.cell_contents for cell in closure]
        except ValueError:  # an empty cell
            return None
        if not _match(self.cells, values, lifted):
            return None
        g = fn.__globals__
        if not _match(self.globals, [g.get(name, _MISSING) for name in self.names], lifted):
            return None
        if owner is not None:
            tensors = self.module.tensors(owner)
            if tensors is None:
                return None
            lifted += tensors
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
