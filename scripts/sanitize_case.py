"""A small case of each op, for compute-sanitizer (scripts/gpu-check runs it under memcheck,
racecheck and initcheck): every cell, forward and backward, lengths on the device (a zero
and a full length among them), reverse, batch-first, the LSTM projection, float32 and
bfloat16."""

import sys

import torch

import rnnfast.functional as F

CELLS = ["rnn_tanh", "rnn_relu_residual", "gru", "gru_reset_before", "lstm"]


def one(cell, dtype, reverse, batch_first):
    T, B, I, H = 5, 3, 7, 13
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell.split("_")[0]]
    P = 5 if cell == "lstm" else H
    dev = dict(device="cuda", dtype=dtype)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), **dev, requires_grad=True)
    w_ih = torch.randn(G * H, I, **dev, requires_grad=True)
    w_hh = (torch.randn(G * H, P, **dev) * 0.3).requires_grad_()
    b_ih = torch.randn(G * H, **dev, requires_grad=True)
    b_hh = torch.randn(G * H, **dev, requires_grad=True)
    h0 = torch.randn(B, P, **dev, requires_grad=True)
    lengths = torch.tensor([T, 0, 2], device="cuda")
    common = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    if cell == "lstm":
        c0 = torch.randn(B, H, **dev, requires_grad=True)
        w_hr = torch.randn(P, H, **dev, requires_grad=True)
        out, (h_n, c_n) = F.lstm(x, w_ih, w_hh, b_ih, b_hh, (h0, c0), weight_hr=w_hr, **common)
        loss = out.float().sum() + h_n.float().sum() + c_n.float().sum()
    elif cell.startswith("gru"):
        out, h_n = F.gru(x, w_ih, w_hh, b_ih, b_hh, h0, reset_after=cell == "gru", **common)
        loss = out.float().sum() + h_n.float().sum()
    else:
        out, h_n = F.rnn(
            x,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            h0,
            nonlinearity=cell.split("_")[1],
            residual=cell.endswith("residual"),
            **common,
        )
        loss = out.float().sum() + h_n.float().sum()
    loss.backward()
    torch.cuda.synchronize()


def main():
    torch.manual_seed(0)
    for cell in CELLS:
        for dtype in (torch.float32, torch.bfloat16):
            one(cell, dtype, reverse=dtype == torch.float32, batch_first=dtype == torch.bfloat16)
    print("sanitize_case: all ops ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
