"""No read of memory that nothing wrote: every op and layer with torch.empty filling what it
returns with NaN (torch's deterministic mode with fill_uninitialized_memory), so that a
buffer the engines allocate and then read before writing (a padded row left out, a
gradient row never zeroed) turns the results into NaN instead of passing on whatever the
allocator happened to hand back. On the host this is what compute-sanitizer's initcheck is
on the GPU; these tests run the CPU engine, the CUDA engine's host build and, where there
is a GPU, the CUDA engine."""

import contextlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnfast

from conftest import CELLS, assert_close, cuda_engine, make_case
from cuda_helpers import TOLERANCES, compare_with_reference


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty (ATen's, which the extension calls too) returns NaN-filled tensors inside.
    warn_only: deterministic mode would otherwise refuse torch's own cuBLAS calls without
    CUBLAS_WORKSPACE_CONFIG; only the filling is wanted here."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling


def test_poisoned_empty_fills_with_nan():
    """The premise: inside, a fresh float tensor is all NaN; after, the settings are back."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    with poisoned_empty():
        assert torch.empty(5, 7).isnan().all()
        assert torch.empty(3, dtype=torch.bfloat16).isnan().all()
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    ) == before


class CpuEngine:
    """The ops' CPU kernels as they are (the CPU engine, or under --cuda-engine-on-host the
    CUDA engine's host build), in cuda_helpers.CudaEngine's shape."""

    device = "cpu"

    @contextlib.contextmanager
    def running(self):
        yield


# "on_host" in the ids of the two that run on the CPU: gpu-check selects the rest.
@pytest.fixture(params=["cpu_engine_on_host", "cuda_engine_gpu", "cuda_engine_on_host"])
def any_engine(request):
    if request.param == "cpu_engine_on_host":
        yield CpuEngine()
    else:
        yield from cuda_engine(on_host=request.param == "cuda_engine_on_host")


@pytest.mark.parametrize(
    "cell,projection", [(c, False) for c in CELLS] + [("lstm", True)], ids=CELLS + ["lstm-proj"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["tmajor-fwd", "bfirst-rev"])
def test_op_reads_only_what_it_wrote(F, any_engine, cell, projection, dtype, layout):
    """Outputs and every gradient within tolerance of the float64 reference (NaN never is),
    with padded steps (lengths 0 and T among them) and odd sizes."""
    case = make_case(
        cell,
        T=6,
        B=5,
        I=3,
        H=7,
        P=4 if projection else None,
        lengths="random",
        reverse=layout.endswith("rev"),
        batch_first=layout.startswith("bfirst"),
        seed=len(cell) + 10 * projection,
    )
    with poisoned_empty():
        compare_with_reference(F, case, any_engine, dtype=dtype)


LAYERS = [("RNN", {}), ("GRU", {}), ("LSTM", {}), ("LSTM", {"proj_size": 3})]


@pytest.mark.parametrize("kind,extra", LAYERS, ids=[k + "-proj" * bool(e) for k, e in LAYERS])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_layer_reads_only_what_it_wrote(any_engine, kind, extra, packed):
    """Two bidirectional batch-first layers against torch.nn (float64, same weights):
    outputs, final states and the gradients of the input and every parameter."""
    torch.manual_seed(7)
    T, B, I, H = 6, 5, 4, 5
    reference_layer = getattr(nn, kind)(
        I, H, num_layers=2, bidirectional=True, batch_first=True, **extra
    ).double()
    layer = rnnfast.convert(reference_layer).to(any_engine.device)
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 4, 6, 3])
    upstream = None
    results = []
    for module, device in ((reference_layer, "cpu"), (layer, any_engine.device)):
        xi = x.to(device).requires_grad_(True)
        params = list(module.parameters())
        context = poisoned_empty() if module is layer else contextlib.nullcontext()
        with context, any_engine.running() if module is layer else contextlib.nullcontext():
            if packed:
                seq = pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False)
                out, state = module(seq)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            else:
                out, state = module(xi)
            outs = [out] + (list(state) if isinstance(state, tuple) else [state])
            if upstream is None:
                g = torch.Generator().manual_seed(3)
                upstream = [torch.randn(o.shape, dtype=torch.float64, generator=g) for o in outs]
            loss = sum((o * u.to(o.device)).sum() for o, u in zip(outs, upstream))
            grads = torch.autograd.grad(loss, [xi] + params)
        results.append(([o.detach().cpu() for o in outs], [g.cpu() for g in grads]))
    (ref_outs, ref_grads), (outs, grads) = results
    tol = TOLERANCES[torch.float64]
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_close(o, r, f"output {i}", kind, **tol)
    names = ["input"] + [n for n, _ in reference_layer.named_parameters()]
    for name, g, r in zip(names, grads, ref_grads):
        assert_close(g, r, "grad of " + name, kind, **tol)
