"""python -m rnnfast.bench's command line: its modes, --help, the summary it ends with, the
warning about disturbed figures, and the files it writes (--json, the plot)."""

import json
import os
import subprocess
import sys

import pytest

from rnnfast.bench import cases, cli, summary

RECORDED = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "benchmarks",
    "results",
    "2026-11-23_cpu-xeon-2c_full.json",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _recorded():
    with open(RECORDED) as f:
        report = json.load(f)
    report.setdefault("modules", [])
    return report


@pytest.mark.parametrize(
    "argv, shapes",
    [
        ([], ("S", "B1", "LM", "M")),
        (["--quick"], ("S",)),
        (["--full"], tuple(cases.SHAPES)),
        (["--full", "--shapes", "M,L"], ("M", "L")),
    ],
)
def test_modes_choose_the_shapes(argv, shapes):
    args = cli.parse_args(argv)
    assert args.shapes == shapes and args.passes == ("fwd", "fwdbwd")
    assert "L" not in cli.parse_args([]).shapes  # its hand loops take minutes


def test_quick_and_full_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--quick", "--full"])
    assert "not allowed with" in capsys.readouterr().err


def test_help_lists_the_choices_and_each_modes_duration():
    text = subprocess.run(
        [sys.executable, "-m", "rnnfast.bench", "--help"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in (*cases.CELLS, *cases.PASSES, *(str(s) for s in cases.SHAPES.values())):
        assert name in text, name
    assert "under a minute on an idle machine" in text and "--full" in text and "--quick" in text
    assert "bench-results/rnnfast-bench.png" in text


def test_summary_table_relates_both_baselines_to_rnnfast():
    report = _recorded()
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t["median_ms"] for t in report["timings"]}
    lines = summary.summary_table(report).splitlines()
    assert lines[0].split()[:3] == ["cell", "shape", "pass"]
    rows = {tuple(line.split()[:3]): line.split() for line in lines[2:]}
    assert len(rows) == 3 * 4 * 3  # cells x shapes x passes of the recorded run
    row = rows[("lstm", "M", "fwdbwd")]
    assert row[3] == f"{ms[('lstm', 'M', 'fwdbwd', 'rnnfast')]:.1f}"
    assert (
        row[-2]
        == f"{ms[('lstm', 'M', 'fwdbwd', 'torch_nn')] / ms[('lstm', 'M', 'fwdbwd', 'rnnfast')]:.2f}x"  # noqa: E501
    )
    # gru: the hand loop (reset-before) against rnnfast's reset-before GRU
    row = rows[("gru", "S", "fwd")]
    assert (
        row[-1] == f"{ms[('gru', 'S', 'fwd', 'seed')] / ms[('gru', 'S', 'fwd', 'rnnfast_rb')]:.2f}x"
    )


def test_disturbed_figures_get_a_sentence():
    report = _recorded()
    for t in report["timings"]:
        t["other_load"] = 0.0
    assert summary.disturbed_warning(report) == ""
    for t in report["timings"][:3]:
        t["other_load"] = 0.5
    text = summary.disturbed_warning(report)
    assert text.startswith(f"WARNING: 3 of {len(report['timings'])} figures were disturbed")
    assert "rerun on a quiet machine" in text


def test_a_run_ends_with_the_summary_and_writes_json_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    report = cli.main(
        [
            "--shapes",
            "S",
            "--cells",
            "rnn",
            "--passes",
            "fwd",
            "--repeat",
            "1",
            "--no-modules",
            "--json",
            "run.json",
        ]
    )
    out = capsys.readouterr().out
    tail = out[out.index("\nsummary: ") :]
    row = next(
        line.split() for line in tail.splitlines() if line.split()[:3] == ["rnn", "S", "fwd"]
    )
    assert len(row) == 10 and row[-1].endswith("x") and row[-2].endswith("x")
    assert "measured in " in tail
    assert "figures: run.json" in tail
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["timings"] == report["timings"] and on_disk["settings"]["shapes"] == ["S"]
    png = tmp_path / "bench-results" / "rnnfast-bench.png"
    if cli.have_matplotlib():
        assert tail.rstrip().endswith("plot: " + os.path.join("bench-results", "rnnfast-bench.png"))
        assert png.read_bytes().startswith(PNG_MAGIC)
    else:  # the default plot is skipped, the run still succeeds and says why
        assert tail.rstrip().endswith("matplotlib is not installed (pip install matplotlib)")
        assert not png.exists()


def test_without_matplotlib_the_default_plot_is_skipped_and_an_asked_one_refused(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "have_matplotlib", lambda: False)
    args = cli.parse_args(["--quick"])
    assert args.plot is None and args.plot_skipped
    with pytest.raises(SystemExit):
        cli.parse_args(["--quick", "--plot", "speed.png"])
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_no_plot_draws_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "--shapes",
            "S",
            "--cells",
            "rnn",
            "--passes",
            "fwd",
            "--repeat",
            "1",
            "--no-modules",
            "--no-plot",
        ]
    )
    assert not (tmp_path / "bench-results").exists()
    assert "plot: " not in capsys.readouterr().out
