"""Drop-in replacements for torch.nn.RNN, GRU and LSTM.

They take torch.nn's constructor arguments and return what torch.nn returns; their parameters
have torch.nn's names, shapes, gate order and initialisation, so ``state_dict``s move both ways.
Each layer and direction runs as one fused ``rnnfast::recurrent_forward`` call, all of them from
one ``rnnfast::recurrent_layers`` call.

They derive from ``torch.nn.RNNBase`` (parameters, checks, ``repr``, pickling) but not from
``nn.RNN``/``nn.GRU``/``nn.LSTM`` themselves: torch.compile refuses to trace those three.
"""

from typing import Optional, Tuple

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ._conversion import TorchConversion
from ._errors import DtypeMismatchError, LstmStateError, dtype_mismatch_error, empty_sequence_error
from ._weights import current_weights
from .functional import gru_cell_name, recurrent_layers, rnn_cell_name

__all__ = ["RNN", "GRU", "LSTM"]

_PARAM_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _layout(batched: bool, batch_first: bool) -> str:
    if not batched:
        return "[T, input_size] (unbatched)"
    return "[B, T, input_size] (batch_first=True)" if batch_first else "[T, B, input_size]"


def _check_state_dtype_and_device(input: Tensor, state: Tensor, name: str) -> None:
    """torch.nn's exception types, where the op's own checks would raise a TypeError for the
    dtype and, for a packed input, index the state before any check."""
    if state.dtype != input.dtype:
        raise dtype_mismatch_error(name, input.dtype, state.dtype)
    if state.device != input.device:
        raise RuntimeError(
            f"rnnfast: {name} must be on the device of input ({input.device}); got {state.device}"
        )


class RecurrentLayer(TorchConversion, nn.RNNBase):
    """What rnnfast.RNN, GRU and LSTM share. Subclasses set ``_torch_class`` and ``cell``."""

    def __init__(self, mode: str, *args, **kwargs):
        super().__init__(mode, *args, **kwargs)
        self._init_op_weight_names()

    # -- parameters ---------------------------------------------------------------------------

    def _init_op_weight_names(self):
        # Per layer and direction, the names of (weight_ih, weight_hh, bias_ih, bias_hh,
        # weight_hr) in the op's argument order; None where the layer has no such parameter.
        directions = 2 if self.bidirectional else 1
        self._op_weight_names = []
        for layer in range(self.num_layers):
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                self._op_weight_names.append(
                    tuple(
                        kind + suffix if kind + suffix in self._parameters else None
                        for kind in _PARAM_KINDS
                    )
                )

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_op_weight_names" not in state:
            self._init_op_weight_names()

    def flatten_parameters(self) -> None:
        """Does nothing, and exists for code that calls it on torch.nn layers: rnnfast's kernels
        read each weight where it lies, so one contiguous buffer gains nothing."""

    # -- forward ------------------------------------------------------------------------------

    def _hidden_sizes(self, input: Tensor, batch_sizes: Optional[Tensor]):
        """Expected (h0, c0) shapes; c0's is None for cells without a cell state."""
        return self.get_expected_hidden_size(input, batch_sizes), None

    def _split_state(self, hx) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        return hx, None

    def _join_state(self, h: Tensor, c: Optional[Tensor]):
        return h

    def _check_state(
        self, input: Tensor, h0: Tensor, c0: Optional[Tensor], batch_sizes: Optional[Tensor]
    ) -> None:
        h_shape, c_shape = self._hidden_sizes(input, batch_sizes)
        self.check_hidden_size(h0, h_shape, self._h0_message)
        if c_shape is not None:
            self.check_hidden_size(c0, c_shape, "Expected hidden[1] size {}, got {}")
        _check_state_dtype_and_device(input, h0, "hx")
        if c0 is not None:
            _check_state_dtype_and_device(input, c0, "cx")

    _h0_message = "Expected hidden size {}, got {}"

    def forward(self, input, hx=None):
        """``input``: ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``), ``[T, I]`` unbatched, or a
        PackedSequence; ``hx``: ``[L*D, B, H_out]`` (``[L*D, H_out]`` unbatched; LSTM: a tuple
        ``(h0, c0)``) or None for zeros. Returns ``(output, h_n)`` like torch.nn, ``output``
        a PackedSequence when ``input`` is one."""
        name = type(self).__name__
        h0, c0 = self._split_state(hx)
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            self.check_input(input.data, input.batch_sizes)
            if h0 is not None:
                self._check_state(input.data, h0, c0, input.batch_sizes)
                h0, c0 = self._permute(h0, c0, input.sorted_indices)
            # Sorted order (longest first), as the packed data holds it.
            x, lengths = pad_packed_sequence(
                PackedSequence(input.data, input.batch_sizes), batch_first=self.batch_first
            )
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"
                )
            batched = input.dim() == 3
            if h0 is not None:
                expected = 3 if batched else 2
                if h0.dim() != expected or (c0 is not None and c0.dim() != expected):
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    got = (
                        f"{h0.dim()}-D tensor"
                        if c0 is None
                        else f"({h0.dim()}-D, {c0.dim()}-D) tensors"
                    )
                    raise RuntimeError(
                        f"For {kind} input, hx{'' if c0 is None else ' and cx'} "
                        f"should also be {expected}-D but got {got}"
                    )
            x = input
            if not batched:
                x = input.unsqueeze(0 if self.batch_first else 1)
                if h0 is not None:
                    h0 = h0.unsqueeze(1)
                    c0 = None if c0 is None else c0.unsqueeze(1)
            self.check_input(x, None)
            if h0 is not None:
                self._check_state(x, h0, c0, None)
            if x.shape[1 if self.batch_first else 0] == 0:
                raise empty_sequence_error(input.shape, _layout(batched, self.batch_first))

        output, h_n, c_n = self._run_layers(x, h0, c0, lengths)

        if packed:
            data, batch_sizes, _, _ = pack_padded_sequence(
                output, lengths, batch_first=self.batch_first
            )
            output = PackedSequence(data, batch_sizes, input.sorted_indices, input.unsorted_indices)
            h_n, c_n = self._permute(h_n, c_n, input.unsorted_indices)
        elif not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        return output, self._join_state(h_n, c_n)

    @staticmethod
    def _permute(h: Optional[Tensor], c: Optional[Tensor], order: Optional[Tensor]):
        if order is None:
            return h, c
        return (
            None if h is None else h.index_select(1, order),
            None if c is None else c.index_select(1, order),
        )

    def _run_layers(
        self, x: Tensor, h0: Optional[Tensor], c0: Optional[Tensor], lengths: Optional[Tensor]
    ):
        # x [T, B, I] (or batch-first); h0 [L*D, B, H_out], c0 [L*D, B, H] or None.
        weights = current_weights(self, (n for names in self._op_weight_names for n in names))
        dropout = self.dropout if self.training else 0.0  # the op applies it between layers
        try:
            output, h_n, c_n = recurrent_layers(
                x,
                weights,
                h0,
                c0,
                lengths,
                self.cell,
                self.bidirectional,
                self.batch_first,
                dropout,
            )
        except TypeError as e:
            # The op's TypeErrors are its dtype checks (a weight's, here); torch.nn's layers
            # raise RuntimeError.
            raise DtypeMismatchError(str(e)) from None
        return output, h_n, c_n if self._has_cell_state else None

    _has_cell_state = False

    # -- conversion ---------------------------------------------------------------------------

    def _config(self) -> dict:
        """Constructor arguments shared with the torch.nn namesake."""
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
        )


class RNN(RecurrentLayer):
    """Drop-in ``torch.nn.RNN`` (Elman network, tanh or relu), plus ``residual=True`` for the
    residual SRN of NNDL eq. (6.50): ``h' = h + act(W_ih x + b_ih + W_hh h + b_hh)``.

    Arguments as torch.nn.RNN: ``input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``.
    """

    _torch_class = nn.RNN

    def __init__(self, *args, residual: bool = False, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        if not isinstance(residual, bool):
            raise TypeError(f"residual should be of type bool, got: {type(residual).__name__}")
        self.residual = residual
        super().__init__("RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)

    @property
    def cell(self) -> str:
        return rnn_cell_name(self.nonlinearity, self.residual)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s + (", residual=True" if self.residual else "")

    def _config(self) -> dict:
        return dict(RecurrentLayer._config(self), nonlinearity=self.nonlinearity)

    def _torch_config(self) -> dict:
        if self.residual:
            raise ValueError("rnnfast.RNN.to_torch: torch.nn.RNN has no residual variant")
        return self._config()


class GRU(RecurrentLayer):
    """Drop-in ``torch.nn.GRU``, plus ``reset_after=False`` for the GRU of Cho et al. 2014 and
    d2l, where the reset gate scales ``h`` before the recurrent product:
    ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``.

    Arguments as torch.nn.GRU: ``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``.
    """

    _torch_class = nn.GRU

    def __init__(self, *args, reset_after: bool = True, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if not isinstance(reset_after, bool):
            raise TypeError(
                f"reset_after should be of type bool, got: {type(reset_after).__name__}"
            )
        self.reset_after = reset_after
        super().__init__("GRU", *args, **kwargs)

    @property
    def cell(self) -> str:
        return gru_cell_name(self.reset_after)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def _torch_config(self) -> dict:
        if not self.reset_after:
            raise ValueError("rnnfast.GRU.to_torch: torch.nn.GRU has only reset_after=True")
        return self._config()


class LSTM(RecurrentLayer):
    """Drop-in ``torch.nn.LSTM``, projection (``proj_size``) included.

    Arguments as torch.nn.LSTM: ``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None``.
    ``forward(input, (h0, c0))`` returns ``(output, (h_n, c_n))``.
    """

    _torch_class = nn.LSTM
    _has_cell_state = True
    _h0_message = "Expected hidden[0] size {}, got {}"
    cell = "lstm"

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def _hidden_sizes(self, input, batch_sizes):
        h_shape = self.get_expected_hidden_size(input, batch_sizes)
        return h_shape, (h_shape[0], h_shape[1], self.hidden_size)

    def _split_state(self, hx):
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise LstmStateError(
                f"LSTM: hx must be a tuple (h_0, c_0) of tensors, or None; got {type(hx).__name__}"
            )
        if not isinstance(hx[0], Tensor) or not isinstance(hx[1], Tensor):
            raise LstmStateError(
                "LSTM: hx must hold two tensors (h_0, c_0); got "
                f"({type(hx[0]).__name__}, {type(hx[1]).__name__})"
            )
        return hx[0], hx[1]

    def _join_state(self, h, c):
        return h, c

    def _config(self) -> dict:
        return dict(RecurrentLayer._config(self), proj_size=self.proj_size)
