"""d2l's GRU language model from scratch, its loop over the time steps made one rnnfast.scan call.

Dive into Deep Learning (chapter "Gated Recurrent Units (GRU)", implementation from scratch)
writes the GRU with a weight matrix per gate, the reset gate applied before the recurrent
product, and the output layer inside the loop over the steps, on one-hot characters. Its
``gru(inputs, state, params)`` is kept here as d2l writes it. ``gru_scan`` is the same step
written as ``step(H, X) -> (H, Y)`` and the loop replaced by ``rnnfast.scan(step, H, inputs)``
(torch.scan's signature): the step is traced once, the input products ``X @ W_x*`` are taken
for all steps at once, the recurrence runs in C++ and the output layer over all steps at the
end; gradients reach the parameters the step reads from its closure.

The model is trained twice from the same initial parameters on the same minibatches, with
d2l's settings (the text cut into 32 rows read left to right, 35 steps per batch, the state
carried over and detached, SGD lr 1, the gradient norm clipped to 1): by d2l's loop and by
the scan, one batch of each in turn, so that the load of the machine weighs on both alike.
Printed: the perplexity and tokens/s of both per epoch (the scan's first epoch holds the
tracing of the step), the speedup of the scan in the time of a training step's forward and
backward, whether the perplexities agree (the same math; only float32 rounding differs) and
how far apart the trained parameters are. Then d2l's ``predict`` generates text greedily with
the scan-trained parameters. The report goes to examples/results/d2l_gru_scan.txt too.

    python examples/d2l_gru_scan.py                        # 100 epochs, hidden 256, ~1.5 min
    python examples/d2l_gru_scan.py --quick                # 2 epochs of 3 batches, seconds
    python examples/d2l_gru_scan.py --epochs 20 --hidden 64 --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnfast  # noqa: E402

import _common  # noqa: E402
import char_lm  # noqa: E402

# The largest relative difference of the two runs' perplexities in an epoch that counts as
# float32 rounding: the two orders of summation differ by ~1e-7 relative per step, and SGD at
# lr 1 carries such differences into every later step: 1e-4 leaves them a wide margin.
PERPLEXITY_RTOL = 1e-4


# --------------------------------------------------------------------------- d2l's model
def get_params(vocab_size, num_hiddens, device, dtype=torch.float32, generator=None):
    """d2l's ``get_params``: a (W_x*, W_h*, b_*) triple per gate, normal(0, 0.01) weights
    and zero biases, then the output layer (W_hq, b_q)."""
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, generator=generator, dtype=dtype).to(device) * 0.01

    def three():
        return (
            normal((num_inputs, num_hiddens)),
            normal((num_hiddens, num_hiddens)),
            torch.zeros(num_hiddens, device=device, dtype=dtype),
        )

    W_xz, W_hz, b_z = three()  # update gate
    W_xr, W_hr, b_r = three()  # reset gate
    W_xh, W_hh, b_h = three()  # candidate hidden state
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device, dtype=dtype)
    params = [W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def init_gru_state(batch_size, num_hiddens, device, dtype=torch.float32):
    return (torch.zeros((batch_size, num_hiddens), device=device, dtype=dtype),)


def gru(inputs, state, params):
    """d2l's ``gru``: inputs ``[T, B, V]`` one-hot -> outputs ``[T * B, V]``, ``(H,)``."""
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid((X @ W_xz) + (H @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H @ W_hr) + b_r)
        H_tilda = torch.tanh((X @ W_xh) + ((R * H) @ W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        Y = H @ W_hq + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


def gru_scan(inputs, state, params):
    """``gru`` with the loop body as ``step(H, X) -> (H, Y)`` and the loop one
    ``rnnfast.scan`` call; ys ``[T, B, V]`` flattened to d2l's ``[T * B, V]``."""
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state

    def step(H, X):
        Z = torch.sigmoid((X @ W_xz) + (H @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H @ W_hr) + b_r)
        H_tilda = torch.tanh((X @ W_xh) + ((R * H) @ W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        Y = H @ W_hq + b_q
        return H, Y

    H, ys = rnnfast.scan(step, H, inputs)
    return ys.reshape(-1, ys.shape[-1]), (H,)


class RNNModelScratch:
    """d2l's ``RNNModelScratch``: tokens ``[B, T]`` one-hot (time-major) -> ``forward_fn``."""

    def __init__(self, vocab_size, num_hiddens, params, forward_fn):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params, self.forward_fn = params, forward_fn

    def __call__(self, X, state):
        # d2l casts to float32; the parameters' dtype lets the tests run it in float64.
        X = F.one_hot(X.T, self.vocab_size).to(self.params[0].dtype)
        return self.forward_fn(X, state, self.params)

    def begin_state(self, batch_size, device):
        return init_gru_state(batch_size, self.num_hiddens, device, self.params[0].dtype)


def grad_clipping(params, theta):
    """d2l's ``grad_clipping``: the gradients scaled so that their joint norm is <= theta."""
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm


def sgd(params, lr):
    """d2l's ``sgd`` with batch_size 1 (the loss is already a mean), as ``train_ch8`` calls it."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad
            param.grad.zero_()


def predict(prefix, num_preds, net, vocab, device):
    """d2l's ``predict_ch8``: the prefix warms the state up, then greedy (argmax) characters."""
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab.index[prefix[0]]]

    def get_input():
        return torch.tensor([outputs[-1]], device=device).reshape((1, 1))

    for y in prefix[1:]:  # warm-up period
        _, state = net(get_input(), state)
        outputs.append(vocab.index[y])
    for _ in range(num_preds):
        y, state = net(get_input(), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return vocab.decode(outputs)


# --------------------------------------------------------------------------- training
class Run:
    """One of the two trainings: its model, its carried state, the fwd+bwd time of every
    training step and the per-epoch history."""

    def __init__(self, name, net):
        self.name, self.net, self.state = name, net, None
        self.fwd_bwd_seconds = []  # of every training step, over all epochs
        self.history = []

    def train_step(self, X, Y, lr, theta):
        """d2l's ``train_epoch_ch8`` body for one batch; returns the loss times its tokens
        and the step's seconds."""
        if self.state is None:
            self.state = self.net.begin_state(batch_size=X.shape[0], device=X.device)
        else:  # the state carries on, its graph of the previous batch is cut
            for s in self.state:
                s.detach_()
        y = Y.T.reshape(-1)
        start = time.perf_counter()
        y_hat, self.state = self.net(X, self.state)
        loss = F.cross_entropy(y_hat, y)
        loss.backward()
        self.fwd_bwd_seconds.append(time.perf_counter() - start)
        grad_clipping(self.net.params, theta)
        sgd(self.net.params, lr)
        return loss.item() * y.numel(), time.perf_counter() - start


def train_epoch(runs, batches, args):
    """Both runs over the same batches, alternating which goes first; appends each run's
    ``{"perplexity", "tokens_per_second"}`` to its history."""
    totals = {run.name: [0.0, 0.0] for run in runs}  # loss x tokens, seconds
    tokens = 0
    for i, (X, Y) in enumerate(batches):
        for run in runs if i % 2 == 0 else runs[::-1]:
            loss, seconds = run.train_step(X, Y, args.lr, args.clip)
            totals[run.name][0] += loss
            totals[run.name][1] += seconds
        tokens += Y.numel()
    for run in runs:
        loss, seconds = totals[run.name]
        run.history.append(
            {
                "perplexity": char_lm.perplexity(loss, tokens),
                "tokens_per_second": tokens / seconds,
            }
        )


def epoch_batches(corpus, args, generator):
    """d2l's sequential minibatches, at most ``args.max_batches`` of them."""
    batches = char_lm.consecutive_batches(corpus, args.batch_size, args.num_steps, generator)
    return itertools.islice(batches, args.max_batches)


# --------------------------------------------------------------------------- reporting
class Report:
    """Lines printed as they come and kept for the results file."""

    def __init__(self):
        self.lines = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.lines) + "\n")


def table_header(runs) -> str:
    titles = "".join(f"{run.name:>22}" for run in runs)
    columns = "".join(f"{'perplexity':>12}{'tokens/s':>10}" for _ in runs)
    return f"     {titles}\nepoch{columns}"


def epoch_line(epoch, runs) -> str:
    cells = "".join(
        f"{run.history[-1]['perplexity']:12.3f}{run.history[-1]['tokens_per_second']:10.0f}"
        for run in runs
    )
    return f"{epoch:>5}{cells}"


def timing_report(loop, scan) -> dict:
    """The fwd+bwd step times of both runs over the same batches, the first left out (it
    holds the scan's tracing of the step)."""
    loop_seconds, scan_seconds = sum(loop.fwd_bwd_seconds[1:]), sum(scan.fwd_bwd_seconds[1:])
    steps = len(loop.fwd_bwd_seconds) - 1
    return {
        "steps": steps,
        "first_scan_step_seconds": scan.fwd_bwd_seconds[0],
        "loop_ms": 1000 * loop_seconds / steps,
        "scan_ms": 1000 * scan_seconds / steps,
        "speedup": loop_seconds / scan_seconds,
    }


def perplexity_difference(loop, scan) -> float:
    """The largest relative difference of the two runs' perplexities in any epoch."""
    return max(
        abs(a["perplexity"] - b["perplexity"]) / a["perplexity"]
        for a, b in zip(loop.history, scan.history)
    )


@torch.no_grad()
def parameter_difference(loop, scan) -> float:
    """The largest difference of the two runs' trained parameters, relative to the largest
    magnitude in each parameter. It tells two steps apart long before the perplexity does,
    which early in training mostly follows the output bias b_q."""
    return max(
        float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
        for a, b in zip(loop.net.params, scan.net.params)
    )


def comparison_lines(timing, ppl_difference, param_difference) -> str:
    agree = "agree" if ppl_difference <= PERPLEXITY_RTOL else "DISAGREE"
    return (
        f"rnnfast.scan's first step (tracing the step included): "
        f"{1000 * timing['first_scan_step_seconds']:.0f} ms, left out below\n"
        f"fwd+bwd per training step over the same {timing['steps']} batches: d2l loop "
        f"{timing['loop_ms']:.2f} ms, rnnfast.scan {timing['scan_ms']:.2f} ms: "
        f"speedup {timing['speedup']:.2f}x\n"
        f"perplexities {agree}: largest relative difference {ppl_difference:.1e} in an epoch "
        f"(tolerance {PERPLEXITY_RTOL:g}; the same math, float32 rounding only)\n"
        f"trained parameters: largest difference {param_difference:.1e} relative to the "
        f"parameter's largest magnitude"
    )


# --------------------------------------------------------------------------- CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--epochs", type=_common.positive_int, default=None, help="default 100 (quick: 2)"
    )
    parser.add_argument(
        "--hidden",
        "--hidden-size",
        dest="hidden_size",
        type=_common.positive_int,
        default=None,
        help="num_hiddens, default 256 as d2l (quick: 32)",
    )
    parser.add_argument(
        "--prefix",
        default="the people ",
        help="the start of the generated text (default 'the people ')",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where d2l_gru_scan.txt goes (default examples/results, "
        "quick: examples/results/quick)",
    )
    args = parser.parse_args(argv)
    device = _common.set_up(parser, args)
    args.epochs = args.epochs or (2 if args.quick else 100)
    args.hidden_size = args.hidden_size or (32 if args.quick else 256)
    args.max_batches = 3 if args.quick else None  # None: every batch of the corpus
    args.batch_size, args.num_steps, args.lr, args.clip = 32, 35, 1.0, 1.0  # d2l's
    args.num_preds = 50
    results = os.path.join(_common.EXAMPLES_DIR, "results")
    args.out_dir = args.out_dir or (os.path.join(results, "quick") if args.quick else results)
    return parser, args, device


def main(argv=None) -> dict:
    """Trains both runs, prints the report and writes it to ``--out-dir``/d2l_gru_scan.txt.

    Returns ``{"loop": history, "scan": history, "timing": {...},
    "max_relative_difference": float, "parameter_difference": float, "agree": bool,
    "predicted": str, "prefix": str, "vocab": [chars], "path": str}``.
    """
    parser, args, device = parse_args(argv)
    text = char_lm.read_corpus(char_lm.DEFAULT_CORPUS, raw=False)
    vocab = char_lm.Vocab(text)
    try:
        vocab.encode(args.prefix)
    except ValueError as error:
        parser.error(f"--prefix {args.prefix!r}: {error}")
    corpus = vocab.encode(text).to(device)
    generator = torch.Generator().manual_seed(args.seed)  # initial parameters, batch offsets
    params = get_params(len(vocab), args.hidden_size, device, generator=generator)
    runs = [
        Run(name, RNNModelScratch(len(vocab), args.hidden_size, copied(params), forward_fn))
        for name, forward_fn in (("d2l loop", gru), ("rnnfast.scan", gru_scan))
    ]
    report = Report()
    report.say(
        f"corpus {os.path.basename(char_lm.DEFAULT_CORPUS)}: {len(text)} characters, "
        f"vocabulary of {len(vocab)}; d2l's GRU from scratch, hidden {args.hidden_size}, "
        f"batch {args.batch_size} x {args.num_steps} steps, SGD lr {args.lr:g}, clip "
        f"{args.clip:g}, {args.epochs} epochs, seed {args.seed}, {args.threads} thread(s), "
        f"device {device}\n{table_header(runs)}"
    )
    for epoch in range(1, args.epochs + 1):
        train_epoch(runs, epoch_batches(corpus, args, generator), args)
        report.say(epoch_line(epoch, runs))
    loop, scan = runs
    timing = timing_report(loop, scan)
    ppl_difference = perplexity_difference(loop, scan)
    param_difference = parameter_difference(loop, scan)
    predicted = predict(args.prefix, args.num_preds, scan.net, vocab, device)
    report.say(
        f"{comparison_lines(timing, ppl_difference, param_difference)}\n"
        f"predict({args.prefix!r}, {args.num_preds}) with the scan-trained parameters: "
        f"{predicted!r}"
    )
    path = os.path.join(_common.make_out_dir(args.out_dir), "d2l_gru_scan.txt")
    report.write(path)
    print(f"wrote {path}")
    return {
        "loop": loop.history,
        "scan": scan.history,
        "timing": timing,
        "max_relative_difference": ppl_difference,
        "parameter_difference": param_difference,
        "agree": ppl_difference <= PERPLEXITY_RTOL,
        "predicted": predicted,
        "prefix": args.prefix,
        "vocab": vocab.chars,
        "path": path,
    }


def copied(params):
    """Fresh leaf tensors with the same values, so that both runs start from one point."""
    return [p.detach().clone().requires_grad_(True) for p in params]


if __name__ == "__main__":
    main()
