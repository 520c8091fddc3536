"""torch.onnx.export (dynamo=True) of the functional API, the layers and the cells: the exported
model holds ONNX's own RNN / GRU / LSTM nodes and nothing of rnnfast, and onnxruntime runs it
to rnnfast's results, on other batch sizes and sequence lengths than the export saw."""

import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

import rnnfast
import rnnfast.functional as RF

if not hasattr(torch.onnx, "ops"):
    pytest.skip(
        "rnnfast's ONNX export needs torch.onnx.ops (torch 2.8 or later)", allow_module_level=True
    )
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore:Exporting a model while it is in training mode")

ONNX_OPERATOR = {
    "rnn_tanh": "RNN",
    "rnn_relu": "RNN",
    "gru": "GRU",
    "gru_reset_before": "GRU",
    "lstm": "LSTM",
}
I, H = 3, 5


def export(module, args, dynamic_shapes=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False
        )
    return program.model_proto


def run_onnx(model_proto, args):
    session = ort.InferenceSession(
        model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args)})


def flatten(outputs):
    flat = []
    for o in outputs if isinstance(outputs, (tuple, list)) else [outputs]:
        flat.extend(flatten(o) if isinstance(o, (tuple, list)) else [o])
    return flat


def assert_runs_like_rnnfast(module, model_proto, args):
    expected = [t.detach() for t in flatten(module(*args))]
    got = run_onnx(model_proto, args)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-5, atol=1e-5)


def node_types(model_proto):
    nodes = list(model_proto.graph.node)
    assert all(n.domain in ("", "ai.onnx") for n in nodes), [(n.domain, n.op_type) for n in nodes]
    return [n.op_type for n in nodes]


class Functional(nn.Module):
    """rnnfast.functional's call of one cell, with lengths and an initial state as inputs."""

    def __init__(self, cell, bias, reverse, batch_first):
        super().__init__()
        G = {"RNN": 1, "GRU": 3, "LSTM": 4}[ONNX_OPERATOR[cell]]
        self.cell, self.reverse, self.batch_first = cell, reverse, batch_first
        self.weight_ih = nn.Parameter(torch.randn(G * H, I) * 0.5)
        # Transposed, as a hand-written loop's `h @ W` passes it.
        self.weight_hh = nn.Parameter(torch.randn(H, G * H).t() * 0.5)
        self.bias_ih = nn.Parameter(torch.randn(G * H)) if bias else None
        self.bias_hh = nn.Parameter(torch.randn(G * H)) if bias else None

    def forward(self, x, lengths, h0, c0):
        weights = (x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        options = dict(reverse=self.reverse, batch_first=self.batch_first, lengths=lengths)
        if self.cell == "lstm":
            return RF.lstm(*weights, (h0, c0), **options)
        if self.cell.startswith("gru"):
            return RF.gru(*weights, h0, reset_after=self.cell == "gru", **options)
        return RF.rnn(*weights, h0, nonlinearity=self.cell.split("_")[1], **options)


def inputs(T, B, batch_first):
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    return x, lengths, torch.randn(B, H), torch.randn(B, H)


@pytest.mark.parametrize(
    "bias,reverse,batch_first",
    [(True, False, False), (False, True, False), (True, True, True), (False, False, True)],
)
@pytest.mark.parametrize("cell", list(ONNX_OPERATOR))
def test_functional_with_lengths_and_state(cell, bias, reverse, batch_first):
    torch.manual_seed(0)
    module = Functional(cell, bias, reverse, batch_first)
    T, B = Dim("T"), Dim("B")
    x_dims = {0: B, 1: T} if batch_first else {0: T, 1: B}
    model = export(
        module, inputs(6, 3, batch_first), dynamic_shapes=(x_dims, {0: B}, {0: B}, {0: B})
    )
    assert node_types(model).count(ONNX_OPERATOR[cell]) == 1
    assert_runs_like_rnnfast(module, model, inputs(9, 4, batch_first))


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnfast.LSTM(I, H, num_layers=2, bidirectional=True),
        lambda: rnnfast.GRU(I, H, num_layers=2, batch_first=True, reset_after=False),
        lambda: rnnfast.RNN(I, H, num_layers=3, nonlinearity="relu", bias=False),
        lambda: rnnfast.GRU(I, H, num_layers=2, bidirectional=True, dropout=0.5),
    ],
    ids=[
        "lstm_bidirectional",
        "gru_reset_before_batch_first",
        "rnn_relu_no_bias",
        "gru_dropout_eval",
    ],
)
def test_layers_one_node_a_layer(make):
    """A layer module's stack (in eval mode): one ONNX node per layer, both directions in it."""
    torch.manual_seed(0)
    layer = make().eval()
    T, B = Dim("T"), Dim("B")
    dims = {0: B, 1: T} if layer.batch_first else {0: T, 1: B}
    model = export(layer, (torch.randn(6, 3, I),), dynamic_shapes=(dims,))
    operator = {"LSTM": "LSTM", "GRU": "GRU"}.get(layer.mode, "RNN")
    assert node_types(model).count(operator) == layer.num_layers
    assert_runs_like_rnnfast(layer, model, (torch.randn(8, 2, I),))


def test_layer_in_training_mode_keeps_dropout_between_layers():
    layer = rnnfast.GRU(I, H, num_layers=3, dropout=0.5).train()
    types = node_types(export(layer, (torch.randn(6, 3, I),)))
    assert types.count("GRU") == 3 and types.count("Dropout") == 2


def test_layer_with_initial_state():
    torch.manual_seed(0)
    layer = rnnfast.LSTM(I, H, num_layers=2, bidirectional=True).eval()

    def state():
        return torch.randn(4, 2, H), torch.randn(4, 2, H)

    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, h0, c0):
            return self.layer(x, (h0, c0))

    module = WithState()
    model = export(module, (torch.randn(6, 2, I), *state()))
    assert_runs_like_rnnfast(module, model, (torch.randn(6, 2, I), *state()))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_cells(cell):
    torch.manual_seed(0)
    module = {
        "rnn": lambda: rnnfast.RNNCell(I, H, nonlinearity="relu"),
        "gru": lambda: rnnfast.GRUCell(I, H, reset_after=False),
        "lstm": lambda: rnnfast.LSTMCell(I, H),
    }[cell]()

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = module

        def forward(self, x, h, c):
            return self.cell(x, (h, c)) if cell == "lstm" else self.cell(x, h)

    step = Step()
    B = Dim("B")
    model = export(
        step,
        (torch.randn(3, I), torch.randn(3, H), torch.randn(3, H)),
        dynamic_shapes=({0: B}, {0: B}, {0: B}),
    )
    assert node_types(model).count(cell.upper()) == 1
    assert_runs_like_rnnfast(step, model, (torch.randn(5, I), torch.randn(5, H), torch.randn(5, H)))


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda: rnnfast.RNN(I, H, residual=True), "no residual SRN operator"),
        (lambda: rnnfast.LSTM(I, H, proj_size=2), "LSTM with a projection"),
    ],
    ids=["residual", "projection"],
)
def test_what_onnx_cannot_express_is_named(make, problem):
    with pytest.warns(UserWarning, match=problem), pytest.raises(Exception):  # noqa: B017
        torch.onnx.export(make(), (torch.randn(4, 2, I),), dynamo=True, verbose=False)
