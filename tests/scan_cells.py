"""Recurrent steps written by hand, as course notes and papers write them, for the tests of
rnnfast.scan: each ``make_*(I, H, dtype)`` returns ``(step, init(B), xs(T, B), params)``, the
step reading its weights from its closure (or a module) as user code does. The steps the
benchmarks time too come from ``rnnfast.bench.scan_steps``."""

import torch
import torch.nn.functional as F
from torch import nn

import rnnfast
from rnnfast.bench import scan_steps


def _p(*shape, dtype, scale=0.5):
    return (torch.randn(*shape, dtype=dtype) * scale).requires_grad_()


def _x(I, dtype):
    return lambda T, B: torch.randn(T, B, I, dtype=dtype).requires_grad_()


def _h(H, dtype, n=1):
    if n == 1:
        return lambda B: (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_()
    return lambda B: tuple(
        (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_() for _ in range(n)
    )


def make_nndl_srn(I, H, dtype):
    """NNDL's simple recurrent network, W [I, H]; only the last state is wanted (y None)."""
    W, U, b = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype), _p(H, dtype=dtype)
    step = scan_steps.nndl_srn_step(W, U, b)
    return step, _h(H, dtype), _x(I, dtype), [W, U, b]


def make_residual_srn(I, H, dtype):
    """NNDL eq. 6.50: h' = h + tanh(W x + U h + b)."""
    W, U, b = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype, scale=0.2), _p(H, dtype=dtype)

    def step(h, x):
        h = h + torch.tanh(x @ W + h @ U + b)
        return h, h.clone()

    return step, _h(H, dtype), _x(I, dtype), [W, U, b]


def make_d2l_gru(I, H, dtype):
    """d2l's GRU from scratch: reset before, a weight per gate, the output layer in the loop."""
    Q = 3
    params = [
        _p(*s, dtype=dtype)
        for s in [(I, H), (H, H), (H,), (I, H), (H, H), (H,), (I, H), (H, H), (H,), (H, Q), (Q,)]
    ]
    step = scan_steps.d2l_gru_step(params)
    return step, _h(H, dtype), _x(I, dtype), params


def make_numpy_lstm(I, H, dtype):
    """The LSTM of numpy-style notes: one product of cat([h, x]) by W [H + I, 4H]."""
    W, b = _p(H + I, 4 * H, dtype=dtype), _p(4 * H, dtype=dtype)
    step = scan_steps.numpy_lstm_step(W, b, H)
    return step, _h(H, dtype, 2), _x(I, dtype), [W, b]


class ModuleCell(nn.Module):
    """Weights held by a module: parameters, a buffer and a submodule (nn.Linear)."""

    def __init__(self, I, H, dtype):
        super().__init__()
        self.W = nn.Parameter(torch.randn(I, H, dtype=dtype) * 0.5)
        self.U = nn.Parameter(torch.randn(H, H, dtype=dtype) * 0.5)
        self.register_buffer("scale", torch.rand(H, dtype=dtype) + 0.5)
        self.out = nn.Linear(H, 2, dtype=dtype)

    def step(self, h, x):
        h = torch.tanh((x @ self.W + h @ self.U) * self.scale)
        return h, self.out(h)


def make_module_cell(I, H, dtype):
    m = ModuleCell(I, H, dtype)
    return m.step, _h(H, dtype), _x(I, dtype), [m.W, m.U, m.out.weight, m.out.bias]


def _lstm_weights(I, H, dtype):
    return _p(4 * H, I, dtype=dtype), _p(4 * H, H, dtype=dtype), _p(4 * H, dtype=dtype)


def make_peephole_lstm(I, H, dtype):
    """Gers & Schmidhuber's peepholes: per-unit vectors from c into i, f and (c') into o."""
    W, U, b = _lstm_weights(I, H, dtype)
    p_i, p_f, p_o = (_p(H, dtype=dtype) for _ in range(3))
    step = scan_steps.peephole_lstm_step(W, U, b, p_i, p_f, p_o)
    return step, _h(H, dtype, 2), _x(I, dtype), [W, U, b, p_i, p_f, p_o]


def make_layernorm_lstm(I, H, dtype):
    """Ba et al.'s layer-normalized LSTM: LN of each product and of the cell."""
    W, U, b = _lstm_weights(I, H, dtype)
    g_x, g_h, g_c = (
        (1 + _p(4 * H, dtype=dtype, scale=0.1).detach()).requires_grad_(),
        (1 + _p(4 * H, dtype=dtype, scale=0.1).detach()).requires_grad_(),
        (1 + _p(H, dtype=dtype, scale=0.1).detach()).requires_grad_(),
    )
    b_c = _p(H, dtype=dtype)
    step = scan_steps.layernorm_lstm_step(W, U, b, g_x, g_h, g_c, b_c, H)
    return step, _h(H, dtype, 2), _x(I, dtype), [W, U, b, g_x, g_h, g_c, b_c]


def make_layernorm_gru(I, H, dtype):
    """A GRU with layer norm of the recurrent product (reset after, torch.nn's gate order)."""
    W, U = _p(3 * H, I, dtype=dtype), _p(3 * H, H, dtype=dtype)
    ln = nn.LayerNorm(3 * H, dtype=dtype)

    def step(h, x):
        gx = F.linear(x, W)
        gh = ln(F.linear(h, U))
        rx, zx, nx = gx.chunk(3, -1)
        rh, zh, nh = gh.chunk(3, -1)
        r, z = torch.sigmoid(rx + rh), torch.sigmoid(zx + zh)
        n = torch.tanh(nx + r * nh)
        h = (1 - z) * n + z * h
        return h, h * 1

    return step, _h(H, dtype), _x(I, dtype), [W, U, ln.weight, ln.bias]


def make_indrnn(I, H, dtype):
    """Li et al.'s IndRNN: h' = relu(W x + u * h + b), a per-unit recurrent weight."""
    W, u, b = _p(I, H, dtype=dtype), _p(H, dtype=dtype), _p(H, dtype=dtype)

    def step(h, x):
        h = torch.relu(x @ W + u * h + b)
        return h, h + 0

    return step, _h(H, dtype), _x(I, dtype), [W, u, b]


def make_min_gru(I, H, dtype):
    """Feng et al.'s minGRU: gates from x only; the carry enters only the final mix."""
    Wz, Wh = _p(I, H, dtype=dtype), _p(I, H, dtype=dtype)

    def step(h, x):
        z = torch.sigmoid(x @ Wz)
        h = (1 - z) * h + z * (x @ Wh)
        return h, h.clone()

    return step, _h(H, dtype), _x(I, dtype), [Wz, Wh]


def make_slstm(I, H, dtype):
    """Beck et al.'s sLSTM (xLSTM): exponential input and forget gates in log space, the
    normalizer n and the stabilizer m as carries."""
    W, R, b = _lstm_weights(I, H, dtype)

    def step(state, x):
        h, c, n, m = state
        zi, zf, zz, zo = (x @ W.t() + h @ R.t() + b).chunk(4, -1)
        log_f = F.logsigmoid(zf)
        m_new = torch.maximum(log_f + m, zi)
        i = torch.exp(zi - m_new)
        f = torch.exp(log_f + m - m_new)
        c = f * c + i * torch.tanh(zz)
        n = f * n + i
        h = torch.sigmoid(zo) * (c / n)
        return (h, c, n, m_new), h

    def init(B):
        h = (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_()
        c = (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_()
        n = (torch.rand(B, H, dtype=dtype) + 1).requires_grad_()
        m = torch.zeros(B, H, dtype=dtype)
        return (h, c, n, m)

    return step, init, _x(I, dtype), [W, R, b]


def make_projected_lstm(I, H, dtype):
    """Sak et al.'s LSTM with a recurrent projection: h' = W_hr (o * tanh(c')), P < H."""
    P = max(1, H // 2)
    W, U, b = _p(4 * H, I, dtype=dtype), _p(4 * H, P, dtype=dtype), _p(4 * H, dtype=dtype)
    W_hr = _p(P, H, dtype=dtype)

    def step(state, x):
        h, c = state
        i, f, g, o = (F.linear(x, W, b) + F.linear(h, U)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = F.linear(torch.sigmoid(o) * torch.tanh(c), W_hr)
        return (h, c), h

    def init(B):
        return (
            (torch.randn(B, P, dtype=dtype) * 0.5).requires_grad_(),
            (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_(),
        )

    return step, init, _x(I, dtype), [W, U, b, W_hr]


def make_reset_gru(I, H, dtype):
    """A GRU whose state is reset where xs' mask says so (episode boundaries in RL)."""
    W, U, b = _p(3 * H, I, dtype=dtype), _p(3 * H, H, dtype=dtype), _p(3 * H, dtype=dtype)

    def step(h, inputs):
        x, reset = inputs
        h = h * (1 - reset)
        gx, gh = F.linear(x, W, b), h @ U.t()
        r, z, _ = (gx + gh).chunk(3, -1)
        r, z = torch.sigmoid(r), torch.sigmoid(z)
        n = torch.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        return h, h.clone()

    def xs(T, B):
        x = torch.randn(T, B, I, dtype=dtype).requires_grad_()
        reset = (torch.rand(T, B, 1) < 0.3).to(dtype)
        return (x, reset)

    return step, _h(H, dtype), xs, [W, U, b]


ALPHA = 0.2


def make_hard_sigmoid_cell(I, H, dtype):
    """A cell with hard-sigmoid gates, clamp(0.2 a + 0.5, 0, 1), and a global constant."""
    W, U = _p(I, 2 * H, dtype=dtype), _p(H, 2 * H, dtype=dtype)

    def step(h, x):
        a, g = (x @ W + h @ U).chunk(2, -1)
        z = torch.clamp(ALPHA * a + 0.5, 0.0, 1.0)
        h = z * h + (1 - z) * F.hardtanh(g)
        return h, h * 2.0

    return step, _h(H, dtype), _x(I, dtype), [W, U]


def make_quantized_rnn(I, H, dtype):
    """Hubara et al.'s quantized RNN: the state rounded to 3 bits in the forward, with the
    straight-through estimator's identity gradient in the backward (q(v) = v + (round(7 v) / 7
    - v).detach()); the gate's pre-activation floored alike, and an atan activation."""
    W, U = _p(I, 2 * H, dtype=dtype), _p(H, 2 * H, dtype=dtype)

    def ste(v, fn):
        return v + (fn(v * 7) / 7 - v).detach()

    def step(h, x):
        a, g = (x @ W + h @ U).chunk(2, -1)
        z = torch.sigmoid(ste(a, torch.floor))
        h = ste(z * h + (1 - z) * torch.atan(g), torch.round)
        return h, h

    return step, _h(H, dtype), _x(I, dtype), [W, U]


def make_phased_lstm(I, H, dtype):
    """Neil et al.'s Phased LSTM: an LSTM whose units update only in the open phase of their own
    oscillation, with a learned period tau and shift s, at each sample's own timestamp (a
    [T, B] input): phi = ((t - s) mod tau) / tau opens a gate k over the first r_on of the
    period (rising, then falling) and leaks alpha * phi outside it."""
    W, U, b = _p(I, 4 * H, dtype=dtype), _p(H, 4 * H, dtype=dtype), _p(4 * H, dtype=dtype)
    log_tau, s = _p(H, dtype=dtype), _p(H, dtype=dtype)
    r_on, alpha = 0.3, 1e-3

    def step(carry, inputs):
        h, c = carry
        x, t = inputs
        tau = torch.exp(log_tau) + 0.5
        phi = torch.remainder(t[:, None] - s, tau) / tau
        k = torch.where(
            phi < r_on / 2, 2 * phi / r_on, torch.where(phi < r_on, 2 - 2 * phi / r_on, alpha * phi)
        )
        i, f, g, o = (x @ W + h @ U + b).chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        c = k * c_new + (1 - k) * c
        h = k * h_new + (1 - k) * h
        return (h, c), h.clone()

    def xs(T, B):
        x = torch.randn(T, B, I, dtype=dtype).requires_grad_()
        return (x, torch.cumsum(torch.rand(T, B, dtype=dtype) * 2, 0))

    return step, _h(H, dtype, 2), xs, [W, U, b, log_tau, s]


def make_clockwork_rnn(I, H, dtype):
    """Koutnik et al.'s Clockwork RNN: the units in modules of periods 1, 2, 4, ...; at step t a
    module updates only where t mod its period is 0, from the modules of its period and the
    slower ones (a block triangular U). The step counter t is a [B, 1] carry."""
    W, U, b = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype), _p(H, dtype=dtype)
    periods = torch.tensor([2.0 ** (4 * u // H) for u in range(H)], dtype=dtype)
    slower = (periods[:, None] >= periods[None, :]).to(dtype)  # U[j, u]: unit j feeds unit u

    def step(carry, x):
        h, t = carry
        active = torch.remainder(t, periods) == 0
        h = torch.where(active, torch.tanh(x @ W + h @ (U * slower) + b), h)
        return (h, t + 1), h * 1

    def init(B):
        return (
            (torch.randn(B, H, dtype=dtype) * 0.5).requires_grad_(),
            torch.zeros(B, 1, dtype=dtype),
        )

    return step, init, _x(I, dtype), [W, U, b]


def make_mi_rnn(I, H, dtype):
    """Wu et al.'s multiplicative-integration RNN: tanh(a * Wx * Uh + b1 * Uh + b2 * Wx + b)."""
    W, U = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype)
    alpha, b1, b2, b = (_p(H, dtype=dtype) for _ in range(4))

    def step(h, x):
        wx, uh = x @ W, h @ U
        h = torch.tanh(alpha * wx * uh + b1 * uh + b2 * wx + b)
        return h, h.clone()

    return step, _h(H, dtype), _x(I, dtype), [W, U, alpha, b1, b2, b]


def make_mlstm(I, H, dtype):
    """Krause et al.'s multiplicative LSTM: m = (W_mx x) * (W_mh h) drives the gates."""
    W_mx, W_mh = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype)
    W_x, W_m, b = _p(I, 4 * H, dtype=dtype), _p(H, 4 * H, dtype=dtype), _p(4 * H, dtype=dtype)

    def step(state, x):
        h, c = state
        m = (x @ W_mx) * (h @ W_mh)
        i, f, o, g = (x @ W_x + m @ W_m + b).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h

    return step, _h(H, dtype, 2), _x(I, dtype), [W_mx, W_mh, W_x, W_m, b]


def make_rms_cell(I, H, dtype):
    """An RMS-normalized cell with softplus, abs, sqrt/rsqrt, minimum and row means."""
    W, U, g = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype), _p(H, dtype=dtype)

    def step(h, x):
        a = x @ W + h @ U
        a = a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + 1e-5) * g
        s = F.softplus(a) - torch.sqrt(a.abs() + 1.0)
        h = torch.minimum(torch.tanh(s), h.sum(-1, keepdim=True) * 0.1 + 0.5)
        return h, torch.where(s > 0, s, 0.5 * s)

    return step, _h(H, dtype), _x(I, dtype), [W, U, g]


def make_time_decay_rnn(I, H, dtype):
    """[B] values: GRU-D's decay of the state by the time gap since the last step (a [T, B]
    input dt: exp(-relu(w * dt + b)) per unit), pre-activations scaled by their RMS (a mean
    without keepdim) and a gate per row, read through views between [B] and [B, 1]."""
    W, U = _p(I, H, dtype=dtype), _p(H, H, dtype=dtype)
    w_d, b_d, v = (_p(H, dtype=dtype) for _ in range(3))

    def step(h, inputs):
        x, dt = inputs
        h = h * torch.exp(-torch.relu(dt[:, None] * w_d + b_d))
        a = x @ W + h @ U
        rms = torch.rsqrt(a.pow(2).mean(-1) + 1e-5)  # [B]
        s = torch.sigmoid((a * v).sum(-1, keepdim=True)).squeeze(-1)  # [B]
        h = s[:, None] * torch.tanh(a * rms.view(-1, 1)) + (1 - s).unsqueeze(-1) * h
        return h, h.clone()

    def xs(T, B):
        x = torch.randn(T, B, I, dtype=dtype).requires_grad_()
        return (x, torch.rand(T, B, dtype=dtype).requires_grad_())

    return step, _h(H, dtype), xs, [W, U, w_d, b_d, v]


def make_on_lstm(I, H, dtype):
    """Shen et al.'s ordered-neurons LSTM: master forget and input gates by cumax, the cumulative
    sum of a softmax, which orders the units by how long they keep what they hold (a chunk of
    one unit per master gate)."""
    W, U = _p(I, 6 * H, dtype=dtype), _p(H, 6 * H, dtype=dtype, scale=0.3)
    b = _p(6 * H, dtype=dtype)

    def cumax(a):
        return torch.cumsum(torch.softmax(a, -1), -1)

    def step(carry, x):
        h, c = carry
        f_master, i_master, i, f, o, g = (x @ W + h @ U + b).chunk(6, -1)
        f_master = cumax(f_master)
        i_master = 1 - cumax(i_master)
        overlap = f_master * i_master
        f = torch.sigmoid(f) * overlap + (f_master - overlap)
        i = torch.sigmoid(i) * overlap + (i_master - overlap)
        c = f * c + i * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()

    return step, _h(H, dtype, 2), _x(I, dtype), [W, U, b]


def _module_cell(name, factory, has_cell_state=False):
    """A cell module called in the loop, as PyTorch's tutorials write it: ``h = cell(x_t, h)``.
    torch.nn's GRU and LSTM cells update their gates' chunks in place; rnnfast's cells give
    their math as torch ops while scan traces (their fused op in the eager loop, which the
    tests compare against)."""

    def make(I, H, dtype):
        cell = factory(I, H).to(dtype)

        def step(h, x):
            h = cell(x, h)
            return h, (h[0] if has_cell_state else h).clone()

        return step, _h(H, dtype, 2 if has_cell_state else 1), _x(I, dtype), list(cell.parameters())

    make.__name__ = f"make_{name}"
    return make


TORCH_NN = [
    _module_cell("torch_rnn_cell", nn.RNNCell),
    _module_cell("torch_relu_rnn_cell", lambda I, H: nn.RNNCell(I, H, nonlinearity="relu")),
    _module_cell("torch_gru_cell", nn.GRUCell),
    _module_cell("torch_lstm_cell", nn.LSTMCell, has_cell_state=True),
]
RNNFAST_CELLS = [
    _module_cell("rnnfast_rnn_cell", rnnfast.RNNCell),
    _module_cell(
        "rnnfast_residual_relu_cell",
        lambda I, H: rnnfast.RNNCell(I, H, nonlinearity="relu", residual=True),
    ),
    _module_cell("rnnfast_gru_cell", rnnfast.GRUCell),
    _module_cell(
        "rnnfast_gru_reset_before_cell", lambda I, H: rnnfast.GRUCell(I, H, reset_after=False)
    ),
    _module_cell("rnnfast_gru_cell_without_bias", lambda I, H: rnnfast.GRUCell(I, H, bias=False)),
    _module_cell("rnnfast_lstm_cell", rnnfast.LSTMCell, has_cell_state=True),
]
COURSE = [make_nndl_srn, make_residual_srn, make_d2l_gru, make_numpy_lstm, make_module_cell]
LITERATURE = [
    make_peephole_lstm,
    make_layernorm_lstm,
    make_layernorm_gru,
    make_indrnn,
    make_min_gru,
    make_slstm,
    make_projected_lstm,
    make_reset_gru,
    make_hard_sigmoid_cell,
    make_mi_rnn,
    make_mlstm,
    make_rms_cell,
    make_time_decay_rnn,
    make_on_lstm,
    make_quantized_rnn,
    make_phased_lstm,
    make_clockwork_rnn,
]
