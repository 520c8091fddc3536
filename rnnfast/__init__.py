"""rnnfast: fused recurrent layers for PyTorch.

Importing the package loads the compiled extension (which registers the ``rnnfast`` ops)
and their fake kernels and autograd formulas.

- ``rnnfast.RNN``, ``GRU``, ``LSTM``: drop-in replacements for torch.nn's layers;
- ``rnnfast.RNNCell``, ``GRUCell``, ``LSTMCell``: drop-in replacements for torch.nn's cells;
- ``rnnfast.convert(model)``: swaps those torch.nn modules inside a model for rnnfast's;
- ``rnnfast.functional``: one layer in one direction as a function.
"""

from . import _ops  # noqa: F401  (registers ops, fake kernels and autograd)
from . import functional
from .cells import GRUCell, LSTMCell, RNNCell
from .convert import convert
from .layers import GRU, LSTM, RNN

__all__ = ["functional", "RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell", "convert"]
__version__ = "0.1.0"
