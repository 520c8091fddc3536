"""The drop-in layers and cells on the CUDA engine, against torch.nn on the same device with
the same weights: cuDNN on a GPU; on the host (the `engine` fixture, see test_cuda.py),
torch.nn's CPU layers. Tests without the fixture need a GPU."""

import contextlib

import pytest
import torch
from torch import nn

import rnnfast

from cuda_helpers import requires_cuda, tf32_off

LAYERS = {
    "rnn": (nn.RNN, rnnfast.RNN, {}),
    "gru": (nn.GRU, rnnfast.GRU, {}),
    "lstm": (nn.LSTM, rnnfast.LSTM, {}),
    "lstm_proj": (nn.LSTM, rnnfast.LSTM, {"proj_size": 5}),
}
CELLS = {
    "rnn": (nn.RNNCell, rnnfast.RNNCell),
    "gru": (nn.GRUCell, rnnfast.GRUCell),
    "lstm": (nn.LSTMCell, rnnfast.LSTMCell),
}


@pytest.fixture(autouse=True)
def _no_tf32():
    with tf32_off():
        yield


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("packed", [False, True])
def test_layer_agrees_with_torch_nn(engine, kind, packed):
    torch.manual_seed(0)
    device = engine.device
    torch_class, fast_class, extras = LAYERS[kind]
    config = dict(num_layers=2, bidirectional=True, batch_first=True, **extras)
    torch_layer = torch_class(7, 12, **config).to(device)
    fast_layer = fast_class(7, 12, **config).to(device)
    fast_layer.load_state_dict(torch_layer.state_dict())
    x = torch.randn(5, 9, 7, device=device)
    lengths = torch.tensor([9, 3, 7, 1, 9])
    results = []
    for layer in (torch_layer, fast_layer):
        leaf = x.clone().requires_grad_()
        inp = (
            nn.utils.rnn.pack_padded_sequence(leaf, lengths, batch_first=True, enforce_sorted=False)
            if packed
            else leaf
        )
        with engine.running() if layer is fast_layer else contextlib.nullcontext():
            out, state = layer(inp)
            if packed:
                out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]
            outs = [out] + _flat(state)
            loss = sum(
                (o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in outs
            )
            grads = torch.autograd.grad(loss, [leaf, *layer.parameters()])
        results.append([o.detach() for o in outs] + list(grads))
    for a, e in zip(results[1], results[0]):
        assert a.device.type == device
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_agrees_with_torch_nn(engine, kind):
    torch.manual_seed(0)
    torch_class, fast_class = CELLS[kind]
    torch_cell = torch_class(6, 10).to(engine.device)
    fast_cell = fast_class.from_torch(torch_cell)
    x = torch.randn(4, 6, device=engine.device)
    state_t = state_f = None
    for _ in range(5):  # a short generation loop, the state fed back
        state_t = torch_cell(x, state_t)
        with engine.running():
            state_f = fast_cell(x, state_f)
    for a, e in zip(_flat(state_f), _flat(state_t)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@requires_cuda
def test_autocast_cuda_runs_in_half():
    layer = rnnfast.GRU(8, 16, num_layers=2).cuda()
    x = torch.randn(10, 4, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out, h = layer(x)
    assert out.dtype == h.dtype == torch.float16
    torch.testing.assert_close(out.float(), layer(x)[0], rtol=0, atol=2e-2)


@requires_cuda
def test_convert_keeps_the_device():
    model = nn.Sequential(nn.LSTM(4, 6)).cuda()
    rnnfast.convert(model)
    assert isinstance(model[0], rnnfast.LSTM)
    assert all(p.device.type == "cuda" for p in model.parameters())
    out, _ = model(torch.randn(3, 2, 4, device="cuda"))
    assert out.device.type == "cuda"
