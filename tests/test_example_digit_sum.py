"""examples/digit_sum.py: the DigitSum data, a --quick run's table and plots, its errors."""

import torch

from example_helpers import assert_bad_argument, assert_png_image

import digit_sum  # noqa: E402  (from examples/, put on sys.path by example_helpers)


def test_digit_sum_data_follows_the_seed_rules():
    rng = digit_sum.np.random.RandomState(0)
    seqs, labels = digit_sum.generate_digit_sum(10, 3, rng)
    assert seqs.shape == (300, 10) and labels.shape == (300,)
    assert torch.equal(labels, seqs[:, 0] + seqs[:, 1])
    pairs = {(int(a), int(b)) for a, b in seqs[:, :2]}
    assert len(pairs) == 100  # every pair of first digits, k=3 copies each
    # Past the first two digits at most one position is non-zero.
    assert int((seqs[:, 2:] != 0).sum(1).max()) <= 1
    assert int((seqs[:, 2:] != 0).sum()) > 200  # and it usually is (a random digit 1-9)


def test_digit_sum_quick(tmp_path, capsys):
    out_dir = tmp_path / "results"
    result = digit_sum.main(["--quick", "--out-dir", str(out_dir)])
    printed = capsys.readouterr().out
    lengths, runs = result["lengths"], result["runs"]
    assert set(runs) == {"srn", "residual_srn", "gru", "lstm", "seed_srn"}
    # The table has a row for every length and a column for every model.
    rows = {line.split()[0]: line.split()[1:] for line in result["table"].splitlines()[2:]}
    assert sorted(int(n) for n in rows) == sorted(lengths)
    assert all(len(cells) == len(runs) for cells in rows.values())
    for title in ("SRN", "residual SRN", "GRU", "LSTM", "SRN, hand loop"):
        assert title in result["table"]
    assert result["table"] in printed and "NNDL's hand-written loop" in printed
    # Length 5 is learnt well above chance: the most frequent sum, 9, is 10 % of the labels
    # (guessing uniformly gets 5 %). The SRNs start from zero weights, as in NNDL's code, and are
    # the slowest to start; the residual SRN and the gated layers go further in 40 epochs.
    for model, by_length in runs.items():
        assert by_length[5]["test_accuracy"] > 0.2, (model, by_length[5])
    for model in ("residual_srn", "gru", "lstm"):
        assert runs[model][5]["test_accuracy"] > 0.4, (model, runs[model][5])
    # NNDL's loop, timed against rnnfast.RNN, runs the same data the same number of steps.
    for length in lengths:
        assert runs["srn"][length]["steps"] == runs["seed_srn"][length]["steps"] > 0
    for name in ("accuracy", "loss"):
        assert_png_image(result["plots"][name])
    assert (out_dir / "digit_sum.txt").read_text().count("\n") > len(lengths)


def test_digit_sum_seed_loop_is_the_same_model():
    """The SRN built on NNDL's loop starts from the fused SRN's weights (zero recurrent
    weights, the same Embedding and Linear) and computes the same logits and gradients."""
    seqs = torch.randint(0, 10, (8, 12), generator=torch.Generator().manual_seed(1))
    labels = seqs[:, 0] + seqs[:, 1]
    models = {}
    for name in ("srn", "seed_srn"):
        torch.manual_seed(7)
        models[name] = digit_sum.DigitSumClassifier(name, 6, 5)
    fused, seed = models["srn"], models["seed_srn"]
    assert torch.equal(fused.embedding.weight, seed.embedding.weight)
    assert torch.equal(fused.linear.weight, seed.linear.weight)
    layer = fused.recurrent.layer
    with torch.no_grad():  # move off the zero start so the recurrence matters
        for p in list(layer.parameters()) + list(seed.recurrent.parameters()):
            p.fill_(0.1)
        layer.bias_hh_l0.zero_()  # NNDL's code has one bias, b = bias_ih + bias_hh
    for model in (fused, seed):
        torch.nn.functional.cross_entropy(model(seqs), labels).backward()
    torch.testing.assert_close(fused(seqs), seed(seqs))
    torch.testing.assert_close(layer.weight_hh_l0.grad, seed.recurrent.U.grad.T)
    torch.testing.assert_close(layer.weight_ih_l0.grad, seed.recurrent.W.grad.T)
    torch.testing.assert_close(fused.embedding.weight.grad, seed.embedding.weight.grad)


def test_digit_sum_bad_arguments(capsys):
    assert_bad_argument(
        digit_sum.main, ["--models", "srn", "transformer"], "unknown model 'transformer'", capsys
    )
    assert_bad_argument(digit_sum.main, ["--lengths", "2"], "--lengths must be >= 3", capsys)
    assert_bad_argument(digit_sum.main, ["--epochs", "0"], "positive integer", capsys)
