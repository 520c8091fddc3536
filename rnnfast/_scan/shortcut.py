"""The usual call's shortcut past the front end (validate, capture, cache): a plain function,
or a module's bound method (its tree's layout checked: module_layout.py), whose closure holds
tensors, Python scalars, flat lists of tensors, functions, modules or types and which names
only modules, functions and types among its globals, run over a tensor or a flat tuple or
list of tensors, steps first, without lengths.

Once a call of a step's code has gone the whole way, the next calls of that code check only
what could make them differ from it: each closure value's kind (a scalar's value, a
function's identity), the globals it names, the kinds of init and xs, the tensors' part of
the cache key (``cache.signature``: dtypes, devices, requires_grad, sizes), and that xs'
leaves agree on the steps and the batch, and init on the batch (in C++:
``_C.scan_shortcut_inputs``). Then they run the same plan with the new tensors. Anything else
goes the whole way (and raises there what is wrong)."""

import types
from typing import Optional

from torch import nn

from .. import _C
from .capture import _MISSING, _PLAIN_TENSORS, _SKIPPED_GLOBALS, step_global_names
from .module_layout import ModuleLayout

_SCALARS = (int, float, bool, str, type(None))
# Code and namespaces (an activation passed in, torch.nn.functional), which the cache key
# holds by identity.
_BY_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type)
# What a closure cell holds (csrc/python/scan_shortcut.cpp's Kind: the same numbers).
_TENSOR, _SCALAR, _TENSORS, _SAME = 0, 1, 2, 3


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


def _global_kind(value):
    """_cell_kind of a global the step names: code and namespaces (which capture leaves out of
    the key) and names it does not find, by identity."""
    if value is _MISSING or isinstance(value, _SKIPPED_GLOBALS):
        return _SAME, value
    return _cell_kind(value)


class Shortcut:
    """What a step's calls must match to run ``plan`` without the front end (``of`` makes it
    from a call that went the whole way). The lifted tensors come in capture's order: the
    closure's, the globals' (by name), the module's."""

    __slots__ = ("spec", "module", "init_spec", "key", "plan")

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
        names, _ = step_global_names(fn)
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
        # What _C.scan_shortcut_inputs matches a call against.
        shortcut.spec = (
            tuple(cells),
            tuple(names),
            tuple(globals_),
            init_kind,
            x_kind,
            key[1][-1],
            _MISSING,
        )
        shortcut.module, shortcut.init_spec = module, init_spec
        shortcut.key, shortcut.plan = key, plan
        return shortcut

    def inputs(self, fn, init, xs):
        """(lifted tensors, init leaves, xs leaves) where this call matches, else None."""
        module_tensors = []
        if self.module is not None:
            if type(fn) is not types.MethodType:
                return None
            module_tensors = self.module.tensors(fn.__self__)
            if module_tensors is None:
                return None
            fn = fn.__func__
        return _C.scan_shortcut_inputs(self.spec, fn, init, xs, module_tensors)
