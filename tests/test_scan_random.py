"""Random draws in a step: F.dropout, nn.Dropout, torch.rand_like, torch.bernoulli. On what
depends on x_t alone, or only forms y_t, scan draws once over every step's rows: with one seed
its draws are those of the same op over the whole sequence [T, B, ...] at once, which is how
these tests check it (outputs and gradients against the loop over the sequence so drawn). In
the recurrent core, or from the weights alone, a draw is refused with its line; under
fallback='loop' the step runs as the loop, draw for draw."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_modes import split_mode  # noqa: E402, F401 (a fixture)
from test_scan import TIGHT, outputs_and_grads, python_loop  # noqa: E402

import rnnfast  # noqa: E402
from rnnfast._scan import ScanTraceError, trace  # noqa: E402

DT = torch.float64
# make_fx records the user's line from torch 2.6 on; before, messages name the op alone.
AT_LINE = ".*test_scan_random.py" if trace._STACK_TRACES else ""
B, T, I, H = 3, 5, 4, 6


def _inputs():
    torch.manual_seed(0)
    W = torch.randn(I, H, dtype=DT, requires_grad=True)
    U = (0.5 * torch.randn(H, H, dtype=DT)).requires_grad_()
    init = torch.randn(B, H, dtype=DT, requires_grad=True)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    return W, U, init, x


def _assert_close_all(got, want, wrt):
    g_outs, g_grads = outputs_and_grads(got, wrt)
    w_outs, w_grads = outputs_and_grads(want, wrt)
    for a, b in zip(g_outs + list(g_grads), w_outs + list(w_grads)):
        torch.testing.assert_close(a, b, **TIGHT)


def _input_noise(kind):
    """(noise of x_t in the step, the same noise over the whole sequence x)."""
    dropout = torch.nn.Dropout(0.3)
    return {
        "F.dropout": (lambda v: F.dropout(v, 0.4, training=True),) * 2,
        "F.dropout_default_p": (lambda v: F.dropout(v, training=True),) * 2,
        "nn.Dropout": (dropout, dropout),
        "randn_like": (lambda v: v + 0.1 * torch.randn_like(v),) * 2,
        "bernoulli": (lambda v: v * torch.bernoulli(torch.sigmoid(v)),) * 2,
        "uniform_": (lambda v: v * torch.empty_like(v).uniform_(0.5, 1.5),) * 2,
    }[kind]


@pytest.mark.parametrize(
    "kind",
    ["F.dropout", "F.dropout_default_p", "nn.Dropout", "randn_like", "bernoulli", "uniform_"],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.usefixtures("split_mode")
def test_a_draw_on_the_input_is_the_draw_over_the_whole_sequence(kind, reverse):
    W, U, init, x = _inputs()
    noise, noise_all = _input_noise(kind)

    def step(h, x_t):
        h = torch.tanh(noise(x_t) @ W + h @ U)
        return h, h

    def plain(h, x_t):
        h = torch.tanh(x_t @ W + h @ U)
        return h, h

    rnnfast.scan(step, init, x, reverse=reverse)  # traced on fake tensors: draws nothing
    for seed in (1, 2):  # the first call after the trace, and the next
        torch.manual_seed(seed)
        got = rnnfast.scan(step, init, x, reverse=reverse)
        torch.manual_seed(seed)
        want = python_loop(plain, init, noise_all(x), reverse=reverse)
        _assert_close_all(got, want, [W, U, init, x])


@pytest.mark.usefixtures("split_mode")
def test_dropout_of_the_output_alone_is_the_dropout_of_every_step_at_once():
    """y_t = dropout(h_t), with h_t the carry: the draw forms y_t only, after the loop."""
    W, U, init, x = _inputs()

    def step(h, x_t):
        h = torch.tanh(x_t @ W + h @ U)
        return h, F.dropout(h, 0.25, training=True)

    def plain(h, x_t):
        h = torch.tanh(x_t @ W + h @ U)
        return h, h

    rnnfast.scan(step, init, x)
    torch.manual_seed(3)
    got = rnnfast.scan(step, init, x)
    final, ys = python_loop(plain, init, x)
    torch.manual_seed(3)
    _assert_close_all(got, (final, F.dropout(ys, 0.25, training=True)), [W, U, init, x])
    assert (got[1] == 0).any() and (got[1] != 0).any()


def test_a_dropout_module_follows_train_and_eval():
    """nn.Dropout read from a module: in eval scan is the loop exactly; in training it drops;
    and back in eval it is the loop again (the cache does not keep the other mode's trace)."""
    W, U, init, x = _inputs()
    drop = torch.nn.Dropout(0.5)

    def step(h, x_t):
        h = torch.tanh(drop(x_t) @ W + h @ U)
        return h, h

    for training in (False, True, False):
        drop.train(training)
        torch.manual_seed(4)
        got = rnnfast.scan(step, init, x)  # traces anew where the mode changed
        torch.manual_seed(4)
        x_seen = drop(x)  # in eval x itself
        drop.eval()
        _assert_close_all(got, python_loop(step, init, x_seen), [W, U, init, x])


def _refused(step, op, why):
    """step is refused naming the draw, its line and why; with fallback='loop' it is the loop,
    draw for draw."""
    _, _, init, x = _inputs()
    match = rf"draws random numbers \({op}"
    with pytest.raises(ScanTraceError, match=match + AT_LINE + ".*" + why):
        rnnfast.scan(step, init, x)
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match=match):
        got = rnnfast.scan(step, init, x, fallback="loop")
    torch.manual_seed(5)
    want = python_loop(step, init, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TIGHT)


def test_dropout_of_the_state_is_refused():
    """The engine's loop has no generator: the error says to draw the masks before the loop."""
    W, U, _, _ = _inputs()

    def step(h, x_t):
        h = torch.tanh(x_t @ W + F.dropout(h, 0.5, training=True) @ U)
        return h, h

    _refused(step, r"aten\.bernoulli\.p", "before the loop")


def test_noise_on_the_state_is_refused():
    W, U, _, _ = _inputs()

    def step(h, x_t):
        h = torch.tanh(x_t @ W + h @ U) + 0.01 * torch.randn_like(h)
        return h, h

    _refused(step, r"aten\.randn_like", "the next carry needs")


@pytest.mark.parametrize("form", ["F.dropout", "bernoulli"])
def test_a_draw_from_the_weights_alone_is_refused(form):
    """DropConnect written inside the step: the loop draws a mask of U at every step, which
    scan, making what depends on the weights alone once per call, would not."""
    W, U, _, _ = _inputs()

    def dropped(w):
        if form == "F.dropout":
            return F.dropout(w, 0.5, training=True)
        return w * torch.bernoulli(torch.full_like(w, 0.5))

    def step(h, x_t):
        h = torch.tanh(x_t @ W + h @ dropped(U))
        return h, h

    op = r"aten\.bernoulli\.p" if form == "F.dropout" else r"aten\.bernoulli\.default"
    _refused(step, op, "from the weights alone")
