"""examples/sequence_classify.py: a --quick run in-process and one from the command line."""

import os
import subprocess
import sys

import pytest

from example_helpers import EXAMPLES, REPO

pytest.importorskip("sklearn")

import sequence_classify  # noqa: E402  (from examples/, put on sys.path by example_helpers)


def test_sequence_classify_quick(capsys):
    result = sequence_classify.main(["--quick", "--dataset", "digits"])
    history = result["history"]
    assert [epoch["epoch"] for epoch in history] == [1, 2, 3, 4]
    for epoch in history:
        assert 0 <= epoch["train_accuracy"] <= 1 and 0 <= epoch["test_accuracy"] <= 1
    assert result["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_sequence_classify_cli():
    """The script runs from the command line and prints train and test accuracy per epoch."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    command = [
        sys.executable,
        os.path.join(EXAMPLES, "sequence_classify.py"),
        "--quick",
        "--dataset",
        "digits",
        "--epochs",
        "2",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and all("test acc" in line for line in epoch_lines)
    bad = subprocess.run(
        command + ["--dataset", "cifar"], env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "invalid choice: 'cifar'" in bad.stderr


def test_missing_dependency_is_named(monkeypatch):
    """Without scikit-learn (or matplotlib) an example stops and says what to install."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now raises ImportError
    with pytest.raises(SystemExit, match="needs scikit-learn .*pip install scikit-learn"):
        sequence_classify.load_digits(0)
