"""The memory experiment of NNDL (chapter 6): how far back can a recurrent net remember?

DigitSum: a sequence of digits whose first two are 0-9 and whose label is their sum (19
classes); the rest are zeros except one position set to a random digit. Every (n1, n2) pair
appears k times with a different random position and digit: k=3 for training, k=1 for the
dev and test sets. A model Embedding -> recurrent layer -> Linear(19) reads the whole
sequence and classifies from the last hidden state, so it must carry the first two digits
across ``length - 2`` steps. One model is trained per length (5, 10, ..., 35) and recurrent
layer, with Adam (lr 1e-3) and batch 8, keeping the weights that were best on dev, then
scored on test.

NNDL's finding: the SRN's accuracy falls as the sequences grow, and the residual SRN of
NNDL eq. (6.50), ``h = h + tanh(x W + h U + b)``, holds up. The gated GRU and LSTM are run
next to them. The SRN is then trained again with NNDL's hand-written loop
(``rnnfast.bench.baselines.SeedSRN``, the same math, the same initial weights and the same batches)
to compare wall times.

    python examples/digit_sum.py                 # all lengths and models, ~6 min on 1 core
    python examples/digit_sum.py --quick         # lengths 5 and 10, 40 epochs, ~20 s
    python examples/digit_sum.py --models srn residual_srn --lengths 5 35 --epochs 30
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnfast  # noqa: E402
from rnnfast.bench.baselines import SeedSRN  # noqa: E402

import _common  # noqa: E402

LENGTHS = (5, 10, 15, 20, 25, 30, 35)
MODELS = ("srn", "residual_srn", "gru", "lstm")
MODEL_TITLES = {
    "srn": "SRN",
    "residual_srn": "residual SRN",
    "gru": "GRU",
    "lstm": "LSTM",
    "seed_srn": "SRN, hand loop",
}
NUM_DIGITS = 10
NUM_CLASSES = 19  # sums 0..18


# --------------------------------------------------------------------------- data
def generate_digit_sum(length: int, k: int, rng: np.random.RandomState):
    """NNDL's ``generate_data``: ``[100*k, length]`` digit sequences and their labels.

    For every pair (n1, n2) of first digits, k copies of ``[n1, n2, 0, ..., 0]`` each get one
    position in ``2..length-1`` set to a random digit 0-9; the label is ``n1 + n2``.
    """
    if length < 3:
        raise ValueError(f"DigitSum sequences need length >= 3, got {length}")
    seqs, labels = [], []
    for n1 in range(10):
        for n2 in range(10):
            for _ in range(k):
                seq = [n1, n2] + [0] * (length - 2)
                seq[rng.randint(2, length)] = rng.randint(0, 10)
                seqs.append(seq)
                labels.append(n1 + n2)
    return torch.tensor(seqs, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def digit_sum_splits(length: int, seed: int):
    """Train (k=3), dev (k=1) and test (k=1) sets of one length; the same for every model."""
    rng = np.random.RandomState(seed * 1000 + length)
    return {
        split: generate_digit_sum(length, k, rng)
        for split, k in (("train", 3), ("dev", 1), ("test", 1))
    }


# --------------------------------------------------------------------------- models
class LastHidden(nn.Module):
    """An rnnfast layer (batch-first) reduced to its last hidden state ``[B, H]``, the
    interface of NNDL's ``SRN``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        _, state = self.layer(x)
        h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        return h_n[-1]


def make_recurrent(model: str, input_size: int, hidden_size: int) -> nn.Module:
    """The recurrent part, ``[B, T, I] -> [B, H]``.

    The SRNs start from zero weights, as NNDL's ``SRN`` does (so the fused layer and the
    NNDL's loop start from the same point); the GRU and LSTM keep torch.nn's initialisation.
    """
    if model == "seed_srn":
        return SeedSRN(input_size, hidden_size)
    if model in ("srn", "residual_srn"):
        layer = rnnfast.RNN(
            input_size, hidden_size, batch_first=True, residual=model == "residual_srn"
        )
        with torch.no_grad():
            for p in layer.parameters():
                p.zero_()
    elif model == "gru":
        layer = rnnfast.GRU(input_size, hidden_size, batch_first=True)
    elif model == "lstm":
        layer = rnnfast.LSTM(input_size, hidden_size, batch_first=True)
    else:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return LastHidden(layer)


class DigitSumClassifier(nn.Module):
    """NNDL's ``Model_RNN4SeqClass``: Embedding -> recurrent layer -> Linear(19)."""

    def __init__(self, model: str, input_size: int, hidden_size: int):
        super().__init__()
        # Embedding and Linear first: they draw the same random numbers for every model.
        self.embedding = nn.Embedding(NUM_DIGITS, input_size)
        nn.init.xavier_uniform_(self.embedding.weight)  # NNDL's Embedding initialisation
        self.linear = nn.Linear(hidden_size, NUM_CLASSES)
        self.recurrent = make_recurrent(model, input_size, hidden_size)

    def forward(self, seqs):
        return self.linear(self.recurrent(self.embedding(seqs)))


# --------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(classifier, seqs, labels):
    """(accuracy, mean loss) of the whole set in one batch."""
    classifier.eval()
    logits = classifier(seqs)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return accuracy, F.cross_entropy(logits, labels).item()


def train_one(classifier, splits, args, device, shuffle_seed: int, bar):
    """Adam, batch ``args.batch_size``, ``args.epochs`` epochs; the weights best on dev are
    kept (NNDL's checkpointing, in memory) and scored on test."""
    classifier.to(device)
    data = {name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()}
    train_x, train_y = data["train"]
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    order_generator = torch.Generator().manual_seed(shuffle_seed)
    best_dev, best_state, steps = -1.0, None, 0
    history = {"train_loss": [], "dev_loss": [], "dev_accuracy": []}
    start = time.perf_counter()
    for _ in range(args.epochs):
        classifier.train()
        order = torch.randperm(len(train_y), generator=order_generator).to(device)
        total, count = 0.0, 0
        for batch in order.split(args.batch_size):
            loss = F.cross_entropy(classifier(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
            steps += 1
        dev_accuracy, dev_loss = evaluate(classifier, *data["dev"])
        history["train_loss"].append(total / count)
        history["dev_loss"].append(dev_loss)
        history["dev_accuracy"].append(dev_accuracy)
        if dev_accuracy > best_dev:
            best_dev, best_state = dev_accuracy, copy.deepcopy(classifier.state_dict())
        bar.update(1)
        bar.set_postfix(dev_acc=f"{dev_accuracy:.2f}")
    seconds = time.perf_counter() - start
    classifier.load_state_dict(best_state)
    test_accuracy, _ = evaluate(classifier, *data["test"])
    return {
        "test_accuracy": test_accuracy,
        "best_dev_accuracy": best_dev,
        "seconds": seconds,
        "steps": steps,
        **history,
    }


def run_experiment(args, device):
    """Every (model, length) run; returns ``runs[model][length]`` (see :func:`train_one`)."""
    models = list(args.models) + (["seed_srn"] if args.compare_seed else [])
    runs = {model: {} for model in models}
    splits = {length: digit_sum_splits(length, args.seed) for length in args.lengths}
    with _common.progress_bar(
        total=len(models) * len(args.lengths) * args.epochs, desc="digit sum", unit="epoch"
    ) as bar:
        for model in models:
            for length in args.lengths:
                bar.set_description(f"{MODEL_TITLES[model]}, length {length}")
                # The same initial weights and batch order for every model at one length.
                run_seed = args.seed * 1000 + length
                torch.manual_seed(run_seed)
                classifier = DigitSumClassifier(model, args.input_size, args.hidden_size)
                runs[model][length] = train_one(
                    classifier, splits[length], args, device, run_seed, bar
                )
    return runs


# --------------------------------------------------------------------------- reporting
def accuracy_table(runs, lengths) -> str:
    """Test accuracy (%) per length (rows) and model (columns)."""
    models = list(runs)
    widths = [max(len(MODEL_TITLES[m]), 6) for m in models]
    header = "length  " + "  ".join(MODEL_TITLES[m].rjust(w) for m, w in zip(models, widths))
    lines = [header, "-" * len(header)]
    for length in lengths:
        cells = [
            f"{100 * runs[m][length]['test_accuracy']:.1f}".rjust(w) for m, w in zip(models, widths)
        ]
        lines.append(f"{length:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def timing_table(runs) -> str:
    """Training wall time per model, all lengths together (evaluation on dev included); the
    NNDL's loop against rnnfast."""
    lines = ["model             train seconds  ms per step"]
    seconds = {m: sum(r["seconds"] for r in runs[m].values()) for m in runs}
    for model, value in seconds.items():
        steps = sum(r["steps"] for r in runs[model].values())
        lines.append(f"{MODEL_TITLES[model]:<16}  {value:>13.1f}  {1000 * value / steps:>11.2f}")
    if "seed_srn" in seconds and "srn" in seconds:
        lines.append(
            f"SRN: NNDL's hand-written loop takes "
            f"{seconds['seed_srn'] / seconds['srn']:.2f}x the time of rnnfast.RNN"
        )
    return "\n".join(lines)


def draw_plots(runs, lengths, out_dir) -> dict:
    """accuracy_vs_length.png and loss_curves.png; returns their paths."""
    matplotlib = _common.require("matplotlib", "matplotlib", "to draw its plots")
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    paths = {
        "accuracy": os.path.join(out_dir, "accuracy_vs_length.png"),
        "loss": os.path.join(out_dir, "loss_curves.png"),
    }
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in runs:
        ax.plot(
            lengths,
            [100 * runs[model][n]["test_accuracy"] for n in lengths],
            "o--" if model == "seed_srn" else "o-",
            label=MODEL_TITLES[model],
        )
    ax.set(
        xlabel="sequence length",
        ylabel="test accuracy (%)",
        ylim=(0, 102),
        title="DigitSum: accuracy against length",
    )
    ax.legend(fontsize="small", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(paths["accuracy"], dpi=100)
    plt.close(fig)

    cols = min(4, len(lengths))
    rows = (len(lengths) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols, 2.8 * rows), squeeze=False)
    for ax, length in zip(axes.flat, lengths):
        for i, model in enumerate(m for m in runs if m != "seed_srn"):
            color = f"C{i}"
            run = runs[model][length]
            epochs = range(1, len(run["train_loss"]) + 1)
            ax.plot(epochs, run["train_loss"], color=color, label=f"{MODEL_TITLES[model]} train")
            ax.plot(
                epochs,
                run["dev_loss"],
                color=color,
                linestyle="--",
                label=f"{MODEL_TITLES[model]} dev",
            )
        ax.set(title=f"length {length}", xlabel="epoch", ylabel="loss")
    for ax in list(axes.flat)[len(lengths) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(paths["loss"], dpi=100)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help=f"recurrent layers to compare, of {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=None,
        help="sequence lengths, each >= 3 (default: 5 10 ... 35; quick: 5 10)",
    )
    parser.add_argument(
        "--epochs",
        type=_common.positive_int,
        default=None,
        help="epochs per model and length (default 150; NNDL trains 500; quick 40)",
    )
    parser.add_argument("--batch-size", type=_common.positive_int, default=8)
    parser.add_argument("--lr", type=_common.positive_float, default=1e-3)
    parser.add_argument("--input-size", type=_common.positive_int, default=32)
    parser.add_argument("--hidden-size", type=_common.positive_int, default=32)
    parser.add_argument(
        "--no-hand-loop",
        dest="compare_seed",
        action="store_false",
        help="skip the SRN run with NNDL's hand-written loop",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the table and PNG files go (default examples/results, "
        "quick: examples/results/quick)",
    )
    args = parser.parse_args(argv)
    device = _common.set_up(parser, args)
    args.models = args.models or list(MODELS)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    args.lengths = args.lengths or ([5, 10] if args.quick else list(LENGTHS))
    if min(args.lengths) < 3:
        parser.error(
            f"--lengths must be >= 3 (two digits and one random position), got {min(args.lengths)}"
        )
    args.epochs = args.epochs or (40 if args.quick else 150)
    args.compare_seed = args.compare_seed and "srn" in args.models
    results = os.path.join(_common.EXAMPLES_DIR, "results")
    args.out_dir = args.out_dir or (os.path.join(results, "quick") if args.quick else results)
    return args, device


def main(argv=None) -> dict:
    """Runs the experiment, prints its tables, writes them and the plots to ``--out-dir``.

    Returns ``{"runs": runs[model][length], "table": str, "timing": str, "plots": {...}}``.
    """
    args, device = parse_args(argv)
    runs = run_experiment(args, device)
    table = accuracy_table(runs, args.lengths)
    timing = timing_table(runs)
    out_dir = _common.make_out_dir(args.out_dir)
    plots = draw_plots(runs, args.lengths, out_dir)
    report = (
        f"DigitSum test accuracy (%), best-on-dev weights, {args.epochs} epochs, "
        f"batch {args.batch_size}, Adam {args.lr:g}, seed {args.seed}, device {device}\n"
        f"{table}\n\n{timing}\n"
    )
    print(report)
    with open(os.path.join(out_dir, "digit_sum.txt"), "w", encoding="utf-8") as f:
        f.write(report)
    print(f"wrote {out_dir}/digit_sum.txt, {plots['accuracy']}, {plots['loss']}")
    return {
        "runs": runs,
        "table": table,
        "timing": timing,
        "plots": plots,
        "lengths": args.lengths,
        "models": list(runs),
    }


if __name__ == "__main__":
    main()
