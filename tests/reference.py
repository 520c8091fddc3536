"""Plain-PyTorch reference implementation of rnnfast.functional.

Written directly from the cell equations (the NNDL textbook's and d2l's), as an explicit
Python loop over time steps. It never calls rnnfast. Every operation is an ordinary
differentiable torch op, so autograd through it gives reference gradients; run it in
float64 for tight comparisons.

Semantics mirrored from the rnnfast API:

* ``input`` is [T, B, I] ([B, T, I] with ``batch_first``); weights use torch.nn's
  layout ``[G*H, I]`` / ``[G*H, H]`` and gate order (GRU r, z, n; LSTM i, f, g, o).
* ``hx`` is [B, H] (LSTM: a tuple ``(h0 [B, P or H], c0 [B, H])``); None means zeros.
* ``lengths`` (B integers in [0, T], any order): row b is processed at
  t = 0 .. L_b - 1 (forward) or t = L_b - 1 .. 0 (``reverse=True``); output at
  t >= L_b is zero and the final state is the state after the last processed step
  (h0 if L_b == 0).
"""

import torch

__all__ = ["rnn", "gru", "lstm"]


def _linear(x, w, b=None):
    # x [B, K], w [N, K], b [N] -> [B, N]
    y = x @ w.t()
    if b is not None:
        y = y + b
    return y


def _prepare(input, batch_first, lengths):
    if input.dim() != 3:
        raise ValueError(f"reference: input must be 3-D, got {input.dim()}-D")
    x = input.transpose(0, 1) if batch_first else input  # [T, B, I]
    T, B = x.shape[0], x.shape[1]
    if lengths is None:
        lens = torch.full((B,), T, dtype=torch.long)
    else:
        lens = torch.as_tensor(lengths).to(device="cpu", dtype=torch.long).reshape(-1)
        if lens.numel() != B:
            raise ValueError("reference: lengths must have B entries")
        if (lens < 0).any() or (lens > T).any():
            raise ValueError("reference: lengths must lie in [0, T]")
    return x, T, B, lens.to(x.device)


def _time_order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _loop(x, T, B, lens, reverse, states, step):
    """Generic masked recurrence.

    states: tuple of state tensors [B, *]; states[0] is the one emitted as output.
    step(x_t, states) -> new states tuple.
    Returns output [T, B, S0] and the final states.
    """
    outputs = [None] * T
    for t in _time_order(T, reverse):
        active = (lens > t).unsqueeze(1)  # [B, 1] bool: row processes step t
        new = step(x[t], states)
        states = tuple(torch.where(active, n, s) for n, s in zip(new, states))
        outputs[t] = torch.where(active, new[0], torch.zeros_like(new[0]))
    if T == 0:
        out = x.new_zeros((0, B, states[0].shape[1]))
    else:
        out = torch.stack(outputs, 0)
    return out, states


def _finish(out, batch_first):
    return out.transpose(0, 1) if batch_first else out


def rnn(
    input,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    hx=None,
    *,
    nonlinearity="tanh",
    residual=False,
    batch_first=False,
    reverse=False,
    lengths=None,
):
    """Elman RNN (optionally residual, NNDL eq. 6.50):
    h' = [h +] act(W_ih x + b_ih + W_hh h + b_hh)."""
    if nonlinearity == "tanh":
        act = torch.tanh
    elif nonlinearity == "relu":
        act = torch.relu
    else:
        raise ValueError(f"reference: unknown nonlinearity {nonlinearity!r}")
    x, T, B, lens = _prepare(input, batch_first, lengths)
    H = weight_hh.shape[0]
    h0 = x.new_zeros((B, H)) if hx is None else hx

    def step(xt, states):
        (h,) = states
        a = act(_linear(xt, weight_ih, bias_ih) + _linear(h, weight_hh, bias_hh))
        return (h + a,) if residual else (a,)

    out, (hn,) = _loop(x, T, B, lens, reverse, (h0,), step)
    return _finish(out, batch_first), hn


def gru(
    input,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    hx=None,
    *,
    reset_after=True,
    batch_first=False,
    reverse=False,
    lengths=None,
):
    """GRU, gate order r, z, n.

    reset_after=True (torch.nn.GRU): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    reset_after=False (Cho 2014 / d2l): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
    h' = (1 - z) * n + z * h
    """
    x, T, B, lens = _prepare(input, batch_first, lengths)
    H = weight_hh.shape[1]
    h0 = x.new_zeros((B, H)) if hx is None else hx
    W_ir, W_iz, W_in = weight_ih.chunk(3, 0)
    W_hr, W_hz, W_hn = weight_hh.chunk(3, 0)
    b_ir, b_iz, b_in = (None,) * 3 if bias_ih is None else bias_ih.chunk(3, 0)
    b_hr, b_hz, b_hn = (None,) * 3 if bias_hh is None else bias_hh.chunk(3, 0)

    def step(xt, states):
        (h,) = states
        r = torch.sigmoid(_linear(xt, W_ir, b_ir) + _linear(h, W_hr, b_hr))
        z = torch.sigmoid(_linear(xt, W_iz, b_iz) + _linear(h, W_hz, b_hz))
        if reset_after:
            n = torch.tanh(_linear(xt, W_in, b_in) + r * _linear(h, W_hn, b_hn))
        else:
            n = torch.tanh(_linear(xt, W_in, b_in) + _linear(r * h, W_hn, b_hn))
        return ((1 - z) * n + z * h,)

    out, (hn,) = _loop(x, T, B, lens, reverse, (h0,), step)
    return _finish(out, batch_first), hn


def lstm(
    input,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    hx=None,
    *,
    weight_hr=None,
    batch_first=False,
    reverse=False,
    lengths=None,
):
    """LSTM, gate order i, f, g, o; optional projection h = W_hr (o * tanh(c))."""
    x, T, B, lens = _prepare(input, batch_first, lengths)
    H = weight_hh.shape[0] // 4
    P = H if weight_hr is None else weight_hr.shape[0]
    if hx is None:
        h0, c0 = x.new_zeros((B, P)), x.new_zeros((B, H))
    else:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("reference: LSTM hx must be a tuple (h0, c0)")
        h0, c0 = hx
    W = weight_ih.chunk(4, 0)
    U = weight_hh.chunk(4, 0)
    bi = (None,) * 4 if bias_ih is None else bias_ih.chunk(4, 0)
    bh = (None,) * 4 if bias_hh is None else bias_hh.chunk(4, 0)

    def step(xt, states):
        h, c = states
        pre = [_linear(xt, W[k], bi[k]) + _linear(h, U[k], bh[k]) for k in range(4)]
        i = torch.sigmoid(pre[0])
        f = torch.sigmoid(pre[1])
        g = torch.tanh(pre[2])
        o = torch.sigmoid(pre[3])
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        if weight_hr is not None:
            h_new = h_new @ weight_hr.t()
        return (h_new, c_new)

    out, (hn, cn) = _loop(x, T, B, lens, reverse, (h0, c0), step)
    return _finish(out, batch_first), (hn, cn)
