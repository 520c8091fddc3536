"""Shared helpers for the rnnfast test suite.

A test case is a ``Case``: the cell variant, the tensors (input, weights, biases,
initial states, projection) and the call options (lengths, reverse, batch_first).
``run(impl, case)`` calls either ``rnnfast.functional`` or the reference in
``tests/reference.py`` and returns the outputs together with the gradients of a
random linear functional of all outputs with respect to every floating-point tensor
argument. ``compare`` runs both and asserts agreement.
"""

import dataclasses
import os
import sys
from typing import Optional

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference  # noqa: E402

CELLS = [
    "rnn_tanh",
    "rnn_relu",
    "rnn_tanh_residual",
    "rnn_relu_residual",
    "gru",
    "gru_reset_before",
    "lstm",
]

TENSOR_NAMES = ["input", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0", "c0", "weight_hr"]

# tolerances
TIGHT = dict(rtol=1e-9, atol=1e-10)  # float64 vs float64 reference
LOOSE = dict(rtol=2e-4, atol=2e-5)  # float32 vs float64 reference


def num_gates(cell):
    return {"rnn": 1, "gru": 3, "lstm": 4}[cell.split("_")[0]]


def extension_calls_openmp():
    """Whether the built extension calls into the OpenMP runtime (GNU's entry, or the
    LLVM/Intel one): compiled without -fopenmp, its at::parallel_for loops (a header
    template) all run on the calling thread."""
    import rnnfast

    with open(rnnfast._C.__file__, "rb") as f:
        binary = f.read()
    return b"GOMP_parallel" in binary or b"__kmpc_fork_call" in binary


def pytest_addoption(parser):
    parser.addoption(
        "--cuda-engine-on-host",
        action="store_true",
        help="run every test with the CUDA engine's host build (csrc/cuda/on_host/) in place of "
        "the ops' CPU kernels: the whole suite then checks the CUDA engine without a GPU; "
        "tests marked cpu_engine_only skip",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpu_engine_only: checks the CPU engine's own machinery (its scratch pool, "
        "its GIL policy); skipped under --cuda-engine-on-host",
    )


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--cuda-engine-on-host"):
        return
    skip = pytest.mark.skip(reason="the CPU engine's own machinery (--cuda-engine-on-host)")
    for item in items:
        if "cpu_engine_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cuda_engine_on_host(request):
    """Under --cuda-engine-on-host, the CUDA engine's host build stands in for the CPU
    kernels throughout the test."""
    if not request.config.getoption("--cuda-engine-on-host"):
        yield
        return
    from cuda_helpers import CudaEngine

    with CudaEngine(on_host=True).running():
        yield


@pytest.fixture(scope="session")
def F():
    """rnnfast.functional (an import failure is a test error, never a skip)."""
    import rnnfast.functional

    return rnnfast.functional


def cuda_engine(on_host):
    """A fixture's body: the CUDA engine (a cuda_helpers.CudaEngine) on the GPU (skipped
    without one) or on the host, where the test must have run it."""
    from cuda_helpers import CudaEngine

    if not on_host and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    engine = CudaEngine(on_host=on_host)
    yield engine
    if engine.on_host:
        assert engine.calls > 0, "the test never ran the CUDA engine's host build"


@pytest.fixture(params=[False, True], ids=["gpu", "on_host"])
def engine(request):
    """The CUDA engine on the GPU and on the host (cuda_engine)."""
    yield from cuda_engine(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test starts with the process's thread count: the examples run in-process set
    their own (--threads)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class Case:
    cell: str
    input: torch.Tensor
    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: Optional[torch.Tensor] = None
    bias_hh: Optional[torch.Tensor] = None
    h0: Optional[torch.Tensor] = None
    c0: Optional[torch.Tensor] = None
    weight_hr: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    reverse: bool = False
    batch_first: bool = False

    def tensors(self):
        """Floating-point tensor arguments that are given (name -> tensor)."""
        return {n: getattr(self, n) for n in TENSOR_NAMES if getattr(self, n) is not None}

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)

    def map(self, fn):
        """Apply fn to every floating-point tensor argument."""
        return self.replace(**{n: fn(t) for n, t in self.tensors().items()})

    def to(self, dtype):
        return self.map(lambda t: t.detach().to(dtype))

    @property
    def T(self):
        return self.input.shape[1] if self.batch_first else self.input.shape[0]

    @property
    def B(self):
        return self.input.shape[0] if self.batch_first else self.input.shape[1]

    def __repr__(self):
        shapes = {n: tuple(t.shape) for n, t in self.tensors().items()}
        lens = None if self.lengths is None else self.lengths.tolist()
        return (
            f"Case({self.cell}, {shapes}, lengths={lens}, reverse={self.reverse}, "
            f"batch_first={self.batch_first})"
        )


def call(impl, case, tensors=None):
    """Call impl.rnn / impl.gru / impl.lstm for the case. Returns a list of outputs
    [output, h_n] or [output, h_n, c_n]."""
    t = case.tensors() if tensors is None else tensors
    common = dict(batch_first=case.batch_first, reverse=case.reverse, lengths=case.lengths)
    args = (t["input"], t["weight_ih"], t["weight_hh"], t.get("bias_ih"), t.get("bias_hh"))
    cell = case.cell
    if cell.startswith("rnn"):
        out, hn = impl.rnn(
            *args,
            t.get("h0"),
            nonlinearity="relu" if "relu" in cell else "tanh",
            residual=cell.endswith("residual"),
            **common,
        )
        return [out, hn]
    if cell.startswith("gru"):
        out, hn = impl.gru(*args, t.get("h0"), reset_after=(cell == "gru"), **common)
        return [out, hn]
    assert cell == "lstm"
    hx = None if t.get("h0") is None else (t["h0"], t["c0"])
    out, (hn, cn) = impl.lstm(*args, hx, weight_hr=t.get("weight_hr"), **common)
    return [out, hn, cn]


OUTPUT_NAMES = ["output", "h_n", "c_n"]


def run(impl, case, upstream=None, seed=1234):
    """Outputs and gradients of sum_k <outputs[k], upstream[k]> w.r.t. every tensor
    argument. upstream=None draws standard-normal upstream gradients (seeded) with
    the shapes of the outputs. Returns (outputs, grads dict, upstream)."""
    leaves = {n: t.detach().requires_grad_(True) for n, t in case.tensors().items()}
    outs = call(impl, case, leaves)
    if upstream is None:
        g = torch.Generator().manual_seed(seed)
        upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    loss = sum((o * u.to(o.dtype)).sum() for o, u in zip(outs, upstream))
    names = list(leaves)
    grads = torch.autograd.grad(
        loss, [leaves[n] for n in names], allow_unused=True, materialize_grads=True
    )
    return [o.detach() for o in outs], dict(zip(names, grads)), upstream


def assert_close(actual, expected, name, case, rtol, atol, scaled=False):
    """torch.testing.assert_close with a message naming the tensor and the case.
    scaled=True multiplies atol by max(1, max|expected|) (for float32 checks of
    quantities whose magnitude grows, e.g. gradients of long residual recurrences)."""
    assert actual.shape == expected.shape, (
        f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)} for {case}"
    )
    if scaled and expected.numel():
        atol = atol * max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(
        actual.detach().to(expected.dtype),
        expected.detach(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{name} mismatch for {case}\n{m}",
    )


def compare(F, case, ref_case=None, rtol=1e-9, atol=1e-10, grads=True):
    scaled = case.input.dtype != torch.float64
    """Run rnnfast on ``case`` and the reference on ``ref_case`` (default: the same
    case), with identical upstream gradients, and assert that outputs, final states
    and the gradients of every tensor argument agree."""
    ref_case = case if ref_case is None else ref_case
    if grads:
        ref_outs, ref_grads, up = run(reference, ref_case)
        outs, got_grads, _ = run(F, case, upstream=up)
    else:
        with torch.no_grad():
            ref_outs = call(reference, ref_case)
            outs = call(F, case)
    assert len(outs) == len(ref_outs)
    for name, o, r in zip(OUTPUT_NAMES, outs, ref_outs):
        assert o.dtype == case.input.dtype, (
            f"{name} dtype {o.dtype} != input dtype {case.input.dtype}"
        )
        assert_close(o, r, name, case, rtol, atol, scaled)
    if grads:
        assert set(got_grads) == set(ref_grads)
        for name in ref_grads:
            g = got_grads[name]
            assert g.dtype == case.tensors()[name].dtype, f"grad {name} dtype {g.dtype}"
            assert_close(g, ref_grads[name], "grad of " + name, case, rtol, atol, scaled)
    return outs


def compile_and_compare(F, case, backend):
    """``torch.compile(fullgraph=True)`` of a function calling the op on ``case``: outputs
    and the gradients of every tensor argument match eager."""
    import torch._dynamo

    torch._dynamo.reset()
    names = list(case.tensors())

    def fn(*ts):
        outs = call(F, case, dict(zip(names, ts)))
        return tuple(o * 2 for o in outs)

    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    leaves_e = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]
    leaves_c = [t.detach().clone().requires_grad_(True) for t in case.tensors().values()]
    expected, got = fn(*leaves_e), compiled(*leaves_c)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    ups = [torch.randn_like(e) for e in expected]
    ge = torch.autograd.grad(sum((e * u).sum() for e, u in zip(expected, ups)), leaves_e)
    gc = torch.autograd.grad(sum((g * u).sum() for g, u in zip(got, ups)), leaves_c)
    for n, e, g in zip(names, ge, gc):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"grad {n}\n{m}")


def uniform(shape, k, dtype=torch.float64, generator=None):
    return (torch.rand(shape, dtype=dtype, generator=generator) * 2 - 1) * k


def make_case(
    cell,
    T=5,
    B=3,
    I=4,
    H=6,
    *,
    P=None,
    bias=True,
    hx=True,
    lengths=None,
    reverse=False,
    batch_first=False,
    dtype=torch.float64,
    seed=0,
    scale=1.0,
):
    """Random case with contiguous tensors. Weights ~ U(-k, k), k = scale/sqrt(H)
    (torch.nn's init), input and initial states ~ N(0, 1).

    lengths: None, a list of B ints, or "random" (random in [0, T], including 0 and
    T when B >= 2)."""
    g = torch.Generator().manual_seed(seed)
    G = num_gates(cell)
    k = scale / (H**0.5)
    Hout = H if P is None else P
    if P is not None:
        assert cell == "lstm"
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype, generator=g)
    c = Case(
        cell=cell,
        input=x,
        weight_ih=uniform((G * H, I), k, dtype, g),
        weight_hh=uniform((G * H, Hout), k, dtype, g),
        reverse=reverse,
        batch_first=batch_first,
    )
    if bias:
        c.bias_ih = uniform((G * H,), k, dtype, g)
        c.bias_hh = uniform((G * H,), k, dtype, g)
    if hx:
        c.h0 = torch.randn((B, Hout), dtype=dtype, generator=g) * 0.5
        if cell == "lstm":
            c.c0 = torch.randn((B, H), dtype=dtype, generator=g) * 0.5
    if P is not None:
        c.weight_hr = uniform((P, H), k, dtype, g)
    if isinstance(lengths, str):
        assert lengths == "random"
        lens = torch.randint(0, T + 1, (B,), generator=g)
        if B >= 2:
            lens[torch.randperm(B, generator=g)[:2]] = torch.tensor([0, T])
        c.lengths = lens
    elif lengths is not None:
        c.lengths = torch.as_tensor(lengths, dtype=torch.int64)
    return c


# ----------------------------------------------------------------------------------
# layouts with the same values but different strides


def transposed_layout(t):
    """Same values, stored with reversed dimension order (non-contiguous for dim>=2)."""
    if t.dim() < 2:
        return strided_layout(t)
    out = torch.empty(t.shape[::-1], dtype=t.dtype).permute(*reversed(range(t.dim())))
    out.copy_(t)
    assert not out.is_contiguous() or t.numel() <= 1 or 1 in t.shape
    return out


def strided_layout(t, step=2, offset=1):
    """Same values, a slice with step ``step`` along the last dim of a bigger buffer,
    starting at a storage offset."""
    shape = list(t.shape)
    big = torch.full(shape[:-1] + [shape[-1] * step + offset], float("nan"), dtype=t.dtype)
    out = big[..., offset::step][..., : shape[-1]]
    out.copy_(t)
    return out
