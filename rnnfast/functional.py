"""The functional API: one fused op call per layer and direction.

Weights and biases have torch.nn's shapes and gate order (``weight_ih`` is ``[G*H, I]``),
and may be any strided view: code written as ``x @ W`` with ``W`` of shape ``[I, H]`` passes
``W.t()`` as it is.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch._C import _functorch
from torch.overrides import has_torch_function

from . import _C
from ._ops import recurrent_forward as _recurrent_forward_op
from ._ops import recurrent_layers as _recurrent_layers_op

_RNN_CELLS = {
    ("tanh", False): "rnn_tanh",
    ("relu", False): "rnn_relu",
    ("tanh", True): "rnn_tanh_residual",
    ("relu", True): "rnn_relu_residual",
}

Lengths = Optional[Union[Tensor, Sequence[int]]]


def rnn_cell_name(nonlinearity: str, residual: bool) -> str:
    """The op's cell name of an Elman RNN: rnn_tanh, rnn_relu, or their _residual forms."""
    try:
        return _RNN_CELLS[(nonlinearity, bool(residual))]
    except KeyError:
        raise ValueError(
            f"rnnfast.functional.rnn: nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}"
        ) from None


def gru_cell_name(reset_after: bool) -> str:
    """The op's cell name of a GRU: gru (reset after, torch.nn) or gru_reset_before."""
    return "gru" if reset_after else "gru_reset_before"


_is_compiling = torch.compiler.is_compiling  # bound once: the lookups cost 0.1 us a call


def _through_torch_ops(tensors) -> bool:
    """Whether a call must go through torch.ops rather than the extension's direct entries:
    under torch.compile, or where __torch_function__ applies."""
    return _is_compiling() or has_torch_function(tensors)


def _exporting_to_onnx() -> bool:
    """Under torch.onnx.export (dynamo=True, which traces as torch.compile does, so only asked
    where _through_torch_ops is true): the calls then emit ONNX's own RNN, GRU and LSTM
    operators (rnnfast/_onnx.py) instead of rnnfast's ops, which no ONNX runtime has."""
    return torch.onnx.is_in_onnx_export()


def recurrent_forward(
    input,
    weight_ih,
    weight_hh,
    bias_ih,
    bias_hh,
    hx,
    cx,
    weight_hr,
    lengths,
    cell,
    reverse,
    batch_first,
):
    """rnnfast::recurrent_forward. In plain eager mode through the extension's direct entry
    (the same op and dispatcher, without torch.ops' boxed argument parsing); under
    torch.compile, or where __torch_function__ applies, through torch.ops.

    Either way the op is told not to keep what only a backward reads where grad mode is off
    (need_saved; the Autograd kernel keeps it anyway wherever it records a graph). A graph
    that torch.compile traces under no_grad runs only under no_grad: Dynamo guards on it.

    Returns ``(output, h_n, c_n)``, ``c_n`` empty for cells without a cell state (the op's
    fourth output, what it saves for backward, is not for the caller)."""
    if _through_torch_ops((input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr)):
        if _exporting_to_onnx():
            from . import _onnx

            return _onnx.recurrent_forward(
                input,
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                hx,
                cx,
                weight_hr,
                lengths,
                cell,
                reverse,
                batch_first,
            )
        return _recurrent_forward_op(
            input,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            hx,
            cx,
            weight_hr,
            lengths,
            cell,
            reverse,
            batch_first,
            torch.is_grad_enabled(),
        )[:3]
    if lengths is not None:
        _check_wrapped_lengths(lengths, input, batch_first)
    return _C.recurrent_forward(
        input,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        hx,
        cx,
        weight_hr,
        lengths,
        cell,
        reverse,
        batch_first,
    )


def recurrent_layers(input, weights, hx, cx, lengths, cell, bidirectional, batch_first, dropout):
    """rnnfast::recurrent_layers, a stack of layers (the forward of rnnfast.RNN/GRU/LSTM):
    through the extension's direct entry in plain eager mode, else through torch.ops.

    ``weights``: ``(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)`` per layer and
    direction, None where absent; ``hx`` ``[L*D, B, P]``, ``cx`` ``[L*D, B, H]`` or None;
    ``dropout`` between layers. Returns ``(output, h_n, c_n)``, ``c_n`` ``[L*D, 0]`` for cells
    without a cell state."""
    if _through_torch_ops((input, *weights, hx, cx)):
        if _exporting_to_onnx():
            from . import _onnx

            return _onnx.recurrent_layers(
                input, weights, hx, cx, lengths, cell, bidirectional, batch_first, dropout
            )
        return _recurrent_layers_op(
            input, weights, hx, cx, lengths, cell, bidirectional, batch_first, dropout
        )
    if lengths is not None:
        _check_wrapped_lengths(lengths, input, batch_first)
    return _C.recurrent_layers(
        input, weights, hx, cx, lengths, cell, bidirectional, batch_first, dropout
    )


def cell_forward(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, cell):
    """One step of a cell, ``input`` ``[B, I]``, ``hx`` and ``cx`` ``[B, H]`` or None: the op over
    a single time step. Returns ``(h', c')``, ``c'`` empty for cells without a cell state."""
    tensors = (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx)
    if _through_torch_ops(tensors):
        from ._scan.decompositions import tracing_a_step

        if tracing_a_step():  # rnnfast.scan traces the cell's math, which its engine runs
            from ._cell_math import cell_step

            return cell_step(*tensors, cell)
        if _exporting_to_onnx():
            from . import _onnx

            _, h_next, c_next = _onnx.recurrent_forward(
                input.unsqueeze(0),
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                hx,
                cx,
                None,
                None,
                cell,
                False,
                False,
            )
            return h_next, c_next
        _, h_next, c_next, _ = _recurrent_forward_op(
            input.unsqueeze(0),
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            hx,
            cx,
            None,
            None,
            cell,
            False,
            False,
            torch.is_grad_enabled(),
        )
        return h_next, c_next
    return _C.cell_forward(*tensors, cell)


def _check_wrapped_lengths(lengths: Tensor, input: Tensor, batch_first: bool) -> None:
    """The range check of lengths that torch.func's transforms have wrapped (the op cannot read
    them: a transform forbids .item() on its tensors, and C++ cannot unwrap them); nothing for
    lengths that are not wrapped, which the op checks itself."""
    if not _functorch.is_functorch_wrapped_tensor(lengths):
        return
    T = input.shape[1 if batch_first else 0]
    values = lengths
    while _functorch.is_functorch_wrapped_tensor(values):
        values = _functorch.get_unwrapped(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        return  # the op names the dtype
    if values.numel() and values.device.type == "cpu":
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > T:
            raise ValueError(
                f"rnnfast: lengths must lie in [0, T] = [0, {T}] (T: the number of time steps "
                f"of input); got values from {lo} to {hi}"
            )


def _lengths(lengths: Lengths) -> Optional[Tensor]:
    if lengths is None or isinstance(lengths, Tensor):
        return lengths
    return torch.as_tensor(lengths, dtype=torch.int64)


def rnn(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    hx: Optional[Tensor] = None,
    *,
    nonlinearity: str = "tanh",
    residual: bool = False,
    batch_first: bool = False,
    reverse: bool = False,
    lengths: Lengths = None,
) -> Tuple[Tensor, Tensor]:
    """Elman RNN, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, over a whole sequence.

    With ``residual=True``, ``h' = h + act(...)`` (NNDL eq. 6.50).

    Args:
        input: ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``).
        weight_ih: ``[H, I]``; weight_hh: ``[H, H]``; bias_ih, bias_hh: ``[H]`` or None.
        hx: initial state ``[B, H]``; zeros if None.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        reverse: run from the last step to the first (the backward half of a bidirectional
            layer).
        lengths: ``[B]`` integer lengths in any order; steps past a sequence's end give zero
            output and leave its state as it was.

    Returns:
        ``(output, h_n)``: ``output`` ``[T, B, H]`` (or batch-first), ``h_n`` ``[B, H]``.
    """
    cell = rnn_cell_name(nonlinearity, residual)
    output, h_n, _ = recurrent_forward(
        input,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        hx,
        None,
        None,
        _lengths(lengths),
        cell,
        reverse,
        batch_first,
    )
    return output, h_n


def gru(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    hx: Optional[Tensor] = None,
    *,
    reset_after: bool = True,
    batch_first: bool = False,
    reverse: bool = False,
    lengths: Lengths = None,
) -> Tuple[Tensor, Tensor]:
    """GRU over a whole sequence, gates ``(r, z, n)`` in torch.nn's order.

    ``reset_after=True`` is torch.nn.GRU (and cuDNN):
    ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``;
    ``reset_after=False`` is the GRU of Cho et al. 2014 and d2l:
    ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``. Then ``h' = (1 - z)*n + z*h``.

    Shapes as in :func:`rnn` with ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]``, biases
    ``[3H]``. Returns ``(output, h_n)``.
    """
    cell = gru_cell_name(reset_after)
    output, h_n, _ = recurrent_forward(
        input,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        hx,
        None,
        None,
        _lengths(lengths),
        cell,
        reverse,
        batch_first,
    )
    return output, h_n


def lstm(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    hx: Optional[Tuple[Tensor, Tensor]] = None,
    *,
    weight_hr: Optional[Tensor] = None,
    batch_first: bool = False,
    reverse: bool = False,
    lengths: Lengths = None,
) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
    """LSTM over a whole sequence, gates ``(i, f, g, o)`` in torch.nn's order.

    ``c' = f*c + i*g``, ``h' = o*tanh(c')``, and with ``weight_hr`` ``[P, H]`` (torch.nn's
    ``proj_size``) ``h' = W_hr (o*tanh(c'))``.

    Shapes as in :func:`rnn` with ``weight_ih`` ``[4H, I]``, ``weight_hh`` ``[4H, P]``, biases
    ``[4H]``; ``hx`` is a tuple ``(h0 [B, P], c0 [B, H])`` or None.
    Returns ``(output, (h_n, c_n))``, ``output`` with P features.
    """
    h0 = c0 = None
    if hx is not None:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(
                "rnnfast.functional.lstm: hx must be a tuple (h0, c0) of tensors "
                f"[B, P] and [B, H], or None; got {type(hx).__name__}"
            )
        h0, c0 = hx
        if h0 is None or c0 is None:
            raise TypeError("rnnfast.functional.lstm: hx must hold both h0 and c0; got None")
    output, h_n, c_n = recurrent_forward(
        input,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        h0,
        c0,
        weight_hr,
        _lengths(lengths),
        "lstm",
        reverse,
        batch_first,
    )
    return output, (h_n, c_n)
