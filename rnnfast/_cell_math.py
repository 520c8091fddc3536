"""One step of each of rnnfast's cells as plain torch ops (torch.nn's weight layout and gate
order: GRU r, z, n; LSTM i, f, g, o): what an rnnfast cell module computes while rnnfast.scan
traces a step that calls it, so that the trace holds the cell's math, which the scan engine
runs, rather than the fused op over a sequence of one step."""

import torch
import torch.nn.functional as F


def cell_step(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, cell: str):
    """``(h', c')`` of ``cell`` for input ``[B, I]`` and states ``[B, H]`` or None (zeros); ``c'``
    empty for cells without a cell state. The formulas of the fused op's cells (NNDL's SRN and
    its residual form h' = h + act(...), eq. 6.50; torch.nn's GRU, reset after the product; the
    reset-before GRU of Cho et al. and d2l; torch.nn's LSTM)."""
    H = weight_hh.shape[1]
    h = input.new_zeros(input.shape[0], H) if hx is None else hx
    x_gates = F.linear(input, weight_ih, bias_ih)
    if cell.startswith("rnn_"):
        act = torch.tanh if cell.startswith("rnn_tanh") else torch.relu
        a = act(x_gates + F.linear(h, weight_hh, bias_hh))
        return (h + a if cell.endswith("_residual") else a), input.new_empty(0)
    if cell == "lstm":
        c = input.new_zeros(input.shape[0], H) if cx is None else cx
        i, f, g, o = (x_gates + F.linear(h, weight_hh, bias_hh)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    x_r, x_z, x_n = x_gates.chunk(3, -1)
    if cell == "gru":
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
    elif cell == "gru_reset_before":
        w_rz, w_n = weight_hh[: 2 * H], weight_hh[2 * H :]
        b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[: 2 * H], bias_hh[2 * H :])
        h_r, h_z = F.linear(h, w_rz, b_rz).chunk(2, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + F.linear(r * h, w_n, b_n))
    else:
        raise ValueError(f"rnnfast: no step formula for cell {cell!r}")
    return (1 - z) * n + z * h, input.new_empty(0)
