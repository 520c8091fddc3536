"""A character language model (after d2l's recurrent networks chapters).

The text of a file becomes a sequence of character indices (by default as d2l prepares
The Time Machine: lower case, every run of non-letters one space). Minibatches of
``num_steps`` characters come by random sampling (independent subsequences, the state starts
from zero in every batch) or consecutive sampling (batch row i continues where it stopped in
the previous batch, so the state is carried over and detached from the previous graph).
The model is one-hot input -> recurrent layer -> Linear(vocab): ``rnnfast.GRU`` with the reset
gate after (torch.nn's) or before (d2l's, ``reset_after=False``) the recurrent product,
``rnnfast.LSTM``, or the SRN (``rnnfast.RNN``). Training: SGD (lr 1, as d2l) or Adam, the
gradient norm clipped to 1, perplexity ``exp(mean cross-entropy)`` per epoch and the tokens
per second. Then text is generated from a prefix with the fused cells (``rnnfast.GRUCell``,
``LSTMCell``, ``RNNCell``) sharing the trained layer's weights, one fused step per character:
greedily (d2l's ``predict``) and by sampling with a temperature.

    python examples/char_lm.py                              # the shipped corpus, GRU, ~1 min
    python examples/char_lm.py --cell lstm --sampling random --quick
    python examples/char_lm.py --corpus book.txt --cell gru_reset_before --epochs 100
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnfast  # noqa: E402

import _common  # noqa: E402

DEFAULT_CORPUS = os.path.join(_common.EXAMPLES_DIR, "data", "us_founding_texts.txt")
CELLS = ("gru", "gru_reset_before", "lstm", "srn")
SAMPLINGS = ("random", "consecutive")


# --------------------------------------------------------------------------- text
def read_corpus(path: str, raw: bool) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not raw:  # d2l's preprocessing of The Time Machine
        text = re.sub("[^A-Za-z]+", " ", text).lower().strip()
    return text


class Vocab:
    """The characters of a text, sorted; ``encode``/``decode`` between text and indices."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        missing = sorted(set(text) - set(self.index))
        if missing:
            raise ValueError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, indices) -> str:
        return "".join(self.chars[i] for i in indices)


# --------------------------------------------------------------------------- minibatches
def random_batches(corpus: torch.Tensor, batch_size: int, num_steps: int, generator):
    """d2l's ``data_iter_random``: non-overlapping subsequences from a random offset,
    in random order; ``X``, ``Y`` ``[B, T]``, Y is X shifted by one character."""
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    corpus = corpus[offset:]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = torch.randperm(num_subseqs, generator=generator) * num_steps
    steps = torch.arange(num_steps)
    for i in range(0, num_subseqs - batch_size + 1, batch_size):
        positions = starts[i : i + batch_size, None] + steps
        yield corpus[positions], corpus[positions + 1]


def consecutive_batches(corpus: torch.Tensor, batch_size: int, num_steps: int, generator):
    """d2l's ``data_iter_consecutive``: the corpus cut into ``batch_size`` rows read left
    to right, so row i of one batch continues row i of the previous one."""
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    num_tokens = (len(corpus) - offset - 1) // batch_size * batch_size
    xs = corpus[offset : offset + num_tokens].view(batch_size, -1)
    ys = corpus[offset + 1 : offset + 1 + num_tokens].view(batch_size, -1)
    for i in range(0, xs.shape[1] - num_steps + 1, num_steps):
        yield xs[:, i : i + num_steps], ys[:, i : i + num_steps]


def num_batches(corpus_len: int, batch_size: int, num_steps: int) -> int:
    """A lower bound on the batches per epoch for both samplings (at least one is needed)."""
    return (corpus_len - num_steps - 1) // (batch_size * num_steps)


# --------------------------------------------------------------------------- model
def make_layer(cell: str, vocab_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    if cell == "gru":
        return rnnfast.GRU(vocab_size, hidden_size, num_layers)
    if cell == "gru_reset_before":
        return rnnfast.GRU(vocab_size, hidden_size, num_layers, reset_after=False)
    if cell == "lstm":
        return rnnfast.LSTM(vocab_size, hidden_size, num_layers)
    if cell == "srn":
        return rnnfast.RNN(vocab_size, hidden_size, num_layers)
    raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")


class CharLM(nn.Module):
    """d2l's ``RNNModel``: one-hot characters -> recurrent layer (time-major) -> Linear."""

    def __init__(self, cell: str, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = make_layer(cell, vocab_size, hidden_size, num_layers)
        self.linear = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        """tokens ``[B, T]`` -> logits ``[T, B, V]`` and the final state."""
        x = F.one_hot(tokens.T, self.vocab_size).float()
        y, state = self.rnn(x, state)
        return self.linear(y), state


def perplexity(total_loss: float, tokens: int) -> float:
    """d2l's perplexity: exp of the mean cross-entropy per predicted token."""
    return math.exp(total_loss / tokens)


def detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


# --------------------------------------------------------------------------- training
def train_epoch(model, corpus, optimizer, args, generator, bar):
    """One pass over the corpus; returns (perplexity, tokens per second)."""
    model.train()
    sample = random_batches if args.sampling == "random" else consecutive_batches
    state = None
    total_loss, tokens = 0.0, 0
    start = time.perf_counter()
    for x, y in sample(corpus, args.batch_size, args.num_steps, generator):
        if args.sampling == "random":
            state = None  # independent subsequences: every batch starts from zero
        else:
            state = detach(state)  # carry the state, but not the graph of the last batch
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.T.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        total_loss += loss.item() * y.numel()
        tokens += y.numel()
        bar.update(1)
    seconds = time.perf_counter() - start
    return perplexity(total_loss, tokens), tokens / seconds


# --------------------------------------------------------------------------- generation
def fused_cells(layer: nn.Module) -> list:
    """One rnnfast cell per layer of ``layer``, holding that layer's own Parameter objects
    (no copy), so each generated character is one fused step per layer."""
    cells = []
    where = dict(device=layer.weight_ih_l0.device, dtype=layer.weight_ih_l0.dtype)
    for k in range(layer.num_layers):
        input_size = layer.input_size if k == 0 else layer.hidden_size
        if isinstance(layer, rnnfast.GRU):
            cell = rnnfast.GRUCell(
                input_size, layer.hidden_size, reset_after=layer.reset_after, **where
            )
        elif isinstance(layer, rnnfast.LSTM):
            cell = rnnfast.LSTMCell(input_size, layer.hidden_size, **where)
        else:
            cell = rnnfast.RNNCell(
                input_size,
                layer.hidden_size,
                nonlinearity=layer.nonlinearity,
                residual=layer.residual,
                **where,
            )
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, name, getattr(layer, f"{name}_l{k}"))  # the same Parameter object
        cells.append(cell)
    return cells


@torch.no_grad()
def generate(model, vocab, prefix: str, num_chars: int, temperature: float, generator) -> str:
    """``prefix`` followed by ``num_chars`` generated characters. The prefix warms the state
    up one character at a time, as d2l's ``predict`` does; temperature 0 is greedy
    (argmax), else the next character is drawn from ``softmax(logits / temperature)``."""
    cells = fused_cells(model.rnn)
    device = model.linear.weight.device
    states = [None] * len(cells)
    tokens = vocab.encode(prefix).tolist()

    def step(token):
        x = F.one_hot(torch.tensor([token], device=device), len(vocab)).float()
        for k, cell in enumerate(cells):
            states[k] = cell(x, states[k])
            x = states[k][0] if isinstance(states[k], tuple) else states[k]
        return model.linear(x)[0]

    logits = None
    for token in tokens:
        logits = step(token)
    for _ in range(num_chars):
        if temperature == 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=0).cpu()
            token = int(torch.multinomial(probs, 1, generator=generator))
        tokens.append(token)
        logits = step(token)
    return vocab.decode(tokens)


# --------------------------------------------------------------------------- CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
        help="a UTF-8 text file (default: examples/data/us_founding_texts.txt)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="keep the text as it is (default: lower case letters and spaces)",
    )
    parser.add_argument(
        "--cell", default="gru", help=f"the recurrent layer: {', '.join(CELLS)} (default gru)"
    )
    parser.add_argument("--sampling", default="consecutive", choices=SAMPLINGS)
    parser.add_argument(
        "--epochs", type=_common.positive_int, default=None, help="default 200 (quick: 30)"
    )
    parser.add_argument("--batch-size", type=_common.positive_int, default=32)
    parser.add_argument("--num-steps", type=_common.positive_int, default=35)
    parser.add_argument(
        "--hidden-size", type=_common.positive_int, default=None, help="default 256 (quick: 128)"
    )
    parser.add_argument("--num-layers", type=_common.positive_int, default=1)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument(
        "--lr",
        type=_common.positive_float,
        default=None,
        help="default 1 for sgd (d2l), 0.01 for adam",
    )
    parser.add_argument(
        "--clip",
        type=_common.positive_float,
        default=1.0,
        help="the largest gradient norm (default 1)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="the start of the generated text (default: the corpus's first 10 characters)",
    )
    parser.add_argument(
        "--num-chars",
        type=_common.positive_int,
        default=100,
        help="characters to generate (default 100)",
    )
    parser.add_argument(
        "--temperature",
        type=_common.positive_float,
        default=0.7,
        help="temperature of the sampled generation (default 0.7)",
    )
    args = parser.parse_args(argv)
    device = _common.set_up(parser, args)
    if args.cell not in CELLS:
        parser.error(f"unknown cell {args.cell!r}: choose from {', '.join(CELLS)}")
    if not os.path.isfile(args.corpus):
        parser.error(f"corpus file not found: {args.corpus}")
    args.epochs = args.epochs or (30 if args.quick else 200)
    args.hidden_size = args.hidden_size or (128 if args.quick else 256)
    args.lr = args.lr or (1.0 if args.optimizer == "sgd" else 0.01)
    return parser, args, device


def main(argv=None) -> dict:
    """Trains, generates, and returns ``{"vocab": [chars], "history": [per epoch],
    "greedy": str, "sampled": str, "generation_chars_per_second": float}``."""
    parser, args, device = parse_args(argv)
    try:
        text = read_corpus(args.corpus, args.raw)
    except UnicodeDecodeError as error:
        parser.error(f"--corpus {args.corpus} is not UTF-8 text: {error}")
    if num_batches(len(text), args.batch_size, args.num_steps) < 1:
        parser.error(
            f"--corpus {args.corpus} has {len(text)} characters, too few for one batch "
            f"of {args.batch_size} x {args.num_steps}"
        )
    vocab = Vocab(text)
    prefix = text[:10] if args.prefix is None else args.prefix
    try:
        vocab.encode(prefix)
    except ValueError as error:
        parser.error(f"--prefix {prefix!r}: {error}")
    corpus = vocab.encode(text).to(device)
    print(
        f"corpus {os.path.basename(args.corpus)}: {len(text)} characters, vocabulary of "
        f"{len(vocab)}; cell {args.cell}, hidden {args.hidden_size}, {args.sampling} sampling, "
        f"{args.optimizer} lr {args.lr:g}, clip {args.clip:g}, device {device}"
    )

    model = CharLM(args.cell, len(vocab), args.hidden_size, args.num_layers).to(device)
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=args.lr)
        if args.optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=args.lr)
    )
    generator = torch.Generator().manual_seed(args.seed)  # minibatch order and sampling
    history = []
    batches = num_batches(len(text), args.batch_size, args.num_steps)
    with _common.progress_bar(total=args.epochs * batches, desc="training", unit="batch") as bar:
        for epoch in range(1, args.epochs + 1):
            perplexity, tokens_per_second = train_epoch(
                model, corpus, optimizer, args, generator, bar
            )
            history.append(
                {"epoch": epoch, "perplexity": perplexity, "tokens_per_second": tokens_per_second}
            )
            bar.set_postfix(ppl=f"{perplexity:.2f}")
            bar.write(
                f"epoch {epoch:>3}  perplexity {perplexity:7.3f}  "
                f"{tokens_per_second:8.0f} tokens/s",
                file=sys.stdout,
            )

    start = time.perf_counter()
    greedy = generate(model, vocab, prefix, args.num_chars, 0.0, generator)
    seconds = time.perf_counter() - start
    sampled = generate(model, vocab, prefix, args.num_chars, args.temperature, generator)
    chars_per_second = (len(prefix) + args.num_chars) / seconds
    print(
        f"greedy:          {greedy!r}\n"
        f"temperature {args.temperature:g}: {sampled!r}\n"
        f"generation: {chars_per_second:.0f} characters/s (one fused cell step each)"
    )
    return {
        "vocab": vocab.chars,
        "history": history,
        "greedy": greedy,
        "sampled": sampled,
        "prefix": prefix,
        "generation_chars_per_second": chars_per_second,
    }


if __name__ == "__main__":
    main()
