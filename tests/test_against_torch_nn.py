"""Agreement with torch.nn.RNN / GRU / LSTM (single layer, bidirectional).

The forward direction of a bidirectional torch.nn layer uses the ``*_l0`` weights; the
reverse direction uses ``*_l0_reverse`` and corresponds to ``reverse=True``. Variable
lengths go through ``pack_padded_sequence(enforce_sorted=False)`` on the torch.nn side
and through ``lengths=`` on the padded tensor on ours. Outputs, final states and the
gradients of the input, the initial states and every parameter are compared.

Every test runs twice: against rnnfast and against tests/reference.py (which checks
that the reference used by the other test files is itself right).
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import reference
from conftest import assert_close

RTOL, ATOL = 1e-9, 1e-10


@pytest.fixture(params=["rnnfast", "reference"])
def impl(request):
    if request.param == "reference":
        return reference
    import rnnfast.functional

    return rnnfast.functional


def make_module(kind, I, H, P, bias, batch_first):
    kw = dict(bias=bias, batch_first=batch_first, bidirectional=True)
    if kind in ("rnn_tanh", "rnn_relu"):
        m = nn.RNN(I, H, nonlinearity=kind[4:], **kw)
    elif kind == "gru":
        m = nn.GRU(I, H, **kw)
    else:
        m = nn.LSTM(I, H, proj_size=P or 0, **kw)
    m = m.double()
    # spread the parameters a bit beyond the default init so that gates saturate
    # differently per unit
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5)
    return m


def run_nn(m, x, hx, lengths, batch_first, T):
    if lengths is None:
        out, hn = m(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        out_p, hn = m(packed, hx)
        out, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=T)
    return out, hn


def run_impl(impl, kind, m, x, hx, lengths, batch_first):
    """Both directions with the functional API; returns the torch.nn-shaped results."""
    outs, hns, cns = [], [], []
    for d, sfx in enumerate(["_l0", "_l0_reverse"]):
        p = lambda n: getattr(m, n + sfx, None)  # noqa: E731
        args = (x, p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"))
        common = dict(batch_first=batch_first, reverse=bool(d), lengths=lengths)
        if kind.startswith("rnn"):
            h = None if hx is None else hx[d]
            out, hn = impl.rnn(*args, h, nonlinearity=kind[4:], **common)
        elif kind == "gru":
            h = None if hx is None else hx[d]
            out, hn = impl.gru(*args, h, **common)
        else:
            h = None if hx is None else (hx[0][d], hx[1][d])
            out, (hn, cn) = impl.lstm(*args, h, weight_hr=p("weight_hr"), **common)
            cns.append(cn)
        outs.append(out)
        hns.append(hn)
    out = torch.cat(outs, -1)
    hn = torch.stack(hns)
    if kind == "lstm":
        return out, (hn, torch.stack(cns))
    return out, hn


def flat(res):
    out, hn = res
    return [out, *hn] if isinstance(hn, tuple) else [out, hn]


def check(
    impl,
    kind,
    *,
    T=6,
    B=5,
    I=3,
    H=7,
    P=None,
    bias=True,
    hx=True,
    lengths=None,
    batch_first=False,
    impl_lengths=None,
    seed=0,
):
    torch.manual_seed(seed)
    m = make_module(kind, I, H, P, bias, batch_first)
    Hout = P or H
    x = torch.randn(
        (B, T, I) if batch_first else (T, B, I), dtype=torch.float64, requires_grad=True
    )
    leaves = [x]
    h = None
    if hx:
        h0 = (torch.randn(2, B, Hout, dtype=torch.float64) * 0.5).requires_grad_()
        leaves.append(h0)
        h = h0
        if kind == "lstm":
            c0 = (torch.randn(2, B, H, dtype=torch.float64) * 0.5).requires_grad_()
            leaves.append(c0)
            h = (h0, c0)
    params = list(m.parameters())
    names = ["input", "h0", "c0"][: len(leaves)] + [n for n, _ in m.named_parameters()]
    leaves += params

    expected = flat(run_nn(m, x, h, lengths, batch_first, T))
    got = flat(
        run_impl(
            impl, kind, m, x, h, lengths if impl_lengths is None else impl_lengths, batch_first
        )
    )
    what = (
        f"{kind} T={T} B={B} I={I} H={H} P={P} bias={bias} hx={hx} "
        f"lengths={None if lengths is None else lengths.tolist()} batch_first={batch_first}"
    )
    for name, g, e in zip(["output", "h_n", "c_n"], got, expected):
        assert_close(g, e, name, what, RTOL, ATOL)

    gen = torch.Generator().manual_seed(seed + 1)
    ups = [torch.randn(e.shape, dtype=e.dtype, generator=gen) for e in expected]
    ge = torch.autograd.grad(
        sum((e * u).sum() for e, u in zip(expected, ups)),
        leaves,
        allow_unused=True,
        materialize_grads=True,
    )
    gg = torch.autograd.grad(
        sum((g * u).sum() for g, u in zip(got, ups)),
        leaves,
        allow_unused=True,
        materialize_grads=True,
    )
    for name, a, b in zip(names, gg, ge):
        assert_close(a, b, "grad of " + name, what, RTOL, ATOL)


KINDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hx", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_full_length(impl, kind, bias, hx, batch_first):
    check(impl, kind, bias=bias, hx=hx, batch_first=batch_first)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hx", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_lengths(impl, kind, bias, hx, batch_first):
    # unsorted, with repeats, the maximum T present and a length-1 row
    lengths = torch.tensor([3, 6, 1, 4, 3])
    check(impl, kind, bias=bias, hx=hx, batch_first=batch_first, lengths=lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_lengths_shorter_than_T(impl, kind):
    # max(lengths) < T: the tail of the padded tensor is never read
    lengths = torch.tensor([2, 5, 1, 4])
    check(impl, kind, T=8, B=4, lengths=lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_lengths_int32(impl, kind):
    lengths = torch.tensor([4, 2, 6, 1, 5])
    check(impl, kind, lengths=lengths, impl_lengths=lengths.to(torch.int32))


@pytest.mark.parametrize("P", [1, 3, 5])
@pytest.mark.parametrize("hx", [True, False])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_projection(impl, P, hx, use_lengths, batch_first):
    lengths = torch.tensor([5, 2, 6, 1, 3]) if use_lengths else None
    check(impl, "lstm", P=P, H=7, hx=hx, lengths=lengths, batch_first=batch_first)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "T,B,I,H", [(1, 1, 1, 1), (1, 4, 2, 3), (9, 1, 5, 2), (4, 3, 13, 5), (3, 2, 2, 13)]
)
def test_sizes(impl, kind, T, B, I, H):
    check(impl, kind, T=T, B=B, I=I, H=H)
    lengths = torch.randint(1, T + 1, (B,))
    check(impl, kind, T=T, B=B, I=I, H=H, lengths=lengths, seed=3)
