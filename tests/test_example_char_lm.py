"""examples/char_lm.py: a --quick run, generation with the fused cells, the two samplings,
determinism under --seed, and its errors."""

import pytest
import torch

from example_helpers import assert_bad_argument

import char_lm  # noqa: E402  (from examples/, put on sys.path by example_helpers)


def test_char_lm_quick(capsys):
    result = char_lm.main(["--quick"])
    printed = capsys.readouterr().out
    perplexities = [epoch["perplexity"] for epoch in result["history"]]
    assert perplexities[-1] < perplexities[0]
    assert perplexities[-1] < 0.5 * len(result["vocab"])  # a uniform guess: len(vocab)
    assert all(epoch["tokens_per_second"] > 0 for epoch in result["history"])
    vocab = set(result["vocab"])
    for text in (result["greedy"], result["sampled"]):
        assert text.startswith(result["prefix"])
        assert len(text) == len(result["prefix"]) + 100
        assert set(text) <= vocab
    assert "perplexity" in printed and "tokens/s" in printed and "greedy" in printed


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before", "lstm", "srn"])
def test_char_lm_generation_matches_the_trained_layer(cell):
    """Greedy generation with the fused cells picks, at every step, the argmax of what the
    trained layer computes over the same text: the cells hold the layer's weights."""
    torch.manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog "
    vocab = char_lm.Vocab(text)
    model = char_lm.CharLM(cell, len(vocab), 16, num_layers=2)
    generated = char_lm.generate(model, vocab, "the ", 20, 0.0, torch.Generator())
    tokens = vocab.encode(generated)
    with torch.no_grad():
        logits, _ = model(tokens[None, :-1])
    assert torch.equal(logits[3:, 0].argmax(-1), tokens[4:])
    cells = char_lm.fused_cells(model.rnn)
    assert cells[1].weight_hh is model.rnn.weight_hh_l1  # shared, not copied


def test_char_lm_samplings():
    corpus = torch.arange(200)
    generator = torch.Generator().manual_seed(0)
    previous = None
    for x, y in char_lm.consecutive_batches(corpus, 4, 5, generator):
        assert torch.equal(y, x + 1)
        if previous is not None:  # each row continues where it stopped
            assert torch.equal(x[:, 0], previous[:, -1] + 1)
        previous = x
    starts = []
    for x, y in char_lm.random_batches(corpus, 4, 5, generator):
        assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)
        starts += x[:, 0].tolist()
    assert len(set(starts)) == len(starts) and starts != sorted(starts)


def test_char_lm_is_deterministic_under_seed(capsys):
    argv = ["--epochs", "2", "--hidden-size", "32", "--sampling", "random", "--seed", "3"]
    first, second = char_lm.main(argv), char_lm.main(argv)
    assert first["history"][-1]["perplexity"] == second["history"][-1]["perplexity"]
    assert first["sampled"] == second["sampled"]


def test_char_lm_bad_arguments(tmp_path, capsys):
    missing = str(tmp_path / "no_such_corpus.txt")
    assert_bad_argument(char_lm.main, ["--corpus", missing], "corpus file not found", capsys)
    assert_bad_argument(
        char_lm.main, ["--cell", "transformer"], "unknown cell 'transformer'", capsys
    )
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")
    assert_bad_argument(char_lm.main, ["--corpus", str(tiny)], "too few for one batch", capsys)
    assert_bad_argument(char_lm.main, ["--prefix", "Z!"], "not in the vocabulary", capsys)
    if not torch.cuda.is_available():
        assert_bad_argument(char_lm.main, ["--device", "cuda"], "no CUDA GPU", capsys)
