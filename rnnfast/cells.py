"""Drop-in replacements for torch.nn.RNNCell, GRUCell and LSTMCell: one fused step per call.

Generation loops call a cell once per token, so what matters here is the fixed cost of a call:
the step is a single ``rnnfast::recurrent_forward`` op over one time step.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ._conversion import TorchConversion
from ._errors import DtypeMismatchError, LstmStateError
from ._weights import current_weights
from .functional import cell_forward, gru_cell_name, rnn_cell_name

__all__ = ["RNNCell", "GRUCell", "LSTMCell"]

_WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # the op's argument order


class RecurrentCell(TorchConversion, nn.RNNCellBase):
    """What the three cells share. Subclasses set ``_torch_class`` and ``cell``."""

    _has_cell_state = False

    def _check(self, input: Tensor, h: Optional[Tensor], c: Optional[Tensor]) -> None:
        # The errors of torch.nn's cells, naming the argument. input is 2-D.
        name = type(self).__name__
        batch, features = input.shape
        if features != self.input_size:
            raise RuntimeError(
                f"{name}: input has inconsistent input_size: got "
                f"{features}, expected {self.input_size}"
            )
        for state, what in ((h, "hx"), (c, "cx")):
            if state is None:
                continue
            shape = state.shape
            if shape[0] != batch:
                raise RuntimeError(
                    f"{name}: input batch size {batch} doesn't match {what} batch size {shape[0]}"
                )
            if shape[1] != self.hidden_size:
                raise RuntimeError(
                    f"{name}: {what} has inconsistent hidden_size: got "
                    f"{shape[1]}, expected {self.hidden_size}"
                )

    def _step(self, input: Tensor, h: Optional[Tensor], c: Optional[Tensor]):
        """input [B, I] or [I]; h, c [B, H] or [H] (as input) or None. Returns (h', c')."""
        name = type(self).__name__
        input_dim = input.dim()
        if input_dim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input_dim}D instead")
        for state, what in ((h, "hidden"), (c, "cell state")):
            if state is not None and state.dim() != input_dim:
                if state.dim() not in (1, 2):
                    raise ValueError(
                        f"{name}: Expected {what} to be 1D or 2D, got {state.dim()}D instead"
                    )
                # torch.nn's cells fail here with an IndexError, or a message about sizes.
                raise ValueError(
                    f"{name}: Expected {what} to be {input_dim}D like input (batched "
                    f"[B, features] or unbatched [features]), got {state.dim()}D"
                )
        batched = input_dim == 2
        if not batched:
            input = input.unsqueeze(0)
            h = None if h is None else h.unsqueeze(0)
            c = None if c is None else c.unsqueeze(0)
        self._check(input, h, c)
        weights = current_weights(self, _WEIGHT_NAMES)
        if self.hidden_size == 0:
            h_next, c_next = self._step_without_units(input, weights, h, c)
        else:
            try:
                h_next, c_next = cell_forward(input, *weights, h, c, self.cell)
            except TypeError as e:
                # The op's TypeErrors are its dtype checks; torch.nn's cells raise RuntimeError.
                raise DtypeMismatchError(str(e)) from None
        if not batched:
            h_next = h_next.squeeze(0)
            c_next = c_next.squeeze(0) if self._has_cell_state else c_next
        return h_next, c_next

    def _step_without_units(self, input: Tensor, weights, h: Optional[Tensor], c: Optional[Tensor]):
        """hidden_size = 0, which the op refuses: torch's own cell gives the empty [B, 0] states
        torch.nn's cells return, with their autograd (zero gradients of input and weights).
        Every variant computes nothing here, so torch's cell of the same gates stands in."""
        if h is None:
            h = input.new_zeros(input.shape[0], 0)
        if self._has_cell_state:
            return torch.lstm_cell(input, (h, h if c is None else c), *weights)
        step = torch.gru_cell if self.cell.startswith("gru") else torch.rnn_tanh_cell
        return step(input, h, *weights), input.new_empty(0)

    def _config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias)


class RNNCell(RecurrentCell):
    """Drop-in ``torch.nn.RNNCell``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, plus
    ``residual=True``: ``h' = h + act(...)`` (NNDL eq. 6.50)."""

    _torch_class = nn.RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
        *,
        residual: bool = False,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}. Select from 'tanh' or 'relu'.")
        if not isinstance(residual, bool):
            raise TypeError(f"residual should be of type bool, got: {type(residual).__name__}")
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        self.residual = residual

    @property
    def cell(self) -> str:
        return rnn_cell_name(self.nonlinearity, self.residual)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx, None)[0]

    def extra_repr(self) -> str:
        return super().extra_repr() + (", residual=True" if self.residual else "")

    def _config(self) -> dict:
        return dict(RecurrentCell._config(self), nonlinearity=self.nonlinearity)

    def _torch_config(self) -> dict:
        if self.residual:
            raise ValueError("rnnfast.RNNCell.to_torch: torch.nn.RNNCell has no residual variant")
        return self._config()


class GRUCell(RecurrentCell):
    """Drop-in ``torch.nn.GRUCell``, plus ``reset_after=False`` for the GRU of Cho et al. 2014
    and d2l (the reset gate scales ``h`` before the recurrent product)."""

    _torch_class = nn.GRUCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        reset_after: bool = True,
    ) -> None:
        if not isinstance(reset_after, bool):
            raise TypeError(
                f"reset_after should be of type bool, got: {type(reset_after).__name__}"
            )
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)
        self.reset_after = reset_after

    @property
    def cell(self) -> str:
        return gru_cell_name(self.reset_after)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx, None)[0]

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def _torch_config(self) -> dict:
        if not self.reset_after:
            raise ValueError("rnnfast.GRUCell.to_torch: torch.nn.GRUCell has only reset_after=True")
        return self._config()


class LSTMCell(RecurrentCell):
    """Drop-in ``torch.nn.LSTMCell``: ``forward(input, (h, c))`` returns ``(h', c')``."""

    _torch_class = nn.LSTMCell
    _has_cell_state = True
    cell = "lstm"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(
        self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[Tensor, Tensor]:
        h = c = None
        if hx is not None:
            if (
                not isinstance(hx, (tuple, list))
                or len(hx) != 2
                or not all(isinstance(t, Tensor) for t in hx)
            ):
                raise LstmStateError(
                    "LSTMCell: hx must be a tuple (h, c) of tensors, or None; "
                    f"got {type(hx).__name__}"
                )
            h, c = hx
        return self._step(input, h, c)
