"""The CUDA ops as ops: gradcheck on the GPU, opcheck, torch.compile, CUDA graphs,
non-default streams and devices. Tests that take the `engine` fixture also run the CUDA
engine's host build (see test_cuda.py); the others need a GPU."""

import pytest
import torch

import rnnfast.functional as RF

import reference
from conftest import CELLS, OUTPUT_NAMES, assert_close, call, compile_and_compare, make_case
from cuda_helpers import on_device, requires_cuda


def forward_op():
    import rnnfast  # noqa: F401

    return torch.ops.rnnfast.recurrent_forward.default


def backward_op():
    import rnnfast  # noqa: F401

    return torch.ops.rnnfast.recurrent_backward.default


def op_args(case):
    t = case.tensors()
    return (
        t["input"],
        t["weight_ih"],
        t["weight_hh"],
        t.get("bias_ih"),
        t.get("bias_hh"),
        t.get("h0"),
        t.get("c0"),
        t.get("weight_hr"),
        case.lengths,
        case.cell,
        case.reverse,
        case.batch_first,
    )


def backward_args(case, output, h_n, c_n, saved, grads):
    """recurrent_backward's arguments, grads = (grad_output, grad_h_n, grad_c_n)."""
    t = case.tensors()
    is_lstm = case.cell == "lstm"
    mask = [
        True,
        True,
        True,
        "bias_ih" in t,
        "bias_hh" in t,
        "h0" in t,
        is_lstm and "c0" in t,
        "weight_hr" in t,
    ]
    return (
        grads[0],
        grads[1],
        grads[2] if is_lstm else None,
        t["input"],
        t["weight_ih"],
        t["weight_hh"],
        t.get("h0"),
        t.get("weight_hr"),
        case.lengths,
        output,
        saved,
        case.cell,
        case.reverse,
        case.batch_first,
        mask,
    )


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "lengths,reverse,batch_first",
    [(None, False, False), ([3, 0, 4], True, False), ([2, 4, 1], False, True)],
)
def test_gradcheck(F, engine, cell, lengths, reverse, batch_first):
    P = 2 if cell == "lstm" and lengths is not None else None
    case = on_device(
        make_case(
            cell,
            T=4,
            B=3,
            I=2,
            H=3,
            P=P,
            lengths=lengths,
            reverse=reverse,
            batch_first=batch_first,
            seed=30,
            scale=1.5,
        ),
        engine.device,
    )
    names = list(case.tensors())
    leaves = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]

    def fn(*ts):
        return tuple(call(F, case, dict(zip(names, ts))))

    with engine.running():
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_gradgradcheck(F, engine, cell):
    """Second derivatives on the GPU (the layer recomputed as ATen ops under create_graph)."""
    case = on_device(
        make_case(
            cell,
            T=3,
            B=3,
            I=2,
            H=3,
            P=2 if cell == "lstm" else None,
            lengths=[3, 0, 2],
            reverse=True,
            seed=31,
        ),
        engine.device,
    )
    names = list(case.tensors())
    leaves = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]

    def fn(*ts):
        return tuple(call(F, case, dict(zip(names, ts))))

    with engine.running():
        assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("cell", CELLS)
def test_func_grad_and_vmap(F, engine, cell):
    """torch.func.grad and vmap on the GPU (the layer as ATen ops) against autograd and a loop."""
    case = on_device(
        make_case(cell, T=4, B=3, I=2, H=3, lengths=[4, 0, 2], reverse=True, seed=32), engine.device
    )
    names = list(case.tensors())

    def loss(tensors):
        return sum(o.pow(2).sum() for o in call(F, case, tensors))

    with engine.running():
        got = torch.func.grad(loss)(case.tensors())
        leaves = {n: t.detach().clone().requires_grad_(True) for n, t in case.tensors().items()}
        expected = torch.autograd.grad(loss(leaves), [leaves[n] for n in names])
        inputs = torch.stack([case.input, 2 * case.input])
        mapped = torch.func.vmap(lambda x: call(F, case, case.tensors() | {"input": x})[0])(inputs)
        looped = [call(F, case, case.tensors() | {"input": inputs[k]})[0] for k in range(2)]
    for name, e in zip(names, expected):
        assert_close(got[name], e, "grad of " + name, case, rtol=1e-10, atol=1e-12)
    for k in range(2):
        assert_close(mapped[k], looped[k], f"vmapped output {k}", case, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_opcheck(engine, cell, dtype):
    case = on_device(
        make_case(
            cell,
            T=4,
            B=3,
            I=2,
            H=5,
            P=2 if cell == "lstm" else None,
            lengths=[3, 0, 4],
            reverse=True,
            seed=32,
        ),
        engine.device,
        dtype,
    )
    leaves = case.map(lambda t: t.detach().clone().requires_grad_(True))
    with engine.running():
        torch.library.opcheck(forward_op(), op_args(leaves))
        with torch.no_grad():
            output, h_n, c_n, saved = forward_op()(*op_args(case))
        grads = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n))
        torch.library.opcheck(backward_op(), backward_args(case, output, h_n, c_n, saved, grads))


@pytest.mark.parametrize("cell", ["rnn_relu_residual", "gru_reset_before", "lstm"])
def test_compile_fullgraph(F, engine, cell):
    P = 3 if cell == "lstm" else None
    case = on_device(
        make_case(
            cell,
            T=6,
            B=5,
            I=4,
            H=7,
            P=P,
            lengths="random",
            reverse=True,
            seed=40,
            dtype=torch.float32,
        ),
        engine.device,
        lengths_on_device=True,
    )
    with engine.running():
        compile_and_compare(F, case, "aot_eager")


@requires_cuda
@pytest.mark.parametrize("cell", ["rnn_relu_residual", "gru_reset_before", "lstm"])
def test_compile_fullgraph_inductor(F, cell):
    pytest.importorskip("triton")
    P = 3 if cell == "lstm" else None
    case = on_device(
        make_case(
            cell,
            T=6,
            B=5,
            I=4,
            H=7,
            P=P,
            lengths="random",
            reverse=True,
            seed=40,
            dtype=torch.float32,
        ),
        "cuda",
        lengths_on_device=True,
    )
    compile_and_compare(F, case, "inductor")


def _fill_random(case, seed):
    """A case of the same shapes with new random values (for replays)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return case.map(lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) * 0.5)


@requires_cuda
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_graph_capture_and_replay(F, cell):
    """A whole layer, forward and backward ops, captured in one CUDA graph and replayed with
    new inputs: nothing in the ops syncs with the host or depends on values read back."""
    P = 4 if cell == "lstm" else None
    case = on_device(
        make_case(
            cell,
            T=7,
            B=6,
            I=5,
            H=9,
            P=P,
            lengths="random",
            reverse=True,
            seed=50,
            dtype=torch.float32,
        ),
        "cuda",
        lengths_on_device=True,
    )
    static = case.map(lambda t: t.detach().clone())

    def layer():
        output, h_n, c_n, saved = forward_op()(*op_args(static))
        grads = (torch.ones_like(output), torch.ones_like(h_n), torch.ones_like(c_n))
        return (output, h_n, c_n) + backward_op()(
            *backward_args(static, output, h_n, c_n, saved, grads)
        )

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up (cuBLAS workspaces, allocator) outside the capture
            layer()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = layer()

    for seed in (1, 2):
        fresh = _fill_random(case, seed)
        for name, t in fresh.tensors().items():
            getattr(static, name).copy_(t)
        graph.replay()
        expected = layer()  # eager, on the new values
        torch.cuda.synchronize()
        for k, (c, e) in enumerate(zip(captured, expected)):
            torch.testing.assert_close(
                c, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"replay {seed}, result {k}\n{m}"
            )


@requires_cuda
@pytest.mark.parametrize("entry", ["recurrent_forward", "recurrent_layers"])
def test_cuda_graph_capture_with_cpu_lengths_says_what_to_do(entry):
    """A copy from the host cannot be captured: CPU lengths under capture are a clear error
    that names the way out, not CUDA's "operation not permitted when stream is capturing".
    (recurrent_layers copies them once for all its layers, the forward op for itself.)"""
    x = torch.randn(5, 3, 4, device="cuda")
    w_ih, w_hh = torch.randn(18, 4, device="cuda"), torch.randn(18, 6, device="cuda")
    lengths = torch.tensor([5, 2, 3])

    def run():
        if entry == "recurrent_forward":
            return RF.gru(x, w_ih, w_hh, lengths=lengths)
        return RF.recurrent_layers(
            x, [w_ih, w_hh, None, None, None], None, None, lengths, "gru", False, False, 0.0
        )

    run()  # outside a capture CPU lengths are fine
    torch.cuda.synchronize()
    with pytest.raises(RuntimeError, match=r"being captured into a CUDA graph.*lengths\.to"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            run()


@requires_cuda
def test_pinned_cpu_lengths_are_read_at_the_call():
    """Pinned CPU lengths refilled right after the call: the layer ran with the old values."""
    x = torch.randn(6, 3, 4, device="cuda")
    w_ih, w_hh = torch.randn(18, 4, device="cuda"), torch.randn(18, 6, device="cuda")
    expected = RF.gru(x, w_ih, w_hh, lengths=torch.tensor([6, 2, 4], device="cuda"))[0]
    lengths = torch.tensor([6, 2, 4]).pin_memory()
    torch.cuda._sleep(50_000_000)  # the stream is still busy when the copy is queued
    output = RF.gru(x, w_ih, w_hh, lengths=lengths)[0]
    lengths.fill_(1)
    torch.testing.assert_close(output, expected)


@requires_cuda
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru_reset_before", "lstm"])
def test_non_default_stream(F, cell):
    """The kernels and GEMMs run on the current stream: results on a side stream, read
    after syncing with it, match the reference."""
    case = make_case(cell, T=6, B=5, I=4, H=33, lengths="random", seed=60)
    dev = on_device(case, "cuda")
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(10_000_000)  # keep the stream busy so that a wrong stream shows
        leaves = {n: t.detach().requires_grad_(True) for n, t in dev.tensors().items()}
        outs = call(F, dev, leaves)
        grads = torch.autograd.grad(sum(o.sum() for o in outs), list(leaves.values()))
    stream.synchronize()
    ref_leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    ref = call(reference, case, ref_leaves)
    ref_grads = torch.autograd.grad(sum(o.sum() for o in ref), list(ref_leaves.values()))
    for name, o, r in zip(OUTPUT_NAMES, outs, ref):
        assert_close(o.cpu(), r, name, case, rtol=1e-9, atol=1e-10)
    for name, g, r in zip(leaves, grads, ref_grads):
        assert_close(g.cpu(), r, "grad of " + name, case, rtol=1e-9, atol=1e-10)


@requires_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_second_device(F, cell):
    """Tensors on cuda:1 while cuda:0 is current: the op runs on cuda:1."""
    case = make_case(cell, T=5, B=3, I=4, H=6, lengths="random", seed=70)
    dev = on_device(case, "cuda:1", lengths_on_device=True)
    with torch.cuda.device(0):
        leaves = {n: t.detach().requires_grad_(True) for n, t in dev.tensors().items()}
        outs = call(F, dev, leaves)
        grads = torch.autograd.grad(sum(o.sum() for o in outs), list(leaves.values()))
    ref_leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    ref = call(reference, case, ref_leaves)
    ref_grads = torch.autograd.grad(sum(o.sum() for o in ref), list(ref_leaves.values()))
    for name, o, r in zip(OUTPUT_NAMES, outs, ref):
        assert o.device == torch.device("cuda:1")
        assert_close(o.cpu(), r, name, case, rtol=1e-9, atol=1e-10)
    for name, g, r in zip(leaves, grads, ref_grads):
        assert g.device == torch.device("cuda:1")
        assert_close(g.cpu(), r, "grad of " + name, case, rtol=1e-9, atol=1e-10)


@requires_cuda
def test_large_batch_times_hidden(F):
    """B*H past 2^24 = 2^16 blocks of 256 threads, the most blocks a pointwise kernel gets:
    the grid-stride loops take a second turn; index math holds."""
    T, B, I, H = 3, 16411, 8, 1031
    assert B * H > 2**24
    case = make_case("lstm", T=T, B=B, I=I, H=H, lengths="random", seed=80, dtype=torch.float32)
    case.lengths[-1] = T  # the last row, in the loops' second turn, runs every step
    dev = on_device(case, "cuda")
    with torch.no_grad():
        outs = call(F, dev)
    # A few rows, checked against the reference; the last ones lie past 2^24 elements.
    sub = list(range(0, B, 997)) + [B - 2, B - 1]
    small = case.replace(
        input=case.input[:, sub], h0=case.h0[sub], c0=case.c0[sub], lengths=case.lengths[sub]
    ).to(torch.float64)
    with torch.no_grad():
        ref = call(reference, small)
    assert_close(outs[0][:, sub].cpu(), ref[0], "output", small, rtol=1e-3, atol=1e-4, scaled=True)
    assert_close(outs[2][sub].cpu(), ref[2], "c_n", small, rtol=1e-3, atol=1e-4, scaled=True)
