"""A module tree's layout as rnnfast.scan's capture reads it (capture._module_tensors and the
module part of the cache key): its submodules in named_modules order, each one's attributes
(tensors, Python scalars by value, the rest by name), parameters and buffers (the shared ones
once, as named_parameters gives them) and children. ``ModuleLayout.tensors`` checks that a
module has the same layout and reads its tensors in the same order, for the shortcut
(shortcut.py) of a step that is a module's bound method."""

from typing import List, Optional

from torch import Tensor, nn

from .capture import _PLAIN_TENSORS, _is_primitive, _module_tensors

_TENSOR, _SCALAR, _OTHER = 0, 1, 2  # an attribute's kind


def _attribute(v):
    if isinstance(v, Tensor) and not isinstance(v, nn.Parameter):
        return _TENSOR, None
    if _is_primitive(v):
        return _SCALAR, v
    return _OTHER, None


class ModuleLayout:
    __slots__ = ("type", "parents", "attrs", "params", "buffers", "children", "kept")

    def __init__(self, root: nn.Module):
        self.type = type(root)
        modules = [m for _, m in root.named_modules()]  # preorder, each once
        index = {id(m): k for k, m in enumerate(modules)}
        self.parents = [(-1, None)] * len(modules)  # (parent's index, name in its _modules)
        self.children, self.attrs, self.params, self.buffers = [], [], [], []
        for k, m in enumerate(modules):
            children = []
            for name, child in m._modules.items():
                at = None if child is None else index[id(child)]
                children.append((name, at))
                if at is not None and at > k and self.parents[at][0] < 0:
                    self.parents[at] = (k, name)
            self.children.append(tuple(children))
            attrs = []
            for name, v in vars(m).items():
                kind, value = _attribute(v)
                attrs.append((name, kind, value, type(value)))
            self.attrs.append(tuple(attrs))
            self.params.append(tuple((n, p is None) for n, p in m._parameters.items()))
            self.buffers.append(tuple((n, b is None) for n, b in m._buffers.items()))
        read = self._read(root)
        if read is None:
            raise ValueError("the module's tensors are not read as capture reads them")
        self.kept = (_once(read[0]), _once(read[1]))
        tensors = self.tensors(root)
        if [id(t) for t in tensors] != [id(t) for t in _module_tensors(root)[1]]:
            raise ValueError("the module's tensors are not read as capture reads them")

    def tensors(self, root) -> Optional[List[Tensor]]:
        """root's parameters, buffers and tensor attributes in capture's order, where root has
        this layout, else None."""
        read = self._read(root)
        if read is None:
            return None
        params, buffers, attributes = read
        if (_once(params), _once(buffers)) != self.kept:
            return None  # tied or untied since: named_parameters would name others
        return [params[i] for i in self.kept[0]] + [buffers[i] for i in self.kept[1]] + attributes

    def _read(self, root):
        """(parameters, buffers, tensor attributes) of root's modules in order, every name's
        (shared ones as often as they are named), where root has this layout, else None."""
        if type(root) is not self.type:
            return None
        modules = [root]
        for parent, name in self.parents[1:]:
            child = modules[parent]._modules.get(name)
            if child is None:
                return None
            modules.append(child)
        if len({id(m) for m in modules}) != len(modules):
            return None  # a module now shared, which named_modules would visit once
        params, buffers, attributes = [], [], []
        for k, m in enumerate(modules):
            if not self._same(m, k, modules, params, buffers, attributes):
                return None
        return params, buffers, attributes

    def _same(self, m, k, modules, params, buffers, attributes) -> bool:
        children = m._modules
        if len(children) != len(self.children[k]):
            return False
        for (name, child), (rname, at) in zip(children.items(), self.children[k]):
            if name != rname or (child is None) != (at is None):
                return False
            if at is not None and child is not modules[at]:
                return False
        d = vars(m)
        if len(d) != len(self.attrs[k]):
            return False
        for (name, v), (rname, kind, value, kind_type) in zip(d.items(), self.attrs[k]):
            if name != rname:
                return False
            if kind == _TENSOR:
                if type(v) is not Tensor:
                    return False
                attributes.append(v)
            elif kind == _SCALAR:
                if type(v) is not kind_type or v != value:
                    return False
            elif isinstance(v, Tensor) or _is_primitive(v):
                return False
        for own, layout, out in (
            (m._parameters, self.params[k], params),
            (m._buffers, self.buffers[k], buffers),
        ):
            if len(own) != len(layout):
                return False
            for (name, t), (rname, was_none) in zip(own.items(), layout):
                if name != rname or (t is None) != was_none:
                    return False
                if t is not None:
                    if type(t) not in _PLAIN_TENSORS:
                        return False
                    out.append(t)
        return True


def _once(tensors: List[Tensor]) -> tuple:
    """The positions of tensors' first occurrences."""
    seen, kept = set(), []
    for i, t in enumerate(tensors):
        if id(t) not in seen:
            seen.add(id(t))
            kept.append(i)
    return tuple(kept)
