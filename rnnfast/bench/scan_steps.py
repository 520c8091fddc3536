"""Recurrent steps written by hand, as course notes and papers write them, for the benchmarks of
``rnnfast.scan``: each ``*_step(weights...)`` returns ``step(carry, x_t) -> (carry, y_t)``
reading its weights from its closure, as user code does.

Shapes: ``x_t [B, I]``, ``h, c [B, H]``. The weights' layouts are the ones the notes use
(``x @ W`` with ``W [I, H]``, not torch.nn's ``[H, I]``), except where the paper's code
writes ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nndl_srn_step(W, U, b):
    """NNDL's simple recurrent network: ``h' = tanh(x @ W + h @ U + b)``, W ``[I, H]``,
    U ``[H, H]``, b ``[H]`` (or ``[1, H]``); no per-step output (the last state is wanted)."""

    def step(h, x):
        h = torch.tanh(x @ W + h @ U + b)
        return h, None

    return step


def d2l_gru_step(params):
    """d2l's GRU from scratch, reset before the product: ``params`` are
    ``W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h`` (``W_x* [I, H]``, ``W_h* [H, H]``,
    ``b_* [H]``), then optionally the output layer ``W_hq [H, Q], b_q [Q]`` run in the loop as
    d2l does; without it the step's output is the state."""
    with_output = len(params) == 11

    def step(H_, X):
        W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h = params[:9]
        Z = torch.sigmoid((X @ W_xz) + (H_ @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H_ @ W_hr) + b_r)
        H_tilde = torch.tanh((X @ W_xh) + ((R * H_) @ W_hh) + b_h)
        H_ = Z * H_ + (1 - Z) * H_tilde
        if not with_output:
            return H_, H_
        W_hq, b_q = params[9:]
        return H_, H_ @ W_hq + b_q

    return step


def numpy_lstm_step(W, b, hidden_size):
    """The LSTM of numpy-style notes: one product of ``cat([h, x])`` by W ``[H + I, 4H]``, the
    gates split in the order i, f, o, g; the output is h."""
    H = hidden_size

    def step(state, x):
        h, c = state
        z = torch.cat([h, x], dim=1) @ W + b
        i, f, o, g = torch.split(z, H, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h

    return step


def peephole_lstm_step(W, U, b, p_i, p_f, p_o):
    """Gers & Schmidhuber's peephole LSTM: torch.nn-layout W ``[4H, I]``, U ``[4H, H]``,
    b ``[4H]`` (gates i, f, g, o) and per-unit peepholes ``p_* [H]`` from c into i and f, and
    from the new c into o."""

    def step(state, x):
        h, c = state
        gi, gf, gg, go = (F.linear(x, W, b) + F.linear(h, U)).chunk(4, dim=-1)
        i = torch.sigmoid(gi + p_i * c)
        f = torch.sigmoid(gf + p_f * c)
        c = f * c + i * torch.tanh(gg)
        h = torch.sigmoid(go + p_o * c) * torch.tanh(c)
        return (h, c), h

    return step


def layernorm_lstm_step(W, U, b, g_x, g_h, g_c, b_c, hidden_size):
    """Ba et al.'s layer-normalized LSTM: layer norm of each product (gains ``g_x, g_h [4H]``)
    and of the cell (``g_c, b_c [H]``); W ``[4H, I]``, U ``[4H, H]``, b ``[4H]``."""
    H = hidden_size

    def step(state, x):
        h, c = state
        z = F.layer_norm(x @ W.t(), (4 * H,), g_x) + F.layer_norm(h @ U.t(), (4 * H,), g_h) + b
        i, f, g, o = z.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), g_c, b_c))
        return (h, c), h

    return step


def python_loop(step, init, xs):
    """The step in a Python for-loop over ``xs [T, B, I]``: ``(final_carry, ys)``, ys the
    outputs stacked ``[T, ...]`` (None where the step outputs None)."""
    carry, ys = init, []
    for x_t in xs:
        carry, y_t = step(carry, x_t)
        ys.append(y_t)
    return carry, (None if ys[0] is None else torch.stack(ys))
