"""examples/d2l_gru_scan.py: a --quick run, and d2l's loop against the rnnfast.scan call in
float64 (outputs, final state and every parameter's gradient)."""

import math
import re

import torch

from example_helpers import assert_bad_argument

import d2l_gru_scan  # noqa: E402  (from examples/, put on sys.path by example_helpers)

# --quick trains 6 SGD steps at lr 1 in float32 from the same point on the same batches: the
# two runs differ by rounding only (~1e-7 relative, in the perplexities and the parameters),
# so 1e-5 leaves a hundredfold margin. This early the perplexity mostly follows the output
# bias and hardly tells two steps apart; the trained parameters do: with the reset gate
# after the product, or Z and 1 - Z swapped, they differ by more than 1 (relative).
QUICK_RTOL = 1e-5


def test_d2l_gru_scan_quick(tmp_path, capsys):
    result = d2l_gru_scan.main(["--quick", "--out-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert len(result["loop"]) == len(result["scan"]) == 2
    for loop, scan in zip(result["loop"], result["scan"]):
        assert math.isfinite(loop["perplexity"]) and math.isfinite(scan["perplexity"])
        assert 1 < loop["perplexity"] < len(result["vocab"]) + 1  # at most a uniform guess
        assert math.isclose(loop["perplexity"], scan["perplexity"], rel_tol=QUICK_RTOL)
        assert loop["tokens_per_second"] > 0 and scan["tokens_per_second"] > 0
    assert result["loop"][-1]["perplexity"] < result["loop"][0]["perplexity"]
    assert result["agree"] and result["max_relative_difference"] < QUICK_RTOL
    assert result["parameter_difference"] < QUICK_RTOL

    speedup = re.search(r"speedup (\d+\.\d+)x", printed)
    assert speedup and float(speedup.group(1)) == round(result["timing"]["speedup"], 2)
    assert result["timing"]["speedup"] > 0 and result["timing"]["steps"] == 5
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+\d+\s+(\S+)\s+\d+$", printed, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in rows] == [1, 2]
    for _, loop_ppl, scan_ppl in rows:
        assert math.isclose(float(loop_ppl), float(scan_ppl), rel_tol=1e-3)  # 3 decimals
    assert "perplexities agree" in printed
    predicted = result["predicted"]
    assert predicted.startswith(result["prefix"]) and len(predicted) == len(result["prefix"]) + 50
    assert set(predicted) <= set(result["vocab"])
    assert (tmp_path / "d2l_gru_scan.txt").read_text() in printed


def test_d2l_loop_and_scan_agree_in_float64():
    """The same outputs, final state and gradients of every parameter (and of the initial
    state) from d2l's loop and from the scan call, on a tiny batch in float64."""
    vocab_size, hidden, B, T = 7, 5, 3, 6
    generator = torch.Generator().manual_seed(0)
    params = d2l_gru_scan.get_params(vocab_size, hidden, "cpu", torch.float64, generator)
    with torch.no_grad():  # d2l's 0.01 weights and zero biases make too easy a case
        for p in params:
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.5)
    tokens = torch.randint(vocab_size, (B, T), generator=generator)
    h0 = torch.randn(B, hidden, generator=generator, dtype=torch.float64)
    results = []
    for forward_fn in (d2l_gru_scan.gru, d2l_gru_scan.gru_scan):
        copies = d2l_gru_scan.copied(params)
        net = d2l_gru_scan.RNNModelScratch(vocab_size, hidden, copies, forward_fn)
        state = (h0.clone().requires_grad_(True),)
        y_hat, (h_n,) = net(tokens, state)
        weights = torch.linspace(-1, 1, y_hat.numel(), dtype=torch.float64).view_as(y_hat)
        ((y_hat * weights).sum() + (h_n**2).sum()).backward()
        results.append((y_hat, h_n, state[0].grad, [p.grad for p in copies]))
    (loop_y, loop_h, loop_g0, loop_grads), (scan_y, scan_h, scan_g0, scan_grads) = results
    assert loop_y.shape == (T * B, vocab_size)
    torch.testing.assert_close(scan_y, loop_y)
    torch.testing.assert_close(scan_h, loop_h)
    torch.testing.assert_close(scan_g0, loop_g0)
    assert len(loop_grads) == 11
    for name, loop_grad, scan_grad in zip(PARAM_NAMES, loop_grads, scan_grads):
        assert loop_grad.abs().sum() > 0, name
        torch.testing.assert_close(scan_grad, loop_grad, msg=lambda m, name=name: f"{name}: {m}")


PARAM_NAMES = "W_xz W_hz b_z W_xr W_hr b_r W_xh W_hh b_h W_hq b_q".split()


def test_d2l_gru_scan_bad_arguments(capsys):
    assert_bad_argument(d2l_gru_scan.main, ["--prefix", "Z!"], "not in the vocabulary", capsys)
    assert_bad_argument(d2l_gru_scan.main, ["--hidden", "0"], "positive integer", capsys)
