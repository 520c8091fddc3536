"""ONNX export: under ``torch.onnx.export(..., dynamo=True)`` the layers, cells and functional
API emit ONNX's own RNN, GRU and LSTM operators, one node per layer (both directions in one), as
torch.nn's layers do; the exported model then runs in any ONNX runtime, without rnnfast.

ONNX has operators for every cell but the residual SRN, and no LSTM projection (torch.nn's
proj_size cannot be exported either); those raise an error that says so.

Only torch.onnx.export's first way of capturing the model (torch.export, non-strict) runs this
module: Dynamo, which the strict way runs, takes torch.onnx.is_in_onnx_export() for False.
"""

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

try:
    from torch.onnx.ops import symbolic_multi_out
except ImportError as error:  # torch < 2.8
    raise ImportError(
        "rnnfast: exporting to ONNX needs torch.onnx.ops (torch 2.8 or later); "
        f"this is torch {torch.__version__}"
    ) from error

# rnnfast cell -> (ONNX operator, its attributes besides hidden_size, direction and
# activations, and the activation of every direction or None for the operator's defaults).
_OPERATORS = {
    "rnn_tanh": ("RNN", {}, "Tanh"),
    "rnn_relu": ("RNN", {}, "Relu"),
    "gru": ("GRU", {"linear_before_reset": 1}, None),  # torch.nn's reset after the product
    "gru_reset_before": ("GRU", {"linear_before_reset": 0}, None),
    "lstm": ("LSTM", {}, None),
}
# ONNX's gate order as indices of torch.nn's gate blocks: GRU (z, r, h) from torch.nn's
# (r, z, n); LSTM (i, o, f, c) from torch.nn's (i, f, g, o).
_GATE_ORDER = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}

# Per direction: weight_ih, weight_hh, bias_ih, bias_hh, weight_hr (as the ops take them).
DirectionWeights = Sequence[Optional[Tensor]]
_WEIGHTS_PER_DIRECTION = 5


def _operator(cell: str, weight_hr: Optional[Tensor]):
    problem = None
    if cell not in _OPERATORS:
        problem = (
            f"cannot export cell {cell!r} to ONNX: ONNX has no residual SRN operator; "
            f"torch.onnx.export takes the cells {sorted(_OPERATORS)}"
        )
    elif weight_hr is not None:
        problem = (
            "cannot export an LSTM with a projection (weight_hr, proj_size) to ONNX: its "
            "LSTM operator has none (nor can torch.nn's LSTM be exported with one)"
        )
    if problem is not None:
        # Also as a warning: the exporter takes an error for a failed strategy and tries the
        # next (torch.export in strict mode, where this module does not run), whose error then
        # says only that no ONNX function exists for rnnfast::recurrent_forward.
        warnings.warn("rnnfast: " + problem, stacklevel=2)
        raise ValueError("rnnfast: " + problem)
    return _OPERATORS[cell]


def _onnx_gates(weight: Tensor, order: Tuple[int, ...]) -> Tensor:
    """Gate blocks along dim 0, from torch.nn's order to ONNX's. Slices, not chunk: the
    exporter folds a Slice of a weight into a constant, not a Split."""
    if len(order) == 1:
        return weight
    H = weight.shape[0] // len(order)
    return torch.cat([weight[k * H : (k + 1) * H] for k in order])


def _layer(
    x: Tensor,
    directions: List[DirectionWeights],
    h0: Optional[Tensor],
    c0: Optional[Tensor],
    lengths: Optional[Tensor],
    cell: str,
    reverse: bool,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One ONNX node over ``x`` [T, B, I]: one direction (reversed if ``reverse``) or two
    (forward, reverse). h0, c0 [D, B, H] or None. Returns output [T, B, D*H], h_n and c_n
    [D, B, H] (c_n None but for LSTM)."""
    op, attrs, activation = _operator(cell, directions[0][4])
    order = _GATE_ORDER[op]
    H = directions[0][1].shape[1]
    D = len(directions)
    W = torch.stack([_onnx_gates(w[0], order) for w in directions])  # [D, G*H, I]
    R = torch.stack([_onnx_gates(w[1], order) for w in directions])  # [D, G*H, H]
    B = None
    if any(w[2] is not None or w[3] is not None for w in directions):
        zeros = W.new_zeros(W.shape[1])
        B = torch.stack(
            [
                torch.cat([_onnx_gates(zeros if b is None else b, order) for b in (w[2], w[3])])
                for w in directions
            ]
        )
    attrs = dict(
        attrs,
        hidden_size=H,
        direction="bidirectional" if D == 2 else "reverse" if reverse else "forward",
    )
    if activation is not None:
        attrs["activations"] = [activation] * D
    sequence_lens = None if lengths is None else lengths.to(torch.int32)
    T, batch = x.shape[0], x.shape[1]
    inputs = [x, W, R, B, sequence_lens, h0]
    shapes = [[T, D, batch, H], [D, batch, H]]
    if op == "LSTM":
        inputs.append(c0)
        shapes.append([D, batch, H])
    outputs = symbolic_multi_out(op, inputs, attrs, dtypes=[x.dtype] * len(shapes), shapes=shapes)
    # Y [T, D, B, H] -> [T, B, D*H]: the directions side by side, forward first, as torch.nn.
    output = outputs[0].transpose(1, 2).reshape(T, batch, D * H)
    return output, outputs[1], outputs[2] if op == "LSTM" else None


def _time_major(x: Tensor, batch_first: bool) -> Tensor:
    return x.transpose(0, 1) if batch_first else x


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
    """rnnfast.functional.recurrent_forward's ONNX form: ``(output, h_n, c_n)``, ``c_n`` empty
    for cells without a cell state."""
    output, h_n, c_n = _layer(
        _time_major(input, batch_first),
        [(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)],
        None if hx is None else hx.unsqueeze(0),
        None if cx is None else cx.unsqueeze(0),
        lengths,
        cell,
        reverse,
    )
    c_n = input.new_empty(0) if c_n is None else c_n[0]
    return _time_major(output, batch_first), h_n[0], c_n


def recurrent_layers(input, weights, hx, cx, lengths, cell, bidirectional, batch_first, dropout):
    """rnnfast.functional.recurrent_layers's ONNX form (as csrc/composite/recurrent_layers.cpp,
    one node
    per layer): ``(output, h_n, c_n)``, ``c_n`` ``[L*D, 0]`` for cells without a cell state."""
    D = 2 if bidirectional else 1
    n = _WEIGHTS_PER_DIRECTION
    per_direction = [weights[k : k + n] for k in range(0, len(weights), n)]
    layers = len(per_direction) // D
    x = _time_major(input, batch_first)
    h_n, c_n = [], []
    for layer in range(layers):
        states = slice(layer * D, (layer + 1) * D)
        x, h, c = _layer(
            x,
            per_direction[states],
            None if hx is None else hx[states],
            None if cx is None else cx[states],
            lengths,
            cell,
            reverse=False,
        )
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and layer + 1 < layers:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    c_n = input.new_empty(layers * D, 0) if c_n[0] is None else torch.cat(c_n)
    return _time_major(x, batch_first), torch.cat(h_n), c_n
