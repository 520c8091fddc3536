"""Images read row by row by a 2-layer LSTM: each row is one time step.

The seed classifies MNIST (28 rows of 28 pixels) with ``nn.LSTM(28, 128, 2, batch_first=True)``
and a Linear layer on the last step's output, Adam 1e-3. Here the LSTM is ``rnnfast.LSTM``.
The default data set needs no download: scikit-learn's bundled 8x8 digits (1797 images,
8 rows of 8 pixels, a stratified 80/20 split). MNIST is used where torchvision finds it on
disk (``--dataset mnist --data-root DIR``, or ``auto`` which falls back to the digits).

    python examples/sequence_classify.py                  # 8x8 digits, 15 epochs, seconds
    python examples/sequence_classify.py --quick
    python examples/sequence_classify.py --dataset mnist --data-root ~/data
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnfast  # noqa: E402

import _common  # noqa: E402

DATASETS = ("auto", "digits", "mnist")
NUM_CLASSES = 10


# --------------------------------------------------------------------------- data
def load_digits(seed: int):
    """scikit-learn's 8x8 digits as ``[N, 8, 8]`` rows in [0, 1]; a stratified 80/20 split."""
    datasets = _common.require("sklearn.datasets", "scikit-learn", "for its bundled digits")
    model_selection = _common.require(
        "sklearn.model_selection", "scikit-learn", "for its bundled digits"
    )
    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # pixel values 0..16
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = model_selection.train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=digits.target, random_state=seed
    )
    return (
        "8x8 digits",
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
    )


def mnist_is_local(root: str) -> bool:
    """Whether torchvision is installed and finds MNIST under ``root`` without downloading."""
    try:
        from torchvision import datasets
    except ImportError:
        return False
    try:
        datasets.MNIST(root, train=False, download=False)
    except RuntimeError:  # "Dataset not found"
        return False
    return True


def load_mnist(root: str):
    """MNIST from ``root`` (never downloaded) as ``[N, 28, 28]`` rows in [0, 1]."""
    datasets = _common.require("torchvision.datasets", "torchvision", "to read MNIST")
    splits = []
    for train in (True, False):
        try:
            data = datasets.MNIST(root, train=train, download=False)
        except RuntimeError as error:
            raise SystemExit(f"MNIST not found under --data-root {root}: {error}") from None
        splits.append((data.data.float() / 255.0, data.targets.long()))
    return "MNIST", splits[0], splits[1]


def take(split, limit):
    """The first ``limit`` examples (all of them when limit is None)."""
    images, labels = split
    return (images, labels) if limit is None else (images[:limit], labels[:limit])


# --------------------------------------------------------------------------- model
class RowLSTMClassifier(nn.Module):
    """The course's ``RNN``: a 2-layer LSTM over the rows, Linear on the last step's output."""

    def __init__(self, row_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.lstm = rnnfast.LSTM(row_size, hidden_size, num_layers, batch_first=True)
        self.classifier = nn.Linear(hidden_size, NUM_CLASSES)

    def forward(self, images):  # images [B, rows, row_size]: one row per time step
        out, _ = self.lstm(images)
        return self.classifier(out[:, -1, :])


# --------------------------------------------------------------------------- training
@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(labels)


def train(model, train_set, test_set, args, device):
    """Adam; per epoch the training loss and accuracy (as the course's code counts them, during the
    epoch) and the test accuracy."""
    train_x, train_y = (t.to(device) for t in train_set)
    test_x, test_y = (t.to(device) for t in test_set)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order_generator = torch.Generator().manual_seed(args.seed)
    history = []
    with _common.progress_bar(
        total=args.epochs * len(train_y), desc="training", unit="img", unit_scale=True
    ) as bar:
        for epoch in range(1, args.epochs + 1):
            model.train()
            start = time.perf_counter()
            total_loss, correct = 0.0, 0
            for batch in torch.randperm(len(train_y), generator=order_generator).split(
                args.batch_size
            ):
                batch = batch.to(device)
                logits = model(train_x[batch])
                loss = F.cross_entropy(logits, train_y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(batch)
                correct += (logits.argmax(1) == train_y[batch]).sum().item()
                bar.update(len(batch))
            seconds = time.perf_counter() - start
            record = {
                "epoch": epoch,
                "train_loss": total_loss / len(train_y),
                "train_accuracy": correct / len(train_y),
                "test_accuracy": accuracy(model, test_x, test_y),
                "seconds": seconds,
            }
            history.append(record)
            bar.set_postfix(test_acc=f"{record['test_accuracy']:.3f}")
            bar.write(
                f"epoch {epoch:>3}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_accuracy']:.4f}  "
                f"test acc {record['test_accuracy']:.4f}  ({seconds:.1f} s)",
                file=sys.stdout,
            )
    return history


# --------------------------------------------------------------------------- CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="auto",
        help="digits (scikit-learn, bundled), mnist (torchvision, read from "
        "--data-root, never downloaded), or auto: MNIST where found, "
        "else digits (default)",
    )
    parser.add_argument(
        "--data-root",
        default=os.path.join(os.path.expanduser("~"), "data"),
        help="the folder holding MNIST/raw (default ~/data)",
    )
    parser.add_argument(
        "--epochs", type=_common.positive_int, default=None, help="default 15 (quick: 4)"
    )
    parser.add_argument(
        "--batch-size",
        type=_common.positive_int,
        default=None,
        help="default 32 for the digits, 100 for MNIST (the course's code)",
    )
    parser.add_argument("--hidden-size", type=_common.positive_int, default=128)
    parser.add_argument("--num-layers", type=_common.positive_int, default=2)
    parser.add_argument("--lr", type=_common.positive_float, default=1e-3)
    parser.add_argument(
        "--limit",
        type=_common.positive_int,
        default=None,
        help="use only this many training images (quick on MNIST: 3000)",
    )
    args = parser.parse_args(argv)
    device = _common.set_up(parser, args)
    if args.dataset == "auto":
        args.dataset = "mnist" if mnist_is_local(args.data_root) else "digits"
    args.epochs = args.epochs or (4 if args.quick else 15)
    args.batch_size = args.batch_size or (100 if args.dataset == "mnist" else 32)
    if args.quick and args.dataset == "mnist" and args.limit is None:
        args.limit = 3000
    return args, device


def main(argv=None) -> dict:
    """Trains and returns ``{"dataset", "history": [per-epoch dict], "test_accuracy"}``."""
    args, device = parse_args(argv)
    if args.dataset == "mnist":
        name, train_set, test_set = load_mnist(args.data_root)
    else:
        name, train_set, test_set = load_digits(args.seed)
    train_set = take(train_set, args.limit)
    test_set = take(test_set, None if args.limit is None else max(args.limit // 5, 1))
    rows, row_size = train_set[0].shape[1:]
    print(
        f"{name}: {len(train_set[1])} training and {len(test_set[1])} test images, "
        f"{rows} rows of {row_size} pixels; rnnfast.LSTM({row_size}, {args.hidden_size}, "
        f"num_layers={args.num_layers}) on {device}"
    )
    torch.manual_seed(args.seed)
    model = RowLSTMClassifier(row_size, args.hidden_size, args.num_layers).to(device)
    history = train(model, train_set, test_set, args, device)
    final = history[-1]
    print(
        f"final: train accuracy {final['train_accuracy']:.4f}, "
        f"test accuracy {final['test_accuracy']:.4f}"
    )
    return {"dataset": name, "history": history, "test_accuracy": final["test_accuracy"]}


if __name__ == "__main__":
    main()
