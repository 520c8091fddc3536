"""Module-level benchmark cases, shared by ``python -m rnnfast.bench`` and ``benchmarks/``.

What users run when they swap the import: rnnfast's layers and cells against torch.nn's,
float32, in three settings (group names as in the reports):

=================  ==========================================================================
``layer-S``        one layer, shape S (B=8, T=20, I=32, H=32); also the bare functional op,
                   so the layer's own cost shows (``rnnfast op``)
``stack-LM``       2 layers, bidirectional, the char-LM shape (B=32, T=35, I=28, H=256)
``generate-200``   a generation loop: 200 calls of a cell, B=1, I=28, H=256, the state fed
                   back (d2l's ``predict`` functions), under no_grad; also the
                   hand-written step (``hand loop``)
=================  ==========================================================================

Passes: ``fwd_nograd`` and ``fwdbwd`` for the layers (the loss is ``output.sum()``), and
``fwd_nograd`` for generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .. import functional as RF
from ..cells import GRUCell, LSTMCell, RNNCell
from ..layers import GRU, LSTM, RNN
from . import baselines

CELLS = ("rnn", "gru", "lstm")
GROUPS = ("layer-S", "stack-LM", "generate-200")
QUICK_GROUPS = ("layer-S", "generate-200")
IMPLS = {
    "layer-S": ("rnnfast", "rnnfast_op", "torch_nn"),
    "stack-LM": ("rnnfast", "torch_nn"),
    "generate-200": ("rnnfast", "torch_nn", "seed"),
}
PASSES = {
    "layer-S": ("fwd_nograd", "fwdbwd"),
    "stack-LM": ("fwd_nograd", "fwdbwd"),
    "generate-200": ("fwd_nograd",),
}
LABELS = {
    "rnnfast": "rnnfast",
    "rnnfast_op": "rnnfast op",
    "torch_nn": "torch.nn",
    "seed": "hand loop",
}
# warm-up runs, timed runs
PLANS = {"layer-S": (20, 50), "stack-LM": (3, 10), "generate-200": (2, 10)}

_LAYERS = {"rnn": (nn.RNN, RNN), "gru": (nn.GRU, GRU), "lstm": (nn.LSTM, LSTM)}
_CELLS = {
    "rnn": (nn.RNNCell, RNNCell),
    "gru": (nn.GRUCell, GRUCell),
    "lstm": (nn.LSTMCell, LSTMCell),
}
_OP_CELL = {"rnn": "rnn_tanh", "gru": "gru", "lstm": "lstm"}
GENERATE_STEPS, GENERATE_I, GENERATE_H = 200, 28, 256


@dataclass(frozen=True)
class ModuleCase:
    group: str
    cell: str
    impl: str
    pass_: str

    @property
    def name(self) -> str:
        return f"{self.group}-{self.cell}-{self.pass_}-{self.impl}"


def cases(groups=GROUPS, cells=CELLS):
    for group in groups:
        for cell in cells:
            for pass_ in PASSES[group]:
                for impl in IMPLS[group]:
                    yield ModuleCase(group, cell, impl, pass_)


def _seeded(make, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _layer_pair(cell, layers, bidirectional, I, H, device):
    torch_class, fast_class = _LAYERS[cell]
    reference = _seeded(
        lambda: torch_class(I, H, num_layers=layers, bidirectional=bidirectional)
    ).to(device)
    return reference, fast_class.from_torch(reference)


def make_step(case: ModuleCase, device="cpu") -> Callable[[], None]:
    """A zero-argument callable running one pass of the case (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    if case.group == "generate-200":
        run = _generation(case.cell, case.impl, device)

        def step():
            with torch.no_grad():
                run()
            sync()

        return step

    layers, bidirectional, (B, T, I, H) = (
        (1, False, (8, 20, 32, 32)) if case.group == "layer-S" else (2, True, (32, 35, 28, 256))
    )
    torch_layer, fast_layer = _layer_pair(case.cell, layers, bidirectional, I, H, device)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1)).to(device)
    x.requires_grad_(case.pass_ == "fwdbwd")
    if case.impl == "rnnfast_op":
        weights = (
            fast_layer.weight_ih_l0,
            fast_layer.weight_hh_l0,
            fast_layer.bias_ih_l0,
            fast_layer.bias_hh_l0,
        )

        def forward():
            return RF.recurrent_forward(
                x, *weights, None, None, None, None, _OP_CELL[case.cell], False, False
            )[0]
    else:
        layer = fast_layer if case.impl == "rnnfast" else torch_layer

        def forward():
            return layer(x)[0]

    params = list(torch_layer.parameters())
    if case.pass_ == "fwd_nograd":

        def step():
            with torch.no_grad():
                forward()
            sync()
    else:

        def step():
            for t in [x, *params]:
                t.grad = None
            forward().sum().backward()
            sync()

    return step


def _generation(cell, impl, device) -> Callable[[], Tensor]:
    """200 steps of a cell from a zero state, each step's input one row of a fixed [200, 1, I]."""
    torch_class, fast_class = _CELLS[cell]
    reference = _seeded(lambda: torch_class(GENERATE_I, GENERATE_H)).to(device)
    inputs = torch.randn(
        GENERATE_STEPS, 1, GENERATE_I, generator=torch.Generator().manual_seed(1)
    ).to(device)
    if impl in ("rnnfast", "torch_nn"):
        module = fast_class.from_torch(reference) if impl == "rnnfast" else reference

        def run():
            state = None
            for x in inputs:
                state = module(x, state)
            return state

        return run
    return _seed_generation(cell, reference, inputs)


def _seed_generation(cell, reference, inputs) -> Callable[[], Tensor]:
    """The hand-written step functions, called once per token as d2l's predict loops do."""
    weights = (reference.weight_ih, reference.weight_hh, reference.bias_ih, reference.bias_hh)
    if cell == "rnn":
        srn = baselines.seed_srn_from_torch(*weights)

        def run():
            h = None
            for x in inputs:
                h = srn(x.unsqueeze(1), h)
            return h

        return run
    if cell == "gru":
        params = baselines.seed_gru_params_from_torch(*weights, requires_grad=False)
        state = baselines.init_seed_gru_state(1, GENERATE_H, inputs.device)
        loop = baselines.seed_gru
    else:
        params = baselines.seed_lstm_params_from_torch(*weights, requires_grad=False)
        state = baselines.init_seed_lstm_state(1, GENERATE_H, inputs.device)
        loop = baselines.seed_lstm

    def run():
        s = state
        for x in inputs:
            _, s = loop(x.unsqueeze(0), s, params)
        return s

    return run
