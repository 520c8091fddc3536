"""rnnfast: fused recurrent layers for PyTorch.

Importing the package loads the compiled extension (which registers the ``rnnfast`` ops)
and their fake kernels and autograd formulas.

- ``rnnfast.RNN``, ``GRU``, ``LSTM``: drop-in replacements for torch.nn's layers;
- ``rnnfast.RNNCell``, ``GRUCell``, ``LSTMCell``: drop-in replacements for torch.nn's cells;
- ``rnnfast.convert(model)``: swaps those torch.nn modules inside a model for rnnfast's;
- ``rnnfast.functional``: one layer in one direction as a function;
- ``rnnfast.scan(combine_fn, init, xs)``: torch.scan's signature, a hand-written step traced
  once and run by rnnfast's engine, with autograd;
- ``rnnfast.empty_cpu_cache()``: frees the CPU engine's idle scratch memory.
"""

import importlib

from . import (
    _ops,  # noqa: F401  (registers ops, fake kernels and autograd)
    functional,
)
from .cells import GRUCell, LSTMCell, RNNCell
from .convert import convert
from .layers import GRU, LSTM, RNN

__all__ = [
    "functional",
    "RNN",
    "GRU",
    "LSTM",
    "RNNCell",
    "GRUCell",
    "LSTMCell",
    "convert",
    "empty_cpu_cache",
    "scan",
    "ScanTraceError",
    "CarryMismatchError",
]
__version__ = "0.1.0"

# Loaded on first use: rnnfast._scan imports torch._dynamo, which takes about a second.
_LAZY = {"scan": "api", "ScanTraceError": "errors", "CarryMismatchError": "errors"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"._scan.{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def empty_cpu_cache() -> int:
    """Free the scratch buffers that the CPU engine keeps between calls (at most 64 MiB: the
    chunk buffers of forward and backward, reused so that each call does not fault in fresh
    pages), as ``torch.cuda.empty_cache()`` does for CUDA's cache. Returns the bytes freed.
    Later calls allocate again."""
    from . import _C

    return _C._empty_cpu_cache()
