"""A DistributedDataParallel training run of an rnnfast model, one process per rank (gloo, CPU).
Used by test_layers_ecosystem.py; each rank saves its final parameters for the test to compare."""

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import rnnfast

STEPS, WORLD_SIZE, BATCH, T, I = 3, 2, 4, 6, 5


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnfast.GRU(I, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.lstm = rnnfast.LSTM(14, 6, proj_size=3, batch_first=True)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        out, _ = self.lstm(out)
        return self.head(out[:, -1])


def make_model():
    torch.manual_seed(0)
    return Model().double()


def batch(step, rank=None):
    """Step ``step``'s global batch of WORLD_SIZE * BATCH sequences, or rank ``rank``'s share."""
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH * WORLD_SIZE, T, I, generator=gen, dtype=torch.float64)
    y = torch.randn(BATCH * WORLD_SIZE, 2, generator=gen, dtype=torch.float64)
    if rank is None:
        return x, y
    return x[rank * BATCH : (rank + 1) * BATCH], y[rank * BATCH : (rank + 1) * BATCH]


def train(model, forward, rank=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(STEPS):
        x, y = batch(step, rank)
        optimizer.zero_grad()
        F.mse_loss(forward(x), y).backward()
        optimizer.step()


def run(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        model = make_model()
        train(model, DistributedDataParallel(model), rank)
        torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Done, results on disk: leave without the interpreter's teardown, in which gloo's threads
    # aborted a worker about once in 50 runs ("terminate called without an active
    # exception", SIGABRT), with this code and with the code of earlier sessions alike.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
