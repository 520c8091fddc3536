"""pytree flatten and unflatten on every call of rnnfast.scan, with the usual cases (a lone
tensor, a flat tuple or list of tensors such as an LSTM's (h, c)) at once rather than through
torch.utils._pytree, and structures as cache keys."""

from typing import List

import torch.utils._pytree as pytree
from torch import Tensor

LEAF_SPEC = pytree.tree_flatten(0)[1]

# Flat tuples and lists of leaves: their specs by (type, length), and each spec's (type,
# length) by id (the specs live here for the process, so an id is never another spec's).
_flat_specs: dict = {}
_flat_keys: dict = {}


def _flat_spec(kind: type, n: int):
    spec = _flat_specs.get((kind, n))
    if spec is None:
        spec = _flat_specs[(kind, n)] = pytree.tree_flatten(kind([0] * n))[1]
        _flat_keys[id(spec)] = (kind, n)
    return spec


def flatten(tree):
    """pytree.tree_flatten(tree)."""
    if isinstance(tree, Tensor):
        return [tree], LEAF_SPEC
    kind = type(tree)
    if (kind is tuple or kind is list) and all(isinstance(t, Tensor) for t in tree):
        return list(tree), _flat_spec(kind, len(tree))
    return pytree.tree_flatten(tree)


def unflatten(leaves: List, spec):
    """pytree.tree_unflatten(leaves, spec), a leaf's spec giving the leaf itself."""
    if spec is LEAF_SPEC or spec.is_leaf():
        return leaves[0]
    key = _flat_keys.get(id(spec))
    return key[0](leaves) if key is not None else pytree.tree_unflatten(leaves, spec)


def spec_key(spec):
    """A pytree structure as a cache key: torch's TreeSpec is unhashable before torch 2.6 (it
    holds its children in a list); its text names the types, dict keys and nesting."""
    if spec.is_leaf():
        return "*"
    key = _flat_keys.get(id(spec))
    return key if key is not None else str(spec)
