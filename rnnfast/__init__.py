"""rnnfast: fused recurrent layers for PyTorch.

Importing the package loads the compiled extension (which registers the ``rnnfast`` ops)
and their fake kernels and autograd formulas.
"""

from . import _ops  # noqa: F401  (registers ops, fake kernels and autograd)
from . import functional

__all__ = ["functional"]
__version__ = "0.1.0"
