"""The hand-written recurrent loops rnnfast replaces, in the style of NNDL and d2l.

These are the baselines of the benchmarks (``python -m rnnfast.bench``,
``benchmarks/``): Python loops over time, one autograd node per op per step.

* :class:`SeedSRN` -- the simple recurrent network of the NNDL memory experiment
  (NNDL chapter 6): ``h = tanh(x @ W + h @ U + b)``, W ``[I,H]``, U ``[H,H]``, b ``[1,H]``,
  batch-first input ``[B,T,I]``, returns the last hidden state ``[B,H]``.
* :func:`seed_gru` -- the d2l GRU, reset *before* the matmul:
  time-major input ``[T,B,I]`` (iterated step by step), params
  ``W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h``, returns the stacked hidden
  states ``[T,B,H]`` and ``(H,)``. d2l's output layer ``W_hq, b_q`` is left out.
* :func:`seed_lstm` -- an LSTM written the same way (gates i, f, g, o, each
  ``X @ W_x* + H @ W_h* + b_*``; ``C = F*C + I*G``, ``H = O*tanh(C)``).

The ``*_from_torch`` / ``*_to_torch`` functions convert between these parameters and
torch.nn's layout (``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``, ``bias_ih``,
``bias_hh`` ``[G*H]``; gate order r,z,n for the GRU and i,f,g,o for the LSTM), so the
same math can be run through all implementations. Going to these loops, the two biases
are summed (they have one); coming back, the sum goes to ``bias_ih`` and
``bias_hh`` is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SeedSRN",
    "seed_gru",
    "seed_lstm",
    "init_seed_gru_state",
    "init_seed_lstm_state",
    "seed_srn_from_torch",
    "seed_srn_to_torch",
    "seed_gru_params_from_torch",
    "seed_gru_params_to_torch",
    "seed_lstm_params_from_torch",
    "seed_lstm_params_to_torch",
]


# --------------------------------------------------------------------------- SRN (000)
class SeedSRN(nn.Module):
    """NNDL's ``SRN``: ``h = tanh(x @ W + h @ U + b)`` looped over time.

    Two deviations from the book's code, neither changing the math: ``W_attr is None``
    instead of ``== None`` (and ``torch.as_tensor`` so tensors can be passed without
    a copy-construct warning), and the initial state is created on the input's
    device so the loop also runs on CUDA.
    """

    def __init__(self, input_size, hidden_size, W_attr=None, U_attr=None, b_attr=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        # W: [input_size, hidden_size]
        self.W = nn.Parameter(_param_or_zeros(W_attr, [input_size, hidden_size]))
        # U: [hidden_size, hidden_size]
        self.U = nn.Parameter(_param_or_zeros(U_attr, [hidden_size, hidden_size]))
        # b: [1, hidden_size]
        self.b = nn.Parameter(_param_or_zeros(b_attr, [1, hidden_size]))

    def init_state(self, batch_size, device=None):
        return torch.zeros(size=[batch_size, self.hidden_size], dtype=torch.float32, device=device)

    def forward(self, inputs, hidden_state=None):
        # inputs: [batch_size, seq_len, input_size]
        batch_size, seq_len, input_size = inputs.shape
        if hidden_state is None:
            hidden_state = self.init_state(batch_size, inputs.device)
        for step in range(seq_len):
            step_input = inputs[:, step, :]
            hidden_state = F.tanh(
                torch.matmul(step_input, self.W) + torch.matmul(hidden_state, self.U) + self.b
            )
        return hidden_state


def _param_or_zeros(attr, shape):
    if attr is None:
        return torch.zeros(size=shape, dtype=torch.float32)
    return torch.as_tensor(attr, dtype=torch.float32).detach().clone()


def seed_srn_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> SeedSRN:
    """A :class:`SeedSRN` computing what ``nn.RNN`` (tanh) computes with these weights."""
    hidden_size, input_size = weight_ih.shape
    b = _sum_biases([bias_ih, bias_hh], hidden_size, weight_ih)
    srn = SeedSRN(
        input_size, hidden_size, W_attr=weight_ih.t(), U_attr=weight_hh.t(), b_attr=b[None]
    )
    return srn.to(weight_ih.device)


def seed_srn_to_torch(srn: SeedSRN) -> dict[str, Tensor]:
    """torch.nn-layout weights (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) of an
    SRN."""
    return _torch_layout([srn.W], [srn.U], [srn.b[0]])


# --------------------------------------------------------------------------- GRU (001)
def init_seed_gru_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),)


def seed_gru(inputs, state, params):
    """d2l's ``gru`` (reset before the matmul) without the output layer."""
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h = params
    (H,) = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid((X @ W_xz) + (H @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H @ W_hr) + b_r)
        H_tilda = torch.tanh((X @ W_xh) + ((R * H) @ W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        outputs.append(H)
    return torch.stack(outputs), (H,)


# torch.nn's GRU gate order is r, z, n; d2l's params come as z, r, h(=n).
_GRU_TORCH_TO_SEED = (1, 0, 2)


def seed_gru_params_from_torch(
    weight_ih, weight_hh, bias_ih=None, bias_hh=None, requires_grad=True
):
    """``[W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h]`` from torch.nn GRU weights.

    d2l's cell is reset-before, i.e. torch.nn-layout weights with
    ``rnnfast.functional.gru(..., reset_after=False)``, not ``nn.GRU``.
    """
    return _seed_params(
        weight_ih, weight_hh, bias_ih, bias_hh, 3, _GRU_TORCH_TO_SEED, requires_grad
    )


def seed_gru_params_to_torch(params) -> dict[str, Tensor]:
    return _torch_params(params, _GRU_TORCH_TO_SEED)


# --------------------------------------------------------------------------- LSTM
def init_seed_lstm_state(batch_size, num_hiddens, device):
    return (
        torch.zeros((batch_size, num_hiddens), device=device),
        torch.zeros((batch_size, num_hiddens), device=device),
    )


def seed_lstm(inputs, state, params):
    """An LSTM in the style of :func:`seed_gru`: gates i, f, g, o, no output layer."""
    W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xg, W_hg, b_g, W_xo, W_ho, b_o = params
    (H, C) = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid((X @ W_xi) + (H @ W_hi) + b_i)
        Fg = torch.sigmoid((X @ W_xf) + (H @ W_hf) + b_f)
        G = torch.tanh((X @ W_xg) + (H @ W_hg) + b_g)
        O = torch.sigmoid((X @ W_xo) + (H @ W_ho) + b_o)
        C = Fg * C + I * G
        H = O * torch.tanh(C)
        outputs.append(H)
    return torch.stack(outputs), (H, C)


_LSTM_TORCH_TO_SEED = (0, 1, 2, 3)  # both i, f, g, o


def seed_lstm_params_from_torch(
    weight_ih, weight_hh, bias_ih=None, bias_hh=None, requires_grad=True
):
    """``[W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xg, W_hg, b_g, W_xo, W_ho, b_o]`` from nn.LSTM
    weights."""
    return _seed_params(
        weight_ih, weight_hh, bias_ih, bias_hh, 4, _LSTM_TORCH_TO_SEED, requires_grad
    )


def seed_lstm_params_to_torch(params) -> dict[str, Tensor]:
    return _torch_params(params, _LSTM_TORCH_TO_SEED)


# --------------------------------------------------------------------------- layout helpers
def _sum_biases(biases, size, like):
    b = torch.zeros(size, dtype=like.dtype, device=like.device)
    for bias in biases:
        if bias is not None:
            b = b + bias.detach()
    return b


def _seed_params(weight_ih, weight_hh, bias_ih, bias_hh, gates, order, requires_grad):
    """Split torch.nn-layout weights per gate into the loops' ``X @ W_x + H @ W_h + b``
    form: ``W_x [I,H]``, ``W_h [H,H]``, ``b [H]``, each a contiguous leaf tensor."""
    w_x = weight_ih.detach().chunk(gates, 0)
    w_h = weight_hh.detach().chunk(gates, 0)
    b = _sum_biases([bias_ih, bias_hh], weight_ih.shape[0], weight_ih).chunk(gates, 0)
    params = []
    for g in order:
        params += [w_x[g].t().contiguous(), w_h[g].t().contiguous(), b[g].clone()]
    return [p.requires_grad_(requires_grad) for p in params]


def _torch_params(params, order):
    triples = [params[3 * k : 3 * k + 3] for k in range(len(order))]
    by_gate = [None] * len(order)
    for k, g in enumerate(order):
        by_gate[g] = triples[k]
    w_x, w_h, b = zip(*by_gate)
    return _torch_layout(w_x, w_h, b)


def _torch_layout(w_x, w_h, b) -> dict[str, Tensor]:
    """Gate-ordered seed weights (``W_x [I,H]``, ``W_h [H,H]``, ``b [H]``) -> torch.nn layout."""
    weight_ih = torch.cat([w.detach().t() for w in w_x])
    bias_ih = torch.cat([v.detach() for v in b])
    return {
        "weight_ih": weight_ih,
        "weight_hh": torch.cat([w.detach().t() for w in w_h]),
        "bias_ih": bias_ih,
        "bias_hh": torch.zeros_like(bias_ih),
    }
