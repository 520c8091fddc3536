"""The layers and cells in the wider PyTorch ecosystem: torch.compile, torch.export,
torch.jit.trace (and a clear error from torch.jit.script), autocast, copying and serialisation,
DistributedDataParallel."""

import copy
import io
import pickle
import threading
import time

import ddp_worker
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import rnnfast

LAYERS = {
    "rnn": lambda **kw: rnnfast.RNN(4, 6, residual=True, **kw),
    "gru": lambda **kw: rnnfast.GRU(4, 6, reset_after=False, **kw),
    "lstm": lambda **kw: rnnfast.LSTM(4, 6, proj_size=3, **kw),
}
CELLS = {
    "rnn": lambda: rnnfast.RNNCell(4, 6, nonlinearity="relu", residual=True),
    "gru": lambda: rnnfast.GRUCell(4, 6, reset_after=False),
    "lstm": lambda: rnnfast.LSTMCell(4, 6),
}


class Classifier(nn.Module):
    """Every kind of rnnfast module in one model, as training code would hold them."""

    def __init__(self):
        super().__init__()
        self.encoder = rnnfast.LSTM(
            4, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=0.2
        )
        self.gru = rnnfast.GRU(12, 5, reset_after=False)
        self.rnn = rnnfast.RNN(5, 5, residual=True)
        self.cell = rnnfast.GRUCell(4, 5)
        self.head = nn.Linear(10, 3)

    def forward(self, x):  # x [B, T, 4]
        out, _ = self.encoder(x)
        out, h = self.gru(out.transpose(0, 1))
        out, h = self.rnn(out, h)
        state = None
        for t in range(3):  # a short generation-style loop
            state = self.cell(x[:, t], state)
        return self.head(torch.cat([h[0], state], -1))


def _outputs_and_grads(model, x):
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return [y.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_model(backend):
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.randn(3, 7, 4)
    expected = _outputs_and_grads(model, x)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    actual = _outputs_and_grads(compiled, x)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    # New data, same graph.
    x2 = torch.randn(3, 7, 4)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-5, atol=1e-6)


def test_compile_fullgraph_unbatched_and_with_state():
    torch.manual_seed(0)
    layer = rnnfast.LSTM(4, 5, bidirectional=True, proj_size=2)
    x = torch.randn(6, 4)
    hx = (torch.randn(2, 2), torch.randn(2, 5))

    def run(x, hx):
        out, (h, c) = layer(x, hx)
        return out, h, c, layer(x)[0]

    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    for a, e in zip(compiled(x, hx), run(x, hx)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("grad_enabled", [False, True], ids=["no_grad", "grad"])
def test_compiled_graph_keeps_saved_only_for_backward(grad_enabled):
    """A graph compiled under no_grad asks the op not to keep what only a backward reads (as
    eager inference does); one compiled for training keeps it, and its backward is right."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    torch.manual_seed(0)
    model = rnnfast.GRU(4, 6, num_layers=2).train(grad_enabled)
    x = torch.randn(5, 3, 4)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=capture))
    with torch.set_grad_enabled(grad_enabled):
        out = compiled(x)[0]
        torch.testing.assert_close(out, model(x)[0])
    calls = [
        n for n in graphs[0].graph.nodes if n.target == torch.ops.rnnfast.recurrent_forward.default
    ]
    assert len(calls) == 2
    for node in calls:
        need_saved = node.args[12] if len(node.args) > 12 else True
        assert need_saved is grad_enabled
    if grad_enabled:
        out.square().sum().backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model(x)[0].square().sum().backward()
        for g, p in zip(got, model.parameters()):
            torch.testing.assert_close(g, p.grad)


@pytest.mark.skipif(
    torch.torch_version.TorchVersion(torch.__version__) < "2.8",
    reason="torch.export of the layers with dynamic shapes needs torch 2.8 "
    "(2.5's strict export refuses the layers' input checks)",
)
def test_torch_export_with_dynamic_shapes_save_and_load(tmp_path):
    """torch.export of a model holding every kind of rnnfast module, batch and time dynamic:
    one recurrent_layers node per layer module and one recurrent_forward per cell call, which
    decompose into one recurrent_forward per layer and direction; the saved program runs after
    loading."""
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.randn(3, 7, 4)
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps", min=3)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch, 1: steps}})

    def op_nodes(program, op):
        return [n for n in program.graph.nodes if n.target == op]

    assert len(op_nodes(exported, torch.ops.rnnfast.recurrent_layers.default)) == 3
    assert len(op_nodes(exported, torch.ops.rnnfast.recurrent_forward.default)) == 3
    decomposed = exported.run_decompositions()
    assert not op_nodes(decomposed, torch.ops.rnnfast.recurrent_layers.default)
    assert len(op_nodes(decomposed, torch.ops.rnnfast.recurrent_forward.default)) == 4 + 1 + 1 + 3
    torch.testing.assert_close(decomposed.module()(x), model(x), rtol=1e-6, atol=1e-6)
    path = tmp_path / "classifier.pt2"
    torch.export.save(exported, path)
    loaded = torch.export.load(path).module()
    for shape in [(3, 7, 4), (5, 4, 4), (1, 9, 4)]:
        inputs = torch.randn(shape)
        torch.testing.assert_close(loaded(inputs), model(inputs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_autocast_cpu_runs_in_its_dtype(kind, dtype):
    """Under CPU autocast a layer runs in autocast's dtype, from float32 weights, and its
    gradients reach the float32 parameters. (torch.nn is not consistent here: in bfloat16 its
    LSTM and RNN run in bfloat16, its GRU in float32; in float16 its RNN runs in float16, its
    GRU in float32, and its LSTM fails in oneDNN. rnnfast runs every cell in autocast's dtype.)"""
    torch_class, fast_class = {
        "rnn_tanh": (nn.RNN, rnnfast.RNN),
        "gru": (nn.GRU, rnnfast.GRU),
        "lstm": (nn.LSTM, rnnfast.LSTM),
    }[kind]
    atol = 0.05 if dtype == torch.bfloat16 else 0.01
    torch.manual_seed(0)
    torch_layer = torch_class(8, 16, num_layers=2)
    fast_layer = fast_class(8, 16, num_layers=2)
    fast_layer.load_state_dict(torch_layer.state_dict())
    x = torch.randn(10, 4, 8)
    with torch.no_grad():
        expected_fp32 = torch_layer(x)[0]
    with torch.autocast("cpu", dtype=dtype):
        out, _ = fast_layer(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected_fp32, rtol=0, atol=atol)
    if dtype == torch.bfloat16:
        try:
            with torch.autocast("cpu", dtype=dtype):
                torch_out, _ = torch_layer(x)
        except RuntimeError as e:  # torch.nn's LSTM in oneDNN, on a CPU without AVX-512
            if "primitive descriptor" not in str(e):
                raise
        else:
            torch.testing.assert_close(out.float(), torch_out.float(), rtol=0, atol=atol)
    out.float().sum().backward()
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 for p in fast_layer.parameters()
    )
    with torch.autocast("cpu", dtype=dtype):
        h = rnnfast.GRUCell(8, 16)(x[0])
    assert h.dtype == dtype


def _recurrent_forward_calls(graph):
    return sum(node.kind() == "rnnfast::recurrent_forward" for node in graph.nodes())


@pytest.mark.parametrize("grad_enabled", [False, True], ids=["no_grad", "grad"])
def test_jit_trace_calls_the_ops_saves_and_loads(grad_enabled, tmp_path):
    """torch.jit.trace of a model holding every kind of rnnfast module, traced with grad on or
    off (the trace's own check re-runs it under no_grad, so the graph must not depend on grad
    mode): one recurrent_forward node per layer, direction and cell call, the same outputs and
    gradients as eager on another batch size and sequence length, before and after
    torch.jit.save/load."""
    torch.manual_seed(0)
    model = Classifier().eval()
    with torch.set_grad_enabled(grad_enabled):
        traced = torch.jit.trace(model, torch.randn(3, 7, 4))
    # encoder: 2 layers x 2 directions; gru and rnn: 1 each; the cell: 3 calls.
    assert _recurrent_forward_calls(traced.inlined_graph) == 9
    path = tmp_path / "classifier.pt"
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(5, 9, 4)
    expected = _outputs_and_grads(model, x)
    for module in (traced, loaded):
        for a, e in zip(_outputs_and_grads(module, x), expected):
            torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_jit_trace_of_the_functional_api_with_lengths_and_state():
    torch.manual_seed(0)
    w_ih, w_hh, b = torch.randn(16, 3), torch.randn(16, 4), torch.randn(16)

    def run(x, lengths, h0, c0):
        out, (h, c) = rnnfast.functional.lstm(
            x, w_ih, w_hh, b, b, (h0, c0), lengths=lengths, reverse=True
        )
        return out, h, c

    def inputs(T, B):
        return (
            torch.randn(T, B, 3),
            torch.randint(1, T + 1, (B,)),
            torch.randn(B, 4),
            torch.randn(B, 4),
        )

    traced = torch.jit.trace(run, inputs(6, 3))
    assert _recurrent_forward_calls(traced.graph) == 1
    args = inputs(8, 5)
    for a, e in zip(traced(*args), run(*args)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LAYERS["gru"](),
        CELLS["lstm"],
        lambda: nn.Sequential(nn.Linear(4, 4), LAYERS["rnn"]()),
    ],
    ids=["layer", "cell", "inside_a_model"],
)
def test_jit_script_says_what_works_instead(make):
    """TorchScript cannot compile the modules' Python forward: the error names the ways that
    work, where TorchScript's own would fail deep in its compiler."""
    with pytest.raises(
        RuntimeError,
        match=r"cannot be compiled by torch.jit.script\. Use "
        r"torch.jit.trace .*to_torch\(\)",
    ):
        torch.jit.script(make())


@pytest.mark.parametrize("kind", list(LAYERS))
def test_copy_pickle_and_save(kind, tmp_path):
    torch.manual_seed(0)
    layer = LAYERS[kind](num_layers=2, bidirectional=True)
    cell = CELLS[kind]()
    x = torch.randn(5, 2, 4)
    for module, inp in ((layer, x), (cell, x[0])):
        expected = module(inp)
        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        copies = [
            copy.deepcopy(module),
            pickle.loads(pickle.dumps(module)),
            torch.load(buffer, weights_only=False),
        ]
        for other in copies:
            assert type(other) is type(module) and repr(other) == repr(module)
            assert all(p is not q for p, q in zip(other.parameters(), module.parameters()))
            torch.testing.assert_close(other(inp), expected, rtol=0, atol=0)
        torch.save(module.state_dict(), tmp_path / "weights.pt")
        fresh = type(module)(**_constructor_args(module))
        fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
        torch.testing.assert_close(fresh(inp), expected, rtol=0, atol=0)


def _constructor_args(module):
    if isinstance(module, nn.RNNCellBase):
        args = dict(input_size=module.input_size, hidden_size=module.hidden_size)
    else:
        args = module._config()
    for extra in ("residual", "reset_after", "nonlinearity"):
        if hasattr(module, extra):
            args[extra] = getattr(module, extra)
    return args


def test_module_moves_with_to_and_keeps_working():
    layer = rnnfast.LSTM(3, 4, num_layers=2)
    layer.to(torch.float64)
    out, (h, c) = layer(torch.randn(5, 2, 3, dtype=torch.float64))
    assert out.dtype == h.dtype == c.dtype == torch.float64


def test_functional_call_with_other_weights():
    """torch.func.functional_call swaps parameters: the layer must read them at call time."""
    layer = rnnfast.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    zeros = {name: torch.zeros_like(p) for name, p in layer.named_parameters()}
    out, h = torch.func.functional_call(layer, zeros, (x,))
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(h) == 0


def test_distributed_data_parallel_replicas_agree(tmp_path):
    """Two processes on gloo train a few steps: the replicas end identical, and equal to one
    process training on the whole batch (DDP averages the replicas' gradients)."""
    init_file = tmp_path / "rendezvous"
    mp.start_processes(
        ddp_worker.run,
        args=(str(init_file), str(tmp_path)),
        nprocs=ddp_worker.WORLD_SIZE,
        join=True,
        start_method="spawn",
    )
    replicas = [torch.load(tmp_path / f"rank{r}.pt") for r in range(ddp_worker.WORLD_SIZE)]
    for name in replicas[0]:
        assert torch.equal(replicas[0][name], replicas[1][name]), name

    model = ddp_worker.make_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ddp_worker.train(model, model)
    for name, value in model.state_dict().items():
        assert not torch.equal(value, initial[name]), f"{name} did not train"
        torch.testing.assert_close(replicas[0][name], value, rtol=1e-10, atol=1e-12)


@pytest.mark.cpu_engine_only
@pytest.mark.parametrize("entry", ["functional", "layer", "cell"])
def test_large_calls_let_other_python_threads_run(entry):
    """A call of many multiply-adds releases the GIL (small ones keep it, python_module.cpp):
    a Python thread counting meanwhile must get well past where it stood when the call began."""
    torch.manual_seed(0)
    T, B, I, H = 100, 64, 256, 256  # about 0.8G multiply-adds: tens of ms here
    x = torch.randn(T, B, I)
    if entry == "cell":
        module, x = rnnfast.LSTMCell(I, H), torch.randn(B * T, I)
    elif entry == "layer":
        module = rnnfast.LSTM(I, H)
    else:
        lstm = nn.LSTM(I, H)
        module = lambda x: rnnfast.functional.lstm(  # noqa: E731
            x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
        )
    count, stop, started = [0], threading.Event(), threading.Event()

    def counter():  # one count per turn with the GIL, which sleep(0) hands back at once
        started.set()
        while not stop.is_set():
            count[0] += 1
            time.sleep(0)

    thread = threading.Thread(target=counter)
    thread.start()
    started.wait()
    try:
        with torch.no_grad():
            module(x)  # warm-up: allocations and first-call costs
            before = count[0]
            module(x)
            during = count[0] - before
    finally:
        stop.set()
        thread.join()
    # Held through the call, the GIL would leave the thread a turn or two, where Python switches
    # threads in the call's own Python code; released, the thread counts all through the call.
    assert during > 100, f"the counting thread advanced only {during} times during the call"
