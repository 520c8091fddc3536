"""The benchmark report: --plot, --compare, --from-json and the CLI's argument errors."""

import copy
import importlib.util
import json
import os
import re

import pytest

from rnnfast.bench import cli as bench
from rnnfast.bench import report as _bench_report
from rnnfast.bench import tables

RECORDED = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "benchmarks",
    "results",
    "2026-11-23_cpu-xeon-2c_full.json",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The plots need matplotlib (in requirements.txt); a bare GPU machine may lack it.
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib"
)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """The runs below draw their default plot under the cwd: a fresh one per test."""
    monkeypatch.chdir(tmp_path)


def _recorded():
    with open(RECORDED) as f:
        return json.load(f)


def test_speedups_match_the_printed_table():
    ratios = _bench_report.speedups(_recorded())
    # 3 cells x 4 shapes x 3 passes, against torch.nn and the hand loop
    assert len(ratios) == 72
    report = _recorded()
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t["median_ms"] for t in report["timings"]}
    assert ratios[("torch_nn", "fwdbwd", "gru", "S")] == pytest.approx(
        ms[("gru", "S", "fwdbwd", "torch_nn")] / ms[("gru", "S", "fwdbwd", "rnnfast")]
    )
    # The hand loop's GRU (d2l's) is reset-before: compared with rnnfast's reset-before GRU.
    assert ratios[("seed", "fwd", "gru", "M")] == pytest.approx(
        ms[("gru", "M", "fwd", "seed")] / ms[("gru", "M", "fwd", "rnnfast_rb")]
    )


@needs_matplotlib
def test_plot_writes_an_image(tmp_path):
    path = tmp_path / "speedup.png"
    _bench_report.plot_report(_recorded(), str(path))
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_plot_title_names_device_and_versions():
    title = _bench_report.plot_title(_recorded())
    assert "Xeon" in title and "torch 2.13.0" in title and "Python" in title


@needs_matplotlib
def test_plot_refuses_a_report_without_baselines(tmp_path):
    report = _recorded()
    report["timings"] = [t for t in report["timings"] if t["impl"] == "rnnfast"]
    with pytest.raises(ValueError, match="no rnnfast timing next to a baseline"):
        _bench_report.plot_report(report, str(tmp_path / "x.png"))


def _row(text, case, impl):
    """The comparison table's row of a case and implementation, split into its columns."""
    rows = [
        re.split(r"\s{2,}", line.strip())
        for line in text.splitlines()
        if line.startswith(case + "  ")
    ]
    matches = [r for r in rows if r[1] == impl]
    assert len(matches) == 1, (case, impl, rows)
    return matches[0]


def test_compare_marks_what_changed():
    old = _recorded()
    new = copy.deepcopy(old)
    for t in new["timings"]:
        key = (t["cell"], t["shape"], t["pass"], t["impl"])
        if key == ("rnn", "S", "fwd", "rnnfast"):
            t["median_ms"] /= 2
        if key == ("lstm", "M", "fwdbwd", "rnnfast"):
            t["median_ms"] *= 3
    new["timings"] = [t for t in new["timings"] if t["shape"] != "L"]
    text = _bench_report.compare_reports(old, new)
    assert _row(text, "rnn S fwd", "rnnfast")[-2:] == ["2.00x", "faster"]
    assert _row(text, "lstm M fwdbwd", "rnnfast")[-2:] == ["0.33x", "slower"]
    assert _row(text, "gru LM fwd", "rnnfast")[-1] == "1.00x"  # unchanged: no mark
    assert "cases in both runs: 1 faster, 1 slower" in text
    dropped = sum(t["shape"] == "L" for t in old["timings"])
    assert f"cases only in the old run: {dropped}; only in the new run: 0" in text


@needs_matplotlib
def test_cli_runs_plots_and_compares(tmp_path, capsys):
    """A real (quick, small) run, written, drawn, compared with the recorded one, and read
    back with --from-json."""
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    report = bench.main(
        [
            "--quick",
            "--cells",
            "rnn",
            "--no-memory",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--compare",
            RECORDED,
        ]
    )
    printed = capsys.readouterr().out
    assert {(t["cell"], t["pass"], t["impl"]) for t in report["timings"]} >= {
        ("rnn", "fwdbwd", "rnnfast"),
        ("rnn", "fwdbwd", "torch_nn"),
        ("rnn", "fwdbwd", "seed"),
    }
    assert {m["group"] for m in report["modules"]} == {"layer-S", "generate-200"}
    assert "layers and cells" in printed and "compared with the run of" in printed
    assert png.read_bytes().startswith(PNG_MAGIC)
    again = bench.main(["--from-json", str(out), "--plot", str(tmp_path / "again.png")])
    assert again["timings"] == json.loads(out.read_text())["timings"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--compare", "/nonexistent/old.json"], "--compare: no such file"),
        (["--from-json", "/nonexistent/run.json"], "--from-json: no such file"),
        (["--plot", "/nonexistent/dir/x.png"], "--plot: the folder"),
        (["--cells", "rnn,transformer"], "unknown"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


def test_from_json_refuses_what_is_not_a_report(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(SystemExit, match="not a report"):
        bench.main(["--from-json", str(path)])


def test_timing_table_relates_rnnfast_and_torch_nn_to_the_gemm_floor():
    """The floor columns: the floor's best run, and both medians over it."""
    report = _recorded()
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t["median_ms"] for t in report["timings"]}
    lines = tables.timing_table(report).splitlines()
    header = lines[0].split("  ")
    header = [h.strip() for h in header if h.strip()]
    assert header[-3:] == ["GEMM floor", "rnnfast / floor", "torch.nn / floor"]
    row = next(line.split() for line in lines if line.split()[:3] == ["lstm", "L", "fwdbwd"])
    floor = min(
        next(
            t["times_ms"]
            for t in report["timings"]
            if (t["cell"], t["shape"], t["pass"], t["impl"])
            == ("lstm", "L", "fwdbwd", "gemm_floor")
        )
    )
    assert row[-2] == f"{ms[('lstm', 'L', 'fwdbwd', 'rnnfast')] / floor:.2f}x"
    assert row[-1] == f"{ms[('lstm', 'L', 'fwdbwd', 'torch_nn')] / floor:.2f}x"
    # Shapes without a floor show dashes in its three columns.
    row = next(line.split() for line in lines if line.split()[:3] == ["rnn", "S", "fwd"])
    assert row[-3:] == ["-", "-", "-"]


def test_ab_builds_compares_two_checkouts():
    """scripts/ab_builds.py with one checkout as both builds: a row per case with each
    build's rounds, minima and their ratio."""
    import subprocess
    import sys

    import rnnfast

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "ab_builds.py")
    out = subprocess.run(
        [
            sys.executable,
            script,
            checkout,
            checkout,
            "rnn:S:fwd_nograd",
            "--rounds",
            "2",
            "--runs",
            "2",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("rnn:S:fwd_nograd"))
    numbers = [float(v) for v in row.split()[1:-1]]
    assert len(numbers) == 2 + 2 + 2 and all(v > 0 for v in numbers)
    assert row.endswith("x") and float(row.split()[-1][:-1]) > 0


def test_compute_bound_table_relates_the_medians_to_the_peak_rate():
    """The compute bound: a case's GEMM FLOPs at the measured peak rate, both medians as
    shares of that rate, and torch.nn over the bound; none without a measured peak."""
    from rnnfast.bench import cases

    report = _recorded()
    assert "gemm_peak" not in report and tables.compute_bound_table(report) == ""
    report["gemm_peak"] = {"n": 2048, "gflops": 250.0, "times_ms": [68.7]}
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t["median_ms"] for t in report["timings"]}
    lines = tables.compute_bound_table(report).splitlines()
    header = [h.strip() for h in lines[0].split("  ") if h.strip()]
    assert header == [
        "cell",
        "shape",
        "pass",
        "GFLOP",
        "bound ms",
        "rnnfast % of peak",
        "torch.nn % of peak",
        "torch.nn / bound",
    ]
    rows = {tuple(line.split()[:3]): line.split() for line in lines[2:]}
    assert all(shape in cases.FLOOR_SHAPES for _, shape, _ in rows)  # no S rows
    gflop = cases.gemm_flops("gru", cases.SHAPES["M"], "fwdbwd") / 1e9
    bound_ms = gflop / 250.0 * 1e3
    row = rows[("gru", "M", "fwdbwd")]
    assert float(row[3]) == pytest.approx(gflop, rel=1e-2)
    assert float(row[4]) == pytest.approx(bound_ms, rel=1e-2)
    assert row[5] == f"{bound_ms / ms[('gru', 'M', 'fwdbwd', 'rnnfast')]:.0%}"
    assert row[6] == f"{bound_ms / ms[('gru', 'M', 'fwdbwd', 'torch_nn')]:.0%}"
    assert row[7] == f"{ms[('gru', 'M', 'fwdbwd', 'torch_nn')] / bound_ms:.2f}x"


def test_gemm_peak_measures_a_plausible_rate():
    from rnnfast.bench import cases

    peak = cases.gemm_peak("cpu", runs=2)
    assert peak["n"] == cases.PEAK_SIZE["cpu"] and len(peak["times_ms"]) == 2
    # 2 n^3 FLOPs in the fastest run
    assert peak["gflops"] == pytest.approx(2 * peak["n"] ** 3 / min(peak["times_ms"]) / 1e6)
    assert 0.1 < peak["gflops"] < 1e5


def test_cli_measures_the_peak_and_prints_the_compute_bound(capsys):
    """A run with a shape that has a GEMM floor measures the peak at its start and end and
    prints the compute bound; an S-only run does neither."""
    report = bench.main(
        [
            "--shapes",
            "LM",
            "--cells",
            "rnn",
            "--passes",
            "fwd_nograd",
            "--repeat",
            "1",
            "--no-memory",
            "--no-modules",
        ]
    )
    printed = capsys.readouterr().out
    peak = report["gemm_peak"]
    assert len(peak["times_ms"]) == 10 and peak["gflops"] > 0
    assert "compute bound: peak" in printed
    row = next(
        line.split()
        for line in printed.splitlines()
        if line.split()[:3] == ["rnn", "LM", "fwd_nograd"] and "%" in line
    )
    assert row[5].endswith("%") and row[7].endswith("x")
    report = bench.main(
        ["--quick", "--cells", "rnn", "--passes", "fwd_nograd", "--no-memory", "--no-modules"]
    )
    assert "gemm_peak" not in report and "compute bound" not in capsys.readouterr().out
